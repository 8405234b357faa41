"""The relation vocabulary: defaults, normalisation by stem and synonym, unknown predicates."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from relshard.spec import OpenAIAnnotate, PredicateSpec
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.captions import PREDICATE_PHRASES
from relshard.workers.annotate.engine import AnnotationEngine
from relshard.workers.annotate.parsing import InvalidAnswer
from relshard.workers.annotate.predicates import (
    DEFAULT_PREDICATES,
    DEFAULT_VOCABULARY,
    PredicateVocabulary,
    tidy,
)
from tests.unit.workers.annotate.helpers import draft


def test_the_default_set_holds_what_relshard_itself_emits() -> None:
    emitted = {"wears", "has", "left_of", "right_of", "next_to",  # heuristic backend
               "has_type", "excites",  # events stage
               "stands_next_to", "hands", "holds", "looks_at", "talks_to", "behind", "near"}
    assert emitted | set(PREDICATE_PHRASES) <= set(DEFAULT_PREDICATES)
    assert all(tidy(p) == p for p in DEFAULT_PREDICATES)
    for p in DEFAULT_PREDICATES:  # every word of the vocabulary is its own normal form
        assert DEFAULT_VOCABULARY.normalize(p) == p


@pytest.mark.parametrize(("raw", "normal"), [
    ("wears", "wears"), ("Wears", "wears"), ("Left-Of", "left_of"), ("left of", "left_of"),
    ("wearing", "wears"), ("is wearing a", "wears"), ("wore", "wears"),
    ("is holding", "holds"), ("held", "holds"), ("is_holding", "holds"), ("carrying", "carries"),
    ("to the left of", "left_of"), ("is right of", "right_of"), ("in front of", "in_front_of"),
    ("is standing next to", "stands_next_to"), ("stood on", "stands_on"),
    ("sitting on", "sits_on"), ("looking at", "looks_at"), ("Talking To", "talks_to"),
    ("speaking with", "talks_to"), ("beside", "next_to"), ("underneath", "below"),
    ("gives to", "gives"), ("handing", "hands"), ("had", "has"), ("have", "has"),
    ("rode", "rides"), ("hugging", "hugs"), ("triggers", "excites"),
])
def test_inflections_and_synonyms_are_normalised(raw: str, normal: str) -> None:
    assert DEFAULT_VOCABULARY.normalize(raw) == normal


@pytest.mark.parametrize("raw", ["wears_red_scarf", "red scarf", "scarves", "is", "", "the",
                                 "dances wildly"])
def test_unknown_predicates_are_invalid_answers(raw: str) -> None:
    with pytest.raises(InvalidAnswer, match="not a known relation; use one of: .*wears"):
        DEFAULT_VOCABULARY.normalize(raw)


def test_reject_mode_forgives_only_case_and_separators() -> None:
    strict = PredicateVocabulary(on_unknown="reject")
    assert strict.normalize(" Left-Of ") == "left_of"
    for raw in ("wearing", "is holding", "beside"):
        with pytest.raises(InvalidAnswer):
            strict.normalize(raw)


def test_the_vocabulary_comes_from_the_spec() -> None:
    assert PredicateVocabulary.from_spec(None).words == DEFAULT_VOCABULARY.words
    extra = PredicateVocabulary.from_spec(PredicateSpec(extra=["juggles"]))
    assert extra.normalize("juggling") == "juggles" and extra.normalize("holds") == "holds"
    own = PredicateVocabulary.from_spec(PredicateSpec(vocabulary=["owns", "left_of"]))
    assert own.words == {"owns", "left_of"}
    assert own.normalize("to the left of") == "left_of"
    with pytest.raises(InvalidAnswer):
        own.normalize("wears")  # not in this vocabulary; nor is a synonym's target
    with pytest.raises(InvalidAnswer):
        own.normalize("beside")


def test_spec_checks_predicates_and_hashes_them() -> None:
    from pydantic import ValidationError

    from relshard.spec import parse_spec

    with pytest.raises(ValidationError):
        PredicateSpec(extra=["Juggles"])
    with pytest.raises(ValidationError):
        PredicateSpec(vocabulary=[])
    base = {"name": "x", "sources": [{"path": "in"}],
            "annotate": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1",
                         "model": "m"}}

    def digest(**annotate: Any) -> str:
        return parse_spec({**base, "annotate": {**base["annotate"], **annotate}}).content_hash()

    assert digest() != digest(predicates={"extra": ["juggles"]})
    assert digest() != digest(predicates={"on_unknown": "reject"})


# --- through the engine: normalised into the record, or re-asked then rejected -------------

class _Script:
    """A ChatClient that answers from a list, in order, and records the requests."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.requests: list[Any] = []

    async def complete(self, request: Any, schema: dict[str, Any]) -> str:
        self.requests.append(request)
        return self.answers.pop(0)


