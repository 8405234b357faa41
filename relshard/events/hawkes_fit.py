"""Which event type excites which: a multivariate Hawkes process fitted by EM.

The model, for event types ``u = 0..K-1``::

    lambda_u(t) = mu_u + sum_k alpha[k, u] * sum_{t_j < t, type_j = k} beta * exp(-beta (t - t_j))

``alpha[k, u]`` is the branching ratio: how many type-``u`` events one type-``k``
event triggers on average; ``1 / beta`` is the mean delay of a triggered event.
For a fixed ``beta`` the excitation sums ``R[i, k]`` do not change between EM
iterations: they are computed once, and each EM iteration costs ``O(n K)`` (the
compiled kernel of :mod:`.em_kernel`, shared with the per-window fits). ``beta`` is
chosen by likelihood on a log grid around the inverse median gap, then refined by
golden-section search, unless given.

Confidence: the observed Fisher information of ``alpha[k, u]`` gives a standard
error; ``confidence = erf(z / sqrt 2)`` with ``z = alpha / stderr`` is one minus
the two-sided p-value of "no excitation".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from relshard.events.em_kernel import STATUS_OK, fit_ranges

BETA_MIN, BETA_MAX = 1e-12, 1e12  # 1/s: decays searched (mean delays of 1e-12 s to 31,700 years)
_BETA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
_GOLDEN_STEPS = 8
_SEARCH_EVENTS = 30_000
_SEARCH_ITER = 100  # EM iterations per candidate beta


@dataclass(frozen=True)
class Excitation:
    """One edge: events of type ``source`` trigger events of type ``target``."""

    source: int
    target: int
    weight: float  # branching ratio alpha[source, target]
    stderr: float
    confidence: float
    delay: float  # mean delay 1 / beta, in the time unit of the input (seconds)


@dataclass(eq=False)
class HawkesFit:
    mu: np.ndarray  # (K,) background rates, events per second
    alpha: np.ndarray  # (K, K) branching ratios, row: cause, column: effect
    beta: float  # kernel decay, 1/seconds
    stderr: np.ndarray  # (K, K)
    confidence: np.ndarray  # (K, K) erf(alpha / stderr / sqrt 2), from the kernel
    loglik: float
    n_events: int
    iterations: int
    ok: bool = True  # False: the EM produced a non-finite number; no confidence is claimed
    floored: np.ndarray | None = None  # (K,) bool: background rate on the floor (see em_kernel)
    mu_floor: float = 0.0  # that floor, events/s

    def excitations(self, min_weight: float = 0.05, min_confidence: float = 0.9,
                    types: np.ndarray | None = None) -> list[Excitation]:
        """Edges with ``weight >= min_weight`` and ``confidence >= min_confidence``, strongest
        first; ``types`` maps the fit's type indices back to vocabulary ids."""
        conf = self.confidence
        ids = np.arange(len(self.mu)) if types is None else np.asarray(types)
        out = [
            Excitation(int(ids[k]), int(ids[u]), float(self.alpha[k, u]),
                       float(self.stderr[k, u]), float(conf[k, u]), 1.0 / self.beta)
            for k in range(len(self.mu)) for u in range(len(self.mu))
            if self.alpha[k, u] >= min_weight and conf[k, u] >= min_confidence
        ]
        return sorted(out, key=lambda e: (-e.weight, e.source, e.target))


@dataclass
class _Ranges:
    """Sequences as ranges of one array (no event excites across sequences)."""

    t: np.ndarray
    u: np.ndarray
    starts: np.ndarray
    stops: np.ndarray


def _ranges(seqs: list[tuple[np.ndarray, np.ndarray]]) -> _Ranges:
    seqs = [(t, u) for t, u in seqs if len(t)]
    lengths = np.array([len(t) for t, _ in seqs], dtype=np.int64)
    stops = np.cumsum(lengths)
    if not seqs:
        return _Ranges(np.zeros(0), np.zeros(0, np.int64), stops, stops)
    return _Ranges(np.concatenate([t for t, _ in seqs]).astype(np.float64),
                   np.concatenate([u for _, u in seqs]).astype(np.int64), stops - lengths, stops)


