"""Tiny samples for the model-backend tests: drawn frames and detected-looking subjects."""

from __future__ import annotations

import cv2
import numpy as np

from relshard.record import SourceInfo, Subject
from relshard.shards.item import Frame, SampleDraft


def frame_jpeg(seed: int, width: int = 160, height: int = 120) -> bytes:
    """A JPEG of two coloured figures on a textured background (differs by seed)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 160, size=(height, width, 3), dtype=np.uint8)
    cv2.rectangle(img, (10, 20), (60, 110), (40, 40, 200), -1)
    cv2.rectangle(img, (90, 20), (140, 110), (200, 60, 30), -1)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def draft(n_subjects: int = 2, key: str = "k", frames: int = 1, seed: int = 0) -> SampleDraft:
    """A sample with ``frames`` stored frames and ``n_subjects`` person boxes on frame 0."""
    subjects = [Subject(id=f"S{i + 1}", kind="person",
                        bbox=[0.05 + 0.5 * (i % 2), 0.15, 0.4 + 0.5 * (i % 2), 0.9])
                for i in range(n_subjects)]
    source = SourceInfo(uri=f"{key}.jpg", input_key=key,
                        modality="image" if frames == 1 else "video")
    stored = [Frame(frame_jpeg(seed * 100 + i), 160, 120, index=i) for i in range(frames)]
    return SampleDraft(key=key, source=source, frames=stored, subjects=subjects)
