"""Subjects the model grounds itself: box checks, the merge, renaming, crops, end to end.

The pure functions run on recorded answers; the engine runs against the loopback
chat server (tests/servers/chat_server.py) answering with good, shifted, outside,
duplicate boxes, normalized and in Qwen's ``bbox_2d`` pixels.
"""

from __future__ import annotations

import base64
import json
from string import Template

import cv2
import numpy as np
import pytest

from relshard.record import SampleRecord, Subject, TrackPoint
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import OpenAIAnnotate, parse_spec
from relshard.workers.annotate import grounding as G
from relshard.workers.annotate import parsing as P
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.openai_backend import OpenAIAnnotator
from relshard.workers.annotate.prompts import PROMPT_NAMES, PromptSet
from relshard.workers.annotate.stage import AnnotateStage
from relshard.workers.annotate.visual import sample_images
from tests.servers.chat_server import ChatServer, Reply, good_answer, lists_subjects
from tests.unit.workers.annotate.helpers import draft

RULES = G.Rules()
DETECTED = [Subject(id="S1", kind="person", bbox=[0.05, 0.15, 0.4, 0.9]),
            Subject(id="S2", kind="person", bbox=[0.55, 0.15, 0.9, 0.9])]
IMAGE = [G.SentImage(frame=0, width=160, height=120)]
MATCH_S1 = [0.06, 0.16, 0.41, 0.88]  # IoU with S1 > 0.9
NEW = [0.42, 0.3, 0.53, 0.8]  # between S1 and S2, overlapping neither
NEW_PIXELS = [67, 36, 85, 96]  # ~NEW in pixels of the 160 x 120 image: a duplicate of it
OUTSIDE = [1.2, 0.1, 1.5, 0.5]
SHIFTED = [0.92, -0.03, 1.03, 0.4]  # slightly out of frame: clipped


def _ctx(base=DETECTED, images=IMAGE, mode="both") -> G.GroundContext:
    return G.GroundContext(mode=mode, base=list(base), images=list(images))


# ---- boxes -----------------------------------------------------------------------------


def test_good_and_shifted_boxes_are_kept_and_clipped():
    assert G.check_box(tuple(NEW), RULES) == tuple(NEW)
    assert G.check_box(tuple(SHIFTED), RULES) == (0.92, 0.0, 1.0, 0.4)


@pytest.mark.parametrize(("box", "why"), [
    (OUTSIDE, "outside the image"),
    ([-0.5, -0.4, -0.1, -0.05], "outside the image"),
    ([0.5, 0.2, 1.4, 0.9], "beyond the image edge"),  # far too far: another coordinate space
    ([0.5, 0.5, 0.5, 0.8], "degenerate"),
    ([0.6, 0.2, 0.4, 0.8], "degenerate"),
    ([0.5, 0.5, 0.505, 0.6], "too small"),
    ([0.5, 0.5, 0.52, 0.51], "too small"),
    ([0.1, float("nan"), 0.3, 0.4], "not a number"),
])
def test_bad_boxes_are_rejected(box, why):
    with pytest.raises(G.BoxError, match=why):
        G.check_box(tuple(box), RULES)


