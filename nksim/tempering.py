"""Adaptive tempering: the next temperature of a likelihood-tempered SMC sampler (one rule, two samplers).

Used by the joint calibration's posterior sampler (:mod:`nksim.calibration.joint`, on emulated
likelihoods) and by the twin's patient-level ABC-SMC (:mod:`nksim.twin.smc`, on simulated ones): the
step from ``beta`` is the largest that keeps the effective sample size of the reweighting by
``L**(b - beta)`` at a stated fraction of the particles (Del Moral, Doucet & Jasra 2012, Stat Comput
22:1009), found by bisection.
"""
from __future__ import annotations

import numpy as np


def next_temperature(log_l: np.ndarray, beta: float, target: float) -> float:
    """Largest ``b`` in ``(beta, 1]`` whose incremental weights ``L**(b - beta)`` keep an ESS fraction >= ``target``.

    ``log_l``: finite log-likelihoods of equally weighted particles (give ``-1e300``, not ``-inf``, for
    impossible ones); ``target``: the effective sample size as a fraction of the particles (0-1].
    1 when the whole step keeps it; otherwise 60 bisection steps (at least ``beta + 1e-9``).
    """
    def ess_frac(b: float) -> float:
        lw = (b - beta) * log_l
        w = np.exp(lw - lw.max())
        return float(w.sum() ** 2 / (w.size * np.sum(w ** 2)))

    if ess_frac(1.0) >= target:
        return 1.0
    lo, hi = beta, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if ess_frac(mid) >= target:
            lo = mid
        else:
            hi = mid
    return max(lo, beta + 1e-9)
