"""Read one sample's members by byte range, as the index locates them, without trusting the tar.

An index row gives ``shard`` (relative to the output root), ``offset`` (the
first tar header of the sample, see :mod:`relshard.shards.tarwriter`) and
``size`` (the bytes the sample spans: headers, data, padding). This module
reads only that range, with ranged reads (``fs.cat_file(path, start, end)``),
so it works the same on a local folder and on ``s3://``:

- a sample of at most :data:`WHOLE_READ` bytes is fetched in one request;
- a bigger one (a sample carrying a clip) is walked header by header, and only
  the wanted members are fetched.

Every header is checked: its checksum, a size that fits inside the range (never
past it), a regular file (or a pax header, whose ``path``/``size`` apply to the
next member), and a name ``KEY.SUFFIX`` for the row's own key with a plain
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

BLOCK = 512
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


def _octal(field_bytes: bytes, what: str) -> int:
    if field_bytes[:1] and field_bytes[0] & 0x80:  # base-256 (GNU) numbers
        value = int.from_bytes(field_bytes[1:], "big")
        return value if not field_bytes[0] & 0x40 else -1
    text = field_bytes.split(b"\x00", 1)[0].strip(b" \x00")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise SampleReadError(f"tar header field {what} is not a number") from None


def parse_header(block: bytes) -> tuple[str, int, bytes]:
    """(name, size, type flag) of one 512-byte ustar header; raises SampleReadError."""
    if len(block) != BLOCK:
        raise SampleReadError("short tar header")
    stored = _octal(block[148:156], "chksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = sum((b - 256 if b > 127 else b) for b in block[:148]) + 8 * 32 + sum(
        (b - 256 if b > 127 else b) for b in block[156:])
    if stored not in (unsigned, signed):
        raise SampleReadError("tar header checksum mismatch")
    name = block[:100].split(b"\x00", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    size = _octal(block[124:136], "size")
    if size < 0:
        raise SampleReadError("negative member size")
    return name.decode("utf-8", "replace"), size, block[156:157]


def parse_pax(data: bytes) -> dict[str, str]:
    """The records of a pax extended header (``LEN key=value\\n``)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise SampleReadError("malformed pax header") from None
        if length <= 0 or pos + length > len(data):
            raise SampleReadError("malformed pax header")
        record = data[space + 1 : pos + length].rstrip(b"\n")
        k, _, v = record.partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        pos += length
    return out


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
    """Read the members of ``window`` into ``out``; raises SampleReadError on a bad tar."""
    pos = 0
    pax: dict[str, str] = {}
    while pos + BLOCK <= window.size:
        block = window.read_at(pos, BLOCK)
        if block.count(0) == BLOCK:
            break  # end-of-archive blocks (a sample never has them, but be lenient)
        name, size, kind = parse_header(block)
        if kind == b"x":
            if size > MAX_PAX or pos + BLOCK + size > window.size:
                raise SampleReadError(f"pax header of {size} bytes at +{pos} is implausible")
            pax = parse_pax(window.read_at(pos + BLOCK, size))
            pos += BLOCK + -(-size // BLOCK) * BLOCK
            continue
        name = pax.get("path", name)
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise SampleReadError("pax size is not a number") from None
        pax = {}
        data_end = pos + BLOCK + size
        if data_end > window.size:
            raise SampleReadError(f"member {name[:120]!r} claims {size} bytes, past the end of "
                                  f"the sample's {window.size}-byte range")
        if kind not in (b"0", b"\x00"):
            out.problems.append(f"member {name[:120]!r} is not a regular file (type {kind!r})")
        else:
            suffix = _suffix_of(name, key)
            if suffix in out.members or suffix in out.skipped:
                out.problems.append(f"member {name[:120]!r} appears twice")
            elif size <= max_member and want(suffix, size):
                out.members[suffix] = window.read_at(pos + BLOCK, size)
            else:
                out.skipped[suffix] = size
        pos = pos + BLOCK + -(-size // BLOCK) * BLOCK
        if only is not None and only <= set(out.members):
            return


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
