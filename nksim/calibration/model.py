"""The calibration simulator: parameters -> virtual trial -> summaries.

:class:`CalibrationModel` simulates the evaluable patients of the observed trial (each with its
own dose group and follow-up) ``virtual_trials`` times at the calibration resolution (the
``[simulator]`` table: a coarser lattice over the same marrow region, follow-up horizon
``end_day``) with early stopping of patients whose progression is already established (the run
ends after the first assessment at which blasts reach the PD threshold; nothing that the
summaries use is lost, see :func:`nksim.simulate.run_one`).

Targets with their own ``protocol`` (analogue trials: another regimen, cytokine support, doses)
are computed from simulations of that protocol, not of the trial's twins: every patient of the
protocol, once per virtual trial, at the calibration resolution, to the end of the target's
window (no early stopping). Targets without one use the trial's twins.

Randomness: the simulation seed of a parameter vector is derived from the configuration seed
and the exact bytes of the parameter values (``SeedSequence``), so a summary is a deterministic
function of (config seed, theta) wherever it runs -- serial, threaded or on a Dask worker. The
analogue protocols' patients use the same seed (their streams are keyed by patient id and
virtual trial, :func:`nksim.streams.generators`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ..checks import check_seed
from ..errors import NksimInputError, NksimWarning
from ..observables import response_thresholds
from ..parameters import ParameterSet
from ..protocol import Protocol, load_protocol
from ..quantities import observe
from ..simulate import run_one
from .config import CalibrationConfig
from .distance import total_distance
from .summaries import (
    CATEGORIES,
    CATEGORY_INDEX,
    TIMING_MODES,
    Slot,
    chimerism_peaks,
    cohort_statistic,
    donor_nk_per_ul,
    lymphocyte_count,
    make_slots,
    observed_counts,
    simulated_outcome,
    table_matrix,
)

#: Day window (after the first infusion) of the generic per-patient chimerism peaks.
DEFAULT_WINDOW = (1.0, 28.0)
_PEAK_COLUMN = {"peak_donor_chimerism_pbmc": 0, "peak_donor_chimerism_nk": 1, "peak_day": 2}


def theta_seed(config_seed: int, theta: Mapping[str, float]) -> int:
    """A 63-bit simulation seed from the config seed and the parameter values (order-independent)."""
    h = hashlib.sha256()
    for k in sorted(theta):
        h.update(k.encode())
        h.update(np.float64(theta[k]).tobytes())
    words = np.frombuffer(h.digest()[:16], dtype=np.uint32)
    ss = np.random.SeedSequence([int(config_seed) & 0xFFFFFFFF, int(config_seed) >> 32, *map(int, words)])
    return int(ss.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def target_value(rec: np.ndarray, start_day: float, target) -> float:
    """One patient's value of a target's quantity from its daily record."""
    if target.quantity == "lymphocyte_count":
        return lymphocyte_count(rec, start_day, target.window[0])
    if target.quantity == "share_donor_nk_above":
        v = donor_nk_per_ul(rec, start_day, target.window[0])
        return float(v > target.threshold) if np.isfinite(v) else float("nan")
    return chimerism_peaks(rec, start_day, target.window)[_PEAK_COLUMN[target.quantity]]


class CalibrationModel:
    """Simulate virtual trials mirroring the observed one and reduce them to summaries."""

    def __init__(self, config: CalibrationConfig, observed=None):
        from .data import load_observed

        self.config = config
        self.base: ParameterSet = config.base_parameters()
        proto = load_protocol(config.protocol)
        self.observed = observed if observed is not None else load_observed(
            config.outcomes, config.targets, config.series, protocol=proto)
        self.timing = config.progression_timing
        #: the category table the distance compares (names; :data:`TIMING_MODES`)
        self.categories: tuple[str, ...] = TIMING_MODES[self.timing]
        self._table = table_matrix(self.timing)
        self.slots: tuple[Slot, ...] = make_slots(self.observed.outcomes, proto.assessment_days, str(config.outcomes),
                                                  self.timing, getattr(self.observed, "horizon", None))
        if not self.slots:
            raise NksimInputError("no evaluable patient in the outcomes file", source=config.outcomes)
        self.targets = tuple(self.observed.targets) + tuple(_series_targets(self.observed))
        # targets simulated with the trial's twins vs with another protocol's patients
        #: target name -> the protocol its patients are simulated with (None: the trial's twins)
        self.target_protocol: dict[str, str | None] = {t.name: _own_protocol(t, proto) for t in self.targets}
        self.trial_targets = tuple(t for t in self.targets if self.target_protocol[t.name] is None)
        self.analogue_protocols: dict[str, Protocol] = {}
        for t in self.targets:
            name = self.target_protocol[t.name]
            if name is None:
                continue
            end = max(t.window[1], 1.0)
            if name in self.analogue_protocols:
                end = max(end, self.analogue_protocols[name].end_day)
            p = self.analogue_protocols.get(name) or load_protocol(name)
            # to the end of the window(s) only; later events are never reached by the kernel
            self.analogue_protocols[name] = replace(p, end_day=float(end), snapshot_days=())
        need = max([s.followup_day for s in self.slots] + [t.window[1] for t in self.trial_targets] + [1.0])
        if config.end_day < need:
            raise NksimInputError(
                f"end_day {config.end_day:g} is shorter than the follow-up / chimerism window ({need:g} days)",
                source=config.origin, key="simulator.end_day")
        self.protocol: Protocol = replace(proto, end_day=float(config.end_day), snapshot_days=())
        self.window_end = max([t.window[1] for t in self.trial_targets] + [DEFAULT_WINDOW[1]])
        #: each slot's twin is simulated only as long as a summary reads it: to the end of its observed
        #: follow-up or of the chimerism windows (a twin lost to follow-up after day 28 stops there)
        self.slot_protocols: tuple[Protocol, ...] = tuple(
            replace(self.protocol, end_day=float(min(config.end_day, max(s.followup_day, self.window_end))))
            for s in self.slots)
        self.thresholds = response_thresholds(self.base)
        self.obs_counts = observed_counts(self.slots, self.timing)

    # ------------------------------------------------------------------ parameters
    @property
    def fit_keys(self) -> tuple[str, ...]:
        """Model keys of the fitted parameters, in config order."""
        return tuple(f.key for f in self.config.fit)

    def parameters(self, theta: Mapping[str, float]) -> ParameterSet:
        """The base parameters with the fitted values ``theta`` (model keys, model units)."""
        return self.base.with_values(dict(theta), origin="calibration theta")

    # ------------------------------------------------------------------ simulation
    def simulate_patients(self, theta: Mapping[str, float], seed: int | None = None,
                          virtual_trials: int | None = None) -> dict[str, np.ndarray]:
        """Per-patient results of ``virtual_trials`` simulated trials at ``theta``, shape (trial, slot).

        Category index (:data:`CATEGORIES`), PD call and crossing days, chimerism peaks and peak
        day, the fraction of baseline blasts killed by NK by day 28 (``nk_kill_fraction``), and each
        target's per-patient value (``target:<name>``; shape (trial, patient of the target's
        protocol) for analogue targets). ``seed``: the simulation seed, an integer in
        ``[0, 2**64)`` (default: derived from the config seed and ``theta``).
        """
        params = self.parameters(theta)
        seed = theta_seed(self.config.seed, theta) if seed is None else check_seed(seed, source="CalibrationModel")
        vt = self.config.virtual_trials if virtual_trials is None else int(virtual_trials)
        n = len(self.slots)
        cat = np.zeros((vt, n), dtype=np.int64)
        call_day = np.full((vt, n), np.nan)
        cross_day = np.full((vt, n), np.nan)
        peak_pbmc = np.full((vt, n), np.nan)
        peak_nk = np.full((vt, n), np.nan)
        peak_day = np.full((vt, n), np.nan)
        kill_fraction = np.full((vt, n), np.nan)
        i_kill = int(round(DEFAULT_WINDOW[1] - self.protocol.start_day))
        days = self.protocol.assessment_days
        # the default window (days 1-28) feeds the generic per-patient peaks; each target also gets
        # its own quantity over its own window (and, for analogue targets, its own protocol)
        per_target = {t.name: np.full((vt, n), np.nan) for t in self.trial_targets}
        by_protocol = {name: [t for t in self.targets if self.target_protocol[t.name] == name]
                       for name in self.analogue_protocols}
        for name, proto in self.analogue_protocols.items():
            for t in by_protocol[name]:
                per_target[t.name] = np.full((vt, len(proto.patients)), np.nan)
        for r in range(vt):
            for j, slot in enumerate(self.slots):
                stop = None
                if self.config.early_stop:
                    lo = max(self.window_end, slot.first_day)
                    stop = [d for d in days if lo <= d <= slot.followup_day]
                proto = self.slot_protocols[j]
                run = run_one(params, proto, proto.patient(slot.patient), seed, r, stop_days=stop)
                c, call_day[r, j], cross_day[r, j] = simulated_outcome(run.rec, self.protocol.start_day, slot, days,
                                                                       self.thresholds)
                cat[r, j] = CATEGORY_INDEX[c]
                peak_pbmc[r, j], peak_nk[r, j], peak_day[r, j] = chimerism_peaks(run.rec, self.protocol.start_day,
                                                                                 DEFAULT_WINDOW)
                kill_fraction[r, j] = (observe("nk_kills", run.rec)[i_kill]
                                       / max(observe("blasts_total", run.rec)[0], 1.0))
                for t in self.trial_targets:
                    per_target[t.name][r, j] = target_value(run.rec, self.protocol.start_day, t)
            for name, proto in self.analogue_protocols.items():
                for k, patient in enumerate(proto.patients):
                    run = run_one(params, proto, patient, seed, r)
                    for t in by_protocol[name]:
                        per_target[t.name][r, k] = target_value(run.rec, proto.start_day, t)
        return {"category": cat, "pd_call_day": call_day, "pd_cross_day": cross_day,
                "peak_donor_chimerism_pbmc": peak_pbmc, "peak_donor_chimerism_nk": peak_nk,
                "peak_day": peak_day, "nk_kill_fraction": kill_fraction,
                **{f"target:{k}": v for k, v in per_target.items()}}

    def table_counts(self, category: np.ndarray) -> np.ndarray:
        """Counts of per-patient category indices (:data:`CATEGORIES`) in the model's table (:attr:`categories`)."""
        fine = np.bincount(np.asarray(category).ravel(), minlength=len(CATEGORIES)).astype(np.int64)
        return self._table @ fine

    def summarise(self, patients: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | float]:
        """Cohort summaries: category counts (order :attr:`categories`) and each target's statistic."""
        out: dict[str, np.ndarray | float] = {"counts": self.table_counts(patients["category"])}
        for t in self.targets:
            out[t.name] = cohort_statistic(patients[f"target:{t.name}"], t.statistic)
        return out

    def simulate(self, theta: Mapping[str, float], seed: int | None = None) -> dict[str, np.ndarray | float]:
        """Summaries of ``virtual_trials`` simulated trials at ``theta`` (see :meth:`summarise`)."""
        return self.summarise(self.simulate_patients(theta, seed))

    def observed_summary(self) -> dict[str, np.ndarray | float]:
        """Summaries of the observed trial: outcome-category counts and each target's value."""
        out: dict[str, np.ndarray | float] = {"counts": self.obs_counts.copy()}
        for t in self.targets:
            out[t.name] = float(t.value)
        return out

    def distance(self, sim: Mapping, obs: Mapping | None = None) -> float:
        """Total distance of simulated summaries ``sim`` from ``obs`` (default: the observed trial)."""
        return total_distance(sim, obs if obs is not None else self.observed_summary(), self.targets,
                              self.config.chimerism_weight)


