"""Model answers into the record schema: tolerant JSON extraction, then strict checks.

Extraction forgives how models wrap JSON (code fences, prose before or after, a
trailing comma); validation does not forgive what the answer means: every
attribute must be grouped under a detected subject, every relation must point to
an existing subject or attribute id, and the relational caption may only use
known placeholders. A failed check raises :class:`InvalidAnswer` whose message is
shown to the model when it is asked again.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relshard.record import (
    ATTRIBUTE_ID_RE,
    PLACEHOLDER_RE,
    Attribute,
    AttributeCategory,
    Relation,
    Subject,
)

CATEGORIES: tuple[str, ...] = AttributeCategory.__args__  # type: ignore[attr-defined]
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class InvalidAnswer(ValueError):
    """A model answer that cannot become a record; the message says why, for a re-ask."""


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span of ``text``, honouring JSON strings."""
    spans: list[str] = []
    depth, start, in_str, esc = 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start:i + 1])
    return spans


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in a model answer: whole, in a code fence, or amid prose."""
    def candidates() -> Iterator[str]:
        yield text.strip()
        yield from (m.strip() for m in _FENCE.findall(text))
        yield from sorted(_balanced_objects(text), key=len, reverse=True)

    for cand in candidates():
        for attempt in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                value = json.loads(attempt)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise InvalidAnswer("the answer holds no JSON object")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AttributeOut(_Loose):
    id: str
    subject: str
    text: str = Field(min_length=1)
    category: str = "other"
    predicate: str = Field(default="has", min_length=1)

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        v = v.strip().lower()
        return v if v in CATEGORIES else "other"


class RelationOut(_Loose):
    subject: str
    predicate: str = Field(min_length=1)
    object: str
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)


class CaptionOut(_Loose):
    caption: str = Field(min_length=1)


class GroupsOut(_Loose):
    attributes: list[AttributeOut] = Field(default_factory=list)
    names: dict[str, str] = Field(default_factory=dict, description="subject id -> name/role")


class RelationsOut(_Loose):
    relations: list[RelationOut] = Field(default_factory=list)


class RelCaptionOut(_Loose):
    relational_caption: str = ""


class SingleOut(CaptionOut, GroupsOut, RelationsOut, RelCaptionOut):
    """The combined answer of the ``single`` prompt."""


STEP_MODELS: dict[str, type[_Loose]] = {
    "single": SingleOut, "caption": CaptionOut, "groups": GroupsOut,
    "relations": RelationsOut, "relcaption": RelCaptionOut,
}


@functools.cache
def json_schema(step: str) -> dict[str, Any]:
    """The JSON schema a server may enforce for ``step`` (``response_format``); do not mutate."""
    return STEP_MODELS[step].model_json_schema()


def parse_step(step: str, text: str) -> dict[str, Any]:
    """Extract and shape-check one step's answer; returns its fields as plain data."""
    data = extract_json(text)
    try:
        return STEP_MODELS[step].model_validate(data).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise InvalidAnswer(f"field '{where}': {first['msg']}") from None


def check_groups(attrs: list[dict[str, Any]], subjects: list[Subject]) -> None:
    """Attributes must have unique ids A1, A2, ... and belong to a detected subject."""
    subject_ids = {s.id for s in subjects}
    seen: set[str] = set()
    for a in attrs:
        if not ATTRIBUTE_ID_RE.match(a["id"]):
            raise InvalidAnswer(f"attribute id {a['id']!r} must look like A1, A2, ...")
        if a["id"] in seen:
            raise InvalidAnswer(f"attribute id {a['id']!r} is used twice")
        if a["id"] in subject_ids:
            raise InvalidAnswer(f"attribute id {a['id']!r} collides with a subject id")
        seen.add(a["id"])
        if a["subject"] not in subject_ids:
            raise InvalidAnswer(
                f"attribute {a['id']} belongs to {a['subject']!r}, which is not a detected "
                f"subject (known: {', '.join(sorted(subject_ids)) or 'none'})")


def check_relations(rels: list[dict[str, Any]], subjects: list[Subject],
                    attrs: list[dict[str, Any]]) -> None:
    """Every relation goes from a subject to an existing subject or attribute id."""
    subject_ids = {s.id for s in subjects}
    known = subject_ids | {a["id"] for a in attrs}
    for r in rels:
        if r["subject"] not in subject_ids:
            raise InvalidAnswer(f"relation subject {r['subject']!r} is not a detected subject")
        if r["object"] not in known:
            raise InvalidAnswer(f"relation object {r['object']!r} is not a subject or attribute id")


def check_relational_caption(caption: str, subjects: list[Subject],
                             attrs: list[dict[str, Any]], relations: list[dict[str, Any]]) -> None:
    """Placeholders must name known entities; a scene with relations needs some."""
    known = {s.id for s in subjects} | {a["id"] for a in attrs}
    used = PLACEHOLDER_RE.findall(caption)
    unknown = sorted(set(used) - known)
    if unknown:
        raise InvalidAnswer(f"placeholders {unknown} in relational_caption name no entity")
    if (relations or attrs) and not used:
        raise InvalidAnswer("relational_caption must write entities as placeholders like {S1}")


def to_record_parts(subjects: list[Subject], state: dict[str, Any]
                    ) -> tuple[list[Attribute], list[Relation]]:
    """Record attributes (grounded: the subject's box and frame) and relations.

    Each attribute also yields its grouping relation (``S1 wears A1``) unless the
    model stated that relation itself.
    """
    by_id = {s.id: s for s in subjects}
    attributes: list[Attribute] = []
    relations: list[Relation] = []
    stated = {(r["subject"], r["object"]) for r in state.get("relations", [])}
    for a in state.get("attributes", []):
        owner = by_id[a["subject"]]
        attributes.append(Attribute(id=a["id"], text=a["text"].strip(), category=a["category"],
                                    bbox=list(owner.bbox), frame=owner.frame))
        if (owner.id, a["id"]) not in stated:
            relations.append(Relation(subject=owner.id, predicate=a["predicate"].strip(),
                                      object=a["id"]))
    for r in state.get("relations", []):
        relations.append(Relation(subject=r["subject"], predicate=r["predicate"].strip(),
                                  object=r["object"], confidence=r["confidence"]))
    return attributes, relations
