"""Patient-level ABC-SMC: ``nksim twin``'s fallback when no virtual patient of the bank resembles her.

The bank (:mod:`nksim.twin.run`) is an importance sample of the population predictive; for an
atypical patient almost all of its weight falls on a handful of units (effective sample size
below 20 even after growing it) and the conditioned intervals are those of a few lucky units.
This module then samples the patient's own posterior with a sequential Monte Carlo sampler whose
prior is the population predictive:

* **state** of a particle: the index ``d`` of a posterior draw (a finite pool, uniform prior: the
  population posterior as sampled), the patient's ``k`` standard normal random-effect deviates
  ``z`` (prior N(0, I); :func:`nksim.patients.effects_from_normals` maps them to her individual
  values) and the random streams ``omega`` of one stochastic simulation;
* **kernel**: the assay error model (:mod:`nksim.twin.likelihood`) is the ABC kernel, so the
  sampler is exact for the data as measured (noisy ABC; Wilkinson 2013, Stat Appl Genet Mol Biol
  12:129); the tolerance schedule is a temperature ``beta`` on the log kernel,
  ``prior x L(y | x(d, z, omega))**beta``, from 0 (the population predictive) to 1 (her
  posterior), each step chosen adaptively so that the conditional effective sample size of the
  reweighting is ``ess_fraction`` of the particles (Del Moral, Doucet & Jasra 2012, Stat Comput
  22:1009; Zhou, Johansen & Aston 2016, J Comput Graph Stat 25:701);
* **moves**: after each reweighting the particles are resampled (systematic) and moved by
  Metropolis-Hastings on the joint (d, z, omega) space: a Gaussian random walk on ``z`` with the
  particles' covariance scaled by ``2.38 / sqrt(k)`` (adapted between stages by the acceptance
  rate), a jump of ``d`` to a uniformly drawn pool member with probability ``jump``, and fresh
  streams ``omega`` for every proposal -- a pseudo-marginal move, exact because omega is part of
  the state (Andrieu & Roberts 2009, Ann Stat 37:697). A stage moves every particle until it has
  probably moved once (``1 - (1 - acceptance)**moves >= 0.9``) or ``max_moves`` is reached
  (Drovandi & Pettitt 2011, Biometrics 67:225).
* **start**: the bank itself (a prior sample of any size, equal weights): the first temperature is
  chosen on it, so no simulation is wasted on the prior.

The engine is generic (:func:`tempered_smc` takes a batch simulator) so that it is tested where
the posterior is known exactly (``tests/test_twin_smc.py``). Everything random comes from the
``rng`` passed in and from the integer keys handed to the simulator: the result does not depend on
how the simulator parallelises a batch.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from ..tempering import next_temperature as shared_next_temperature
from .likelihood import effective_sample_size, systematic_resample

#: A stage keeps moving until each particle has moved at least once with this probability.
MOVED_PROBABILITY = 0.9


@dataclass(frozen=True)
class SmcSettings:
    """Settings of :func:`tempered_smc` (``[twin.smc]`` of a twin spec)."""

    particles: int = 200
    ess_fraction: float = 0.5
    max_moves: int = 10
    max_stages: int = 40
    jump: float = 0.2

    def as_dict(self) -> dict[str, float]:
        """Plain fields."""
        return {"particles": self.particles, "ess_fraction": self.ess_fraction, "max_moves": self.max_moves,
                "max_stages": self.max_stages, "jump": self.jump}


@dataclass
class Particles:
    """Equally weighted particles: pool index, deviates, simulator identity, log kernel, simulated values."""

    draw: np.ndarray  # int (n,)
    z: np.ndarray  # float (n, k)
    ident: list[Any]  # what the simulator needs to repeat the particle's simulation (bank unit or key)
    loglik: np.ndarray  # float (n,)
    values: np.ndarray  # float (n, m): the simulated true values at the observations

    def take(self, idx: np.ndarray) -> Particles:
        """The particles at ``idx`` (copies)."""
        idx = np.asarray(idx, dtype=np.int64)
        return Particles(self.draw[idx].copy(), self.z[idx].copy(), [self.ident[i] for i in idx],
                         self.loglik[idx].copy(), self.values[idx].copy())


@dataclass
class SmcResult:
    """The final particles (equal weights) and the sampler's path."""

    particles: Particles
    betas: list[float] = field(default_factory=list)
    ess: list[float] = field(default_factory=list)  # effective sample size of each reweighting
    acceptance: list[float] = field(default_factory=list)  # per stage, over its moves
    moves: list[int] = field(default_factory=list)  # per stage
    simulations: int = 0
    log_evidence: float = 0.0  # log of the marginal likelihood estimate, prior predictive (natural log)

    @property
    def converged(self) -> bool:
        """True when the last temperature is 1 (the particles sample the patient's posterior)."""
        return bool(self.betas) and self.betas[-1] >= 1.0

    @property
    def final_acceptance(self) -> float:
        """Acceptance rate of the last stage's moves (NaN before any)."""
        return self.acceptance[-1] if self.acceptance else math.nan


#: ``simulate(draws, z, keys) -> (loglik (n,), values (n, m), idents)``: one simulation per proposal;
#: ``keys`` are distinct non-negative integers that fix each proposal's random streams.
BatchSimulator = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, list[Any]]]


