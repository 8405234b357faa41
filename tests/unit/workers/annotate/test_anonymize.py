"""The leak check cannot be talked around: predicates, plurals, case and punctuation."""

from __future__ import annotations

import asyncio
import json

import pytest

from relshard.spec import OpenAIAnnotate
from relshard.workers.annotate.anonymize import content_words, find_leaks
from relshard.workers.annotate.base import Annotation, AnnotationFailure
from relshard.workers.annotate.engine import AnnotationEngine
from relshard.workers.annotate.stems import stem_keys
from tests.unit.workers.annotate.helpers import draft

ATTRS = [{"id": "A1", "text": "red scarf"}, {"id": "A2", "text": "blue denim jacket"}]


# --- the loopholes of issue #11 -----------------------------------------------------------

def test_a_predicate_does_not_whitelist_attribute_words() -> None:
    leaks = find_leaks("{S1} wears red scarf", ATTRS, predicates=["wears_red_scarf"])
    assert leaks == ["red", "scarf", "predicate wears_red_scarf"]


def test_a_predicate_holding_an_attribute_word_is_itself_a_leak() -> None:
    assert find_leaks("{S1} wears {A1}", ATTRS, predicates=["wears_red_scarf"]) == [
        "predicate wears_red_scarf"]
    assert find_leaks("{S1} wears {A1}", ATTRS, predicates=["wears_scarves"]) == [
        "predicate wears_scarves"]
    # relation words stay relation words, whatever the attributes say
    assert find_leaks("{S1} wears {A1}", ATTRS, predicates=["wears", "left_of"]) == []


@pytest.mark.parametrize(("caption", "leaked"), [
    ("{S1} wears scarves", ["scarves"]),
    ("{S1} wears Scarf.", ["scarf"]),
    ("{S1} wears a SCARF, and {S2} a Jacket!", ["scarf", "jacket"]),
    ("{S1}'s scarf", ["scarf"]),
    ("{S2} wears jackets of denim", ["denim", "jackets"]),
    ("{S1} wears a knotted scarf-like thing", ["scarf"]),
])
def test_inflected_capitalised_and_punctuated_words_leak(caption: str, leaked: list[str]) -> None:
    assert sorted(find_leaks(caption, ATTRS)) == sorted(leaked)


def test_irregular_plurals_are_the_same_word() -> None:
    assert find_leaks("{S1} holds two knives", [{"text": "kitchen knife"}]) == ["knives"]
    assert find_leaks("{S1} wears a scarf", [{"text": "two scarves"}]) == ["scarf"]
    assert find_leaks("{S1} hugs the women", [{"text": "woman"}]) == ["women"]
    assert stem_keys("scarves") & stem_keys("scarf")


def test_stems_only_no_fuzzy_matching() -> None:
    assert find_leaks("{S1} wears a reddish {A1}", ATTRS) == []


def test_names_are_compared_by_stem_too() -> None:
    assert find_leaks("{S1}, one of the Chefs, holds {A1}", ATTRS, names=["the chef"]) == [
        "the chef"]
    assert find_leaks("Alice's friend {S1} holds {A1}", ATTRS, names=["Alice"]) == ["Alice"]
    assert find_leaks("{S1} holds {A1}", ATTRS, names=["Alice", ""]) == []


# --- what must still pass ---------------------------------------------------------------

@pytest.mark.parametrize("caption", [
    "{S1} wears {A1} and stands left of {S2}",
    "{S1} wears {A1}; {S1} is left of {S2}.",
    "{S1} is holding {A1} while looking at {S2}",
    "{S2} hands {A2} to {S1}, who stands next to {S2}",
    "",
])
def test_legit_captions_pass(caption: str) -> None:
    assert find_leaks(caption, ATTRS, predicates=["wears", "left_of", "holds", "hands"]) == []


def test_heuristic_captions_pass() -> None:
    attrs = [{"text": "red upper-body clothing"}, {"text": "blue lower-body clothing"},
             {"text": "brown hair"}]
    caption = "{S1} wears {A1}; {S1} wears {A2}; {S1} has {A3}; {S1} is left of {S2}."
    assert find_leaks(caption, attrs, predicates=["wears", "has", "left_of"]) == []


def test_relation_words_are_not_content_words() -> None:
    assert content_words("a red scarf held in the left hand") == {"red", "scarf"}
    assert content_words("wears, wearing, holds") == set()


# --- through the engine: the loophole answer is re-asked, not passed ---------------------

class _Script:
    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)

    async def complete(self, request: object, schema: object) -> str:
        return self.answers.pop(0)


def _answer(caption: str, predicate: str = "wears") -> str:
    return json.dumps({
        "caption": "A person in a red scarf.",
        "attributes": [{"id": "A1", "subject": "S1", "text": "red scarf", "category": "clothing",
                        "predicate": predicate}],
        "relations": [], "relational_caption": caption})


def _annotate(answers: list[str], **over: object) -> Annotation | AnnotationFailure:
    cfg = OpenAIAnnotate.model_validate({"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                         "model": "m", **over})
    engine = AnnotationEngine(cfg, _Script(answers), backend="openai", model="m", params={})
    return asyncio.run(engine.annotate_one(draft(1)))


def test_engine_reasks_a_plural_leak_and_records_the_fix() -> None:
    ann = _annotate([_answer("{S1} wears red scarves"), _answer("{S1} wears {A1}")])
    assert isinstance(ann, Annotation)
    assert ann.warnings == ["anonymization_leak_fixed: 'red', 'scarves'"]
    assert ann.relational_caption == "{S1} wears {A1}"


def test_engine_rejects_a_predicate_loophole_even_in_the_vocabulary() -> None:
    # a spec may add a predicate that holds an attribute word: it is still a leak
    ann = _annotate([_answer("{S1} wears_scarf {A1}", predicate="wears_scarf")] * 2,
                    predicates={"extra": ["wears_scarf"]}, on_leak="reject")
    assert isinstance(ann, AnnotationFailure) and ann.reason == "anonymization_leak"
    assert "predicate wears_scarf" in ann.detail
