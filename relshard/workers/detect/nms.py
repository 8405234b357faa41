"""Box geometry for detection: IoU, containment and non-maximum suppression.

Boxes are ``[x0, y0, x1, y1]`` with ``x1 >= x0`` and ``y1 >= y0``, in any one unit
(pixels or normalized); every function here is unit-agnostic. Degenerate boxes
(zero width or height) have zero area and overlap nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BoxLike = Sequence[float] | np.ndarray


def _as_boxes(boxes: Sequence[BoxLike] | np.ndarray) -> np.ndarray:
    """``boxes`` as a float64 ``(N, 4)`` array (``(0, 4)`` when empty)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def box_area(box: BoxLike) -> float:
    """Area of one box (0 for a degenerate box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def intersection(a: BoxLike, b: BoxLike) -> float:
    """Area of the overlap of two boxes."""
    w = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    h = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    return max(0.0, w) * max(0.0, h)


def iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of two boxes; 0 when either is degenerate."""
    inter = intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def containment(inner: BoxLike, outer: BoxLike) -> float:
    """Share of ``inner``'s area that lies inside ``outer`` (0 for a degenerate inner)."""
    area = box_area(inner)
    return intersection(inner, outer) / area if area > 0 else 0.0


def iou_matrix(a: Sequence[BoxLike] | np.ndarray, b: Sequence[BoxLike] | np.ndarray) -> np.ndarray:
    """Pairwise IoU: an ``(len(a), len(b))`` array."""
    aa, bb = _as_boxes(a), _as_boxes(b)
    x0 = np.maximum(aa[:, None, 0], bb[None, :, 0])
    y0 = np.maximum(aa[:, None, 1], bb[None, :, 1])
    x1 = np.minimum(aa[:, None, 2], bb[None, :, 2])
    y1 = np.minimum(aa[:, None, 3], bb[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(aa[:, 2] - aa[:, 0], 0, None) * np.clip(aa[:, 3] - aa[:, 1], 0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def nms(boxes: Sequence[BoxLike] | np.ndarray, scores: Sequence[float] | np.ndarray,
        iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression.

    Returns the indices of the kept boxes, highest score first (ties: lower index
    first). A box is suppressed when its IoU with an already kept box is greater
    than ``iou_threshold``.
    """
    arr = _as_boxes(boxes)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(sc) != len(arr):
        raise ValueError(f"{len(arr)} boxes but {len(sc)} scores")
    if len(arr) < 2:  # nothing to suppress (most frames: no face or one)
        return list(range(len(arr)))
    order = sorted(range(len(arr)), key=lambda i: (-sc[i], i))
    overlaps = iou_matrix(arr, arr)
    kept: list[int] = []
    for i in order:
        if all(overlaps[i, k] <= iou_threshold for k in kept):
            kept.append(i)
    return kept
