"""The Mesa reference model (nksim.mesa_ref) against the numba engine.

Statistical cross-validation (helpers and the list of compared quantities in
``nksim/mesa_ref/compare.py``): both implementations simulate the same scenario once per
seed; final values of every region counter (cells by kind, kills, births, deaths, drug
deaths, daughters lost, NK agents homed/egressed/born/died/present) and of donor NK in blood,
in other tissues and the exhausted fraction of marrow NK are compared with a Welch t-test and
a two-sample Kolmogorov-Smirnov test, and the daily time courses of blasts, NK agents and
cumulative kills with a Welch t-test per day.

The scenario (:func:`~nksim.mesa_ref.compare.crossval_scenario`) exercises every rule: Flu/Cy,
two donors (donor A on day 0 and again on day 3, when the host's response to A is partly
primed; donor B on day 3, unprimed), IL-2 and IL-15 agonist s.c. doses, one lytic unit per NK
cell restored at 1 day-1 (faster under cytokines), host NK and T recovering at their own rates.

* False-alarm rate: Bonferroni over all m tests of a comparison (m is about 60 here), family-
  wise ALPHA = 0.01: if the two implementations are equivalent in distribution, a comparison
  fails with probability <= 1 % over the choice of seeds. The seeds are fixed, so a given
  version of the code passes or fails deterministically.
* Tolerance: a quantity fails when p < ALPHA / m (about 1.6e-4), i.e. for the Welch tests when
  the two means differ by more than about 3.8 standard errors of their difference (with 150
  seeds per side in the fast test: about 6-8 % of the mean for NK kills and NK agents, 5-6 %
  for blasts, 3 % for normal cells).
* Power (the tests can fail): the same comparison is run against a deliberately broken
  reference and must reject. Here: ``nk.kill_probability`` 0.5 -> 0.35 (rejected at about
  11 SE), and a port bug in the per-donor rule (every marrow NK agent rejected at donor A's
  primed rate: about 7 SE on NK agents with 80 reference runs). In the slow tests: ``nk.kill_probability`` 0.5 -> 0.42,
  a marrow rule (``blasts.spread_fraction`` 0.05 -> 0.5), function recovery
  (``nk.function_recovery_rate`` 1 -> 0.5 day-1: about 12 SE on the exhausted fraction), and
  port bugs in the agent rules only (the shared blood code left intact): marrow NK agents
  that ignore priming, and marrow NK agents that ignore the cytokine effects on division and
  death.

The fast tests take about 30 s on 2 cores (the reference takes ~60 ms per run on the 8 x 8
lattice); the slow ones about 5 min.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import nksim
from nksim.engine import layout as L
from nksim.engine.kernel import donor_nk_rejection
from nksim.mesa_ref import PatientModel, simulate_reference
from nksim.mesa_ref.compare import compare_samples, crossval_scenario, sample
from nksim.simulate import run_one

ALPHA = 0.01
FAST_SEEDS = range(150)
SLOW_SEEDS = range(400)


@pytest.fixture(scope="module")
def scenario():
    return crossval_scenario()


@pytest.fixture(scope="module")
def engine_sample(scenario):
    return sample("engine", scenario, FAST_SEEDS)


@pytest.fixture(scope="module")
def mesa_sample(scenario):
    return sample("mesa", scenario, FAST_SEEDS)


# ----------------------------------------------------------------------------- exact checks
def test_same_patient_and_same_blood_compartment(scenario):
    """Shared code gives identical values.

    The virtual patient and the parts of the blood compartment that do not depend on the stochastic NK agents.
    """
    pat = scenario.protocol.patients[0]
    eng = run_one(scenario.params, scenario.protocol, pat, 3, 0)
    model = PatientModel(scenario.params, scenario.protocol, pat.id, seed=3).run()
    ref = model.raw_run()
    assert model.effects == eng.effects
    assert model.rules.n_donors == 2 and model.blood.shape == (L.N_Y + L.DONOR_STRIDE,)
    # analytic PK of drugs and cytokines, cytokine support and allo-priming (deterministic)
    for r in (L.R.flu_conc, L.R.cy_conc, L.R.drug_kill_hazard, L.R.il2_central, L.R.n803_central,
              L.R.il2dt_amount, L.R.allo_priming):
        np.testing.assert_array_equal(ref.rec[:, r], eng.rec[:, r])
    assert ref.rec[:, L.R.il2_central].max() > 0 and ref.rec[:, L.R.n803_central].max() > 0
    assert 0 < ref.rec[-1, L.R.allo_priming] < 1
    assert not np.isnan(ref.rec).all(axis=0).any()  # every record variable is observed
    # before the infusion (record days 0..2) the whole blood record is identical
    for r in (L.R.host_nk_blood, L.R.host_t_blood, L.R.il15, L.R.donor_nk_blood):
        np.testing.assert_array_equal(ref.rec[:3, r], eng.rec[:3, r])
    # afterwards host NK and T differ only numerically: the number of RK4 sub-steps depends on
    # the (stochastic) donor NK in blood
    # (cytokine support too since 0.6.0: host Tregs take their share of IL-2)
    for r in (L.R.host_nk_blood, L.R.host_t_blood, L.R.host_treg_blood, L.R.cytokine_support):
        np.testing.assert_allclose(ref.rec[:, r], eng.rec[:, r], rtol=1e-7)
    # exogenous rhIL-15 (0.6.0) is consumed by every lymphocyte, the (stochastic) marrow donor NK included, like
    # endogenous IL-15 (not compared here); N-803's part of the signal is deterministic: close, not equal
    np.testing.assert_allclose(ref.rec[:, L.R.il15_exogenous], eng.rec[:, L.R.il15_exogenous], rtol=1e-4)
    assert ref.rec.shape == eng.rec.shape and ref.cnt.shape == eng.cnt.shape and ref.snaps.shape == eng.snaps.shape


def test_reference_starts_il15_at_the_patients_production(scenario):
    """With a spread of IL-15 production (docs/model.md section 9.14) both start her IL-15 at her factor.

    Before the infusion (record days 0..2) the blood record is the engine's exactly, and IL-15 is not the
    population's baseline 1 (the check would pass for a reference that starts every patient at 1 only if her
    factor were 1).
    """
    params = scenario.params.with_values({"random_effects.il15_production_log_sd": 0.8})
    pat = scenario.protocol.patients[0]
    eng = run_one(params, scenario.protocol, pat, 3, 0)
    ref = PatientModel(params, scenario.protocol, pat.id, seed=3).run().raw_run()
    f = eng.effects.il15_production_factor
    assert ref.effects == eng.effects and abs(math.log(f)) > 0.05
    assert eng.rec[0, L.R.il15] == pytest.approx(f, rel=1e-12)
    for r in (L.R.host_nk_blood, L.R.host_t_blood, L.R.il15, L.R.donor_nk_blood):
        np.testing.assert_array_equal(ref.rec[:3, r], eng.rec[:3, r])


def test_dataset_has_the_engine_schema(scenario):
    ds_ref = simulate_reference(scenario.params, scenario.protocol, seed=2)
    ds_eng = nksim.simulate(scenario.params, scenario.protocol, seed=2)
    assert set(ds_ref.data_vars) == set(ds_eng.data_vars)
    for name in ds_eng.data_vars:
        assert ds_ref[name].dims == ds_eng[name].dims, name
        assert ds_ref[name].attrs.get("units") == ds_eng[name].attrs.get("units"), name
    np.testing.assert_array_equal(ds_ref.time, ds_eng.time)
    assert ds_ref.attrs["implementation"] == "mesa_ref"


def test_reference_accounting_and_capacity(scenario):
    """Every cell and NK agent is accounted for by the counters; no voxel exceeds K."""
    model = PatientModel(scenario.params, scenario.protocol, seed=5)
    K = model.rules.voxel_capacity
    while model.running:
        model.step()
        if model.step_index % model.rules.steps_per_day == 0:
            counts = model.lattice_counts()
            assert counts[:3].sum(axis=0).max() <= K
            assert counts[L.S.lattice_nk].sum() == len(model.agents_of(nksim.mesa_ref.NKCell))
    c = model.raw_run().cnt
    blasts0 = c[0, L.C.susceptible_blasts] + c[0, L.C.resistant_blasts]
    blasts = (blasts0 + c[:, L.C.blast_births] - c[:, L.C.blast_daughters_lost] - c[:, L.C.blast_deaths]
              - c[:, L.C.blast_drug_deaths] - c[:, L.C.blasts_killed_by_nk])
    np.testing.assert_array_equal(blasts, c[:, L.C.susceptible_blasts] + c[:, L.C.resistant_blasts])
    normal = (c[0, L.C.normal_cells] + c[:, L.C.normal_births] - c[:, L.C.normal_daughters_lost]
              - c[:, L.C.normal_deaths] - c[:, L.C.normal_drug_deaths])
    np.testing.assert_array_equal(normal, c[:, L.C.normal_cells])
    nk = c[:, L.C.nk_homed] + c[:, L.C.nk_born] - c[:, L.C.nk_died] - c[:, L.C.nk_egressed]
    np.testing.assert_array_equal(nk, c[:, L.C.nk_agents])
    assert c[-1, L.C.blasts_killed_by_nk] > 0 and c[-1, L.C.nk_homed] > 0  # the scenario exercises the NK rules
    donors = [a.donor for a in model.agents_of(nksim.mesa_ref.NKCell)]
    assert set(donors) == {0, 1}  # agents of both donors in the marrow at the end
    assert all(0 <= a.kills <= model.rules.nk_max_kills for a in model.agents_of(nksim.mesa_ref.NKCell))


def test_function_recovery_restores_lytic_units(scenario):
    """An exhausted NK agent restores one lytic unit per successful recovery draw."""
    model = PatientModel(scenario.params, scenario.protocol, seed=1)
    voxel = model.voxels[0]
    nk = nksim.mesa_ref.NKCell(model, voxel, competent=True, ready_step=0, donor=1)
    nk.kills = model.rules.nk_max_kills
    assert nk.exhausted and not nk.can_kill(0)
    assert not nk.recover(0.0) and nk.exhausted
    assert nk.recover(1.0) and nk.kills == model.rules.nk_max_kills - 1 and nk.can_kill(0)
    nk.kills = 0
    assert not nk.recover(1.0) and nk.kills == 0  # nothing to restore


# ----------------------------------------------------------------------------- statistics
def test_reference_agrees_with_engine(engine_sample, mesa_sample):
    cmp = compare_samples(engine_sample, mesa_sample, alpha=ALPHA)
    assert len(cmp.tests) > 40
    assert cmp.agree, cmp.report()


def test_reference_agrees_with_engine_ciml_tolerant():
    """A CIML product with IL-2 in a tolerant host (0.6.0) agrees too (100 seeds).

    The product's own kill probability, competent fraction, IL-2 EC50 and death factor, and no rejection, in the
    agents' rules of both implementations.
    """
    sc = crossval_scenario(nk_product="ciml", host_tolerant=True, name="crossval_ciml")
    cmp = compare_samples(sample("engine", sc, range(100)), sample("mesa", sc, range(100)), alpha=ALPHA)
    assert len(cmp.tests) > 40
    assert cmp.agree, cmp.report()


def test_mutated_kill_probability_is_detected(scenario, engine_sample):
    mutated = scenario.params.with_values({"nk.kill_probability": 0.35}, origin="<mutation>")
    cmp = compare_samples(engine_sample, sample("mesa", scenario, FAST_SEEDS, params=mutated), alpha=ALPHA)
    assert not cmp.agree, cmp.report()
    assert any("blasts_killed_by_nk" in t.quantity for t in cmp.rejected), cmp.report()


# Port bugs: the reference's agent rules broken on purpose (shared blood code intact).
def _rejected_as_first_donor(self, donor):
    """Bug: every marrow NK agent is rejected at donor 0's (A's) rate, whatever its donor."""
    return donor_nk_rejection(self.kp, self.blood[L.Y.host_t], self.primed[0], self.x_exo)


def _rejected_unprimed(self, donor):
    """Bug: marrow NK agents ignore the host's priming (the blood pools do not)."""
    return donor_nk_rejection(self.kp, self.blood[L.Y.host_t], 0.0, self.x_exo)