def _em(rng: _Ranges, k_types: int, beta: float, max_iter: int, tol: float,
        init: tuple[np.ndarray, np.ndarray] | None = None) -> HawkesFit:
    """One EM fit over all the sequences (the compiled kernel, one group)."""
    fits = fit_ranges(rng.t, rng.u, rng.starts, rng.stops, np.array([0, len(rng.starts)]),
                      k_types, beta, init, max_iter=max_iter, tol=tol)
    return HawkesFit(mu=fits.mu[0], alpha=fits.alpha[0], beta=beta, stderr=fits.stderr[0],
                     confidence=fits.confidence[0], loglik=float(fits.loglik[0]),
                     n_events=int(fits.events[0]), iterations=int(fits.iterations[0]),
                     ok=bool(fits.status[0] == STATUS_OK), floored=fits.floored[0],
                     mu_floor=float(fits.floor[0]))


def _clamp_beta(beta: float) -> float:
    return float(min(max(beta, BETA_MIN), BETA_MAX)) if math.isfinite(beta) else 1.0


def default_beta(seqs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The inverse of the median positive gap between consecutive events (1 when there is
    none: every event at one instant), within ``[BETA_MIN, BETA_MAX]``."""
    gaps = [np.diff(t) for t, _ in seqs if len(t) > 1]
    pos = np.concatenate(gaps) if gaps else np.zeros(0)
    pos = pos[(pos > 0) & np.isfinite(pos)]
    return _clamp_beta(1.0 / float(np.median(pos))) if len(pos) else 1.0


def _score(fit: HawkesFit) -> float:
    """What the search for ``beta`` maximizes: the log-likelihood of a fit that worked."""
    return fit.loglik if fit.ok else -math.inf


def fit_hawkes(seqs: list[tuple[np.ndarray, np.ndarray]], k_types: int, *,
               beta: float | None = None, max_iter: int = 300, tol: float = 1e-5,
               init: tuple[np.ndarray, np.ndarray] | None = None) -> HawkesFit:
    """Fit a K-type exponential Hawkes process to sequences of (sorted times, type ids).

    Times are in seconds; each sequence is observed from its first to its last event.
    ``beta`` None: the profile likelihood is maximized over ``log beta`` (a coarse grid
    around :func:`default_beta`, then golden-section search, EM warm-started from the
    nearest fit). ``init``: starting ``(mu, alpha)``, e.g. the whole log's fit.
    """
    if k_types < 1:
        raise ValueError("k_types must be at least 1")
    if beta is not None:
        return _em(_ranges(seqs), k_types, _clamp_beta(beta), max_iter, tol, init)
    base = default_beta(seqs)
    grid = sorted({_clamp_beta(base * g) for g in _BETA_GRID})
    lay = _ranges(_subsample(seqs, _SEARCH_EVENTS))
    fits: dict[float, HawkesFit] = {}
    prev: HawkesFit | None = None
    for b in grid:
        prev = fits[b] = _em(lay, k_types, b, min(max_iter, _SEARCH_ITER), 1e-4,
                             (prev.mu, prev.alpha) if prev else init)
    i = int(np.argmax([_score(fits[b]) for b in grid]))
    lo = max(math.log(grid[max(i - 1, 0)] / (10.0 if i == 0 else 1.0)), math.log(BETA_MIN))
    hi = min(math.log(grid[min(i + 1, len(grid) - 1)] * (10.0 if i == len(grid) - 1 else 1.0)),
             math.log(BETA_MAX))

    def score(x: float) -> float:
        b = math.exp(x)
        near = min(fits, key=lambda v: abs(math.log(v) - x))
        fits[b] = _em(lay, k_types, b, min(max_iter, _SEARCH_ITER), 1e-4,
                      (fits[near].mu, fits[near].alpha))
        return _score(fits[b])

    golden = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fc, fd = score(c), score(d)
    for _ in range(_GOLDEN_STEPS):
        if fc > fd:
            hi, d, fd = d, c, fc
            c = hi - golden * (hi - lo)
            fc = score(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + golden * (hi - lo)
            fd = score(d)
    best_beta = max(fits, key=lambda b: _score(fits[b]))
    best = fits[best_beta]
    return _em(_ranges(seqs), k_types, best_beta, max_iter, tol, (best.mu, best.alpha))


def _subsample(seqs: list[tuple[np.ndarray, np.ndarray]],
               limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole sequences (the last one cut) until ``limit`` events: where ``beta`` is searched."""
    out, total = [], 0
    for t, u in seqs:
        take = min(len(t), limit - total)
        if take >= 2:
            out.append((t[:take], u[:take]))
            total += take
        if total >= limit:
            break
    return out or seqs
