"""Relations of a whole event log: one Hawkes fit over a bounded sample of its sequences.

Runs in the driver after the pre-pass, before any window is cut, so every window
of a log shares the fitted decay ``beta`` (windows are too short to choose it well
on their own). Memory stays bounded: buckets (or parts of them, see
:mod:`relshard.events.parts`) are read in order until
``window.source_fit_events`` events are gathered (the sequence that reaches the limit
is cut there, so a log that is one long sequence gives its first events), and the fit
covers the ``MAX_TYPES`` most frequent types (a K-type fit has K*K parameters).
The result is JSON for the manifest and for the windows' stage.

The fit never takes the log down: a numeric failure gives ``fitted: false`` with the
reason (the windows are then written without relations), and the types whose
background rate sat on the floor (rare types whose every event follows another) are
listed under ``mu_floored_types`` with the floor, ``mu_floor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from relshard.events.describe import captions, excitation_relations
from relshard.events.hawkes_fit import fit_hawkes
from relshard.events.partition import Partition
from relshard.events.parts import KEY, read_folder

MAX_TYPES = 32


def sorted_sequences(table: pa.Table, vocab: list[str]) -> tuple[pa.Table, np.ndarray,
                                                                  np.ndarray]:
    """Sort a bucket by (sequence, time, row); return it with type ids and sequence bounds."""
    table = table.sort_by(KEY)
    return (table, *sequence_bounds(table, vocab))


def sequence_bounds(table: pa.Table, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Type ids (vocabulary positions) and the bounds of each sequence's run of rows, of a
    table sorted by (sequence, time, row)."""
    ids = pc.index_in(table.column("type"), value_set=pa.array(vocab, pa.string()))
    type_ids = ids.to_numpy(zero_copy_only=False).astype(np.int64)
    seq = table.column("seq").combine_chunks()
    if len(seq) == 0:
        return type_ids, np.zeros(1, dtype=np.int64)
    change = pc.not_equal(seq.slice(1), seq.slice(0, len(seq) - 1))
    cuts = np.flatnonzero(change.to_numpy(zero_copy_only=False)) + 1
    bounds = np.concatenate(([0], cuts, [len(seq)])).astype(np.int64)
    return type_ids, bounds


def fit_source(part: Partition, max_events: int, min_weight: float = 0.1,
               min_confidence: float = 0.99) -> dict[str, Any]:
    """Fit the whole log (a bounded sample of it) and describe the result as JSON: the
    parameters, the ``excites`` relations that pass ``min_weight`` / ``min_confidence``
    (subjects ``S{id+1}`` as in the windows), and the captions written from them."""
    vocab: list[str] = part.meta["vocab"]
    counts = np.asarray(part.meta["type_counts"], dtype=np.int64)
    top = np.sort(np.argsort(-counts, kind="stable")[:MAX_TYPES])
    remap = np.full(len(vocab), -1, dtype=np.int64)
    remap[top] = np.arange(len(top))
    pieces: list[tuple[str, np.ndarray, np.ndarray]] = []  # sequence, times, type indices
    gathered = 0
    for ref in part.parts:
        table, ids, bounds = sorted_sequences(read_folder(ref.path, fs=part.fs), vocab)
        times = table.column("t").to_numpy()
        names = table.column("seq")
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if b <= a:
                continue
            u = remap[ids[a:b]]
            keep = u >= 0
            t_k, u_k = times[a:b][keep][:max_events - gathered], u[keep][:max_events - gathered]
            gathered += len(t_k)
            name = names[int(a)].as_py()
            if i == 0 and ref.first is not None and pieces and pieces[-1][0] == name:
                # the sequence goes on from the previous part: one sequence, not two
                _, t_prev, u_prev = pieces.pop()
                t_k, u_k = np.concatenate((t_prev, t_k)), np.concatenate((u_prev, u_k))
            pieces.append((name, t_k, u_k))
            if gathered >= max_events:
                break
        del table, names
        if gathered >= max_events:
            break
    seqs = [(t, u) for _, t, u in pieces if len(t) >= 2]
    gathered = sum(len(t) for t, _ in seqs)
    if gathered < 2 or len(top) == 0:
        return {"fitted": False, "reason": "fewer than two events", "events_used": gathered}
    fit = fit_hawkes(seqs, len(top), max_iter=150, tol=1e-4)
    if not fit.ok:
        return {"fitted": False, "events_used": gathered,
                "reason": "the EM produced a non-finite number; windows are written without "
                          "relations"}
    floored = top[fit.floored] if fit.floored is not None else top[:0]
    edges = fit.excitations(min_weight, min_confidence, types=top)
    span = float((part.meta.get("t_max") or 0.0) - (part.meta.get("t_min") or 0.0))
    caption, rel_caption = captions(edges, vocab, int(part.meta["rows_ok"]), max(span, 0.0),
                                    None, [int(t) for t in np.flatnonzero(counts)])
    return {
        "fitted": True,
        "method": "multivariate Hawkes, exponential kernel, EM; beta by likelihood on a grid",
        "events_used": gathered, "sequences_used": len(seqs),
        "types": [int(t) for t in top], "beta": fit.beta, "mean_delay_s": 1.0 / fit.beta,
        "mu": [float(m) for m in fit.mu], "alpha": fit.alpha.round(6).tolist(),
        "stderr": fit.stderr.round(6).tolist(), "loglik": fit.loglik,
        "iterations": fit.iterations, "mu_floor": fit.mu_floor,
        "mu_floored_types": [int(t) for t in floored],
        "relations": [{**r.model_dump(exclude_none=True), "source_type": vocab[e.source],
                       "target_type": vocab[e.target], "delay_s": e.delay}
                      for r, e in zip(excitation_relations(edges), edges, strict=True)],
        "caption": caption, "relational_caption": rel_caption,
    }
