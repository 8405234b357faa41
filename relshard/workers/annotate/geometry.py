"""Box geometry for the heuristic annotator: where to look, and how subjects relate.

Regions are defined for subjects of kind ``person`` (box bands) and ``face``
(areas relative to the face); the annotator describes no clothing for other kinds.
All boxes are normalized ``[x0, y0, x1, y1]`` of the subject's frame; x-offsets
are in units of box *widths* and y-offsets in units of box *heights*, so the
aspect ratio of the frame never enters.

Regions of a subject:

- person box: the upper body is the band 22-50 % down the box, the lower body
  58-92 %, both over the middle half of its width (a HOG box is the person with
  little margin; the head is the top ~20 %). A known face pushes the upper band
  below the chin;
- face only, or a person whose box was estimated from its face
  (:mod:`relshard.workers.detect.body`): the upper body is the area from 0.5 to
  1.8 face heights under the chin (past the neck and collar), 2.6 face widths
  wide; the lower body (hips, legs) 3.2 to 5.2 face heights under the chin; both
  only where enough of it is in frame;
- hair (only when a face is known): a band a quarter of a face height tall on
  top of the face box, over its middle 80 %.

A region that sticks out of the frame is clipped; ``inside`` says what share of
it was in frame, and a region with less than :data:`MIN_INSIDE` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from relshard.record import Subject
from relshard.workers.detect.body import is_estimated

Box = tuple[float, float, float, float]

MIN_INSIDE = 0.4
FACE_PER_PERSON_HEIGHT = 7.5  # a standing person is ~7.5 face heights tall
BODY_PER_FACE_WIDTH = 3.0  # shoulders are ~3 face widths wide
NEXT_TO_SPACING = 1.5  # centres at most this many mean body widths apart
NEXT_TO_MIN_SCALE = 0.6  # smaller / larger scale of two subjects "next to" each other
NEXT_TO_MAX_DY = 2.0  # head heights differ by at most this many face heights
LARGER_RATIO = 1.5  # a subject "appears larger" when its scale is this much bigger


@dataclass(frozen=True)
class Region:
    """A region in normalized coordinates, clipped to the frame."""

    box: Box
    inside: float  # share of the intended region that lies in the frame


def _clip(box: Box) -> Region | None:
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    if area <= 0:
        return None
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, 1.0), min(y1, 1.0)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    inside = (cx1 - cx0) * (cy1 - cy0) / area
    return Region((cx0, cy0, cx1, cy1), inside) if inside >= MIN_INSIDE else None


def face_box(subject: Subject) -> Box | None:
    """The subject's face: its ``face_bbox``, or its box when it is a face."""
    if subject.face_bbox is not None:
        return tuple(subject.face_bbox)  # type: ignore[return-value]
    if subject.kind == "face":
        return tuple(subject.bbox)  # type: ignore[return-value]
    return None


def _band(box: Box, top: float, bottom: float, left: float = 0.25, right: float = 0.75) -> Box:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (x0 + left * w, y0 + top * h, x0 + right * w, y0 + bottom * h)


def _under_face(face: Box, start: float, stop: float, half_width: float) -> Box:
    x0, y0, x1, y1 = face
    fw, fh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    return (cx - half_width * fw, y1 + start * fh, cx + half_width * fw, y1 + stop * fh)


def _seen_face(subject: Subject) -> Box | None:
    """The face to measure the body from: a face subject's, or an estimated body's."""
    if subject.kind == "face" or is_estimated(subject.detector):
        return face_box(subject)
    return None


def upper_body_region(subject: Subject) -> Region | None:
    """Where the subject's upper-body clothing should be."""
    face = face_box(subject)
    seen = _seen_face(subject)
    if seen is not None:
        return _clip(_under_face(seen, 0.5, 1.8, 1.3))
    band = _band(tuple(subject.bbox), 0.22, 0.50)  # type: ignore[arg-type]
    if face is not None:
        below_chin = face[3] + 0.1 * (face[3] - face[1])
        if below_chin < band[3]:
            band = (band[0], max(band[1], below_chin), band[2], band[3])
    return _clip(band)


