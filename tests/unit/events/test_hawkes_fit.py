"""The Hawkes fit recovers the excitation planted in simulated logs.

Tolerances (stated): with ~5,000 events of a 3-type process, every planted branching
ratio is recovered within 0.1 absolute (the fit's standard errors are ~0.03), every
absent edge stays below 0.08, the decay within a factor 1.5, and the planted edges
are the only ones with confidence >= 0.99 and weight >= 0.1.
"""

from __future__ import annotations

import numpy as np
import pytest

from relshard.events.fit_batch import fit_window_ranges, window_edges
from relshard.events.hawkes_fit import fit_hawkes
from relshard.events.simulate import simulate_hawkes

MU = np.array([0.2, 0.2, 0.1])
ALPHA = np.array([[0.0, 0.6, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.0]])
BETA = 2.0


@pytest.fixture(scope="module")
def seqs():
    rng = np.random.default_rng(7)
    return [simulate_hawkes(MU, ALPHA, BETA, 2500.0, rng) for _ in range(2)]


def fit_windows(windows, k_types, beta, init, **kw):
    """fit_window_ranges over windows given as separate (times, types) arrays."""
    lengths = np.array([len(t) for t, _ in windows], dtype=np.int64)
    stops = np.cumsum(lengths)
    t = np.concatenate([t for t, _ in windows])
    u = np.concatenate([u for _, u in windows])
    return fit_window_ranges(t, u, stops - lengths, stops, k_types, beta, init, **kw)


def test_a_type_seen_once_at_a_windows_end_keeps_a_bounded_weight():
    """Type 2 occurs once, 0.01 s before the last event: no exposure to trigger anything,
    so maximum likelihood runs its branching ratio off; the window prior keeps it near the
    whole log's (0.01 here) and records no edge."""
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 200, 120))
    u = rng.integers(0, 2, 120)
    t = np.append(t, [t[-1] + 0.01, t[-1] + 0.02])
    u = np.append(u, [2, 1])
    init = (np.full(3, 0.2), np.full((3, 3), 0.01))
    ml = fit_windows([(t, u)], 3, 2.0, init, max_iter=2000, tol=1e-9, prior=0.0)
    assert ml.alpha[0, 2, 1] > 10  # the degenerate maximum-likelihood answer
    mapped = fit_windows([(t, u)], 3, 2.0, init, max_iter=2000, tol=1e-9)
    assert mapped.alpha[0, 2, 1] < 1.5
    edges = window_edges(mapped, np.arange(3), 2.0, 0.1, 0.99)[0]
    assert not [e for e in edges if e.source == 2]


def _reference_em(seqs, k_types, beta, iters):
    """EM written the plain way (numpy, excitation by the direct double sum)."""
    r_all, u_all, comp, span = [], [], np.zeros(k_types), 0.0
    for t, u in seqs:
        r = np.zeros((len(t), k_types))
        for i in range(len(t)):
            for j in range(len(t)):
                if t[j] < t[i]:  # strictly earlier: simultaneous events do not excite
                    r[i, u[j]] += beta * np.exp(-beta * (t[i] - t[j]))
        r_all.append(r)
        u_all.append(u)
        comp += np.bincount(u, weights=1 - np.exp(-beta * (t[-1] - t)), minlength=k_types)
        span += t[-1] - t[0]
    r, u = np.concatenate(r_all), np.concatenate(u_all)
    mu = np.maximum(np.bincount(u, minlength=k_types), 1.0) / (2 * span)
    alpha = np.full((k_types, k_types), 0.5 / k_types)
    for _ in range(iters):
        contrib = r * alpha.T[u]
        lam = mu[u] + contrib.sum(axis=1)
        mu = np.bincount(u, weights=mu[u] / lam, minlength=k_types) / span
        alpha = np.stack([np.bincount(u, weights=contrib[:, k] / lam, minlength=k_types)
                          for k in range(k_types)]) / comp[:, None]
    lam = mu[u] + (r * alpha.T[u]).sum(axis=1)
    loglik = np.log(lam).sum() - mu.sum() * span - (alpha.sum(1) * comp).sum()
    info = np.stack([np.bincount(u, weights=(r[:, k] / lam) ** 2, minlength=k_types)
                     for k in range(k_types)])
    return mu, alpha, 1 / np.sqrt(info), loglik


def test_compiled_em_matches_the_plain_reference():
    rng = np.random.default_rng(0)
    seqs = [(np.sort(rng.uniform(0, 60, n)) + 1e9, rng.integers(0, 3, n))  # large times
            for n in (150, 90, 2)]
    seqs.append((np.repeat(np.sort(rng.uniform(0, 30, 20)), 3) + 2e9,  # ties: three a time
                 rng.integers(0, 3, 60)))
    mu, alpha, stderr, loglik = _reference_em(seqs, 3, 1.5, 400)
    fit = fit_hawkes(seqs, 3, beta=1.5, max_iter=400, tol=0.0)
    np.testing.assert_allclose(fit.mu, mu, rtol=1e-8)
    np.testing.assert_allclose(fit.alpha, alpha, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fit.stderr, stderr, rtol=1e-8)
    assert fit.loglik == pytest.approx(loglik, rel=1e-10)
    assert fit.n_events == 302 and fit.iterations == 400


