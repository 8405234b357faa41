"""Decoders: one input (an image, an animation, a video) in, RGB frames and metadata out.

:func:`decode_input` is the entry point. It opens the input once (rejecting
missing, empty and oversized files), picks a decoder from the file's magic bytes
and extension (see :mod:`.formats`), and returns one :class:`DecodedClip` per
sample: one for an image, one per clip for a video or an animation. Per-input
problems raise :class:`DecodeError` with a ``reason`` from :data:`REASONS`.

Plugins add formats with :func:`register_decoder`. The image and video decoders
are documented in :mod:`.image` and :mod:`.video`.

``decode_input`` runs in the calling process; crash isolation, time limits and
memory caps (``decode.isolate``, ``timeout_s``, ``max_memory_mb``) belong to the
stage that calls it (``relshard.workers.media``).
"""

from __future__ import annotations

from relshard.shards.item import InputRef
from relshard.spec import DecodeSpec
from relshard.workers.decode.base import REASONS, DecodedClip, DecodeError
from relshard.workers.decode.files import MediaFile, check_access, open_media
from relshard.workers.decode.formats import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    VIDEO_EXTENSIONS,
    VIDEO_FORMATS,
    DecoderEntry,
    decoder_for_extension,
    decoder_for_format,
    extension,
    register_decoder,
    registered_decoders,
)
from relshard.workers.decode.image import decode_image_media
from relshard.workers.decode.video import decode_video_media

__all__ = [
    "REASONS",
    "DecodeError",
    "DecodedClip",
    "decode_input",
    "register_decoder",
    "registered_decoders",
]

_SAME_FAMILY = ({"mp4", "mov", "3gp"}, {"webm", "matroska"})


def _mismatch(ext: str, fmt: str) -> str | None:
    expected = IMAGE_EXTENSIONS.get(ext) or VIDEO_EXTENSIONS.get(ext)
    if expected is None or expected == fmt:
        return None
    if any(expected in fam and fmt in fam for fam in _SAME_FAMILY):
        return None
    return f"the extension .{ext} says {expected} but the content is {fmt}"


def _resolve(media: MediaFile, by_ext: DecoderEntry | None, warns: list[str]) -> DecoderEntry:
    """The built-in decoder for an opened input, from its content first, then its extension."""
    fmt = media.format
    if fmt is not None:
        entry = decoder_for_format(fmt)
        if entry is None:
            raise DecodeError("unsupported_format", f"the content is {fmt}, which no decoder takes")
        note = _mismatch(media.ext, fmt)
        if note:
            warns.append(note)
        return entry
    if by_ext is None or by_ext.media_fn is None:
        what = f"extension .{media.ext}" if media.ext else "no extension"
        raise DecodeError("unsupported_format", f"{what}, and the content is not a known format")
    if by_ext.name == "image":
        raise DecodeError("corrupt", f"the content is not a {IMAGE_EXTENSIONS[media.ext]} file "
                                     f"(first bytes {media.head[:8].hex()})")
    return by_ext  # videos: a few containers have weak magic; FFmpeg decides


def _check_modality(entry: DecoderEntry, ref: InputRef) -> None:
    declared = ref.modality
    if declared in ("auto", "", None) or entry.modality in (None, declared):
        return
    raise DecodeError("unsupported_format",
                      f"the source declares modality {declared!r} but this input is "
                      f"{entry.modality!r} ({entry.name} decoder)")


def decode_input(ref: InputRef, cfg: DecodeSpec) -> list[DecodedClip]:
    """Decode one input into clips (one for an image, one per clip for a video)."""
    by_ext = decoder_for_extension(extension(ref.uri))
    if by_ext is not None and by_ext.media_fn is None:  # a plugin: by extension only
        _check_modality(by_ext, ref)
        check_access(ref, cfg)
        return by_ext.fn(ref, cfg)
    with open_media(ref, cfg) as media:
        warns: list[str] = []
        entry = _resolve(media, by_ext, warns)
        _check_modality(entry, ref)
        assert entry.media_fn is not None
        clips = entry.media_fn(media, cfg)
    for clip in clips:
        clip.warnings[:0] = warns
    return clips


register_decoder("image", IMAGE_EXTENSIONS, decode_input, modality="image",
                 formats=IMAGE_FORMATS, media_fn=decode_image_media)
register_decoder("video", VIDEO_EXTENSIONS, decode_input, modality="video",
                 formats=VIDEO_FORMATS, media_fn=decode_video_media)
