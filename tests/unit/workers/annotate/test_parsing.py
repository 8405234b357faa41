"""Model answers: tolerant JSON extraction, strict reference checks, leak detection, prompts."""

from __future__ import annotations

import numpy as np
import pytest

from relshard.errors import SpecError
from relshard.record import SampleRecord, SourceInfo, Subject
from relshard.workers.annotate import parsing as P
from relshard.workers.annotate.anonymize import find_leaks
from relshard.workers.annotate.cache import ResponseCache, cache_key
from relshard.workers.annotate.prompts import PromptSet
from relshard.workers.annotate.visual import pick_frames, sample_images
from tests.servers.chat_server import good_answer
from tests.unit.workers.annotate.helpers import draft

SUBJECTS = [Subject(id="S1", kind="person", bbox=[0, 0, 0.4, 1]),
            Subject(id="S2", kind="person", bbox=[0.5, 0, 1, 1])]


@pytest.mark.parametrize("text", [
    '{"caption": "x"}',
    'Sure! Here it is:\n```json\n{"caption": "x"}\n```\nHope this helps.',
    'The answer is {"caption": "x", "note": "a } in a string"} as asked.',
    '```\n{"caption": "x",}\n```',
])
def test_extract_json_forgives_wrapping(text):
    assert P.extract_json(text)["caption"] == "x"


@pytest.mark.parametrize("text", ["no json here", "[1, 2]", '{"caption": '])
def test_extract_json_refuses_non_objects(text):
    with pytest.raises(P.InvalidAnswer, match="no JSON object"):
        P.extract_json(text)


def _single(**over):
    ans = {"caption": "Two people.",
           "attributes": [{"id": "A1", "subject": "S1", "text": "red scarf",
                           "category": "Clothing", "predicate": "wears"}],
           "relations": [{"subject": "S1", "predicate": "hands", "object": "S2"}],
           "relational_caption": "{S1} wears {A1} and hands it to {S2}"}
    ans.update(over)
    return ans


def test_valid_answer_becomes_a_valid_record():
    import json

    part = P.parse_step("single", json.dumps(_single()))
    assert part["attributes"][0]["category"] == "clothing"  # normalized
    P.check_groups(part["attributes"], SUBJECTS)
    P.check_relations(part["relations"], SUBJECTS, part["attributes"])
    attrs, rels = P.to_record_parts(SUBJECTS, part)
    assert attrs[0].bbox == SUBJECTS[0].bbox  # grounded to its subject
    assert [(r.subject, r.predicate, r.object) for r in rels] == [
        ("S1", "wears", "A1"), ("S1", "hands", "S2")]
    SampleRecord(key="k", source=SourceInfo(uri="u", input_key="k", modality="image"),
                 subjects=SUBJECTS, attributes=attrs, relations=rels,
                 relational_caption=part["relational_caption"],
                 provenance={"backend": "openai", "relshard_version": "0"})


@pytest.mark.parametrize(("over", "message"), [
    ({"attributes": [{"id": "A1", "subject": "S9", "text": "hat"}]}, "not a detected subject"),
    ({"attributes": [{"id": "X1", "subject": "S1", "text": "hat"}]}, "must look like A1"),
    ({"attributes": [{"id": "A1", "subject": "S1", "text": "hat"},
                     {"id": "A1", "subject": "S2", "text": "cap"}]}, "used twice"),
    ({"relations": [{"subject": "S1", "predicate": "holds", "object": "A7"}]},
     "not a subject or attribute id"),
    ({"relations": [{"subject": "A1", "predicate": "on", "object": "S1"}]},
     "not a detected subject"),
])
def test_dangling_references_are_invalid(over, message):
    import json

    part = P.parse_step("single", json.dumps(_single(**over)))
    with pytest.raises(P.InvalidAnswer, match=message):
        P.check_groups(part["attributes"], SUBJECTS)
        P.check_relations(part["relations"], SUBJECTS, part["attributes"])


def test_relational_caption_placeholders_are_checked():
    attrs = [{"id": "A1", "subject": "S1", "text": "hat"}]
    with pytest.raises(P.InvalidAnswer, match="name no entity"):
        P.check_relational_caption("{S1} gives {A4} to {S2}", SUBJECTS, attrs, [])
    with pytest.raises(P.InvalidAnswer, match="placeholders like"):
        P.check_relational_caption("a person wears a hat", SUBJECTS, attrs, [])


def test_shape_errors_name_the_field():
    with pytest.raises(P.InvalidAnswer, match="caption"):
        P.parse_step("caption", '{"text": "x"}')


def test_leaks_find_attribute_words_and_names_not_placeholders():
    attrs = [{"id": "A1", "text": "red woollen scarf"}, {"id": "A2", "text": "silver watch"}]
    assert find_leaks("{S1} wears {A1}; {S2} wears {A2}", attrs) == []
    assert find_leaks("{S1} hands the red scarf to {S2}", attrs) == ["red", "scarf"]
    assert find_leaks("Alice hands {A1} to {S2}", attrs, names=["Alice"]) == ["Alice"]
    # a word that is the relation itself is not a leak ("watches" vs "watch" stays whole-word)
    assert find_leaks("{S1} watches {S2}", attrs, predicates=["watches"]) == []


def test_prompts_are_versioned_and_render_subjects():
    prompts = PromptSet("v1")
    assert prompts.version.startswith("v1-")
    req = prompts.request("single", [b"img"], [0], subjects=SUBJECTS, state={}, marks="boxes")
    text = req.messages[1]["content"][-1]["text"]
    assert "S1: person, frame 0, box [0.00, 0.00, 0.40, 1.00]" in text
    assert "{S1}" in text and "$" not in text
    assert good_answer({"messages": req.messages})["attributes"][1]["subject"] == "S2"
    with pytest.raises(SpecError, match="v99"):
        PromptSet("v99")


def test_frames_and_boxes_sent_to_the_model():
    assert pick_frames(3, 4) == [0, 1, 2]
    assert pick_frames(16, 4) == [0, 5, 10, 15]
    sample = draft(2, frames=16)
    sample.subjects[0] = sample.subjects[0].model_copy(update={"frame": 7})
    images, positions = sample_images(sample, marks="boxes", frames_per_request=4, max_side=64)
    assert 7 in positions and len(images) == len(positions)
    import cv2

    boxed = cv2.imdecode(np.frombuffer(images[positions.index(7)], np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(images[positions.index(5)], np.uint8), cv2.IMREAD_COLOR)
    assert max(boxed.shape) == 64
    assert np.abs(boxed.astype(int) - plain.astype(int)).max() > 100  # a box was drawn


def test_cache_is_content_addressed(tmp_path):
    prompts = PromptSet("v1")
    cache = ResponseCache(str(tmp_path / "c"))
    ident = {"model": "m", "params": {"t": 0}}
    req = prompts.request("caption", [b"a"], [0], subjects=[], state={}, marks="boxes")
    other = prompts.request("caption", [b"b"], [0], subjects=[], state={}, marks="boxes")
    key = cache_key(ident, req)
    assert key != cache_key(ident, other)
    assert key != cache_key({"model": "m2", "params": {"t": 0}}, req)
    assert cache.get(key) is None
    cache.put(key, '{"caption": "x"}')
    assert ResponseCache(f"file://{tmp_path / 'c'}").get(key) == '{"caption": "x"}'
    mem = ResponseCache("memory://relshard-test-cache")
    mem.put(key, "y")
    assert mem.get(key) == "y"
