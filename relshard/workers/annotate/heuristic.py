"""The ``heuristic`` annotator: the offline baseline, measurable cues only.

It reads the detector's subjects and, from the stored frames, measures:

- the dominant palette colour (:mod:`.palette`) of each person's or face's
  upper-body and lower-body region and, when a face is known, of the hair band
  above it (:mod:`.geometry` says where these regions are) — emitted as
  attributes with ``wears`` / ``has`` relations whose confidence is the colour's
  share of the region, discounted when part of the region lies out of frame
  (``share * (0.5 + 0.5 * inside)``);
- box geometry between subjects: ``left_of`` / ``right_of`` (always from the lower
  id to the higher id; confidence grows with the horizontal gap) and ``next_to``
  (adjacent in left-to-right order, similar scale);
- a plain caption and an anonymized relational caption from templates
  (:mod:`.captions`).

Frames are JPEGs holding a normal-colour picture; ``cv2.imdecode`` returns BGR,
which is converted to RGB before any colour is measured. Provenance says
``backend="heuristic"`` and ``model=None``: this is a baseline, not a model.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from relshard import __version__
from relshard.record import Attribute, AttributeCategory, Provenance, Relation, Subject
from relshard.shards.item import SampleDraft
from relshard.spec import HeuristicAnnotate
from relshard.workers.annotate import geometry as geo
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.captions import (
    PairView,
    SubjectView,
    plain_caption,
    relational_caption,
)
from relshard.workers.annotate.palette import dominant_colour

METHOD = "detector subjects; lab-palette colours of body/hair regions; box geometry (v1)"
MIN_SHARE = 0.3  # a region whose top colour covers less than this is too mixed to name
MIN_REGION_PX = 16  # regions with fewer pixels are not measured
ALL_PAIRS_MAX = 5  # up to this many subjects every pair gets a left/right relation
CLOTHED_KINDS = ("person", "face")

HAIR_WORDS = {"yellow": "blond", "beige": "blond", "orange": "red"}


class FrameError(ValueError):
    """A frame the sample needs cannot be had: missing or not decodable."""


class FrameCache:
    """Decodes a sample's stored frames on demand, once each, as RGB arrays."""

    def __init__(self, sample: SampleDraft) -> None:
        self._sample = sample
        self._rgb: dict[int, np.ndarray] = {}

    def get(self, index: int) -> np.ndarray:
        if index not in self._rgb:
            frames = self._sample.frames
            if not 0 <= index < len(frames):
                raise FrameError(f"subject frame {index} but the sample has {len(frames)} frames")
            buf = np.frombuffer(frames[index].jpeg, dtype=np.uint8)
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
            if bgr is None:
                raise FrameError(f"stored frame {index} is not a decodable image")
            self._rgb[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._rgb[index]


def region_pixels(rgb: np.ndarray, box: geo.Box) -> np.ndarray | None:
    """The pixels of a normalized box, or None when it covers too few."""
    h, w = rgb.shape[:2]
    x0, x1 = int(np.floor(box[0] * w)), int(np.ceil(box[2] * w))
    y0, y1 = int(np.floor(box[1] * h)), int(np.ceil(box[3] * h))
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, w), min(y1, h)
    if (x1 - x0) * (y1 - y0) < MIN_REGION_PX:
        return None
    return rgb[y0:y1, x0:x1]


@dataclass
class _Builder:
    """Accumulates attributes and relations with sequential ids."""

    attributes: list[Attribute] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)

    def attribute(self, subject: Subject, predicate: str, text: str,
                  category: AttributeCategory, region: geo.Region, confidence: float) -> None:
        attr = Attribute(id=f"A{len(self.attributes) + 1}", text=text, category=category,
                         bbox=[round(v, 5) for v in region.box], frame=subject.frame)
        self.attributes.append(attr)
        self.relations.append(Relation(subject=subject.id, predicate=predicate, object=attr.id,
                                       confidence=confidence))


def _measure(rgb: np.ndarray, region: geo.Region | None) -> tuple[str, float] | None:
    """Dominant colour of a region and the cue's confidence, or None if unusable."""
    if region is None:
        return None
    pixels = region_pixels(rgb, region.box)
    if pixels is None:
        return None
    name, share = dominant_colour(pixels)
    if share < MIN_SHARE:
        return None
    return name, round(min(1.0, share * (0.5 + 0.5 * region.inside)), 3)


