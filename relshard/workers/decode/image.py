"""Image decoding with Pillow (OpenCV for plain JPEGs and for what Pillow cannot read).

One input gives one :class:`DecodedClip` with one RGB frame, except animations.

- The file is read once; its sha256 is taken over the same bytes that are decoded.
- The declared size is checked against ``decode.max_image_pixels`` before any
  pixel is decoded (Pillow opens lazily); Pillow's own DecompressionBombError and
  DecompressionBombWarning are reported as ``decompression_bomb`` too.
- Big JPEGs decode in draft mode (DCT scaling by 1/2, 1/4, 1/8) to at least the
  output size, then ``cv2.resize`` with ``INTER_AREA`` brings them to
  ``decode.max_side``. Frames are never upscaled.
- Fast path: a JPEG (baseline or progressive) that Pillow's header reads as RGB or L,
  whose segments and scans are well formed up to an EOI at its very end (NUL padding
  allowed), is decoded by ``cv2.imdecode`` with the draft's DCT scaling (the same
  libjpeg-turbo math: the same pixels) and recorded with ``decoder`` ``"opencv"``.
  Anything else (CMYK, MPO, trailing data, a truncated or damaged marker layout, a
  decode OpenCV refuses or sizes otherwise) takes the Pillow path and its verdicts.
- Colour: grayscale and CMYK become RGB; transparency (RGBA, LA, PA, P with a
  transparent colour) is composited on white; 16-bit and 32-bit data are scaled to
  8 bits over their full range (16-bit: value / 257), never clipped.
- EXIF orientation is applied (the same result as ``ImageOps.exif_transpose``, done
  on the reduced frame, which is cheaper) and recorded in ``exif_orientation``;
  ``width``/``height`` are the original size after rotation.
- If Pillow cannot identify a PNG or TIFF (e.g. a float32 RGB TIFF), OpenCV's
  ``IMREAD_UNCHANGED`` decodes it, after the size in its header passed the bomb check.
- Truncated files fail with ``truncated`` (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays
  False); other undecodable content with ``corrupt``.

Animated GIF, WebP and APNG files are handled deliberately as short clips: the
clip has modality ``video``, ``frames_per_clip`` frames sampled uniformly over
the animation (segment centres), ``frame_times`` from the per-frame durations
(a missing or zero duration counts as 100 ms, as browsers do), ``fps`` = frames /
total duration, ``clip_index`` 0 and ``time_span`` [0, total]. An animation whose
frames stop decoding part way is resampled within the readable frames and marked
``truncated``. EXIF orientation is not applied to animations. A multi-page TIFF is
not an animation: its first page is the image.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from relshard.record import Modality, SourceInfo
from relshard.spec import DecodeSpec
from relshard.workers.decode.base import (
    DecodedClip,
    DecodeError,
    composite_on_white,
    fit_size,
    own,
    resize_to,
    sample_indices,
    to_uint8,
)
from relshard.workers.decode.files import MediaFile

DECODER = "pillow"
FAST_JPEG_DECODER = "opencv"
ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
DEFAULT_FRAME_MS = 100
_ORIENTATION_TAG = 0x0112
_TRANSPARENT_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
_JPEG_BARE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RSTn: no length
# What may follow a scan: DHT, DQT, DRI, SOS, COM, APPn (no second frame, no DNL).
_JPEG_AFTER_SCAN = frozenset({0xC4, 0xDB, 0xDD, 0xDA, 0xFE, *range(0xE0, 0xF0)})
# In entropy-coded data 0xFF is followed by 0x00 (stuffing), RSTn or a fill 0xFF; else a marker.
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Pillow mode -> the cv2.imdecode flags for each DCT scale, and the conversion to RGB.
_FAST_JPEG_FLAGS: dict[str, dict[int, int]] = {
    "RGB": {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8},
    "L": {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
          4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
}
_FAST_JPEG_TO_RGB = {"RGB": cv2.COLOR_BGR2RGB, "L": cv2.COLOR_GRAY2RGB}

# Pillow decodes what it must not: keep the strict default, whatever imported us.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def apply_orientation(frame: np.ndarray, orientation: int | None) -> np.ndarray:
    """The frame as a viewer shows it, for EXIF orientation 1-8 (C-contiguous, writeable)."""
    fn = _ORIENT.get(orientation or 1)
    return own(fn(frame) if fn else frame)


# -- failure classification --

def _looks_truncated(data: bytes, fmt: str | None) -> bool:
    """Whether the bytes end before the format's end marker / declared size."""
    if fmt == "jpeg":
        return b"\xff\xd9" not in data[-64:]
    if fmt == "png":
        return b"IEND" not in data[-64:]
    if fmt == "gif":
        return not data.rstrip(b"\x00").endswith(b";")
    if fmt == "webp":
        riff_size: int = struct.unpack("<I", data[4:8])[0]
        return riff_size + 8 > len(data)
    if fmt == "bmp":
        bmp_size: int = struct.unpack("<I", data[2:6])[0]
        return bmp_size > len(data)
    return False


