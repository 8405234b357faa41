"""recover() removes debris of interrupted runs and keeps committed units; done_input_keys."""

from __future__ import annotations

from pathlib import Path

import pytest

import relshard.shards.writer as writer_mod
from relshard.shards import ShardWriter, done_input_keys, recover
from relshard.shards.layout import INDEX_DIR, OutputLayout
from relshard.shards.recovery import committed_units
from tests.unit.shards.factory import make_item, rejected_item

MB = 1_000_000


class Killed(BaseException):
    """Stands in for SIGKILL: no handler of the writer cleans up after it."""


def _write(root: Path, items, prefix: str = "w0", max_samples: int = 100) -> None:
    with ShardWriter(str(root), prefix, max_samples, 64 * MB) as writer:
        for item in items:
            writer.add(item)


def _kill_before_index_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """Die right after the tar (and rejects) renames, before the index is renamed."""
    real = writer_mod.sync_dir

    def sync_then_die(layout: OutputLayout, folder: str) -> None:
        real(layout, folder)
        if folder != INDEX_DIR:
            raise Killed()

    monkeypatch.setattr(writer_mod, "sync_dir", sync_then_die)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_tmp_files_and_orphans_go_committed_units_stay(tmp_path: Path) -> None:
    _write(tmp_path, [make_item("keep1"), make_item("keep2"), rejected_item("gone")])
    committed = _files(tmp_path)
    debris = ["shards/.w1-0000.tar.tmp-1a2b3c", "index/.w1-0000.parquet.tmp-ffff",
              "rejects/.w1-0000.parquet.tmp-0000", ".manifest.json.tmp-9999",
              "shards/w1-0000.tar", "rejects/w1-0000.parquet"]
    for rel in debris:
        (tmp_path / rel).write_bytes(b"partial")
    (tmp_path / "shards" / "notes.md").write_text("not ours")  # not a unit file: left alone

    report = recover(str(tmp_path))
    assert sorted(report.removed_tmp) == sorted(debris[:4])
    assert sorted(report.removed_orphans) == ["rejects/w1-0000.parquet", "shards/w1-0000.tar"]
    assert report.removed_broken == []
    assert report.committed_units == ["w0-0000"]
    assert _files(tmp_path) == sorted([*committed, "shards/notes.md"])
    assert recover(str(tmp_path)).clean


def test_kill_between_renames_leaves_an_orphan_that_recovery_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, [make_item("early")], prefix="w0")
    _kill_before_index_rename(monkeypatch)
    writer = ShardWriter(str(tmp_path), "w1", 100, 64 * MB)
    writer.add(make_item("late"))
    writer.add(rejected_item("late-bad"))
    with pytest.raises(Killed):
        writer.close()
    assert (tmp_path / "shards" / "w1-0000.tar").exists()  # renamed, but not committed
    assert done_input_keys(str(tmp_path)) == {make_item("early").input.input_key}

    report = recover(str(tmp_path))
    assert report.removed_orphans == ["shards/w1-0000.tar"]
    assert sorted(p.split(".tmp-")[0] for p in report.removed_tmp) == [
        "index/.w1-0000.parquet", "rejects/.w1-0000.parquet"]
    assert _files(tmp_path) == ["index/w0-0000.parquet", "shards/w0-0000.tar"]


def test_kill_during_a_rewrite_withdraws_the_old_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, [make_item("a"), make_item("b")])
    _kill_before_index_rename(monkeypatch)
    writer = ShardWriter(str(tmp_path), "w0", 100, 64 * MB)
    writer.add(make_item("a"))
    with pytest.raises(Killed):
        writer.close()
    # The old index went first: the replaced tar is never described by a stale index.
    assert committed_units(OutputLayout.open(str(tmp_path))) == {}
    assert done_input_keys(str(tmp_path)) == set()  # both inputs will be redone
    recover(str(tmp_path))
    assert _files(tmp_path) == []


def test_broken_and_corrupt_units_are_withdrawn(tmp_path: Path) -> None:
    _write(tmp_path, [make_item("x")], prefix="w0")
    _write(tmp_path, [make_item("y")], prefix="w1")
    with open(tmp_path / "shards" / "w1-0000.tar", "r+b") as f:
        f.truncate(1024)
    (tmp_path / "index" / "w2-0000.parquet").write_bytes(b"not parquet")
    report = recover(str(tmp_path))
    assert sorted(report.removed_broken) == ["index/w1-0000.parquet", "index/w2-0000.parquet",
                                             "shards/w1-0000.tar"]
    assert report.committed_units == ["w0-0000"]
    assert done_input_keys(str(tmp_path)) == {make_item("x").input.input_key}


def test_done_input_keys_covers_written_and_rejected(tmp_path: Path) -> None:
    written = [make_item("v1", n_samples=3), make_item("v2")]
    rejected = [rejected_item("r1"), rejected_item("r2", "timeout")]
    _write(tmp_path, [written[0], rejected[0], written[1], rejected[1]], max_samples=3)
    (tmp_path / "rejects" / "w7-0000.parquet").write_bytes(b"orphan, never read")
    keys = done_input_keys(str(tmp_path))
    assert keys == {i.input.input_key for i in written + rejected}


def test_recover_on_a_missing_root_is_a_no_op(tmp_path: Path) -> None:
    report = recover(str(tmp_path / "nothing-here"))
    assert report.clean and report.committed_units == []
    assert done_input_keys(str(tmp_path / "nothing-here")) == set()
