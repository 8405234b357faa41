"""The one tar reader of the shard format: headers, PAX records, member spans, never trusting.

A sample is stored as the byte span of its tar members (header, data, padding for
each; see :mod:`relshard.shards.tarwriter`). :func:`iter_headers` walks the headers
of a span through any ``read_at(offset, n)`` (ustar, PAX and GNU long names,
checked header sums); :func:`member_spans` keeps the regular files,
:func:`read_members` reads them (by suffix, under a size cap),
:func:`split_members` does it on bytes in memory, and :func:`scan_spans` finds
each sample's ``[offset, size]`` in a whole shard file from its headers alone.
Values are decoded by :mod:`relshard.shards.decoding`.

Nothing here trusts the bytes. Every header and PAX record parse either advances
or raises :class:`CorruptSample`; a size must fit inside the bytes at hand; a
member over ``max_member`` bytes is never read (``member_too_large``); an
extended header over :data:`MAX_EXTENDED` bytes is refused unread. No error
message quotes a member's bytes: only sizes, offsets, (shortened) member names
and exception types. Used by training (ShardStream, the catalog), report
(verify, repair, gallery, export) and builders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
ZERO_BLOCK = b"\x00" * BLOCK
EXTENDED = (b"x", b"L")
REGULAR = (b"0", b"\x00")
MAX_MEMBER_BYTES = 256 * 2**20  # default cap on one member's size
MAX_EXTENDED = 2**20  # a PAX or GNU long-name header bigger than this is not a sane one

ReadAt = Callable[[int, int], bytes]


class CorruptSample(ValueError):
    """A sample's bytes cannot be parsed or one of its members cannot be decoded."""

    def __init__(self, detail: str, reason: str = "corrupt_member") -> None:
        super().__init__(detail, reason)
        self.detail = detail
        self.reason = reason

    def __str__(self) -> str:
        return self.detail


def show_name(name: str, limit: int = 80) -> str:
    """A member name for a message: repr'd and shortened."""
    return repr(name if len(name) <= limit else name[:limit] + "...")


def _octal(field: bytes, what: str, where: int) -> int:
    """A numeric header field: octal digits, or GNU base-256; raises :class:`CorruptSample`."""
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for large sizes
        if field[0] & 0x40:
            raise CorruptSample(f"negative tar {what} field at byte {where}")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(0x30 <= c <= 0x37 for c in text):
        raise CorruptSample(f"bad tar {what} field at byte {where}")
    return int(text, 8)


