"""Hostile tar bytes for the reader tests: hand-made headers, PAX records, lying images."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BLOCK = 512
SECRET = b"root:$6$SECRET-HASH-DO-NOT-LEAK$abc:19000:0:99999:7:::"


def header(name: str | bytes, size: int, kind: bytes = b"0", *, size_field: bytes | None = None,
           checksum: bytes | None = None) -> bytes:
    """One ustar header; ``size_field``/``checksum`` override the encoded fields verbatim."""
    raw = name.encode() if isinstance(name, str) else name
    block = bytearray(BLOCK)
    block[:len(raw[:100])] = raw[:100]
    block[100:108] = b"0000644\x00"
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[136:148] = b"00000000000\x00"
    block[156:157] = kind
    block[257:263] = b"ustar\x00"
    block[263:265] = b"00"
    block[148:156] = b" " * 8
    block[148:156] = checksum if checksum is not None else b"%06o\x00 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % BLOCK)


def member(name: str, data: bytes) -> bytes:
    return header(name, len(data)) + padded(data)


def pax_member(records: bytes, name: str, data: bytes) -> bytes:
    """A PAX header holding ``records`` verbatim, then the member it describes."""
    return header("PaxHeader/x", len(records), b"x") + padded(records) + member(name, data)


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def tar_of(members: list[tuple[str, bytes]], pax: bool = True) -> bytes:
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels (its data is tiny)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def write_output(root: Path, shards: dict[str, bytes], counts: dict[str, int] | None = None,
                 index: dict[str, list[tuple[int, int]]] | None = None,
                 extra_entries: list[dict] | None = None) -> Path:
    """An output folder of the given raw shard bytes; returns the manifest path.

    ``index`` (unit -> [(offset, size)...]) writes ``index/UNIT.parquet`` and marks
    the manifest as relshard's; ``counts`` defaults to one sample per shard.
    """
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shardlist = []
    for unit, data in shards.items():
        (root / "shards" / f"{unit}.tar").write_bytes(data)
        shardlist.append({"url": f"shards/{unit}.tar", "nsamples": (counts or {}).get(unit, 1)})
    manifest: dict = {"__kind__": "wids-shard-index-v1", "wids_version": 1,
                      "shardlist": shardlist + list(extra_entries or [])}
    if index is not None:
        (root / "index").mkdir(exist_ok=True)
        for unit, rows in index.items():
            pq.write_table(pa.table({"key": [f"k{i}" for i in range(len(rows))],
                                     "offset": [r[0] for r in rows],
                                     "size": [r[1] for r in rows]}),
                           root / "index" / f"{unit}.parquet")
        manifest["spec_hash"] = "test"
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


class TookTooLong(Exception):
    """A reader call ran past its time limit (it would have hung)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TookTooLong` in this (main) thread after ``seconds``."""
    def fire(_signum: int, _frame: object) -> None:
        raise TookTooLong(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
