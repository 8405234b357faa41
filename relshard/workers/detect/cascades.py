"""OpenCV's classic detectors, loaded lazily and cached per process and thread.

- Frontal faces: the Haar cascade ``haarcascade_frontalface_alt2.xml``. On the
  example photos (Grace Hopper, the astronaut, plus mirrored, downscaled and
  side-by-side variants, with the cat and coffee photos as negatives) ``alt2``
  found every face that ``default`` found, and ``default`` added a false face on
  the downscaled astronaut; ``alt2`` is also no slower.
- Profile faces: ``haarcascade_profileface.xml`` is trained on one side only, so it
  runs on the image and on its mirror, with boxes mapped back. It runs with a
  coarser scale step (1.2) and 5 neighbours: at 1.1 it cost ~1.7x the frontal
  cascade per pass, and with 4 neighbours it fired on hair. No profile photo was
  at hand, so its recall is unmeasured.
- People: the HOG + linear SVM default people detector (64x128 windows, so it finds
  standing people at least ~128 px tall at detection size). Hits whose SVM weight
  is under :data:`HOG_MIN_WEIGHT` are dropped, and the returned window is shrunk to
  the person inside it (the window carries ~20% margin on each side). Window
  stride 8, padding 8, scale step 1.05: measured ~100 ms per 640x480 frame on one
  core of the 2-core dev machine; step 1.1 halves that but found half as many of
  the drawn test people of different sizes.

Scores are squashed into [0, 1] so that NMS across detectors can compare them:
Haar uses the number of merged neighbour windows ``n`` as ``n / (n + 8)``, HOG uses
the SVM weight ``w`` as ``w / (w + 1)``. They are heuristic confidences, not
calibrated probabilities.

The detectors are cached per thread (OpenCV's cascade objects keep scratch
buffers and are not meant to be shared by concurrent callers); in the pipeline a
worker is a process with one thread, so this is one load per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import cv2
import numpy as np

from relshard.errors import MissingDependencyError

FRONTAL_CASCADE = "haarcascade_frontalface_alt2.xml"
PROFILE_CASCADE = "haarcascade_profileface.xml"

FRONTAL_SCALE_FACTOR = 1.1
FRONTAL_MIN_NEIGHBOURS = 4
# The profile cascade runs twice (image and mirror) and costs ~1.7x the frontal one
# per pass at the same scale step; a coarser step keeps it near the frontal cost.
PROFILE_SCALE_FACTOR = 1.2
PROFILE_MIN_NEIGHBOURS = 5  # at 4 it fired on hair and on frontal faces in our checks
HAAR_WINDOW_PX = 20  # both cascades are trained on 20x20 windows

HOG_WIN_STRIDE = (8, 8)
HOG_PADDING = (8, 8)
HOG_SCALE = 1.05  # 1.1 halves the cost but skipped people at some sizes in our checks
# SVM weight below which a HOG hit is dropped. Measured at 640: false hits on the
# example photos (a flag, a space suit) scored 0.1-0.8, once 1.2; drawn standing
# people 1.1-2.9. Wrong people make wrong relations, so precision wins here.
HOG_MIN_WEIGHT = 1.0
HOG_SHRINK_X = 0.18  # share of the window width cut from each side
HOG_SHRINK_Y = 0.08  # share of the window height cut from top and bottom

DetectionKind = Literal["face", "person"]
T = TypeVar("T")


@dataclass(frozen=True)
class Detection:
    """One raw detection in the pixel coordinates of the image it was found in."""

    box: tuple[float, float, float, float]
    score: float
    kind: DetectionKind
    detector: str


_local = threading.local()


def _cascade_path(name: str) -> str:
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not base:
        raise MissingDependencyError("opencv-python-headless<5")
    return str(base) + name


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(_cascade_path(name))
    if classifier.empty():
        # opencv 5.x wheels ship no cascades; relshard pins <5.
        raise MissingDependencyError("opencv-python-headless<5")
    return classifier


def _cached(key: str, factory: Callable[[], T]) -> T:
    """The object cached under ``key`` for this thread, made by ``factory`` on first use."""
    cache: dict[str, object] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    if key not in cache:
        cache[key] = factory()
    return cast(T, cache[key])


def frontal_face_cascade() -> cv2.CascadeClassifier:
    """The frontal-face Haar cascade of this thread (loaded on first use)."""
    return _cached("frontal", lambda: _load_cascade(FRONTAL_CASCADE))


def profile_face_cascade() -> cv2.CascadeClassifier:
    """The profile-face Haar cascade of this thread (loaded on first use)."""
    return _cached("profile", lambda: _load_cascade(PROFILE_CASCADE))


def _make_hog() -> cv2.HOGDescriptor:
    if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
        raise MissingDependencyError("opencv-python-headless<5")
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def people_hog() -> cv2.HOGDescriptor:
    """The HOG people detector of this thread (built on first use)."""
    return _cached("hog", _make_hog)


def prepare_gray(rgb: np.ndarray) -> np.ndarray:
    """Grayscale, histogram-equalized: what the Haar cascades want."""
    return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def _haar(classifier: cv2.CascadeClassifier, gray: np.ndarray, min_px: int,
          scale_factor: float, neighbours: int) -> list[tuple[np.ndarray, int]]:
    size = max(HAAR_WINDOW_PX, int(min_px))
    if min(gray.shape[:2]) < size:
        return []
    rects, counts = classifier.detectMultiScale2(
        gray, scaleFactor=scale_factor, minNeighbors=neighbours, minSize=(size, size)
    )
    return list(zip(np.asarray(rects).reshape(-1, 4), np.ravel(counts), strict=True))


def _haar_score(count: int) -> float:
    return float(count) / (float(count) + 8.0)


def detect_frontal_faces(gray: np.ndarray, min_px: int) -> list[Detection]:
    """Frontal faces at least ``min_px`` wide in an equalized grayscale image."""
    found = _haar(frontal_face_cascade(), gray, min_px, FRONTAL_SCALE_FACTOR,
                  FRONTAL_MIN_NEIGHBOURS)
    return [
        Detection((float(x), float(y), float(x + w), float(y + h)), _haar_score(n), "face",
                  "haar-frontal")
        for (x, y, w, h), n in found
    ]


def detect_profile_faces(gray: np.ndarray, min_px: int) -> list[Detection]:
    """Profile faces turned either way: the cascade runs on the image and its mirror."""
    width = gray.shape[1]
    out: list[Detection] = []
    for mirrored in (False, True):
        image = np.ascontiguousarray(gray[:, ::-1]) if mirrored else gray
        for (x, y, w, h), n in _haar(profile_face_cascade(), image, min_px,
                                     PROFILE_SCALE_FACTOR, PROFILE_MIN_NEIGHBOURS):
            x0 = float(width - (x + w)) if mirrored else float(x)
            out.append(Detection((x0, float(y), x0 + float(w), float(y + h)), _haar_score(n),
                                 "face", "haar-profile"))
    return out


def _shrink_window(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    dx, dy = w * HOG_SHRINK_X, h * HOG_SHRINK_Y
    return (x + dx, y + dy, x + w - dx, y + h - dy)


def detect_people(rgb: np.ndarray, min_weight: float = HOG_MIN_WEIGHT) -> list[Detection]:
    """Standing people (HOG), boxes shrunk from the detection window to the person.

    Channel order does not matter to HOG (it takes the strongest gradient over the
    channels), so RGB goes in as it is.
    """
    hog = people_hog()
    win_w, win_h = hog.winSize
    if rgb.shape[0] < win_h or rgb.shape[1] < win_w:
        return []
    rects, weights = hog.detectMultiScale(
        rgb, winStride=HOG_WIN_STRIDE, padding=HOG_PADDING, scale=HOG_SCALE
    )
    out: list[Detection] = []
    for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.ravel(weights),
                                    strict=True):
        if float(weight) < min_weight:
            continue
        box = _shrink_window(float(x), float(y), float(w), float(h))
        out.append(Detection(box, float(weight) / (float(weight) + 1.0), "person", "hog"))
    return out