def _own_protocol(target, trial: Protocol) -> str | None:
    """The protocol a target is simulated with, or None for the trial's own (its twins)."""
    from pathlib import Path

    p = getattr(target, "protocol", None)
    if p is None:
        return None
    other = load_protocol(p)
    if Path(other.origin).resolve() == Path(trial.origin).resolve():
        return None  # the trial's protocol named explicitly: its twins
    return p


def _series_targets(observed) -> list:
    """Targets derived from per-patient chimerism series, when a user supplied them.

    Per patient with chimerism measurements: the peak over the measured days (below-LOD values
    count as half the LOD); the target is the median over patients, with the log10 standard
    deviation of that median estimated by bootstrap over patients (floored at 0.1).
    """
    import warnings

    from .data import ChimerismTarget

    out = []
    if not getattr(observed, "series", ()):
        return out
    frame = observed.series_frame()
    unused = sorted(set(frame["quantity"]) - {"donor_chimerism_pbmc", "donor_chimerism_nk"})
    if unused:
        warnings.warn(f"series quantities {unused} are validated but not yet used by the calibration distance "
                      "(only donor chimerism series become targets)", NksimWarning, stacklevel=3)
    rng = np.random.default_rng(0)
    for q in ("donor_chimerism_pbmc", "donor_chimerism_nk"):
        sub = frame[frame["quantity"] == q]
        if sub.empty:
            continue
        vals = np.where(sub["below_lod"].to_numpy(bool), 0.5 * sub["lod"].to_numpy(float), sub["value"].to_numpy(float))
        sub = sub.assign(v=vals)
        peaks = sub.groupby("patient")["v"].max().to_numpy()
        peaks = peaks[peaks > 0]
        if peaks.size == 0:
            continue
        boots = [np.median(rng.choice(peaks, peaks.size)) for _ in range(500)]
        sd = max(float(np.std(np.log10(boots))), 0.1)
        day_lo, day_hi = float(sub["day"].min()), float(sub["day"].max())
        out.append(ChimerismTarget(
            name=f"series_peak_{q}", quantity=f"peak_{q}", statistic="median", value=float(np.median(peaks)),
            unit="percent", log10_sd=sd, sd=None, window=(max(day_lo, 1.0), max(day_hi, 1.0)), weight=1.0,
            source="per-patient series: " + ", ".join(sorted(set(sub["source"]))), confidence="data",
            note=f"median over {peaks.size} patients of the per-patient peak; log10 sd by bootstrap"))
    return out
