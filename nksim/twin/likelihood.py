"""The assay error model of ``nksim twin``: how likely a patient's measurements are under a simulation.

Each measurement of the per-patient series schema (``calibration/data/SCHEMA.md`` section 3) is
compared with the simulated value of the same quantity on the same day:

* **chimerism and donor NK counts** (``donor_chimerism_pbmc``, ``donor_chimerism_nk``,
  ``donor_nk_blood``): the measured value is log-normal around the true one with a relative error
  ``log_sd`` (natural-log standard deviation; 0.3 = about 30 %, the between-replicate spread of
  STR/qPCR chimerism near its detection limit, an assumption); a value reported below the
  detection limit (``<lod``) has the probability that the measurement falls below it. The true
  value is floored at ``floor`` (percent or uL-1) so that a simulation with no donor cell left is
  very unlikely, not impossible, for a detected value.
* **marrow blasts** (``marrow_blast_pct``): a differential count of ``marrow_cells`` nucleated
  cells (200 by default: the usual manual count): the blast count is binomial with the true
  fraction; the reported percentage gives the count.

All log-likelihoods are natural logs, summed over the measurements of one simulation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

#: Quantities read on the log scale (log-normal relative error).
LOG_QUANTITIES = ("donor_chimerism_pbmc", "donor_chimerism_nk", "donor_nk_blood")


@dataclass(frozen=True)
class AssayModel:
    """Measurement error: relative (log) sd, floor of true values, marrow cells counted."""

    log_sd: float = 0.3
    floor: float = 1e-4
    marrow_cells: int = 200

    def as_dict(self) -> dict[str, float]:
        """Plain fields."""
        return {"log_sd": self.log_sd, "floor": self.floor, "marrow_cells": self.marrow_cells}


def log_likelihood(quantity: str, observed: float, below_lod: bool, lod: float | None, simulated: np.ndarray,
                   assay: AssayModel) -> np.ndarray:
    """Log-likelihood of one measurement for every simulated true value (array over units)."""
    sim = np.asarray(simulated, dtype=float)
    if quantity in LOG_QUANTITIES:
        mu = np.log(np.maximum(sim, assay.floor))
        if below_lod:
            return stats.norm.logcdf((math.log(float(lod)) - mu) / assay.log_sd)
        x = math.log(max(float(observed), assay.floor))
        return stats.norm.logpdf(x, loc=mu, scale=assay.log_sd) - x
    if quantity == "marrow_blast_pct":
        n = assay.marrow_cells
        p = np.clip(sim / 100.0, 1e-9, 1 - 1e-9)
        if below_lod:  # below a detection limit: P(count < lod * n / 100)
            k_max = math.ceil(float(lod) / 100.0 * n) - 1
            return stats.binom.logcdf(k_max, n, p)
        k = int(round(float(observed) / 100.0 * n))
        return (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
                + k * np.log(p) + (n - k) * np.log1p(-p))
    raise ValueError(f"no assay model for quantity {quantity!r}")


def simulate_measurement(quantity: str, truth: np.ndarray, lod: float | None, assay: AssayModel,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw measurements of true values (``(values, below_lod)``): the same model, for synthetic patients."""
    t = np.asarray(truth, dtype=float)
    if quantity in LOG_QUANTITIES:
        v = np.exp(np.log(np.maximum(t, assay.floor)) + assay.log_sd * rng.standard_normal(t.shape))
    else:
        v = 100.0 * rng.binomial(assay.marrow_cells, np.clip(t / 100.0, 0, 1)) / assay.marrow_cells
    below = (v < lod) if lod is not None else np.zeros(t.shape, dtype=bool)
    return np.where(below, np.nan, v), below


def effective_sample_size(log_w: np.ndarray) -> float:
    """Kish's effective sample size of normalised importance weights from log weights."""
    w = np.exp(log_w - np.max(log_w))
    w /= w.sum()
    return float(1.0 / np.sum(w ** 2))


def systematic_resample(log_w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn with probabilities ``exp(log_w)`` by systematic resampling (low variance)."""
    w = np.exp(log_w - np.max(log_w))
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    u = (rng.random() + np.arange(n)) / n
    return np.searchsorted(c, u, side="right")


def mixture_log_likelihood(ll: np.ndarray) -> float:
    """The log of mean_u exp(ll_u): the log marginal likelihood of the data under the bank (prior predictive)."""
    return float(special.logsumexp(ll) - math.log(len(ll)))


def weighted_quantiles(values: np.ndarray, log_w: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of ``values`` under normalised weights ``exp(log_w)`` (inverse of the weighted CDF)."""
    w = np.exp(log_w - np.max(log_w))
    w /= w.sum()
    o = np.argsort(values)
    c = np.cumsum(w[o])
    return np.array([values[o][min(np.searchsorted(c, q), len(c) - 1)] for q in qs])
