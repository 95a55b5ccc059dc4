"""The observed trial beside a simulated cohort: the trial's counts, this run's, and the model's predictive intervals.

``nksim run`` prints this comparison and ``trial.png`` shows it, without simulating anything
more. For a protocol with a committed predictive check (:data:`COMMITTED_CHECKS`; today the
Ahmadvand 2023 trial):

* the **trial's** outcomes come from its outcome table (``calibration/data/``), and the same
  counts are stored in the predictive check (``observed`` attributes; a test keeps them equal);
* **this run's** counts treat every simulated patient as the predictive check does
  (:func:`nksim.calibration.summaries.make_slots`): a simulated twin is followed as long as its
  observed patient (a patient lost to follow-up after the first assessment is not "followed";
  one whose follow-up ended by progression is followed to the study horizon), and progression
  after SD is called at the protocol's assessment days;
* the **model's 90 % predictive interval** of each count is the committed posterior predictive
  check of the default model (``calibration/posterior/ppc_posterior.nc``: one virtual trial for
  each of 200 posterior draws, at the calibration resolution). It belongs to the shipped
  default model: for any other parameter set it is not shown.

One virtual trial of nine patients varies widely (the default model puts 0-6 patients in PD at
the first assessment where the trial had 3), so a single run can sit far from the trial while the
calibration holds; more replicates show the spread.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

from .fileio import shown_path
from .observables import RESPONSE_CODES
from .parameters import ParameterSet, load_parameters
from .protocol import Protocol, load_protocol
from .resources import data_path

#: Protocol name -> (its committed predictive check, its outcome table, a short name of the trial),
#: paths relative to the shipped ``calibration`` folder.
COMMITTED_CHECKS: dict[str, tuple[str, str, str]] = {
    "ahmadvand2023": ("posterior/ppc_posterior.nc", "data/ahmadvand2023_outcomes.csv", "Ahmadvand 2023"),
}

#: The counts compared (names of the predictive check's variables) and their labels: statistic ->
#: (label, per-patient categories counted; :data:`nksim.calibration.summaries.CATEGORIES`).
STATISTICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "n_pd_first": ("PD at the first assessment", ("pd_first",)),  # day 28 in the trial
    "n_response_first": ("CR or PR at the first assessment", ("response_first",)),
    "n_followed_sd": ("SD, followed beyond the first assessment", ("progressed_by_180", "progressed_after_180",
                                                                   "stable")),
    "n_progressed": ("  of whom PD within follow-up", ("progressed_by_180", "progressed_after_180")),
    "n_converted_after_180": ("  of whom PD first called after day 180", ("progressed_after_180",)),
}


@dataclass(frozen=True)
class ReferenceRow:
    """One compared count: the trial's value, this run's per virtual trial, the model's 90 % interval."""

    name: str
    label: str
    observed: float
    simulated: np.ndarray  # one value per replicate (virtual trial)
    interval: tuple[float, float] | None  # None: the interval belongs to another parameter set


@dataclass(frozen=True)
class TrialReference:
    """The trial beside a cohort run (:func:`trial_reference`)."""

    trial: str
    evaluable: int
    rows: tuple[ReferenceRow, ...]
    #: the trial's per-patient outcomes (:class:`nksim.calibration.data.PatientOutcome`), all patients
    outcomes: tuple
    check_file: str
    check_draws: int
    #: why the predictive intervals are not shown (None when they are)
    no_interval_reason: str | None
    #: the nksim version that computed the predictive check
    check_version: str = "?"

    def row(self, name: str) -> ReferenceRow:
        """The row of statistic ``name`` (a key of :data:`STATISTICS`)."""
        return next(r for r in self.rows if r.name == name)

    def progression(self) -> tuple[np.ndarray, np.ndarray]:
        """The trial's progression-free data of its evaluable patients: (day PD was called, NaN if none; last day seen).

        PD is dated by the visit that called it (``progression_day_hi``), as the simulated
        ``time_to_progression`` is; a patient without progression is censored at its last
        follow-up (its first assessment when lost to follow-up after it). For
        :func:`nksim.observables.km_curve`.
        """
        ev = [o for o in self.outcomes if o.evaluable]
        ttp = np.array([o.progression_day_hi if o.progressed else np.nan for o in ev], dtype=float)
        last = np.array([o.last_followup_day if o.last_followup_day is not None else o.first_assessment_day
                         for o in ev], dtype=float)
        return ttp, np.where(np.isfinite(ttp), ttp, last)


