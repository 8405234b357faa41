"""The self-attentive Hawkes process on event-window shards: buckets, training, resume, eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from relshard.builders.benchmark import build_benchmark
from relshard.builders.evaluate import evaluate_benchmark
from relshard.cli import app
from relshard.training.models.hawkes_model import EventCollate, HawkesConfig
from relshard.training.trainer import TrainConfig, train
from tests.unit.training.shardgen import (
    event_window,
    make_event_output,
    make_planted_event_output,
)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_event_output(tmp_path_factory.mktemp("ev") / "run").parent


def test_length_buckets_pad_to_their_own_length() -> None:
    rng = np.random.default_rng(1)
    samples = []
    for n in [3, 5, 6, 9, 30, 31, 70, 1]:
        t, k = event_window(rng, n, 0.0)
        samples.append({"times.npy": t, "types.npy": k})
    samples.append({"times.npy": np.array([1.0, 2.0]), "types.npy": np.array([0, 1]),
                    "__pad__": True})
    batch = EventCollate(HawkesConfig(max_tokens=64))(samples)
    assert batch["windows"] == 7  # the 1-event window and the pad repeat are left out
    widths = [b["types"].shape[1] for b in batch["buckets"]]
    assert widths[0] == 16 and widths[-1] == 72 and widths == sorted(widths)
    assert sum(b["mask"].sum().item() for b in batch["buckets"]) == 3 + 5 + 6 + 9 + 30 + 31 + 70
    assert all(b["types"].numel() <= 72 or b["types"].shape[0] == 1 for b in batch["buckets"])
    first = batch["buckets"][0]
    assert first["times"][0, 0] == 0 and (first["types"][first["mask"]] >= 1).all()


def config(events: Path, ckpt: Path, **kw: object) -> TrainConfig:
    base = {"task": "hawkes", "data": str(events), "checkpoint_dir": str(ckpt),
            "batch_size": 8, "epochs": 3, "lr": 0.005, "torch_threads": 1,
            "checkpoint_every": 1000, "hawkes": {"num_types": 4, "dim": 16, "layers": 1}}
    return TrainConfig.model_validate({**base, **kw})


def test_hawkes_loss_falls_and_resume_is_exact(events: Path, tmp_path: Path) -> None:
    whole = train(config(events, tmp_path / "a"))
    assert whole.step == 3 * 12
    assert np.mean(whole.losses[-6:]) < np.mean(whole.losses[:6]) - 0.5
    assert np.mean(whole.accuracies[-6:]) > 0.9
    part = train(config(events, tmp_path / "b", max_steps=17))
    rest = train(config(events, tmp_path / "b"))
    assert rest.start_step == 17 and rest.step == 36
    assert part.losses + rest.losses == pytest.approx(whole.losses, rel=1e-4, abs=1e-5)


def test_cli_train_hawkes_and_evaluate_events(events: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    built = build_benchmark(str(events), str(bench), fractions={"train": 0.75, "val": 0,
                                                                 "test": 0.25})
    assert built["splits"]["test"]["groups"] == 3  # all windows of a log stay together
    cfg = {"task": "hawkes", "data": str(bench / "train"), "checkpoint_dir": str(tmp_path / "c"),
           "batch_size": 8, "epochs": 3, "lr": 0.005, "torch_threads": 1,
           "hawkes": {"num_types": 4, "dim": 16, "layers": 1}}
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(tmp_path / "h.yaml")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(bench), str(tmp_path / "c" / "latest.pt"), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    windows = 3 * 8
    assert metrics["events"] > windows * 3  # every window of the test split, scored once
    assert metrics["type_accuracy"] > 0.9 and np.isfinite(metrics["nll_per_event"])


def test_hawkes_model_beats_the_poisson_baseline_on_a_planted_process(tmp_path: Path) -> None:
    run = make_planted_event_output(tmp_path / "run", sequences=6, horizon=400.0).parent
    bench = tmp_path / "b"
    build_benchmark(str(run), str(bench), fractions={"train": 0.7, "val": 0, "test": 0.3},
                    min_per_split=0)
    train(config(bench / "train", tmp_path / "c", epochs=6, hawkes={"num_types": 3, "dim": 16,
                                                                     "layers": 1}))
    res = evaluate_benchmark(str(bench), str(tmp_path / "c" / "latest.pt"), "test",
                             replicates=200)
    model, poisson = res["systems"]["model"], res["systems"]["poisson"]
    hawkes = res["systems"]["hawkes"]  # the planted model's own family, fitted to train
    assert model["events"] == poisson["events"] == hawkes["events"] > 500
    assert model["nll_per_event"] < poisson["nll_per_event"] - 0.2, (model, poisson)
    assert hawkes["nll_per_event"] < poisson["nll_per_event"]
    lo, hi = model["nll_per_event_ci"]
    assert lo <= model["nll_per_event"] <= hi
