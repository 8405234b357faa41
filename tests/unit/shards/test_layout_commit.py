"""Output layout paths and staged files: invisible until published, then whole."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from relshard.shards.commit import StagedFile, write_json_atomic
from relshard.shards.layout import (
    OutputLayout,
    index_relpath,
    is_local,
    is_tmp_name,
    open_root,
    rejects_relpath,
    shard_relpath,
    tmp_name_for,
    unit_of,
    validate_unit_name,
)


@pytest.mark.parametrize(("where", "local"), [
    ("/data/out", True), ("rel/out", True), ("file:///data/out", True), ("local:///x", True),
    ("s3://bucket/out", False), ("memory://out", False), ("simplecache::s3://b/x", False),
])
def test_is_local_answers_for_urls_and_filesystems(where: str, local: bool) -> None:
    import fsspec

    assert is_local(where) is local
    fs, _ = fsspec.url_to_fs(where) if not where.startswith(("s3", "simplecache")) else (None, 0)
    if fs is not None:
        assert is_local(fs) is local
        assert OutputLayout.open(where).is_local is local


def test_paths_and_names() -> None:
    assert shard_relpath("w0-0001") == "shards/w0-0001.tar"
    assert index_relpath("w0-0001") == "index/w0-0001.parquet"
    assert rejects_relpath("w0-0001") == "rejects/w0-0001.parquet"
    tmp = tmp_name_for("shards/w0-0001.tar")
    assert tmp.startswith("shards/.w0-0001.tar.tmp-") and is_tmp_name(tmp.split("/")[1])
    assert tmp != tmp_name_for("shards/w0-0001.tar")
    assert unit_of("w0-0001.tar", ".tar") == "w0-0001"
    assert unit_of(".w0-0001.tar.tmp-abc", ".tar") is None
    assert unit_of("notes.md", ".tar") is None
    for bad in ("", ".hidden", "-x", "a.b", "a/b", "x" * 200):
        with pytest.raises(ValueError):
            validate_unit_name(bad)


def test_open_local_path_and_url(tmp_path: Path) -> None:
    local = OutputLayout.open(str(tmp_path / "run"))
    assert local.is_local and local.path("shards/a.tar") == f"{tmp_path}/run/shards/a.tar"
    assert OutputLayout.open(f"file://{tmp_path}/run").is_local
    mem = OutputLayout.open(f"memory://b-{uuid.uuid4().hex[:6]}/run")
    assert not mem.is_local
    assert OutputLayout.open(local) is local
    fs, root = open_root(str(tmp_path / "run"))
    assert root == local.root and fs is local.fs


def test_local_staged_file_is_invisible_until_published(tmp_path: Path) -> None:
    layout = OutputLayout.open(str(tmp_path))
    (tmp_path / "shards").mkdir()
    final = tmp_path / "shards" / "u.tar"
    final.write_bytes(b"old")
    staged = StagedFile(layout, "shards/u.tar", raw=True)
    staged.file.write(b"new content")
    staged.finish()
    assert final.read_bytes() == b"old"  # readers still see the earlier file
    tmp_files = [p.name for p in (tmp_path / "shards").iterdir() if p.name != "u.tar"]
    assert len(tmp_files) == 1 and is_tmp_name(tmp_files[0])
    staged.publish()
    assert final.read_bytes() == b"new content"
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["u.tar"]
    with pytest.raises(ValueError):
        staged.publish()


def test_discard_keeps_the_published_file(tmp_path: Path) -> None:
    layout = OutputLayout.open(str(tmp_path))
    write_json_atomic(layout, "manifest.json", {"v": 1})
    staged = StagedFile(layout, "manifest.json")
    staged.file.write(b"{broken")
    staged.discard()
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_remote_staged_file_writes_the_final_name() -> None:
    layout = OutputLayout.open(f"memory://b-{uuid.uuid4().hex[:6]}/run")
    staged = StagedFile(layout, "index/u.parquet")
    assert staged.staged_relpath == "index/u.parquet"
    staged.file.write(b"abc")
    staged.publish()
    assert layout.fs.cat_file(layout.path("index/u.parquet")) == b"abc"
    layout.fs.rm(layout.root.rsplit("/", 1)[0], recursive=True)