def next_temperature(loglik: np.ndarray, beta: float, target_ess: float) -> float:
    """The temperature in ``(beta, 1]`` at which reweighting by ``L**(b - beta)`` keeps ``target_ess`` particles.

    :func:`nksim.tempering.next_temperature` (the joint calibration's rule) with the target as a number
    of particles; ``-inf`` log-likelihoods (impossible particles) count as weight 0.
    """
    ll = np.asarray(loglik, dtype=float)
    if not np.isfinite(ll).any():
        raise ValueError("no particle has a finite likelihood")
    return shared_next_temperature(np.where(np.isfinite(ll), ll, -1e300), beta, target_ess / ll.size)


def _log_prior_z(z: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(z * z, axis=-1)


def tempered_smc(start: Particles, n_pool: int, simulate: BatchSimulator, settings: SmcSettings,
                 rng: np.random.Generator) -> SmcResult:
    """Sample ``prior(d, z) x L**1`` from a prior sample ``start`` (module docstring).

    ``start``: equally weighted draws from the prior (any number; the bank). ``n_pool``: size of the
    uniform pool ``d`` is drawn from. ``simulate`` runs one simulation per proposal (its keys are
    consecutive integers from 0, distinct over the whole run).
    """
    n = int(settings.particles)
    k = start.z.shape[1]
    res = SmcResult(start)
    key = 0
    beta = 0.0
    cur = start
    scale = 1.0
    for stage in range(1, int(settings.max_stages) + 1):
        target = settings.ess_fraction * n if stage > 1 else min(settings.ess_fraction * n, 0.5 * len(cur.draw))
        new_beta = next_temperature(cur.loglik, beta, target)
        log_w = (new_beta - beta) * np.where(np.isfinite(cur.loglik), cur.loglik, -np.inf)  # -inf: weight 0
        res.log_evidence += float(special.logsumexp(log_w) - math.log(len(log_w)))
        res.ess.append(effective_sample_size(log_w))
        cur = cur.take(systematic_resample(log_w, n, rng))
        beta = new_beta
        res.betas.append(beta)
        # random-walk covariance of z from the resampled particles (regularised: never singular)
        cov = np.cov(cur.z, rowvar=False) + 1e-3 * np.eye(k) if n > 1 else np.eye(k)
        chol = np.linalg.cholesky(cov)
        accepted = 0
        tried = 0
        moves = 0
        while moves < settings.max_moves:
            moves += 1
            step = (scale * 2.38 / math.sqrt(k)) * (rng.standard_normal((n, k)) @ chol.T)
            z_new = cur.z + step
            jump = rng.random(n) < settings.jump
            d_new = np.where(jump, rng.integers(0, n_pool, size=n), cur.draw)
            keys = np.arange(key, key + n, dtype=np.int64)
            key += n
            ll_new, vals_new, ids_new = simulate(d_new, z_new, keys)
            res.simulations += n
            ll_new = np.where(np.isfinite(ll_new), ll_new, -np.inf)
            with np.errstate(invalid="ignore"):
                log_a = beta * (ll_new - cur.loglik) + _log_prior_z(z_new) - _log_prior_z(cur.z)
            log_a = np.where(np.isfinite(ll_new), np.nan_to_num(log_a, nan=-np.inf), -np.inf)
            ok = np.log(rng.random(n)) < log_a
            cur.draw[ok] = d_new[ok]
            cur.z[ok] = z_new[ok]
            cur.loglik[ok] = ll_new[ok]
            cur.values[ok] = vals_new[ok]
            for i in np.flatnonzero(ok):
                cur.ident[i] = ids_new[i]
            accepted += int(ok.sum())
            tried += n
            rate = accepted / tried
            needed = math.inf if rate <= 0 else (
                1 if rate >= 1 else math.ceil(math.log(1 - MOVED_PROBABILITY) / math.log(1 - rate)))
            if moves >= needed:
                break
        rate = accepted / max(tried, 1)
        res.acceptance.append(rate)
        res.moves.append(moves)
        if rate < 0.15:  # the next stage's random-walk scale (target roughly 0.2-0.4)
            scale *= 0.6
        elif rate > 0.45:
            scale *= 1.5
        if beta >= 1.0:
            break
    res.particles = cur
    return res


def bank_particles(draw: Sequence[int], z_of: Callable[[np.ndarray], np.ndarray], idents: Sequence[Any],
                   loglik: np.ndarray, values: np.ndarray) -> Particles:
    """A start for :func:`tempered_smc` from a bank: ``z_of(indices)`` gives the deviates of the units asked for.

    Only the units the first stage resamples need their deviates; this wraps the bank so that
    :meth:`Particles.take` computes them on demand.
    """
    return _LazyParticles(np.asarray(draw, dtype=np.int64), z_of, list(idents), np.asarray(loglik, dtype=float),
                          np.asarray(values, dtype=float))


class _LazyParticles(Particles):
    """A bank as particles whose deviates are computed only for the units taken."""

    def __init__(self, draw, z_of, ident, loglik, values):
        probe = np.asarray(z_of(np.zeros(1, dtype=np.int64)))
        super().__init__(draw, np.empty((len(draw), probe.shape[1])), ident, loglik, values)
        self._z_of = z_of

    def take(self, idx: np.ndarray) -> Particles:
        """The particles at ``idx``, their deviates computed."""
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inv = np.unique(idx, return_inverse=True)
        z = np.asarray(self._z_of(uniq), dtype=float)[inv]
        return Particles(self.draw[idx].copy(), z, [self.ident[i] for i in idx], self.loglik[idx].copy(),
                         self.values[idx].copy())
