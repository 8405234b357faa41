"""Per-frame cost of subject detection at ``detect_side`` (default 640), per detector.

(Recall and precision of the backends: ``bench/detect.py``.)

    python bench/detect_cost.py [--threads N] [--side 640] [--repeats 7]

Frames are the example photos (and a drawn standing person) resized so the long
side is ``--side``. Prints min and median milliseconds per frame for the frontal
Haar cascade, the profile cascade (image + mirror), HOG people, the whole
``SubjectDetector.detect_frame`` with the ``opencv`` backend, CenterFace alone, and
the whole ``detect_frame`` with the default ``centerface`` backend. ``--threads``
sets OpenCV's and onnxruntime's thread count (a Ray task with one CPU should be
measured with 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relshard.spec import DetectSpec  # noqa: E402
from relshard.workers.detect import cascades  # noqa: E402
from relshard.workers.detect.centerface import CenterFace  # noqa: E402
from relshard.workers.detect.subjects import SubjectDetector, downscale  # noqa: E402
from tests.unit.workers.detect.scenes import photo, side_by_side, standing_figure  # noqa: E402


def _frames(side: int) -> dict[str, np.ndarray]:
    def fit(im: np.ndarray) -> np.ndarray:
        scale = side / max(im.shape[:2])
        return cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)

    return {
        "astronaut": fit(photo("astronaut")),
        "grace|astronaut": fit(side_by_side(photo("grace_hopper"), photo("astronaut"))),
        "chelsea (cat)": fit(photo("chelsea")),
        "coffee": fit(photo("coffee")),
        "drawn person": fit(standing_figure()),
    }


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()  # warm: loads the detectors
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return min(runs), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    detector = SubjectDetector(DetectSpec(backend="opencv", detect_side=args.side))
    default = SubjectDetector(DetectSpec(detect_side=args.side, threads=args.threads))
    centerface = CenterFace(threads=args.threads)
    print(f"opencv {cv2.__version__}, threads {cv2.getNumThreads()}, side {args.side}; "
          "ms per frame as min / median")
    totals: dict[str, list[float]] = {}
    for name, frame in _frames(args.side).items():
        small, _ = downscale(frame, args.side)
        gray = cascades.prepare_gray(small)
        n = args.repeats
        row = {
            "haar frontal": _time(lambda g=gray: cascades.detect_frontal_faces(g, 24), n),
            "haar profile x2": _time(lambda g=gray: cascades.detect_profile_faces(g, 24), n),
            "hog": _time(lambda s=small: cascades.detect_people(s), n),
            "opencv all": _time(lambda f=frame: detector.detect_frame(f), n),
            "centerface": _time(lambda s=small: centerface.detect(s, 20), n),
            "centerface all": _time(lambda f=frame: default.detect_frame(f), n),
        }
        cells = "  ".join(f"{k} {lo:6.1f}/{med:6.1f}" for k, (lo, med) in row.items())
        print(f"{name:16s} {small.shape[1]}x{small.shape[0]}  {cells}")
        for k, (lo, _) in row.items():
            totals.setdefault(k, []).append(lo)
    print("mean of mins     " + "  ".join(f"{k} {statistics.mean(v):6.1f}"
                                          for k, v in totals.items()))


if __name__ == "__main__":
    main()
