"""The manifest: totals from index footers, wids compatibility, and a memory:// run end to end."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import fsspec
import pytest

from relshard.shards import (
    ShardWriter,
    build_manifest,
    done_input_keys,
    read_manifest,
    recover,
    write_manifest,
    write_resolved_spec,
)
from tests.unit.shards.factory import make_item, rejected_item

MB = 1_000_000


def _run(root: str) -> None:
    """Two write tasks and a task with only rejects, as a Datasink would run them."""
    with ShardWriter(root, "w1", 4, 64 * MB) as w:
        for i in range(6):
            w.add(make_item(f"b{i}"))
        w.add(rejected_item("b-bad"))
    with ShardWriter(root, "w0", 4, 64 * MB) as w:
        w.add(make_item("a0", n_samples=2))
        w.add(rejected_item("a-bad", "timeout"))
    with ShardWriter(root, "w2", 4, 64 * MB) as w:
        w.add(rejected_item("c-bad"))


def test_manifest_totals_and_shardlist(tmp_path: Path) -> None:
    _run(str(tmp_path))
    manifest = build_manifest(str(tmp_path), "demo", "abc123", extra={"run_id": "r1"})
    assert manifest["totals"] == {"samples": 8, "shards": 3, "bytes": manifest["totals"]["bytes"],
                                  "inputs_written": 7, "inputs_rejected": 3, "units": 4}
    urls = [s["url"] for s in manifest["shardlist"]]
    assert urls == ["shards/w0-0000.tar", "shards/w1-0000.tar", "shards/w1-0001.tar"]
    assert [s["nsamples"] for s in manifest["shardlist"]] == [2, 4, 2]
    for shard in manifest["shardlist"]:
        data = (tmp_path / shard["url"]).read_bytes()
        assert shard["filesize"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["totals"]["bytes"] == sum(s["filesize"] for s in manifest["shardlist"])
    assert (manifest["name"], manifest["spec_hash"], manifest["run_id"]) == ("demo", "abc123", "r1")
    assert manifest["schema_version"] == 1 and manifest["relshard_version"] == "0.1.0"
    assert manifest["__kind__"] == "wids-shard-index-v1" and manifest["wids_version"] == 1
    with pytest.raises(ValueError, match="override"):
        build_manifest(str(tmp_path), "demo", "abc123", extra={"shardlist": []})


def test_write_manifest_is_atomic_json(tmp_path: Path) -> None:
    _run(str(tmp_path))
    manifest = build_manifest(str(tmp_path), "demo", "abc123")
    write_manifest(str(tmp_path), manifest)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert read_manifest(str(tmp_path)) == manifest
    assert not list(tmp_path.glob(".*"))
    assert recover(str(tmp_path)).clean  # the manifest is no orphan


def test_resolved_spec_is_written_beside_the_shards(tmp_path: Path) -> None:
    from relshard.spec import parse_spec

    spec = parse_spec({"name": "demo", "sources": [{"path": "in/"}],
                       "output": {"path": str(tmp_path / "out")}})
    write_resolved_spec(spec.output.path, spec.model_dump(mode="json"))
    data = json.loads((tmp_path / "out" / "spec.resolved.json").read_text())
    assert parse_spec(data) == spec
    assert recover(spec.output.path).clean


def test_manifest_is_a_wids_shard_index(tmp_path: Path) -> None:
    wids = pytest.importorskip("wids")
    root = tmp_path / "out"
    _run(str(root))
    write_manifest(str(root), build_manifest(str(root), "demo", "abc123"))
    dataset = wids.ShardListDataset(str(root / "manifest.json"), cache_dir=str(tmp_path / "cache"),
                                    transformations=[])
    assert len(dataset) == 8
    sample = dataset[3]  # the second sample of the second shard
    expected = make_item("b1")
    assert sample["__key__"] == expected.input.input_key
    members = {k: v.getvalue() for k, v in sample.items() if isinstance(v, io.BytesIO)}
    assert sample["__shard__"].endswith("shards/w1-0000.tar")
    assert json.loads(members[".json"])["key"] == expected.input.input_key
    assert members[".jpg"] == expected.samples[0].frames[0].jpeg
    assert {".txt", ".rel.txt", ".s1.jpg"} <= set(members)


def test_memory_root_write_recover_manifest() -> None:
    bucket = f"relshard-{uuid.uuid4().hex[:8]}"
    root = f"memory://{bucket}/run"
    fs, path = fsspec.url_to_fs(root)
    try:
        _run(root)
        assert not [p for p in fs.find(path) if "/." in p]  # no temporary names on object stores
        assert recover(root).clean
        assert len(done_input_keys(root)) == 10
        manifest = build_manifest(root, "mem", "h")
        write_manifest(root, manifest)
        assert read_manifest(root)["totals"]["samples"] == 8
        first = manifest["shardlist"][0]
        data = fs.cat_file(f"{path}/{first['url']}")
        assert hashlib.sha256(data).hexdigest() == first["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert len(tf.getnames()) == 2 * 5
    finally:
        fs.rm(f"/{bucket}", recursive=True)
