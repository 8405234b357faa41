"""The compiled EM of a multivariate exponential Hawkes process, for one fit or thousands.

One kernel serves both fits: the whole log's (one parameter set over many sequences)
and the windows' (one parameter set per window). Events are given as position ranges
``[starts[r], stops[r])`` into sorted times ``t`` and type indices ``u``; ranges are
grouped (``groups[g]:groups[g + 1]``), and each group is one fit with its own
``mu`` and ``alpha``. Within a range the excitation sums
``R[i, k] = sum over earlier type-k events j of beta exp(-beta (t_i - t_j))`` follow the
exact recursion

    R[i, k] = exp(-beta (t_i - t_{i-1})) * (R[i-1, k] + beta * #(type-k events at t_{i-1}))

(``O(n K)``, no overflow however long the range). Events at the same instant do not
excite each other (their order in the log says nothing about cause), and no event
excites across ranges. A
range is observed from its first to its last event. EM (Lewis & Mohler 2011; Veen &
Schoenberg 2008) stops a fit when no branching ratio moves by more than ``tol`` and
no background rate by more than ``tol`` relative. The observed Fisher information
of ``alpha[k, u]`` gives its standard error, and ``erf(alpha / stderr / sqrt 2)`` its
confidence (one minus the two-sided p-value of "no excitation"). Types outside
``0..K-1`` are left out. numba compiles it on first use (~0.4 s and ~130 MB, paid only
by processes that fit) and caches the machine code on disk.

The fit is total: it never raises and never returns NaN or inf.

- A type whose events are all explained by excitation has its background rate driven
  towards 0 by EM (a rare type that always follows another). Reused as the starting
  point of a window where nothing earlier excites it, an exact 0 gives that event zero
  intensity. So every background rate is floored at ``MU_FLOOR`` times the group's mean
  rate per type (events / (K * span)); ``floored`` says which present types sit on it.
- All events at one instant (span 0): the span counts as ``1e-12`` s.
- A standard error without information is ``STDERR_CAP`` (finite: the manifest is JSON).
- Division by zero gives inf rather than an exception (numba's numpy error model), and
  every group's results are checked: one with a non-finite number gets ``status`` 1
  (its starting values, no confidence), the other groups are unaffected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

MU_FLOOR = 1e-6  # least background rate, as a fraction of the group's mean rate per type
STDERR_CAP = 1e150  # the standard error of a ratio the data say nothing about
MIN_SPAN = 1e-12  # seconds: the span of a group whose events are all at one instant
STATUS_OK = 0
STATUS_NONFINITE = 1  # the EM produced a non-finite number: starting values kept


@cache
def _compiled() -> Any:
    import numba

    return numba.njit(cache=True, nogil=True, error_model="numpy")(_em_kernel)


def _em_kernel(t, u, starts, stops, groups, k_types, beta, mu0, alpha0, from_counts, prior,
               max_iter, tol, mu_out, alpha_out, stderr_out, conf_out, present_out,
               events_out, iters_out, ll_out, triggered_out, floored_out, floor_out,
               status_out):
    n_max = 1
    for g in range(len(groups) - 1):
        size = 0
        for r in range(groups[g], groups[g + 1]):
            size += stops[r] - starts[r]
        n_max = max(n_max, size)
    tt = np.empty(n_max)
    uu = np.empty(n_max, np.int64)
    r_sum = np.empty((n_max, k_types))
    comp = np.empty(k_types)
    tied = np.empty(k_types)
    counts = np.empty(k_types)
    new_mu = np.empty(k_types)
    num = np.empty((k_types, k_types))
    for g in range(len(groups) - 1):
        n = 0
        span = 0.0
        comp[:] = 0.0
        counts[:] = 0.0
        for r in range(groups[g], groups[g + 1]):
            first = n
            for i in range(starts[r], stops[r]):
                v = u[i]
                if v >= 0 and v < k_types:
                    tt[n] = t[i]
                    uu[n] = v
                    present_out[g, v] = True
                    counts[v] += 1.0
                    n += 1
            if n == first:
                continue
            span += tt[n - 1] - tt[first]
            for k in range(k_types):
                r_sum[first, k] = 0.0
                tied[k] = 0.0
            tied[uu[first]] = 1.0
            for i in range(first + 1, n):
                if tt[i] > tt[i - 1]:  # the events at the previous instant now count
                    d = math.exp(-beta * (tt[i] - tt[i - 1]))
                    for k in range(k_types):
                        r_sum[i, k] = d * (r_sum[i - 1, k] + beta * tied[k])
                        tied[k] = 0.0
                else:  # an event cannot be triggered by one at the same instant
                    for k in range(k_types):
                        r_sum[i, k] = r_sum[i - 1, k]
                tied[uu[i]] += 1.0
            for i in range(first, n):
                comp[uu[i]] += 1.0 - math.exp(-beta * (tt[n - 1] - tt[i]))
        events_out[g] = n
        mu = mu_out[g]
        alpha = alpha_out[g]
        if not span > MIN_SPAN:  # also NaN (times that are not finite)
            span = MIN_SPAN
        floor = MU_FLOOR * max(n, 1) / (k_types * span)
        if not floor > 1e-300:
            floor = 1e-300
        floor_out[g] = floor
        status_out[g] = STATUS_OK
        for k in range(k_types):
            comp[k] = max(comp[k], 1e-12)
            if from_counts:
                mu[k] = max(counts[k], 1.0) / (2.0 * span)
            else:
                mu[k] = mu0[k]
            if not (mu[k] >= floor and mu[k] < 1e300):  # also NaN
                mu[k] = floor
            for v in range(k_types):
                a0 = alpha0[k, v]
                alpha[k, v] = 0.5 / k_types if from_counts else (a0 if a0 >= 1e-3 else 1e-3)
        if n == 0:
            stderr_out[g, :, :] = STDERR_CAP
            conf_out[g, :, :] = 0.0
            iters_out[g] = 0
            ll_out[g] = 0.0
            continue
        it = 0
        while it < max_iter:
            it += 1
            new_mu[:] = 0.0
            num[:, :] = 0.0
            for i in range(n):
                v = uu[i]
                lam = mu[v]
                for k in range(k_types):
                    lam += alpha[k, v] * r_sum[i, k]
                if not lam > 1e-300:  # cannot happen with mu >= floor, unless NaN got in
                    lam = 1e-300
                inv = 1.0 / lam
                new_mu[v] += mu[v] * inv
                for k in range(k_types):
                    num[k, v] += alpha[k, v] * r_sum[i, k] * inv
            step = 0.0
            for k in range(k_types):
                for v in range(k_types):
                    a = (num[k, v] + prior * alpha0[k, v]) / (comp[k] + prior)
                    step = max(step, abs(a - alpha[k, v]))
                    alpha[k, v] = a
            for v in range(k_types):
                m = new_mu[v] / span
                if not m >= floor:
                    m = floor
                step = max(step, abs(m - mu[v]) / max(mu[v], 1e-300))
                mu[v] = m
            if step <= tol or step != step:
                break
        iters_out[g] = it
        num[:, :] = 0.0  # now the observed information
        trig = triggered_out[g]
        trig[:, :] = 0.0
        ll = 0.0
        for i in range(n):
            v = uu[i]
            lam = mu[v]
            for k in range(k_types):
                lam += alpha[k, v] * r_sum[i, k]
            if not lam > 1e-300:
                lam = 1e-300
            ll += math.log(lam)
            for k in range(k_types):
                q = r_sum[i, k] / lam
                num[k, v] += q * q
                trig[k, v] += alpha[k, v] * q
        finite = True
        for k in range(k_types):
            ll -= mu[k] * span
            floored_out[g, k] = present_out[g, k] and mu[k] <= floor * (1.0 + 1e-9)
            finite = finite and math.isfinite(mu[k])
            for v in range(k_types):
                ll -= alpha[k, v] * comp[k]
                se = 1.0 / math.sqrt(max(num[k, v], 1e-300))
                if not se <= STDERR_CAP:
                    se = STDERR_CAP
                stderr_out[g, k, v] = se
                conf_out[g, k, v] = math.erf(alpha[k, v] / se / math.sqrt(2.0))
                finite = (finite and math.isfinite(alpha[k, v]) and math.isfinite(se)
                          and math.isfinite(conf_out[g, k, v])
                          and math.isfinite(trig[k, v]))
        ll_out[g] = ll
        if not (finite and math.isfinite(ll)):  # keep the starting values, claim nothing
            status_out[g] = STATUS_NONFINITE
            ll_out[g] = 0.0
            for k in range(k_types):
                m0 = max(counts[k], 1.0) / (2.0 * span) if from_counts else mu0[k]
                mu[k] = m0 if (m0 >= floor and math.isfinite(m0)) else floor
                floored_out[g, k] = False
                for v in range(k_types):
                    a0 = 0.5 / k_types if from_counts else alpha0[k, v]
                    alpha[k, v] = a0 if (a0 >= 0.0 and math.isfinite(a0)) else 0.0
                    stderr_out[g, k, v] = STDERR_CAP
                    conf_out[g, k, v] = 0.0
                    trig[k, v] = 0.0


@dataclass
class Fits:
    """One row per group: ``mu (G, K)``, ``alpha (G, K, K)`` (row: cause, column: effect)."""

    mu: np.ndarray
    alpha: np.ndarray
    stderr: np.ndarray
    confidence: np.ndarray  # erf(z / sqrt 2), z = alpha / stderr
    present: np.ndarray  # (G, K) bool: the type occurs in the group's events
    events: np.ndarray  # (G,) events of fitted types
    iterations: np.ndarray  # (G,) EM iterations each fit took
    loglik: np.ndarray  # (G,) log-likelihood at the fit
    triggered: np.ndarray  # (G, K, K) expected number of u-events that k-events triggered
    floored: np.ndarray  # (G, K) bool: a present type whose background rate sits on the floor
    floor: np.ndarray  # (G,) the background-rate floor (events/s)
    status: np.ndarray  # (G,) STATUS_OK, or STATUS_NONFINITE: starting values, no confidence


def _clean(values: np.ndarray, most: float) -> np.ndarray:
    """Starting values as finite numbers in ``[0, most]`` (NaN: 0)."""
    arr = np.asarray(values, dtype=np.float64)
    return np.clip(np.nan_to_num(arr, nan=0.0, posinf=most, neginf=0.0), 0.0, most)


def fit_ranges(t: np.ndarray, u: np.ndarray, starts: np.ndarray, stops: np.ndarray,
               groups: np.ndarray, k_types: int, beta: float,
               init: tuple[np.ndarray, np.ndarray] | None, *, max_iter: int,
               tol: float, prior: float = 0.0) -> Fits:
    """Fit each group of ranges (see the module doc). ``init`` None: background rates from
    the type counts and every branching ratio ``0.5 / K``. ``prior`` > 0: a Gamma prior
    on each branching ratio with its mode at ``init``'s, worth ``prior`` events of full
    exposure (the M-step becomes ``(triggered + prior * alpha0) / (exposure + prior)``):
    a window where a type has almost no time left to trigger anything (its events at the
    window's end, or tied with the next one) stays near the whole log's estimate instead
    of running off to 1e14."""
    n_groups = len(groups) - 1
    shape = (n_groups, k_types, k_types)
    out = Fits(np.empty((n_groups, k_types)), np.empty(shape), np.empty(shape), np.empty(shape),
               np.zeros((n_groups, k_types), dtype=np.bool_), np.zeros(n_groups, np.int64),
               np.zeros(n_groups, np.int64), np.zeros(n_groups), np.zeros(shape),
               np.zeros((n_groups, k_types), dtype=np.bool_), np.zeros(n_groups),
               np.zeros(n_groups, np.int64))
    if n_groups == 0:
        return out
    mu0 = np.zeros(k_types) if init is None else _clean(init[0], 1e300)
    alpha0 = np.zeros((k_types, k_types)) if init is None else _clean(init[1], 1e6)
    _compiled()(np.ascontiguousarray(t, dtype=np.float64),
                np.ascontiguousarray(u, dtype=np.int64),
                np.ascontiguousarray(starts, dtype=np.int64),
                np.ascontiguousarray(stops, dtype=np.int64),
                np.ascontiguousarray(groups, dtype=np.int64), int(k_types), float(beta),
                np.ascontiguousarray(mu0), np.ascontiguousarray(alpha0), init is None,
                float(prior if init is not None else 0.0), int(max_iter), float(tol), out.mu,
                out.alpha, out.stderr, out.confidence, out.present, out.events, out.iterations,
                out.loglik, out.triggered, out.floored, out.floor, out.status)
    return out
