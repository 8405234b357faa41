"""``verify --repair`` on outputs that two runs wrote at once (issue #14)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from relshard.report.repair import repair_output
from relshard.report.verify import verify_output
from relshard.shards import ShardWriter, build_manifest, write_manifest
from tests.unit.report.builds import units_of, write_build
from tests.unit.shards.factory import make_item, rejected_item


def _index_keys(root: Path) -> list[str]:
    return pq.ParquetDataset(root / "index").read(columns=["key"])["key"].to_pylist()


def test_repair_keeps_the_earliest_copy_of_every_key(tmp_path: Path) -> None:
    out = write_build(tmp_path / "out", prefix="20240101000000000aaaa-00000")
    before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    # a second run on the same folder wrote (some of) the same inputs again
    with ShardWriter(str(out), "20240101000001000bbbb-00000", 3, 64_000_000) as w:
        for name in ("img1", "img3", "new1", "vid0"):
            w.add(make_item(name) if name != "vid0" else
                  make_item(name, n_samples=2, modality="video", n_frames=3))
    write_manifest(str(out), build_manifest(str(out), "demo", "hash-demo"))
    report = verify_output(str(out))
    assert sum("appears in both" in p for p in report.problems) == 4
    keys = _index_keys(out)
    assert len(keys) - len(set(keys)) == 4

    repaired = repair_output(str(out))
    assert repaired.duplicates_removed == 4 and repaired.deduplicated
    after = verify_output(str(out))
    assert after.ok, after.problems
    keys = _index_keys(out)
    assert len(keys) == len(set(keys)) == 10  # 5 images + 2 videos x 2 clips + new1
    for name, data in before.items():  # the earliest copies are untouched
        assert (out / "shards" / name).read_bytes() == data
    rebuilt = [u for u in units_of(out) if u.endswith("-d1")]
    assert rebuilt
    for unit in rebuilt:  # still a plain tar
        subprocess.run(["tar", "-tf", str(out / "shards" / f"{unit}.tar")], check=True,
                       capture_output=True)
    manifest = build_manifest(str(out), "demo", "hash-demo")
    assert manifest["totals"]["samples"] == 10
    assert repair_output(str(out)).duplicates_removed == 0  # idempotent


def test_repair_drops_a_reject_committed_after_a_write_but_keeps_retry_history(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ShardWriter(str(out), "r1", 10, 64_000_000) as w:
        w.add(rejected_item("flaky", "backend_unavailable"))  # later retried and written
        w.add(make_item("x"))
    with ShardWriter(str(out), "r2", 10, 64_000_000) as w:
        w.add(make_item("flaky"))
        w.add(rejected_item("x", "timeout"))  # a write followed by a reject: damage
    write_manifest(str(out), build_manifest(str(out), "demo", "h"))
    assert not verify_output(str(out)).ok
    repaired = repair_output(str(out))
    assert repaired.rejects_removed == 1
    report = verify_output(str(out))
    assert report.ok, report.problems
    assert report.superseded_rejects == 1  # the history of 'flaky' stays


def test_repair_holds_the_output_lease(tmp_path: Path) -> None:
    import pytest

    from relshard.shards.lease import OutputLease, OutputLockedError, read_lease

    out = write_build(tmp_path / "out")
    with OutputLease(str(out), "run-a", timeout_s=60), pytest.raises(OutputLockedError):
        repair_output(str(out))  # a run is writing: the repair is refused
    report = repair_output(str(out))  # free again: it runs, and lets go of the lease
    assert report.manifest and read_lease(str(out)) is None


def test_paths_from_data_stay_inside_the_output(tmp_path: Path) -> None:
    import pytest

    from relshard.shards.layout import OutputLayout

    layout = OutputLayout.open(str(tmp_path))
    assert layout.inside("shards/a.tar") == f"{tmp_path}/shards/a.tar"
    for bad in ("../x.tar", "shards/../../x", "/etc/shadow", "file:///etc/shadow",
                "http://h/x.tar", ""):
        with pytest.raises(ValueError, match="not a path inside the output folder"):
            layout.inside(bad)
