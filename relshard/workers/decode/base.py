"""What every decoder returns, the reasons it may give up with, and shared frame helpers.

A decoder turns one input into :class:`DecodedClip` objects: one for an image,
one per clip for a video. Frames are RGB ``uint8`` arrays of shape ``HxWx3``,
C-contiguous, whose longest side is at most ``DecodeSpec.max_side`` (frames are
never upscaled).

A per-input problem is a :class:`DecodeError` carrying one of :data:`REASONS`
(it becomes a row of the rejects ledger); anything else that escapes a decoder is
a bug or an infrastructure failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from relshard.record import SourceInfo

REASONS = (
    "empty_file",  # zero bytes
    "file_too_large",  # more bytes than decode.max_file_bytes
    "unreadable",  # missing, a directory, no permission
    "unsupported_format",  # no decoder for this extension / content / modality
    "corrupt",  # content that no decoder can make sense of
    "truncated",  # the file ends before its content does
    "decompression_bomb",  # declares more pixels than decode.max_image_pixels
)


class DecodeError(Exception):
    """One input cannot be decoded; ``reason`` is one of :data:`REASONS`.

    Pickles (both arguments go to ``Exception.__init__``), so it crosses process
    boundaries intact.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass
class DecodedClip:
    """One decoded sample: an image, an animation, or one clip of a video.

    ``frames`` are RGB uint8 ``HxWx3``, C-contiguous and writeable; ``members`` are
    extra shard members by suffix (``{"mp4": ...}`` with ``keep_clip``).
    """

    source: SourceInfo
    frames: list[np.ndarray]
    members: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the longest side is at most ``max_side``; never larger."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``frame`` to ``size`` (width, height) with area averaging; a no-op if equal."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def own(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous, writeable uint8 array (copied only when it is not)."""
    return np.require(frame, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])


def fit_frame(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale ``frame`` to fit ``max_side``; C-contiguous and writeable."""
    return own(resize_to(frame, fit_size(frame.shape[1], frame.shape[0], max_side)))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend an ``HxWx4`` uint8 RGBA array onto a white background, giving ``HxWx3`` RGB."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth array to uint8 over its type's range, rounding (not clipping).

    16-bit data maps 0..65535 onto 0..255; 32-bit integers holding 16-bit values
    (Pillow's mode ``I``) are treated as 16-bit; floats in [0, 1] are multiplied by
    255; anything else is stretched from its minimum to its maximum.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        wide = arr.astype(np.uint32)
        return ((wide + 128) // 257).astype(np.uint8)
    if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        return to_uint8(arr.astype(np.uint16))
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    span = hi - lo or 1.0
    scaled = np.nan_to_num((data - lo) * (255.0 / span), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def sample_indices(start: int, end: int, count: int) -> list[int]:
    """``count`` frame indices spread uniformly over ``[start, end)``: segment centres.

    Fewer when the range holds fewer frames (no index is repeated).
    """
    length = end - start
    if length <= 0:
        return []
    if length <= count:
        return list(range(start, end))
    return [start + int((i + 0.5) * length / count) for i in range(count)]
