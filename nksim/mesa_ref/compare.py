"""Statistical cross-validation of the Mesa reference model against the numba engine.

The two implementations draw different random numbers (per-cell Bernoulli events vs
per-voxel binomial counts, other streams), so they can only agree in distribution. For a
scenario (parameters + protocol) and a list of seeds, :func:`sample` runs one
implementation once per seed and collects, from the region counters:

* final values of every region counter (blasts, susceptible blasts, normal cells, NK
  agents, kills, births, deaths, drug deaths, daughters lost, NK homed/egressed/born/died);
* daily time courses of blasts, NK agents and cumulative kills.

:func:`compare_samples` tests each quantity with a two-sample Welch t-test (means) and, for
final values, a two-sample Kolmogorov-Smirnov test (whole distribution), and controls the
family-wise false-alarm rate with Bonferroni: if the implementations are equivalent, the
comparison rejects with probability at most ``alpha`` (over the choice of seeds).

Seeds: engine seed ``s`` uses children 1..6 of ``SeedSequence(s, spawn_key=(patient,
replicate))``, the reference uses child 7 (see :class:`~nksim.mesa_ref.model.PatientModel`),
so both implementations can run the same seeds and still be independent samples; child 0
(the virtual patient) is shared, so each seed is the same patient in both samples.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ..engine.layout import C
from ..output import COUNTERS
from ..parameters import ParameterSet, load_parameters
from ..protocol import EVENT_UNITS, Protocol, protocol_from_dict
from ..engine import RawRun
from ..simulate import run_one
from .model import run_reference

#: Region counters compared at the end of the horizon.
FINAL_QUANTITIES: tuple[str, ...] = tuple(COUNTERS)
#: Daily time courses compared day by day: name -> counter columns summed.
TIME_COURSES: dict[str, tuple[int, ...]] = {
    "blasts": (C.susceptible_blasts, C.resistant_blasts),
    "nk_agents": (C.nk_agents,),
    "nk_kills": (C.blasts_killed_by_nk,),
}


@dataclass(frozen=True)
class Scenario:
    """Parameters and protocol of a cross-validation run (one patient, ``p1``)."""

    name: str
    params: ParameterSet
    protocol: Protocol


def crossval_scenario(*, side: int = 8, voxel_side: float = 40.0, end_day: int = 6, nk_dose: float = 3e9,
                      random_effects: bool = False, name: str = "crossval") -> Scenario:
    """A small scenario that exercises every rule in a few simulated days.

    Flu on day -2, Cy on day -1 (drug hazard on blood, marrow blasts and normal cells),
    one NK infusion on day 0 large enough to give tens of NK agents and kills on a tiny
    lattice (``nk_dose`` kg-1; the region scale is huge on a small lattice), a marrow at 80 %
    cellularity (voxels fill up, so daughters are lost), NK tissue uptake / return pinned at
    4 / 0.4 day-1 (so the infused cells reach the marrow), susceptibility switching at
    division (5 %), exhaustion after 2 kills and a 2 h refractory period. ``K =
    (voxel_side / 10 um)^2`` (16 by default). Without ``random_effects`` every seed is the
    same virtual patient (population medians), which removes between-patient variance.
    """
    overrides = {
        "lattice.side": side,
        "lattice.voxel_side": voxel_side,
        "lattice.marrow_cellularity": 80.0,
        "blasts.switch_probability": 0.05,
        "nk.max_kills": 2,
        "nk.refractory_time": 2.0,
        # trafficking pinned (not the calibrated values, which send most infused cells to other
        # tissues) so that tens of NK agents reach the region and kill
        "nk.tissue_uptake_rate": 4.0,
        "nk.tissue_return_rate": 0.4,
    }
    if not random_effects:
        overrides.update({
            "random_effects.baseline_blast_logit_sd": 0.0,
            "random_effects.blast_growth_log_sd": 0.0,
            "random_effects.susceptible_logit_sd": 0.0,
            "random_effects.host_recovery_log_sd": 0.0,
        })
    params = load_parameters("default").with_values(overrides, origin=f"<{name}>")

    def ev(day: float, kind: str, dose: float) -> dict:
        return {"day": day, "kind": kind, "dose": dose, "unit": EVENT_UNITS[kind]}

    protocol = protocol_from_dict({
        "protocol": {"name": name, "start_day": -2, "end_day": end_day, "assessment_days": [end_day],
                     "snapshot_days": [0, end_day]},
        "events": [ev(-2, "fludarabine", 25.0), ev(-1, "cyclophosphamide", 30.0), ev(0, "nk_infusion", nk_dose)],
        "patients": [{"id": "p1", "group": "a"}],
    }, f"<{name}>")
    return Scenario(name, params, protocol)


def summarise(run: RawRun) -> dict[str, np.ndarray]:
    """Final region counters and daily time courses of one run."""
    out: dict[str, np.ndarray] = {f"final {label}": np.asarray(run.cnt[-1, j], dtype=float)
                                  for j, label in enumerate(COUNTERS)}
    for name, cols in TIME_COURSES.items():
        out[f"daily {name}"] = run.cnt[:, list(cols)].sum(axis=1).astype(float)
    return out


def sample(implementation: str, scenario: Scenario, seeds: Iterable[int],
           params: ParameterSet | None = None) -> dict[str, np.ndarray]:
    """Run ``implementation`` (``"engine"`` or ``"mesa"``) once per seed; stack the summaries.

    ``params`` replaces the scenario's parameters (used to mutate one implementation).
    """
    params = scenario.params if params is None else params
    patient = scenario.protocol.patients[0]
    rows = []
    for seed in seeds:
        if implementation == "engine":
            run = run_one(params, scenario.protocol, patient, int(seed), 0)
        elif implementation == "mesa":
            run = run_reference(params, scenario.protocol, patient.id, seed=int(seed))
        else:
            raise ValueError(f"implementation must be 'engine' or 'mesa', got {implementation!r}")
        rows.append(summarise(run))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@dataclass(frozen=True)
class CheckResult:
    quantity: str
    test: str  # "welch" or "ks"
    p_value: float
    mean_a: float
    mean_b: float
    se_diff: float  # standard error of the difference of the means


@dataclass
class Comparison:
    """All tests of one comparison, with the Bonferroni threshold ``alpha / len(tests)``."""

    alpha: float
    tests: list[CheckResult] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        return self.alpha / max(len(self.tests), 1)

    @property
    def rejected(self) -> list[CheckResult]:
        return [t for t in self.tests if t.p_value < self.threshold]

    @property
    def agree(self) -> bool:
        return not self.rejected

    def report(self, top: int = 8) -> str:
        lines = [f"{len(self.tests)} tests, family-wise alpha {self.alpha:g}, per-test threshold "
                 f"{self.threshold:.2e}: {'AGREE' if self.agree else f'{len(self.rejected)} REJECTED'}"]
        for t in sorted(self.tests, key=lambda t: t.p_value)[:top]:
            z = (t.mean_a - t.mean_b) / t.se_diff if t.se_diff > 0 else 0.0
            lines.append(f"  {t.quantity:<32} {t.test:<5} p={t.p_value:.2e}  means {t.mean_a:10.3f} vs "
                         f"{t.mean_b:10.3f}  ({z:+.1f} SE)")
        return "\n".join(lines)


def _welch(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    if se == 0.0:  # both samples constant: equal constants agree, different ones do not
        return (1.0 if x.mean() == y.mean() else 0.0), 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue), se


def compare_samples(a: dict[str, np.ndarray], b: dict[str, np.ndarray], *, alpha: float = 0.01,
                    skip_days: Sequence[int] = ()) -> Comparison:
    """Two-sample tests of every summarised quantity (see the module docstring).

    Final values: Welch t-test and Kolmogorov-Smirnov test. Time courses: Welch t-test on
    each day. Quantities on which both samples are constant and equal (e.g. NK agents
    before the infusion) and day indices in ``skip_days`` are not counted as tests.
    """
    cmp = Comparison(alpha)
    for key in a:
        x, y = a[key], b[key]
        if key.startswith("final"):
            if np.ptp(x) == 0 and np.ptp(y) == 0 and x[0] == y[0]:
                continue  # e.g. no daughter ever lost in either sample
            p, se = _welch(x, y)
            cmp.tests.append(CheckResult(key, "welch", p, float(x.mean()), float(y.mean()), se))
            if np.ptp(np.concatenate([x, y])) > 0:
                p_ks = float(stats.ks_2samp(x, y).pvalue)
                cmp.tests.append(CheckResult(key, "ks", p_ks, float(x.mean()), float(y.mean()), se))
        else:
            for day in range(x.shape[1]):
                xs, ys = x[:, day], y[:, day]
                if day in skip_days or (np.ptp(xs) == 0 and np.ptp(ys) == 0 and xs[0] == ys[0]):
                    continue
                p, se = _welch(xs, ys)
                cmp.tests.append(CheckResult(f"{key} [day {day}]", "welch", p, float(xs.mean()), float(ys.mean()), se))
    return cmp
