"""The heuristic annotator: palette colours, regions, relations, captions, provenance."""

from __future__ import annotations

import re

import numpy as np
import pytest

import relshard
from relshard.record import SampleRecord, SourceInfo, Subject
from relshard.shards.item import Frame, SampleDraft
from relshard.spec import DetectSpec
from relshard.workers.annotate import geometry
from relshard.workers.annotate.base import Annotation, AnnotationFailure, Annotator
from relshard.workers.annotate.captions import relational_caption
from relshard.workers.annotate.heuristic import ALL_PAIRS_MAX, HeuristicAnnotator
from relshard.workers.annotate.palette import COLOUR_NAMES, colour_shares, dominant_colour
from relshard.workers.detect.subjects import SubjectDetector
from tests.unit.workers.detect.scenes import (
    GRACE_FACE,
    jpeg,
    photo,
    side_by_side,
    standing_figure,
)


def cascade_spec(**kw) -> DetectSpec:
    """Today's OpenCV cascades + HOG, faces kept as face subjects (what these tests pin)."""
    return DetectSpec(backend="opencv", body_from_face=False, **kw)


FACES_ONLY = cascade_spec(persons=False, profile_faces=False)  # frontal Haar: fast


def _draft(frames: list[np.ndarray], found: list[Subject], key: str = "k") -> SampleDraft:
    source = SourceInfo(uri=f"{key}.jpg", input_key=key, modality="image")
    stored = [Frame(jpeg(f), f.shape[1], f.shape[0], index=i) for i, f in enumerate(frames)]
    return SampleDraft(key=key, source=source, frames=stored, subjects=found)


def _detect_and_annotate(image: np.ndarray, cfg: DetectSpec = FACES_ONLY):
    found, _ = SubjectDetector(cfg).detect([image])
    draft = _draft([image], found)
    [result] = HeuristicAnnotator().annotate([draft])
    assert isinstance(result, Annotation)
    return found, result, _record(draft, result)


def _record(draft: SampleDraft, ann: Annotation) -> SampleRecord:
    """The record the writer would build: it must validate."""
    return SampleRecord(key=draft.key, source=draft.source, subjects=draft.subjects,
                        attributes=ann.attributes, relations=ann.relations, caption=ann.caption,
                        relational_caption=ann.relational_caption, provenance=ann.provenance)


def _rels(ann: Annotation) -> set[tuple[str, str, str]]:
    return {(r.subject, r.predicate, r.object) for r in ann.relations}


def _texts(ann: Annotation, subject: str) -> dict[str, str]:
    """attribute text -> predicate, for one subject."""
    by_id = {a.id: a.text for a in ann.attributes}
    return {by_id[r.object]: r.predicate for r in ann.relations
            if r.subject == subject and r.object in by_id}


# --- palette -----------------------------------------------------------------


@pytest.mark.parametrize(("rgb", "name"), [
    ((0, 0, 0), "black"), ((250, 250, 250), "white"), ((125, 125, 128), "gray"),
    ((210, 25, 30), "red"), ((250, 130, 30), "orange"), ((250, 225, 40), "yellow"),
    ((30, 140, 40), "green"), ((30, 60, 180), "blue"), ((25, 30, 80), "blue"),
    ((120, 40, 150), "purple"), ((250, 160, 200), "pink"), ((110, 70, 40), "brown"),
    ((222, 200, 168), "beige"),
])
def test_plain_colours_get_their_names(rgb: tuple[int, int, int], name: str):
    region = np.full((12, 9, 3), rgb, np.uint8)
    assert dominant_colour(region) == (name, 1.0)


def test_the_dominant_colour_and_its_share():
    region = np.full((100, 100, 3), 255, np.uint8)
    region[:70] = (200, 10, 20)
    name, share = dominant_colour(region)
    assert name == "red" and share == pytest.approx(0.7, abs=0.03)
    shares = colour_shares(region)
    assert shares["white"] == pytest.approx(0.3, abs=0.03)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert dominant_colour(np.full((1, 1, 3), (0, 0, 255), np.uint8)) == ("blue", 1.0)
    with pytest.raises(ValueError):
        dominant_colour(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError):
        dominant_colour(np.zeros((5, 5), np.uint8))