def _answer(predicate: str, attr_predicate: str = "wears") -> str:
    return json.dumps({
        "caption": "Two people.",
        "attributes": [{"id": "A1", "subject": "S1", "text": "red scarf", "category": "clothing",
                        "predicate": attr_predicate}],
        "relations": [{"subject": "S1", "predicate": predicate, "object": "S2"}],
        "relational_caption": "{S1} wears {A1} and stands left of {S2}",
    })


def _engine(answers: list[str], **over: Any) -> tuple[AnnotationEngine, _Script]:
    cfg = OpenAIAnnotate.model_validate({"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                         "model": "m", **over})
    client = _Script(answers)
    return AnnotationEngine(cfg, client, backend="openai", model="m", params={}), client


def _run(engine: AnnotationEngine) -> Annotation | AnnotationFailure:
    return asyncio.run(engine.annotate_one(draft(2)))


def test_the_record_holds_normalised_predicates() -> None:
    engine, client = _engine([_answer("is to the left of", attr_predicate="Wearing")])
    ann = _run(engine)
    assert isinstance(ann, Annotation), ann
    assert {(r.subject, r.predicate, r.object) for r in ann.relations} == {
        ("S1", "wears", "A1"), ("S1", "left_of", "S2")}
    assert ann.warnings == [] and len(client.requests) == 1


def test_an_unknown_predicate_is_reasked_then_fixed() -> None:
    engine, client = _engine([_answer("wears_red_scarf"), _answer("left_of")])
    ann = _run(engine)
    assert isinstance(ann, Annotation)
    assert "left_of" in {r.predicate for r in ann.relations}
    retry = client.requests[1].messages[-1]["content"][0]["text"]
    assert "'wears_red_scarf' is not a known relation" in retry


def test_an_unknown_predicate_twice_is_an_invalid_output_reject_with_the_raw_text() -> None:
    engine, _ = _engine([_answer("wears_red_scarf"), _answer("admires_the_red_scarf")])
    failure = _run(engine)
    assert isinstance(failure, AnnotationFailure)
    assert failure.reason == "invalid_output" and failure.attempts == 2
    assert "admires_the_red_scarf" in (failure.raw_output or "")
    assert "not a known relation" in failure.detail


def test_reject_mode_through_the_engine() -> None:
    engine, _ = _engine([_answer("is left of"), _answer("is left of")],
                        predicates={"on_unknown": "reject"})
    failure = _run(engine)
    assert isinstance(failure, AnnotationFailure) and failure.reason == "invalid_output"


def test_v2_prompts_list_the_spec_vocabulary():
    from relshard.workers.annotate.prompts import PromptSet

    v2 = PromptSet("v2")
    vocab = PredicateVocabulary(["wears", "holds", "left_of"])
    listed = ", ".join(sorted(vocab.words))
    for step in ("single", "groups", "relations"):
        req = v2.request(step, [], [], subjects=[], state={}, marks="boxes",
                         predicates=listed)
        text = req.messages[1]["content"][-1]["text"]
        assert "one of: holds, left_of, wears." in text and "$predicates" not in text