_NK_FATE = PatientModel._nk_fate


def _fate_without_cytokines(self, step, h_step):
    """Bug: marrow NK agents divide and die as if no cytokine had been given."""
    saved = self.support_prolif, self.support_death, self.x_exo
    self.support_prolif, self.support_death, self.x_exo = 0.0, 1.0, 0.0
    try:
        _NK_FATE(self, step, h_step)
    finally:
        self.support_prolif, self.support_death, self.x_exo = saved


def test_a_reference_that_ignores_cytarabine_is_detected(scenario, engine_sample, monkeypatch):
    """Blasts of the reference that do not take the cytarabine log kill (a third of them on day -2) are caught."""
    from nksim.mesa_ref.agents import Blast

    monkeypatch.setattr(Blast, "takes_cytarabine_kill", staticmethod(lambda: False))
    cmp = compare_samples(engine_sample, sample("mesa", scenario, range(60)), alpha=ALPHA)
    assert not cmp.agree, cmp.report()


def test_tregs_blocking_killing_agree_and_a_reference_that_ignores_them_is_detected(scenario, monkeypatch):
    """Host Tregs blocking most engagements (docs/model.md 9.15): the reference agrees; ignoring them is caught.

    Suppression 0.9 at a half-level of 5 Tregs per uL (the scenario's IL-2 keeps them well above it), so marrow
    NK engage a fraction of the time; a reference whose agents kill as if no Treg blocked them kills more.
    """
    import dataclasses

    import nksim.mesa_ref.agents as agents

    strong = dataclasses.replace(scenario, params=scenario.params.with_values(
        {"treg.nk_kill_suppression": 0.9, "treg.nk_half_suppression": 5.0}))
    eng = sample("engine", strong, range(60))
    cmp = compare_samples(eng, sample("mesa", strong, range(60)), alpha=ALPHA)
    assert cmp.agree, cmp.report()
    monkeypatch.setattr(agents, "treg_kill_factor", lambda kp, y: 1.0)
    cmp = compare_samples(eng, sample("mesa", strong, range(60)), alpha=ALPHA)
    assert not cmp.agree, cmp.report()


