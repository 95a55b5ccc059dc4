"""Summaries shared by the sensitivity screen, ABC and the predictive checks.

Outcome categories (one per evaluable patient; the simulated twin of an observed patient is
censored when and only when that patient was -- see :func:`make_slots` -- so censoring is
mirrored, not imputed):

* ``pd_first``       -- PD at the first response assessment;
* ``response_first`` -- CR or PR at the first assessment;
* ``progressed``     -- SD at the first assessment, PD at a later assessment up to follow-up;
* ``stable``         -- SD at the first assessment, no PD up to the end of follow-up;
* ``censored``       -- SD at the first assessment, no follow-up after it (lost to follow-up).

Chimerism summaries (per patient, over a day window after the first infusion): peak donor
chimerism of blood lymphocytes (``donor_chimerism_pbmc``) or of blood NK, and the day of that
peak; the cohort statistic is the median (or mean) over patients, as in the targets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..observables import RESPONSE_CODES, RESPONSE_FILL, classify_response
from ..quantities import observe

CATEGORIES: tuple[str, ...] = ("pd_first", "response_first", "progressed", "stable", "censored")
CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}


@dataclass(frozen=True)
class Slot:
    """An evaluable observed patient and how long it was followed (days after first infusion)."""

    patient: str
    first_day: float
    followup_day: float
    category: str  # the observed category


def observed_category(outcome, assessment_days: Sequence[float] | None = None) -> str:
    """Category of an observed :class:`~nksim.calibration.data.PatientOutcome`.

    An SD patient without progression is ``stable`` when at least one assessment day of the
    protocol falls after the first one and within its follow-up (it was seen in SD again), else
    ``censored`` -- the same rule :func:`simulated_category` applies to its twin.
    """
    r = outcome.first_response
    if r == "PD":
        return "pd_first"
    if r in ("CR", "PR"):
        return "response_first"
    if outcome.progressed:
        return "progressed"
    first = float(outcome.first_assessment_day)
    last = float(outcome.last_followup_day) if outcome.last_followup_day is not None else first
    if assessment_days is None:
        return "censored" if (outcome.lost_to_follow_up or outcome.progressed is None) else "stable"
    return "stable" if any(first < d <= last for d in assessment_days) else "censored"


def make_slots(outcomes: Sequence, assessment_days: Sequence[float], source: str = "<outcomes>") -> tuple[Slot, ...]:
    """One slot per evaluable patient, with the follow-up its simulated twin gets.

    A patient whose follow-up ended by an event (PD at the first assessment, progression) would
    have been followed to the study horizon had the event not happened, so its twin is followed
    to the horizon (the latest follow-up or progression day in the data). Follow-up ended
    without an event (lost to follow-up, alive in SD at the last visit) is censoring, assumed
    non-informative: the twin is followed exactly as long.
    """
    from ..errors import NksimInputError

    days = tuple(float(d) for d in assessment_days)
    ends = [d for o in outcomes if o.evaluable for d in (o.last_followup_day, o.progression_day_hi) if d is not None]
    slots = []
    for o in outcomes:
        if not o.evaluable:
            continue
        first = float(o.first_assessment_day)
        if first not in days:
            raise NksimInputError(
                f"patient {o.patient}: first assessment day {first:g} is not an assessment day of the protocol "
                f"{list(days)}", source=source, key="first_assessment_day")
        horizon = max(ends + [first])
        cat = observed_category(o, days)
        if cat in ("censored", "stable"):
            follow = float(o.last_followup_day) if o.last_followup_day is not None else first
        else:
            follow = horizon
        slots.append(Slot(o.patient, first, max(follow, first), cat))
    return tuple(slots)


def observed_counts(slots: Sequence[Slot]) -> np.ndarray:
    """Observed category counts (order :data:`CATEGORIES`)."""
    out = np.zeros(len(CATEGORIES), dtype=np.int64)
    for s in slots:
        out[CATEGORY_INDEX[s.category]] += 1
    return out


def simulated_category(rec: np.ndarray, start_day: float, slot: Slot, assessment_days: Sequence[float],
                       thresholds: Mapping[str, float]) -> str:
    """Category of a simulated patient (daily record ``rec`` from the kernel) followed like ``slot``."""
    blast = observe("marrow_blast_pct", rec)
    base = blast[0]
    days = [d for d in assessment_days if slot.first_day <= d <= slot.followup_day]
    idx = [int(round(d - start_day)) for d in days]
    codes = classify_response(np.array([blast[i] if i < blast.shape[0] else np.nan for i in idx]), base, thresholds)
    first = int(codes[0])
    if first == RESPONSE_FILL:
        raise ValueError(f"patient {slot.patient}: no marrow blast value on the first assessment day "
                         f"{slot.first_day:g} (simulation ended or stopped before it)")
    if first == RESPONSE_CODES["PD"]:
        return "pd_first"
    if first in (RESPONSE_CODES["CR"], RESPONSE_CODES["PR"]):
        return "response_first"
    if len(days) == 1:
        return "censored"
    return "progressed" if np.any(codes[1:] == RESPONSE_CODES["PD"]) else "stable"


def chimerism_peaks(rec: np.ndarray, start_day: float, window: tuple[float, float]) -> tuple[float, float, float]:
    """(peak donor chimerism of PBMC %, of NK %, day of the PBMC peak) over ``window`` (inclusive)."""
    n = rec.shape[0]
    i0 = max(int(round(window[0] - start_day)), 0)
    i1 = min(int(round(window[1] - start_day)), n - 1)
    window_rec = rec[i0:i1 + 1]
    pbmc = observe("donor_chimerism_pbmc", window_rec)
    nk = observe("donor_chimerism_nk", window_rec)
    if pbmc.size == 0 or not np.isfinite(pbmc).any():
        return float("nan"), float("nan"), float("nan")
    k = int(np.nanargmax(pbmc))
    peak = float(np.nanmax(pbmc))
    # no donor cells at all: there is no peak, and no day of it
    return peak, float(np.nanmax(nk)), (float(start_day + i0 + k) if peak > 0 else float("nan"))


def cohort_statistic(values: np.ndarray, statistic: str) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(np.median(v) if statistic == "median" else np.mean(v))
