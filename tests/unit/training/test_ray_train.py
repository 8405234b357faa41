"""The Ray path: read_webdataset with the safe decoder, TorchTrainer training and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relshard.training.ray_train import read_shards, safe_json_decoder, train_ray
from relshard.training.trainer import TrainConfig
from tests.unit.training.shardgen import make_relational_output

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_safe_decoder_never_unpickles() -> None:
    row = safe_json_decoder({"__key__": "k", "json": b'{"a": 1}', "pyd": b"\x80\x04K\x01."})
    assert row == {"__key__": "k", "record": '{"a": 1}'}
    assert safe_json_decoder({"__key__": "k", "json": b"{bad"})["record"] == ""


def test_ray_train_streams_trains_and_resumes(ray_session, tmp_path: Path) -> None:
    samples = [(f"img{i}.jpg", f"h{i}", 1 + i % 3) for i in range(96)]
    out = make_relational_output(tmp_path / "run", samples, per_shard=32).parent
    keys = sorted(r["__key__"] for r in read_shards(str(out)).take_all())
    assert keys == [f"k{i:05d}" for i in range(96)]
    assert json.loads(read_shards(str(out)).take(1)[0]["record"])["subjects"]
    base = {"data": str(out), "checkpoint_dir": str(tmp_path / "ck"), "batch_size": 16,
            "lr": 0.003, "torch_threads": 1, "model": {"dim": 32}}
    first = train_ray(TrainConfig.model_validate({**base, "epochs": 4}))
    assert first.start_step == 0 and first.step == 4 * 6
    assert sum(first.losses[-6:]) < 0.8 * sum(first.losses[:6])
    more = train_ray(TrainConfig.model_validate({**base, "epochs": 5}))
    assert more.start_step == 24 and more.step == 30
    assert (tmp_path / "ck" / "ray" / "state.pt").exists()
