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
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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


_Box = Annotated[list[float], Field(min_length=4, max_length=4)]


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
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
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


class SubjectOut(_Loose):
    """A subject the model lists itself (see ``grounding``): a normalized box or Qwen pixels."""

    id: str | int | None = Field(default=None, description="S1, S2, ...")
    kind: str = Field(default="person", validation_alias=AliasChoices("kind", "label"))
    bbox: _Box | None = Field(default=None, description="normalized [x0, y0, x1, y1]")
    bbox_2d: _Box | None = Field(default=None, description="pixels of the image sent")
    image: int = Field(default=1, ge=0, description="which image sent (1 = the first)")

    @model_validator(mode="after")
    def _has_box(self) -> SubjectOut:
        if self.bbox is None and self.bbox_2d is None:
            raise ValueError("a listed subject needs a 'bbox' [x0, y0, x1, y1]")
        return self


class GroundOut(_Loose):
    """The answer of the ``ground`` step: the subjects the model sees."""

    subjects: list[SubjectOut] = Field(default_factory=list)


class SingleGroundedOut(SingleOut, GroundOut):
    """The ``single`` answer when the model also lists subjects."""


STEP_MODELS: dict[str, type[_Loose]] = {
    "single": SingleOut, "caption": CaptionOut, "groups": GroupsOut,
    "relations": RelationsOut, "relcaption": RelCaptionOut, "ground": GroundOut,
}


def _step_model(step: str, subjects: bool) -> type[_Loose]:
    return SingleGroundedOut if subjects and step == "single" else STEP_MODELS[step]


@functools.cache
def json_schema(step: str, subjects: bool = False) -> dict[str, Any]:
    """The JSON schema a server may enforce for ``step`` (``response_format``); do not mutate.

    ``subjects``: the answer also lists subjects (``annotate.subjects`` is not detector).
    """
    return _step_model(step, subjects).model_json_schema()


def _extract_list(text: str) -> list[Any] | None:
    """A JSON array answer (Qwen grounds as a bare list of ``bbox_2d`` objects), or None."""
    cands = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        cands.append(text[start:end + 1])
    for cand in cands:
        for attempt in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                value = json.loads(attempt)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, list) and all(isinstance(v, dict) for v in value):
                return value
    return None


def check_counts(data: dict[str, Any], limits: Mapping[str, int] | None) -> None:
    """No list field of an answer (``attributes``, ``relations``) may exceed its cap."""
    for name, cap in (limits or {}).items():
        items = data.get(name)
        if isinstance(items, list) and len(items) > cap:
            raise InvalidAnswer(f"the answer lists {len(items)} {name}, more than the {cap} "
                                f"allowed: keep at most {cap}, the most salient")


def parse_step(step: str, text: str, subjects: bool = False,
               limits: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Extract and shape-check one step's answer; returns its fields as plain data.

    ``subjects``: the ``single`` answer may list subjects too. A ``ground`` answer may
    be a bare JSON list of subjects. ``limits``: the most items a list field may hold
    (``{"attributes": 64, "relations": 256}``), checked before the items are validated.
    """
    try:
        data = extract_json(text)
    except InvalidAnswer:
        if step != "ground":
            raise
        data = {}
    if step == "ground" and "subjects" not in data:
        listed = _extract_list(text)
        if listed is None and ("bbox" in data or "bbox_2d" in data):
            listed = [data]  # one subject, not wrapped
        if listed is None and not data:
            raise InvalidAnswer("the answer holds no JSON object")
        data = {"subjects": listed or []}
    check_counts(data, limits)
    try:
        return _step_model(step, subjects).model_validate(data).model_dump()
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
