"""Safe decoding of one sample's members to Python values, never pickle.

:func:`decode_sample` turns the members of a sample (read by
:mod:`relshard.shards.tarread`) into values by suffix:

======================  ==================================================
``json``                ``json.loads`` (any ``*.json``)
``txt``                 UTF-8 text (``txt``, ``rel.txt``, any ``*.txt``)
``jpg``/``jpeg``/``png``  RGB ``uint8`` array ``[H, W, 3]`` (``image="rgb"``),
                        or the encoded bytes (``image="bytes"``)
``npy``                 ``numpy.load(..., allow_pickle=False)``
anything else           the raw bytes, untouched
======================  ==================================================

Images decode with OpenCV when it is installed (``relshard[pipeline]``), else with
Pillow (the core install): the same RGB array either way (EXIF orientation applied,
alpha dropped, grayscale repeated, 16-bit samples cut to their high byte). One
difference: OpenCV fills the missing end of a truncated JPEG with gray, Pillow
refuses it (a ``corrupt`` skip).

An image whose header claims more than ``max_pixels`` pixels is never decoded
(``image_too_large``), an ``.npy`` header must match its data before anything is
allocated. A member that does not decode (bad JSON, an image that does not read,
an object-dtype ``.npy``) raises :class:`~relshard.shards.tarread.CorruptSample`;
the stream skips that sample and counts it by its ``reason``. No error message
quotes a member's bytes.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import warnings
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from relshard.shards.tarread import CorruptSample, show_name, split_key

ImageMode = Literal["rgb", "bytes"]
IMAGE_SUFFIXES = ("jpg", "jpeg", "png")
MAX_IMAGE_PIXELS = 89_478_485  # default cap on an image's width x height (Pillow's)


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
        raise CorruptSample(f"member {show_name(suffix)} does not decode as {ext} "
                            f"({why})") from None
    return data


def load_npy(data: bytes, suffix: str = "npy") -> np.ndarray:
    """An ``.npy`` member, its header checked against its data before any allocation."""
    what = f"member {show_name(suffix)}"
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
    arr: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return arr


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
    if max_pixels is not None:
        pixels = image_pixels(data)
        if pixels is not None and pixels > max_pixels:
            raise CorruptSample(f"an image member claims {pixels} pixels, over the cap of "
                                f"{max_pixels} (max_image_pixels)", "image_too_large")
    cv2 = _opencv()
    arr = _decode_pillow(data) if cv2 is None else _decode_opencv(cv2, data)
    if arr is None:
        raise CorruptSample("an image member does not decode")
    return arr


@functools.cache
def _opencv() -> Any:
    """OpenCV when installed (faster on large images), else None: Pillow decodes."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _decode_opencv(cv2: Any, data: bytes) -> np.ndarray | None:
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return None if arr is None else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _decode_pillow(data: bytes) -> np.ndarray | None:
    """What ``cv2.imdecode(data, IMREAD_COLOR)`` gives, as RGB, with Pillow."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                upright = ImageOps.exif_transpose(im)  # OpenCV applies EXIF orientation too
                if upright.mode in _SIXTEEN_BIT:  # 16-bit gray: the high byte, as OpenCV
                    gray = (np.asarray(upright, dtype=np.uint32) >> 8).astype(np.uint8)
                    return np.repeat(gray[:, :, None], 3, axis=2)
                return np.array(upright.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise CorruptSample("an image member is over Pillow's decompression-bomb limit",
                            "image_too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
            TypeError, ZeroDivisionError):
        return None


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
            raise CorruptSample(f"the sample's members name two keys: {show_name(key)} and "
                                f"{show_name(k)}")
        if keep is not None and suffix not in keep:
            continue
        sample[suffix] = decode_member(suffix, data, image, max_pixels)
    if key is None:
        raise CorruptSample("the sample holds no members")
    sample["__key__"] = key
    return sample
