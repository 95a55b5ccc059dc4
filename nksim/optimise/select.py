"""Confirmation statistics: paired comparisons on a fresh bank, the near-optimal set, per-draw best.

All comparisons are **paired** (every candidate on the same units of one bank) and their standard
errors are **cluster-robust by posterior draw**: the mean over a bank is the mean of its per-draw
means, and those are independent between draws (each draw has its own patients), so the standard
error of a mean or of a paired difference is the standard deviation of the per-draw values over
``sqrt(n_draws)``, with Student-t quantiles on ``n_draws - 1`` degrees of freedom. This carries the
posterior's uncertainty, the patients' and the stochastic simulation's into every interval.

* **Near-optimal set** (multiple comparisons with the best, Hsu 1984, one-sided, Bonferroni over
  the ``k - 1`` comparisons of each candidate): candidate ``i`` is in the set unless some ``j``
  beats it by more than ``delta`` with confidence, i.e. unless the upper bound of
  ``mean_i - mean_j`` is below ``-delta`` for some ``j``. The true best is in the set with
  probability at least ``1 - alpha``: for it every ``mean_best - mean_j >= 0 > -delta``.
* **Selected schedule**: the largest mean on the confirm bank among the selectable candidates;
  its value is then estimated on a third, independent bank (:func:`held_out`), because the
  selecting bank's own value of its winner is biased upward (the winner's curse).
* **Per-draw analysis**: the probability that each candidate is best within a posterior draw
  (from per-draw means; a tie is shared) and the expected value of perfect information about the draw
  (EVPI = E_d[max_i m_i(d)] - max_i E_d[m_i(d)]), given twice: the plain estimate, biased upward by
  the patients' noise in the per-draw means, and a cross-fitted one (pick each draw's best on one
  half of its patients, score it on the other), biased downward; the truth lies between them up
  to Monte-Carlo error.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from .bank import Bank, per_draw_means, split_draw_means


def cluster_mean_se(values: np.ndarray, bank: Bank) -> tuple[np.ndarray, np.ndarray]:
    """Mean over units and its draw-clustered standard error, along the last axis."""
    m = per_draw_means(values, bank)
    mean = m.mean(axis=-1)
    if bank.n_draws > 1:
        se = m.std(axis=-1, ddof=1) / np.sqrt(bank.n_draws)
    else:  # one draw: the units are independent given it, and the posterior's spread is not sampled
        v = np.asarray(values, dtype=float)
        se = v.std(axis=-1, ddof=1) / np.sqrt(v.shape[-1])
    return mean, se


def _dof(bank: Bank) -> int:
    return bank.n_draws - 1 if bank.n_draws > 1 else bank.n_units - 1


def paired(values: np.ndarray, bank: Bank) -> tuple[np.ndarray, np.ndarray]:
    """``(diff, se)`` of every pair: ``diff[i, j] = mean_i - mean_j`` with its clustered standard error."""
    v = np.asarray(values, dtype=float)
    d = v[:, None, :] - v[None, :, :]
    return cluster_mean_se(d, bank)


def near_optimal_set(values: np.ndarray, bank: Bank, delta: float, alpha: float = 0.05) -> np.ndarray:
    """Boolean mask of the candidates that cannot be ruled out as within ``delta`` of the best (MCB)."""
    k = values.shape[0]
    if k == 1:
        return np.ones(1, dtype=bool)
    diff, se = paired(values, bank)
    q = stats.t.ppf(1.0 - alpha / (k - 1), _dof(bank))
    upper = diff + q * se
    np.fill_diagonal(upper, np.inf)
    return (upper >= -float(delta)).all(axis=1)


def per_draw_best(values: np.ndarray, bank: Bank) -> dict[str, np.ndarray | float]:
    """Probability of being best per draw and the two EVPI estimates (module docstring)."""
    m = per_draw_means(values, bank)  # (k, D)
    top = m >= m.max(axis=0, keepdims=True) - 1e-9 * np.maximum(1.0, np.abs(m).max())
    p_best = (top / top.sum(axis=0, keepdims=True)).mean(axis=1)  # a tie within a draw is shared equally
    evpi_plain = float(m.max(axis=0).mean() - m.mean(axis=1).max())
    evpi_cross = float("nan")
    if bank.patients >= 2:
        a, b = split_draw_means(values, bank)
        pick = np.argmax(a, axis=0)
        evpi_cross = float(b[pick, np.arange(b.shape[1])].mean() - b.mean(axis=1).max())
    return {"p_best": p_best, "evpi_plain": evpi_plain, "evpi_cross": evpi_cross, "draw_means": m}


def select(values: np.ndarray, bank: Bank, selectable: Sequence[bool] | None = None, prefer: int | None = None) -> int:
    """Index of the largest mean among the selectable candidates.

    Ties (equal means, as when no schedule changes any unit's outcome) go to ``prefer`` (the
    reference: a schedule that is not better is not recommended over it), else to the first.
    """
    mean, _ = cluster_mean_se(values, bank)
    mask = np.ones(len(mean), dtype=bool) if selectable is None else np.asarray(selectable, dtype=bool)
    best = int(np.flatnonzero(mask)[np.argmax(mean[mask])])
    if prefer is not None and mask[prefer] and mean[prefer] >= mean[best]:
        return int(prefer)
    return best


def interval(mean: np.ndarray | float, se: np.ndarray | float, bank: Bank, level: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t interval of a clustered mean."""
    q = stats.t.ppf(0.5 + level / 2.0, _dof(bank))
    return np.asarray(mean) - q * np.asarray(se), np.asarray(mean) + q * np.asarray(se)


def held_out(selected: np.ndarray, reference: np.ndarray, bank: Bank, level: float = 0.95) -> dict[str, float]:
    """Estimate of the selected schedule and of its gain over the reference on an independent bank."""
    v = np.stack([selected, reference])
    mean, se = cluster_mean_se(v, bank)
    dm, dse = cluster_mean_se(v[0] - v[1], bank)
    lo, hi = interval(mean[0], se[0], bank, level)
    dlo, dhi = interval(dm, dse, bank, level)
    return {"value": float(mean[0]), "value_se": float(se[0]), "value_lo": float(lo), "value_hi": float(hi),
            "reference": float(mean[1]), "gain": float(dm), "gain_se": float(dse), "gain_lo": float(dlo),
            "gain_hi": float(dhi)}
