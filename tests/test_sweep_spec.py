"""Sweep specs: validation errors (file, key, allowed range), designs, draws, flagship spec."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _sweep_util import tiny, tiny_spec, write_toml

from nksim.errors import NksimInputError
from nksim.sweep import build_plan, load_spec, run_sweep, spec_from_dict
from nksim.sweep.design import design_levels

ROOT = Path(__file__).resolve().parents[1]


def err(data, match: str, key: str | None = None, build: bool = False) -> NksimInputError:
    with pytest.raises(NksimInputError, match=match) as info:
        spec = spec_from_dict(data, "spec.toml")
        if build:
            build_plan(spec)
    assert "spec.toml" in str(info.value)
    if key is not None:
        assert info.value.key == key, str(info.value)
    return info.value


def test_unknown_factor_names_key_and_suggests():
    e = err(tiny(factors={"intervall": [7]}), "unknown factor 'intervall'.*did you mean 'interval'",
            "factors.intervall")
    assert "schedule factors" in str(e)
    err(tiny(factors={"nk.kill_prob": [0.5]}), "did you mean 'nk.kill_probability'", "factors.nk.kill_prob")


def test_level_outside_allowed_range():
    e = err(tiny(factors={"interval": [7, 500]}), r"outside the allowed range \[0, 180\] day", "factors.interval[1]")
    assert "500" in str(e)
    err(tiny(factors={"nk.kill_probability": [0.5, 1.5]}), r"allowed range \[0, 1\]", "factors.nk.kill_probability[1]")
    err(tiny(factors={"interval": [7.5]}), "whole number", "factors.interval[0]")
    err(tiny(factors={"dose_split": [[60, 30]]}), "summing to 100", "factors.dose_split[0]")
    err(tiny(factors={"regimen": ["cy_only"]}), "allowed: \\['hi_cy_flu', 'none', 'trial'\\]", "factors.regimen[0]")
    err(tiny(parameters={"lattice.side": 1}), r"allowed range \[2, 4096\]", "parameters.lattice.side")
    err(tiny(baseline={"total_dose": -1.0}), r"allowed range \[1000, 1e\+10\] kg-1", "baseline.total_dose")


def test_empty_sweeps_are_errors():
    err(tiny(factors=None), "empty sweep", "factors")
    err(tiny(factors={"interval": []}), "empty list of levels", "factors.interval")
    err(tiny(cohort={"patients": []}), "empty patient list", "cohort.patients")
    err(tiny(cohort={"patients": 0}), r"allowed range \[1, ", "cohort.patients")
    err(tiny(sweep={"design": "list"}), "list design takes only", "factors")
    err(tiny(sweep={"design": "lhs"}, factors=None), "empty sweep", "factors")


def test_structure_errors():
    err(tiny(extra={"a": 1}), "unknown table 'extra'", "extra")
    err(tiny(sweep={"sed": 1}), "unknown key 'sed'", "sweep.sed")
    err(tiny(cohort={"replicates": 0}), r"\[1, 10000\]", "cohort.replicates")
    err(tiny(scenarios=[{"n_infusions": 3, "dose_split": [50, 50]}]), "one way only", "scenarios[0]")
    err(tiny(factors={"interval": [7, 7]}), "duplicate levels", "factors.interval")
    err(tiny(sweep={"design": "sobol"}, factors={"interval": {"min": 0, "max": 28}}, sampling={"n": 10}),
        "power of 2", "sampling.n")
    err(tiny(sweep={"design": "lhs"}, factors={"regimen": {"min": 0, "max": 1}}, sampling={"n": 4}),
        "categorical", "factors.regimen")
    err(tiny(scenarios=[{"interval": 7, "dose_split": [100, 0]}]), "repeats scenario 0", "scenarios[0]", build=True)


def test_schedule_outside_window_is_caught_before_simulating(tmp_path):
    data = tiny(factors={"interval": [60]}, baseline={"n_infusions": 3})  # infusions on days 0, 60, 120 >= end 120
    spec = spec_from_dict(data, "spec.toml")
    with pytest.raises(NksimInputError, match="outside the simulated window") as info:
        build_plan(spec)
    assert "scenario 0" in str(info.value)
    out = tmp_path / "s.zarr"
    with pytest.raises(NksimInputError):
        run_sweep(write_toml(tmp_path / "bad.toml", data), out, workers=0)
    assert not out.exists()


def test_bad_spec_never_touches_existing_results(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "results.txt").write_text("precious")
    with pytest.raises(NksimInputError):
        run_sweep(write_toml(tmp_path / "bad.toml", tiny(factors={"interval": [999]})), out, workers=0)
    assert (out / "results.txt").read_text() == "precious"


def test_load_spec_file_errors_and_overrides(tmp_path):
    with pytest.raises(NksimInputError, match="not found"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\nname=")
    with pytest.raises(NksimInputError, match="not valid TOML"):
        load_spec(bad)
    good = write_toml(tmp_path / "good.toml", tiny())
    s = load_spec(good, ["cohort.patients=5", "parameters.lattice.side=8", 'baseline.regimen="hi_cy_flu"'])
    assert len(s.cohort.patients) == 5 and s.parameters["lattice.side"] == 8 and s.baseline["regimen"] == "hi_cy_flu"
    with pytest.raises(NksimInputError, match="TABLE.KEY=VALUE"):
        load_spec(good, ["patients=5"])
    with pytest.raises(NksimInputError, match="allowed range"):
        load_spec(good, ["factors.interval=[1000]"])


def test_factorial_and_explicit_scenarios():
    spec = tiny_spec(scenarios=[{"n_infusions": 3}, {"gap": 14, "regimen": "hi_cy_flu"}])
    levels, swept = design_levels(spec)
    assert len(levels) == 6 and swept == ["interval", "dose_split", "n_infusions", "gap", "regimen"]
    plan = build_plan(spec)
    sc = plan["scenarios"]
    assert [s["label"] for s in sc[:2]] == ["interval=7 dose_split=100/0", "interval=7 dose_split=50/50"]
    assert sc[4]["schedule"]["dose_split"] == pytest.approx([100 / 3] * 3)
    ev = sc[4]["protocol"]["events"]
    assert [e["day"] for e in ev if e["kind"] == "nk_infusion"] == [0, 7, 14]
    assert sum(e["dose"] for e in ev if e["kind"] == "nk_infusion") == pytest.approx(1.5e7)
    # 100/0 is one infusion; trial Flu/Cy ends 7 days before (gap 7), Hi-Cy/Flu gap given 14
    assert [e["day"] for e in sc[0]["protocol"]["events"] if e["kind"] == "nk_infusion"] == [0]
    ld5 = [e["day"] for e in sc[5]["protocol"]["events"] if e["kind"] != "nk_infusion"]
    assert max(ld5) == -14 and min(ld5) == -18  # Hi-Cy/Flu spans 5 days
    assert plan.time_start == -18 and plan.n_time == 120 + 18 + 1


def test_qmc_designs_are_reproducible_and_in_range():
    d = tiny(sweep={"design": "sobol"}, factors={"interval": {"min": 0, "max": 28},
                                                 "first_dose_pct": {"min": 20, "max": 100},
                                                 "nk.kill_probability": {"min": 0.2, "max": 0.7},
                                                 "total_dose": {"min": 1e6, "max": 1e8, "scale": "log"}},
             sampling={"n": 16})
    a, names = design_levels(spec_from_dict(d))
    b, _ = design_levels(spec_from_dict(d))
    assert a == b and len(a) == 16 and names[0] == "interval"
    iv = np.array([x["interval"] for x in a])
    assert np.all(iv == np.round(iv)) and iv.min() >= 0 and iv.max() <= 28
    assert all(0.2 <= x["nk.kill_probability"] <= 0.7 and 1e6 <= x["total_dose"] <= 1e8 for x in a)
    plan = build_plan(spec_from_dict(d))
    assert plan.n_scenarios == 16
    lhs = tiny(sweep={"design": "lhs"}, factors={"nk.max_kills": {"min": 3, "max": 10}}, sampling={"n": 8})
    vals = sorted(x["nk.max_kills"] for x in design_levels(spec_from_dict(lhs))[0])
    assert all(v == int(v) and 3 <= v <= 10 for v in vals)


def test_prior_draws_and_csv_draws(tmp_path):
    plan = build_plan(tiny_spec(cohort={"draws": 3, "draws_from": "prior"}))
    assert plan.n_draws == 3 and plan.n_batches == 4 * 3 * 2
    base = plan.base_parameters()
    for d in plan["draws"]:
        for k, v in d.items():
            lo, hi = base.priors()[k]
            assert lo <= v <= hi
    assert build_plan(tiny_spec(cohort={"draws": 3, "draws_from": "prior"})).digest == plan.digest
    # fixed parameters override the drawn ones
    p = plan.parameters(0, 1)
    assert p["lattice.side"] == 6 and p["nk.kill_probability"] == plan["draws"][1]["nk.kill_probability"]
    csv = tmp_path / "post.csv"
    csv.write_text("nk.kill_probability,nk.rejection_rate\n0.3,0.2\n0.6,0.4\n")
    spec = spec_from_dict(tiny(cohort={"draws": 2, "draws_from": "post.csv"}), "spec.toml", base_dir=tmp_path)
    assert build_plan(spec)["draws"] == [{"nk.kill_probability": 0.3, "nk.rejection_rate": 0.2},
                                         {"nk.kill_probability": 0.6, "nk.rejection_rate": 0.4}]
    csv.write_text("nk.kill_probability\n3.0\n")
    spec = spec_from_dict(tiny(cohort={"draws": 1, "draws_from": "post.csv"}), "spec.toml", base_dir=tmp_path)
    with pytest.raises(NksimInputError, match="allowed range"):
        build_plan(spec)
    with pytest.raises(NksimInputError, match="neither 'prior' nor an existing .csv"):
        spec_from_dict(tiny(cohort={"draws": 1, "draws_from": "nope.csv"}), "spec.toml", base_dir=tmp_path)


def test_plan_digest_tracks_what_matters():
    a = build_plan(tiny_spec())
    assert build_plan(tiny_spec(sweep={"description": "another comment"})).digest == a.digest
    for change in ({"sweep": {"seed": 12}}, {"parameters": {"lattice.side": 7}}, {"sweep": {"batch_size": 2}},
                   {"factors": {"interval": [7, 15]}}):
        assert build_plan(tiny_spec(**change)).digest != a.digest


def test_plan_digest_ignores_parameter_provenance_not_values(tmp_path):
    """A model file whose source texts are corrected resumes the same store; a changed value does not."""
    import re

    from nksim.sweep import spec_from_dict

    text = (ROOT / "models" / "default.toml").read_text()
    base = spec_from_dict(tiny(sweep={"model": str(ROOT / "models" / "default.toml")}), "<tiny>")
    a = build_plan(base)
    edited = tmp_path / "edited.toml"
    edited.write_text(re.sub(r'(?m)^(source = ")', r"\1corrected: ", text, count=3))
    assert edited.read_text() != text
    b = build_plan(spec_from_dict(tiny(sweep={"model": str(edited)}), "<tiny>"))
    assert b.digest == a.digest and b.to_json() != a.to_json()          # the plan keeps the new text
    assert b.base_parameters().values() == a.base_parameters().values()
    changed = tmp_path / "changed.toml"
    changed.write_text(re.sub(r"(?m)^(value = )([0-9.eE+-]+)", lambda m: f"{m[1]}{float(m[2]) * 1.5 + 1.0}", text,
                              count=1))
    assert build_plan(spec_from_dict(tiny(sweep={"model": str(changed)}), "<tiny>")).digest != a.digest


def test_flagship_spec_is_valid():
    spec = load_spec(ROOT / "experiments" / "two_infusion_schedules.toml")
    plan = build_plan(spec)
    assert plan.n_scenarios == 45 and plan.n_draws == 4
    assert plan.n_simulations == 45 * 4 * 24 * 2
    regs = {s["schedule"]["regimen"] for s in plan["scenarios"]}
    assert regs == {"trial", "hi_cy_flu"}
    assert {s["schedule"]["n_infusions"] for s in plan["scenarios"]} == {1, 2, 3}


def test_posterior_draws_are_the_default_and_record_the_file_digest():
    """A sweep with draws draws from the shipped calibrated posterior and records which file it was."""
    from nksim.sweep.draws import file_digest, posterior_file

    plan = build_plan(tiny_spec(cohort={"draws": 2}))
    src = plan["draws_from"]
    assert src == {"posterior": "posterior.nc", "sha256": file_digest(posterior_file("posterior"))}
    assert set(plan["draws"][0]) <= set(plan.base_parameters().priors())


def test_nk_product_is_a_schedule_factor():
    """nk_product levels give protocols of that product; default: the trial's expanded product."""
    plan = build_plan(tiny_spec(factors={"nk_product": ["expanded", "fresh"]}))
    products = [sc["schedule"]["nk_product"] for sc in plan["scenarios"]]
    assert products == ["expanded", "fresh"]
    assert [plan.protocol(i).nk_product for i in range(2)] == ["expanded", "fresh"]
    assert [sc["label"] for sc in plan["scenarios"]] == ["nk_product=expanded", "nk_product=fresh"]
    default = build_plan(tiny_spec())
    assert {plan_sc["schedule"]["nk_product"] for plan_sc in default["scenarios"]} == {"expanded"}
    with pytest.raises(NksimInputError, match="allowed NK product"):
        build_plan(tiny_spec(factors={"nk_product": ["frozen"]}))
    with pytest.raises(NksimInputError, match="categorical"):
        build_plan(tiny_spec(sweep={"design": "lhs"}, factors={"nk_product": {"min": 0, "max": 1}},
                             sampling={"n": 4}))


