"""Safe decoding of one sample's bytes: tar members to Python values, never pickle.

A sample is read as the byte span of its tar members (header, data, padding for
each). :func:`split_members` parses that span (ustar, PAX and GNU long names,
checked header sums); :func:`decode_sample` turns members into values by suffix:

======================  ==================================================
``json``                ``json.loads`` (any ``*.json``)
``txt``                 UTF-8 text (``txt``, ``rel.txt``, any ``*.txt``)
``jpg``/``jpeg``/``png``  RGB ``uint8`` array ``[H, W, 3]`` (``image="rgb"``),
                        or the encoded bytes (``image="bytes"``)
``npy``                 ``numpy.load(..., allow_pickle=False)``
anything else           the raw bytes, untouched
======================  ==================================================

A member that does not decode (bad JSON, an image OpenCV cannot read, an
object-dtype ``.npy``) raises :class:`CorruptSample`; the stream skips that
sample and counts it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any, BinaryIO, Literal

import numpy as np

ImageMode = Literal["rgb", "bytes"]
BLOCK = 512
ZERO_BLOCK = b"\x00" * BLOCK
EXTENDED = (b"x", b"L")
REGULAR = (b"0", b"\x00")
IMAGE_SUFFIXES = ("jpg", "jpeg", "png")


class CorruptSample(ValueError):
    """A sample's bytes cannot be parsed or one of its members cannot be decoded."""

    def __init__(self, detail: str, reason: str = "corrupt_member") -> None:
        super().__init__(detail, reason)
        self.detail = detail
        self.reason = reason

    def __str__(self) -> str:
        return self.detail


def _octal(field: bytes) -> int:
    text = field.rstrip(b"\x00 ").strip()
    if not text:
        return 0
    if field[0] & 0x80:  # base-256 (GNU) for large sizes
        return int.from_bytes(field[1:], "big")
    return int(text, 8)


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        out[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return out


def parse_header(header: bytes, where: int) -> tuple[str, int, bytes]:
    """``(name, size, type flag)`` of a 512-byte tar header; raises :class:`CorruptSample`."""
    stored = _octal(header[148:156])
    if stored != sum(header[:148]) + 256 + sum(header[156:]):
        raise CorruptSample(f"bad tar header checksum at byte {where}")
    try:
        size = _octal(header[124:136])
    except ValueError:
        raise CorruptSample(f"bad tar size field at byte {where}") from None
    return _ustar_name(header), size, header[156:157]


def _extended(kind: bytes, data: bytes, name: str | None, size: int | None
              ) -> tuple[str | None, int | None]:
    """Apply a PAX (``x``) or GNU long-name (``L``) header to the next member's name/size."""
    if kind == b"L":
        return data.rstrip(b"\x00").decode("utf-8", "replace"), size
    try:
        pax = _pax(data)
        return pax.get("path", name), int(pax["size"]) if "size" in pax else size
    except (ValueError, UnicodeDecodeError):
        raise CorruptSample("bad PAX header") from None


def split_members(span: bytes | memoryview) -> list[tuple[str, bytes]]:
    """The ``(name, data)`` regular-file members in a tar byte span, in order."""
    view = memoryview(span)
    out: list[tuple[str, bytes]] = []
    pos, n = 0, len(view)
    long_name: str | None = None
    pax_size: int | None = None
    while pos + BLOCK <= n:
        header = bytes(view[pos:pos + BLOCK])
        if header == ZERO_BLOCK:
            break
        name, size, kind = parse_header(header, pos)
        size = size if pax_size is None else pax_size
        start, end = pos + BLOCK, pos + BLOCK + size
        if end > n:
            raise CorruptSample("the sample's bytes end inside a member", "truncated_shard")
        data = bytes(view[start:end])
        pos = end + (-size % BLOCK)
        if kind in EXTENDED:
            long_name, pax_size = _extended(kind, data, long_name, pax_size)
            continue
        name = long_name or name
        long_name, pax_size = None, None
        if kind in REGULAR:
            out.append((name, data))
    if pos < n and bytes(view[pos:]).strip(b"\x00"):
        raise CorruptSample("the sample's bytes end inside a tar header", "truncated_shard")
    return out


def scan_spans(f: BinaryIO) -> tuple[list[list[int]], bool]:
    """``([offset, size] per sample, complete)`` of a tar file, reading headers only.

    Members are grouped into samples by key. ``complete`` is False when the
    file ends early (a truncated shard): its last, possibly partial, sample is
    left out. A corrupt header also ends the scan there.
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
        size = size if pax_size is None else pax_size
        end = pos + BLOCK + size + (-size % BLOCK)
        if end > total:
            if kind in REGULAR and split_key(long_name or name)[0] != last_key:
                return spans, False  # the cut is in a new sample: the last one is whole
            break
        first = pos if first is None else first
        if kind in EXTENDED:
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


def decode_member(suffix: str, data: bytes, image: ImageMode = "rgb") -> Any:
    """One member's value by its suffix (see the module table); raises :class:`CorruptSample`."""
    ext = suffix.rsplit(".", 1)[-1].lower()
    try:
        if ext == "json":
            return json.loads(data)
        if ext == "txt":
            return data.decode("utf-8")
        if ext in IMAGE_SUFFIXES:
            return data if image == "bytes" else decode_image(data)
        if ext == "npy":
            return np.load(io.BytesIO(data), allow_pickle=False)
    except CorruptSample:
        raise
    except (ValueError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise CorruptSample(f"member {suffix!r} does not decode: {exc}") from None
    return data


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes to an RGB ``uint8`` array; raises :class:`CorruptSample`."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise CorruptSample("an image member does not decode")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def decode_sample(
    members: Iterable[tuple[str, bytes]],
    image: ImageMode = "rgb",
    keep: frozenset[str] | None = None,
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
            raise CorruptSample(f"the sample's members name two keys: {key!r} and {k!r}")
        if keep is not None and suffix not in keep:
            continue
        sample[suffix] = decode_member(suffix, data, image)
    if key is None:
        raise CorruptSample("the sample holds no members")
    sample["__key__"] = key
    return sample
