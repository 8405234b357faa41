"""Which decoder handles an input: extensions, magic bytes, and the decoder registry.

Extensions give a first guess; the file's first bytes decide. A ``.jpg`` that
is really a PNG decodes as a PNG (with a warning), a file without an extension
decodes if its content is recognisable, and random bytes behind a media
extension are ``corrupt`` (images) or are offered to the video decoders, which
reject them (videos: a few containers have weak magic, so we let FFmpeg try).

Decoders register by name with the extensions they handle::

    register_decoder("npy-frames", [".npy"], my_decoder)  # my_decoder(ref, cfg)

A plugin decoder takes ``(InputRef, DecodeSpec)`` and returns a list of
:class:`~relshard.workers.decode.base.DecodedClip`; it is offered inputs by
extension only (content sniffing is for the built-in image and video decoders).
A later registration of an extension replaces an earlier one.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from relshard.shards.item import InputRef
    from relshard.spec import DecodeSpec
    from relshard.workers.decode.base import DecodedClip
    from relshard.workers.decode.files import MediaFile

HEAD_BYTES = 512

IMAGE_EXTENSIONS: dict[str, str] = {
    "jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "jfif": "jpeg",
    "png": "png", "apng": "png", "gif": "gif", "webp": "webp",
    "bmp": "bmp", "dib": "bmp", "tif": "tiff", "tiff": "tiff", "avif": "avif",
}
VIDEO_EXTENSIONS: dict[str, str] = {
    "mp4": "mp4", "m4v": "mp4", "mov": "mov", "qt": "mov", "3gp": "3gp", "3g2": "3gp",
    "webm": "webm", "mkv": "matroska", "avi": "avi", "flv": "flv", "ogv": "ogg",
    "wmv": "asf", "asf": "asf", "ts": "mpegts", "mts": "mpegts", "m2ts": "mpegts",
    "mpg": "mpegps", "mpeg": "mpegps", "vob": "mpegps",
}
IMAGE_FORMATS = frozenset(IMAGE_EXTENSIONS.values())
VIDEO_FORMATS = frozenset(VIDEO_EXTENSIONS.values())
MP4_FAMILY = frozenset({"mp4", "mov", "3gp"})

_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_QT_TOP_BOXES = {b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def extension(uri: str) -> str:
    """Lowercase extension of a URI's path, without the dot ('' if none)."""
    path = urlsplit(uri).path if "://" in uri else uri
    ext = posixpath.splitext(path.rstrip("/"))[1]
    return ext[1:].lower()


def _sniff_ftyp(head: bytes) -> str | None:
    brand = head[8:12]
    if brand in (b"avif", b"avis"):
        return "avif"
    if brand in _HEIF_BRANDS:
        return "heif"
    if brand.startswith(b"qt"):
        return "mov"
    if brand.startswith(b"3g"):
        return "3gp"
    return "mp4"


def _sniff_riff(head: bytes) -> str | None:
    kind = head[8:12]
    return {b"WEBP": "webp", b"AVI ": "avi"}.get(kind)


def _le32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "little")


def _sniff_image(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18 and _le32(head, 14) in _BMP_HEADER_SIZES:
        return "bmp"
    return None


def _sniff_video(head: bytes) -> str | None:
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "matroska"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(bytes.fromhex("3026b2758e66cf11")):
        return "asf"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    if head[4:8] in _QT_TOP_BOXES:
        return "mov"
    return None


def sniff(head: bytes) -> str | None:
    """The format that a file's first bytes announce (see ``HEAD_BYTES``), or None."""
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if head.startswith(b"RIFF"):
        return _sniff_riff(head)
    return _sniff_image(head) or _sniff_video(head)


# -- structural truncation: does the container declare more bytes than the file has? --

def _mp4_truncated(read: Callable[[int, int], bytes], size: int) -> bool | None:
    pos = 0
    while pos + 8 <= size:
        box_size, _ = struct.unpack(">I4s", read(pos, 8))
        if box_size == 1:
            box_size = struct.unpack(">Q", read(pos + 8, 8))[0]
        elif box_size == 0:  # extends to the end of the file
            return False
        if box_size < 8:
            return None  # not a box structure we understand
        pos += box_size
    return pos > size


def _riff_truncated(read: Callable[[int, int], bytes], size: int) -> bool | None:
    declared: int = struct.unpack("<I", read(4, 4))[0] + 8
    return declared > size


def _read_vint(data: bytes, pos: int) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, length), or None."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first & ((1 << (8 - length)) - 1)
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    if value == (1 << (7 * length)) - 1:
        return -1, length  # "unknown size"
    return value, length


