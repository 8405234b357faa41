"""Hawkes fits of many windows at once: one compiled EM per window, no Python per event.

The windows of a bucket are position ranges ``[start, stop)`` into the bucket's
sorted times and type indices (overlapping windows share the arrays, nothing is
copied). For each window the kernel (numba, compiled once per machine and cached)
computes the excitation sums with the exact recursion

    R[i, k] = exp(-beta (t_i - t_{i-1})) * (R[i-1, k] + beta [type_{i-1} = k])

(``O(n K)``, no overflow however long the window), then runs EM with per-window
parameters warm-started from the whole log's fit, stopping each window on its own
when no branching ratio moves by more than ``tol``. Same model, estimator and
confidence as :mod:`.hawkes` (the decay ``beta`` is the whole log's); the test
suite checks both give the same answer. Types outside ``0..k_types-1`` (those left
out of the whole-log fit) are left out of the window's fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from relshard.workers.relations.hawkes import Excitation


@cache
def _compiled() -> Any:
    """The kernel, compiled on first use (numba's import and LLVM cost ~0.4 s and ~130 MB,
    paid only by processes that fit windows; the machine code is cached on disk)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_fit_kernel)


def _fit_kernel(t, u, starts, stops, k_types, beta, mu0, alpha0, max_iter, tol,
                mu_out, alpha_out, stderr_out, conf_out, present_out, events_out, iters_out):
    n_max = 1
    for w in range(len(starts)):
        n_max = max(n_max, stops[w] - starts[w])
    tt = np.empty(n_max)
    uu = np.empty(n_max, np.int64)
    r = np.empty((n_max, k_types))
    comp = np.empty(k_types)
    new_mu = np.empty(k_types)
    num = np.empty((k_types, k_types))
    for w in range(len(starts)):
        n = 0
        for i in range(starts[w], stops[w]):
            v = u[i]
            if v >= 0 and v < k_types:
                tt[n] = t[i]
                uu[n] = v
                present_out[w, v] = True
                n += 1
        events_out[w] = n
        mu = mu_out[w]
        alpha = alpha_out[w]
        for k in range(k_types):
            mu[k] = mu0[k]
            for v in range(k_types):
                alpha[k, v] = max(alpha0[k, v], 1e-3)
        if n == 0:
            stderr_out[w, :, :] = np.inf
            conf_out[w, :, :] = 0.0
            iters_out[w] = 0
            continue
        span = max(tt[n - 1] - tt[0], 1e-12)
        for k in range(k_types):
            r[0, k] = 0.0
            comp[k] = 0.0
        for i in range(1, n):
            d = math.exp(-beta * (tt[i] - tt[i - 1]))
            for k in range(k_types):
                r[i, k] = d * r[i - 1, k]
            r[i, uu[i - 1]] += beta * d
        for i in range(n):
            comp[uu[i]] += 1.0 - math.exp(-beta * (tt[n - 1] - tt[i]))
        for k in range(k_types):
            comp[k] = max(comp[k], 1e-12)
        it = 0
        while it < max_iter:
            it += 1
            new_mu[:] = 0.0
            num[:, :] = 0.0
            for i in range(n):
                v = uu[i]
                lam = mu[v]
                for k in range(k_types):
                    lam += alpha[k, v] * r[i, k]
                inv = 1.0 / lam
                new_mu[v] += mu[v] * inv
                for k in range(k_types):
                    num[k, v] += alpha[k, v] * r[i, k] * inv
            step = 0.0
            for k in range(k_types):
                for v in range(k_types):
                    a = num[k, v] / comp[k]
                    step = max(step, abs(a - alpha[k, v]))
                    alpha[k, v] = a
            for v in range(k_types):
                mu[v] = new_mu[v] / span
            if step <= tol:
                break
        iters_out[w] = it
        num[:, :] = 0.0  # now the observed information
        for i in range(n):
            v = uu[i]
            lam = mu[v]
            for k in range(k_types):
                lam += alpha[k, v] * r[i, k]
            for k in range(k_types):
                g = r[i, k] / lam
                num[k, v] += g * g
        for k in range(k_types):
            for v in range(k_types):
                se = 1.0 / math.sqrt(max(num[k, v], 1e-300))
                stderr_out[w, k, v] = se
                conf_out[w, k, v] = math.erf(alpha[k, v] / se / math.sqrt(2.0))


@dataclass
class WindowFits:
    """Per-window parameters: ``mu (W, K)``, ``alpha (W, K, K)``, ``stderr (W, K, K)``."""

    mu: np.ndarray
    alpha: np.ndarray
    stderr: np.ndarray
    confidence: np.ndarray  # erf(z / sqrt 2), z = alpha / stderr: 1 - two-sided p-value
    present: np.ndarray  # (W, K) bool: the type occurs in the window
    events: np.ndarray  # (W,) events of fitted types in the window
    iterations: np.ndarray  # (W,) EM iterations each window took


def fit_window_ranges(t: np.ndarray, u: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                      k_types: int, beta: float, init: tuple[np.ndarray, np.ndarray], *,
                      max_iter: int = 60, tol: float = 1e-3) -> WindowFits:
    """Fit every window ``t[starts[w]:stops[w]]`` (sorted times in seconds, type indices
    ``u`` in ``0..k_types-1``; other values are left out)."""
    n_win = len(starts)
    mu = np.empty((n_win, k_types))
    alpha = np.empty((n_win, k_types, k_types))
    stderr = np.empty((n_win, k_types, k_types))
    conf = np.empty((n_win, k_types, k_types))
    present = np.zeros((n_win, k_types), dtype=np.bool_)
    events = np.zeros(n_win, dtype=np.int64)
    iters = np.zeros(n_win, dtype=np.int64)
    if n_win:
        _compiled()(np.ascontiguousarray(t, dtype=np.float64),
                    np.ascontiguousarray(u, dtype=np.int64),
                    np.ascontiguousarray(starts, dtype=np.int64),
                    np.ascontiguousarray(stops, dtype=np.int64), int(k_types), float(beta),
                    np.ascontiguousarray(init[0], dtype=np.float64),
                    np.ascontiguousarray(init[1], dtype=np.float64), int(max_iter), float(tol),
                    mu, alpha, stderr, conf, present, events, iters)
    return WindowFits(mu, alpha, stderr, conf, present, events, iters)


def window_edges(fits: WindowFits, type_ids: np.ndarray, beta: float, min_weight: float,
                 min_confidence: float, min_events: int = 3) -> list[list[Excitation]]:
    """Per window, the edges among the types present in it with ``weight >= min_weight``
    and ``confidence >= min_confidence``, strongest first; ``type_ids`` maps the fit's
    type indices to vocabulary ids. A window of fewer than ``min_events`` fitted events
    has no edges."""
    conf, present = fits.confidence, fits.present
    enough = fits.events >= min_events
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