def test_fit_recovers_the_planted_excitation(seqs):
    fit = fit_hawkes(seqs, 3)
    assert np.abs(fit.alpha - ALPHA).max() < 0.1, fit.alpha
    assert fit.alpha[ALPHA == 0].max() < 0.08
    assert BETA / 1.5 < fit.beta < BETA * 1.5
    np.testing.assert_allclose(fit.mu, MU, rtol=0.25)
    edges = {(e.source, e.target) for e in fit.excitations(0.1, 0.99)}
    assert edges == {(0, 1), (1, 1)}


def test_a_process_without_excitation_yields_no_edges():
    rng = np.random.default_rng(1)
    seq = simulate_hawkes(MU, np.zeros((3, 3)), BETA, 3000.0, rng)
    fit = fit_hawkes([seq], 3)
    assert fit.excitations(0.1, 0.99) == []


def test_fixed_beta_and_warm_start_give_the_same_answer(seqs):
    cold = fit_hawkes(seqs, 3, beta=BETA, tol=1e-7, max_iter=2000)
    warm = fit_hawkes(seqs, 3, beta=BETA, tol=1e-7, max_iter=2000, init=(cold.mu, cold.alpha))
    np.testing.assert_allclose(warm.alpha, cold.alpha, atol=2e-3)
    assert warm.iterations < cold.iterations


def test_batched_window_fits_agree_with_one_by_one_fits(seqs):
    t, u = seqs[0]
    wins = [(t[i:i + 400], u[i:i + 400]) for i in range(0, 2000, 400)]
    glob = fit_hawkes(seqs, 3, beta=BETA)
    fits = fit_windows(wins, 3, BETA, (glob.mu, glob.alpha), max_iter=3000, tol=1e-8,
                       prior=0.0)
    for w, (wt, wu) in enumerate(wins):
        one = fit_hawkes([(wt, wu)], 3, beta=BETA, init=(glob.mu, glob.alpha), max_iter=3000,
                         tol=1e-8)
        np.testing.assert_allclose(fits.alpha[w], one.alpha, atol=5e-3)
        np.testing.assert_allclose(fits.mu[w], one.mu, rtol=0.02)
        np.testing.assert_allclose(fits.stderr[w], one.stderr, rtol=0.05)
        np.testing.assert_allclose(fits.confidence[w], one.confidence, atol=0.02)
        assert fits.events[w] == len(wt)
    edges = window_edges(fits, np.array([10, 11, 12]), BETA, 0.1, 0.9)
    assert len(edges) == len(wins)
    assert all(e.source in (10, 11, 12) and e.delay == pytest.approx(0.5)
               for es in edges for e in es)
    assert (10, 11) in {(e.source, e.target) for es in edges for e in es}


def test_window_ranges_share_the_arrays_and_leave_out_unfitted_types(seqs):
    t, u = seqs[0]
    t, u = t[:900], u[:900].copy()
    glob = fit_hawkes(seqs, 3, beta=BETA)
    starts, stops = np.array([0, 300, 600]), np.array([600, 900, 900])
    ranged = fit_window_ranges(t, u, starts, stops, 3, BETA, (glob.mu, glob.alpha))
    copied = fit_windows([(t[a:b], u[a:b]) for a, b in zip(starts, stops, strict=True)], 3, BETA,
                         (glob.mu, glob.alpha))
    np.testing.assert_array_equal(ranged.alpha, copied.alpha)
    # a type outside the fit (-1, or >= k_types) is left out, as if it were not there
    u_marked = u.copy()
    u_marked[::7] = -1
    left_out = fit_window_ranges(t, u_marked, starts, stops, 3, BETA, (glob.mu, glob.alpha))
    keep = u_marked[:600] >= 0
    alone = fit_windows([(t[:600][keep], u[:600][keep])], 3, BETA, (glob.mu, glob.alpha))
    np.testing.assert_allclose(left_out.alpha[0], alone.alpha[0], atol=1e-12)
    assert left_out.events[0] == keep.sum()
    # an empty window keeps the starting values and has no edges
    empty = fit_window_ranges(t, u, np.array([5]), np.array([5]), 3, BETA, (glob.mu, glob.alpha))
    assert empty.events[0] == 0 and window_edges(empty, np.arange(3), BETA, 0.0, 0.0) == [[]]


def test_unstable_processes_are_refused():
    with pytest.raises(ValueError, match="spectral radius"):
        simulate_hawkes(MU, np.eye(3) * 1.2, BETA, 10.0, np.random.default_rng(0))
