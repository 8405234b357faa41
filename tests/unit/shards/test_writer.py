"""ShardWriter: shards readable by tar and webdataset, bounds, rejects, determinism, commits."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from relshard.errors import ShardWriteError
from relshard.record import Relation
from relshard.shards import ShardWriter, UnitInfo
from relshard.shards.index import INDEX_SCHEMA, META_KEY
from relshard.shards.layout import OutputLayout
from relshard.shards.recovery import committed_units
from tests.unit.shards.factory import make_item, rejected_item, tar_members, tar_names

MB = 1_000_000


def _write(root: Path | str, items, prefix: str = "w0", max_samples: int = 100,
           max_bytes: int = 64 * MB, **kw):
    with ShardWriter(str(root), prefix, max_samples, max_bytes, **kw) as writer:
        for item in items:
            writer.add(item)
    return writer.summary


def _index(root: Path, unit: str):
    return pq.read_table(root / "index" / f"{unit}.parquet")


def test_shard_reads_back_with_tar_and_webdataset(tmp_path: Path) -> None:
    items = [make_item(f"img{i}") for i in range(3)] + [
        make_item("vid", modality="video", n_samples=2, n_frames=2, crop=False)]
    summary = _write(tmp_path, items)
    assert (summary.inputs_written, summary.samples_written) == (4, 5)
    (unit,) = summary.units
    assert unit.name == "w0-0000" and unit.shard == "shards/w0-0000.tar"
    shard = tmp_path / unit.shard
    names = tar_names(shard)
    k0 = items[0].input.input_key
    assert names[:5] == [f"{k0}.json", f"{k0}.txt", f"{k0}.rel.txt", f"{k0}.jpg", f"{k0}.s1.jpg"]
    assert len(names) == 3 * 5 + 2 * 5

    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [*(i.input.input_key for i in items[:3]),
                                               *(s.key for s in items[3].samples)]
    first = samples[0]
    assert {"json", "txt", "rel.txt", "jpg", "s1.jpg"} <= set(first)  # webdataset lowercases
    assert json.loads(first["json"])["key"] == k0
    assert first["jpg"] == items[0].samples[0].frames[0].jpeg
    assert {"f000.jpg", "f001.jpg"} <= set(samples[-1])


def test_index_rows_and_footer_match_the_shard(tmp_path: Path) -> None:
    items = [make_item(f"a{i}", n_samples=2) for i in range(3)]
    summary = _write(tmp_path, items)
    (unit,) = summary.units
    data = (tmp_path / unit.shard).read_bytes()
    assert unit.bytes == len(data)
    assert unit.sha256 == hashlib.sha256(data).hexdigest()

    table = _index(tmp_path, unit.name)
    assert table.schema.remove_metadata() == INDEX_SCHEMA
    meta = UnitInfo.from_json(table.schema.metadata[META_KEY])
    assert meta == unit
    assert (meta.nsamples, meta.ninputs, meta.nrejects) == (6, 3, 0)
    rows = table.to_pylist()
    assert len(rows) == 6
    for row, sample in zip(rows, [s for it in items for s in it.samples], strict=True):
        assert row["key"] == sample.key and row["shard"] == "shards/w0-0000.tar"
        assert row["members"] == ["json", "txt", "rel.txt", "jpg", "s1.jpg"]
        assert (row["n_subjects"], row["n_attributes"], row["n_relations"]) == (1, 1, 1)
        assert row["backend"] == "heuristic" and row["model"] is None
        assert row["schema_version"] == 1 and row["sha256"] == "ab" * 32
        chunk = tar_members(data[row["offset"]: row["offset"] + row["size"]])
        assert [n for n, _ in chunk] == [f"{sample.key}.{s}" for s in row["members"]]


def test_rollover_by_samples_never_splits_an_input(tmp_path: Path) -> None:
    items = [make_item(f"v{i}", n_samples=3, crop=False) for i in range(5)]
    summary = _write(tmp_path, items, max_samples=7)
    assert [u.nsamples for u in summary.units] == [6, 6, 3]
    assert [u.name for u in summary.units] == ["w0-0000", "w0-0001", "w0-0002"]
    for unit in summary.units:
        inputs = _index(tmp_path, unit.name).column("input_key").to_pylist()
        assert all(inputs.count(k) == 3 for k in inputs)  # every input whole in one shard


def test_rollover_by_bytes_and_oversized_input_alone(tmp_path: Path) -> None:
    items = [make_item(f"b{i}", payload=400_000) for i in range(5)]
    items.insert(2, make_item("huge", payload=1_500_000))
    summary = _write(tmp_path, items, max_bytes=MB)
    assert [u.nsamples for u in summary.units] == [2, 1, 2, 1]
    assert summary.units[1].bytes > MB  # one input larger than the bound goes alone
    for unit in (summary.units[0], summary.units[2], summary.units[3]):
        assert unit.bytes <= MB
        assert (tmp_path / unit.shard).stat().st_size == unit.bytes


def test_rejects_land_in_the_rejects_table(tmp_path: Path) -> None:
    bad = make_item("badrel")
    bad.samples[0].relations.append(Relation(subject="S1", predicate="holds", object="A7"))
    empty = make_item("nothing")
    empty.samples = []
    items = [make_item("ok"), rejected_item("broken", "corrupt"), bad, empty,
             rejected_item("trunc", "truncated")]
    summary = _write(tmp_path, items)
    assert summary.inputs_written == 1
    assert summary.rejects_by_reason == {"corrupt": 1, "invalid_record": 1, "no_samples": 1,
                                         "truncated": 1}
    (unit,) = summary.units
    assert unit.nrejects == 4 and unit.rejects == "rejects/w0-0000.parquet"
    rows = {r["input_key"]: r for r in pq.read_table(tmp_path / unit.rejects).to_pylist()}
    row = rows[bad.input.input_key]
    assert (row["stage"], row["reason"]) == ("write", "invalid_record")
    assert "A7" in row["detail"]
    assert rows[items[1].input.input_key]["stage"] == "decode"
    assert rows[items[1].input.input_key]["detail"] == "broken is broken"
    assert len(tar_names(tmp_path / unit.shard)) == 5  # only the good input


def test_unit_with_only_rejects_has_no_shard(tmp_path: Path) -> None:
    summary = _write(tmp_path, [rejected_item("x"), rejected_item("y")])
    (unit,) = summary.units
    assert unit.shard is None and unit.sha256 is None and unit.nsamples == 0
    assert not list((tmp_path / "shards").iterdir())
    assert _index(tmp_path, unit.name).num_rows == 0


def test_empty_writer_writes_nothing(tmp_path: Path) -> None:
    summary = _write(tmp_path, [])
    assert summary.units == []
    assert all(not list((tmp_path / d).iterdir()) for d in ("shards", "index", "rejects"))


def test_identical_inputs_give_byte_identical_shards(tmp_path: Path) -> None:
    def items():
        return [make_item(f"d{i}", n_samples=2) for i in range(4)]
    a = _write(tmp_path / "a", items(), mtime=1234)
    b = _write(tmp_path / "b", items(), mtime=1234)
    c = _write(tmp_path / "c", items(), mtime=99)
    assert a.units[0].sha256 == b.units[0].sha256
    assert (tmp_path / "a" / a.units[0].shard).read_bytes() == \
        (tmp_path / "b" / b.units[0].shard).read_bytes()
    assert c.units[0].sha256 != a.units[0].sha256


def test_rewriting_a_unit_replaces_it(tmp_path: Path) -> None:
    first = _write(tmp_path, [make_item(f"r{i}") for i in range(4)] + [rejected_item("z")])
    second = _write(tmp_path, [make_item(f"r{i}") for i in range(2)])  # the retry differs
    assert [u.name for u in first.units] == [u.name for u in second.units] == ["w0-0000"]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["w0-0000.tar"]
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["w0-0000.parquet"]
    assert not list((tmp_path / "rejects").iterdir())  # the earlier attempt's rejects are gone
    assert len(tar_names(tmp_path / "shards" / "w0-0000.tar")) == 2 * 5
    assert committed_units(OutputLayout.open(str(tmp_path)))["w0-0000"] == second.units[0]
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left


def test_retry_that_writes_fewer_units_withdraws_the_rest(tmp_path: Path) -> None:
    first = _write(tmp_path, [make_item(f"s{i}") for i in range(5)], max_samples=2)
    _write(tmp_path, [make_item("other")], prefix="w1")  # another task's unit stays
    assert len(first.units) == 3
    second = _write(tmp_path, [make_item(f"s{i}") for i in range(5)], max_samples=5)
    assert [u.name for u in second.units] == ["w0-0000"]
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["w0-0000.parquet",
                                                                      "w1-0000.parquet"]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["w0-0000.tar",
                                                                       "w1-0000.tar"]
    keys = _index(tmp_path, "w0-0000").column("input_key").to_pylist()
    assert sorted(keys) == sorted(make_item(f"s{i}").input.input_key for i in range(5))


def test_on_commit_sees_each_unit_once_it_is_visible(tmp_path: Path) -> None:
    seen: list[str] = []

    def check(info: UnitInfo) -> None:
        assert (tmp_path / "index" / f"{info.name}.parquet").exists()
        seen.append(info.name)

    summary = _write(tmp_path, [make_item(f"c{i}") for i in range(5)], max_samples=2,
                     on_commit=check)
    assert seen == [u.name for u in summary.units] == ["w0-0000", "w0-0001", "w0-0002"]


def test_repeated_input_is_written_once(tmp_path: Path) -> None:
    summary = _write(tmp_path, [make_item("same"), make_item("same")])
    assert (summary.inputs_written, summary.inputs_skipped, summary.samples_written) == (1, 1, 1)


def test_abort_leaves_nothing_and_add_after_close_fails(tmp_path: Path) -> None:
    writer = ShardWriter(str(tmp_path), "w9", 100, 64 * MB)
    writer.add(make_item("half"))
    writer.abort()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    with pytest.raises(ShardWriteError):
        writer.add(make_item("late"))
    with pytest.raises(ShardWriteError), ShardWriter(str(tmp_path), "w8", 100, 64 * MB) as w:
        w.add(make_item("boom"))
        raise ShardWriteError("task failed")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ShardWriter("memory://x", "../up", 10, MB)
    with pytest.raises(ValueError):
        ShardWriter("memory://x", "w0", 0, MB)


def test_io_failure_raises_shard_write_error(tmp_path: Path, monkeypatch) -> None:
    writer = ShardWriter(str(tmp_path), "w0", 100, 64 * MB)
    writer.add(make_item("ok"))

    def disk_full(fd: int, buffers: list[bytes]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("relshard.shards.tarwriter.os.writev", disk_full)
    with pytest.raises(ShardWriteError, match="w0-0000.*No space left"):
        writer.add(make_item("next"))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    with pytest.raises(ShardWriteError):
        writer.close()