def _describe_subject(subject: Subject, rgb: np.ndarray, out: _Builder) -> SubjectView:
    """Measure one subject's regions, record attributes, and return its caption view."""
    view = SubjectView(subject.id, geo.placement(subject), geo.size_phrase(subject))
    if subject.kind not in CLOTHED_KINDS:
        return view
    for part, region in (("upper-body", geo.upper_body_region(subject)),
                         ("lower-body", geo.lower_body_region(subject))):
        cue = _measure(rgb, region)
        if cue is not None and region is not None:
            text = f"{cue[0]} {part} clothing"
            out.attribute(subject, "wears", text, "clothing", region, cue[1])
            view.wears.append(text)
    hair = geo.hair_region(subject)
    cue = _measure(rgb, hair)
    if cue is not None and hair is not None:
        text = f"{HAIR_WORDS.get(cue[0], cue[0])} hair"
        out.attribute(subject, "has", text, "hair", hair, cue[1])
        view.has.append(text)
    return view


def _pairs(subjects: list[Subject]) -> list[tuple[Subject, Subject]]:
    """Subject pairs to relate, lower id first: all pairs for a few, neighbours for many."""
    by_x = sorted(subjects, key=lambda s: geo.centre(s)[0])
    if len(subjects) <= ALL_PAIRS_MAX:
        candidates = list(itertools.combinations(by_x, 2))
    else:
        candidates = list(itertools.pairwise(by_x))
    index = {s.id: i for i, s in enumerate(subjects)}
    return sorted(((a, b) if index[a.id] < index[b.id] else (b, a) for a, b in candidates),
                  key=lambda p: (index[p[0].id], index[p[1].id]))


def _relate_subjects(subjects: list[Subject], out: _Builder) -> list[PairView]:
    """Left/right and next-to relations, plus the caption facts about pairs."""
    neighbours = {frozenset((a.id, b.id)) for a, b in itertools.pairwise(
        sorted(subjects, key=lambda s: geo.centre(s)[0]))}
    views: list[PairView] = []
    for a, b in _pairs(subjects):
        side = "left_of" if geo.centre(a)[0] <= geo.centre(b)[0] else "right_of"
        out.relations.append(Relation(subject=a.id, predicate=side, object=b.id,
                                      confidence=geo.side_confidence(a, b)))
        if frozenset((a.id, b.id)) not in neighbours:
            continue
        near = geo.next_to_confidence(a, b)
        if near is not None:
            out.relations.append(Relation(subject=a.id, predicate="next_to", object=b.id,
                                          confidence=near))
        larger = geo.larger_of(a, b)
        if near is not None or larger is not None:
            left, right = sorted((a, b), key=lambda s: geo.centre(s)[0])
            views.append(PairView(left.id, right.id, next_to=near is not None, larger=larger))
    return views


def annotate_subjects(subjects: list[Subject], frames: FrameCache) -> Annotation:
    """The heuristic annotation of one sample's subjects (provenance left unset)."""
    out = _Builder()
    ordered = sorted(subjects, key=lambda s: (geo.centre(s)[0], s.id))
    views = {s.id: _describe_subject(s, frames.get(s.frame), out) for s in subjects}
    pair_views = _relate_subjects(subjects, out)
    return Annotation(
        attributes=out.attributes,
        relations=out.relations,
        caption=plain_caption([views[s.id] for s in ordered], pair_views),
        relational_caption=relational_caption(out.relations),
    )


class HeuristicAnnotator:
    """The offline ``heuristic`` backend (implements the Annotator protocol)."""

    name = "heuristic"

    def __init__(self, cfg: HeuristicAnnotate | None = None) -> None:
        self.cfg = cfg or HeuristicAnnotate()

    def setup(self) -> None:
        """Nothing to load: the palette is built on first use."""

    def annotate(self, samples: list[SampleDraft]) -> list[Annotation | AnnotationFailure]:
        """One Annotation per sample, or an AnnotationFailure when a frame is unusable."""
        return [self._annotate_one(s) for s in samples]

    def _annotate_one(self, sample: SampleDraft) -> Annotation | AnnotationFailure:
        start = time.perf_counter()
        try:
            annotation = annotate_subjects(sample.subjects, FrameCache(sample))
        except FrameError as err:
            return AnnotationFailure(reason="frame_unreadable", detail=str(err))
        annotation.provenance = Provenance(
            backend=self.name,
            model=None,
            prompt_version=None,
            method=METHOD,
            latency_s=round(time.perf_counter() - start, 6),
            relshard_version=__version__,
        )
        return annotation
