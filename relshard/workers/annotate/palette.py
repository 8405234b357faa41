"""A fixed, named colour palette and the dominant named colour of an image region.

Each name has a few sRGB prototypes (a dark navy and a light sky blue are both
"blue"); every pixel is assigned to its nearest prototype in CIE Lab (Euclidean,
i.e. delta-E 1976) and the shares are summed per name. Quantizing to a fixed
palette rather than clustering freely keeps names stable across images and works
on regions of any size, down to a single pixel. Before assignment a region is
shrunk to at most :data:`MAX_SIDE` pixels a side (area averaging, which also
smooths JPEG noise), so the cost is bounded.

Inputs are RGB (not OpenCV's BGR): convert ``cv2.imdecode`` output first.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

MAX_SIDE = 48

# name -> sRGB prototypes; order is the tie-break order.
PALETTE: dict[str, tuple[tuple[int, int, int], ...]] = {
    "black": ((0, 0, 0), (28, 28, 30)),
    "white": ((255, 255, 255), (232, 232, 228)),
    "gray": ((128, 128, 128), (88, 88, 90), (176, 176, 176)),
    "red": ((220, 20, 30), (255, 0, 0), (140, 16, 24)),
    "orange": ((255, 140, 0), (232, 100, 40), (200, 90, 50)),
    "yellow": ((255, 220, 0), (240, 230, 100)),
    "green": ((0, 160, 0), (0, 255, 0), (40, 96, 40), (130, 200, 90)),
    "cyan": ((0, 200, 200), (0, 255, 255), (0, 128, 128)),
    "blue": ((0, 0, 255), (30, 80, 200), (20, 30, 100), (100, 150, 230)),
    "purple": ((128, 0, 128), (140, 80, 190), (80, 30, 100)),
    "pink": ((255, 150, 190), (230, 80, 150), (255, 0, 255)),
    "brown": ((120, 70, 30), (80, 50, 25), (160, 110, 60)),
    "beige": ((225, 200, 160), (205, 180, 140)),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` to float32 Lab (L in 0-100)."""
    flat = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3)
    lab = cv2.cvtColor(flat.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return lab.reshape(-1, 3)


@lru_cache(maxsize=1)
def _prototypes() -> tuple[np.ndarray, np.ndarray]:
    """Lab prototypes ``(P, 3)`` and the name index of each ``(P,)``."""
    colours: list[tuple[int, int, int]] = []
    owners: list[int] = []
    for i, protos in enumerate(PALETTE.values()):
        colours.extend(protos)
        owners.extend([i] * len(protos))
    return _to_lab(np.array(colours, dtype=np.uint8)), np.array(owners, dtype=np.int64)


def name_pixels(rgb: np.ndarray) -> np.ndarray:
    """Palette index (into :data:`COLOUR_NAMES`) of every pixel of ``rgb`` (flattened)."""
    protos, owners = _prototypes()
    lab = _to_lab(rgb)
    dist = ((lab[:, None, :] - protos[None, :, :]) ** 2).sum(axis=2)
    named: np.ndarray = owners[np.argmin(dist, axis=1)]
    return named


def colour_shares(region_rgb: np.ndarray) -> dict[str, float]:
    """Share of the region's pixels per palette name (names with no pixel left out)."""
    region = np.asarray(region_rgb)
    if region.ndim != 3 or region.shape[2] != 3 or region.dtype != np.uint8:
        raise ValueError(f"region must be uint8 H x W x 3 RGB, got {region.dtype} {region.shape}")
    h, w = region.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("region is empty")
    scale = MAX_SIDE / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    counts = np.bincount(name_pixels(region), minlength=len(COLOUR_NAMES))
    total = float(counts.sum())
    return {COLOUR_NAMES[i]: float(c) / total for i, c in enumerate(counts) if c}


def dominant_colour(region_rgb: np.ndarray) -> tuple[str, float]:
    """The palette name covering most of the region, and its share in (0, 1].

    Raises ``ValueError`` for an empty region or one that is not uint8 RGB.
    """
    shares = colour_shares(region_rgb)
    name = max(COLOUR_NAMES, key=lambda n: shares.get(n, 0.0))
    return name, shares[name]