def lower_body_region(subject: Subject) -> Region | None:
    """Where the subject's lower-body clothing should be."""
    seen = _seen_face(subject)
    if seen is not None:
        return _clip(_under_face(seen, 3.2, 5.2, 1.0))
    return _clip(_band(tuple(subject.bbox), 0.58, 0.92))  # type: ignore[arg-type]


def hair_region(subject: Subject) -> Region | None:
    """The band just above the face, when a face is known."""
    face = face_box(subject)
    if face is None:
        return None
    x0, y0, x1, y1 = face
    fw, fh = x1 - x0, y1 - y0
    return _clip((x0 + 0.1 * fw, y0 - 0.25 * fh, x1 - 0.1 * fw, y0 + 0.03 * fh))


def centre(subject: Subject) -> tuple[float, float]:
    x0, y0, x1, y1 = subject.bbox
    return ((x0 + x1) / 2, (y0 + y1) / 2)


def placement(subject: Subject) -> str:
    """Where in the frame the subject stands, by thirds of the width."""
    cx = centre(subject)[0]
    if cx < 1 / 3:
        return "on the left of the frame"
    if cx > 2 / 3:
        return "on the right of the frame"
    return "in the centre of the frame"


def scale(subject: Subject) -> float:
    """Apparent size as a face height (normalized); persons without a face estimate it."""
    face = face_box(subject)
    if face is not None:
        return face[3] - face[1]
    return (subject.bbox[3] - subject.bbox[1]) / FACE_PER_PERSON_HEIGHT


def size_phrase(subject: Subject) -> str:
    """How close the subject looks, from its face height relative to the frame."""
    s = scale(subject)
    if s >= 0.25:
        return "seen close up"
    if s >= 0.08:
        return "seen at medium distance"
    return "seen from afar"


def body_width(subject: Subject) -> float:
    face = face_box(subject)
    if subject.kind == "person" or face is None:
        return subject.bbox[2] - subject.bbox[0]
    return BODY_PER_FACE_WIDTH * (face[2] - face[0])


def _head_y(subject: Subject) -> float:
    face = face_box(subject)
    if face is not None:
        return (face[1] + face[3]) / 2
    return subject.bbox[1] + 0.08 * (subject.bbox[3] - subject.bbox[1])


def side_confidence(a: Subject, b: Subject) -> float:
    """Confidence of a left/right relation: 0.5 at equal centres, 1 a body width apart."""
    dx = abs(centre(a)[0] - centre(b)[0])
    width = max((body_width(a) + body_width(b)) / 2, 1e-9)
    return round(0.5 + 0.5 * min(1.0, dx / width), 3)


def next_to_confidence(a: Subject, b: Subject) -> float | None:
    """Confidence that ``a`` and ``b`` are next to each other, or None when they are not.

    Next to: similar scale (ratio >= 0.6), heads at similar heights, and centres at
    most 1.5 mean body widths apart. Confidence is the lower of the scale ratio and
    a gap term falling from 1 (touching) to 0.5 (at the limit).
    """
    sa, sb = scale(a), scale(b)
    ratio = min(sa, sb) / max(sa, sb, 1e-9)
    if ratio < NEXT_TO_MIN_SCALE:
        return None
    if abs(_head_y(a) - _head_y(b)) > NEXT_TO_MAX_DY * (sa + sb) / 2:
        return None
    limit = NEXT_TO_SPACING * (body_width(a) + body_width(b)) / 2
    dx = abs(centre(a)[0] - centre(b)[0])
    if dx > limit:
        return None
    return round(min(ratio, 1.0 - 0.5 * dx / max(limit, 1e-9)), 3)


def larger_of(a: Subject, b: Subject) -> str | None:
    """Id of the subject that looks clearly larger (scale ratio >= 1.5), if any."""
    sa, sb = scale(a), scale(b)
    if sa >= LARGER_RATIO * sb:
        return a.id
    if sb >= LARGER_RATIO * sa:
        return b.id
    return None