def trial_reference(ds: xr.Dataset, params: ParameterSet, protocol: Protocol) -> TrialReference | None:
    """The trial beside cohort ``ds`` (simulated with ``params`` under ``protocol``), or None.

    None when the protocol is not a shipped one with a committed predictive check (a modified
    copy of it included), or when ``ds`` lacks some of the trial's evaluable patients. The
    predictive intervals are given only when ``params`` are the shipped default model's values.
    """
    entry = COMMITTED_CHECKS.get(protocol.name)
    if entry is None or replace(protocol, origin="") != replace(load_protocol(protocol.name), origin=""):
        return None
    from .calibration.data import load_outcomes
    from .calibration.summaries import make_slots

    default_model = params.digest() == load_parameters("default").digest()
    check_rel, outcomes_rel, trial = entry
    folder = data_path("calibration")
    check_path = folder / check_rel
    assessment_days = [float(d) for d in ds.assessment.values]
    outcomes = load_outcomes(folder / outcomes_rel)
    slots = make_slots(outcomes, assessment_days, source=str(folder / outcomes_rel))
    missing = [s.patient for s in slots if s.patient not in ds.patient.values]
    if missing:
        return None  # a subset of the trial's patients: not comparable with the trial's counts
    categories = simulated_categories(ds, slots)
    from .io import open_output

    with open_output(check_path) as check:
        rows = []
        for name, (label, counted) in STATISTICS.items():
            attrs = check[name].attrs
            sim = np.isin(categories, counted).sum(axis=0).astype(float)
            interval = (float(attrs["interval_90_lo"]), float(attrs["interval_90_hi"])) if default_model else None
            rows.append(ReferenceRow(name, label, float(attrs["observed"]), sim, interval))
        draws = int(check.attrs.get("n_draws", check.sizes.get("draw", 0)))
        check_version = str(check.attrs.get("nksim_version", "?"))
    reason = None if default_model else "the committed predictive intervals belong to the default model"
    return TrialReference(trial, len(slots), tuple(rows), tuple(outcomes), shown_path(check_path), draws, reason,
                          check_version)


def simulated_categories(ds: xr.Dataset, slots: Sequence) -> np.ndarray:
    """Per-patient category (slot x replicate; :data:`nksim.calibration.summaries.CATEGORIES`) of a cohort.

    Each simulated patient is followed like its slot (:class:`nksim.calibration.summaries.Slot`):
    responses at the assessment days from its first assessment to its follow-up end; the rule of
    :func:`nksim.calibration.summaries.simulated_outcome`, read from the Dataset's ``response``.
    """
    from .calibration.summaries import SPLIT_DAY

    days = np.asarray(ds.assessment.values, dtype=float)
    pd, cr, pr = RESPONSE_CODES["PD"], RESPONSE_CODES["CR"], RESPONSE_CODES["PR"]
    out = np.empty((len(slots), ds.sizes["replicate"]), dtype=object)
    for i, slot in enumerate(slots):
        within = (days >= slot.first_day) & (days <= slot.followup_day)
        seen = days[within]
        codes = ds.response.sel(patient=slot.patient).isel(assessment=np.flatnonzero(within)).values  # rep x day
        for r in range(codes.shape[0]):
            first = codes[r, 0]
            if first == pd:
                out[i, r] = "pd_first"
            elif first in (cr, pr):
                out[i, r] = "response_first"
            elif len(seen) == 1:
                out[i, r] = "censored"
            else:
                hits = np.flatnonzero(codes[r, 1:] == pd)
                if hits.size == 0:
                    out[i, r] = "stable"
                else:
                    out[i, r] = "progressed_by_180" if seen[1 + hits[0]] <= SPLIT_DAY else "progressed_after_180"
    return out


def run_count(values: np.ndarray) -> str:
    """A count of this run: its value for one virtual trial, else the median (range) over the virtual trials."""
    if values.size == 1:
        return f"{values[0]:g}"
    return f"{np.median(values):g} ({values.min():g}-{values.max():g})"


def reference_table(ref: TrialReference) -> str:
    """The comparison as text lines (printed by ``nksim run`` after its summary)."""
    n_rep = ref.rows[0].simulated.size
    run_head = "this run" if n_rep == 1 else f"this run: median (range) of {n_rep} trials"
    run_width = max(len(run_head), 9)
    width = max(len(r.label) for r in ref.rows) + 2
    lines = [f"the trial beside the model ({ref.trial}: {ref.evaluable} evaluable patients; counts of patients)",
             f"{'':<{width}}{'trial':>6}  {run_head:>{run_width}}  {'model 90 % PI':>13}"]
    outside = False
    for r in ref.rows:
        pi = "-" if r.interval is None else f"{round(r.interval[0]):d}-{round(r.interval[1]):d}"
        mark = ""
        if r.interval is not None and n_rep == 1 and not r.interval[0] <= r.simulated[0] <= r.interval[1]:
            mark, outside = " *", True
        lines.append(f"{r.label:<{width}}{r.observed:>6g}  {run_count(r.simulated):>{run_width}}  {pi:>13}{mark}")
    if ref.no_interval_reason is None:
        lines.append(f"model 90 % PI: {ref.check_draws} virtual trials over the calibrated posterior, simulated by "
                     f"nksim {ref.check_version} ({ref.check_file}).")
        if outside:
            lines.append("* this virtual trial lies outside the model's 90 % interval, as about one in ten does.")
        lines.append(f"One virtual trial of {ref.evaluable} patients can sit far from the trial while the calibration "
                     "holds" + ("; --replicates 20 shows this run's spread." if n_rep == 1 else "."))
    else:
        lines.append(f"model 90 % PI not shown: {ref.no_interval_reason} ({ref.check_file}).")
    return "\n".join(lines)
