"""relshard verify and --repair on real tiny builds broken in the ways real folders break."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from relshard.report.repair import repair_output
from relshard.report.tables import InspectError
from relshard.report.verify import verify_output
from relshard.shards import ShardWriter, build_manifest, write_manifest
from tests.unit.report.builds import first_record, rewrite_member, shards_of, write_build
from tests.unit.shards.factory import make_item, rejected_item


@pytest.fixture()
def build(tmp_path: Path) -> Path:
    return write_build(tmp_path / "out")


def _problems(root: Path) -> str:
    report = verify_output(str(root))
    assert not report.ok
    return "\n".join(report.problems)


def test_clean_build_verifies(build: Path) -> None:
    report = verify_output(str(build))
    assert report.ok, report.problems
    assert (report.units, report.shards, report.samples) == (3, 3, 9)


def test_flipped_byte_breaks_the_checksums(build: Path) -> None:
    shard = shards_of(build)[1]
    data = bytearray(shard.read_bytes())
    data[3000] ^= 0xFF  # inside a JPEG: the tar still parses
    shard.write_bytes(bytes(data))
    text = _problems(build)
    assert f"shards/{shard.name}: the manifest says" in text
    assert f"shards/{shard.name}: the index footer says" in text


def test_missing_shard(build: Path) -> None:
    shard = shards_of(build)[0]
    shard.unlink()
    text = _problems(build)
    assert f"shards/{shard.name}: missing" in text and "which is missing" in text


def test_truncated_shard_does_not_parse(build: Path) -> None:
    shard = shards_of(build)[0]
    shard.write_bytes(shard.read_bytes()[:2000])
    assert "the tar does not parse" in _problems(build)


def test_invalid_record_and_unknown_version(build: Path) -> None:
    shard = shards_of(build)[0]
    name, record = first_record(shard)
    record["relations"][0]["object"] = "A9"
    rewrite_member(shard, name, json.dumps(record).encode())
    text = _problems(build)
    assert "does not validate: relation object 'A9' is not a known subject/attribute" in text
    record["schema_version"] = 99
    rewrite_member(shard, name, json.dumps(record).encode())
    assert "uses schema version 99, which this relshard does not know" in _problems(build)


def test_sample_missing_a_core_member(build: Path) -> None:
    shard = shards_of(build)[0]
    name, _ = first_record(shard)
    rewrite_member(shard, name.replace(".json", ".rel.txt"), None)
    text = _problems(build)
    assert "lacks member(s)" in text and ".rel.txt" in text
    assert "index says offset/size/members" in text


def test_duplicate_keys_and_double_claims(build: Path) -> None:
    with ShardWriter(str(build), "w1", 10, 64_000_000) as writer:
        writer.add(make_item("img1"))  # a key already written by w0
        writer.add(rejected_item("img2"))  # an input w0 wrote
    write_manifest(str(build), build_manifest(str(build), "demo", "hash-demo"))
    text = _problems(build)
    assert "appears in both shards/w0-0000.tar and shards/w1-0000.tar" in text
    assert "is both in the index and in the rejects ledger" in text


def test_stale_manifest_and_unindexed_shard(build: Path) -> None:
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["shardlist"] = manifest["shardlist"][1:]
    (build / "manifest.json").write_text(json.dumps(manifest))
    index = sorted((build / "index").glob("*.parquet"))[2]
    index.unlink()
    text = _problems(build)
    assert "does not list committed shard shards/w0-0000.tar (stale manifest)" in text
    assert "shards/w0-0002.tar: no index describes it" in text
    assert "lists shards/w0-0002.tar, which no committed index describes" in text


def test_repair_rebuilds_lost_index_and_manifest(build: Path) -> None:
    (build / "spec.resolved.json").write_text(json.dumps(
        {"spec_hash": "hash-demo", "spec": {"name": "demo"}}))  # as the runner writes it
    original = {p.name: pq.read_table(p) for p in (build / "index").glob("*.parquet")}
    old_manifest = json.loads((build / "manifest.json").read_text())
    shutil.rmtree(build / "index")
    (build / "manifest.json").unlink()
    assert "manifest.json is missing" in _problems(build)
    report = repair_output(str(build))
    assert len(report.rewritten) == 3 and report.manifest_rewritten
    assert verify_output(str(build)).ok
    rebuilt = {p.name: pq.read_table(p) for p in (build / "index").glob("*.parquet")}
    assert rebuilt.keys() == original.keys()
    for name, table in original.items():
        assert rebuilt[name].equals(table)
        assert rebuilt[name].schema.metadata == table.schema.metadata
    manifest = json.loads((build / "manifest.json").read_text())
    for key in ("name", "spec_hash", "shardlist", "totals"):
        assert manifest[key] == old_manifest[key]
    again = repair_output(str(build))
    assert again.rewritten == [] and not again.manifest_rewritten


def test_repair_without_any_run_identity_names_the_folder(build: Path) -> None:
    (build / "manifest.json").unlink()
    repair_output(str(build))
    manifest = json.loads((build / "manifest.json").read_text())
    assert (manifest["name"], manifest["spec_hash"]) == ("out", "unknown")
    assert manifest["totals"]["samples"] == 9


def test_repair_withdraws_index_of_a_lost_shard(build: Path) -> None:
    lost = shards_of(build)[0]
    lost.unlink()
    report = repair_output(str(build))
    assert report.removed == ["index/w0-0000.parquet"]
    after = verify_output(str(build))
    assert after.ok, after.problems
    assert after.samples == 5


def test_repair_reports_samples_it_cannot_index(build: Path) -> None:
    shard = shards_of(build)[0]
    name, _ = first_record(shard)
    rewrite_member(shard, name, b"{not json")
    report = repair_output(str(build))
    assert any("is not JSON" in s for s in report.skipped_samples)
    assert "is not JSON" in _problems(build)


def test_missing_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(InspectError, match="does not exist"):
        verify_output(str(tmp_path / "nope"))


def test_verify_and_repair_through_fsspec(build: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in build.rglob("*"):
        if path.is_file() and path.parent.name != "index":
            fs.pipe(f"/h6verify/{path.relative_to(build)}", path.read_bytes())
    try:
        assert "no index describes it" in "\n".join(verify_output("memory://h6verify").problems)
        assert len(repair_output("memory://h6verify").rewritten) == 3
        report = verify_output("memory://h6verify")
        assert report.ok, report.problems
        assert report.samples == 9
    finally:
        fs.rm("/h6verify", recursive=True)


def test_verify_reports_progress_in_shard_bytes(tmp_path):
    from relshard.report.verify import verify_output

    out = write_build(tmp_path / "out")
    calls: list[tuple[str, int]] = []
    advanced: list[int] = []

    def bars(description: str, total: int):
        calls.append((description, total))
        return advanced.append

    report = verify_output(str(out), progress=bars)
    shard_bytes = sum(p.stat().st_size for p in (out / "shards").glob("*.tar"))
    assert report.ok and len(calls) == 1 and calls[0][1] == shard_bytes > 0
    assert sum(advanced) == shard_bytes and len(advanced) == report.units