def test_donor_mixup_is_detected(scenario, engine_sample, monkeypatch):
    """A reference that rejects every marrow NK agent at donor A's rate (80 seeds suffice: about 7 SE)."""
    monkeypatch.setattr(PatientModel, "rejection_rate", _rejected_as_first_donor)
    cmp = compare_samples(engine_sample, sample("mesa", scenario, range(80)), alpha=ALPHA)
    assert not cmp.agree, cmp.report()
    assert any("nk_agents" in t.quantity for t in cmp.rejected), cmp.report()


@pytest.mark.slow
def test_reference_agrees_with_engine_long():
    """The long comparison agrees.

    Larger lattice (12 x 12), 22 days, between-patient random effects on (each seed is the same
    virtual patient in both samples), 400 seeds per side.
    """
    sc = crossval_scenario(side=12, end_day=20, random_effects=True, name="crossval_long")
    eng = sample("engine", sc, SLOW_SEEDS)
    ref = sample("mesa", sc, SLOW_SEEDS)
    cmp = compare_samples(eng, ref, alpha=ALPHA)
    assert len(cmp.tests) > 90
    assert cmp.agree, cmp.report()


@pytest.fixture(scope="module")
def engine_sample_400(scenario):
    return sample("engine", scenario, SLOW_SEEDS)