# ----------------------------------------------------------------------------- the cohort's population
def test_cohort_population_is_checked():
    err(tiny(cohort={"disease": "cr1"}), "must be one of", "cohort.disease")
    err(tiny(cohort={"disease": "remission"}), "needs its residual marrow blasts", "cohort.baseline_blast_pct")
    err(tiny(cohort={"disease": "remission", "baseline_blast_pct": 7.0}), "allowed range", "cohort.baseline_blast_pct")
    err(tiny(cohort={"disease": "remission", "baseline_blast_pct": 5.0}), "below 5 percent",
        "cohort.baseline_blast_pct")
    err(tiny(cohort={"baseline_blast_pct": 120.0}), "allowed range", "cohort.baseline_blast_pct")
    err(tiny(cohort={"baseline_blast_pct": "2 %"}), "number", "cohort.baseline_blast_pct")


def test_default_population_keeps_the_plan_digest_and_a_population_changes_it():
    a = build_plan(tiny_spec())
    assert a.population == {} and "population" not in a.content
    assert build_plan(tiny_spec(cohort={"disease": "active"})).digest == a.digest
    b = build_plan(tiny_spec(cohort={"disease": "remission", "baseline_blast_pct": 1.0}))
    c = build_plan(tiny_spec(cohort={"disease": "remission", "baseline_blast_pct": 2.0}))
    assert len({a.digest, b.digest, c.digest}) == 3
    assert b.population == {"disease": "remission", "baseline_blast_pct": 1.0}
    p = b.patient("vp0001")
    assert p.disease == "remission" and dict(p.covariates) == {"baseline_blast_pct": 1.0}
    assert a.patient("vp0001").disease == "active" and dict(a.patient("vp0001").covariates) == {}


def test_a_cohort_in_remission_is_simulated_in_remission(tmp_path):
    """Every stored patient has the cohort's blasts and the remission growth law; the summary says which cohort."""
    import math

    from nksim.sweep import SweepStore, summarize

    spec = tiny_spec(cohort={"disease": "remission", "baseline_blast_pct": 1.5},
                     parameters={"lattice.side": 6, "blasts.remission_doubling_time": 20.0,
                                 "blasts.remission_doubling_log_sd": 0.0},
                     factors={"interval": [7]})
    out = tmp_path / "rem.zarr"
    assert run_sweep(spec, out, workers=0).complete
    st = SweepStore.open_existing(out)
    np.testing.assert_allclose(st.read("baseline_blast_pct"), 1.5)
    np.testing.assert_allclose(st.read("blast_net_growth_rate"), math.log(2.0) / 20.0, rtol=1e-12)
    assert st.group.attrs["population"] == "in remission, marrow blasts 1.5 percent"
    assert summarize(out).attrs["population"] == "in remission, marrow blasts 1.5 percent"
