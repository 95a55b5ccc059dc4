"""The twin's patient-level ABC-SMC (nksim.twin.smc) where the posterior is known exactly.

Toy problem with the twin's structure: a uniform pool of three "posterior draws" (means mu_d), two
standard normal random-effect deviates z, one stochastic simulation per proposal (streams omega:
x = mu_d + v.z + s_omega * omega) and a Gaussian assay kernel (y ~ N(x, s_y)). Integrating omega
out, y | d, z ~ N(mu_d + v.z, s_omega**2 + s_y**2), so P(d | y) and the Gaussian z | d, y are
closed-form: the sampler (pseudo-marginal moves on d, z, omega) must reproduce them.
"""
from __future__ import annotations

import numpy as np
import pytest

from nksim.twin.likelihood import effective_sample_size
from nksim.twin.smc import Particles, SmcSettings, bank_particles, next_temperature, tempered_smc

MU = np.array([0.0, 1.0, 2.0])
V = np.array([1.0, 0.5])
S_OMEGA, S_Y = 0.2, 0.3
Y = 5.0


def _loglik(x: np.ndarray) -> np.ndarray:
    return -0.5 * ((Y - x) / S_Y) ** 2 - np.log(S_Y * np.sqrt(2 * np.pi))


def _x(d: np.ndarray, z: np.ndarray, keys: np.ndarray, seed: int) -> np.ndarray:
    omega = np.array([np.random.default_rng([seed, int(k)]).standard_normal() for k in keys])
    return MU[d] + z @ V + S_OMEGA * omega


def _simulator(seed: int):
    calls = {"n": 0}

    def simulate(d, z, keys):
        calls["n"] += len(keys)
        x = _x(d, z, keys, seed)
        return _loglik(x), x[:, None], [("key", int(k)) for k in keys]

    return simulate, calls


def _exact() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(d | y), and the posterior mean and sd of each z (mixture over d)."""
    s2 = S_OMEGA ** 2 + S_Y ** 2
    tot = V @ V + s2
    p = np.exp(-0.5 * (Y - MU) ** 2 / tot)
    p /= p.sum()
    cov = np.linalg.inv(np.eye(2) + np.outer(V, V) / s2)
    means = np.array([cov @ V * (Y - m) / s2 for m in MU])
    mean = p @ means
    second = sum(p[i] * (cov + np.outer(means[i], means[i])) for i in range(3))
    return p, mean, np.sqrt(np.diag(second - np.outer(mean, mean)))


def _bank(m: int, seed: int) -> Particles:
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 3, size=m)
    z = rng.standard_normal((m, 2))
    x = _x(d, z, np.arange(10**6, 10**6 + m), seed + 1)
    return Particles(d, z, [("bank", i) for i in range(m)], _loglik(x), x[:, None])


@pytest.mark.parametrize("seed", [1, 2])
def test_tempered_smc_recovers_the_exact_posterior(seed):
    """Pool probabilities within 0.04, z means within 0.15 sd and sds within 15 % of the closed form."""
    p, mean, sd = _exact()
    start = _bank(2000, seed)
    # the bank alone is degenerate for this y: the case the fallback exists for
    assert effective_sample_size(start.loglik - start.loglik.max()) < 20
    simulate, calls = _simulator(seed)
    res = tempered_smc(start, 3, simulate, SmcSettings(particles=1000), np.random.default_rng(seed))
    assert res.converged and res.betas[-1] == 1.0 and np.all(np.diff(res.betas) > 0)
    assert res.simulations == calls["n"] == sum(res.moves) * 1000
    part = res.particles
    got_p = np.bincount(part.draw, minlength=3) / len(part.draw)
    assert np.abs(got_p - p).max() < 0.04, (got_p, p)
    assert np.all(np.abs(part.z.mean(axis=0) - mean) < 0.15 * sd), (part.z.mean(axis=0), mean, sd)
    assert np.all(np.abs(part.z.std(axis=0) / sd - 1) < 0.15), (part.z.std(axis=0), sd)
    # every particle's stored likelihood and value are those of its own simulation (identity kept)
    keys = np.array([i[1] for i in part.ident if i[0] == "key"])
    moved = np.array([i[0] == "key" for i in part.ident])
    assert moved.mean() > 0.9
    np.testing.assert_allclose(part.values[moved, 0], _x(part.draw[moved], part.z[moved], keys, seed))
    # the evidence estimate: log p(y) = log mean_d N(y; mu_d, |v|^2 + s^2)
    tot = V @ V + S_OMEGA ** 2 + S_Y ** 2
    exact_log_z = np.log(np.mean(np.exp(-0.5 * (Y - MU) ** 2 / tot) / np.sqrt(2 * np.pi * tot)))
    assert abs(res.log_evidence - exact_log_z) < 0.25


def test_tempered_smc_is_deterministic_and_the_start_may_be_lazy():
    """Same rng -> identical particles; a bank whose deviates are computed on demand gives the same result."""
    start = _bank(500, 3)
    a = tempered_smc(start, 3, _simulator(3)[0], SmcSettings(particles=100), np.random.default_rng(9))
    lazy = bank_particles(start.draw, lambda idx: start.z[idx], start.ident, start.loglik, start.values)
    b = tempered_smc(lazy, 3, _simulator(3)[0], SmcSettings(particles=100), np.random.default_rng(9))
    np.testing.assert_array_equal(a.particles.z, b.particles.z)
    np.testing.assert_array_equal(a.particles.draw, b.particles.draw)
    assert a.betas == b.betas and a.particles.ident == b.particles.ident


def test_tempered_smc_stops_at_max_stages_unconverged():
    """With one stage allowed and a degenerate start, the result says it did not reach temperature 1."""
    res = tempered_smc(_bank(500, 4), 3, _simulator(4)[0], SmcSettings(particles=50, max_stages=1),
                       np.random.default_rng(0))
    assert len(res.betas) == 1 and res.betas[0] < 1 and not res.converged


def test_next_temperature_hits_the_target_ess():
    """The chosen step keeps the target effective sample size (bisection), or is the whole way when it can."""
    ll = np.random.default_rng(0).normal(0, 30, size=400)
    b = next_temperature(ll, 0.1, 200.0)
    assert 0.1 < b < 1
    assert effective_sample_size((b - 0.1) * (ll - ll.max())) == pytest.approx(200.0, rel=1e-3)
    assert next_temperature(np.zeros(50), 0.3, 25.0) == 1.0
    with pytest.raises(ValueError, match="finite"):
        next_temperature(np.full(5, -np.inf), 0.0, 2.0)
