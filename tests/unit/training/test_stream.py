"""ShardStream and ShardLoader on tiny shards: exactly once, order, resume, damage, fsspec."""

from __future__ import annotations

import logging
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from relshard import RelshardError, ShardLoader, ShardStream
from relshard.training.stream import StreamStateError
from tests.unit.training.shardgen import key_index, make_output

COUNTS = [3, 17, 1, 9]  # 30 samples, uneven shards


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return make_output(tmp_path / "out", COUNTS)


def indices(batches: list[dict]) -> list[list[int]]:
    return [b["__index__"] for b in batches]


def test_dataloader_workers_and_ranks_read_each_sample_once(manifest: Path) -> None:
    world, seen, nbatches = 3, [], []
    for rank in range(world):
        stream = ShardStream(manifest, batch_size=4, shuffle=True, seed=1, rank=rank,
                             world_size=world, members=["json", "txt"])
        batches = list(DataLoader(stream, batch_size=None, num_workers=3))
        nbatches.append(len(batches))
        for b in batches:
            assert [key_index(k) for k in b["__key__"]] == b["__index__"]
            assert [j["i"] for j in b["json"]] == b["__index__"]
            seen.extend(b["__index__"])
    assert nbatches == [2, 2, 2]  # 30 // 12 per rank, drop policy
    assert len(seen) == len(set(seen)) == 24 and set(seen) <= set(range(30))


def test_fewer_shards_than_workers_pad(tmp_path: Path) -> None:
    manifest = make_output(tmp_path / "two", [5, 2])
    got = []
    for rank in range(2):
        stream = ShardStream(manifest, batch_size=2, rank=rank, world_size=2, remainder="pad",
                             image="bytes")
        batches = list(ShardLoader(stream, num_workers=4))
        assert len(batches) == 2
        got += [(i, p) for b in batches for i, p in zip(b["__index__"], b["__pad__"],
                                                          strict=True)]
    assert sorted(i for i, p in got if not p) == list(range(7))
    assert sum(p for _, p in got) == 1


def test_loader_with_workers_keeps_plan_order(manifest: Path) -> None:
    def run(workers: int) -> list[list[int]]:
        stream = ShardStream(manifest, batch_size=3, shuffle=True, seed=5, image="bytes")
        stream.set_epoch(2)
        return indices(list(ShardLoader(stream, num_workers=workers)))

    single = run(0)
    assert len(single) == 10 and sorted(sum(single, [])) == list(range(30))
    assert run(3) == single
    assert run(4) == single


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_yields_exactly_the_unseen_batches(manifest: Path, workers: int) -> None:
    def make() -> ShardLoader:
        stream = ShardStream(manifest, batch_size=2, shuffle=True, seed=9, image="bytes")
        return ShardLoader(stream, num_workers=workers, prefetch_factor=4 if workers else None)

    full = make()
    full.set_epoch(1)
    expected = indices(list(full))
    first = make()
    first.set_epoch(1)
    taken = []
    for batch in first:
        taken.append(batch["__index__"])
        if len(taken) == 6:
            break
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 6
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # setting the same epoch again keeps the position
    rest = indices(list(resumed))
    assert taken + rest == expected
    assert resumed.state_dict()["batches_done"] == 15
    resumed.set_epoch(2)
    assert len(list(resumed)) == 15


def test_resume_on_another_world_size(manifest: Path) -> None:
    one = ShardStream(manifest, batch_size=2, shuffle=True, seed=2, image="bytes")
    expected = sum(indices(list(one)), [])
    it = iter(one)
    for _ in range(4):
        next(it)
    state = one.state_dict()
    assert state["samples_done"] == 8
    rest = []
    for rank in range(2):
        stream = ShardStream(manifest, batch_size=2, shuffle=True, seed=2, rank=rank,
                             world_size=2, image="bytes")
        stream.load_state_dict(state)
        rest.append(sum(indices(list(ShardLoader(stream, num_workers=2))), []))
    assert sorted(rest[0] + rest[1]) == sorted(expected[8:28])
    with pytest.raises(StreamStateError, match="seed"):
        ShardStream(manifest, batch_size=2, shuffle=True, seed=3).load_state_dict(state)
    odd = ShardStream(manifest, batch_size=3, shuffle=True, seed=2, world_size=1, rank=0)
    with pytest.raises(StreamStateError, match="batch_size"):
        odd.load_state_dict(state)


