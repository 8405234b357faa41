"""The binding model trains from streamed shards, resumes exactly, and is evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from relshard.builders.benchmark import build_benchmark
from relshard.builders.evaluate import evaluate_benchmark
from relshard.cli import app
from relshard.training.models.binding import relation_mask
from relshard.training.trainer import TrainConfig, TrainConfigError, load_train_config, train
from tests.unit.training.shardgen import make_hard_binding_output, make_relational_output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bind")
    samples = [(f"img{i}.jpg", f"h{i}", 1 + i % 4) for i in range(240)]
    return make_relational_output(root / "run", samples, per_shard=50).parent


def config(run_dir: Path, ckpt: Path, **kw: object) -> TrainConfig:
    base = {"data": str(run_dir), "checkpoint_dir": str(ckpt), "batch_size": 16, "epochs": 4,
            "lr": 0.003, "checkpoint_every": 1000, "torch_threads": 1,
            "model": {"dim": 32, "layers": 2}}
    return TrainConfig.model_validate({**base, **kw})


def test_loss_falls_and_binding_is_learned(run_dir: Path, tmp_path: Path) -> None:
    result = train(config(run_dir, tmp_path / "c", num_workers=2))
    assert result.step == 4 * (240 // 16)
    first = sum(result.losses[:10]) / 10
    last = sum(result.losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert sum(result.accuracies[-10:]) / 10 > 0.7


def test_resume_continues_from_the_saved_step_exactly(run_dir: Path, tmp_path: Path) -> None:
    whole = train(config(run_dir, tmp_path / "whole", max_steps=24))
    part = train(config(run_dir, tmp_path / "split", max_steps=9))  # stops mid-epoch 0
    assert part.step == 9
    rest = train(config(run_dir, tmp_path / "split", max_steps=24))
    assert rest.start_step == 9 and rest.step == 24
    assert part.losses + rest.losses == pytest.approx(whole.losses, rel=1e-4, abs=1e-5)
    state = torch.load(tmp_path / "split" / "latest.pt", weights_only=True)
    assert state["step"] == 24 and state["loader"]["epoch"] == 1
    assert state["loader"]["batches_done"] == 24 - 15


def test_relation_mask_allows_self_and_cross_group_only() -> None:
    subj = torch.tensor([[True, True, False]])
    attr = torch.tensor([[True, False]])
    m = relation_mask(subj, attr)[0]
    assert m[0].tolist() == [True, False, False, True, False]  # S1: itself and A1
    assert m[3].tolist() == [True, True, False, True, False]  # A1: the real subjects
    assert m[2].tolist() == [False, False, True, False, False]  # padding: only itself


def test_cli_train_and_evaluate_a_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    build_benchmark(str(run_dir), str(bench), fractions={"train": 0.75, "val": 0, "test": 0.25})
    cfg = {"data": str(bench / "train"), "checkpoint_dir": str(tmp_path / "ck"),
           "batch_size": 16, "epochs": 5, "torch_threads": 1, "model": {"dim": 32}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(bench), str(tmp_path / "ck" / "latest.pt"),
                              "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert metrics["binding_accuracy"] > 0.8  # chance is about 0.4 with 1-4 subjects
    assert metrics["relations"]["f1"] > 0.8 and metrics["placeholder_validity"] == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\ncheckpoint_dir: y\nbatch_sise: 3\n")
    with pytest.raises(TrainConfigError, match="batch_sise"):
        load_train_config(bad)
    res = runner.invoke(app, ["train", str(bad)])
    assert res.exit_code == 2 and "invalid" in res.output


def test_model_beats_the_containment_rule_where_the_rule_is_wrong(tmp_path: Path) -> None:
    """Bags stick into the right neighbour's box, dogs into the left one's, distractors lie
    anywhere: the fixed rule is wrong for many attributes, the model must not be."""
    run = make_hard_binding_output(tmp_path / "run", 400).parent
    bench = tmp_path / "b"
    build_benchmark(str(run), str(bench), fractions={"train": 0.8, "val": 0, "test": 0.2},
                    near_duplicates=False, min_per_split=0)
    train(config(bench / "train", tmp_path / "c", epochs=8, batch_size=32))
    res = evaluate_benchmark(str(bench), str(tmp_path / "c" / "latest.pt"), "test",
                             replicates=200)
    model, rule = res["systems"]["model"], res["systems"]["containment"]
    assert rule["binding_accuracy"] < 0.75  # the data really defeats the rule
    assert model["binding_accuracy"] > rule["binding_accuracy"] + 0.2, (model, rule)
    assert model["binding_accuracy_ci"][0] > rule["binding_accuracy_ci"][1]
    assert model["binding_accuracy"] > res["systems"]["majority"]["binding_accuracy"]
