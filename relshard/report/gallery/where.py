"""``--where`` filters: ``FIELD OP VALUE``, all of them must hold.

Operators: ``=`` (equal; ``*`` and ``?`` make it a glob), ``!=``, ``~`` (contains,
case-insensitive), and ``>``, ``>=``, ``<``, ``<=`` for numbers.

Index fields are answered from the index columns alone (cheap, no shard read):
``key``, ``input_key``, ``uri``, ``shard``, ``modality``, ``backend``, ``model``,
``prompt_version``, ``leak`` and the counts ``subjects``, ``attributes``,
``relations``, ``frames``, ``caption_len``, ``rel_caption_len``,
``model_subjects``, ``both_subjects``.

Record fields need the sample's ``KEY.json``: ``predicate`` (some relation has it),
``category`` (some attribute), ``kind`` / ``source`` (some subject; a record
without ``source`` counts as ``detector``), ``attribute`` (some attribute's text),
``caption`` (the caption or the relational caption) and ``warning``. With ``!=``
a record field holds when *no* item matches.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from relshard.report.tables import InspectError

OPS = (">=", "<=", "!=", "=", ">", "<", "~")
_RE = re.compile(r"^\s*([A-Za-z_]+)\s*(>=|<=|!=|=|>|<|~)\s*(.*?)\s*$")

INDEX_FIELDS = {
    "key": "key", "input_key": "input_key", "uri": "uri", "shard": "shard",
    "modality": "modality", "backend": "backend", "model": "model",
    "prompt_version": "prompt_version", "leak": "leak",
    "subjects": "n_subjects", "n_subjects": "n_subjects",
    "attributes": "n_attributes", "n_attributes": "n_attributes",
    "relations": "n_relations", "n_relations": "n_relations",
    "frames": "n_frames", "n_frames": "n_frames",
    "caption_len": "caption_len", "rel_caption_len": "rel_caption_len",
    "model_subjects": "n_subjects_model", "n_subjects_model": "n_subjects_model",
    "both_subjects": "n_subjects_both", "n_subjects_both": "n_subjects_both",
}
NUMERIC_COLUMNS = {"n_subjects", "n_attributes", "n_relations", "n_frames", "caption_len",
                   "rel_caption_len", "n_subjects_model", "n_subjects_both"}
RECORD_FIELDS = ("predicate", "category", "kind", "source", "attribute", "caption", "warning")


class WhereError(InspectError):
    """A ``--where`` filter that cannot be understood."""


@dataclass(frozen=True)
class Condition:
    """One parsed filter."""

    field: str  # as the user wrote it
    op: str
    value: str
    column: str | None  # the index column, or None for a record field

    @property
    def on_index(self) -> bool:
        return self.column is not None

    @property
    def numeric(self) -> bool:
        return self.column in NUMERIC_COLUMNS

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"

    def number(self) -> float:
        return float(self.value)

    def match_text(self, text: object) -> bool:
        """``=``, ``!=`` (glob when the value has ``*``/``?``) and ``~`` on one string."""
        if text is None:
            return self.op == "!="
        s = str(text)
        if self.op == "~":
            return self.value.lower() in s.lower()
        globbed = any(c in self.value for c in "*?[")
        equal = fnmatch.fnmatchcase(s, self.value) if globbed else s == self.value
        return equal if self.op == "=" else not equal

    def match_number(self, value: Any) -> bool:
        if value is None:
            return False
        x, y = float(value), self.number()
        return {"=": x == y, "!=": x != y, ">": x > y, ">=": x >= y, "<": x < y,
                "<=": x <= y}[self.op]


def parse_where(text: str) -> Condition:
    """Parse ``FIELD OP VALUE``; raise :class:`WhereError` with what is allowed."""
    m = _RE.match(text)
    if not m:
        raise WhereError(f"--where {text!r} is not FIELD OP VALUE (operators: "
                         f"{' '.join(OPS)}), e.g. --where subjects>=3 or --where predicate=holds.")
    name, op, value = m.group(1).lower(), m.group(2), m.group(3)
    column = INDEX_FIELDS.get(name)
    if column is None and name not in RECORD_FIELDS:
        fields = ", ".join(sorted({*INDEX_FIELDS, *RECORD_FIELDS}))
        raise WhereError(f"--where {text!r}: unknown field {name!r}; the fields are {fields}.")
    cond = Condition(field=name, op=op, value=value, column=column)
    if op in (">", ">=", "<", "<=") and not cond.numeric:
        raise WhereError(f"--where {text!r}: {op} compares numbers, and {name!r} is not a "
                         "number field (subjects, attributes, relations, frames, ...).")
    if cond.numeric and op != "~":
        try:
            cond.number()
        except ValueError:
            raise WhereError(f"--where {text!r}: {value!r} is not a number.") from None
    if cond.numeric and op == "~":
        raise WhereError(f"--where {text!r}: ~ (contains) is for text fields, not {name!r}.")
    return cond


def record_values(record: dict[str, Any], field: str) -> list[Any]:
    """The values of a record field that a condition is matched against."""
    def items(name: str) -> list[dict[str, Any]]:
        value = record.get(name)
        return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []

    if field == "predicate":
        return [r.get("predicate") for r in items("relations")]
    if field == "category":
        return [a.get("category") for a in items("attributes")]
    if field == "attribute":
        return [a.get("text") for a in items("attributes")]
    if field == "kind":
        return [s.get("kind") for s in items("subjects")]
    if field == "source":
        return [s.get("source") or "detector" for s in items("subjects")]
    if field == "caption":
        return [record.get("caption"), record.get("relational_caption")]
    if field == "warning":
        warnings = record.get("warnings")
        return list(warnings) if isinstance(warnings, list) else []
    raise AssertionError(field)


def match_record(record: dict[str, Any], conditions: list[Condition]) -> bool:
    """True when every record condition holds for ``record``."""
    for cond in conditions:
        values = record_values(record, cond.field)
        if cond.op == "!=":
            positive = Condition(cond.field, "=", cond.value, cond.column)
            if any(positive.match_text(v) for v in values):
                return False
        elif not any(cond.match_text(v) for v in values):
            return False
    return True
