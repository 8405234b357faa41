"""Draw event sequences from a known multivariate exponential Hawkes process.

Uses the branching (cluster) representation, vectorized by generation: immigrants
of type ``u`` arrive as a Poisson process of rate ``mu[u]`` on ``[0, horizon)``;
every event of type ``k`` has ``Poisson(alpha[k, u])`` children of type ``u``, each
``Exponential(1 / beta)`` after its parent; children past the horizon are dropped.
Exact for a stationary process (spectral radius of ``alpha`` below 1). Used by the
tests (does the fit recover what was planted?) and by the benchmark.
"""

from __future__ import annotations

import numpy as np


def simulate_hawkes(mu: np.ndarray, alpha: np.ndarray, beta: float, horizon: float,
                    rng: np.random.Generator, max_events: int = 50_000_000
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Return (times sorted ascending, int64 types) of one sequence on ``[0, horizon)``."""
    mu = np.asarray(mu, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    k_types = len(mu)
    if np.max(np.abs(np.linalg.eigvals(alpha))) >= 1:
        raise ValueError("alpha's spectral radius must be below 1 for a stationary process")
    counts = rng.poisson(mu * horizon)
    gen_t = rng.uniform(0.0, horizon, counts.sum())
    gen_u = np.repeat(np.arange(k_types), counts)
    all_t, all_u = [gen_t], [gen_u]
    total = len(gen_t)
    while len(gen_t) and total < max_events:
        kids = rng.poisson(alpha[gen_u])  # (n, K) children per parent and type
        n_kids = kids.sum(axis=1)
        parent_t = np.repeat(gen_t, n_kids)
        kid_u = np.concatenate([np.repeat(np.arange(k_types), row) for row in kids]) \
            if len(kids) < 1000 else _types_of(kids)
        kid_t = parent_t + rng.exponential(1.0 / beta, len(parent_t))
        keep = kid_t < horizon
        gen_t, gen_u = kid_t[keep], kid_u[keep]
        all_t.append(gen_t)
        all_u.append(gen_u)
        total += len(gen_t)
    t = np.concatenate(all_t)
    u = np.concatenate(all_u).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], u[order]


def _types_of(kids: np.ndarray) -> np.ndarray:
    """Child types in parent order, from a (parents, K) count matrix."""
    k_types = kids.shape[1]
    return np.repeat(np.tile(np.arange(k_types), len(kids)), kids.ravel())
