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

import numpy as np

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


def sample_terms(record: dict[str, Any], pred: dict[str, Any]) -> dict[str, int]:
    """One sample's counts, the terms every metric sums (and the bootstrap resamples)."""
    rels = pred.get("relations", [])
    gold = gold_bindings(record)
    got = predicted_bindings(rels)
    g_tri = {(r["subject"], r["predicate"], r["object"]) for r in record.get("relations", [])}
    p_tri = {(str(r["subject"]), str(r["predicate"]), str(r["object"])) for r in rels}
    g_pair = {(s, o) for s, _, o in g_tri}
    p_pair = {(s, o) for s, _, o in p_tri}
    has_caption = "relational_caption" in pred
    return {
        "bind_ok": sum(got.get(a) == s for a, s in gold.items()), "bind_n": len(gold),
        "tp": len(g_tri & p_tri), "n_pred": len(p_tri), "n_gold": len(g_tri),
        "ptp": len(g_pair & p_pair), "p_pred": len(p_pair), "p_gold": len(g_pair),
        "valid": int(has_caption and caption_valid(record, str(pred["relational_caption"]))),
        "caps": int(has_caption),
    }


def metrics_of(totals: dict[str, float]) -> dict[str, Any]:
    """The metrics of summed :func:`sample_terms`."""
    t = totals
    return {
        "binding_accuracy": t["bind_ok"] / t["bind_n"] if t["bind_n"] else None,
        "bindings": int(t["bind_n"]),
        "relations": _prf(int(t["tp"]), int(t["n_pred"]), int(t["n_gold"])),
        "relation_pairs": _prf(int(t["ptp"]), int(t["p_pred"]), int(t["p_gold"])),
        "placeholder_validity": t["valid"] / t["caps"] if t["caps"] else None,
        "captions": int(t["caps"]),
    }


def evaluate_relations(
    records: dict[str, dict[str, Any]], predictions: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """All metrics over the records (a record without a prediction predicts nothing)."""
    totals: dict[str, float] = {}
    for key, record in records.items():
        for name, value in sample_terms(record, predictions.get(key, {})).items():
            totals[name] = totals.get(name, 0) + value
    if not totals:
        totals = dict.fromkeys(sample_terms({}, {}), 0)
    out = metrics_of(totals)
    if out["binding_accuracy"] is None:
        out["binding_accuracy"] = 0.0
    return {"samples": len(records), "predicted": sum(k in predictions for k in records), **out}


def bootstrap_ci(num: np.ndarray, den: np.ndarray, replicates: int = 1000, seed: int = 0,
                 level: float = 0.95) -> list[float] | None:
    """Percentile interval of ``sum(num) / sum(den)`` over samples drawn with replacement.

    ``num`` and ``den`` hold one value per sample (the resampled unit); None when
    there is nothing to resample.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n = len(num)
    if n == 0 or den.sum() <= 0 or replicates < 1:
        return None
    rng = np.random.default_rng(seed)
    stats: list[np.ndarray] = []
    chunk = max(1, min(replicates, 4_000_000 // n))
    left = replicates
    while left > 0:
        b = min(chunk, left)
        idx = rng.integers(0, n, size=(b, n))
        d = den[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(num[idx].sum(axis=1) / d)
        left -= b
    values = np.concatenate(stats)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]
