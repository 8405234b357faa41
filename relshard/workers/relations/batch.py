"""Hawkes fits of many windows at once: one vectorized EM over a whole bucket.

Fitting 256-event windows one by one is dominated by numpy call overhead (a few
milliseconds each). Here the windows of a bucket are laid end to end (far apart,
so no window excites another), the excitation sums ``R`` are computed in one pass,
and EM runs on all windows together with per-window parameters ``mu[w, u]`` and
``alpha[w, k, u]``: each iteration is a handful of ``bincount`` calls over all
events. Same model, same estimator and the same confidence as
:mod:`.hawkes` (the decay ``beta`` is the whole log's), warm-started from the whole
log's fit. Types outside the whole-log fit's ``types`` are left out of the fit.
"""

from __future__ import annotations

import math

import numpy as np

from relshard.workers.relations.hawkes import Excitation, excitation_sums

_GAP = 1000.0


def fit_windows(windows: list[tuple[np.ndarray, np.ndarray]], k_types: int, beta: float,
                init: tuple[np.ndarray, np.ndarray], *, max_iter: int = 60, tol: float = 1e-3
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit each window (sorted times, type indices ``0..k_types-1``; other values ignored).

    Returns ``(mu (W, K), alpha (W, K, K), stderr (W, K, K))``.
    """
    n_win = len(windows)
    ts, us, ws, ends, spans = [], [], [], [], np.zeros(n_win)
    offset = 0.0
    for w, (t, u) in enumerate(windows):
        keep = (u >= 0) & (u < k_types)
        t, u = t[keep], u[keep]
        if len(t) == 0:
            continue
        span = float(t[-1] - t[0])
        spans[w] = span
        ts.append(t - t[0] + offset)
        us.append(u)
        ws.append(np.full(len(t), w))
        ends.append(np.full(len(t), offset + span))
        offset += span + _GAP / beta
    mu = np.tile(init[0], (n_win, 1)).astype(np.float64)
    alpha = np.tile(np.maximum(init[1], 1e-3), (n_win, 1, 1)).astype(np.float64)
    if not ts:
        return mu, alpha, np.full_like(alpha, np.inf)
    t, u, w, end = (np.concatenate(ts), np.concatenate(us).astype(np.int64),
                    np.concatenate(ws), np.concatenate(ends))
    spans = np.maximum(spans, 1e-12)
    r = excitation_sums(t, u, k_types, beta)  # (n, K)
    cell = w * k_types + u  # (window, effect type) of each event
    size = n_win * k_types
    comp = np.bincount(cell, weights=1.0 - np.exp(-beta * (end - t)), minlength=size)
    comp = np.maximum(comp.reshape(n_win, k_types), 1e-12)  # per (window, cause type)
    for _ in range(max_iter):
        a_i = alpha[w, :, u]  # (n, K): alpha[w_i, k, u_i]
        contrib = r * a_i
        base = mu[w, u]
        lam = base + contrib.sum(axis=1)
        new_mu = np.bincount(cell, weights=base / lam, minlength=size).reshape(n_win, k_types)
        new_mu /= spans[:, None]
        resp = contrib / lam[:, None]
        num = np.stack([np.bincount(cell, weights=resp[:, k], minlength=size)
                        for k in range(k_types)], axis=1).reshape(n_win, k_types, k_types)
        # num[w, u, k] -> alpha[w, k, u]
        new_alpha = num.transpose(0, 2, 1) / comp[:, :, None]
        step = float(np.abs(new_alpha - alpha).max())
        mu, alpha = new_mu, new_alpha
        if step <= tol:
            break
    lam = mu[w, u] + (r * alpha[w, :, u]).sum(axis=1)
    g = (r / lam[:, None]) ** 2
    info = np.stack([np.bincount(cell, weights=g[:, k], minlength=size)
                     for k in range(k_types)], axis=1).reshape(n_win, k_types, k_types)
    stderr = 1.0 / np.sqrt(np.maximum(info.transpose(0, 2, 1), 1e-300))
    return mu, alpha, stderr


def window_excitations(alpha: np.ndarray, stderr: np.ndarray, present: np.ndarray,
                       type_ids: np.ndarray, beta: float, min_weight: float,
                       min_confidence: float) -> list[Excitation]:
    """The edges of one window among the types present in it, strongest first."""
    out = []
    for k in present:
        for v in present:
            a = float(alpha[k, v])
            if a < min_weight:
                continue
            se = float(stderr[k, v])
            conf = math.erf(a / max(se, 1e-300) / math.sqrt(2.0))
            if conf >= min_confidence:
                out.append(Excitation(int(type_ids[k]), int(type_ids[v]), a, se, conf,
                                      1.0 / beta))
    return sorted(out, key=lambda e: (-e.weight, e.source, e.target))
