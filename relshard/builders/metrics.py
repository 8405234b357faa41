"""Evaluation metrics of relational predictions against benchmark records.

A prediction for one sample is ``{"key", "relations": [{"subject", "predicate",
"object", "confidence"?}...], "relational_caption"?}`` (the record's own
fields, so a record is a perfect prediction of itself).

- **binding accuracy**: for each gold attribute bound to a subject (a gold
  relation whose object is an attribute id), is the predicted subject the same?
  The predicted subject of an attribute is that of its most confident predicted
  relation; an attribute without one counts as wrong.
- **relation precision / recall / F1**: micro-averaged over exact
  ``(subject, predicate, object)`` triples; also over ``(subject, object)`` pairs,
  which ignores the predicate's wording.
- **placeholder validity**: the share of relational captions whose braces are
  balanced, whose every ``{ID}`` names a subject or attribute of the record,
  that hold at least one placeholder when the record has relations, and that do
  not leak an attribute's text where its placeholder belongs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def gold_bindings(record: dict[str, Any]) -> dict[str, str]:
    """Attribute id to subject id, from the record's subject→attribute relations."""
    attrs = {a["id"] for a in record.get("attributes", [])}
    out: dict[str, str] = {}
    for rel in sorted(record.get("relations", []), key=lambda r: -r.get("confidence", 1.0)):
        if rel["object"] in attrs:
            out.setdefault(rel["object"], rel["subject"])
    return out


def predicted_bindings(relations: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Object id to the subject of its most confident predicted relation."""
    out: dict[str, str] = {}
    for rel in sorted(relations, key=lambda r: -float(r.get("confidence", 1.0))):
        out.setdefault(str(rel["object"]), str(rel["subject"]))
    return out


def caption_valid(record: dict[str, Any], caption: str) -> bool:
    """Whether a relational caption's placeholders are well formed and resolve."""
    ids = {s["id"] for s in record.get("subjects", [])} | {
        a["id"] for a in record.get("attributes", [])}
    stripped = PLACEHOLDER.sub("", caption)
    if "{" in stripped or "}" in stripped:
        return False
    found = PLACEHOLDER.findall(caption)
    if any(f not in ids for f in found):
        return False
    if record.get("relations") and not found:
        return False
    lower = stripped.lower()
    return not any(len(a["text"]) > 3 and a["text"].lower() in lower
                   for a in record.get("attributes", []))


def evaluate_relations(
    records: dict[str, dict[str, Any]], predictions: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """All metrics over the records (a record without a prediction predicts nothing)."""
    bind_ok = bind_n = 0
    tp = n_pred = n_gold = 0
    ptp = p_pred = p_gold = 0
    valid = n_caps = 0
    for key, record in records.items():
        pred = predictions.get(key, {})
        rels = pred.get("relations", [])
        gold = gold_bindings(record)
        got = predicted_bindings(rels)
        bind_n += len(gold)
        bind_ok += sum(got.get(a) == s for a, s in gold.items())
        g_tri = {(r["subject"], r["predicate"], r["object"]) for r in record.get("relations", [])}
        p_tri = {(str(r["subject"]), str(r["predicate"]), str(r["object"])) for r in rels}
        tp, n_pred, n_gold = tp + len(g_tri & p_tri), n_pred + len(p_tri), n_gold + len(g_tri)
        g_pair = {(s, o) for s, _, o in g_tri}
        p_pair = {(s, o) for s, _, o in p_tri}
        ptp, p_pred, p_gold = ptp + len(g_pair & p_pair), p_pred + len(p_pair), p_gold + len(g_pair)
        if "relational_caption" in pred:
            n_caps += 1
            valid += caption_valid(record, str(pred["relational_caption"]))
    return {
        "samples": len(records),
        "predicted": sum(k in predictions for k in records),
        "binding_accuracy": bind_ok / bind_n if bind_n else 0.0,
        "bindings": bind_n,
        "relations": _prf(tp, n_pred, n_gold),
        "relation_pairs": _prf(ptp, p_pred, p_gold),
        "placeholder_validity": valid / n_caps if n_caps else None,
        "captions": n_caps,
    }
