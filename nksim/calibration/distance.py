"""A distance shaped like a likelihood ratio (-2 log LR scale), for ABC.

``D = G + chimerism_weight * sum_t w_t z_t^2``

* ``G`` -- the two-sample G statistic (likelihood-ratio test of homogeneity) between the
  observed and the simulated outcome-category counts::

      G = 2 sum_{s in {obs, sim}} sum_c n_sc log(n_sc / E_sc),  E_sc = n_s. n_.c / n..

  It is -2 log of the ratio between the multinomial likelihood with one common set of category
  probabilities and with separate ones; ``G = 0`` exactly when the simulated proportions equal
  the observed ones, so with one virtual trial per particle and ``epsilon -> 0`` ABC accepts
  exactly the simulations that reproduce the observed counts (rejection ABC on the full
  category table, i.e. the exact posterior of that table). The table
  (:mod:`nksim.calibration.summaries`) is ``pd_first, response_first, progressed_by_180,
  progressed_after_180, stable, censored``: splitting progression after SD by the assessment
  interval in which PD is first called makes the *time* to conversion enter the distance,
  interval-censored as observed (the trial: 0 in (28, 180], 3 in (180, 270]), not only its
  count. Censoring enters through the categories (each simulated twin is followed as long as
  its observed patient). With ``progression_timing = "any"`` the two progression cells are one
  (the former 5-cell table), for observed intervals that do not resolve the timing.
* ``z_t`` -- standardised misfit of a target summary: ``(log10 sim - log10 target) / log10_sd``
  for chimerism levels and lymphocyte counts, ``(sim - target) / sd`` for the day of the peak
  (Gaussian -2 log L up to a constant). A simulation whose statistic is undefined (no donor
  cells) gets ``z = 10``. Analogue targets are computed from simulations of their own protocol
  (:mod:`nksim.calibration.model`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Z_UNDEFINED = 10.0


def g_statistic(observed: np.ndarray, simulated: np.ndarray) -> float:
    """Two-sample likelihood-ratio (G) statistic of homogeneity between two count vectors."""
    table = np.vstack([np.asarray(observed, dtype=float), np.asarray(simulated, dtype=float)])
    total = table.sum()
    if total == 0:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / total
    mask = table > 0
    return float(2.0 * np.sum(table[mask] * np.log(table[mask] / expected[mask])))


def target_z(value: float, target) -> float:
    """Standardised misfit of one summary against a :class:`ChimerismTarget`-like object."""
    if not np.isfinite(value):
        return Z_UNDEFINED
    if target.quantity in ("peak_day", "share_donor_nk_above"):
        return float((value - target.value) / target.sd)
    if value <= 0:
        return Z_UNDEFINED
    return float((np.log10(value) - np.log10(target.value)) / target.log10_sd)


def total_distance(sim: Mapping[str, np.ndarray], obs: Mapping[str, np.ndarray], targets: Sequence,
                   chimerism_weight: float) -> float:
    """``G(counts) + chimerism_weight * sum_t w_t z_t^2`` for summary dicts (see :mod:`.model`)."""
    d = g_statistic(obs["counts"], sim["counts"])
    if chimerism_weight > 0:
        for t in targets:
            z = target_z(float(sim[t.name]), t)
            d += chimerism_weight * t.weight * min(z * z, Z_UNDEFINED ** 2)
    return float(d)