def _pax(data: bytes) -> dict[str, str]:
    """The records of a PAX header (``LEN key=value\\n``); every step advances or raises."""
    out: dict[str, str] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            if data[pos:].strip(b"\x00"):
                raise CorruptSample("bad PAX header: data after NUL padding")
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise CorruptSample("bad PAX header: a record without a length")
        length = int(digits)
        if length < len(digits) + 4 or pos + length > n or data[pos + length - 1] != 0x0A:
            raise CorruptSample(f"bad PAX header: a record of length {length} at +{pos}")
        key, eq, value = data[space + 1:pos + length - 1].partition(b"=")
        if not eq or not key:
            raise CorruptSample("bad PAX header: a record without key=value")
        try:
            out[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptSample("bad PAX header: a record that is not UTF-8") from None
        pos += length
    return out


def parse_header(header: bytes, where: int) -> tuple[str, int, bytes]:
    """``(name, size, type flag)`` of a 512-byte tar header; raises :class:`CorruptSample`."""
    if len(header) != BLOCK:
        raise CorruptSample(f"short tar header at byte {where}", "truncated_shard")
    stored = _octal(header[148:156], "checksum", where)
    unsigned = sum(header[:148]) + 256 + sum(header[156:])
    signed = unsigned - 256 * sum(1 for b in header[:148] + header[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise CorruptSample(f"bad tar header checksum at byte {where}")
    size = _octal(header[124:136], "size", where)
    return _ustar_name(header), size, header[156:157]


def _extended(kind: bytes, data: bytes, name: str | None, size: int | None
              ) -> tuple[str | None, int | None]:
    """Apply a PAX (``x``) or GNU long-name (``L``) header to the next member's name/size."""
    if kind == b"L":
        return data.split(b"\x00", 1)[0].decode("utf-8", "replace"), size
    pax = _pax(data)
    if "size" in pax:
        value = pax["size"]
        if not (value.isascii() and value.isdigit() and len(value) <= 20):
            raise CorruptSample("bad PAX header: size is not a number")
        size = int(value)
    return pax.get("path", name), size


@dataclass(frozen=True)
class TarEntry:
    """One member of a tar span, its extended headers applied."""

    name: str
    offset: int  # of its first header (a PAX or long-name header when it has one)
    start: int  # of its data
    size: int
    kind: bytes  # the type flag

    @property
    def regular(self) -> bool:
        return self.kind in REGULAR

    @property
    def end(self) -> int:
        """The offset after its data and padding."""
        return self.start + self.size + (-self.size % BLOCK)


def iter_entries(read_at: ReadAt, n: int, max_extended: int = MAX_EXTENDED
                 ) -> Iterator[TarEntry]:
    """The members (of any type) in ``n`` bytes, header by header, lazily.

    ``read_at(offset, count)`` returns the bytes of the span there (fewer at its
    end); offsets only grow, so a forward-only stream serves too. Raises
    :class:`CorruptSample` on a bad header, a size past ``n``, an extended header
    over ``max_extended`` bytes, or bytes after the last member that are not
    end-of-archive zeros. The walk ends at the first all-zero block.
    """
    pos = 0
    first: int | None = None
    long_name: str | None = None
    pax_size: int | None = None
    while pos + BLOCK <= n:
        header = read_at(pos, BLOCK)
        if header == ZERO_BLOCK:
            return
        name, size, kind = parse_header(header, pos)
        if kind not in EXTENDED and pax_size is not None:
            size = pax_size
        start = pos + BLOCK
        if size > n - start:
            raise CorruptSample(f"a member of {size} bytes at byte {pos} ends past the end of "
                                f"the sample's {n} bytes", "truncated_shard")
        first = pos if first is None else first
        if kind in EXTENDED:
            if size > max_extended:
                what = "pax header" if kind == b"x" else "GNU long-name header"
                raise CorruptSample(f"an extended tar header ({what} of {size} bytes) at byte "
                                    f"{pos} is implausible")
            data = read_at(start, size)
            if len(data) < size:
                raise CorruptSample("the sample's bytes end inside a member", "truncated_shard")
            long_name, pax_size = _extended(kind, data, long_name, pax_size)
        else:
            yield TarEntry(long_name or name, first, start, size, kind)
            first, long_name, pax_size = None, None, None
        pos = start + size + (-size % BLOCK)
    if pos > n:
        raise CorruptSample("the sample's bytes end inside a member's padding",
                            "truncated_shard")
    if pos < n and read_at(pos, n - pos).strip(b"\x00"):
        raise CorruptSample("the sample's bytes end inside a tar header", "truncated_shard")


def member_spans(read_at: ReadAt, n: int) -> list[tuple[str, int, int]]:
    """``(name, data offset, data size)`` of the regular-file members in ``n`` bytes.

    See :func:`iter_entries` for ``read_at`` and the errors raised.
    """
    return [(e.name, e.start, e.size) for e in iter_entries(read_at, n) if e.regular]


def read_members(read_at: ReadAt, n: int, max_member: int | None = None,
                 keep: frozenset[str] | None = None) -> list[tuple[str, bytes]]:
    """The ``(name, data)`` members of a span, reading only those kept (by suffix).

    A kept member over ``max_member`` bytes raises :class:`CorruptSample`
    (``member_too_large``) before it is read; members not kept are never read
    (they are listed with empty data, so the sample's key is still checked).
    """
    out: list[tuple[str, bytes]] = []
    for name, start, size in member_spans(read_at, n):
        if keep is not None and split_key(name)[1] not in keep:
            out.append((name, b""))
            continue
        if max_member is not None and size > max_member:
            raise CorruptSample(f"member {show_name(name)} is {size} bytes, over the cap of "
                                f"{max_member} (max_member_bytes)", "member_too_large")
        data = read_at(start, size)
        if len(data) < size:
            raise CorruptSample("the sample's bytes end inside a member", "truncated_shard")
        out.append((name, data))
    return out


def split_members(span: bytes | memoryview, max_member: int | None = None,
                  keep: frozenset[str] | None = None) -> list[tuple[str, bytes]]:
    """The ``(name, data)`` regular-file members in a tar byte span, in order."""
    view = memoryview(span)
    return read_members(lambda pos, k: bytes(view[pos:pos + k]), len(view), max_member, keep)


def scan_spans(f: BinaryIO) -> tuple[list[list[int]], bool]:
    """``([offset, size] per sample, complete)`` of a tar file, reading headers only.

    Members are grouped into samples by key. ``complete`` is False when the
    file ends early (a truncated shard): its last, possibly partial, sample is
    left out. A corrupt header also ends the scan there. Every step advances by
    at least one block, so the scan ends on any bytes.
    """
    f.seek(0, 2)
    total = f.tell()
    spans: list[list[int]] = []
    last_key: str | None = None
    pos, first = 0, None
    long_name: str | None = None
    pax_size: int | None = None
    while True:
        f.seek(pos)
        header = f.read(BLOCK)
        if len(header) < BLOCK:
            break
        if header == ZERO_BLOCK:
            return spans, True
        try:
            name, size, kind = parse_header(header, pos)
        except CorruptSample:
            break
        if kind not in EXTENDED and pax_size is not None:
            size = pax_size
        end = pos + BLOCK + size + (-size % BLOCK)
        if end > total:
            if kind in REGULAR and split_key(long_name or name)[0] != last_key:
                return spans, False  # the cut is in a new sample: the last one is whole
            break
        first = pos if first is None else first
        if kind in EXTENDED:
            if size > MAX_EXTENDED:
                break
            try:
                long_name, pax_size = _extended(kind, f.read(size), long_name, pax_size)
            except CorruptSample:
                break
            pos = end
            continue
        name = long_name or name
        long_name, pax_size = None, None
        if kind in REGULAR:
            key = split_key(name)[0]
            if key == last_key:
                spans[-1][1] = end - spans[-1][0]
            else:
                spans.append([first, end - first])
                last_key = key
        pos, first = end, None
    return spans[:-1], False


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\x00", 1)[0].decode("utf-8", "replace")
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\x00", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
    return name


def split_key(name: str) -> tuple[str, str]:
    """``dir/KEY.s1.jpg`` to ``("dir/KEY", "s1.jpg")``, splitting at the basename's first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, suffix if dot else ""
