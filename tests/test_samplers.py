"""The kernel's random-variate samplers (nksim.engine.samplers) against scipy.stats.

Goodness of fit at fixed seeds (chi-square on the support binned to expected counts >= 20;
Kolmogorov-Smirnov of the randomized probability integral transform for large n), both
branches of the binomial (inversion below ``INVERSION_MAX_MEAN``, BTRS above; p folded at 1/2),
the certain cases that must not touch the Generator, the even 4-way multinomial split, and
determinism. Each case draws 20 000 variates; a test fails below p = 1e-3 (fixed seeds: the
outcome is deterministic).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit
from scipy import special, stats

from nksim.engine import kernel, pcg64, samplers

N_DRAWS = 20_000
ALPHA = 1e-3


@njit(cache=False)
def _binomials_k(st, n, p, size):
    out = np.empty(size, dtype=np.int64)
    for i in range(size):
        out[i] = samplers.binomial(st, np.int64(n), p)
    return out


@njit(cache=False)
def _binomials_setup_k(st, n, p, size):
    out = np.empty(size, dtype=np.int64)
    setup = samplers.binomial_setup(p)
    for i in range(size):
        out[i] = samplers.binomial_draw(st, np.int64(n), setup)
    return out


@njit(cache=False)
def _splits_k(st, m, size):
    out = np.empty((size, 4), dtype=np.int64)
    for i in range(size):
        c = samplers.split_even4(st, np.int64(m))
        for d in range(4):
            out[i, d] = c[d]
    return out


def _on_generator(kernel_fn):
    """Call a sampler loop on a Generator's PCG64 state as the kernel does (pack, draw, write back)."""
    def call(rng, *args):
        st = pcg64.pack(rng)
        out = kernel_fn(st, *args)
        pcg64.unpack(st, rng)
        return out
    return call


_binomials = _on_generator(_binomials_k)
_binomials_setup = _on_generator(_binomials_setup_k)
_splits = _on_generator(_splits_k)


@njit(cache=False)
def _log_factorial(k):
    return samplers.log_factorial(np.int64(k))


def chi2_binned(x: np.ndarray, pmf: np.ndarray, min_expected: float = 20.0) -> float:
    """p-value of Pearson's chi-square of integer draws ``x`` against ``pmf`` over 0..len(pmf)-1.

    Consecutive support values are merged until each bin expects >= ``min_expected`` draws;
    the last bin takes the remaining mass (the upper tail).
    """
    n = x.size
    counts = np.bincount(x, minlength=pmf.size)
    assert counts.size == pmf.size, "a draw outside the support"
    obs, exp = [], []
    o = e = 0.0
    for k in range(pmf.size):
        o += counts[k]
        e += n * pmf[k]
        if e >= min_expected:
            obs.append(o)
            exp.append(e)
            o = e = 0.0
    if obs:  # fold the remaining tail into the last bin
        obs[-1] += o
        exp[-1] += e
    else:
        obs, exp = [o], [e]
    obs, exp = np.array(obs), np.array(exp)
    if obs.size < 2:
        return 1.0
    exp *= n / exp.sum()
    return float(stats.chisquare(obs, exp).pvalue)


#: (n, p): edge cases, tiny p, p near 1/2, p > 1/2 (folded), both branches and their border,
#: n beyond the log-factorial table (8192) and up to 1e6.
GRID = [
    (1, 0.5), (1, 0.01), (5, 0.25), (7, 0.5), (60, 0.05), (100, 1e-4), (1600, 1e-6), (1600, 0.002),
    (165, 0.08), (1600, 0.0125), (2400, 0.00999), (48, 0.5), (49, 0.499), (50, 0.5), (165, 0.2),
    (670, 0.18), (1600, 0.04), (1000, 0.6), (1000, 0.97), (1000, 0.999), (20_000, 0.5),
    (10**5, 3e-4), (10**6, 1e-5), (10**6, 0.3),
]


@pytest.mark.parametrize("n, p", GRID)
def test_binomial_matches_scipy(n, p):
    rng = np.random.default_rng(1000 + GRID.index((n, p)))
    x = _binomials(rng, n, p, N_DRAWS)
    assert x.min() >= 0 and x.max() <= n
    lo, hi = int(stats.binom.ppf(1e-12, n, p)), int(stats.binom.isf(1e-12, n, p)) + 1
    # shift to the support window [lo, hi] (the mass outside is < 2e-12)
    assert x.min() >= lo and x.max() <= hi
    pmf = stats.binom.pmf(np.arange(lo, hi + 1), n, p)
    pval = chi2_binned(x - lo, pmf)
    assert pval > ALPHA, f"Bin({n}, {p}): chi-square p = {pval:.2g}"
    # the first two moments, within 5 standard errors
    mean, var = n * p, n * p * (1 - p)
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / N_DRAWS) + 1e-12
    if var > 0.5:
        assert abs(x.var() / var - 1) < 5 * math.sqrt(2 / N_DRAWS)


