"""The Ray path: read_webdataset with safe decoders, TorchTrainer on 2 workers, both tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from relshard.builders.benchmark import build_benchmark
from relshard.builders.evaluate import evaluate_benchmark
from relshard.training.ray_train import (
    read_shards,
    safe_event_decoder,
    safe_json_decoder,
    train_ray,
)
from relshard.training.trainer import TrainConfig
from tests.unit.training.shardgen import make_event_output, make_relational_output, npy

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_safe_decoders_never_unpickle() -> None:
    row = safe_json_decoder({"__key__": "k", "json": b'{"a": 1}', "pyd": b"\x80\x04K\x01."})
    assert row == {"__key__": "k", "record": '{"a": 1}'}
    assert safe_json_decoder({"__key__": "k", "json": b"{bad"})["record"] == ""
    pickled = npy(np.array([1.0]))  # a valid npy, and an object array that needs pickle
    ok = safe_event_decoder({"__key__": "k", "times.npy": pickled, "types.npy": pickled})
    assert ok["times"] == pickled
    import io
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    bad = safe_event_decoder({"__key__": "k", "times.npy": buf.getvalue(), "types.npy": pickled})
    assert bad["times"] == b""


def test_ray_train_binding_two_workers_max_steps_resume_and_evaluate(
        ray_session, tmp_path: Path) -> None:
    samples = [(f"img{i}.jpg", f"h{i}", 1 + i % 3) for i in range(160)]
    out = make_relational_output(tmp_path / "run", samples, per_shard=40).parent
    bench = tmp_path / "bench"
    built = build_benchmark(str(out), str(bench), min_per_split=0,
                            fractions={"train": 0.8, "val": 0, "test": 0.2})
    n = built["splits"]["train"]["samples"]
    keys = sorted(r["__key__"] for r in read_shards(str(bench / "train")).take_all())
    assert len(keys) == n and json.loads(
        read_shards(str(bench / "train")).take(1)[0]["record"])["subjects"]
    base = {"data": str(bench / "train"), "checkpoint_dir": str(tmp_path / "ck"),
            "batch_size": 16, "lr": 0.003, "torch_threads": 1, "model": {"dim": 32}}
    per_epoch = -(-(n // 2) // 16)  # 2 workers, equal shares, batches of 16
    assert per_epoch == 4
    first = train_ray(TrainConfig.model_validate({**base, "epochs": 6, "max_steps": 10}),
                      num_workers=2, cpus_per_worker=0.5)
    assert first.start_step == 0 and first.step == 10  # stopped mid-epoch 2
    state = torch.load(first.checkpoint, weights_only=True)
    assert {"model", "optimizer", "step", "config", "predicates"} <= set(state)
    per_pass = sum(len(r) for r in _relations(bench, "train"))  # counted per batch, as locally
    assert set(state["predicates"]) == {"wears"} and state["predicates"]["wears"] > per_pass
    assert state["config"]["task"] == "binding" and state["epoch_done"] is False
    more = train_ray(TrainConfig.model_validate({**base, "epochs": 6}), num_workers=2,
                     cpus_per_worker=0.5)
    assert more.start_step == 10 and more.step == 10 + 4 * per_epoch  # epochs 2..5 again
    assert np.mean(more.losses[-4:]) < np.mean(first.losses[:4])
    metrics = evaluate_benchmark(str(bench), more.checkpoint, "test", replicates=100)
    assert metrics["systems"]["model"]["binding_accuracy"] > 0.6
    assert metrics["relations"]["f1"] > 0.5  # the predicate came from the checkpoint


def _relations(bench: Path, split: str) -> list[list[dict]]:
    from relshard.builders.evaluate import split_records

    return [r["relations"] for r in split_records(str(bench), split).values()]


def test_ray_train_hawkes_two_workers(ray_session, tmp_path: Path) -> None:
    out = make_event_output(tmp_path / "run", sequences=8, windows=8).parent
    bench = tmp_path / "bench"
    build_benchmark(str(out), str(bench), fractions={"train": 0.75, "val": 0, "test": 0.25},
                    min_per_split=0)
    cfg = TrainConfig.model_validate({
        "task": "hawkes", "data": str(bench / "train"), "checkpoint_dir": str(tmp_path / "c"),
        "batch_size": 4, "epochs": 3, "lr": 0.005, "torch_threads": 1,
        "hawkes": {"num_types": 4, "dim": 16, "layers": 1}})
    result = train_ray(cfg, num_workers=2, cpus_per_worker=0.5)
    assert result.step == 3 * (48 // 2 // 4)
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["config"]["task"] == "hawkes" and state["epoch_done"] is True
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3])
    metrics = evaluate_benchmark(str(bench), result.checkpoint, "test", replicates=100)
    assert metrics["task"] == "events" and metrics["events"] > 16 * 3
    assert metrics["systems"]["model"]["nll_per_event"] < metrics["systems"]["poisson"][
        "nll_per_event"]
