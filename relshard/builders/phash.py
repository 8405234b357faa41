"""Near-duplicate samples: perceptual hashes of their stored frames.

Each stored frame (``KEY.jpg``, ``KEY.f000.jpg``...) gets two 64-bit pHashes
(``imagehash.phash``: DCT of the 32x32 grayscale image, sign of the 8x8
low-frequency coefficients against their median), of the whole frame and of its
central 60%, so grayscale, RGBA (transparent corners), rotated
(after EXIF orientation is applied by the decoder) and re-encoded copies of one
picture hash within a few bits of each other. Nearly flat frames (a black fade,
a blank card) carry no information and are not hashed, or every blank frame
would join every other.

Two samples are near-duplicates when at least ``min_share`` of the hashed frames
of one of them have a frame of the other within ``threshold`` bits (an image has
one frame; a clip re-encoded as .mp4 and .webm has all its frames matched).
Candidate pairs come from multi-index hashing: two hashes within ``t`` bits agree
exactly on at least one of ``t + 1`` bands of their bits (pigeonhole), so only
frames sharing a band value are compared. Memory: 16 bytes per frame.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable
from types import ModuleType

import numpy as np

from relshard.errors import MissingDependencyError

BLANK_STD = 2.0  # grayscale standard deviation under which a frame counts as flat
MAX_THRESHOLD = 24
CENTER = 0.6  # side of the central crop hashed beside the whole frame


def _imagehash() -> ModuleType:
    try:
        import imagehash
    except ImportError:
        raise MissingDependencyError("imagehash", "pipeline") from None
    return imagehash


def frame_phashes(data: bytes) -> tuple[int, int] | None:
    """The 64-bit pHashes of an encoded image, whole and its central 60%; None when flat.

    The central hash matches copies that differ at the edges: an RGBA picture with
    transparent corners composited on white, a thin border or watermark.
    """
    from PIL import Image, UnidentifiedImageError

    imagehash = _imagehash()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (128, 128))  # JPEG: decode at a reduced scale, much faster
            gray = img.convert("L")
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    small = gray.resize((32, 32), Image.Resampling.BILINEAR)
    if float(np.asarray(small, dtype=np.float32).std()) < BLANK_STD:
        return None
    w, h = gray.size
    m = (1 - CENTER) / 2
    center = gray.crop((int(w * m), int(h * m), int(w * (1 - m)), int(h * (1 - m))))
    return _bits(imagehash.phash(gray).hash), _bits(imagehash.phash(center).hash)


def _bits(hash_bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in hash_bits.flatten()), 2)


def _bands(threshold: int) -> list[tuple[int, int]]:
    n = threshold + 1
    edges = [round(64 * k / n) for k in range(n + 1)]
    return [(lo, hi - lo) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


def close_frame_pairs(hashes: np.ndarray, owner: np.ndarray, threshold: int,
                      chunk: int = 1024) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of frames of different samples within ``threshold`` bits."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"the pHash threshold must be 0-{MAX_THRESHOLD} bits, got {threshold}")
    hashes = np.asarray(hashes, dtype=np.uint64)
    owner = np.asarray(owner, dtype=np.int64)
    pairs: set[tuple[int, int]] = set()
    for lo, width in _bands(threshold):
        vals = (hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        order = np.argsort(vals, kind="stable")
        sorted_vals = vals[order]
        cuts = np.flatnonzero(np.diff(sorted_vals)) + 1
        for run in np.split(order, cuts):
            if len(run) < 2:
                continue
            for a in range(0, len(run), chunk):
                rows = run[a:a + chunk]
                dist = np.bitwise_count(hashes[rows][:, None] ^ hashes[run][None, :])
                ii, jj = np.nonzero(dist <= threshold)
                for i, j in zip(rows[ii].tolist(), run[jj].tolist(), strict=True):
                    if i < j and owner[i] != owner[j]:
                        pairs.add((i, j))
    return pairs


def near_duplicate_pairs(frames: Iterable[tuple[int, int, int]],
                         frames_per_sample: dict[int, int],
                         threshold: int = 8, min_share: float = 0.5) -> list[tuple[int, int]]:
    """Sample pairs ``(a, b)``, ``a < b``, that are near-duplicates.

    ``frames`` is ``(sample, whole pHash, central pHash)`` per hashed frame (two frames
    match when either hash is within ``threshold`` bits); ``frames_per_sample`` the
    number of hashed frames of each sample.
    """
    listed = list(frames)
    if not listed:
        return []
    owner = np.array([s for s, _, _ in listed], dtype=np.int64)
    matched: dict[tuple[int, int], tuple[set[int], set[int]]] = defaultdict(
        lambda: (set(), set()))
    for channel in (1, 2):
        hashes = np.array([f[channel] for f in listed], dtype=np.uint64)
        for i, j in close_frame_pairs(hashes, owner, threshold):
            a, b = int(owner[i]), int(owner[j])
            if a > b:
                a, b, i, j = b, a, j, i
            mine, theirs = matched[(a, b)]
            mine.add(i)
            theirs.add(j)
    out = []
    for (a, b), (fa, fb) in matched.items():
        need_a = math.ceil(min_share * frames_per_sample[a])
        need_b = math.ceil(min_share * frames_per_sample[b])
        if len(fa) >= need_a or len(fb) >= need_b:
            out.append((a, b))
    return sorted(out)