def _ebml_truncated(read: Callable[[int, int], bytes], size: int) -> bool | None:
    head = read(0, 64)
    header_size = _read_vint(head, 4)
    if header_size is None or header_size[0] < 0:
        return None
    seg_pos = 4 + header_size[1] + header_size[0]
    seg = read(seg_pos, 12)
    if seg[:4] != b"\x18\x53\x80\x67":
        return None
    seg_size = _read_vint(seg, 4)
    if seg_size is None or seg_size[0] < 0:
        return None
    return seg_pos + 4 + seg_size[1] + seg_size[0] > size


_STRUCTURE_CHECKS: dict[str, Callable[[Callable[[int, int], bytes], int], bool | None]] = {
    "mp4": _mp4_truncated, "mov": _mp4_truncated, "3gp": _mp4_truncated,
    "avi": _riff_truncated, "webp": _riff_truncated,
    "webm": _ebml_truncated, "matroska": _ebml_truncated,
}


def declares_more_than(fmt: str | None, read: Callable[[int, int], bytes], size: int) -> bool:
    """True when the container's own size fields point past the end of the file.

    ``read(offset, n)`` returns up to ``n`` bytes at ``offset``. Unknown formats
    and unparsable structures give False.
    """
    check = _STRUCTURE_CHECKS.get(fmt or "")
    if check is None:
        return False
    try:
        return bool(check(read, size))
    except (struct.error, ValueError, OSError):
        return False


# -- the registry --

PluginDecoder = Callable[["InputRef", "DecodeSpec"], "list[DecodedClip]"]
MediaDecoder = Callable[["MediaFile", "DecodeSpec"], "list[DecodedClip]"]


@dataclass
class DecoderEntry:
    """A registered decoder.

    ``fn(ref, cfg)`` is the public entry point. Built-in decoders also have
    ``media_fn(media, cfg)``, which decodes an already opened and sniffed file, and
    ``formats``, the sniffed formats they take.
    """

    name: str
    extensions: tuple[str, ...]
    fn: PluginDecoder
    modality: str | None = None
    formats: frozenset[str] = field(default_factory=frozenset)
    media_fn: MediaDecoder | None = None


_BY_NAME: dict[str, DecoderEntry] = {}
_BY_EXTENSION: dict[str, DecoderEntry] = {}


def _norm_ext(ext: str) -> str:
    return ext.lower().lstrip(".")


def register_decoder(name: str, extensions: Iterable[str], fn: PluginDecoder, *,
                     modality: str | None = None, **builtin: Any) -> DecoderEntry:
    """Register ``fn(ref, cfg) -> list[DecodedClip]`` for ``extensions`` ('.ext' or 'ext').

    ``modality`` ('image', 'video', 'events') lets a source that declares its
    modality refuse inputs of another kind; None accepts any. Returns the entry.
    """
    exts = tuple(_norm_ext(e) for e in extensions)
    entry = DecoderEntry(name=name, extensions=exts, fn=fn, modality=modality, **builtin)
    _BY_NAME[name] = entry
    for ext in exts:
        _BY_EXTENSION[ext] = entry
    return entry


def decoder_for_extension(ext: str) -> DecoderEntry | None:
    return _BY_EXTENSION.get(_norm_ext(ext))


def decoder_for_format(fmt: str) -> DecoderEntry | None:
    """The built-in decoder that takes a sniffed format, or None."""
    for entry in _BY_NAME.values():
        if fmt in entry.formats:
            return entry
    return None


def registered_decoders() -> dict[str, DecoderEntry]:
    """A copy of the registry, by name."""
    return dict(_BY_NAME)
