"""Caption templates: the plain caption and the anonymized relational caption.

The plain caption names people by position ("the person on the left") and their
attributes by text. The relational caption keeps only the relational logic: every
entity is a placeholder (``{S1}``, ``{A2}``) and the only words are predicate
phrases, e.g. ``{S1} wears {A1}; {S1} is left of {S2}.``, so no attribute word
leaks into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relshard.record import Relation

NUMBER_WORDS = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
            "ninth", "tenth")

PREDICATE_PHRASES = {
    "wears": "wears",
    "has": "has",
    "left_of": "is left of",
    "right_of": "is right of",
    "next_to": "is next to",
}


@dataclass
class SubjectView:
    """What the plain caption says about one subject."""

    id: str
    placement: str  # "in the centre of the frame"
    size: str  # "seen close up"
    wears: list[str] = field(default_factory=list)  # attribute texts
    has: list[str] = field(default_factory=list)


@dataclass
class PairView:
    """A sentence-worthy fact about two subjects (by id)."""

    first: str
    second: str
    next_to: bool = False
    larger: str | None = None  # id of the clearly larger of the two, if any


def count_phrase(n: int) -> str:
    """"One person." / "Two people." / "21 people."."""
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    noun = "person" if n == 1 else "people"
    return f"{word[0].upper()}{word[1:]} {noun}."


def references(n: int) -> list[str]:
    """How the caption refers to each of ``n`` subjects ordered left to right."""
    if n == 1:
        return ["the person"]
    if n == 2:
        return ["the person on the left", "the person on the right"]
    if n == 3:
        return ["the person on the left", "the person in the centre", "the person on the right"]
    return [
        f"the {ORDINALS[i]} person from the left" if i < len(ORDINALS)
        else f"person number {i + 1} from the left"
        for i in range(n)
    ]


def _join(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _subject_sentence(ref: str, view: SubjectView, single: bool) -> str:
    where = f"{view.placement} and {view.size}" if single else view.size
    clauses = []
    if view.wears:
        clauses.append("wears " + _join(view.wears))
    if view.has:
        clauses.append("has " + _join(view.has))
    if not clauses:
        return _sentence(f"{ref} is {where}")
    return _sentence(f"{ref}, {where}, " + " and ".join(clauses))


def plain_caption(views: Sequence[SubjectView], pairs: Sequence[PairView] = ()) -> str:
    """The plain caption; ``views`` must be ordered left to right."""
    if not views:
        return "No people were detected."
    refs = dict(zip((v.id for v in views), references(len(views)), strict=True))
    sentences = [count_phrase(len(views))]
    for view in views:
        sentences.append(_subject_sentence(refs[view.id], view, single=len(views) == 1))
    for pair in pairs:
        a, b = refs[pair.first], refs[pair.second]
        if pair.next_to:
            sentences.append(_sentence(f"{a} is next to {b}"))
        if pair.larger is not None:
            big, small = (a, b) if pair.larger == pair.first else (b, a)
            sentences.append(_sentence(f"{big} appears larger than {small}"))
    return " ".join(sentences)


def relational_caption(relations: Sequence[Relation]) -> str:
    """``{S1} wears {A1}; {S1} is left of {S2}.`` — placeholders and predicates only."""
    if not relations:
        return ""
    clauses = [
        f"{{{r.subject}}} {PREDICATE_PHRASES.get(r.predicate, r.predicate.replace('_', ' '))} "
        f"{{{r.object}}}"
        for r in relations
    ]
    return "; ".join(clauses) + "."
