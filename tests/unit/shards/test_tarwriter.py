"""The tar writer: byte-identical to tarfile's PAX output, offsets and sha256 right."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from relshard.shards.tarwriter import (
    TarWriter,
    member_span,
    validate_member_name,
)
from tests.unit.shards.factory import tar_members, tar_names


def _tarfile_bytes(members: list[tuple[str, bytes]], mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = [
    ("abc.json", b'{"a":1}'),
    ("abc.jpg", os.urandom(1000)),
    ("abc.empty", b""),
    ("abc.block", bytes(512)),
    ("x" * 100 + ".long", b"exactly at the limit is not"),  # 106 bytes: pax header
    ("y" * 97 + ".jp", b"100 bytes fits the ustar field"),
    ("caf\u00e9.txt", b"a non-ASCII name gets a pax header"),
]


@pytest.mark.parametrize("mtime", [0, 1_700_000_000])
def test_output_is_byte_identical_to_tarfile(mtime: int) -> None:
    buf = io.BytesIO()
    writer = TarWriter(buf, mtime=mtime)
    for name, data in MEMBERS:
        writer.add(name, data)
    writer.close()
    assert buf.getvalue() == _tarfile_bytes(MEMBERS, mtime)
    assert writer.size == len(buf.getvalue())
    assert writer.hexdigest() == hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.mark.parametrize("blocks", range(20))
def test_end_padding_matches_tarfile_at_every_record_phase(blocks: int) -> None:
    members = [("a.bin", bytes(blocks * 512 + 100))]  # content ends at each block of a record
    buf = io.BytesIO()
    writer = TarWriter(buf)
    writer.add_sample(members)
    writer.close()
    assert buf.getvalue() == _tarfile_bytes(members, 0)
    assert writer.size == len(buf.getvalue()) and writer.size % (20 * 512) == 0


def test_raw_file_writev_path_matches_buffered(tmp_path: Path) -> None:
    samples = [[(f"k{i:03d}.json", b"{}"), (f"k{i:03d}.jpg", os.urandom(700 + i))]
               for i in range(50)]
    digests = []
    for buffering in (0, 8192):
        path = tmp_path / f"b{buffering}.tar"
        with open(path, "wb", buffering=buffering) as f:
            writer = TarWriter(f)
            for s in samples:
                writer.add_sample(s)
            writer.close()
        data = path.read_bytes()
        assert len(data) == writer.size
        assert hashlib.sha256(data).hexdigest() == writer.hexdigest()
        digests.append(writer.hexdigest())
        assert tar_names(path)[:2] == ["k000.json", "k000.jpg"]
    assert digests[0] == digests[1]


def test_sample_offsets_and_spans_point_at_their_members() -> None:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    spans = [writer.add_sample([(f"s{i}.txt", b"x" * (i * 300)), (f"s{i}.bin", b"y" * 5)])
             for i in range(4)]
    writer.close()
    data = buf.getvalue()
    assert spans[0][0] == 0
    for (off, size), (nxt, _) in zip(spans, spans[1:], strict=False):
        assert off + size == nxt
    for i, (off, size) in enumerate(spans):
        members = tar_members(data[off: off + size])
        assert members == [(f"s{i}.txt", b"x" * (i * 300)), (f"s{i}.bin", b"y" * 5)]
        expected = member_span(f"s{i}.txt".encode(), i * 300) + member_span(f"s{i}.bin".encode(), 5)
        assert size == expected
    assert len(data) % (20 * 512) == 0


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a/../b", "..", "a\x00b", "dir/", "a\\b",
                                 "./a", "a//b"])
def test_unsafe_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_member_name(bad)
    writer = TarWriter(io.BytesIO())
    with pytest.raises(ValueError):
        writer.add(bad, b"x")


def test_add_after_close_is_an_error() -> None:
    writer = TarWriter(io.BytesIO())
    writer.close()
    with pytest.raises(ValueError):
        writer.add("a.txt", b"x")
