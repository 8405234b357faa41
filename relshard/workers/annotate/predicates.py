"""The vocabulary of relation predicates, and how a model's predicate is mapped onto it.

A relation's predicate must be a word of a known, closed vocabulary of relation
verbs (``wears``, ``holds``, ``left_of``, ...): free text there would let a model
carry attribute words past the anonymization check (``wears_red_scarf``). The
default set (:data:`DEFAULT_PREDICATES`) holds every predicate relshard's own
annotators emit; a spec replaces it (``annotate.predicates.vocabulary``) or adds to
it (``extra``).

:meth:`PredicateVocabulary.normalize` maps what a model wrote onto the vocabulary:
case and separators always (``Left-Of`` -> ``left_of``); with
``on_unknown: normalize`` (the default) also articles and auxiliaries dropped and
inflections and synonyms matched by stem (``is holding`` -> ``holds``, ``held`` ->
``holds``, ``wearing a`` -> ``wears``, ``to the left of`` -> ``left_of``,
``beside`` -> ``next_to``). What still matches nothing raises
:class:`~relshard.workers.annotate.parsing.InvalidAnswer`: the model is asked once
more, then the input is rejected as ``invalid_output`` with its raw answer kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from relshard.workers.annotate.parsing import InvalidAnswer
from relshard.workers.annotate.stems import stem

if TYPE_CHECKING:
    from relshard.spec import PredicateSpec

OnUnknown = Literal["normalize", "reject"]

DEFAULT_PREDICATES: tuple[str, ...] = (
    # a subject and its attributes (the heuristic backend emits wears, has)
    "wears", "has", "holds", "carries", "uses", "touches", "owns", "eats", "drinks",
    "reads", "pushes", "pulls", "throws", "catches", "kicks", "drives", "rides",
    "plays_with", "points_at", "looks_at", "watches", "faces", "follows",
    # between subjects
    "talks_to", "hands", "gives", "takes", "hugs", "kisses", "helps", "greets",
    "shakes_hands_with", "walks_with", "dances_with", "sits_on", "stands_on", "lies_on",
    "leans_on", "sits_next_to", "stands_next_to", "stands_behind",
    # positions (the heuristic backend emits left_of, right_of, next_to)
    "left_of", "right_of", "next_to", "above", "below", "in_front_of", "behind", "near",
    "inside", "on",
    # event windows (the events stage emits has_type, excites)
    "has_type", "excites",
)

SYNONYMS: dict[str, str] = {
    "beside": "next_to", "besides": "next_to", "alongside": "next_to", "by": "near",
    "close_to": "near", "nearby": "near", "near_to": "near",
    "under": "below", "underneath": "below", "beneath": "below",
    "over": "above", "on_top_of": "above", "in_front": "in_front_of", "before": "in_front_of",
    "left": "left_of", "right": "right_of", "in": "inside", "within": "inside",
    "dressed_in": "wears", "has_on": "wears", "puts_on": "wears",
    "possesses": "has", "grips": "holds", "grasps": "holds", "clutches": "holds",
    "speaks_to": "talks_to", "speaks_with": "talks_to", "talks_with": "talks_to",
    "chats_with": "talks_to", "gazes_at": "looks_at", "stares_at": "looks_at",
    "sees": "looks_at", "looks": "looks_at", "embraces": "hugs", "passes": "hands",
    "passes_to": "hands", "hands_to": "hands", "hands_over": "hands", "gives_to": "gives",
    "rides_on": "rides", "sits_in": "sits_on", "sits_beside": "sits_next_to",
    "stands_beside": "stands_next_to", "stands_by": "stands_next_to",
    "plays": "plays_with", "points_to": "points_at", "is_of_type": "has_type",
    "triggers": "excites",
}

ARTICLES = frozenset({"a", "an", "the"})
AUXILIARIES = frozenset({"is", "are", "am", "was", "were", "be", "being", "been"})
_LEADING = ("to", "on", "at")  # "is to the left of" -> "left_of"
_SEPARATORS = re.compile(r"[\s\-./]+")
_NOT_WORD = re.compile(r"[^a-z0-9_]")
PREDICATE_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def tidy(raw: str) -> str:
    """Lowercase snake_case: ``"Left-Of "`` -> ``"left_of"``."""
    text = _SEPARATORS.sub("_", raw.strip().lower())
    return "_".join(t for t in _NOT_WORD.sub("", text).split("_") if t)


def _key(tokens: Iterable[str]) -> tuple[str, ...]:
    return tuple(stem(t) for t in tokens)


class PredicateVocabulary:
    """A closed set of snake_case predicates and the mapping of model output onto it."""

    def __init__(self, words: Iterable[str] = DEFAULT_PREDICATES,
                 on_unknown: OnUnknown = "normalize") -> None:
        self.words = frozenset(tidy(w) for w in words if tidy(w))
        self.on_unknown = on_unknown
        index: dict[tuple[str, ...], str] = {}
        for phrase, target in SYNONYMS.items():
            if target in self.words:
                index[_key(phrase.split("_"))] = target
        for word in sorted(self.words):  # vocabulary entries win over synonyms
            index[_key(word.split("_"))] = word
        self._index = index
        self.stems = frozenset(stem(t) for w in self.words for t in w.split("_"))

    @classmethod
    def from_spec(cls, spec: PredicateSpec | None) -> PredicateVocabulary:
        """From ``annotate.predicates`` (a ``PredicateSpec``, or None for the defaults)."""
        if spec is None:
            return cls()
        base = DEFAULT_PREDICATES if spec.vocabulary is None else spec.vocabulary
        return cls([*base, *spec.extra], spec.on_unknown)

    def normalize(self, raw: str) -> str:
        """The vocabulary word ``raw`` stands for; :class:`InvalidAnswer` when none."""
        word = tidy(raw)
        if word in self.words:
            return word
        if self.on_unknown == "normalize":
            tokens = [t for t in word.split("_") if t not in ARTICLES | AUXILIARIES]
            for cand in self._candidates(tokens):
                found = self._index.get(_key(cand))
                if found is not None:
                    return found
        raise InvalidAnswer(
            f"predicate {raw!r} is not a known relation; use one of: "
            f"{', '.join(sorted(self.words))}")

    @staticmethod
    def _candidates(tokens: list[str]) -> list[list[str]]:
        out = [tokens] if tokens else []
        if len(tokens) > 1 and tokens[0] in _LEADING:
            out.append(tokens[1:])
        if len(tokens) > 1 and tokens[-1] == "to":  # "gives to" -> "gives"
            out.append(tokens[:-1])
        return out

    def normalize_answer(self, part: dict[str, Any]) -> None:
        """Normalize, in place, the predicates of a parsed answer's attributes and relations."""
        for item in [*(part.get("attributes") or []), *(part.get("relations") or [])]:
            if "predicate" in item:
                item["predicate"] = self.normalize(str(item["predicate"]))


DEFAULT_VOCABULARY = PredicateVocabulary()
