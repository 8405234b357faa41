"""Safe decoding of one sample's bytes: tar members to Python values, never pickle.

A sample is read as the byte span of its tar members (header, data, padding for
each). :func:`member_spans` walks that span's headers (ustar, PAX and GNU long
names, checked header sums) through any ``read_at(offset, n)``;
:func:`split_members` does it on bytes in memory; :func:`decode_sample` turns
members into values by suffix:

======================  ==================================================
``json``                ``json.loads`` (any ``*.json``)
``txt``                 UTF-8 text (``txt``, ``rel.txt``, any ``*.txt``)
``jpg``/``jpeg``/``png``  RGB ``uint8`` array ``[H, W, 3]`` (``image="rgb"``),
                        or the encoded bytes (``image="bytes"``)
``npy``                 ``numpy.load(..., allow_pickle=False)``
anything else           the raw bytes, untouched
======================  ==================================================

Nothing here trusts the bytes. Every header and PAX record parse either advances
or raises :class:`CorruptSample`; a size must fit inside the bytes at hand; a
member over ``max_member`` bytes is never read (``member_too_large``), an image
whose header claims more than ``max_pixels`` pixels is never decoded
(``image_too_large``), an ``.npy`` header must match its data before anything is
allocated. A member that does not decode (bad JSON, an image OpenCV cannot read,
an object-dtype ``.npy``) raises :class:`CorruptSample` too; the stream skips that
sample and counts it by :attr:`CorruptSample.reason`. No error message quotes a
member's bytes: only sizes, offsets, (shortened) member names and exception types.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, Literal

import numpy as np

ImageMode = Literal["rgb", "bytes"]
BLOCK = 512
ZERO_BLOCK = b"\x00" * BLOCK
EXTENDED = (b"x", b"L")
REGULAR = (b"0", b"\x00")
IMAGE_SUFFIXES = ("jpg", "jpeg", "png")
MAX_MEMBER_BYTES = 256 * 2**20  # default cap on one member's size
MAX_IMAGE_PIXELS = 89_478_485  # default cap on an image's width x height (Pillow's)
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


def _show(name: str, limit: int = 80) -> str:
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


def member_spans(read_at: ReadAt, n: int) -> list[tuple[str, int, int]]:
    """``(name, data offset, data size)`` of the regular-file members in ``n`` bytes.

    ``read_at(offset, count)`` returns the bytes of the span there (fewer at its
    end). Raises :class:`CorruptSample` on a bad header, a size past ``n``, or bytes
    after the last member that are not end-of-archive zeros.
    """
    out: list[tuple[str, int, int]] = []
    pos = 0
    long_name: str | None = None
    pax_size: int | None = None
    while pos + BLOCK <= n:
        header = read_at(pos, BLOCK)
        if header == ZERO_BLOCK:
            return out
        name, size, kind = parse_header(header, pos)
        if kind not in EXTENDED and pax_size is not None:
            size = pax_size
        start = pos + BLOCK
        if size > n - start:
            raise CorruptSample(f"a member of {size} bytes at byte {pos} ends past the "
                                f"sample's {n} bytes", "truncated_shard")
        if kind in EXTENDED:
            if size > MAX_EXTENDED:
                raise CorruptSample(f"an extended tar header of {size} bytes at byte {pos}")
            data = read_at(start, size)
            if len(data) < size:
                raise CorruptSample("the sample's bytes end inside a member", "truncated_shard")
            long_name, pax_size = _extended(kind, data, long_name, pax_size)
        else:
            if kind in REGULAR:
                out.append((long_name or name, start, size))
            long_name, pax_size = None, None
        pos = start + size + (-size % BLOCK)
    if pos < n and read_at(pos, n - pos).strip(b"\x00"):
        raise CorruptSample("the sample's bytes end inside a tar header", "truncated_shard")
    return out


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
            raise CorruptSample(f"member {_show(name)} is {size} bytes, over the cap of "
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


def decode_member(suffix: str, data: bytes, image: ImageMode = "rgb",
                  max_pixels: int | None = MAX_IMAGE_PIXELS) -> Any:
    """One member's value by its suffix (see the module table); raises :class:`CorruptSample`."""
    ext = suffix.rsplit(".", 1)[-1].lower()
    try:
        if ext == "json":
            return json.loads(data)
        if ext == "txt":
            return data.decode("utf-8")
        if ext in IMAGE_SUFFIXES:
            return data if image == "bytes" else decode_image(data, max_pixels)
        if ext == "npy":
            return load_npy(data, suffix)
    except CorruptSample:
        raise
    except (ValueError, UnicodeDecodeError, OSError, EOFError, RecursionError,
            OverflowError, MemoryError) as exc:
        why = (f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError)
               else type(exc).__name__)  # never the bytes themselves
        raise CorruptSample(f"member {_show(suffix)} does not decode as {ext} ({why})") from None
    return data


def load_npy(data: bytes, suffix: str = "npy") -> np.ndarray:
    """An ``.npy`` member, its header checked against its data before any allocation."""
    what = f"member {_show(suffix)}"
    fmt = np.lib.format
    f = io.BytesIO(data)
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:
        raise CorruptSample(f"{what} has .npy format version {version}, which is not read")
    if dtype.hasobject:
        raise CorruptSample(f"{what} holds Python objects (pickle): refused")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > len(data) - f.tell():
        raise CorruptSample(f"{what}'s header claims {need} bytes of data, it holds "
                            f"{len(data) - f.tell()}")
    return np.load(io.BytesIO(data), allow_pickle=False)


def image_pixels(data: bytes) -> int | None:
    """Width x height from an encoded image's header (nothing decoded); None if unknown."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        return 2**63 - 1  # past Pillow's own limit: certainly over any sane cap
    except (OSError, ValueError, SyntaxError, EOFError, struct.error):
        return None
    return int(width) * int(height)


def decode_image(data: bytes, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded image bytes to an RGB ``uint8`` array; raises :class:`CorruptSample`.

    The header's size is read first: an image over ``max_pixels`` (width x height)
    is refused (``image_too_large``) without being decoded.
    """
    import cv2

    if max_pixels is not None:
        pixels = image_pixels(data)
        if pixels is not None and pixels > max_pixels:
            raise CorruptSample(f"an image member claims {pixels} pixels, over the cap of "
                                f"{max_pixels} (max_image_pixels)", "image_too_large")
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        arr = None
    if arr is None:
        raise CorruptSample("an image member does not decode")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def decode_sample(
    members: Iterable[tuple[str, bytes]],
    image: ImageMode = "rgb",
    keep: frozenset[str] | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> dict[str, Any]:
    """Members of one sample to ``{"__key__": KEY, suffix: value...}``.

    ``keep`` limits decoding to those suffixes (others are dropped unread).
    Raises :class:`CorruptSample` when the members name more than one key.
    """
    sample: dict[str, Any] = {}
    key: str | None = None
    for name, data in members:
        k, suffix = split_key(name)
        if key is None:
            key = k
        elif k != key:
            raise CorruptSample(f"the sample's members name two keys: {_show(key)} and {_show(k)}")
        if keep is not None and suffix not in keep:
            continue
        sample[suffix] = decode_member(suffix, data, image, max_pixels)
    if key is None:
        raise CorruptSample("the sample holds no members")
    sample["__key__"] = key
    return sample
