"""Hawkes fits of many windows at once: one compiled EM per window, no Python per event.

The windows of a bucket are position ranges ``[start, stop)`` into the bucket's
sorted times and type indices (overlapping windows share the arrays, nothing is
copied); each window is one group of :func:`relshard.events.em_kernel.
fit_ranges`: its own parameters, warm-started from the whole log's fit, its own
early stop. Same model and confidence as the whole log's fit (the decay ``beta`` is
the whole log's); the estimate is the posterior mode under a Gamma prior worth one
event of exposure, centred on the whole log's branching ratios. Types outside
``0..k_types-1`` (those left out of the whole-log fit) are left out of the window's fit.

A window's fit never raises: a window whose EM produced a non-finite number keeps no
relations, and :func:`window_notes` says so (and which types' background rates sat on
the floor) for its provenance.
"""

from __future__ import annotations

import numpy as np

from relshard.events.em_kernel import STATUS_OK, Fits, fit_ranges
from relshard.events.hawkes_fit import Excitation

WINDOW_PRIOR = 1.0  # a window's branching ratios: a Gamma prior at the whole log's, one event


def fit_window_ranges(t: np.ndarray, u: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                      k_types: int, beta: float, init: tuple[np.ndarray, np.ndarray], *,
                      max_iter: int = 60, tol: float = 1e-3, prior: float = WINDOW_PRIOR) -> Fits:
    """Fit every window ``t[starts[w]:stops[w]]`` (sorted times in seconds, type indices
    ``u`` in ``0..k_types-1``; other values are left out). ``prior``: see
    :func:`~relshard.events.em_kernel.fit_ranges` (a window is short: a type
    seen once near its end would otherwise get an unbounded branching ratio)."""
    return fit_ranges(t, u, starts, stops, np.arange(len(starts) + 1), k_types, beta, init,
                      max_iter=max_iter, tol=tol, prior=prior)


def window_edges(fits: Fits, type_ids: np.ndarray, beta: float, min_weight: float,
                 min_confidence: float, min_events: int = 3) -> list[list[Excitation]]:
    """Per window, the edges among the types present in it with ``weight >= min_weight``
    and ``confidence >= min_confidence``, strongest first; ``type_ids`` maps the fit's
    type indices to vocabulary ids. A window of fewer than ``min_events`` fitted events
    has no edges."""
    conf, present = fits.confidence, fits.present
    enough = (fits.events >= min_events) & (fits.status == STATUS_OK)
    mask = ((fits.alpha >= min_weight) & (conf >= min_confidence)
            & present[:, :, None] & present[:, None, :] & enough[:, None, None])
    out: list[list[Excitation]] = [[] for _ in range(len(fits.alpha))]
    delay = 1.0 / beta
    for w, k, v in zip(*np.nonzero(mask), strict=True):
        out[w].append(Excitation(int(type_ids[k]), int(type_ids[v]), float(fits.alpha[w, k, v]),
                                 float(fits.stderr[w, k, v]), float(conf[w, k, v]), delay))
    for edges in out:
        edges.sort(key=lambda e: (-e.weight, e.source, e.target))
    return out


def window_notes(fits: Fits, type_ids: np.ndarray) -> list[str | None]:
    """Per window, what its provenance must add about its fit (None: nothing): a numeric
    failure (no relations recorded), or the types whose background rate sat on the floor."""
    out: list[str | None] = [None] * len(fits.status)
    failed = np.flatnonzero(fits.status != STATUS_OK)
    for w in failed:
        out[w] = ("relation fit failed (the EM produced a non-finite number): no excites "
                  "relations recorded for this window")
    for w in np.flatnonzero(fits.floored.any(axis=1) & (fits.status == STATUS_OK)):
        names = ", ".join(f"S{int(type_ids[k]) + 1}" for k in np.flatnonzero(fits.floored[w]))
        out[w] = (f"background rate of {names} floored at {fits.floor[w]:.3g}/s "
                  "(every event of theirs here is explained by excitation)")
    return out