def _failure(data: bytes, fmt: str | None, exc: BaseException) -> DecodeError:
    msg = f"{type(exc).__name__}: {exc}"
    if "truncat" in str(exc).lower() or _looks_truncated(data, fmt):
        return DecodeError("truncated", msg)
    return DecodeError("corrupt", msg)


def _bomb(width: int, height: int, cfg: DecodeSpec) -> DecodeError | None:
    if width * height > cfg.max_image_pixels:
        return DecodeError(
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels > decode.max_image_pixels="
            f"{cfg.max_image_pixels}",
        )
    return None


def _raise_pil_limit(cap: int) -> None:
    """Let Pillow open what our own (earlier, exact) check allows."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < cap:
        Image.MAX_IMAGE_PIXELS = cap


# -- colour conversion --

def to_rgb_array(im: Image.Image) -> np.ndarray:
    """An RGB uint8 array of a loaded Pillow image, whatever its mode."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode == "L":
        return cv2.cvtColor(np.asarray(im), cv2.COLOR_GRAY2RGB)
    if mode in _HIGH_DEPTH_MODES:
        return cv2.cvtColor(to_uint8(np.asarray(im)), cv2.COLOR_GRAY2RGB)
    if (mode == "P" and "transparency" in im.info) or mode in _TRANSPARENT_MODES:
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        return composite_on_white(np.asarray(rgba))
    if mode == "1":
        return cv2.cvtColor(np.asarray(im.convert("L")), cv2.COLOR_GRAY2RGB)
    return np.asarray(im.convert("RGB"))  # P, CMYK, YCbCr, LAB, HSV


def _cv_to_rgb(arr: np.ndarray) -> np.ndarray:
    """OpenCV's IMREAD_UNCHANGED result (BGR order, any depth) as RGB uint8."""
    arr = to_uint8(arr)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    channels = arr.shape[2]
    if channels == 1:
        return cv2.cvtColor(arr[..., 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # gray + alpha
        gray = cv2.cvtColor(np.ascontiguousarray(arr[..., 0]), cv2.COLOR_GRAY2RGB)
        return composite_on_white(np.dstack([gray, arr[..., 1]]))
    if channels == 4:
        return composite_on_white(cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA))
    return cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB)


# -- header sizes for the OpenCV path --