# --- one person ---------------------------------------------------------------


def test_red_painted_under_the_face_is_worn():
    image = photo("grace_hopper")
    x0, _, x1, y1 = GRACE_FACE
    image[y1 + 40:, x0 - 120:x1 + 120] = (255, 0, 0)
    found, ann, record = _detect_and_annotate(image)
    assert [s.id for s in found] == ["S1"]
    texts = _texts(ann, "S1")
    assert texts.get("red upper-body clothing") == "wears"
    wears = [r for r in ann.relations if r.predicate == "wears"]
    assert wears and wears[0].confidence > 0.5
    attr = next(a for a in ann.attributes if a.text == "red upper-body clothing")
    assert attr.category == "clothing" and attr.frame == 0 and attr.bbox[1] > found[0].bbox[3]
    assert "red upper-body clothing" in ann.caption
    assert record.relational_caption.startswith("{S1} wears {A")


def test_a_clip_subject_is_measured_on_its_own_frame():
    painted = photo("grace_hopper")
    x0, _, x1, y1 = GRACE_FACE
    painted[y1 + 40:, x0 - 120:x1 + 120] = (0, 160, 0)
    frames = [np.full_like(painted, 128), painted]
    found, _ = SubjectDetector(FACES_ONLY).detect(frames)
    assert [(s.id, s.frame) for s in found] == [("S1", 1)]
    draft = _draft(frames, found)
    [ann] = HeuristicAnnotator().annotate([draft])
    assert _texts(ann, "S1").get("green upper-body clothing") == "wears"
    assert all(a.frame == 1 for a in ann.attributes)
    assert _record(draft, ann).subjects[0].track[0].frame == 1


def test_the_astronaut_wears_orange_and_has_hair():
    _, ann, _ = _detect_and_annotate(photo("astronaut"))
    texts = _texts(ann, "S1")
    assert texts.get("orange upper-body clothing") == "wears"
    hair = [a for a in ann.attributes if a.category == "hair"]
    assert len(hair) == 1 and hair[0].text.endswith(" hair")
    assert texts[hair[0].text] == "has"


def test_a_drawn_person_wears_a_red_top_and_blue_trousers():
    found, ann, _ = _detect_and_annotate(standing_figure(), cascade_spec())
    assert [s.kind for s in found] == ["person"]
    texts = _texts(ann, "S1")
    assert texts.get("red upper-body clothing") == "wears"
    assert texts.get("blue lower-body clothing") == "wears"
    assert not [a for a in ann.attributes if a.category == "hair"]  # no face, no hair cue


def test_nothing_detected_gives_an_empty_annotation():
    _, ann, record = _detect_and_annotate(photo("chelsea"), cascade_spec())
    assert ann.attributes == [] and ann.relations == []
    assert ann.caption == "No people were detected."
    assert ann.relational_caption == ""
    assert record.subjects == []


def test_provenance_says_heuristic_not_a_model():
    _, ann, _ = _detect_and_annotate(photo("astronaut"))
    p = ann.provenance
    assert p is not None
    assert (p.backend, p.model, p.prompt_version) == ("heuristic", None, None)
    assert p.method and "palette" in p.method
    assert p.relshard_version == relshard.__version__
    assert p.latency_s is not None and p.latency_s >= 0


# --- two people -----------------------------------------------------------------


def _no_attribute_words(text: str) -> bool:
    bare = re.sub(r"\{[A-Za-z0-9]+\}", "", text).lower()
    words = set(re.findall(r"[a-z-]+", bare))
    return not words & (set(COLOUR_NAMES) | {"hair", "clothing", "upper-body", "blond"})


def test_two_people_left_of_and_anonymized_caption():
    scene = side_by_side(photo("grace_hopper"), photo("astronaut"))
    found, ann, record = _detect_and_annotate(scene)
    assert [s.id for s in found] == ["S1", "S2"]
    rels = {(r.subject, r.predicate, r.object): r.confidence for r in ann.relations}
    assert rels[("S1", "left_of", "S2")] > 0.9
    assert ("S1", "next_to", "S2") not in rels  # Grace's face is twice the astronaut's
    assert "{S1} is left of {S2}" in ann.relational_caption
    assert _no_attribute_words(ann.relational_caption)
    assert set(re.findall(r"\{(\w+)\}", record.relational_caption)) == (
        {"S1", "S2"} | {a.id for a in ann.attributes})
    assert ann.caption.startswith("Two people. The person on the left")
    assert "appears larger than the person on the right" in ann.caption
    assert _texts(ann, "S2").get("orange upper-body clothing") == "wears"


