"""Observables derived from simulated trajectories: response categories, progression, Kaplan-Meier PFS.

Kaplan-Meier progression-free estimates: ``km_survival``, ``km_median``, the whole curve
``km_curve`` (NaN = censored).

Response at an assessment (ELN-style, thresholds from the ``response.*`` parameters), from
the marrow blast percentage ``b`` at the assessment and ``b0`` at baseline (start of
lymphodepletion):

* CR: ``b < cr_blast_pct``;
* PR: ``b <= pr_blast_pct`` and ``b <= b0 (1 - pr_min_fall / 100)``;
* PD: ``b >= b0 (1 + pd_relative_rise / 100)`` and, when ``b0 < pd_absolute_below``, also
  ``b >= b0 + pd_absolute_rise``;
* SD: otherwise.

CR takes precedence over PR, and PR over PD (the rules cannot overlap for sane thresholds).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Response codes stored in outputs (flag_values / flag_meanings).
RESPONSE_CODES: dict[str, int] = {"CR": 0, "PR": 1, "SD": 2, "PD": 3}
RESPONSE_FILL = -1  # not assessed


def response_thresholds(params: Mapping[str, float] | object) -> dict[str, float]:
    """The response thresholds (percent) from a ParameterSet (or a mapping with the same keys)."""
    keys = ("cr_blast_pct", "pr_blast_pct", "pr_min_fall", "pd_relative_rise", "pd_absolute_rise",
            "pd_absolute_below")
    return {k: float(params[f"response.{k}"]) for k in keys}  # type: ignore[index]


def pd_threshold(baseline_pct: np.ndarray | float, th: Mapping[str, float]) -> np.ndarray:
    """Marrow blast percentage at and above which a patient counts as progressed."""
    b0 = np.asarray(baseline_pct, dtype=float)
    rel = b0 * (1.0 + th["pd_relative_rise"] / 100.0)
    absolute = np.where(b0 < th["pd_absolute_below"], b0 + th["pd_absolute_rise"], -np.inf)
    return np.maximum(rel, absolute)


def classify_response(blast_pct: np.ndarray, baseline_pct: np.ndarray, th: Mapping[str, float]) -> np.ndarray:
    """Response codes (int8, :data:`RESPONSE_CODES`) for blast percentages vs baseline.

    ``blast_pct`` and ``baseline_pct`` broadcast against each other; NaN blast
    percentages give :data:`RESPONSE_FILL`.
    """
    b = np.asarray(blast_pct, dtype=float)
    b0 = np.asarray(baseline_pct, dtype=float)
    b, b0 = np.broadcast_arrays(b, b0)
    out = np.full(b.shape, RESPONSE_CODES["SD"], dtype=np.int8)
    pd = b >= pd_threshold(b0, th)
    pr = (b <= th["pr_blast_pct"]) & (b <= b0 * (1.0 - th["pr_min_fall"] / 100.0))
    cr = b < th["cr_blast_pct"]
    out[pd] = RESPONSE_CODES["PD"]
    out[pr] = RESPONSE_CODES["PR"]
    out[cr] = RESPONSE_CODES["CR"]
    out[np.isnan(b)] = RESPONSE_FILL
    return out


def time_to_progression(time: np.ndarray, blast_pct: np.ndarray, baseline_pct: np.ndarray | float,
                        th: Mapping[str, float], from_day: float = 0.0) -> np.ndarray:
    """First time (day) at or after ``from_day`` at which blasts reach the PD threshold; NaN if never.

    ``blast_pct`` has time as its last axis; ``baseline_pct`` broadcasts against the other axes.
    """
    t = np.asarray(time, dtype=float)
    b = np.asarray(blast_pct, dtype=float)
    thr = pd_threshold(np.asarray(baseline_pct, dtype=float), th)[..., None]
    hit = (b >= thr) & (t >= from_day)
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), t[first], np.nan)


def _km_sf(ttp: np.ndarray, end_day: float):
    from scipy.stats import CensoredData, ecdf

    t = np.asarray(ttp, dtype=float).ravel()
    observed = np.isfinite(t)
    if not observed.any():
        return None  # no event: S(t) = 1 everywhere
    data = CensoredData(uncensored=t[observed], right=np.full(int((~observed).sum()), float(end_day)))
    return ecdf(data).sf


def km_survival(ttp: np.ndarray, end_day: float, at: float) -> float:
    """Kaplan-Meier P(progression-free time > ``at``); NaN ``ttp`` = censored at ``end_day``."""
    if np.size(ttp) == 0:
        return float("nan")
    sf = _km_sf(ttp, end_day)
    return 1.0 if sf is None else float(sf.evaluate(float(at)))


def km_median(ttp: np.ndarray, end_day: float) -> float:
    """Kaplan-Meier median: the smallest time with S(t) <= 0.5; ``inf`` if not reached."""
    if np.size(ttp) == 0:
        return float("nan")
    sf = _km_sf(ttp, end_day)
    if sf is None:
        return float("inf")
    below = np.nonzero(sf.probabilities <= 0.5)[0]
    return float(sf.quantiles[below[0]]) if below.size else float("inf")


def km_curve(ttp: np.ndarray, end_day: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole Kaplan-Meier progression-free curve as a right-continuous step function.

    Returns ``(t, s)``: ``t`` starts at 0 (or the first time if earlier) followed by each
    distinct observed time (progression or censoring day), ``s[i]`` = P(progression-free
    time > ``t[i]``), so that ``s[searchsorted(t, day, "right") - 1]`` equals
    ``km_survival(ttp, end_day, day)`` for any day ``>= t[0]``. NaN ``ttp`` = censored at
    ``end_day``; no data gives ``([0], [nan])``.
    """
    if np.size(ttp) == 0:
        return np.array([0.0]), np.array([np.nan])
    sf = _km_sf(ttp, end_day)
    if sf is None:
        return np.array([0.0]), np.array([1.0])
    q = np.asarray(sf.quantiles, dtype=float)
    p = np.asarray(sf.probabilities, dtype=float)
    t0 = min(0.0, float(q[0]))
    if q[0] <= t0:
        return q, p
    return np.concatenate([[t0], q]), np.concatenate([[1.0], p])
