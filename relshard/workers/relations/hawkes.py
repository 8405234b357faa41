"""Which event type excites which: a multivariate Hawkes process fitted by EM.

The model, for event types ``u = 0..K-1``::

    lambda_u(t) = mu_u + sum_k alpha[k, u] * sum_{t_j < t, type_j = k} beta * exp(-beta (t - t_j))

``alpha[k, u]`` is the branching ratio: how many type-``u`` events one type-``k``
event triggers on average; ``1 / beta`` is the mean delay of a triggered event.
For a fixed ``beta`` the excitation sums ``R[i, k]`` do not change between EM
iterations, so they are computed once, vectorized, with a running log-sum-exp
(``np.logaddexp.accumulate``: no overflow however long the sequence), and each EM
iteration (Lewis & Mohler 2011; Veen & Schoenberg 2008) costs ``O(n K)``.
``beta`` is chosen on a log grid around the inverse median gap by likelihood,
unless given.

Confidence: the observed Fisher information of ``alpha[k, u]`` gives a standard
error; ``confidence = erf(z / sqrt 2)`` with ``z = alpha / stderr`` is one minus
the two-sided p-value of "no excitation".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_BETA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
_GAP = 1000.0
_GOLDEN_STEPS = 8
_SEARCH_EVENTS = 30_000
_SEARCH_ITER = 100  # sequences are laid end to end, this many kernel lengths apart


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
    loglik: float
    n_events: int
    iterations: int

    @property
    def confidence(self) -> np.ndarray:
        z = self.alpha / np.maximum(self.stderr, 1e-300)
        return np.vectorize(lambda v: math.erf(v / math.sqrt(2.0)))(z)

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
class _Layout:
    """Sequences laid end to end on one time axis."""

    t: np.ndarray
    u: np.ndarray
    end: np.ndarray  # per event: the end of its sequence's observation window
    total_time: float


def _layout(seqs: list[tuple[np.ndarray, np.ndarray]], beta_min: float) -> _Layout:
    ts, us, ends = [], [], []
    offset, total = 0.0, 0.0
    gap = _GAP / beta_min
    for times, types in seqs:
        if len(times) == 0:
            continue
        span = float(times[-1] - times[0])
        ts.append(times - times[0] + offset)
        us.append(types)
        ends.append(np.full(len(times), offset + span))
        total += span
        offset += span + gap
    if not ts:
        return _Layout(np.zeros(0), np.zeros(0, np.int64), np.zeros(0), 0.0)
    return _Layout(np.concatenate(ts), np.concatenate(us).astype(np.int64),
                   np.concatenate(ends), max(total, 1e-12))


def excitation_sums(t: np.ndarray, u: np.ndarray, k_types: int, beta: float) -> np.ndarray:
    """``R[i, k] = sum_{j < i, type_j = k} beta exp(-beta (t_i - t_j))``, shape (n, K)."""
    n = len(t)
    out = np.zeros((n, k_types))
    if n < 2:
        return out
    bt = beta * t
    for k in range(k_types):
        x = np.where(u == k, bt, -np.inf)
        acc = np.logaddexp.accumulate(x)
        prev = np.concatenate(([-np.inf], acc[:-1]))
        with np.errstate(invalid="ignore"):
            out[:, k] = beta * np.exp(prev - bt)
    out[~np.isfinite(out)] = 0.0
    return out


def _em(lay: _Layout, k_types: int, beta: float, max_iter: int, tol: float,
        init: tuple[np.ndarray, np.ndarray] | None = None) -> HawkesFit:
    t, u, n = lay.t, lay.u, len(lay.t)
    r = excitation_sums(t, u, k_types, beta)
    comp = np.bincount(u, weights=1.0 - np.exp(-beta * (lay.end - t)), minlength=k_types)
    comp = np.maximum(comp, 1e-12)
    counts = np.bincount(u, minlength=k_types).astype(np.float64)
    if init is not None:
        mu, alpha = init[0].copy(), np.maximum(init[1], 1e-3)
    else:
        mu = np.maximum(counts, 1.0) / (2.0 * lay.total_time)
        alpha = np.full((k_types, k_types), 0.5 / k_types)
    onehot = np.zeros((n, k_types))
    onehot[np.arange(n), u] = 1.0
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        contrib = r * alpha.T[u]  # (n, K): alpha[k, u_i] R[i, k]
        lam = mu[u] + contrib.sum(axis=1)
        resp = contrib / lam[:, None]
        new_mu = np.bincount(u, weights=mu[u] / lam, minlength=k_types) / lay.total_time
        new_alpha = (onehot.T @ resp).T / comp[:, None]
        step = max(float(np.abs(new_alpha - alpha).max()),
                   float((np.abs(new_mu - mu) / np.maximum(mu, 1e-300)).max()))
        mu, alpha = new_mu, new_alpha
        if step <= tol:
            break
    contrib = r * alpha.T[u]
    lam = mu[u] + contrib.sum(axis=1)
    ll = float(np.log(lam).sum() - mu.sum() * lay.total_time - (alpha.sum(1) * comp).sum())
    info = onehot.T @ ((r / lam[:, None]) ** 2)  # (K_u, K_k)
    stderr = 1.0 / np.sqrt(np.maximum(info.T, 1e-300))
    return HawkesFit(mu=mu, alpha=alpha, beta=beta, stderr=stderr, loglik=ll, n_events=n,
                     iterations=it)


def default_beta(seqs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The inverse of the median positive gap between consecutive events."""
    gaps = [np.diff(t) for t, _ in seqs if len(t) > 1]
    pos = np.concatenate(gaps) if gaps else np.zeros(0)
    pos = pos[pos > 0]
    return 1.0 / float(np.median(pos)) if len(pos) else 1.0


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
        return _em(_layout(seqs, beta), k_types, beta, max_iter, tol, init)
    base = default_beta(seqs)
    grid = [base * g for g in _BETA_GRID]
    lay = _layout(_subsample(seqs, _SEARCH_EVENTS), min(grid) / 10.0)
    fits: dict[float, HawkesFit] = {}
    prev: HawkesFit | None = None
    for b in grid:
        prev = fits[b] = _em(lay, k_types, b, min(max_iter, _SEARCH_ITER), 1e-4,
                             (prev.mu, prev.alpha) if prev else init)
    i = int(np.argmax([fits[b].loglik for b in grid]))
    lo = math.log(grid[max(i - 1, 0)] / (10.0 if i == 0 else 1.0))
    hi = math.log(grid[min(i + 1, len(grid) - 1)] * (10.0 if i == len(grid) - 1 else 1.0))

    def score(x: float) -> float:
        b = math.exp(x)
        near = min(fits, key=lambda v: abs(math.log(v) - x))
        fits[b] = _em(lay, k_types, b, min(max_iter, _SEARCH_ITER), 1e-4,
                      (fits[near].mu, fits[near].alpha))
        return fits[b].loglik

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
    best_beta = max(fits, key=lambda b: fits[b].loglik)
    best = fits[best_beta]
    return _em(_layout(seqs, best_beta), k_types, best_beta, max_iter, tol,
               (best.mu, best.alpha))


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