def test_pixel_boxes_map_to_the_stored_frame():
    images = [G.SentImage(0, 64, 48), G.SentImage(5, 64, 48)]
    frame, box, as_px = G.locate({"bbox_2d": [32, 12, 48, 36]}, images, RULES)
    assert (frame, box, as_px) == (0, (0.5, 0.25, 0.75, 0.75), False)
    frame, box, _ = G.locate({"bbox": [0.1, 0.1, 0.3, 0.4], "image": 2}, images, RULES)
    assert frame == 5 and box == (0.1, 0.1, 0.3, 0.4)
    # a "bbox" in pixels (values > 2) is read as pixels, and says so
    assert G.locate({"bbox": [32, 12, 48, 36]}, images, RULES)[1:] == ((0.5, 0.25, 0.75, 0.75),
                                                                        True)
    with pytest.raises(G.BoxError, match="image 3, but 2 frame"):
        G.locate({"bbox": [0.1, 0.1, 0.3, 0.4], "image": 3}, images, RULES)
    # Qwen's processor rounds sides to multiples of 28: a box at its right edge still fits
    assert G.locate({"bbox_2d": [40, 0, 66, 48]}, images, RULES)[1][2] == 1.0


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_reads_the_header(progressive):
    img = np.zeros((37, 91, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok and G.jpeg_size(buf.tobytes()) == (91, 37)


@pytest.mark.parametrize(("raw", "norm"), [("s3", "S3"), (" 4 ", "S4"), (7, "S7"),
                                           ("man_1", "man_1"), (None, None), ("", None)])
def test_model_ids_are_normalized(raw, norm):
    assert G.normalize_id(raw) == norm


# ---- the merge ---------------------------------------------------------------------------


RECORDED = Template("""Here is the JSON:
```json
{"caption": "Three people and a dog.",
 "subjects": [
   {"id": "S3", "kind": "person", "bbox": $match},
   {"id": "S4", "kind": "woman", "bbox": $new},
   {"id": "S5", "label": "person", "bbox_2d": $pixels},
   {"id": "S6", "kind": "dog", "bbox": $outside},
   {"id": "S7", "kind": "animal", "bbox": $shifted}
 ],
 "attributes": [
   {"id": "A1", "subject": "S1", "text": "red scarf", "category": "clothing"},
   {"id": "A2", "subject": "S4", "text": "blue jacket", "category": "clothing"},
   {"id": "A3", "subject": "S5", "text": "short hair", "category": "hair"},
   {"id": "A4", "subject": "S7", "text": "leash", "category": "object", "predicate": "has"}
 ],
 "relations": [{"subject": "S3", "predicate": "stands_next_to", "object": "S4"},
               {"subject": "S4", "predicate": "looks_at", "object": "S7"}],
 "relational_caption": "{S1} wears {A1}, {S4} wears {A2} and looks at {S7}",
 "names": {"S4": "the guide", "S6": "the dog"}}
```""").substitute(match=MATCH_S1, new=NEW, pixels=NEW_PIXELS, outside=OUTSIDE,
                   shifted=SHIFTED)


def test_recorded_answer_is_merged_renumbered_and_renamed():
    part = P.parse_step("single", RECORDED, True)
    assert [s["id"] for s in part["subjects"]] == ["S3", "S4", "S5", "S6", "S7"]
    out = G.ground_answer(part, _ctx())
    subjects = out["subjects"]
    assert [(s.id, s.source, s.kind) for s in subjects] == [
        ("S1", "both", "person"), ("S2", "detector", "person"),
        ("S3", "model", "person"), ("S4", "model", "animal")]
    assert subjects[0].bbox == DETECTED[0].bbox  # a match keeps the detector's box
    assert subjects[2].bbox == NEW and subjects[2].crop == "s3.jpg"
    assert subjects[3].bbox == [0.92, 0.0, 1.0, 0.4] and subjects[3].crop == "s4.jpg"
    # S3 -> S1 (matched), S4 -> S3 (new), S5 -> S3 (duplicate of S4), S7 -> S4 (new)
    assert [(a["id"], a["subject"]) for a in out["attributes"]] == [
        ("A1", "S1"), ("A2", "S3"), ("A3", "S3"), ("A4", "S4")]
    assert [(r["subject"], r["object"]) for r in out["relations"]] == [("S1", "S3"),
                                                                       ("S3", "S4")]
    assert out["relational_caption"] == "{S1} wears {A1}, {S3} wears {A2} and looks at {S4}"
    assert out["names"] == {"S3": "the guide"}  # the dropped S6 is gone
    assert any("S5 repeats" in w for w in out["ground_warnings"])
    assert any(w.startswith("model_subject_dropped: S6 lies outside")
               for w in out["ground_warnings"])
    P.check_groups(out["attributes"], subjects)
    P.check_relations(out["relations"], subjects, out["attributes"])
    P.check_relational_caption(out["relational_caption"], subjects, out["attributes"],
                               out["relations"])


def test_a_reference_to_a_rejected_or_unlisted_subject_is_invalid():
    part = {"subjects": [{"id": "S3", "bbox": OUTSIDE}],
            "attributes": [{"id": "A1", "subject": "S3", "text": "hat", "category": "other",
                            "predicate": "wears"}], "relations": [], "relational_caption": ""}
    with pytest.raises(P.InvalidAnswer, match="subject S3, whose box lies outside the image"):
        G.ground_answer(part, _ctx())
    part["subjects"] = []
    with pytest.raises(P.InvalidAnswer, match="'S3', which is neither a detected"):
        G.ground_answer(part, _ctx())
    part["attributes"] = []
    part["relational_caption"] = "{S9} waves"  # a placeholder counts as a reference too
    with pytest.raises(P.InvalidAnswer, match="'S9'"):
        G.ground_answer(part, _ctx())
    with pytest.raises(P.InvalidAnswer, match="listed twice"):
        G.ground_answer({"subjects": [{"id": "S3", "bbox": NEW}, {"id": "s3", "bbox": NEW}]},
                        _ctx())


def test_restated_detected_ids_and_face_boxes():
    person = Subject(id="S1", kind="person", bbox=[0.1, 0.1, 0.5, 0.9],
                     face_bbox=[0.2, 0.12, 0.35, 0.3])
    got = G.ground_subjects([{"id": "S1", "bbox": [0.11, 0.1, 0.5, 0.88]},
                             {"kind": "face", "bbox": [0.21, 0.12, 0.35, 0.31]}],
                            _ctx([person]))
    assert [(s.id, s.source) for s in got.subjects] == [("S1", "both")]
    got = G.ground_subjects([{"id": "S1", "bbox": [0.7, 0.1, 0.9, 0.5]}], _ctx([person]))
    assert got.subjects[0].source == "detector" and got.mapping == {"S1": "S1"}
    assert "does not match" in got.warnings[0]


def test_clip_boxes_match_track_points_of_their_frame():
    tracked = Subject(id="S1", kind="person", bbox=[0.1, 0.1, 0.4, 0.9], frame=0,
                      track=[TrackPoint(frame=0, bbox=[0.1, 0.1, 0.4, 0.9]),
                             TrackPoint(frame=3, bbox=[0.5, 0.1, 0.8, 0.9])])
    images = [G.SentImage(0, 160, 120), G.SentImage(3, 160, 120)]
    got = G.ground_subjects([{"id": "S2", "bbox": [0.5, 0.1, 0.8, 0.9], "image": 2}],
                            _ctx([tracked], images))
    assert [(s.id, s.source) for s in got.subjects] == [("S1", "both")]
    got = G.ground_subjects([{"id": "S2", "bbox": [0.5, 0.1, 0.8, 0.9], "image": 1}],
                            _ctx([tracked], images))
    assert [(s.id, s.frame) for s in got.subjects] == [("S1", 0), ("S2", 0)]


def test_model_mode_numbers_from_s1_and_unnamed_boxes_get_ids():
    got = G.ground_subjects([{"bbox": NEW}, {"id": "S9", "bbox": SHIFTED},
                             {"bbox": [0.425, 0.3, 0.53, 0.8]}], _ctx([], mode="model"))
    assert [(s.id, s.source, s.crop) for s in got.subjects] == [
        ("S1", "model", "s1.jpg"), ("S2", "model", "s2.jpg")]
    assert got.mapping == {"S9": "S2"}


def test_ground_answers_may_be_a_bare_qwen_list():
    text = '```json\n[{"bbox_2d": [10, 20, 60, 110], "label": "person"}]\n```'
    part = P.parse_step("ground", text)
    assert part["subjects"][0]["bbox_2d"] == [10, 20, 60, 110]
    assert part["subjects"][0]["kind"] == "person"
    with pytest.raises(P.InvalidAnswer, match="caption"):  # a single answer is an object
        P.parse_step("single", text, True)
    one = P.parse_step("ground", '{"bbox_2d": [1, 2, 30, 40], "label": "man"}')
    assert one["subjects"][0]["bbox_2d"] == [1, 2, 30, 40]
    with pytest.raises(P.InvalidAnswer, match="no JSON object"):
        P.parse_step("ground", "I see two people.")
    with pytest.raises(P.InvalidAnswer, match="needs a 'bbox'"):
        P.parse_step("ground", '{"subjects": [{"id": "S1", "kind": "person"}]}')
    assert "subjects" in P.json_schema("single", True)["properties"]
    assert "subjects" not in P.json_schema("single")["properties"]


def test_crops_are_cut_from_the_stored_frame():
    sample = draft(0)
    subjects = [*DETECTED, Subject(id="S3", kind="person", bbox=[0.5, 0.25, 0.75, 0.75],
                                   source="model", crop="s3.jpg")]
    crops = G.model_crops(sample.frames, subjects)
    assert list(crops) == ["s3.jpg"]  # only the model's subjects: the detector cropped its own
    crop = cv2.imdecode(np.frombuffer(crops["s3.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape[:2] == (72, 48)  # 40 x 60 px of the 160 x 120 frame, plus 10% margins


# ---- prompts and spec --------------------------------------------------------------------


def test_v1_prompts_are_untouched_and_v2_adds_the_subject_listing():
    v1, v2 = PromptSet("v1"), PromptSet("v2")
    assert set(v1.texts) == set(PROMPT_NAMES) and not v1.can_ground
    assert v2.can_ground
    for name in ("caption", "relcaption", "retry", "leak"):
        assert v2.texts[name] == v1.texts[name]
    for name in ("single", "groups", "relations"):  # v2 lists the relation vocabulary
        assert "$predicates" in v2.texts[name] and "$predicates" not in v1.texts[name]
    images, positions = sample_images(draft(2), marks="boxes", frames_per_request=1,
                                      max_side=160)
    kw = {"subjects": DETECTED, "state": {}, "marks": "boxes"}
    plain = v1.request("single", images, positions, **kw)
    assert v1.request("single", images, positions, ground=True, **kw).messages == plain.messages
    grounded = v2.request("single", images, positions, ground=True, **kw).messages[1]
    text = grounded["content"][-1]["text"]
    assert '"subjects"' in text and '{"id": "S3"' in text and "$" not in text
    not_grounded = v2.request("single", images, positions, **kw).messages[1]
    assert '"subjects"' not in not_grounded["content"][-1]["text"]


def test_spec_resolves_the_prompt_version_from_the_subjects_mode():
    base = {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    assert OpenAIAnnotate.model_validate(base).prompt_version == "v2"
    assert OpenAIAnnotate.model_validate(base).subjects == "both"
    assert OpenAIAnnotate.model_validate({**base, "subjects": "detector"}).prompt_version == "v1"
    pinned = OpenAIAnnotate.model_validate({**base, "prompt_version": "v1"})
    assert pinned.subjects == "detector"  # an old spec that pins v1 means what it meant
    with pytest.raises(ValueError, match="cannot ask the model for subjects"):
        OpenAIAnnotate.model_validate({**base, "prompt_version": "v1", "subjects": "model"})

    def digest(**annotate):
        spec = {"name": "x", "sources": [{"path": "in"}], "annotate": {**base, **annotate}}
        return parse_spec(spec).content_hash()

    assert digest() != digest(subjects="model") != digest(subjects="detector")
    assert digest() == digest(subjects="both", prompt_version="v2")


# ---- end to end against the chat server ---------------------------------------------------


@pytest.fixture()
def server():
    with ChatServer() as srv:
        yield srv


def _run(srv: ChatServer, samples, **over):
    cfg = {"backend": "openai", "base_url": srv.base_url, "model": "test-vlm",
           "backoff_s": 0.01, "timeout_s": 5.0, **over}
    ann = OpenAIAnnotator(OpenAIAnnotate.model_validate(cfg))
    ann.setup()
    try:
        return ann.annotate(samples)
    finally:
        ann.teardown()


def _owners(ann) -> list[str]:
    """Who each attribute belongs to (its grouping relation), in attribute order."""
    owner = {r.object: r.subject for r in ann.relations}
    return [owner[a.id] for a in ann.attributes]


def _user_text(body) -> str:
    return "\n".join(p["text"] for m in body["messages"] if isinstance(m["content"], list)
                     for p in m["content"] if p["type"] == "text")


def test_single_answer_with_good_shifted_outside_and_duplicate_boxes(server):
    listed = [{"id": "S3", "kind": "person", "bbox": MATCH_S1},
              {"id": "S4", "kind": "person", "bbox": NEW},
              {"id": "S5", "kind": "person", "bbox_2d": NEW_PIXELS},
              {"id": "S6", "kind": "person", "bbox": OUTSIDE},
              {"id": "S7", "kind": "person", "bbox": SHIFTED}]
    server.responder = lists_subjects(listed, refer={"S3", "S4", "S5", "S7"})
    [ann] = _run(server, [draft(2)])
    assert isinstance(ann, Annotation), ann
    assert [(s.id, s.source) for s in ann.subjects] == [
        ("S1", "both"), ("S2", "detector"), ("S3", "model"), ("S4", "model")]
    assert ann.subjects[3].bbox == [0.92, 0.0, 1.0, 0.4]
    assert sorted(ann.members) == ["s3.jpg", "s4.jpg"]
    owners = _owners(ann)
    assert owners == ["S1", "S2", "S1", "S3", "S3", "S4"]  # model ids renamed to final ones
    assert {a.bbox[0] for a, o in zip(ann.attributes, owners, strict=True) if o == "S3"} == {NEW[0]}
    assert any("S6 lies outside" in w for w in ann.warnings)
    assert ann.provenance.prompt_version.startswith("v2-")
    [req] = server.requests
    assert '{"id": "S3"' in _user_text(req["body"])  # next id after the detector's S1, S2
    schema = req["body"]["response_format"]["json_schema"]["schema"]
    assert "subjects" in schema["properties"]


def test_a_referenced_box_outside_the_frame_is_asked_again(server):
    server.script.append(Reply(json.dumps(good_answer(
        {"messages": [{"role": "user", "content": "Step: single\nS1: person\nS2: person"}]},
        [{"id": "S3", "kind": "person", "bbox": OUTSIDE}]))))
    server.responder = lists_subjects([{"id": "S3", "kind": "person", "bbox": NEW}])
    [ann] = _run(server, [draft(2)])
    assert isinstance(ann, Annotation)
    assert "whose box lies outside the image" in _user_text(server.requests[1]["body"])
    assert [s.source for s in ann.subjects] == ["detector", "detector", "model"]

    server.responder = lists_subjects([{"id": "S3", "kind": "person", "bbox": OUTSIDE}])
    [fail] = _run(server, [draft(2)])
    assert isinstance(fail, AnnotationFailure) and fail.reason == "invalid_output"
    assert "S3" in fail.detail and fail.attempts == 2


def test_model_mode_ignores_the_detector_and_maps_resized_pixels(server):
    server.responder = lists_subjects([{"id": "S1", "label": "person",
                                        "bbox_2d": [32, 12, 48, 36]}])
    sample = draft(2)
    [ann] = _run(server, [sample], subjects="model", image_max_side=64)
    assert isinstance(ann, Annotation), ann
    assert [(s.id, s.source, s.bbox) for s in ann.subjects] == [
        ("S1", "model", [0.5, 0.25, 0.75, 0.75])]
    text = _user_text(server.requests[0]["body"])
    assert "(none detected)" in text and '{"id": "S1"' in text
    assert ann.provenance.prompt_version.endswith("/single/subjects=model")


def test_staged_mode_grounds_first_and_later_steps_see_the_merged_subjects(server):
    server.responder = lists_subjects([{"id": "S3", "kind": "person", "bbox": NEW}])
    [ann] = _run(server, [draft(2)], prompt_mode="staged")
    assert isinstance(ann, Annotation), ann
    steps = [r["body"]["response_format"]["json_schema"]["name"] for r in server.requests]
    assert steps == ["relshard_ground", "relshard_caption", "relshard_groups",
                     "relshard_relations", "relshard_relcaption"]
    groups = server.requests[2]["body"]
    assert "S3: person" in _user_text(groups)
    first_image = [p["image_url"]["url"] for r in (server.requests[0], server.requests[2])
                   for m in r["body"]["messages"] if isinstance(m["content"], list)
                   for p in m["content"] if p["type"] == "image_url"]
    assert first_image[0] != first_image[1]  # S3 is drawn on the frame the later steps see
    assert _owners(ann) == ["S1", "S2", "S3"]
    assert ann.subjects[2].source == "model" and "s3.jpg" in ann.members
    assert "{S3}" in ann.relational_caption


def test_staged_crops_marks_send_the_model_subjects_crop(server):
    server.responder = lists_subjects([{"id": "S3", "kind": "person", "bbox": NEW}])
    [ann] = _run(server, [draft(2)], prompt_mode="staged", subject_marks="crops")
    assert isinstance(ann, Annotation), ann
    urls = [p["image_url"]["url"] for m in server.requests[2]["body"]["messages"]
            if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"]
    assert urls[-1] == "data:image/jpeg;base64," + base64.b64encode(
        ann.members["s3.jpg"]).decode()


def test_detector_mode_asks_exactly_as_before(server):
    [ann] = _run(server, [draft(2)], subjects="detector")
    assert isinstance(ann, Annotation) and ann.subjects is None and ann.members == {}
    [req] = server.requests
    assert "subjects" not in req["body"]["response_format"]["json_schema"]["schema"][
        "properties"]
    assert '"subjects"' not in _user_text(req["body"])
    assert ann.provenance.prompt_version.startswith("v1-")
    assert ann.provenance.prompt_version.endswith("/single")


def test_written_record_has_sources_and_crop_members(server):
    from relshard.shards.members import sample_members

    server.responder = lists_subjects([{"id": "S3", "kind": "person", "bbox": NEW}])
    sample = draft(2)
    for s in sample.subjects:  # as the detector leaves them: cropped
        s.crop = f"{s.id.lower()}.jpg"
        sample.add_member(s.crop, b"detector-crop")
    item = WorkItem(input=InputRef("k", "k.jpg", "image"), samples=[sample])
    stage = AnnotateStage(OpenAIAnnotate.model_validate(
        {"backend": "openai", "base_url": server.base_url, "model": "test-vlm"}))
    [item] = stage.process_batch([item])
    stage.teardown()
    item = WorkItem.from_bytes(item.to_bytes())  # as between Ray stages
    assert not item.rejected
    members = sample_members(item, item.samples[0])
    record = SampleRecord.model_validate_json(dict(members.members)["k.json"])
    assert [(s.id, s.source, s.crop) for s in record.subjects] == [
        ("S1", "detector", "s1.jpg"), ("S2", "detector", "s2.jpg"), ("S3", "model", "s3.jpg")]
    crops = dict(members.members)
    assert crops["k.s1.jpg"] == b"detector-crop"
    assert cv2.imdecode(np.frombuffer(crops["k.s3.jpg"], np.uint8), cv2.IMREAD_COLOR) is not None
    assert _owners(record) == ["S1", "S2", "S3"]


def test_model_mode_replaces_detector_crops(server):
    server.responder = lists_subjects([{"id": "S1", "kind": "person", "bbox": NEW}])
    sample = draft(2)
    for s in sample.subjects:
        s.crop = f"{s.id.lower()}.jpg"
        sample.add_member(s.crop, b"detector-crop")
    item = WorkItem(input=InputRef("k", "k.jpg", "image"), samples=[sample])
    stage = AnnotateStage(OpenAIAnnotate.model_validate(
        {"backend": "openai", "base_url": server.base_url, "model": "test-vlm",
         "subjects": "model"}))
    [item] = stage.process_batch([item])
    stage.teardown()
    [sample] = item.samples
    assert [(s.id, s.source) for s in sample.subjects] == [("S1", "model")]
    assert list(sample.members) == ["s1.jpg"] and sample.members["s1.jpg"] != b"detector-crop"
