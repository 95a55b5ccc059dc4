"""nksim twin: assay likelihood, conditioning, common random numbers after the decision day, the whole path."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nksim import quantities as Q
from nksim.cli import main
from nksim.errors import NksimInputError
from nksim.parameters import load_parameters
from nksim.protocol import Patient
from nksim.simulate import run_one
from nksim.sweep.scenario import build_protocol
from nksim.twin.likelihood import (
    AssayModel,
    effective_sample_size,
    log_likelihood,
    simulate_measurement,
    systematic_resample,
    weighted_quantiles,
)
from nksim.twin.run import twin
from nksim.twin.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "twin" / "example.toml"
TINY = ["twin.bank.draws=2", "twin.bank.max_draws=2", "twin.bank.patients=10", "twin.resample=20",
        "parameters.lattice.side=4",
        "twin.decision.days=[7, 14]", "twin.decision.doses=[5e6]"]


def test_log_normal_chimerism_likelihood_and_its_detection_limit():
    a = AssayModel(log_sd=0.3)
    sim = np.array([0.1, 0.2, 1.0])
    ll = log_likelihood("donor_chimerism_pbmc", 0.2, False, 0.01, sim, a)
    expect = stats.lognorm.logpdf(0.2, s=0.3, scale=sim)
    np.testing.assert_allclose(ll, expect, rtol=1e-10)
    assert np.argmax(ll) == 1
    below = log_likelihood("donor_chimerism_pbmc", math.nan, True, 0.01, np.array([0.001, 0.01, 1.0]), a)
    np.testing.assert_allclose(np.exp(below), stats.norm.cdf((np.log(0.01) - np.log([0.001, 0.01, 1.0])) / 0.3))
    assert np.exp(below[1]) == pytest.approx(0.5)


def test_marrow_count_likelihood_is_binomial():
    a = AssayModel(marrow_cells=200)
    sim = np.array([5.0, 15.0, 40.0])
    ll = log_likelihood("marrow_blast_pct", 15.5, False, None, sim, a)
    np.testing.assert_allclose(ll, stats.binom.logpmf(31, 200, sim / 100), rtol=1e-10)


def test_measurement_simulator_matches_the_likelihood():
    """Synthetic measurements from the assay model have the likelihood's distribution (KS, 4000 draws)."""
    rng = np.random.default_rng(3)
    a = AssayModel(log_sd=0.4)
    v, below = simulate_measurement("donor_chimerism_nk", np.full(4000, 2.0), None, a, rng)
    assert not below.any()
    assert stats.kstest(v, stats.lognorm(s=0.4, scale=2.0).cdf).pvalue > 0.01
    v, below = simulate_measurement("donor_chimerism_nk", np.full(4000, 2.0), 2.0, a, rng)
    assert below.mean() == pytest.approx(0.5, abs=0.03) and np.isnan(v[below]).all()


def test_weights_resampling_and_quantiles():
    rng = np.random.default_rng(1)
    assert effective_sample_size(np.zeros(50)) == pytest.approx(50)
    assert effective_sample_size(np.array([0.0, -np.inf, -np.inf])) == pytest.approx(1)
    log_w = np.log(np.array([0.1, 0.2, 0.7]))
    picks = systematic_resample(log_w, 10_000, rng)
    assert np.bincount(picks, minlength=3) / 10_000 == pytest.approx([0.1, 0.2, 0.7], abs=1e-3)
    vals = rng.normal(size=20_000)
    assert weighted_quantiles(vals, np.zeros(vals.size), [0.05, 0.5, 0.95]) == pytest.approx(
        np.quantile(vals, [0.05, 0.5, 0.95]), abs=0.02)


