"""Test scenes built from the example photos and drawn shapes (RGB uint8 arrays)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parents[4] / "examples" / "assets"

# Face boxes (x0, y0, x1, y1 in pixels) that Haar alt2 finds on the originals.
GRACE_FACE = (149, 102, 378, 331)
ASTRONAUT_FACE = (177, 67, 272, 162)


@cache
def _read(name: str) -> np.ndarray:
    bgr = cv2.imread(str(ASSETS / f"{name}.jpg"), cv2.IMREAD_COLOR)
    assert bgr is not None, f"missing example photo {name}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def photo(name: str) -> np.ndarray:
    """A fresh RGB copy of ``examples/assets/NAME.jpg``."""
    return _read(name).copy()


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images pasted left to right, each resized to the tallest one's height."""
    height = max(im.shape[0] for im in images)
    parts = [
        im if im.shape[0] == height
        else cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height))
        for im in images
    ]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def shifted(image: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels, the uncovered border filled by edge pixels."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def zoomed(image: np.ndarray, factor: float, centre: tuple[float, float]) -> np.ndarray:
    """``image`` magnified by ``factor`` about ``centre`` (pixels), same size."""
    cx, cy = centre
    matrix = np.float32([[factor, 0, cx - factor * cx], [0, factor, cy - factor * cy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def standing_figure(shirt: tuple[int, int, int] = (220, 0, 0),
                    pants: tuple[int, int, int] = (20, 60, 200), height: int = 160,
                    size: tuple[int, int] = (640, 480), cx: int = 320) -> np.ndarray:
    """A drawn standing person (head, torso, arms, legs) on gray: HOG finds it."""
    w, h = size
    im = np.full((h, w, 3), 200, np.uint8)
    s = height / 220
    top = 30
    head = int(14 * s)
    cv2.circle(im, (cx, top + head), head, (40, 40, 40), -1)
    t0 = top + 2 * head + int(3 * s)
    torso = np.array([[cx - int(22 * s), t0], [cx + int(22 * s), t0],
                      [cx + int(18 * s), t0 + int(80 * s)], [cx - int(18 * s), t0 + int(80 * s)]])
    cv2.fillPoly(im, [torso], shirt)
    for side in (-1, 1):
        cv2.line(im, (cx + side * int(22 * s), t0 + int(4 * s)),
                 (cx + side * int(30 * s), t0 + int(85 * s)), shirt, max(1, int(10 * s)))
        cv2.line(im, (cx + side * int(10 * s), t0 + int(78 * s)),
                 (cx + side * int(14 * s), top + height), pants, max(1, int(14 * s)))
    return cv2.GaussianBlur(im, (0, 0), 1.0)


def jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """JPEG bytes of a normal-colour picture, as the decode stage stores frames."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()
