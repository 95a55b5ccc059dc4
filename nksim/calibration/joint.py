"""The joint calibration across trials: posterior from the row emulators, and the checks of it.

Method (calibration/README.md, "The joint calibration across trials"):

1. a **bank** of simulations over the prior box (:mod:`nksim.calibration.bank`);
2. per-row **emulators** of one patient's outcome probability (share rows) or of a trial's
   statistic (quantity rows), learnt from the bank (:mod:`nksim.calibration.emulator`);
3. the **posterior** of the fitted parameters given the registry's calibration targets, with the
   binomial likelihood of each share row and a Gaussian one of each quantity row (log10 scale),
   sampled on the prior's unit cube by sequential Monte Carlo with likelihood tempering
   (:func:`posterior_sample`);
4. the **recovery study** (:func:`coverage_study`): synthetic multi-trial datasets simulated by
   nksim itself at parameter vectors drawn from the prior, each with the registry's published
   trial sizes (:func:`simulate_dataset`), fitted exactly as the real data; the share of
   datasets whose true value lies inside its central 90 % interval is the coverage (issue 26 asks
   for [80 %, 97 %]); SBC ranks are kept too.

Everything is on the unit cube of the prior (each parameter's sampling scale mapped to [0, 1]):
the prior density there is 1.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NksimInputError
from ..tempering import next_temperature
from .bank import row_statistic, simulate_point
from .config import FitParameter
from .emulator import JointEmulator, observed_pair
from .registry import TrialObservation, group_by_protocol
from .scoring import derived_seed, protocol_run

if TYPE_CHECKING:  # pragma: no cover

    from ..parameters import ParameterSet

#: Central credible / predictive interval reported and checked.
LEVEL = 0.90


# ----------------------------------------------------------------------------- posterior
@dataclass
class PosteriorSample:
    """Posterior particles on the unit cube (equally weighted after the last resampling)."""

    draws: np.ndarray  # (m, k) particles (unit cube)
    ess: float  # effective sample size of the last reweighting, before its resampling
    rounds: int  # tempering steps from the prior (beta = 0) to the posterior (beta = 1)
    log_evidence: float  # log marginal likelihood of the data under the emulated model (SMC estimate)
    acceptance: float  # mean Metropolis acceptance rate of the move steps


def _systematic(weights: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    c = np.cumsum(weights)
    c[-1] = 1.0
    return np.searchsorted(c, (rng.random() + np.arange(m)) / m)


def posterior_sample(emulator: JointEmulator, data: Mapping[str, tuple[float, float]], k: int, *,
                     log_prior: Callable[[np.ndarray], np.ndarray] | None = None, particles: int = 4000,
                     moves: int = 8, ess_target: float = 0.5, max_rounds: int = 200,
                     seed: int = 0) -> PosteriorSample:
    """Sequential Monte Carlo with likelihood tempering of the emulated posterior on the unit cube.

    ``particles`` points start from the prior (uniform on the cube); each round raises the
    likelihood's exponent ``beta`` as far as keeps the effective sample size of the incremental
    weights at ``ess_target`` of the particles (bisection), resamples (systematic) and moves every
    particle by ``moves`` random-walk Metropolis steps targeting prior x likelihood^beta (Gaussian
    steps with the particles' covariance times 2.38^2 / k, a proposal outside the cube is rejected),
    until ``beta`` = 1. The step scale adapts between rounds toward an acceptance rate of 0.2-0.4.
    The log evidence is the sum of the log mean incremental weights. Robust to the concentrated,
    ridged posteriors that many binomial rows give, where importance sampling from the prior
    degenerates. ``log_prior`` (optional): an informative prior's log density on the cube, relative to
    the uniform one (tempered with the likelihood; the target at ``beta`` = 1 is exact).
    """
    rng = np.random.default_rng(seed)

    def loglik(x: np.ndarray) -> np.ndarray:
        out = emulator.log_likelihood(x, data)
        return out + log_prior(x) if log_prior is not None else out

    u = rng.random((particles, k))
    log_l = loglik(u)
    step = 2.38 ** 2 / k
    beta, log_z, rounds, ess = 0.0, 0.0, 0, float(particles)
    accepted = proposed = 0
    while beta < 1.0:
        rounds += 1
        if rounds > max_rounds:
            raise NksimInputError(f"tempering did not reach beta = 1 in {max_rounds} rounds (beta = {beta:.3g})",
                                  source="posterior_sample", key="max_rounds")
        if not np.isfinite(log_l).any():
            raise NksimInputError("every particle has zero likelihood", source="posterior_sample", key="data")
        new = next_temperature(np.where(np.isfinite(log_l), log_l, -1e300), beta, ess_target)
        lw = (new - beta) * log_l
        top = np.max(lw)
        w = np.exp(lw - top)
        log_z += float(top + math.log(w.mean()))
        w /= w.sum()
        ess = float(1.0 / np.sum(w ** 2))
        beta = new
        idx = _systematic(w, particles, rng)
        u, log_l = u[idx], log_l[idx]
        cov = np.atleast_2d(np.cov(u, rowvar=False)) * step + np.eye(k) * 1e-10
        chol = np.linalg.cholesky(cov)
        acc_round = 0
        for _ in range(moves):
            prop = u + rng.standard_normal(u.shape) @ chol.T
            inside = np.all((prop >= 0.0) & (prop <= 1.0), axis=1)
            ll_prop = np.full(particles, -np.inf)
            if inside.any():
                ll_prop[inside] = loglik(prop[inside])
            with np.errstate(invalid="ignore"):
                log_acc = beta * (ll_prop - log_l)
            ok = np.log(rng.random(particles)) < np.where(np.isnan(log_acc), -np.inf, log_acc)
            u[ok], log_l[ok] = prop[ok], ll_prop[ok]
            accepted += int(ok.sum())
            acc_round += int(ok.sum())
            proposed += particles
        rate = acc_round / (moves * particles)
        if rate < 0.2:
            step *= 0.6
        elif rate > 0.4:
            step = min(step * 1.5, 2.38 ** 2 / k * 4.0)
    return PosteriorSample(draws=u, ess=ess, rounds=rounds, log_evidence=log_z,
                           acceptance=accepted / max(proposed, 1))


def interval(draws: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of each column of ``draws``."""
    a = (1.0 - level) / 2.0
    return np.quantile(draws, a, axis=0), np.quantile(draws, 1.0 - a, axis=0)


#: What :func:`nk_potency` measures, in words (for reports).
POTENCY_DEFINITION = (
    "NK potency: blasts killed per infused donor NK cell per day in marrow, averaged over its first 7 days there, "
    "in marrow whose cell places are half blasts (effector:target << 1, so blasts are not depleted): the competent "
    "fraction times the kills a competent cell makes (engagement every nk.engagement_interval hours in a "
    "blast-packed voxel, times the blast share, times blasts.susceptible_fraction times nk.kill_probability, "
    "with nk.refractory_time between kills, at most nk.max_kills plus nk.function_recovery_rate per day restored)")

#: Mean cytokine activation of donor-NK killing over an s.c. IL-2 course (9-10 MIU every other day; docs/model.md
#: section 9.8, at the second joint fit's medians): the activation of :func:`nk_potency`'s IL-2 variant.
IL2_COURSE_ACTIVATION = 0.14

#: What the IL-2 variant of :func:`nk_potency` measures (for reports).
POTENCY_IL2_DEFINITION = (
    f"NK potency under IL-2: the same, with engagements faster by 1 + nk.cytokine_killing_boost x "
    f"{IL2_COURSE_ACTIVATION:g} (the mean activation over an s.c. IL-2 course every other day, docs/model.md "
    "section 9.8)")


def nk_potency(theta: Mapping[str, Any], base: ParameterSet, *, blast_fraction: float = 0.5,
               days: float = 7.0, activation: float = 0.0) -> np.ndarray:
    """Derived NK potency: blasts killed per infused donor NK per day in marrow (fresh product).

    A donor NK in a voxel whose cell places are ``blast_fraction`` blasts (E:T << 1, blasts not
    depleted), averaged over its first ``days`` days there: a competent cell (``nk.competent_fraction``)
    engages blasts at ``24 / nk.engagement_interval * blast_fraction`` per day, kills a susceptible one
    (``blasts.susceptible_fraction``) with ``nk.kill_probability``, then rests ``nk.refractory_time``;
    it kills at most ``nk.max_kills`` before its lytic units are restored at
    ``nk.function_recovery_rate`` per day. ``activation`` (0..1): the cytokine activation of killing, which
    speeds engagements by ``1 + nk.cytokine_killing_boost * activation`` (0: no cytokine). Units: day-1. Keys
    missing from ``theta`` come from ``base``.
    """
    def get(key: str) -> np.ndarray:
        return np.asarray(theta[key], float) if key in theta else np.asarray(base[key], float)

    engage = 24.0 / get("nk.engagement_interval") * blast_fraction * get("blasts.susceptible_fraction") \
        * get("nk.kill_probability") * (1.0 + get("nk.cytokine_killing_boost") * activation)
    rate = 1.0 / (1.0 / engage + get("nk.refractory_time") / 24.0)
    kills = np.minimum(rate * days, get("nk.max_kills") + get("nk.function_recovery_rate") * days)
    return get("nk.competent_fraction") * kills / days


# ----------------------------------------------------------------------------- synthetic data
def simulate_dataset(p: ParameterSet, fit: Sequence[FitParameter], theta: np.ndarray,
                     rows: Sequence[TrialObservation], seed: int) -> dict[str, tuple[float, float]]:
    """A synthetic registry dataset simulated by nksim at ``theta``, with each row's published size.

    Share rows: ``k`` = successes among the first ``n`` simulated patients that count (``n`` = the
    row's published denominator), simulating as many virtual trials of the row's protocol as that
    needs. Quantity rows: log10 of the row's statistic over one virtual trial (as in the bank).
    ``p`` carries the resolution (as the bank's); protocol ``P`` uses ``derived_seed(seed, "protocol:P")``.
    """
    q = p.with_values({f.key: float(theta[j]) for j, f in enumerate(fit)}, origin=f"{p.origin} (synthetic truth)")
    by_protocol = group_by_protocol(rows)
    runs = {name: protocol_run(name, obs) for name, obs in by_protocol.items()}
    data: dict[str, tuple[float, float]] = {}
    for name, obs in by_protocol.items():
        per_trial = len(runs[name][1])
        need = max([int(o.n) for o in obs if o.is_share and o.n is not None] or [per_trial])
        reps = max(1, -(-need // max(per_trial // 2, 1)))  # groups may hold half the patients: enough for both
        seeds = {name: derived_seed(seed, f"protocol:{name}")}
        while True:
            res = simulate_point(q, {name: runs[name]}, {name: obs}, seeds, reps)
            short = [o for o in obs if o.is_share and np.isfinite(res[o.name]).sum() < int(o.n)]
            if not short:
                break
            reps *= 2
            if reps > 4096:
                raise NksimInputError(f"protocol {name}: too few simulated patients count for row {short[0].name}",
                                      source="simulate_dataset", key=short[0].name)
        for o in obs:
            x = res[o.name]
            if o.is_share:
                n = int(o.n)
                data[o.name] = (float(x[np.isfinite(x)][:n].sum()), float(n))
            else:
                stat = row_statistic(o, x[:per_trial])
                data[o.name] = (math.log10(stat) if stat > 0 else -math.inf, 0.0)
    return data


@dataclass
class CoverageResult:
    """Recovery study: per dataset and parameter, whether the truth lies in the central interval."""

    truth_u: np.ndarray  # (datasets, k)
    lo: np.ndarray  # (datasets, k) interval bounds on the unit cube
    hi: np.ndarray
    ranks: np.ndarray  # (datasets, k) SBC rank of the truth among the resampled draws, in [0, 1]
    width: np.ndarray  # (datasets, k) interval width on the unit cube (prior width = 1)
    ess: np.ndarray  # (datasets,)
    level: float

    @property
    def covered(self) -> np.ndarray:
        """(datasets, k) truth inside its interval."""
        return (self.truth_u >= self.lo) & (self.truth_u <= self.hi)

    def coverage(self) -> float:
        """Share of (dataset, parameter) pairs covered."""
        return float(self.covered.mean())


def coverage_study(emulator: JointEmulator, truths_u: np.ndarray,
                   datasets: Sequence[Mapping[str, tuple[float, float]]], *, level: float = LEVEL, seed: int = 0,
                   **posterior_kw: Any) -> CoverageResult:
    """Fit every synthetic dataset as the real data and record the coverage of the central intervals."""
    truths_u = np.atleast_2d(np.asarray(truths_u, float))
    if truths_u.shape[0] != len(datasets):
        raise NksimInputError("one truth per dataset is needed", source="coverage_study", key="datasets")
    k = truths_u.shape[1]
    lo = np.empty_like(truths_u)
    hi = np.empty_like(truths_u)
    ranks = np.empty_like(truths_u)
    ess = np.empty(len(datasets))
    for i, data in enumerate(datasets):
        post = posterior_sample(emulator, data, k, seed=seed + i, **posterior_kw)
        lo[i], hi[i] = interval(post.draws, level)
        ranks[i] = (post.draws < truths_u[i]).mean(axis=0)
        ess[i] = post.ess
    return CoverageResult(truths_u, lo, hi, ranks, hi - lo, ess, level)


def observed_data(rows: Sequence[TrialObservation],
                  sd_log10: Mapping[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """The rows' observations as the likelihood takes them (:func:`~nksim.calibration.emulator.observed_pair`).

    ``sd_log10``: observation errors of quantity rows (log10 units), by row name.
    """
    sd = sd_log10 or {}
    return {o.name: observed_pair(o, sd.get(o.name, 0.0)) for o in rows}
