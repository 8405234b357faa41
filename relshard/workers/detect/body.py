"""A person's box estimated from a face: where the body of a seen face should be.

CenterFace finds faces, not bodies; crops and attribute regions want the person.
From a face box of width ``fw`` and height ``fh`` (normalized, each in its own
axis, so the frame's aspect never enters) the estimated person spans
:data:`BODY_WIDTH_FACES` face widths around the face's axis and from
:data:`HAIR_FACES` face heights above the face to :data:`BODY_HEIGHT_FACES` face
heights below its top (a standing adult is about 7.5 heads tall), clipped to the
frame. A person cut by the frame (a portrait) keeps the part that is in it.

Subjects whose box is such an estimate carry :data:`BODY_ESTIMATE` in their
``detector`` (``centerface+body-estimate``), so that readers (the heuristic's
attribute regions, a gallery) know the box was not seen.
"""

from __future__ import annotations

Box = tuple[float, float, float, float]

BODY_ESTIMATE = "body-estimate"
BODY_WIDTH_FACES = 3.0  # shoulders are ~3 face widths wide
HAIR_FACES = 0.3  # hair above the face box
BODY_HEIGHT_FACES = 7.5  # a standing person is ~7.5 face heights tall


def estimate_body(face: Box) -> Box:
    """The person box of ``face`` (normalized ``[x0, y0, x1, y1]``), clipped to the frame."""
    x0, y0, x1, y1 = face
    fw, fh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    return (
        max(0.0, cx - BODY_WIDTH_FACES / 2 * fw),
        max(0.0, y0 - HAIR_FACES * fh),
        min(1.0, cx + BODY_WIDTH_FACES / 2 * fw),
        min(1.0, y0 + BODY_HEIGHT_FACES * fh),
    )


def is_estimated(detector: str | None) -> bool:
    """Whether a subject's ``detector`` says its box is estimated from its face."""
    return bool(detector) and BODY_ESTIMATE in str(detector).split("+")
