"""Observables derived from simulated trajectories: response categories, progression, Kaplan-Meier PFS.

Kaplan-Meier progression-free estimates: ``km_survival``, ``km_median``, the whole curve
``km_curve`` (NaN = censored).

Response at an assessment (ELN-style, thresholds from the ``response.*`` parameters), from
the marrow blast percentage ``b`` at the assessment and ``b0`` at baseline (start of
lymphodepletion):

* CR: ``b < cr_blast_pct``;
* PR: ``b <= pr_blast_pct`` and ``b <= b0 (1 - pr_min_fall / 100)``;
* PD: ``b >= b0 (1 + pd_relative_rise / 100)`` and, when ``b0 < pd_absolute_below``, also
  ``b >= b0 + pd_absolute_rise``; from a baseline in CR (``b0 < cr_blast_pct``: a population treated
  in remission) relapse, ``b >= cr_blast_pct`` (ELN 2017);
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
    """Marrow blast percentage at and above which a patient counts as progressed.

    Active disease: a relative rise over baseline (with an absolute rise when baseline is low). A
    patient whose baseline is below the CR threshold (in morphological remission: a consolidation
    population) progresses when she relapses, at the CR threshold itself (ELN 2017: relapse after CR
    is >= 5 % marrow blasts), not 15 points above her residual disease.
    """
    b0 = np.asarray(baseline_pct, dtype=float)
    rel = b0 * (1.0 + th["pd_relative_rise"] / 100.0)
    absolute = np.where(b0 < th["pd_absolute_below"], b0 + th["pd_absolute_rise"], -np.inf)
    return np.where(b0 < th["cr_blast_pct"], th["cr_blast_pct"], np.maximum(rel, absolute))


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


def _km_sf(ttp: np.ndarray, end_day: float | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Kaplan-Meier table ``(times, S(times))`` at the distinct times; None when nothing progressed (S = 1).

    NaN ``ttp`` is censored at ``end_day``: one day for all, or one per patient (an array of
    ``ttp``'s shape, e.g. an observed trial's last follow-up days).

    The same arithmetic as :func:`scipy.stats.ecdf` on ``CensoredData(uncensored=progressed,
    right=censored at end_day)`` (as in scipy 1.17: ``1 - events/n`` without censoring, the
    product of ``(n - d)/n`` with it), so the values are bit-identical
    (``tests/test_observables.py`` compares them), without importing ``scipy.stats`` (0.3-0.6 s
    of CPU at start-up, most of ``nksim run``'s figure time).
    """
    t = np.asarray(ttp, dtype=float).ravel()
    observed = np.isfinite(t)
    if not observed.any():
        return None  # no event: S(t) = 1 everywhere
    censor_days = np.broadcast_to(np.asarray(end_day, dtype=float), np.shape(ttp)).ravel()[~observed]
    tod = t[observed]
    n_censored = int((~observed).sum())
    if n_censored == 0:
        sample = np.sort(tod)
        x, counts = np.unique(sample, return_counts=True)
        return x, 1 - np.cumsum(counts) / sample.size
    times = np.concatenate((tod, censor_days))
    died = np.concatenate((np.ones(tod.size, dtype=np.int64), np.zeros(n_censored, dtype=np.int64)))
    order = np.argsort(times)
    times, died = times[order], died[order]
    at_risk = np.arange(times.size, 0, -1)
    j = np.diff(times, prepend=-np.inf, append=np.inf) > 0
    n = at_risk[j[:-1]]  # number at risk at each distinct time
    d = np.diff(np.cumsum(died)[j[1:]], prepend=0)  # progressions at each distinct time
    return times[j[:-1]], np.cumprod((n - d) / n)


def km_survival(ttp: np.ndarray, end_day: float, at: float) -> float:
    """Kaplan-Meier P(progression-free time > ``at``); NaN ``ttp`` = censored at ``end_day``."""
    if np.size(ttp) == 0:
        return float("nan")
    sf = _km_sf(ttp, end_day)
    if sf is None:
        return 1.0
    q, p = sf
    i = int(np.searchsorted(q, float(at), side="right")) - 1  # right-continuous step: last time <= at
    return 1.0 if i < 0 else float(p[i])


def km_median(ttp: np.ndarray, end_day: float) -> float:
    """Kaplan-Meier median: the smallest time with S(t) <= 0.5; ``inf`` if not reached."""
    if np.size(ttp) == 0:
        return float("nan")
    sf = _km_sf(ttp, end_day)
    if sf is None:
        return float("inf")
    q, p = sf
    below = np.nonzero(p <= 0.5)[0]
    return float(q[below[0]]) if below.size else float("inf")


def km_curve(ttp: np.ndarray, end_day: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole Kaplan-Meier progression-free curve as a right-continuous step function.

    Returns ``(t, s)``: ``t`` starts at 0 (or the first time if earlier) followed by each
    distinct observed time (progression or censoring day), ``s[i]`` = P(progression-free
    time > ``t[i]``), so that ``s[searchsorted(t, day, "right") - 1]`` equals
    ``km_survival(ttp, end_day, day)`` for any day ``>= t[0]``. NaN ``ttp`` = censored at
    ``end_day`` (one day, or one per patient); no data gives ``([0], [nan])``.
    """
    if np.size(ttp) == 0:
        return np.array([0.0]), np.array([np.nan])
    sf = _km_sf(ttp, end_day)
    if sf is None:
        return np.array([0.0]), np.array([1.0])
    q = np.asarray(sf[0], dtype=float)
    p = np.asarray(sf[1], dtype=float)
    t0 = min(0.0, float(q[0]))
    if q[0] <= t0:
        return q, p
    return np.concatenate([[t0], q]), np.concatenate([[1.0], p])
