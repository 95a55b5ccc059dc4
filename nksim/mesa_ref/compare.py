"""Statistical cross-validation of the Mesa reference model against the numba engine.

The two implementations draw different random numbers (per-cell Bernoulli events vs
per-voxel binomial counts, other streams), so they can only agree in distribution. For a
scenario (parameters + protocol) and a list of seeds, :func:`sample` runs one
implementation once per seed and collects, from the region counters:

* final values of every region counter (blasts, susceptible blasts, normal cells, NK
  agents, kills, births, deaths, drug deaths, daughters lost, NK homed/egressed/born/died);
* final values of a few daily record variables that depend on the agents: donor NK in blood
  and in other tissues (all donors; homing and egress move cells between them and the
  region) and the exhausted fraction of competent marrow NK (function recovery);
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

from ..engine import RawRun
from ..engine.layout import C, R
from ..output import COUNTERS
from ..parameters import ParameterSet, load_parameters
from ..patients import median_patient_overrides
from ..protocol import EVENT_UNITS, Protocol, protocol_from_dict
from ..simulate import run_one
from .model import run_reference

#: Region counters compared at the end of the horizon.
FINAL_QUANTITIES: tuple[str, ...] = tuple(COUNTERS)
#: Daily record variables compared at the end of the horizon (NaN, e.g. no competent NK, counts as 0).
FINAL_RECORD: tuple[str, ...] = ("donor_nk_blood", "donor_nk_tissue", "nk_exhausted_fraction")
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
                      random_effects: bool = False, name: str = "crossval", nk_product: str = "fresh",
                      host_tolerant: bool = False) -> Scenario:
    """A small scenario that exercises every rule in a few simulated days.

    * Lymphodepletion: Flu on day -2, Cy on day -1 (drug hazard on blood, marrow blasts and
      normal cells; blasts also by the Cy exposure, ``blasts.cy_exposure_kill`` 0.01), and a
      cytarabine dose of 1 g m-2 on day -2 (a blast log kill of ``blasts.cytarabine_log_kill`` 0.4
      per g m-2 at the next marrow update).
    * Two donors and allo-priming: an NK infusion from donor ``A`` on day 0 large enough to give
      tens of NK agents and kills on a tiny lattice (``nk_dose`` kg-1; the region scale is huge
      on a small lattice), then on day 3 half that dose from donor ``A`` again (it meets the
      host's partly primed response) and half from a new donor ``B`` (unprimed). Pinned:
      priming delay 3 days in 2 stages, primed rejection 0.5 day-1, unprimed rejection 0.5 day-1
      at baseline host T, host T regrowth 0.1 day-1 (host NK 0.2 day-1), so that rejection and
      priming matter within a few days.
    * Cytokines: IL-2 10 MIU s.c. on days 0, 2 and 4, N-803 10 ug kg-1 on day 1 and rhIL-15
      1 ug kg-1 s.c. on day 2 (s.c. depots; extra division, lower death, faster function recovery,
      exogenous IL-15 speeding primed rejection); their PK and effect parameters are pinned.
    * NK function: one lytic unit (``nk.max_kills`` 1), restored at 1 day-1 (3x faster at full
      cytokine support), and a 2 h refractory period, so serial killing relies on recovery;
      engagements 4x faster at full cytokine support (``nk.cytokine_killing_boost`` 3) and up to half of them
      blocked by host Tregs (``treg.nk_kill_suppression`` 0.5).
    * Marrow at 80 % cellularity (voxels fill up, so daughters are lost), susceptibility
      switching at division (5 %); NK tissue uptake / return pinned at 4 / 0.4 day-1 (so the
      infused cells reach the marrow).

    ``K = (voxel_side / 10 um)^2`` (16 by default). Without ``random_effects`` every seed is the
    same virtual patient (population medians), which removes between-patient variance. The
    parameters of the mechanisms the scenario is built to exercise (NK trafficking and killing,
    function recovery, rejection and priming, host recovery, cytokine PK and effects) are pinned
    here, so recalibrating ``models/default.toml`` does not weaken it; the others (marrow
    growth, drugs, IL-15, NK proliferation and death) come from the defaults.

    ``nk_product`` and ``host_tolerant`` (0.6.0) give the protocol another product (``"ciml"``: the
    product-specific kill probability, competent fraction, IL-2 EC50 and death factor that the agents
    read; its trafficking pinned like the fresh product's) or a host without rejection.
    """
    overrides = {
        "lattice.side": side,
        "lattice.voxel_side": voxel_side,
        "lattice.marrow_cellularity": 80.0,
        "blasts.switch_probability": 0.05,
        "nk.kill_probability": 0.5,
        "nk.competent_fraction": 0.5,
        "nk.max_kills": 1,
        "nk.refractory_time": 2.0,
        "nk.function_recovery_rate": 1.0,
        "nk.cytokine_recovery_boost": 2.0,
        "nk.cytokine_killing_boost": 3.0,
        "treg.nk_kill_suppression": 0.5,  # host Tregs block up to half of the engagements (docs/model.md 9.15)
        "blasts.cy_exposure_kill": 0.01,  # blasts killed by the Cy exposure too (about a sixth by the dose)
        "blasts.cytarabine_log_kill": 0.4,  # and by the cytarabine dose (a third of them)
        # trafficking pinned (not the calibrated values, which send most infused cells to other
        # tissues) so that tens of NK agents reach the region and kill
        "nk.homing_rate": 2.0,
        "nk.egress_rate": 0.4,
        "nk.tissue_uptake_rate": 4.0,
        "nk.tissue_return_rate": 0.4,
        # rejection and allo-priming: a second infusion from donor A meets the primed response
        "nk.rejection_rate": 0.5,
        "host.nk_recovery_rate": 0.2,
        "host.t_recovery_rate": 0.1,
        "host.nk_flu_sensitivity": 1.0,
        "host.nk_cy_sensitivity": 1.0,
        "host.t_flu_sensitivity": 1.0,
        "host.t_cy_sensitivity": 1.0,
        "allo.priming_delay": 3.0,
        "allo.priming_stages": 2,
        "allo.primed_rejection_rate": 0.5,
        # the primed term at full strength whatever the host T count (the T scaling is one shared
        # function, kernel.donor_nk_rejection, pinned by tests/test_limits.py), so that a donor
        # mix-up in the reference stays detectable with 80 seeds
        "allo.primed_t_exponent": 0.0,
        # cytokines
        "il2.absorption_half_life": 4.0,
        "il2.elimination_half_life": 1.4,
        "il2.ec50": 0.5,
        "il2.proliferation_max": 0.5,
        "il2.survival_effect": 0.5,
        "n803.absorption_half_life": 20.0,
        "n803.elimination_half_life": 8.0,
        "n803.potency": 3.0,
        "rhil15.sc_absorption_half_life": 6.0,
        "rhil15.elimination_half_life": 1.0,
        "rhil15.potency": 0.3,
        "il15.exo_survival_effect": 0.5,
        "host.nk_il15_proliferation_max": 0.3,
        "host.t_il15_proliferation_max": 0.15,
        "allo.il15_rejection_boost": 1.0,
        # a CIML product traffics as the pinned fresh one (its own kill, competence, IL-2 and death values apply)
        "ciml_nk.tissue_uptake_rate": 4.0,
        "ciml_nk.tissue_return_rate": 0.4,
        # the marrow at its regular daily cadence throughout: the reference updates it every marrow step, and
        # the engine's merged quiet-day updates (a numerical acceleration, checked against many short updates in
        # tests/test_quiet_days.py and against 0.4.0 in benchmarks/equivalence/) would compare that instead of
        # the per-cell rules
        "numerics.quiet_marrow_step": 24.0,
    }
    if not random_effects:  # every between-patient standard deviation set to 0
        overrides.update(median_patient_overrides())
    params = load_parameters("default").with_values(overrides, origin=f"<{name}>")

    def ev(day: float, kind: str, dose: float, **extra) -> dict:
        return {"day": day, "kind": kind, "dose": dose, "unit": EVENT_UNITS[kind], **extra}

    events = [ev(-2, "fludarabine", 25.0), ev(-2, "cytarabine", 1000.0), ev(-1, "cyclophosphamide", 30.0),
              ev(0, "nk_infusion", nk_dose, donor="A"),
              ev(3, "nk_infusion", 0.5 * nk_dose, donor="A"), ev(3, "nk_infusion", 0.5 * nk_dose, donor="B"),
              ev(1, "n803", 10.0), ev(2, "rhil15_sc", 1.0)]
    events += [ev(day, "il2", 10.0) for day in (0, 2, 4)]
    protocol = protocol_from_dict({
        "protocol": {"name": name, "start_day": -2, "end_day": end_day, "assessment_days": [end_day],
                     "snapshot_days": [0, end_day], "nk_product": nk_product, "host_tolerant": host_tolerant},
        "events": [e for e in events if e["day"] < end_day],
        "patients": [{"id": "p1", "group": "a"}],
    }, f"<{name}>")
    return Scenario(name, params, protocol)


def summarise(run: RawRun) -> dict[str, np.ndarray]:
    """Final region counters and record variables, and daily time courses of one run."""
    out: dict[str, np.ndarray] = {f"final {label}": np.asarray(run.cnt[-1, j], dtype=float)
                                  for j, label in enumerate(COUNTERS)}
    for name in FINAL_RECORD:
        out[f"final {name}"] = np.nan_to_num(np.asarray(run.rec[-1, getattr(R, name)], dtype=float), nan=0.0)
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
    """One two-sample test of one quantity."""

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
        """Per-test significance threshold, ``alpha / number of tests`` (Bonferroni)."""
        return self.alpha / max(len(self.tests), 1)

    @property
    def rejected(self) -> list[CheckResult]:
        """The tests with a p-value below the threshold."""
        return [t for t in self.tests if t.p_value < self.threshold]

    @property
    def agree(self) -> bool:
        """No test rejected: the implementations agree at family-wise level ``alpha``."""
        return not self.rejected

    def report(self, top: int = 8) -> str:
        """A summary line and the ``top`` smallest p-values, one line each."""
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
