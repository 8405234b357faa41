"""The images a model sees for one sample: chosen frames, with the subjects marked.

Subjects are shown either as numbered boxes drawn on the frames (``S1``, ``S2``,
... in a colour per subject, on the frame each box belongs to) or as their crops
sent after the frames, in id order. Frames are resized to ``max_side`` and sent as
JPEG; for a clip, up to ``frames_per_request`` frames spread over it.
"""

from __future__ import annotations

import cv2
import numpy as np

from relshard.record import Subject
from relshard.shards.item import SampleDraft

_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60)]  # RGB


class VisualError(ValueError):
    """The sample's frames cannot be shown to a model."""


def pick_frames(n_frames: int, limit: int) -> list[int]:
    """Up to ``limit`` frame positions spread evenly over ``n_frames``, first and last kept."""
    if n_frames <= limit:
        return list(range(n_frames))
    if limit == 1:
        return [n_frames // 2]
    return sorted({round(i * (n_frames - 1) / (limit - 1)) for i in range(limit)})


def decode_frame(jpeg: bytes) -> np.ndarray:
    """A stored frame's JPEG as a BGR array; :class:`VisualError` when it does not decode."""
    buf = np.frombuffer(jpeg, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise VisualError("a stored frame is not a decodable image")
    return img


def _fit(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _encode(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise VisualError("a frame could not be encoded as JPEG")
    return buf.tobytes()


def draw_subjects(img: np.ndarray, subjects: list[Subject], frame: int) -> np.ndarray:
    """``img`` (BGR) with each subject present in ``frame`` boxed and labelled by id."""
    out = img.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 300))
    for n, subject in enumerate(subjects):
        box = subject.box_on(frame)
        if box is None:
            continue
        r, g, b = _COLOURS[n % len(_COLOURS)]
        colour = (b, g, r)
        x0, y0 = int(box[0] * w), int(box[1] * h)
        x1, y1 = int(box[2] * w), int(box[3] * h)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick)
        scale = max(0.4, max(h, w) / 900)
        (tw, th), _ = cv2.getTextSize(subject.id, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = max(th + 2, y0)
        cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 4, ty), colour, -1)
        cv2.putText(out, subject.id, (x0 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


def sample_images(sample: SampleDraft, *, marks: str, frames_per_request: int,
                  max_side: int) -> tuple[list[bytes], list[int]]:
    """JPEGs to send for ``sample`` and the stored-frame positions they show.

    With ``marks="crops"`` the subject crops follow the frames (position -1 each).
    """
    if not sample.frames:
        raise VisualError("the sample has no stored frames")
    chosen = pick_frames(len(sample.frames), frames_per_request)
    if marks == "boxes":  # every subject's box must be visible on some frame sent
        chosen = sorted(set(chosen) | {s.frame for s in sample.subjects
                                       if 0 <= s.frame < len(sample.frames)})
    images: list[bytes] = []
    for pos in chosen:
        img = _fit(decode_frame(sample.frames[pos].jpeg), max_side)
        if marks == "boxes" and sample.subjects:
            img = draw_subjects(img, sample.subjects, pos)
        images.append(_encode(img))
    positions = list(chosen)
    if marks == "crops":
        for subject in sample.subjects:
            crop = sample.members.get(subject.crop or "")
            if crop is not None:
                images.append(crop)
                positions.append(-1)
    return images, positions
