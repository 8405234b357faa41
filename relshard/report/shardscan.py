"""Read a shard tar once, front to back: its sha256, its samples and what is wrong with it.

:func:`scan_shard` streams a shard (local or fsspec) once, front to back, through
the shard format's one tar reader (:func:`relshard.shards.tarread.iter_entries`)
while hashing every byte, groups members into samples by key (the
member name up to its first dot, as webdataset does), and parses each sample's
``KEY.json``. It never extracts anything to disk and never unpickles: records
are JSON, arrays are left unread. :func:`verify <relshard.report.verify>` and
:func:`repair <relshard.report.repair>` both build on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from relshard.shards.layout import OutputLayout
from relshard.shards.members import CORE_SUFFIXES
from relshard.shards.tarread import CorruptSample, TarEntry, iter_entries

MAX_PAX = 64 * 1024  # a pax header bigger than this is not one we wrote
MAX_RECORD = 64 * 2**20  # a KEY.json bigger than this is reported, not read
FRAME_SUFFIX_RE = re.compile(r"^(jpg|f\d{3,}\.jpg)$")


class _HashingReader:
    """A read-only file wrapper that hashes and counts everything read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.nbytes += len(data)
        return data

    def drain(self, chunk: int = 1 << 20) -> None:
        while self.read(chunk):
            pass


@dataclass
class ScannedSample:
    """One sample as found in a shard."""

    key: str
    offset: int  # of its first header
    size: int = 0  # bytes spanned, headers and padding included
    suffixes: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    record_error: str | None = None

    @property
    def n_frames(self) -> int:
        return sum(1 for s in self.suffixes if FRAME_SUFFIX_RE.match(s))


@dataclass
class ShardScan:
    """What one pass over a shard found."""

    relpath: str
    sha256: str = ""
    bytes: int = 0
    nsamples: int = 0
    problems: list[str] = field(default_factory=list)


def _split(name: str) -> tuple[str, str] | None:
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return None
    key, suffix = base.split(".", 1)
    return (name[: len(name) - len(base)] + key, suffix)


def _finish(sample: ScannedSample, end: int, problems: list[str], relpath: str) -> None:
    sample.size = end - sample.offset
    missing = [s for s in CORE_SUFFIXES if s not in sample.suffixes]
    if missing:
        problems.append(f"{relpath}: sample {sample.key!r} lacks member(s) "
                        f"{', '.join(f'{sample.key}.{s}' for s in missing)}")


class _Forward:
    """``read_at`` over a stream read once, front to back: the bytes skipped are read too
    (so they are hashed), and a read never goes back."""

    def __init__(self, reader: _HashingReader) -> None:
        self.reader = reader
        self.pos = 0

    def read_at(self, pos: int, n: int) -> bytes:
        while self.pos < pos:  # skip (and hash) the data nobody wants
            got = self.reader.read(min(pos - self.pos, 1 << 20))
            if not got:
                return b""
            self.pos += len(got)
        if pos < self.pos:
            raise CorruptSample(f"a read at byte {pos} goes back past byte {self.pos}")
        data = self.reader.read(n)
        self.pos += len(data)
        return data


def scan_shard(
    layout: OutputLayout, relpath: str, on_sample: Callable[[ScannedSample], None]
) -> ShardScan:
    """Stream ``relpath`` (relative to the root); call ``on_sample`` for each whole sample.

    Problems with the tar itself (unparsable, truncated, a member without a key,
    a sample whose members are not contiguous, a duplicate member) go into the
    returned :attr:`ShardScan.problems`; record problems go into each sample's
    ``record_error``. Raises ``FileNotFoundError`` when the shard is missing.
    """
    scan = ShardScan(relpath)
    path = layout.path(relpath)
    total = layout.fs.size(path)
    with layout.fs.open(path, "rb") as raw:
        reader = _HashingReader(raw)
        stream = _Forward(reader)
        current: ScannedSample | None = None
        seen: set[str] = set()
        end = 0
        try:
            for entry in iter_entries(stream.read_at, int(total), MAX_PAX):
                parts = _split(entry.name) if entry.regular else None
                if parts is None:
                    scan.problems.append(f"{relpath}: member {entry.name!r} is not KEY.SUFFIX")
                    continue
                key, suffix = parts
                if current is None or key != current.key:
                    if current is not None:
                        _finish(current, entry.offset, scan.problems, relpath)
                        on_sample(current)
                        scan.nsamples += 1
                    if key in seen:
                        scan.problems.append(
                            f"{relpath}: the members of sample {key!r} are not contiguous")
                    seen.add(key)
                    current = ScannedSample(key=key, offset=entry.offset)
                if suffix in current.suffixes:
                    scan.problems.append(f"{relpath}: member {entry.name!r} appears twice")
                current.suffixes.append(suffix)
                end = entry.end
                if suffix == "json":
                    _parse_record(stream, entry, current)
        except (CorruptSample, EOFError, OSError) as exc:
            scan.problems.append(f"{relpath}: the tar does not parse ({exc})")
            current = None
        if current is not None:
            _finish(current, end, scan.problems, relpath)
            on_sample(current)
            scan.nsamples += 1
        reader.drain()
    scan.sha256, scan.bytes = reader.sha.hexdigest(), reader.nbytes
    return scan


def _parse_record(stream: _Forward, entry: TarEntry, sample: ScannedSample) -> None:
    if entry.size > MAX_RECORD:
        sample.record_error = (f"{sample.key}.json is {entry.size} bytes, over the "
                               f"{MAX_RECORD}-byte cap on a record; not read")
        return
    raw = stream.read_at(entry.start, entry.size)
    if len(raw) < entry.size:
        raise CorruptSample("the shard ends inside a member", "truncated_shard")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = (f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError)
               else type(exc).__name__)  # never the bytes themselves
        sample.record_error = f"{sample.key}.json is not JSON ({why})"
        return
    if not isinstance(data, dict):
        sample.record_error = f"{sample.key}.json is not a JSON object"
        return
    sample.record = data