def test_corrupt_member_and_truncated_shard_are_skipped_and_counted(
    manifest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = manifest.parent
    index = pq.read_table(root / "index" / "u001.parquet").to_pylist()
    victim = index[4]  # sample 7: overwrite the middle of its span (the jpg) with junk
    with open(root / "shards" / "u001.tar", "r+b") as f:
        f.seek(victim["offset"] + victim["size"] - 1500)
        f.write(b"\x00" * 200)
    shard = root / "shards" / "u003.tar"  # samples 21..29: keep the first 4 and a bit
    rows = pq.read_table(root / "index" / "u003.parquet").to_pylist()
    shard.write_bytes(shard.read_bytes()[: rows[4]["offset"] + 700])
    caplog.set_level(logging.WARNING, logger="relshard.training.stream")
    stream = ShardStream(manifest, batch_size=5, remainder="pad")
    batches = list(stream)
    assert len(batches) == 6
    good = sum(indices(batches), [])
    assert sorted(good) == sorted(set(range(30)) - {7, 25, 26, 27, 28, 29})
    assert sum(b["__skipped__"] for b in batches) == 6
    assert stream.skipped == {"corrupt_member": 1, "truncated_shard": 5}
    assert "truncated_shard" in caplog.text
    through_workers = list(DataLoader(ShardStream(manifest, batch_size=5), batch_size=None,
                                      num_workers=2))
    assert sum(b["__skipped__"] for b in through_workers) == 6


def test_missing_shard_is_skipped(manifest: Path) -> None:
    (manifest.parent / "shards" / "u000.tar").unlink()
    stream = ShardStream(manifest, batch_size=30, image="bytes")
    (batch,) = list(stream)
    assert batch["__skipped__"] == 3 and stream.skipped == {"missing_shard": 3}


def test_fsspec_manifest_without_index(tmp_path: Path) -> None:
    local = make_output(tmp_path / "plain", [4, 6], index=False)
    fs = fsspec.filesystem("memory")
    for path in sorted(local.parent.rglob("*")):
        if path.is_file():
            fs.pipe(f"/relshard-test/{path.relative_to(local.parent)}", path.read_bytes())
    try:
        stream = ShardStream("memory://relshard-test/manifest.json", batch_size=5, shuffle=True)
        batches = list(ShardLoader(stream, num_workers=0))
        assert sorted(sum(indices(batches), [])) == list(range(10))
        assert all(k == f"s{i:05d}" for b in batches
                   for k, i in zip(b["__key__"], b["__index__"], strict=True))
        assert batches[0]["times.npy"][0].dtype.name == "float64"
    finally:
        fs.rm("/relshard-test", recursive=True)


def test_user_errors_are_one_sentence(tmp_path: Path, manifest: Path) -> None:
    with pytest.raises(RelshardError, match="No manifest"):
        ShardStream(tmp_path / "nowhere", batch_size=2)
    with pytest.raises(RelshardError, match="batch_size"):
        ShardStream(manifest, batch_size=0)
    with pytest.raises(RelshardError, match="rank 2"):
        ShardStream(manifest, batch_size=2, rank=2, world_size=2)


def test_collate_fn_and_import_is_light(manifest: Path) -> None:
    def stack(samples: list[dict]) -> torch.Tensor:
        return torch.tensor([s["json"]["i"] for s in samples])

    stream = ShardStream(manifest, batch_size=10, collate_fn=stack, members=["json"])
    assert [b.tolist() for b in stream] == [list(range(10)), list(range(10, 20)),
                                             list(range(20, 30))]