def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first IFD of a classic TIFF."""
    if data[:4] not in (b"II*\x00", b"MM\x00*") or len(data) < 8:
        return None
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(end + "H", data[ifd:ifd + 2])
    found: dict[int, int] = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, typ = struct.unpack(end + "HH", entry[:4])
        if tag in (256, 257):
            fmt = end + ("H" if typ == 3 else "I")
            found[tag] = struct.unpack(fmt, entry[8:10] if typ == 3 else entry[8:12])[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


# -- the decoder --

def _source(media: MediaFile, sha: str, fmt: str, size: tuple[int, int],
            orientation: int | None, *, decoder: str = DECODER, modality: Modality = "image",
            **more: Any) -> SourceInfo:
    width, height = (size[1], size[0]) if (orientation or 1) >= 5 else size
    return SourceInfo(
        uri=media.uri, input_key=media.ref.input_key, modality=modality, sha256=sha,
        size=media.size, format=fmt, decoder=decoder, width=width, height=height,
        exif_orientation=orientation, **more,
    )


def _orientation(im: Image.Image, warns: list[str]) -> int | None:
    try:
        value = im.getexif().get(_ORIENTATION_TAG)
    except Exception as exc:  # EXIF is optional metadata: a broken block is a warning
        warns.append(f"unreadable EXIF ignored ({type(exc).__name__})")
        return None
    if value is None:
        return None
    if not isinstance(value, int) or not 1 <= value <= 8:
        warns.append(f"invalid EXIF orientation {value!r} ignored")
        return None
    return value


def _still_frame(im: Image.Image, cfg: DecodeSpec) -> np.ndarray:
    target = fit_size(im.size[0], im.size[1], cfg.max_side)
    if im.format in ("JPEG", "MPO") and target != im.size:
        im.draft(im.mode, target)
    im.load()
    return resize_to(to_rgb_array(im), target)


def _dct_scale(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The DCT scaling Pillow's JPEG draft picks: the largest of 8, 4, 2 (else 1) that
    keeps both sides at least ``target``."""
    ratio = min(size[0] // target[0], size[1] // target[1])
    return next((s for s in (8, 4, 2) if ratio >= s), 1)


def _plain_jpeg_layout(data: bytes) -> bool:
    """Whether the JPEG's segments and scans are well formed up to an EOI at its very end
    (NUL padding allowed).

    A file this refuses (truncated, trailing data, stray markers from damage) keeps the
    Pillow path, which rejects what libjpeg errors on where OpenCV returns a damaged frame.
    """
    end = len(data.rstrip(b"\x00"))
    pos, scanned = 2, False  # after SOI
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == _JPEG_EOI or marker in _JPEG_BARE or length < 2 or \
                (scanned and marker not in _JPEG_AFTER_SCAN):
            return False
        pos += 2 + length
        if marker == _JPEG_SOS:
            scanned = True
            found = _JPEG_SCAN_END.search(data, pos, end)
            pos = found.start() if found else end
    return scanned and pos + 2 == end and data[pos:end] == b"\xff\xd9"


def _fast_jpeg_frame(im: Image.Image, data: bytes, cfg: DecodeSpec) -> np.ndarray | None:
    """The frame of a plain RGB or L JPEG decoded by OpenCV, or None for the Pillow path.

    Same DCT scaling as the draft in :func:`_still_frame`, same resize; EXIF orientation
    is left to the caller (``IMREAD_IGNORE_ORIENTATION``).
    """
    flags = _FAST_JPEG_FLAGS.get(im.mode)
    if im.format != "JPEG" or flags is None or not _plain_jpeg_layout(data):
        return None
    width, height = im.size
    target = fit_size(width, height, cfg.max_side)
    scale = _dct_scale(im.size, target)
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8),
                           flags[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    if arr is None or arr.shape[:2] != (-(-height // scale), -(-width // scale)):
        return None
    return cv2.cvtColor(resize_to(arr, target), _FAST_JPEG_TO_RGB[im.mode])


def _pillow_frame(media: MediaFile, data: bytes, im: Image.Image, cfg: DecodeSpec) -> np.ndarray:
    try:
        return _still_frame(im, cfg)
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise _failure(data, media.format, exc) from None


def _decode_still(media: MediaFile, data: bytes, sha: str, im: Image.Image,
                  cfg: DecodeSpec, warns: list[str]) -> DecodedClip:
    size = im.size
    fmt = (im.format or media.format or "").lower()
    frame, decoder = _fast_jpeg_frame(im, data, cfg), FAST_JPEG_DECODER
    if frame is None:
        frame, decoder = _pillow_frame(media, data, im, cfg), DECODER
    orientation = _orientation(im, warns)  # after load: a PNG's eXIf may follow its pixels
    frame = apply_orientation(frame, orientation)
    src = _source(media, sha, fmt, size, orientation, decoder=decoder,
                  frame_width=frame.shape[1], frame_height=frame.shape[0])
    return DecodedClip(source=src, frames=[frame], warnings=warns)


def _frame_ms(im: Image.Image) -> int:
    ms = im.info.get("duration")
    return int(ms) if isinstance(ms, int | float) and ms > 0 else DEFAULT_FRAME_MS


def _scan_animation(im: Image.Image, wanted: set[int],
                    target: tuple[int, int]) -> tuple[list[int], dict[int, np.ndarray]]:
    """Decode every frame (durations and compositing need them); keep the wanted ones.

    Returns the durations of the frames that decoded (they stop at the first that
    does not) and the wanted frames as RGB at ``target`` size.
    """
    durations: list[int] = []
    frames: dict[int, np.ndarray] = {}
    for i in range(im.n_frames):  # type: ignore[attr-defined]  # set by the animated formats
        try:
            im.seek(i)
            im.load()  # WebP sets the frame's duration only when it is loaded
            if i in wanted:
                frames[i] = resize_to(to_rgb_array(im), target)
        except (EOFError, OSError, ValueError, SyntaxError):
            break
        durations.append(_frame_ms(im))
    return durations, frames


def _decode_animation(media: MediaFile, data: bytes, sha: str, im: Image.Image,
                      cfg: DecodeSpec, warns: list[str]) -> DecodedClip:
    declared: int = im.n_frames  # type: ignore[attr-defined]  # set by the animated formats
    target = fit_size(im.size[0], im.size[1], cfg.max_side)
    wanted = sample_indices(0, declared, cfg.frames_per_clip)
    durations, frames = _scan_animation(im, set(wanted), target)
    readable = len(durations)
    if readable == 0:
        raise _failure(data, media.format, OSError("no animation frame decodes"))
    truncated = readable < declared
    if truncated:
        warns.append(f"only {readable} of {declared} animation frames decode; "
                     "sampled within those")
        wanted = sample_indices(0, readable, cfg.frames_per_clip)
        im.seek(0)
        _, frames = _scan_animation(im, set(wanted), target)
    starts = np.concatenate([[0], np.cumsum(durations)]) / 1000.0
    total = float(starts[-1])
    wanted = [i for i in wanted if i in frames]
    if not wanted:
        raise _failure(data, media.format, OSError("no sampled animation frame decodes"))
    out = [own(frames[i]) for i in wanted]
    src = _source(
        media, sha, (im.format or "").lower(), im.size, None, modality="video",
        frame_width=out[0].shape[1], frame_height=out[0].shape[0],
        fps=readable / total, duration=total, frame_count=declared,
        frame_count_readable=readable, frame_indices=wanted,
        frame_times=[round(float(starts[i]), 6) for i in wanted], clip_index=0,
        time_span=[0.0, total], truncated=truncated,
    )
    return DecodedClip(source=src, frames=out, warnings=warns)


def _decode_with_opencv(media: MediaFile, data: bytes, sha: str, cfg: DecodeSpec,
                        pil_error: BaseException, warns: list[str]) -> DecodedClip:
    size = _png_size(data) if media.format == "png" else _tiff_size(data)
    if size is None:
        raise _failure(data, media.format, pil_error)
    bomb = _bomb(size[0], size[1], cfg)
    if bomb:
        raise bomb
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise _failure(data, media.format, pil_error)
    frame = own(resize_to(_cv_to_rgb(arr), fit_size(arr.shape[1], arr.shape[0], cfg.max_side)))
    warns.append(f"Pillow could not read this {media.format} ({pil_error}); decoded with OpenCV")
    src = _source(media, sha, media.format or "", (arr.shape[1], arr.shape[0]), None,
                  decoder="opencv", frame_width=frame.shape[1], frame_height=frame.shape[0])
    return DecodedClip(source=src, frames=[frame], warnings=warns)


def _open_pil(data: bytes, cfg: DecodeSpec) -> Image.Image:
    _raise_pil_limit(cfg.max_image_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def decode_image_bytes(media: MediaFile, data: bytes, cfg: DecodeSpec) -> DecodedClip:
    """Decode the bytes of an opened image input into one clip."""
    sha = hashlib.sha256(data).hexdigest()
    warns: list[str] = []
    try:
        im = _open_pil(data, cfg)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        if media.format in ("png", "tiff") and not _looks_truncated(data, media.format):
            return _decode_with_opencv(media, data, sha, cfg, exc, warns)
        raise _failure(data, media.format, exc) from None
    except Exception as exc:
        raise _failure(data, media.format, exc) from None
    bomb = _bomb(im.size[0], im.size[1], cfg)
    if bomb:
        raise bomb
    if im.format in ANIMATED_FORMATS and getattr(im, "n_frames", 1) > 1:
        return _decode_animation(media, data, sha, im, cfg, warns)
    return _decode_still(media, data, sha, im, cfg, warns)


def decode_image_media(media: MediaFile, cfg: DecodeSpec) -> list[DecodedClip]:
    """The built-in image decoder, on an opened input."""
    return [decode_image_bytes(media, media.read_all(), cfg)]