def test_a_candidates_trajectory_equals_the_conditioned_one_up_to_the_decision_day():
    """Common random numbers carry the conditioned trajectory into every candidate.

    The virtual patient simulated under the schedule so far (to the decision day) and under a
    candidate with a later second infusion share every recorded value up to that day.
    """
    spec = load_spec(EXAMPLE, TINY)
    params = load_parameters(spec.model_path).with_values(dict(spec.parameters))
    so_far = build_protocol(spec.given.protocol_dict(name="a", end_day=spec.decision_day,
                                                     assessment_days=[spec.decision_day]), ["v1"], "t")
    cand = spec.candidates()[-1]  # second infusion on day 14
    full = build_protocol(cand.protocol_dict(name="b", end_day=100, assessment_days=[28]), ["v1"], "t")
    a = run_one(params, so_far, Patient("v1", "all"), 11, 0).rec
    b = run_one(params, full, Patient("v1", "all"), 11, 0).rec
    np.testing.assert_array_equal(a, b[: a.shape[0]])
    chim = Q.observe("donor_chimerism_pbmc", b)
    assert np.isfinite(chim[: a.shape[0]]).all()


def test_whole_path_on_a_tiny_bank(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["twin", str(EXAMPLE), "--out", str(out), "--workers", "2"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "effective sample size" in text
    for name in ("REPORT.md", "twin.nc", "twin.png"):
        assert (out / name).is_file()
    res = twin(load_spec(EXAMPLE, TINY), None, workers=1, figures=False)
    ds = res.dataset
    assert ds.sizes["candidate"] == 5  # none; day 7 and day 14, each from the same or a new donor
    assert 1 <= ds.attrs["effective_sample_size"] <= 20
    assert 0 <= ds.attrs["prior_predictive_share"] <= 1
    assert ds["p_best"].sum() == pytest.approx(1.0)
    assert np.all(ds["pft_lo"] <= ds["pft_mean"]) and np.all(ds["pft_mean"] <= ds["pft_hi"])
    assert (ds["within_delta"].values[np.argmax(ds["pft_mean"].values)] == 1)
    q = ds["param_conditioned"]
    assert np.all(q.sel(q=0.05) <= q.sel(q=0.95))
    for v in ds.data_vars:
        assert "units" in ds[v].attrs and "long_name" in ds[v].attrs, v
    again = twin(load_spec(EXAMPLE, TINY), None, workers=2, figures=False).dataset
    import xarray as xr

    xr.testing.assert_identical(ds, again)  # same seed, any number of threads


def test_an_atypical_patient_is_flagged(tmp_path):
    """Chimerism 80 % on days 1-7 after 5e6 expanded NK/kg (the model makes ~0.1-1 %): flagged as atypical."""
    p = tmp_path / "odd.csv"
    p.write_text("patient,day,quantity,value,unit,lod,method,source,confidence\n"
                 + "".join(f"twin01,{d},donor_chimerism_pbmc,80,percent,0.01,STR,test,synthetic\n" for d in (1, 3, 7)))
    spec = load_spec(EXAMPLE, [*TINY, f'twin.patient="{p}"'])
    ds = twin(spec, None, workers=2, figures=False).dataset
    assert ds.attrs["atypical"] == 1 and ds.attrs["prior_predictive_share"] < 0.01


@pytest.mark.parametrize("row, column", [
    ("twin01,1,donor_chimerism_pbmc,0.2,uL-1,0.01,STR,s,synthetic", "unit"),
    ("twin01,1,donor_chimerism_pbmc,abc,percent,0.01,STR,s,synthetic", "value"),
    ("twin01,1,chimerism,0.2,percent,0.01,STR,s,synthetic", "quantity"),
    ("twin01,1,donor_chimerism_pbmc,<lod,percent,,STR,s,synthetic", "lod"),
    ("twin01,-30,donor_chimerism_pbmc,0.2,percent,0.01,STR,s,synthetic", "day"),
])
def test_bad_observation_files_are_one_line_naming_row_and_column(tmp_path, capsys, row, column):
    p = tmp_path / "bad.csv"
    p.write_text("patient,day,quantity,value,unit,lod,method,source,confidence\n" + row + "\n")
    rc = main(["twin", str(EXAMPLE), "--out", str(tmp_path / "o"), "--set", f'twin.patient="{p}"', *sum(
        (["--set", s] for s in TINY), [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "bad.csv" in err[0] and column in err[0] and ("row 1" in err[0] or "line 2" in err[0]), err[0]


@pytest.mark.parametrize("override, message", [
    ("twin.decision.days=[3]", "twin.decision.days[0]"),
    ("twin.decision.donors=[\"other\"]", "twin.decision.donors[0]"),
    ("twin.given.dose=-1", "twin.given.total_dose"),
    ("twin.bank.size=3", "unknown key 'size'"),
    ("twin.patient_id=\"nobody\"", "no rows of patient 'nobody'"),
    ("twin.resample=1", "twin.resample"),
])
def test_bad_specs_are_refused_naming_the_key(override, message):
    with pytest.raises(NksimInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec = load_spec(EXAMPLE, [*TINY, override])
        twin(spec, None, figures=False)


@pytest.mark.slow
def test_coverage_on_synthetic_patients():
    """The twin's 90 % intervals cover synthetic patients' truth 85-95 % of the time.

    100 synthetic patients from the bank's population (experiments/twin/run_check.py settings, a bank
    of 16000): the intervals of the parameters and of the predictions (randomised PIT), ordinary
    patients rarely flagged, the regret of the recommendation reported.
    """
    import sys

    sys.path.insert(0, str(ROOT / "experiments" / "twin"))
    from run_check import OVERRIDES

    from nksim.twin.check import coverage_study

    r = coverage_study(load_spec(EXAMPLE, OVERRIDES), 100, workers=2, seed=1)
    assert 0.85 <= r["parameter_coverage"] <= 0.95, r
    assert 0.85 <= r["prediction_coverage"] <= 0.95, r
    assert r["flagged_share"] <= 0.05
    assert r["regret_mean"] >= 0 and 0 <= r["regret_zero_share"] <= 1


def test_a_thin_bank_grows_while_the_effective_sample_size_is_low():
    """ESS below 20 on a 2-draw bank: draws are doubled up to max_draws; the first units are kept as they were."""
    fixed = twin(load_spec(EXAMPLE, TINY), None, workers=2, figures=False).dataset
    grown = twin(load_spec(EXAMPLE, [*TINY, "twin.bank.max_draws=16"]), None, workers=2, figures=False).dataset
    assert fixed.attrs["bank_units"] == fixed.attrs["bank_units_first"] == 20
    assert fixed.attrs["effective_sample_size"] < 20  # the premise: thin
    assert grown.attrs["bank_units_first"] == 20 and grown.attrs["bank_units"] > 20
    assert grown.attrs["bank_units"] <= 16 * 10
    assert grown.attrs["effective_sample_size"] > fixed.attrs["effective_sample_size"]
    from nksim.twin.report import report_markdown

    assert "grown from 20" in report_markdown(grown, load_spec(EXAMPLE, TINY))
    with pytest.raises(NksimInputError, match="twin.bank.max_draws"):
        load_spec(EXAMPLE, [*TINY, "twin.bank.max_draws=1"])


def test_effects_given_as_deviates_reproduce_the_drawn_ones():
    """effects_from_normals of a patient stream's deviates is draw_effects; run_one(effects=) is the same run."""
    from nksim.patients import N_EFFECT_NORMALS, draw_effects, effects_from_normals
    from nksim.streams import stream_generator

    spec = load_spec(EXAMPLE, TINY)
    params = load_parameters(spec.model_path).with_values(dict(spec.parameters))
    for rep in range(6):
        drawn = draw_effects(params, stream_generator(11, "v1", rep, "patient"))
        z = stream_generator(11, "v1", rep, "patient").standard_normal(N_EFFECT_NORMALS)
        assert effects_from_normals(params, z) == drawn
    proto = build_protocol(spec.given.protocol_dict(name="a", end_day=20, assessment_days=[20]), ["v1"], "t")
    a = run_one(params, proto, Patient("v1", "all"), 11, 2)
    b = run_one(params, proto, Patient("v1", "all"), 11, 2, effects=a.effects)
    np.testing.assert_array_equal(a.rec, b.rec)
    z_fast = np.zeros(N_EFFECT_NORMALS)
    z_fast[4] = 2.5
    other = effects_from_normals(params, z_fast)  # fast-expanding donor NK
    c = run_one(params, proto, Patient("v1", "all"), 11, 2, effects=other)
    assert c.effects == other and not np.array_equal(a.rec, c.rec)
    with pytest.raises(ValueError, match=f"{N_EFFECT_NORMALS} standard normal"):
        effects_from_normals(params, np.zeros(N_EFFECT_NORMALS - 1))


def test_the_abc_smc_fallback_runs_when_the_bank_is_thin():
    """A 20-unit bank is always thin: the ABC-SMC conditions her, reaches temperature 1, and its particles are real.

    Each particle's stored values at the measurements are those its identity (streams, draw, deviates)
    simulates again; 'never' keeps the bank's weights; the report says which was used.
    """
    from nksim.twin.report import report_markdown
    from nksim.twin.run import Conditioned

    spec = load_spec(EXAMPLE, TINY)
    ds = twin(spec, None, workers=2, figures=False).dataset
    a = ds.attrs
    assert a["conditioning"] == "abc-smc" and a["smc_converged"] == 1 and a["smc_final_temperature"] == 1.0
    temps = np.array(json.loads(a["smc_temperatures"]))
    assert np.all(np.diff(temps) > 0) and temps[-1] == 1.0
    assert a["smc_simulations"] == a["smc_particles"] * sum(json.loads(a["smc_moves"]))
    assert "Patient-level ABC-SMC" in report_markdown(ds, spec)
    bank_only = twin(load_spec(EXAMPLE, [*TINY, 'twin.smc.mode="never"']), None, workers=2, figures=False).dataset
    assert bank_only.attrs["conditioning"] == "bank" and "smc_stages" not in bank_only.attrs
    assert "ABC-SMC" not in report_markdown(bank_only, spec)

    cond, res = _smc_on_the_bank(spec)
    assert isinstance(cond, Conditioned) and res.converged and len(cond.draw) == spec.smc.particles
    moved = [i for i, ident in enumerate(cond.ident) if ident[1].startswith("smc")]
    assert len(moved) > len(cond.draw) // 2
    _assert_resimulated(spec, cond, moved[:3] + [i for i in range(len(cond.draw)) if i not in moved][:2])


def _smc_on_the_bank(spec):
    """The ABC-SMC of ``spec``'s patient started from its bank, as ``twin`` runs it: ``(Conditioned, SmcResult)``."""
    from nksim.twin.run import _bank, _observations, _params, _simulate_so_far, patient_smc

    base = load_parameters(spec.model_path)
    obs, _ = _observations(spec)
    bank = _bank(spec, base)
    params = _params(base, spec, bank)
    truth, _ = _simulate_so_far(spec, bank, params, obs, 2)
    ll = np.zeros(bank.n_units)
    for j, o in enumerate(obs):
        ll += log_likelihood(o.quantity, o.value, o.below_lod, o.lod, truth[:, j], spec.assay)
    return patient_smc(spec, bank, params, obs, truth, ll, 2)


def _assert_resimulated(spec, cond, units):
    """Each unit's stored values at the measurements and its effects are what its identity simulates again."""
    from nksim.twin.run import _bank, _observations, _params, _so_far_protocol

    base = load_parameters(spec.model_path)
    obs, _ = _observations(spec)
    params = _params(base, spec, _bank(spec, base))
    proto = _so_far_protocol(spec, ["x"])
    for i in units:
        run = cond.run(i, params, proto)
        got = [Q.observe(o.quantity, run.rec)[int(round(o.day - proto.start_day))] for o in obs]
        np.testing.assert_array_equal(got, cond.truth[i])
        assert run.effects.as_dict() == cond.effects[i]


def test_an_unconverged_abc_smc_is_said_loudly():
    from nksim.errors import NksimWarning
    from nksim.twin.report import report_markdown

    spec = load_spec(EXAMPLE, [*TINY, "twin.smc.max_stages=1"])
    with pytest.warns(NksimWarning, match="max_stages"):
        ds = twin(spec, None, workers=1, figures=False).dataset
    assert ds.attrs["smc_converged"] == 0 and ds.attrs["smc_final_temperature"] < 1
    assert "stopped at temperature" in report_markdown(ds, spec)


@pytest.mark.parametrize("override, key", [
    ('twin.smc.mode="sometimes"', "twin.smc.mode"),
    ("twin.smc.particles=2", "twin.smc.particles"),
    ("twin.smc.ess_fraction=1.5", "twin.smc.ess_fraction"),
    ("twin.smc.jump=-0.1", "twin.smc.jump"),
    ("twin.smc.temperature=1", "unknown key 'temperature'"),
])
def test_bad_smc_settings_name_the_key(override, key):
    with pytest.raises(NksimInputError, match=key.replace(".", r"\.")):
        load_spec(EXAMPLE, [*TINY, override])


@pytest.mark.slow
def test_the_abc_smc_fallback_restores_coverage_where_the_bank_is_thin():
    """On 40 synthetic patients whose data leave the bank thin (ESS < 20), the ABC-SMC's 90 % intervals cover >= 80 %.

    experiments/twin/run_check.py --fallback settings (a 2000-unit bank of 400 draws, the ABC-SMC's
    pool). Selecting patients by their data keeps a calibrated posterior calibrated on them; the
    bank's own weights, a handful of heavy units, cover visibly less (the reason for the fallback).
    Measured: seed 1 87 % (parameters) and 90 % (predictions), seed 2 84 % and 86 %; the bank's weights
    73-76 % and 76-80 %. The lower edge is 80 %, not 85 %: the sampler's posterior draws are a finite
    pool (400 here), a little narrower than the continuous posterior (pool 50: 82 %, 200: 86 %).
    """
    import sys

    sys.path.insert(0, str(ROOT / "experiments" / "twin"))
    from run_check import FALLBACK_OVERRIDES

    from nksim.twin.check import fallback_study

    r = fallback_study(load_spec(EXAMPLE, FALLBACK_OVERRIDES), screened=200, max_patients=40, candidates=(0, 1),
                       workers=2, seed=1)
    assert r["thin"] == 40 and r["ess_bank_median"] < 20
    assert 0.80 <= r["smc_parameter_coverage"] <= 0.95, r
    assert 0.80 <= r["smc_prediction_coverage"] <= 0.975, r
    assert r["smc_parameter_coverage"] >= r["bank_parameter_coverage"] + 0.05, r


def test_a_twin_in_remission_simulates_every_virtual_patient_in_remission(monkeypatch):
    """``[twin] disease = "remission"`` reaches the bank, the ABC-SMC's moved particles and the decision stage.

    Every simulation gets the remission patient; a moved particle's stored values are those its
    identity simulates again (with her population); the report and attributes say which patient.
    """
    import importlib

    from nksim.twin.report import report_markdown

    with pytest.raises(NksimInputError, match="residual marrow blasts") as info:
        load_spec(EXAMPLE, [*TINY, 'twin.disease="remission"'])
    assert info.value.key == "twin.baseline_blast_pct"
    spec = load_spec(EXAMPLE, [*TINY, 'twin.disease="remission"', "twin.baseline_blast_pct=1.5"])
    assert spec.population == {"disease": "remission", "baseline_blast_pct": 1.5}
    sim = importlib.import_module("nksim.simulate")
    seen = set()
    orig = sim.run_one

    def spy(params, proto, patient, *a, **k):
        seen.add((patient.disease, tuple(sorted(patient.covariates.items()))))
        eff = k.get("effects")
        assert eff is None or (eff.baseline_blast_pct == 1.5 and eff.proliferative_disease == 0.0)
        return orig(params, proto, patient, *a, **k)

    monkeypatch.setattr(sim, "run_one", spy)
    ds = twin(spec, None, workers=2, figures=False).dataset
    assert seen == {("remission", (("baseline_blast_pct", 1.5),))}
    assert ds.attrs["population"] == "in remission, marrow blasts 1.5 percent"
    assert "in remission, marrow blasts 1.5 percent" in report_markdown(ds, spec)
    assert ds.attrs["conditioning"] == "abc-smc"  # a 20-unit bank is thin: the particles moved

    cond, _ = _smc_on_the_bank(spec)
    moved = [i for i, ident in enumerate(cond.ident) if ident[1].startswith("smc")][:3]
    assert moved and all(cond.effects[i]["baseline_blast_pct"] == 1.5 for i in moved)
    _assert_resimulated(spec, cond, moved)
