"""Summaries shared by the sensitivity screen, ABC and the predictive checks.

Outcome categories (one per evaluable patient; the simulated twin of an observed patient is
censored when and only when that patient was -- see :func:`make_slots` -- so censoring is
mirrored, not imputed):

* ``pd_first``             -- PD at the first response assessment;
* ``response_first``       -- CR or PR at the first assessment;
* ``progressed_by_180``    -- SD at the first assessment, PD first called at a later assessment
  on or before day :data:`SPLIT_DAY` (180), i.e. progression in (first assessment, 180];
* ``progressed_after_180`` -- SD at the first assessment, PD first called at an assessment after
  day 180 and within follow-up (to the 9-month horizon: progression in (180, 270]);
* ``stable``               -- SD at the first assessment, no PD up to the end of follow-up;
* ``censored``             -- SD at the first assessment, no follow-up after it (lost to follow-up).

Splitting "progressed" by the assessment interval in which PD is first called puts the time to
conversion, interval-censored as the trial observed it, into the category table: an observed
progression interval ``(lo, hi]`` (``progression_day_lo/hi``) must lie within one bin
(``hi <= 180`` or ``lo >= 180``); a simulated twin is assigned by the first assessment day with
a PD call. Censoring is unchanged (each twin is followed as long as its observed patient).

Two progression-timing modes (``[distance] progression_timing`` of the calibration config):

* ``"interval"`` (default): the table above; an observed interval that straddles day 180 is an
  error naming the file, data row and patient (narrow the interval, or use the mode below);
* ``"any"``: the two progression bins are merged into one ``progressed`` category
  (:data:`COARSE_CATEGORIES`) for observed and simulated patients alike -- the exact table of
  coarsened data when the observed intervals do not resolve the timing (the looser reading
  ``(28, 270]`` of "converted at 9 months", ``calibration/data/ahmadvand2023_outcomes_any_time.csv``).
  A mixture (spreading a straddling patient over both bins) would impose a timing distribution
  within the interval that the data do not give; an observed-only "unknown timing" category
  could never be matched by simulated twins.

Per simulated patient, besides the category: the day PD is first called (an assessment day;
``pd_call_day``) and the first day on which the daily marrow blast percentage meets the PD
criterion after the first assessment (``pd_cross_day``; NaN without progression in follow-up).

Chimerism summaries (per patient, over a day window after the first infusion): peak donor
chimerism of blood lymphocytes (``donor_chimerism_pbmc``) or of blood NK, and the day of that
peak; the blood lymphocyte count on one day. The cohort statistic is the median (or mean) over
patients, as in the targets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..observables import RESPONSE_CODES, RESPONSE_FILL, classify_response
from ..quantities import observe

#: Day (after the first infusion) that splits progression after SD into two bins: the assessments
#: at 90 and 180 days vs the one at 270 days ("converted to PD at 9 months").
SPLIT_DAY = 180.0
#: Per-patient categories (the category table of the default ``"interval"`` timing mode).
CATEGORIES: tuple[str, ...] = ("pd_first", "response_first", "progressed_by_180", "progressed_after_180", "stable",
                               "censored")
CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
#: The progression categories (SD at the first assessment, PD later within follow-up).
PROGRESSED: tuple[str, ...] = ("progressed_by_180", "progressed_after_180")
#: The category table of the ``"any"`` timing mode: progression bins merged.
COARSE_CATEGORIES: tuple[str, ...] = ("pd_first", "response_first", "progressed", "stable", "censored")
#: Progression-timing modes (``[distance] progression_timing``) -> their category table.
TIMING_MODES: dict[str, tuple[str, ...]] = {"interval": CATEGORIES, "any": COARSE_CATEGORIES}


def table_category(category: str, timing: str = "interval") -> str:
    """The category-table name of a per-patient category in a timing mode."""
    if timing == "any" and category in PROGRESSED:
        return "progressed"
    return category


def table_matrix(timing: str = "interval") -> np.ndarray:
    """0/1 matrix (table category x per-patient category) that sums per-patient counts into the table."""
    table = TIMING_MODES[timing]
    m = np.zeros((len(table), len(CATEGORIES)), dtype=np.int64)
    for j, c in enumerate(CATEGORIES):
        m[table.index(table_category(c, timing)), j] = 1
    return m


@dataclass(frozen=True)
class Slot:
    """An evaluable observed patient and how long it was followed (days after first infusion)."""

    patient: str
    first_day: float
    followup_day: float
    category: str  # the observed category (a name of the timing mode's table)


def progression_bin(lo: float, hi: float, split_day: float = SPLIT_DAY) -> str | None:
    """The progression bin of an interval-censored progression ``(lo, hi]``; None if it straddles the split."""
    if hi <= split_day:
        return "progressed_by_180"
    if lo >= split_day:
        return "progressed_after_180"
    return None


def observed_category(outcome, assessment_days: Sequence[float] | None = None, timing: str = "interval",
                      where: str = "", source: str | None = None) -> str:
    """Category of an observed :class:`~nksim.calibration.data.PatientOutcome` (a name of ``timing``'s table).

    An SD patient without progression is ``stable`` when at least one assessment day of the
    protocol falls after the first one and within its follow-up (it was seen in SD again), else
    ``censored`` -- the same rule :func:`simulated_category` applies to its twin. A progressed SD
    patient is binned by its interval ``(progression_day_lo, progression_day_hi]`` (``lo`` defaults
    to the first assessment); in the ``"interval"`` mode an interval straddling :data:`SPLIT_DAY`
    raises :class:`~nksim.errors.NksimInputError` (``where`` names the file and data row).
    """
    r = outcome.first_response
    if r == "PD":
        return "pd_first"
    if r in ("CR", "PR"):
        return "response_first"
    if outcome.progressed:
        if timing == "any":
            return "progressed"
        lo = outcome.progression_day_lo if outcome.progression_day_lo is not None else outcome.first_assessment_day
        hi = float(outcome.progression_day_hi)
        b = progression_bin(float(lo), hi)
        if b is None:
            from ..errors import NksimInputError

            raise NksimInputError(
                f"{where}patient '{outcome.patient}': progression interval ({float(lo):g}, {hi:g}] straddles day "
                f"{SPLIT_DAY:g}, so it falls in neither progression bin ({', '.join(PROGRESSED)}: PD first called "
                f"on or before / after day {SPLIT_DAY:g}); allowed: progression_day_hi <= {SPLIT_DAY:g} or "
                f"progression_day_lo >= {SPLIT_DAY:g}, or set [distance] progression_timing = \"any\" in the "
                "calibration config (progression bins merged)", source=source, key="progression_day_lo")
        return b
    first = float(outcome.first_assessment_day)
    last = float(outcome.last_followup_day) if outcome.last_followup_day is not None else first
    if assessment_days is None:
        return "censored" if (outcome.lost_to_follow_up or outcome.progressed is None) else "stable"
    return "stable" if any(first < d <= last for d in assessment_days) else "censored"


def make_slots(outcomes: Sequence, assessment_days: Sequence[float], source: str = "<outcomes>",
               timing: str = "interval", horizon: float | None = None) -> tuple[Slot, ...]:
    """One slot per evaluable patient, with the follow-up its simulated twin gets.

    A patient whose follow-up ended by an event (PD at the first assessment, progression) would
    have been followed to the study horizon had the event not happened, so its twin is followed
    to the horizon (the latest follow-up or progression day in the data). Follow-up ended
    without an event (lost to follow-up, alive in SD at the last visit) is censoring, assumed
    non-informative: the twin is followed exactly as long. ``timing``: see the module docstring;
    ``horizon`` overrides the study horizon (synthetic trials keep the real trial's).
    """
    from ..errors import NksimInputError

    if timing not in TIMING_MODES:
        raise ValueError(f"unknown progression timing mode {timing!r}; allowed: {', '.join(TIMING_MODES)}")
    days = tuple(float(d) for d in assessment_days)
    ends = [d for o in outcomes if o.evaluable for d in (o.last_followup_day, o.progression_day_hi) if d is not None]
    slots = []
    for row, o in enumerate(outcomes, start=1):
        if not o.evaluable:
            continue
        first = float(o.first_assessment_day)
        if first not in days:
            raise NksimInputError(
                f"patient {o.patient}: first assessment day {first:g} is not an assessment day of the protocol "
                f"{list(days)}", source=source, key="first_assessment_day")
        end = max(ends + [first]) if horizon is None else float(horizon)
        cat = observed_category(o, days, timing, where=f"data row {row}: ", source=source)
        if cat in ("censored", "stable"):
            follow = float(o.last_followup_day) if o.last_followup_day is not None else first
        else:
            follow = end
        slots.append(Slot(o.patient, first, max(follow, first), cat))
    return tuple(slots)


def observed_counts(slots: Sequence[Slot], timing: str = "interval") -> np.ndarray:
    """Observed category counts (order of the timing mode's table, :data:`TIMING_MODES`)."""
    table = TIMING_MODES[timing]
    out = np.zeros(len(table), dtype=np.int64)
    for s in slots:
        out[table.index(s.category)] += 1
    return out


def simulated_outcome(rec: np.ndarray, start_day: float, slot: Slot, assessment_days: Sequence[float],
                      thresholds: Mapping[str, float]) -> tuple[str, float, float]:
    """(category, PD call day, PD crossing day) of a simulated patient followed like ``slot``.

    The category is one of :data:`CATEGORIES`; the call day is the first assessment day after the
    first one (within follow-up) with a PD call, the crossing day the first day after the first
    assessment, up to the call day, on which the daily blasts meet the PD criterion. Both are NaN
    unless the category is a progression category.
    """
    blast = observe("marrow_blast_pct", rec)
    base = blast[0]
    days = [d for d in assessment_days if slot.first_day <= d <= slot.followup_day]
    idx = [int(round(d - start_day)) for d in days]
    codes = classify_response(np.array([blast[i] if i < blast.shape[0] else np.nan for i in idx]), base, thresholds)
    first = int(codes[0])
    nan = float("nan")
    if first == RESPONSE_FILL:
        raise ValueError(f"patient {slot.patient}: no marrow blast value on the first assessment day "
                         f"{slot.first_day:g} (simulation ended or stopped before it)")
    if first == RESPONSE_CODES["PD"]:
        return "pd_first", nan, nan
    if first in (RESPONSE_CODES["CR"], RESPONSE_CODES["PR"]):
        return "response_first", nan, nan
    if len(days) == 1:
        return "censored", nan, nan
    hits = np.flatnonzero(codes[1:] == RESPONSE_CODES["PD"])
    if hits.size == 0:
        return "stable", nan, nan
    call = float(days[1 + int(hits[0])])
    i0, i1 = idx[0] + 1, int(round(call - start_day))
    daily = classify_response(blast[i0:i1 + 1], base, thresholds)
    cross = float(start_day + i0 + int(np.flatnonzero(daily == RESPONSE_CODES["PD"])[0]))
    return ("progressed_by_180" if call <= SPLIT_DAY else "progressed_after_180"), call, cross


def simulated_category(rec: np.ndarray, start_day: float, slot: Slot, assessment_days: Sequence[float],
                       thresholds: Mapping[str, float]) -> str:
    """Category (:data:`CATEGORIES`) of a simulated patient (daily record ``rec``) followed like ``slot``."""
    return simulated_outcome(rec, start_day, slot, assessment_days, thresholds)[0]


def median_conversion_day(call_days: np.ndarray) -> float:
    """Median over patients of the day PD is first called after SD (NaN when nobody converted)."""
    v = np.asarray(call_days, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


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
    """Median (``statistic="median"``) or else mean of the finite values; NaN if there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(np.median(v) if statistic == "median" else np.mean(v))


def _day_sum(rec: np.ndarray, start_day: float, day: float, names: tuple[str, ...]) -> float:
    """Sum of the observables ``names`` in the daily record on ``day`` (NaN if not simulated)."""
    i = int(round(day - start_day))
    if i < 0 or i >= rec.shape[0]:
        return float("nan")
    row = rec[i:i + 1]
    return float(sum(observe(n, row)[0] for n in names))


def donor_nk_per_ul(rec: np.ndarray, start_day: float, day: float) -> float:
    """Donor NK per uL blood on ``day`` (NaN if not simulated)."""
    return _day_sum(rec, start_day, day, ("donor_nk_blood",))


def lymphocyte_count(rec: np.ndarray, start_day: float, day: float) -> float:
    """Blood lymphocytes per uL (host NK + host T + host Tregs + donor NK) on ``day`` (NaN if not simulated)."""
    return _day_sum(rec, start_day, day, ("host_nk_blood", "host_t_blood", "host_treg_blood", "donor_nk_blood"))
