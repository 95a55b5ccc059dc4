"""The calibration simulator: parameters -> virtual trial -> summaries.

:class:`CalibrationModel` simulates the evaluable patients of the observed trial (each with its
own dose group and follow-up) ``virtual_trials`` times at the calibration resolution (the
``[simulator]`` table: a coarser lattice over the same marrow region, follow-up horizon
``end_day``) with early stopping of patients whose progression is already established (the run
ends after the first assessment at which blasts reach the PD threshold; nothing that the
summaries use is lost, see :func:`nksim.simulate.run_one`).

Randomness: the simulation seed of a parameter vector is derived from the configuration seed
and the exact bytes of the parameter values (``SeedSequence``), so a summary is a deterministic
function of (config seed, theta) wherever it runs -- serial, threaded or on a Dask worker.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ..errors import NksimInputError, NksimWarning
from ..observables import response_thresholds
from ..parameters import ParameterSet
from ..protocol import Protocol, load_protocol
from ..simulate import run_one
from .config import CalibrationConfig
from .distance import total_distance
from .summaries import (CATEGORIES, CATEGORY_INDEX, Slot, chimerism_peaks, cohort_statistic, make_slots,
                        observed_counts, simulated_category)


#: Day window (after the first infusion) of the generic per-patient chimerism peaks.
DEFAULT_WINDOW = (1.0, 28.0)


def theta_seed(config_seed: int, theta: Mapping[str, float]) -> int:
    """A 63-bit simulation seed from the config seed and the parameter values (order-independent)."""
    h = hashlib.sha256()
    for k in sorted(theta):
        h.update(k.encode())
        h.update(np.float64(theta[k]).tobytes())
    words = np.frombuffer(h.digest()[:16], dtype=np.uint32)
    ss = np.random.SeedSequence([int(config_seed) & 0xFFFFFFFF, int(config_seed) >> 32, *map(int, words)])
    return int(ss.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class CalibrationModel:
    """Simulate virtual trials mirroring the observed one and reduce them to summaries."""

    def __init__(self, config: CalibrationConfig, observed=None):
        from .data import load_observed

        self.config = config
        self.base: ParameterSet = config.base_parameters()
        proto = load_protocol(config.protocol)
        self.observed = observed if observed is not None else load_observed(
            config.outcomes, config.targets, config.series, protocol=proto)
        self.slots: tuple[Slot, ...] = make_slots(self.observed.outcomes, proto.assessment_days, str(config.outcomes))
        if not self.slots:
            raise NksimInputError("no evaluable patient in the outcomes file", source=config.outcomes)
        self.targets = tuple(self.observed.targets) + tuple(_series_targets(self.observed))
        need = max([s.followup_day for s in self.slots] + [t.window[1] for t in self.targets] + [1.0])
        if config.end_day < need:
            raise NksimInputError(
                f"end_day {config.end_day:g} is shorter than the follow-up / chimerism window ({need:g} days)",
                source=config.origin, key="simulator.end_day")
        self.protocol: Protocol = replace(proto, end_day=float(config.end_day), snapshot_days=())
        self.window_end = max([t.window[1] for t in self.targets] + [DEFAULT_WINDOW[1]])
        self.thresholds = response_thresholds(self.base)
        self.obs_counts = observed_counts(self.slots)

    # ------------------------------------------------------------------ parameters
    @property
    def fit_keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.config.fit)

    def parameters(self, theta: Mapping[str, float]) -> ParameterSet:
        """The base parameters with the fitted values ``theta`` (model keys, model units)."""
        return self.base.with_values(dict(theta), origin="calibration theta")

    # ------------------------------------------------------------------ simulation
    def simulate_patients(self, theta: Mapping[str, float], seed: int | None = None,
                          virtual_trials: int | None = None) -> dict[str, np.ndarray]:
        """Per-patient results: category index, chimerism peaks and peak day, shape (trial, slot)."""
        params = self.parameters(theta)
        seed = theta_seed(self.config.seed, theta) if seed is None else int(seed)
        vt = self.config.virtual_trials if virtual_trials is None else int(virtual_trials)
        n = len(self.slots)
        cat = np.zeros((vt, n), dtype=np.int64)
        peak_pbmc = np.full((vt, n), np.nan)
        peak_nk = np.full((vt, n), np.nan)
        peak_day = np.full((vt, n), np.nan)
        days = self.protocol.assessment_days
        # the default window (days 1-28) feeds the generic per-patient peaks; each target also gets
        # its own quantity over its own window
        per_target = {t.name: np.full((vt, n), np.nan) for t in self.targets}
        windows = {t.name: t.window for t in self.targets}
        col = {"peak_donor_chimerism_pbmc": 0, "peak_donor_chimerism_nk": 1, "peak_day": 2}
        for r in range(vt):
            for j, slot in enumerate(self.slots):
                stop = None
                if self.config.early_stop:
                    lo = max(self.window_end, slot.first_day)
                    stop = [d for d in days if lo <= d <= slot.followup_day]
                run = run_one(params, self.protocol, self.protocol.patient(slot.patient), seed, r, stop_days=stop)
                cat[r, j] = CATEGORY_INDEX[simulated_category(run.rec, self.protocol.start_day, slot, days,
                                                              self.thresholds)]
                peak_pbmc[r, j], peak_nk[r, j], peak_day[r, j] = chimerism_peaks(run.rec, self.protocol.start_day,
                                                                                 DEFAULT_WINDOW)
                for t in self.targets:
                    per_target[t.name][r, j] = chimerism_peaks(run.rec, self.protocol.start_day,
                                                               windows[t.name])[col[t.quantity]]
        return {"category": cat, "peak_donor_chimerism_pbmc": peak_pbmc, "peak_donor_chimerism_nk": peak_nk,
                "peak_day": peak_day, **{f"target:{k}": v for k, v in per_target.items()}}

    def summarise(self, patients: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | float]:
        """Cohort summaries: category counts (order :data:`CATEGORIES`) and each target's statistic."""
        cat = patients["category"]
        out: dict[str, np.ndarray | float] = {
            "counts": np.bincount(cat.ravel(), minlength=len(CATEGORIES)).astype(np.int64)}
        for t in self.targets:
            out[t.name] = cohort_statistic(patients[f"target:{t.name}"], t.statistic)
        return out

    def simulate(self, theta: Mapping[str, float], seed: int | None = None) -> dict[str, np.ndarray | float]:
        """Summaries of ``virtual_trials`` simulated trials at ``theta`` (see :meth:`summarise`)."""
        return self.summarise(self.simulate_patients(theta, seed))

    def observed_summary(self) -> dict[str, np.ndarray | float]:
        out: dict[str, np.ndarray | float] = {"counts": self.obs_counts.copy()}
        for t in self.targets:
            out[t.name] = float(t.value)
        return out

    def distance(self, sim: Mapping, obs: Mapping | None = None) -> float:
        return total_distance(sim, obs if obs is not None else self.observed_summary(), self.targets,
                              self.config.chimerism_weight)


def _series_targets(observed) -> list:
    """Targets derived from per-patient chimerism series, when a user supplied them.

    Per patient with chimerism measurements: the peak over the measured days (below-LOD values
    count as half the LOD); the target is the median over patients, with the log10 standard
    deviation of that median estimated by bootstrap over patients (floored at 0.1).
    """
    from .data import ChimerismTarget

    import warnings

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
