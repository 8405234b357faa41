"""Trivial baselines that every score is reported beside.

Binding (subject–attribute relations):

- ``containment``: each attribute belongs to the subject whose box contains the
  attribute box's centre (the smallest such box, on the same frame when both
  say), else to the nearest subject by box-centre distance; the predicate is the
  training split's most common one. This is the fixed rule a binding model must
  beat: where attributes lie inside their owner's box it is already perfect.
- ``majority``: every attribute belongs to the subject id most often bound in
  training (usually ``S1``), with the training split's most common predicate.

Events (next-event forecasting, scored like the model: every event of a window
after its first, given the window's history):

- ``poisson``: a homogeneous Poisson process per type, rates fitted on the
  training split (events per second of observed window time);
- ``hawkes``: one exponential multivariate Hawkes process fitted to the whole
  training split (:func:`relshard.events.hawkes_fit.fit_hawkes`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Window = tuple[np.ndarray, np.ndarray]  # (times in seconds, int type ids), sorted


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _contains(box: list[float], x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def rule_subject(attr: dict[str, Any], subjects: list[dict[str, Any]]) -> str | None:
    """The containment / nearest-subject rule's subject id for one attribute."""
    if not subjects:
        return None
    box = attr.get("bbox")
    if not box:
        return str(subjects[0]["id"])
    x, y = _centre(box)
    frame = attr.get("frame")
    same = [s for s in subjects if frame is None or s.get("frame", 0) == frame] or subjects
    inside = [s for s in same if s.get("bbox") and _contains(s["bbox"], x, y)]
    if inside:
        best = min(inside, key=lambda s: (s["bbox"][2] - s["bbox"][0]) * (s["bbox"][3]
                                                                          - s["bbox"][1]))
        return str(best["id"])
    boxed = [s for s in same if s.get("bbox")] or same

    def dist(s: dict[str, Any]) -> float:
        if not s.get("bbox"):
            return math.inf
        sx, sy = _centre(s["bbox"])
        return (sx - x) ** 2 + (sy - y) ** 2

    return str(min(boxed, key=dist)["id"])


def _prediction(record: dict[str, Any], pairs: list[tuple[str, str]], predicate: str
                ) -> dict[str, Any]:
    relations = [{"subject": s, "predicate": predicate, "object": a, "confidence": 1.0}
                 for s, a in pairs]
    caption = "; ".join(f"{{{s}}} {predicate} {{{a}}}" for s, a in pairs)
    return {"key": record.get("key"), "relations": relations,
            "relational_caption": caption + "." if caption else ""}


def containment_predictions(records: dict[str, dict[str, Any]], predicate: str
                            ) -> dict[str, dict[str, Any]]:
    """The containment / nearest-subject rule's predictions."""
    out = {}
    for key, rec in records.items():
        subjects = rec.get("subjects", [])
        pairs = [(s, str(a["id"])) for a in rec.get("attributes", [])
                 if (s := rule_subject(a, subjects)) is not None]
        out[key] = _prediction(rec, pairs, predicate)
    return out


def majority_predictions(records: dict[str, dict[str, Any]], predicate: str,
                         subject: str = "S1") -> dict[str, dict[str, Any]]:
    """Every attribute bound to ``subject`` (when the record has it) with ``predicate``."""
    out = {}
    for key, rec in records.items():
        ids = [str(s["id"]) for s in rec.get("subjects", [])]
        who = subject if subject in ids else (ids[0] if ids else None)
        pairs = [(who, str(a["id"])) for a in rec.get("attributes", [])] if who else []
        out[key] = _prediction(rec, pairs, predicate)
    return out


# ---- events -------------------------------------------------------------------------------


def poisson_rates(windows: list[Window], k_types: int) -> np.ndarray:
    """Per-type rates (events per second) of the events after each window's first."""
    counts = np.zeros(k_types)
    span = 0.0
    for t, u in windows:
        if len(t) < 2:
            continue
        counts += np.bincount(u[1:], minlength=k_types)[:k_types]
        span += float(t[-1] - t[0])
    return np.maximum(counts, 0.5) / max(span, 1e-12)


def poisson_terms(window: Window, rates: np.ndarray) -> dict[str, float]:
    """Log-likelihood, events, correct next types and log1p time error of one window."""
    t, u = window
    n = len(t) - 1
    if n < 1:
        return {"ll": 0.0, "events": 0, "correct": 0, "time_err": 0.0}
    ll = float(np.log(rates[u[1:]]).sum() - rates.sum() * (t[-1] - t[0]))
    dt = np.diff(t)
    pred = math.log1p(1.0 / rates.sum())
    return {"ll": ll, "events": n, "correct": int((u[1:] == int(np.argmax(rates))).sum()),
            "time_err": float(((pred - np.log1p(dt)) ** 2).sum())}


def hawkes_terms(window: Window, mu: np.ndarray, alpha: np.ndarray, beta: float
                 ) -> dict[str, float]:
    """The same terms under an exponential Hawkes process (history: the window itself)."""
    t, u = window
    n = len(t) - 1
    if n < 1:
        return {"ll": 0.0, "events": 0, "correct": 0, "time_err": math.nan}
    excite = np.zeros(len(mu))  # sum_j alpha[u_j] beta exp(-beta (t - t_j)) at the last event
    ll = 0.0
    correct = 0
    for i in range(len(t)):
        if i:
            excite *= math.exp(-beta * float(t[i] - t[i - 1]))
            lam = mu + excite
            ll += math.log(max(float(lam[u[i]]), 1e-300))
            correct += int(np.argmax(lam) == u[i])
        excite += alpha[u[i]] * beta
    end = float(t[-1])
    ll -= float(mu.sum()) * (end - float(t[0]))
    ll -= float((alpha[u[:-1]].sum(axis=1) * (1 - np.exp(-beta * (end - t[:-1])))).sum())
    return {"ll": ll, "events": n, "correct": correct, "time_err": math.nan}


def fit_whole_log(windows: list[Window], k_types: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mu, alpha, beta)`` of one Hawkes process fitted to all training windows."""
    from relshard.events.hawkes_fit import fit_hawkes

    seqs = [(t, u) for t, u in windows if len(t) >= 2]
    fit = fit_hawkes(seqs, k_types)
    return np.asarray(fit.mu, dtype=np.float64), np.asarray(fit.alpha, dtype=np.float64), \
        float(fit.beta)