@pytest.mark.parametrize("n, p", [(10**6, 1e-5), (10**6, 0.3), (10**6, 0.7), (20_000, 0.5)])
def test_binomial_large_n_kolmogorov_smirnov(n, p):
    """KS on the randomized probability integral transform, exactly Uniform(0, 1) under Bin(n, p)."""
    x = _binomials(np.random.default_rng(7), n, p, N_DRAWS)
    v = np.random.default_rng(8).random(N_DRAWS)
    u = stats.binom.cdf(x - 1, n, p) + v * stats.binom.pmf(x, n, p)
    assert stats.kstest(u, "uniform").pvalue > ALPHA


def test_chi_square_has_power():
    """The goodness-of-fit test detects a 3 % error in p at the sample size used."""
    for n, p in ((165, 0.08), (1600, 0.04)):
        x = _binomials(np.random.default_rng(3), n, p * 1.03, N_DRAWS)
        lo, hi = 0, n
        assert chi2_binned(x - lo, stats.binom.pmf(np.arange(lo, hi + 1), n, p)) < ALPHA


@pytest.mark.parametrize("n, p, expected", [(0, 0.3, 0), (-3, 0.3, 0), (10, 0.0, 0), (10, -0.1, 0),
                                            (10, float("nan"), 0), (10, 1.0, 10), (10, 1.5, 10),
                                            (0, 1.0, 0)])
def test_certain_draws_do_not_touch_the_generator(n, p, expected):
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    assert list(_binomials(rng, n, p, 3)) == [expected] * 3
    assert list(_binomials_setup(rng, n, p, 3)) == [expected] * 3
    assert rng.bit_generator.state == before


def test_same_seed_same_draws_and_setup_form_is_the_same_sampler():
    for n, p in ((5, 0.25), (1600, 0.04), (1000, 0.97), (10**6, 0.3)):
        a = _binomials(np.random.default_rng(11), n, p, 2000)
        b = _binomials(np.random.default_rng(11), n, p, 2000)
        c = _binomials_setup(np.random.default_rng(11), n, p, 2000)
        d = _binomials(np.random.default_rng(12), n, p, 2000)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert not np.array_equal(a, d)


def test_draws_advance_only_the_generator_given():
    g1, g2 = np.random.default_rng(1), np.random.default_rng(2)
    s2 = g2.bit_generator.state
    _binomials(g1, 1600, 0.04, 100)
    assert g2.bit_generator.state == s2


@pytest.mark.parametrize("m", [1, 3, 7])
def test_split_even4_is_multinomial(m):
    x = _splits(np.random.default_rng(20 + m), m, N_DRAWS)
    assert (x.sum(axis=1) == m).all() and x.min() >= 0
    # joint law: every composition of m into 4 parts
    keys = {}
    for row in map(tuple, x):
        keys[row] = keys.get(row, 0) + 1
    comps = [(a, b, c, m - a - b - c) for a in range(m + 1) for b in range(m + 1 - a) for c in range(m + 1 - a - b)]
    assert set(keys) <= set(comps)
    obs = np.array([keys.get(c, 0) for c in comps], dtype=float)
    pmf = np.array([stats.multinomial.pmf(c, m, [0.25] * 4) for c in comps])
    assert stats.chisquare(obs, pmf * N_DRAWS / pmf.sum()).pvalue > ALPHA


@pytest.mark.parametrize("m", [25, 26, 27, 60, 1000])
def test_split_even4_margins(m):
    x = _splits(np.random.default_rng(40 + m), m, N_DRAWS // 4)
    assert (x.sum(axis=1) == m).all()
    for d in range(4):  # each class is Bin(m, 1/4)
        pmf = stats.binom.pmf(np.arange(m + 1), m, 0.25)
        assert chi2_binned(x[:, d], pmf) > ALPHA
    # the classes are exchangeable and negatively correlated as in the multinomial (-1/3)
    r = np.corrcoef(x[:, 0], x[:, 1])[0, 1]
    assert abs(r + 1 / 3) < 0.05


def test_split_even4_zero_draws_nothing():
    rng = np.random.default_rng(9)
    before = rng.bit_generator.state
    assert _splits(rng, 0, 3).sum() == 0
    assert rng.bit_generator.state == before


@pytest.mark.parametrize("k", [0, 1, 2, 10, 1600, 8191, 8192, 8193, 10**5, 10**6, 10**9])
def test_log_factorial(k):
    assert _log_factorial(k) == pytest.approx(float(special.gammaln(k + 1.0)), rel=1e-14, abs=1e-14)


def test_kernel_death_setup_matches_generic_setup():
    """The marrow update's death set-up reuses q = exp(-x), log q = -x: same (p, q, log q) as binomial_setup."""
    for x in (0.0, 1e-9, 0.01, 0.0866, 0.5, math.log(2.0), 0.7, 3.0):
        q = math.exp(-x)
        got = kernel._death_setup(x, q)
        ref = samplers.binomial_setup(1.0 - q)
        assert got[3] == ref[3]
        np.testing.assert_allclose(got[:3], ref[:3], rtol=1e-12, atol=1e-15)