@pytest.mark.slow
@pytest.mark.parametrize("key, value", [("nk.kill_probability", 0.42), ("blasts.spread_fraction", 0.5),
                                        ("nk.function_recovery_rate", 0.5)])
def test_subtle_mutations_are_detected(scenario, engine_sample_400, key, value):
    """Smaller mutations on the fast scenario are detected with 400 seeds.

    A 16 % lower kill probability
    (rejected at about 10 SE on NK kills), a marrow rule (blast daughters spread 10x more, so more
    are lost in crowded voxels: about 8 SE on daughters lost), and slower recovery of NK function
    (about 12 SE on the exhausted fraction).
    """
    mutated = scenario.params.with_values({key: value}, origin="<mutation>")
    cmp = compare_samples(engine_sample_400, sample("mesa", scenario, SLOW_SEEDS, params=mutated), alpha=ALPHA)
    assert not cmp.agree, cmp.report()


@pytest.mark.slow
@pytest.mark.parametrize("method, bug", [("rejection_rate", _rejected_unprimed),
                                         ("_nk_fate", _fate_without_cytokines)])
def test_agent_rule_bugs_are_detected(scenario, engine_sample_400, monkeypatch, method, bug):
    """Port bugs in the reference's agent rules are detected (the shared blood code intact).

    Marrow NK agents that ignore the host's priming, or the cytokine effects on division and death.
    """
    monkeypatch.setattr(PatientModel, method, bug)
    cmp = compare_samples(engine_sample_400, sample("mesa", scenario, SLOW_SEEDS), alpha=ALPHA)
    assert not cmp.agree, cmp.report()


# ----------------------------------------------------------------------------- view
@pytest.mark.filterwarnings("ignore:.*use_state.*:UserWarning")
def test_view_model_and_figure():
    """The browser view's model and lattice figure (no browser; needs the viz extra)."""
    pytest.importorskip("solara")
    from nksim.mesa_ref.viz import MODEL_PARAMS, PatientView, lattice_figure, make_page

    model = PatientView(side=8, cells_per_edge=3, days_before_infusion=1, end_day=3, dose_1=200.0)
    for _ in range(5):
        model.step()
    hist = model.history()
    assert len(hist) == 6 and hist["chimerism_nk"].iloc[-1] > 0
    fig = lattice_figure(model)
    assert fig.axes and fig.axes[0].get_title().startswith("day")
    import inspect
    assert set(MODEL_PARAMS) <= set(inspect.signature(PatientView.__init__).parameters)
    assert make_page(model) is not None