def test_people_side_by_side_at_the_same_scale_are_next_to_each_other():
    strip = photo("astronaut")[:, 80:400]
    _, ann, _ = _detect_and_annotate(side_by_side(strip, strip))
    assert {("S1", "left_of", "S2"), ("S1", "next_to", "S2")} <= _rels(ann)
    assert "is next to" in ann.caption


def _face(sid: str, x: float, frame: int = 0) -> Subject:
    return Subject(id=sid, kind="face", bbox=[x, 0.2, x + 0.08, 0.32], frame=frame,
                   crop=f"{sid.lower()}.jpg")


def test_relations_go_from_the_lower_id_whatever_the_order():
    image = np.full((400, 800, 3), 90, np.uint8)
    found = [_face("S1", 0.7), _face("S2", 0.2)]  # S1 stands on the right
    draft = _draft([image], found)
    [ann] = HeuristicAnnotator().annotate([draft])
    side = [(r.subject, r.predicate, r.object) for r in ann.relations
            if r.predicate in ("left_of", "right_of")]
    assert side == [("S1", "right_of", "S2")]
    assert "{S1} is right of {S2}" in ann.relational_caption
    _record(draft, ann)


def test_many_people_relate_to_their_neighbours_only():
    n = ALL_PAIRS_MAX + 2
    image = np.full((400, 1600, 3), 90, np.uint8)
    found = [_face(f"S{i + 1}", 0.05 + i * 0.13) for i in range(n)]
    draft = _draft([image], found)
    [ann] = HeuristicAnnotator().annotate([draft])
    side = [(r.subject, r.object) for r in ann.relations if r.predicate == "left_of"]
    assert side == [(f"S{i}", f"S{i + 1}") for i in range(1, n)]
    _record(draft, ann)
    assert ann.caption.startswith("Seven people. ")


# --- failures and geometry -------------------------------------------------------


def test_unusable_frames_fail_the_sample_not_the_batch():
    image = photo("astronaut")
    found, _ = SubjectDetector(FACES_ONLY).detect([image])
    broken = _draft([image], found, key="broken")
    broken.frames[0].jpeg = b"not a jpeg"
    elsewhere = _draft([image], [s.model_copy(update={"frame": 3}) for s in found], key="frame")
    good = _draft([image], found, key="good")
    results = HeuristicAnnotator().annotate([broken, elsewhere, good])
    assert [type(r) for r in results] == [AnnotationFailure, AnnotationFailure, Annotation]
    assert results[0].reason == results[1].reason == "frame_unreadable"


def test_regions_out_of_frame_are_not_measured():
    low = Subject(id="S1", kind="face", bbox=[0.4, 0.8, 0.5, 0.95])  # face at the bottom
    assert geometry.upper_body_region(low) is None
    assert geometry.lower_body_region(low) is None
    top = Subject(id="S1", kind="face", bbox=[0.4, 0.0, 0.5, 0.1])
    assert geometry.hair_region(top) is None
    assert geometry.upper_body_region(top) is not None
    person = Subject(id="S1", kind="person", bbox=[0.4, 0.1, 0.6, 0.9],
                     face_bbox=[0.47, 0.1, 0.53, 0.3])
    upper = geometry.upper_body_region(person)
    assert upper is not None and upper.box[1] >= 0.3  # starts under the chin
    assert geometry.hair_region(Subject(id="S1", kind="person", bbox=[0, 0, 1, 1])) is None


def test_relational_caption_template():
    assert relational_caption([]) == ""


def test_it_is_an_annotator():
    annotator = HeuristicAnnotator()
    annotator.setup()
    assert isinstance(annotator, Annotator) and annotator.name == "heuristic"
    assert annotator.annotate([]) == []
