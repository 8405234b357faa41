"""Reading a sample by byte range: only that range, every header checked, nothing trusted."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from relshard.report.gallery.build import GalleryOptions, build_gallery, want_member
from relshard.report.gallery.sample_reader import read_sample
from relshard.shards.layout import OutputLayout
from relshard.shards.tarwriter import TarWriter
from tests.unit.report.gallery_builds import write_gallery_build


class RecordingFS(LocalFileSystem):
    """A local filesystem that records every ranged read and refuses whole-file opens."""

    cachable = False

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int, int]] = []

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        assert start is not None and end is not None, "a whole-file read"
        self.reads.append((path, start, end))
        return super().cat_file(path, start=start, end=end, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gallery_build(tmp_path_factory.mktemp("reader") / "out")


def _rows(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((root / "index").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _members(shard: Path) -> dict[str, bytes]:
    with tarfile.open(shard) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]


def test_reads_exactly_the_members_of_each_row(built: Path) -> None:
    layout = OutputLayout.open(str(built))
    rows = _rows(built)
    assert len(rows) == 6
    for row in rows:
        sample = read_sample(layout, row)
        assert sample.problems == []
        assert list(sample.members) == row["members"]
        truth = _members(built / row["shard"])
        for suffix, data in sample.members.items():
            assert truth[f"{row['key']}.{suffix}"] == data


def test_reads_only_inside_the_range_and_skips_the_clip(built: Path) -> None:
    fs = RecordingFS()
    layout = OutputLayout(fs=fs, root=str(built), url=str(built))
    video = next(r for r in _rows(built) if r["modality"] == "video")
    sample = read_sample(layout, video, want_member(max_frames=2))
    assert sample.problems == []
    assert sample.skipped == {"f002.jpg": sample.skipped["f002.jpg"], "mp4": 3000}
    assert {"json", "f000.jpg", "f001.jpg", "s1.jpg"} <= set(sample.members)
    assert fs.reads and all(
        video["offset"] <= start < end <= video["offset"] + video["size"]
        for _p, start, end in fs.reads)
    fs.reads.clear()
    only = read_sample(layout, video, only={"json"})
    assert list(only.members) == ["json"]
    assert sum(end - start for _p, start, end in fs.reads) <= video["size"]


def _shard(tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    path = tmp_path / "shards" / "x.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _read(tmp_path: Path, key: str, size: int | None = None, offset: int = 0,
          shard: str = "shards/x.tar") -> Any:
    path = tmp_path / "shards" / "x.tar"
    size = size if size is not None else path.stat().st_size - 1024 - offset
    layout = OutputLayout.open(str(tmp_path))
    return read_sample(layout, {"key": key, "shard": shard, "offset": offset, "size": size})


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "k.json/../../x",
                                  "other.json", "k..json"])
def test_member_names_outside_the_sample_are_refused(tmp_path: Path, name: str) -> None:
    _shard(tmp_path, [("k.json", b"{}"), (name, b"evil")])
    sample = _read(tmp_path, "k")
    assert sample.members == {"json": b"{}"}
    assert any("does not belong" in p or "not a plain" in p for p in sample.problems)
    assert not (tmp_path / "etc").exists()


def test_a_link_member_is_reported_not_followed(tmp_path: Path) -> None:
    link = tarfile.TarInfo("k.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _shard(tmp_path, [("k.json", b"{}"), link])
    sample = _read(tmp_path, "k")
    assert sample.members == {"json": b"{}"}
    assert any("not a regular file" in p for p in sample.problems)


def test_sizes_past_the_range_are_never_trusted(tmp_path: Path) -> None:
    _shard(tmp_path, [("k.json", b"{}"), ("k.jpg", b"x" * 5000)])
    sample = _read(tmp_path, "k", size=2048)  # the row claims less than the sample spans
    assert "jpg" not in sample.members
    assert any("past the end" in p for p in sample.problems)
    beyond = _read(tmp_path, "k", size=1 << 20)  # a range past the shard's end
    assert any("ends inside the sample" in p for p in beyond.problems)


def test_corrupt_headers_and_impossible_rows(tmp_path: Path) -> None:
    path = _shard(tmp_path, [("k.json", b"{}")])
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # inside the name field: the checksum no longer matches
    path.write_bytes(bytes(data))
    assert any("checksum" in p for p in _read(tmp_path, "k").problems)
    assert any("impossible" in p for p in _read(tmp_path, "k", offset=100).problems)
    assert any("outside the output" in p
               for p in _read(tmp_path, "k", shard="../x.tar").problems)
    missing = _read(tmp_path, "k", shard="shards/gone.tar", size=1024)
    assert any("cannot read" in p for p in missing.problems)


def test_long_names_through_pax_headers(tmp_path: Path) -> None:
    key = "k" * 150  # KEY.json is longer than the 100-byte ustar name field
    buf = io.BytesIO()
    writer = TarWriter(buf)
    offset, size = writer.add_sample([(f"{key}.json", b'{"a": 1}'), (f"{key}.txt", b"hi")])
    writer.close()
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "x.tar").write_bytes(buf.getvalue())
    sample = _read(tmp_path, key, size=size, offset=offset)
    assert sample.problems == [] and sample.members == {"json": b'{"a": 1}', "txt": b"hi"}


def test_gallery_through_fsspec(built: Path) -> None:
    """The same gallery from a memory:// copy of the output (what s3:// goes through)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in built.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"/gallery-copy/{path.relative_to(built)}", path.read_bytes())
    result = build_gallery("memory://gallery-copy", GalleryOptions(where=["predicate=holds"]))
    assert result.shown == 3 and result.total == 6 and result.rejects == 4
    assert "memory://gallery-copy/shards/" in result.html
    fs.rm("/gallery-copy", recursive=True)
