"""Read one sample's members by byte range, as the index locates them, without trusting the tar.

An index row gives ``shard`` (relative to the output root), ``offset`` (the
first tar header of the sample, see :mod:`relshard.shards.tarwriter`) and
``size`` (the bytes the sample spans: headers, data, padding). This module
reads only that range, with ranged reads (``fs.cat_file(path, start, end)``),
so it works the same on a local folder and on ``s3://``:

- a sample of at most :data:`WHOLE_READ` bytes is fetched in one request;
- a bigger one (a sample carrying a clip) is walked header by header, and only
  the wanted members are fetched.

Every header is checked by the shard format's one tar reader
(:mod:`relshard.shards.tarread`): its checksum, a size that fits inside the range
(never past it), a regular file (or a PAX or long-name header, whose ``path``/``size``
apply to the next member); and here, a name ``KEY.SUFFIX`` for the row's own key with a plain
suffix (no ``/``, no ``..``). Anything else is a problem reported with the
sample, never an exception that stops the gallery, and nothing is ever
extracted to disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relshard.record import validate_member_suffix
from relshard.shards.layout import OutputLayout
from relshard.shards.tarread import BLOCK, CorruptSample, iter_entries

WHOLE_READ = 16 * 2**20  # samples up to this size are fetched in one ranged read
CHUNK = 256 * 1024  # otherwise read ahead this much per request
MAX_PAX = 64 * 1024  # a pax header bigger than this is not one we wrote
MAX_MEMBER = 32 * 2**20  # members bigger than this are never read (listed as skipped)

Want = Callable[[str, int], bool]


class SampleReadError(ValueError):
    """The bytes at a sample's range are not a sane tar of that sample."""


@dataclass
class SampleBytes:
    """What was read of one sample: wanted members, the others' sizes, and problems."""

    key: str
    shard: str
    offset: int
    size: int
    members: dict[str, bytes] = field(default_factory=dict)  # suffix -> bytes
    skipped: dict[str, int] = field(default_factory=dict)  # suffix -> size, not read
    problems: list[str] = field(default_factory=list)

    @property
    def record_bytes(self) -> bytes | None:
        return self.members.get("json")


class _Window:
    """Ranged reads inside ``[offset, offset + size)`` of one file, with a small read-ahead."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, chunk: int) -> None:
        self._fetch = fetch  # (start, end) relative to the sample -> bytes
        self.size = size
        self._chunk = chunk
        self._start = 0
        self._buf = b""
        self.short = False  # the file ended before the range did

    def read_at(self, pos: int, n: int) -> bytes:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise SampleReadError(f"read of {n} bytes at +{pos} is outside the sample's "
                                  f"{self.size} bytes")
        end = pos + n
        if self._start <= pos and end <= self._start + len(self._buf):
            return self._buf[pos - self._start : end - self._start]
        stop = min(self.size, max(end, pos + self._chunk))
        data = self._fetch(pos, stop)
        self.short = self.short or len(data) < stop - pos
        if len(data) < n:
            raise SampleReadError(f"the shard ends inside the sample (+{pos + len(data)} of "
                                  f"{self.size} bytes)")
        self._start, self._buf = pos, data
        return data[:n]


def _suffix_of(name: str, key: str) -> str:
    if not name.startswith(key + "."):
        raise SampleReadError(f"member {name[:120]!r} does not belong to sample {key!r}")
    suffix = name[len(key) + 1 :]
    try:
        return validate_member_suffix(suffix)
    except ValueError as exc:
        raise SampleReadError(f"member {name[:120]!r}: {exc}") from None


def walk_members(window: _Window, key: str, want: Want, only: set[str] | None,
                 max_member: int, out: SampleBytes) -> None:
    """Read the members of ``window`` into ``out``; raises SampleReadError on a bad tar.

    The headers are walked by the shard format's one reader
    (:func:`relshard.shards.tarread.iter_entries`).
    """
    try:
        for entry in iter_entries(window.read_at, window.size, MAX_PAX):
            name = entry.name
            if not entry.regular:
                out.problems.append(f"member {name[:120]!r} is not a regular file "
                                    f"(type {entry.kind!r})")
            else:
                suffix = _suffix_of(name, key)
                if suffix in out.members or suffix in out.skipped:
                    out.problems.append(f"member {name[:120]!r} appears twice")
                elif entry.size <= max_member and want(suffix, entry.size):
                    out.members[suffix] = window.read_at(entry.start, entry.size)
                else:
                    out.skipped[suffix] = entry.size
            if only is not None and only <= set(out.members):
                return
    except CorruptSample as exc:
        raise SampleReadError(str(exc)) from None


def read_sample(layout: OutputLayout, row: dict[str, Any], want: Want | None = None, *,
                only: set[str] | None = None, max_member: int = MAX_MEMBER) -> SampleBytes:
    """The members of the sample an index row points at.

    ``want(suffix, size)`` picks the members to read (default: all); ``only``
    stops the walk as soon as those suffixes are read (``{"json"}`` reads just
    the record). Problems (a corrupt header, a member of another key, a range
    past the shard's end) are returned in :attr:`SampleBytes.problems`.
    """
    key, shard = str(row["key"]), str(row["shard"])
    offset, size = int(row["offset"]), int(row["size"])
    out = SampleBytes(key=key, shard=shard, offset=offset, size=size)
    if offset < 0 or size < BLOCK or offset % BLOCK or size % BLOCK:
        out.problems.append(f"index row has an impossible byte range (offset {offset}, "
                            f"size {size})")
        return out
    if shard.startswith("/") or ".." in shard.split("/"):
        out.problems.append(f"index row names the shard {shard!r} outside the output folder")
        return out
    path = layout.path(shard)

    def fetch(start: int, end: int) -> bytes:
        return bytes(layout.fs.cat_file(path, start=offset + start, end=offset + end))

    whole = size <= WHOLE_READ and only is None
    window = _Window(fetch, size, size if whole else CHUNK)
    try:
        walk_members(window, key, want or (lambda _s, _n: True), only, max_member, out)
        if window.short:
            raise SampleReadError(f"the shard ends inside the sample's {size}-byte range")
    except SampleReadError as exc:
        out.problems.append(f"{shard} @ {offset}: {exc}")
    except (OSError, ValueError) as exc:  # missing shard, storage errors
        out.problems.append(f"{shard} @ {offset}: cannot read ({type(exc).__name__}: "
                            f"{str(exc)[:200]})")
    return out
