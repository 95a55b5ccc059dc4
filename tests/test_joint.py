"""The joint calibration's machinery: bank, emulators, posterior, recovery (issue 26).

The statistical tests use a synthetic simulator with the bank's interface and a known outcome
model (per-patient success probability logistic in the parameters), so the right answer is known:
the posterior must concentrate where the truth is and its 90 % intervals must cover it at their
nominal rate. The nksim bank itself is tested on a tiny design for determinism and resumption.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nksim.calibration import load_registry
from nksim.calibration.bank import (
    BANK_CELL_DIAMETER,
    bank_parameters,
    open_bank,
    prior_unit_to_values,
    run_bank,
    sobol_design,
    values_to_prior_unit,
)
from nksim.calibration.config import FitParameter
from nksim.calibration.emulator import JointEmulator, fit_row_emulator, observed_pair
from nksim.calibration.joint import coverage_study, interval, nk_potency, posterior_sample
from nksim.calibration.joint_spec import load_joint_spec
from nksim.errors import NksimInputError, OutputExistsError

# ----------------------------------------------------------------------------- a synthetic simulator
#: Row -> (coefficients on u, intercept) of logit p(u): each row informs a different direction.
_ROWS = {
    "a": (np.array([4.0, 0.0, 0.0]), -2.0),
    "b": (np.array([0.0, 4.0, 0.0]), -2.0),
    "c": (np.array([2.0, 2.0, 0.0]), -2.0),
    "d": (np.array([0.0, 0.0, 3.0]), -1.5),
}
_N = {"a": 40, "b": 40, "c": 30, "d": 30}
_SLOTS = 10


def _p(name: str, u: np.ndarray) -> np.ndarray:
    w, b = _ROWS[name]
    return 1.0 / (1.0 + np.exp(-(np.atleast_2d(u) @ w + b)))


def _synthetic_bank(points: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    u = sobol_design(3, points, seed)
    out = {r: (rng.random((points, _SLOTS)) < _p(r, u)[:, None]).astype(float) for r in _ROWS}
    return u, out


def _emulator(points: int = 1024, seed: int = 1) -> JointEmulator:
    u, out = _synthetic_bank(points, seed)
    return JointEmulator(tuple(fit_row_emulator(r, "share", u, outcome=out[r], seed=i) for i, r in enumerate(_ROWS)))


def _dataset(u_true: np.ndarray, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    return {r: (float(rng.binomial(_N[r], float(_p(r, u_true)[0]))), float(_N[r])) for r in _ROWS}


@pytest.fixture(scope="module")
def synthetic_emulator() -> JointEmulator:
    return _emulator()


def test_emulator_learns_the_outcome_probability(synthetic_emulator):
    """The classifiers recover p(u) of the synthetic simulator: mean absolute error < 0.05 over the cube."""
    u = np.random.default_rng(5).random((2000, 3))
    for r in _ROWS:
        err = np.abs(synthetic_emulator.row(r).predict(u) - _p(r, u))
        assert err.mean() < 0.05, (r, err.mean())
        assert synthetic_emulator.row(r).diagnostics["skill"] > 0.05


def test_posterior_concentrates_at_the_truth(synthetic_emulator):
    """With the truth in the middle of the cube, the intervals of the informed parameters contain it and are narrow."""
    truth = np.array([[0.5, 0.6, 0.4]])
    rng = np.random.default_rng(11)
    data = {r: (round(_N[r] * 10 * float(_p(r, truth)[0])), _N[r] * 10) for r in _ROWS}  # 10x the data
    post = posterior_sample(synthetic_emulator, data, 3, seed=3)
    lo, hi = interval(post.draws)
    assert np.all(lo <= truth[0]) and np.all(truth[0] <= hi)
    assert np.all(hi - lo < 0.35), hi - lo  # prior width 1
    assert post.ess > 500 and 0.05 < post.acceptance < 0.9
    del rng


def test_coverage_quick(synthetic_emulator):
    """A quick recovery study (12 datasets, 36 pairs): coverage of the 90 % intervals in [70 %, 100 %].

    At a true rate of 0.90, 36 pairs fall below 70 % with probability < 0.2 % (binomial); the slow
    test below checks the issue's band [80 %, 97 %] with 40 datasets.
    """
    rng = np.random.default_rng(7)
    truths = rng.random((12, 3))
    datasets = [_dataset(t[None, :], rng) for t in truths]
    res = coverage_study(synthetic_emulator, truths, datasets, seed=200, particles=500, moves=4)
    assert 0.70 <= res.coverage() <= 1.0, res.coverage()


@pytest.mark.slow
def test_coverage_of_the_90_percent_intervals(synthetic_emulator):
    """Recovery study on 40 synthetic datasets: coverage of the 90 % intervals in [80 %, 97 %].

    120 (dataset, parameter) pairs, correlated within a dataset; at a true rate of 0.90 the
    coverage falls outside [0.80, 0.97] with probability well below 1 % (binomial, even with
    the pairs of a dataset counted as one).
    """
    rng = np.random.default_rng(2026)
    truths = rng.random((40, 3))
    datasets = [_dataset(t[None, :], rng) for t in truths]
    res = coverage_study(synthetic_emulator, truths, datasets, seed=100, particles=1000)
    assert 0.80 <= res.coverage() <= 0.97, res.coverage()
    assert res.covered.shape == (40, 3)
    # SBC ranks roughly uniform: no more than a third of them in either outer decile
    assert (res.ranks < 0.1).mean() < 0.34 and (res.ranks > 0.9).mean() < 0.34


def test_uninformative_row_leaves_the_prior():
    """A row whose outcome does not depend on u gives a posterior as wide as the prior (90 % width ~ 0.9)."""
    rng = np.random.default_rng(4)
    u = sobol_design(2, 512, 4)
    out = (rng.random((512, _SLOTS)) < 0.3).astype(float)
    em = JointEmulator((fit_row_emulator("flat", "share", u, outcome=out, seed=0),))
    post = posterior_sample(em, {"flat": (9.0, 30.0)}, 2, seed=0)
    lo, hi = interval(post.draws)
    assert np.all(hi - lo > 0.8)


def test_single_class_row_is_never_certain():
    """A row with only failures in the bank gives p > 0 (so an observed success is penalised, not impossible)."""
    u = sobol_design(2, 64, 0)
    em = fit_row_emulator("zero", "share", u, outcome=np.zeros((64, 5)))
    p = em.predict(u[:3])
    assert np.all(p > 0) and np.all(p < 0.01)
    assert np.isfinite(em.log_likelihood(u[:3], (1.0, 10.0))).all()


def test_quantity_row_gaussian_on_log10():
    """A quantity row's emulator recovers a log-linear mean and its residual spread (stated tolerance 20 %)."""
    rng = np.random.default_rng(7)
    u = sobol_design(2, 1024, 7)
    stat = 10.0 ** (1.0 + 2.0 * u[:, 0] + rng.normal(0.0, 0.1, 1024))
    em = fit_row_emulator("q", "quantity", u, statistic=stat, seed=0)
    assert abs(em.sd - 0.1) < 0.02
    assert np.abs(em.predict(np.array([[0.5, 0.5]])) - 2.0).max() < 0.05


def test_share_outcomes_must_be_flags():
    with pytest.raises(NksimInputError, match="0, 1 or NaN"):
        fit_row_emulator("x", "share", np.zeros((2, 1)), outcome=np.array([[0.5], [1.0]]))


def test_unit_cube_round_trip():
    fit = [FitParameter("nk.homing_rate", 0.5, 10.0, "log", "day-1"),
           FitParameter("nk.kill_probability", 0.2, 0.7, "linear", "1")]
    u = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    v = prior_unit_to_values(fit, u)
    assert np.allclose(v[0], [0.5, 0.2]) and np.allclose(v[1], [10.0, 0.7])
    assert math.isclose(v[2, 0], math.sqrt(5.0)) and math.isclose(v[2, 1], 0.45)
    assert np.allclose(values_to_prior_unit(fit, v), u)


def test_potency_increases_with_killing_and_saturates_at_recovery():
    from nksim import load_parameters

    base = load_parameters("default")
    lo = nk_potency({"nk.kill_probability": 0.2}, base)
    hi = nk_potency({"nk.kill_probability": 0.7}, base)
    assert 0 < lo < hi
    # with no lytic units and no recovery, a cell kills nothing beyond max_kills over the days
    capped = nk_potency({"nk.max_kills": 1.0, "nk.function_recovery_rate": 0.0, "nk.engagement_interval": 0.01},
                        base, days=10.0)
    assert math.isclose(float(capped), base["nk.competent_fraction"] * 1.0 / 10.0)


def test_potency_under_cytokine_activation_is_a_faster_engagement():
    """Activation a with boost b is the same potency as engagements every interval / (1 + a b) without cytokine."""
    from nksim import load_parameters

    base = load_parameters("default")
    plenty = {"nk.max_kills": 1000.0}  # lytic units do not cap the kills
    theta = {"nk.cytokine_killing_boost": 9.0, "nk.engagement_interval": 2.0, **plenty}
    assert float(nk_potency(theta, base)) == float(nk_potency({"nk.engagement_interval": 2.0, **plenty}, base))
    active = nk_potency(theta, base, activation=0.5)
    faster = nk_potency({"nk.engagement_interval": 2.0 / (1.0 + 9.0 * 0.5), **plenty}, base)
    assert math.isclose(float(active), float(faster), rel_tol=1e-12)
    assert float(active) > float(nk_potency(theta, base))


def test_observed_pair_of_registry_rows():
    from nksim.calibration.registry import load_registry

    reg = load_registry()
    for o in reg.targets():
        if not o.has_counterpart:
            continue
        k, n = observed_pair(o)
        if o.is_share:
            assert 0 <= k <= n and n == o.n
        else:
            assert n == 0 and math.isclose(10 ** k, o.value)


# ----------------------------------------------------------------------------- the nksim bank
_TINY = [FitParameter("nk.kill_probability", 0.2, 0.7, "linear", "1"),
         FitParameter("blasts.drug_sensitivity", 0.01, 0.5, "log", "1")]


def _tiny_registry(tmp_path):
    """A registry folder with one arm file (Romee's CIML arm: 10 cheap patients)."""
    import shutil
    from pathlib import Path

    from nksim.calibration.registry import load_registry

    src = Path(load_registry().directory)
    d = tmp_path / "trials"
    d.mkdir()
    shutil.copy(src / "romee2016_ciml.toml", d)
    return d


def test_bank_is_deterministic_and_resumable(tmp_path):
    """Same design -> identical outcomes with 1 or 2 workers, and when built in two runs (resumed)."""
    reg = _tiny_registry(tmp_path)
    kw = dict(parameters=_TINY, points=4, chunk=2, progress=False, registry=reg)
    a = run_bank(tmp_path / "a", workers=1, **kw)
    b = run_bank(tmp_path / "b", workers=2, **kw)
    # resumed: the first part only, then the rest
    c = tmp_path / "c"
    stop = RuntimeError("stop after the first part")

    def halt(i, n):
        raise stop

    with pytest.raises(RuntimeError):
        run_bank(c, workers=1, on_part=halt, **kw)
    assert sorted(p.name for p in c.glob("part-*.nc")) == ["part-00000.nc"]
    run_bank(c, workers=1, **kw)
    da, db, dc = open_bank(a), open_bank(b), open_bank(c)
    for ds in (db, dc):
        np.testing.assert_array_equal(da["outcome"].values, ds["outcome"].values)
        np.testing.assert_array_equal(da["theta"].values, ds["theta"].values)
    assert da.sizes["point"] == 4 and da.sizes["row"] >= 1
    assert [f.key for f in bank_parameters(da)] == [f.key for f in _TINY]
    flags = da["outcome"].values
    assert np.isin(flags[np.isfinite(flags)], (0.0, 1.0)).all()
    assert json.loads(da.attrs["lattice_overrides"])["lattice.cell_diameter"] == BANK_CELL_DIAMETER


def test_bank_upto_simulates_the_first_parts_only(tmp_path):
    reg = _tiny_registry(tmp_path)
    kw = dict(parameters=_TINY, points=6, chunk=2, progress=False, registry=reg)
    run_bank(tmp_path / "a", upto=3, **kw)     # the parts holding the first 3 points: 0 and 1
    assert sorted(p.name for p in (tmp_path / "a").glob("part-*.nc")) == ["part-00000.nc", "part-00001.nc"]
    assert open_bank(tmp_path / "a").sizes["point"] == 4
    run_bank(tmp_path / "a", **kw)
    assert open_bank(tmp_path / "a").sizes["point"] == 6


def test_bank_refuses_another_design_in_the_same_folder(tmp_path):
    reg = _tiny_registry(tmp_path)
    run_bank(tmp_path / "a", parameters=_TINY, points=2, chunk=2, progress=False, registry=reg)
    with pytest.raises(NksimInputError, match="another design"):
        run_bank(tmp_path / "a", parameters=_TINY[:1], points=2, chunk=2, progress=False, registry=reg)


def test_bank_model_match_accepts_only_parameters_added_at_their_neutral_value():
    """A model differing from a bank's recorded values only by mechanisms added since, off, is the bank's model.

    (Off: at nksim.quantities.NEUTRAL_VALUES.) One with such a mechanism on, or another value changed, is not.
    """
    from nksim.calibration.bank import bank_model_match
    from nksim.parameters import load_parameters, values_digest
    from nksim.quantities import NEUTRAL_VALUES, PARAMETERS

    p = load_parameters("default")
    v = p.values()
    for k, neutral in NEUTRAL_VALUES.items():
        spec = PARAMETERS[k]
        assert spec.lo <= neutral <= spec.hi and v[k] == neutral   # every mechanism off by default
    assert bank_model_match(p.digest(), p) == []
    before = {k: x for k, x in v.items() if k not in ("treg.nk_kill_suppression", "random_effects.nk_death_log_sd")}
    assert sorted(bank_model_match(values_digest(before), p)) == ["random_effects.nk_death_log_sd",
                                                                   "treg.nk_kill_suppression"]
    on = p.with_values({"treg.nk_kill_suppression": 0.5})
    assert bank_model_match(values_digest(before), on) is None            # the mechanism on: another model
    other = p.with_values({"nk.kill_probability": 0.61})
    assert bank_model_match(values_digest(before), other) is None         # a value of the old model changed
    assert bank_model_match(None, p) is None


def test_a_bank_begun_before_a_neutral_parameter_existed_is_completed_as_a_fresh_bank(tmp_path, monkeypatch):
    """A bank begun before treg.nk_kill_suppression existed is completed as if built today.

    Its first part's digest lacks the key; today's model holds it at 0: same design kept, same outcomes.
    """
    from nksim.parameters import ParameterSet, values_digest

    reg = _tiny_registry(tmp_path)
    kw = dict(parameters=_TINY, points=4, chunk=2, progress=False, registry=reg, workers=1)
    old_digest = ParameterSet.digest
    monkeypatch.setattr(ParameterSet, "digest", lambda self: values_digest(
        {k: x for k, x in self.values().items() if k != "treg.nk_kill_suppression"}))
    run_bank(tmp_path / "old", upto=2, **kw)                  # the first part, by the model before the key
    recorded = json.loads((tmp_path / "old" / "bank.json").read_text())["parameter_digest"]
    monkeypatch.setattr(ParameterSet, "digest", old_digest)
    run_bank(tmp_path / "old", **kw)                          # completed today
    run_bank(tmp_path / "fresh", **kw)
    a, b = open_bank(tmp_path / "old"), open_bank(tmp_path / "fresh")
    assert json.loads(a.attrs["design"])["parameter_digest"] == recorded != json.loads(b.attrs["design"])[
        "parameter_digest"]
    np.testing.assert_array_equal(a["outcome"].values, b["outcome"].values)
    np.testing.assert_array_equal(a["theta"].values, b["theta"].values)


def test_open_bank_refuses_a_foreign_part(tmp_path):
    reg = _tiny_registry(tmp_path)
    run_bank(tmp_path / "a", parameters=_TINY, points=2, chunk=2, progress=False, registry=reg)
    run_bank(tmp_path / "b", parameters=_TINY, points=2, chunk=2, progress=False, registry=reg, seed=5)
    (tmp_path / "b" / "part-00000.nc").replace(tmp_path / "a" / "part-00001.nc")
    with pytest.raises(NksimInputError, match="another design"):
        open_bank(tmp_path / "a")


def test_rows_added_to_the_registry_go_into_a_supplement_equal_to_a_fresh_bank(tmp_path):
    """A row added after the bank started is simulated alone and joined: as if built with it from the start.

    The supplement holds only the new row's protocol, at the same points and seeds per protocol, so
    open_bank gives the same outcomes as a bank built with both rows from the start.
    """
    import shutil

    from nksim.calibration.registry import load_registry

    reg = _tiny_registry(tmp_path)
    kw = dict(parameters=_TINY, points=4, chunk=2, progress=False, workers=1)
    run_bank(tmp_path / "grown", registry=reg, **kw)
    assert open_bank(tmp_path / "grown").sizes["row"] == 1
    shutil.copy(Path(load_registry().directory) / "cart_flucy_ld.toml", reg)
    run_bank(tmp_path / "grown", registry=reg, **kw)
    supplements = sorted((tmp_path / "grown").glob("rows-*"))
    assert len(supplements) == 1 and len(list(supplements[0].glob("part-*.nc"))) == 2
    run_bank(tmp_path / "fresh", registry=reg, **kw)
    grown, fresh = open_bank(tmp_path / "grown"), open_bank(tmp_path / "fresh")
    assert sorted(grown["row"].values) == sorted(fresh["row"].values) and grown.attrs["supplements"] == 1
    for r in fresh["row"].values:
        a, b = grown["outcome"].sel(row=r).values, fresh["outcome"].sel(row=r).values
        n = min(a.shape[1], b.shape[1])
        np.testing.assert_array_equal(a[:, :n], b[:, :n])
        assert np.isnan(a[:, n:]).all() and np.isnan(b[:, n:]).all()
    np.testing.assert_array_equal(grown["theta"].values, fresh["theta"].values)
    assert json.loads(grown.attrs["design"])["rows"] == [str(r) for r in grown["row"].values]
    # a supplement of another design (here: another seed) is refused by name
    d = json.loads((supplements[0] / "bank.json").read_text())
    (supplements[0] / "bank.json").write_text(json.dumps(dict(d, seed=d["seed"] + 1)))
    with pytest.raises(NksimInputError, match="row supplement of another design") as e:
        open_bank(tmp_path / "grown")
    assert "rows-" in str(e.value)


def test_a_bank_whose_row_left_the_registry_cannot_be_completed(tmp_path):
    reg = _tiny_registry(tmp_path)
    run_bank(tmp_path / "a", parameters=_TINY, points=2, chunk=2, progress=False, registry=reg)
    (reg / "romee2016_ciml.toml").unlink()
    from nksim.calibration.registry import load_registry

    shutil_src = Path(load_registry().directory) / "cart_flucy_ld.toml"
    (reg / "cart_flucy_ld.toml").write_text(shutil_src.read_text())
    with pytest.raises(NksimInputError, match="no longer has"):
        run_bank(tmp_path / "a", parameters=_TINY, points=2, chunk=2, progress=False, registry=reg)


# ----------------------------------------------------------------------------- the spec
def test_shipped_spec_loads():
    from pathlib import Path

    spec = load_joint_spec(Path(__file__).resolve().parents[1] / "calibration" / "joint" / "joint.toml")
    assert len(spec.parameters) >= 10 and spec.roles == ("target",)
    assert spec.lattice_overrides == {"lattice.cell_diameter": spec.cell_diameter}


@pytest.mark.parametrize("name", ["joint_drug_at_stage_a.toml", "joint_flat_drug_prior.toml"])
def test_sensitivity_specs_differ_from_the_main_one_only_in_the_drug_prior(name):
    """The sensitivity fits use the main spec's bank and rows: same design, one informative prior changed."""
    import dataclasses

    d = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    main, other = load_joint_spec(d / "joint.toml"), load_joint_spec(d / name)
    strip = dict(source="", informative_priors=())
    assert dataclasses.replace(main, **strip) == dataclasses.replace(other, **strip)
    assert [ip.key for ip in main.informative_priors] == ["blasts.drug_sensitivity"]
    assert main.informative_priors != other.informative_priors


ST_JUDE_TARGETS = ("rubnitz_engrafted", "rubnitz_engraftment_days")


#: Fits that freed one parameter, off in the model file, over the spec they extend:
#: (spec, the spec it extends, the parameter appended, its prior lo, hi, scale).
ONE_PARAMETER_MORE = [
    ("joint_seventh.toml", "joint_sixth.toml", "random_effects.nk_death_log_sd", 0.0, 1.5, "linear"),
    ("joint_tenth.toml", "joint.toml", "random_effects.il15_production_log_sd", 0.0, 1.0, "linear"),
    ("joint_eleventh.toml", "joint.toml", "treg.nk_kill_suppression", 0.0, 0.9, "linear"),
]


@pytest.mark.parametrize("name, base_name, key, lo, hi, scale", ONE_PARAMETER_MORE)
def test_spec_is_its_base_with_one_parameter_freed(name, base_name, key, lo, hi, scale):
    """A fit that freed one parameter: the spec it extends with that parameter appended, off in the model file.

    The seventh (death spread), tenth (IL-15 production spread, not adopted) and eleventh (Treg suppression of
    killing, exploratory) fits; off in the model file: every output as before unless a fit or a user sets it.
    """
    import dataclasses

    from nksim import load_parameters

    d = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    base, spec = load_joint_spec(d / base_name), load_joint_spec(d / name)
    assert [p.key for p in spec.parameters] == [p.key for p in base.parameters] + [key]
    added = spec.parameters[-1]
    assert (added.lo, added.hi, added.scale) == (lo, hi, scale)
    assert spec.parameters[:-1] == base.parameters
    strip = dict(source="", parameters=())
    assert dataclasses.replace(base, **strip) == dataclasses.replace(spec, **strip)
    assert load_parameters("default")[key] == 0.0


def test_main_spec_is_the_eighth_with_marrow_egress_freed():
    """The ninth fit (joint.toml): the eighth fit's spec (joint_eighth.toml) with nk.egress_rate freed."""
    import dataclasses

    from nksim import load_parameters

    d = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    eighth, ninth = load_joint_spec(d / "joint_eighth.toml"), load_joint_spec(d / "joint.toml")
    added = [p for p in ninth.parameters if p.key not in {q.key for q in eighth.parameters}]
    assert [p.key for p in added] == ["nk.egress_rate"]
    assert (added[0].lo, added[0].hi, added[0].scale) == (0.05, 1.0, "log")
    assert [p for p in ninth.parameters if p.key != "nk.egress_rate"] == list(eighth.parameters)
    strip = dict(source="", parameters=())
    assert dataclasses.replace(eighth, **strip) == dataclasses.replace(ninth, **strip)
    # the model file's value (2.5 days in marrow) lies inside the prior, and every output as before unless fitted
    assert 0.05 < load_parameters("default")["nk.egress_rate"] == 0.4 < 1.0


def test_eighth_spec_is_the_seventh_on_the_recalibrated_default():
    """The eighth fit (joint_eighth.toml): the seventh's spec on the default model.

    The default differs from the model the earlier fits read (model_before_eighth.toml) in the Tregs'
    IL-2-driven growth alone.
    """
    import dataclasses

    from nksim import load_parameters

    d = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    seventh, main = load_joint_spec(d / "joint_seventh.toml"), load_joint_spec(d / "joint_eighth.toml")
    assert main.model == "default" and Path(seventh.model).name == "model_before_eighth.toml"
    strip = dict(source="", model="")
    assert dataclasses.replace(seventh, **strip) == dataclasses.replace(main, **strip)
    new, old = load_parameters("default").values(), load_parameters(seventh.model).values()
    assert {k for k in new if new[k] != old[k]} == {"treg.il2_proliferation_max"}
    assert (old["treg.il2_proliferation_max"], new["treg.il2_proliferation_max"]) == (0.5, 1.18)
    for name in ("joint_sixth.toml", "joint_fifth.toml", "joint_fourth.toml"):
        assert load_joint_spec(d / name).model == seventh.model, name


def test_sixth_spec_is_the_fifth_with_the_st_jude_targets():
    """The sixth fit (joint_sixth.toml): the fifth's spec with the St Jude target rows in the likelihood."""
    import dataclasses

    d = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    fifth, main = load_joint_spec(d / "joint_fifth.toml"), load_joint_spec(d / "joint_sixth.toml")
    assert main.parameters == fifth.parameters
    fifth_excluded = dict(fifth.excluded)
    assert set(fifth_excluded) - set(dict(main.excluded)) == set(ST_JUDE_TARGETS)
    assert dict(main.observation_sd_log10)["rubnitz_engraftment_days"] == 0.2
    strip = dict(source="", excluded=(), observation_sd_log10=())
    assert dataclasses.replace(fifth, **strip) == dataclasses.replace(main, **strip)
    reg = load_registry()
    assert {o.name for o in reg.targets() if o.arm == "rubnitz2010_nkaml"} == set(ST_JUDE_TARGETS)


def test_fifth_spec_is_the_fourth_with_donor_nk_survival_freed():
    """The fifth fit: the fourth's spec plus the two survival effects, nk.death_rate over a wider prior."""
    import dataclasses

    d = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    fourth, main = load_joint_spec(d / "joint_fourth.toml"), load_joint_spec(d / "joint_fifth.toml")
    added = [p for p in main.parameters if p.key not in {q.key for q in fourth.parameters}]
    assert [p.key for p in added] == ["il2.survival_effect", "il15.exo_survival_effect"]
    death_fourth = next(p for p in fourth.parameters if p.key == "nk.death_rate")
    death = next(p for p in main.parameters if p.key == "nk.death_rate")
    assert (death_fourth.lo, death_fourth.hi) == (0.03, 0.11)
    assert (death.lo, death.hi, death.scale) == (0.03, 1.0, "log")
    survival = {"nk.death_rate", "il2.survival_effect", "il15.exo_survival_effect"}
    assert [p for p in main.parameters if p.key not in survival] == \
        [p for p in fourth.parameters if p.key != "nk.death_rate"]
    strip = dict(source="", parameters=())
    assert dataclasses.replace(fourth, **strip) == dataclasses.replace(main, **strip)


@pytest.mark.parametrize("text, key", [
    ("[bank]\npoints = 0\n[fit]\nparameters = ['nk.kill_probability']\n", "bank.points"),
    ("[bank]\ncell_diameter = 5.0\n[fit]\nparameters = ['nk.kill_probability']\n", "bank.cell_diameter"),
    ("[fit]\nparameters = ['nk.no_such']\n", "fit.parameters"),
    ("[fit]\nparameters = ['nk.kill_probability']\nbogus = 1\n", "fit.bogus"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.priors]\n'nk.kill_probability' = [0.5, 0.1]\n",
     "fit.priors.nk.kill_probability"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.priors]\n'nk.homing_rate' = [1.0, 2.0]\n",
     "fit.priors.nk.homing_rate"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.observation_sd_log10]\nno_such_row = 0.1\n",
     "fit.observation_sd_log10.no_such_row"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.observation_sd_log10]\ncart_ld_lymphocytes_d0 = -1\n",
     "fit.observation_sd_log10.cart_ld_lymphocytes_d0"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.excluded]\nromee_cr = ''\n", "fit.excluded"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.informative_priors]\n"
     "'nk.kill_probability' = {median = 0.5, q05 = 0.6, q95 = 0.65, source = 'x'}\n",
     "fit.informative_priors.nk.kill_probability"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.informative_priors]\n"
     "'nk.kill_probability' = {median = 0.5, q05 = 0.3, q95 = 0.65}\n",
     "fit.informative_priors.nk.kill_probability.source"),
    ("[fit]\nparameters = ['nk.kill_probability']\n[fit.informative_priors]\n"
     "'nk.homing_rate' = {median = 2, q05 = 1, q95 = 3, source = 'x'}\n",
     "fit.informative_priors.nk.homing_rate"),
])
def test_bad_spec_names_file_and_key(tmp_path, text, key):
    f = tmp_path / "joint.toml"
    f.write_text(text)
    with pytest.raises(NksimInputError) as e:
        load_joint_spec(f)
    assert key in str(e.value) and "joint.toml" in str(e.value)


def test_predictive_tails_are_the_shares_of_draws_beyond_the_observation():
    """Tail probabilities of an observation among predictive draws; Monte Carlo when the exact interval holds 5 %."""
    from scipy.stats import beta

    from nksim.calibration.joint_run import predictive_tails

    x = np.arange(100.0)  # draws 0..99
    t = predictive_tails(x, 97.0)
    assert t["p_at_least"] == 0.03 and t["p_at_most"] == 0.98 and t["tail"] == 0.03
    assert t["tail_lo"] == pytest.approx(beta.ppf(0.025, 3, 98))
    assert t["tail_hi"] == pytest.approx(beta.ppf(0.975, 4, 97))
    assert t["monte_carlo"]  # 3 of 100: the exact interval (0.6-8.5 %) holds 5 %
    far = predictive_tails(np.arange(1000.0), 990.0)  # 10 of 1000 (0.5-1.8 %): surely outside
    assert far["tail"] == 0.01 and not far["monte_carlo"]
    mid = predictive_tails(np.r_[np.arange(1000.0), np.nan], 500.0)  # the nan is dropped
    assert mid["p_at_least"] == 0.5 and mid["p_at_most"] == 0.501 and not mid["monte_carlo"]
    # the check's verdict (5th-95th percentile) agrees with the smaller tail against 5 % (off the boundary draws)
    q05, q95 = np.quantile(np.arange(1000.0), [0.05, 0.95], method="inverted_cdf")
    for obs, inside in ((20.5, False), (50.5, True), (500.5, True), (948.5, True), (950.5, False)):
        assert (q05 <= obs <= q95) == inside == (predictive_tails(np.arange(1000.0), obs)["tail"] > 0.05)
    assert predictive_tails(np.array([np.nan]), 1.0)["monte_carlo"]


def test_run_joint_end_to_end_on_a_tiny_bank(tmp_path):
    """Bank -> emulators -> posterior -> simulated PPC -> recovery -> report, on Romee's arm and 2 parameters."""
    from nksim.calibration.joint_run import run_joint
    from nksim.calibration.joint_spec import JointSpec
    from nksim.calibration.registry import load_registry

    reg_dir = _tiny_registry(tmp_path)
    run_bank(tmp_path / "bank", parameters=_TINY, points=48, chunk=16, progress=False, registry=reg_dir, workers=2)
    spec = JointSpec(source="test", model="default", roles=("target",), parameters=tuple(_TINY), points=48,
                     replicates=1, chunk=16, seed=1, cell_diameter=BANK_CELL_DIAMETER)
    s = run_joint(spec, tmp_path / "bank", tmp_path / "out", registry=load_registry(reg_dir), ppc_draws=3,
                  recovery_datasets=3, particles=300, recovery_particles=200, score_draws=50, workers=2,
                  progress=False)
    assert s["rows_fitted"] == ["romee_cr"] and s["ppc_rows"] == 1
    assert 0 <= s["recovery"]["covered"] <= s["recovery"]["pairs"] == 6
    for f in ("posterior.nc", "posterior_draws.csv", "posterior.csv", "ppc.csv", "recovery.nc", "recovery.csv",
              "emulators.csv", "summary.json", "REPORT.md"):
        assert (tmp_path / "out" / f).stat().st_size > 0, f
    from nksim.io import open_output

    post = open_output(tmp_path / "out" / "posterior.nc")
    assert post.sizes["draw"] == 300 and (post["u"] >= 0).all() and (post["u"] <= 1).all()
    assert "Recovery study" in (tmp_path / "out" / "REPORT.md").read_text()
    ppc = pd.read_csv(tmp_path / "out" / "ppc.csv")
    assert {"p_at_least", "p_at_most", "tail", "tail_lo", "tail_hi", "monte_carlo"} <= set(ppc.columns)
    assert s["ppc_monte_carlo"] == list(ppc.loc[ppc["monte_carlo"], "row"])
    assert "smaller tail P (95 % CI)" in (tmp_path / "out" / "REPORT.md").read_text()
    # the same without the recovery study and the scores, with the trial's outcome table under the posterior
    root = Path(__file__).resolve().parents[1] / "calibration"
    s2 = run_joint(spec, tmp_path / "bank", tmp_path / "out2", registry=load_registry(reg_dir), ppc_draws=2,
                   recovery_datasets=0, score_draws=0, particles=300, workers=2, progress=False,
                   outcome_table=(root / "ahmadvand2023.toml", root / "posterior" / "posterior.nc"), table_draws=4)
    assert s2["recovery"] == {} and not (tmp_path / "out2" / "recovery.nc").exists()
    names = [r["statistic"] for r in s2["outcome_table"]]
    assert {"n_pd_first", "n_response_first"} <= set(names)
    report = (tmp_path / "out2" / "REPORT.md").read_text()
    assert "## Recovery study\n\nNot run." in report and "outcome table" in report
    assert (tmp_path / "out2" / "outcome_table.csv").stat().st_size > 0


def test_run_joint_refuses_a_bank_of_another_model(tmp_path):
    """A bank simulated with another parameter set than the spec's model is refused before any fit.

    (A changed default, say: its emulators would not describe the model that the predictive checks simulate.)
    """
    from nksim.calibration.joint_run import run_joint
    from nksim.calibration.joint_spec import JointSpec
    from nksim.calibration.registry import load_registry

    reg_dir = _tiny_registry(tmp_path)
    run_bank(tmp_path / "bank", parameters=_TINY, points=4, chunk=4, progress=False, registry=reg_dir, workers=1)
    other = tmp_path / "other.toml"
    other.write_text('[meta]\nname = "other"\nextends = "default"\n\n[treg.il2_proliferation_max]\nvalue = 0.5\n'
                     'unit = "day-1"\ndescription = "x"\nsource = "test"\nprior = [0.1, 1.5]\n')
    kw = dict(roles=("target",), parameters=tuple(_TINY), points=4, replicates=1, chunk=4, seed=1,
              cell_diameter=BANK_CELL_DIAMETER)
    with pytest.raises(NksimInputError) as e:
        run_joint(JointSpec(source="test", model=str(other), **kw), tmp_path / "bank", tmp_path / "out",
                  registry=load_registry(reg_dir), progress=False)
    assert "bank.json" in str(e.value) and "parameter_digest" in str(e.value) and "other" in str(e.value)
    assert not (tmp_path / "out" / "posterior.nc").exists()


def test_informative_prior_is_the_stated_gaussian():
    """log_prior on the cube: 0 at the median, -1.645^2/2 at median -+ (q95 - q05)/2 (sampling scale)."""
    from pathlib import Path

    spec = load_joint_spec(Path(__file__).resolve().parents[1] / "calibration" / "joint" / "joint.toml")
    lp = spec.log_prior()
    keys = [f.key for f in spec.parameters]
    for ip in spec.informative_priors:
        j = keys.index(ip.key)
        f = spec.parameters[j]
        m, a, b = values_to_prior_unit([f], np.array([[ip.median], [ip.q05], [ip.q95]]))[:, 0]
        u = np.array([m, m - (b - a) / 2, m + (b - a) / 2])
        pts = np.full((3, len(keys)), 0.5)
        pts[:, j] = u
        v = lp(pts)
        assert abs(v[0]) < 1e-12
        assert np.allclose(v[1:], -0.5 * 1.6448536269514722 ** 2)


def test_prior_draws_follow_the_informative_prior():
    """Draws from the fit's prior (rejection) follow the informative prior.

    The informed parameter's 5/95 % quantiles are those of the Gaussian cut to the cube (scipy's
    truncnorm), +-0.01 on the cube with 20000 draws.
    """
    from pathlib import Path

    from scipy.stats import truncnorm

    from nksim.calibration.joint_run import _prior_draws

    spec = load_joint_spec(Path(__file__).resolve().parents[1] / "calibration" / "joint" / "joint.toml")
    u = _prior_draws(spec, 20000, np.random.default_rng(0))
    keys = [f.key for f in spec.parameters]
    for ip in spec.informative_priors:
        j = keys.index(ip.key)
        m, a, b = values_to_prior_unit([spec.parameters[j]], np.array([[ip.median], [ip.q05], [ip.q95]]))[:, 0]
        sd = (b - a) / (2 * 1.6448536269514722)
        want = truncnorm.ppf([0.05, 0.95], (0 - m) / sd, (1 - m) / sd, loc=m, scale=sd)
        got = np.quantile(u[:, j], [0.05, 0.95])
        assert np.all(np.abs(got - want) < 0.01), (got, want)
    other = [j for j, k in enumerate(keys) if k not in {ip.key for ip in spec.informative_priors}][0]
    assert abs(u[:, other].mean() - 0.5) < 0.02  # uninformed parameters stay uniform


def test_score_registry_under_posterior_draws(tmp_path):
    """Virtual trial r uses draw r mod n: one draw with every blast killed by the drugs, one with none."""
    from nksim import load_parameters
    from nksim.calibration.registry import load_registry
    from nksim.calibration.scoring import score_registry

    reg = load_registry(_tiny_registry(tmp_path))
    base = load_parameters("default")
    sets = [base.with_values({"blasts.drug_sensitivity": 0.01}), base.with_values({"blasts.drug_sensitivity": 0.5})]
    one = score_registry(sets[:1], reg, roles=("target",), replicates=4, progress=False,
                         lattice_overrides={"lattice.cell_diameter": 40.0})
    both = score_registry(sets, reg, roles=("target",), replicates=4, progress=False,
                          lattice_overrides={"lattice.cell_diameter": 40.0})
    assert one.attrs["posterior_draws"] == 1 and both.attrs["posterior_draws"] == 2
    # the second draw (strong chemotherapy effect) puts remissions into the predictive interval (half the
    # trials have none, so the posterior predictive's median may stay at 0: its upper end moves)
    assert float(one["simulated_hi"].sel(observation="romee_cr")) == 0.0
    assert float(both["simulated_hi"].sel(observation="romee_cr")) >= 0.3
    with pytest.raises(NksimInputError, match="sequence of parameter sets"):
        score_registry([base, "default"], reg, roles=("target",), replicates=2, progress=False)


def test_bank_interrupt_cancels_points_not_started(tmp_path, monkeypatch):
    """An interrupt in a chunk stops the bank at once: no further point is simulated and no part written."""
    import nksim.calibration.bank as bank_mod

    calls = []
    real = bank_mod.simulate_point

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bank_mod, "simulate_point", flaky)
    reg = _tiny_registry(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_bank(tmp_path / "a", parameters=_TINY, points=16, chunk=16, progress=False, registry=reg, workers=1)
    assert len(calls) <= 3  # the failing point, at most one the worker had already taken
    assert not list((tmp_path / "a").glob("part-*.nc"))
    # the same command completes the bank afterwards
    monkeypatch.setattr(bank_mod, "simulate_point", real)
    run_bank(tmp_path / "a", parameters=_TINY, points=16, chunk=16, progress=False, registry=reg, workers=1)
    assert open_bank(tmp_path / "a").sizes["point"] == 16


def test_outcome_table_under_joint_draws_sees_the_drugs_blast_kill():
    """Stage A's table simulated with joint draws: the joint value of a shared parameter overrides stage A's.

    The blasts' drug sensitivity at the top of its prior (0.5) against the bottom (0.01), everything else
    from the same stage-A draws and seeds: more CR/PR and less PD at the first assessment (9 patients,
    30 virtual trials each: a difference in the mean of at least one patient is far outside the noise).
    """
    from nksim.calibration.config import load_config
    from nksim.calibration.joint_table import combined_thetas, outcome_table_check, table_rows
    from nksim.calibration.model import CalibrationModel

    root = Path(__file__).resolve().parents[1] / "calibration"
    cfg, post = root / "ahmadvand2023.toml", root / "posterior" / "posterior.nc"
    model = CalibrationModel(load_config(cfg))
    th = combined_thetas(model, post, {"blasts.drug_sensitivity": np.array([0.5, 0.4])}, 5, seed=3)
    assert [t["blasts.drug_sensitivity"] for t in th] == [0.5, 0.4, 0.5, 0.4, 0.5]
    assert all(set(t) >= {f.key for f in model.config.fit} for t in th)
    assert len({t["blasts.net_growth_rate"] for t in th}) > 1      # stage A's draws vary
    hi = outcome_table_check(cfg, post, {"blasts.drug_sensitivity": np.array([0.5])}, draws=30, seed=3, workers=2)
    lo = outcome_table_check(cfg, post, {"blasts.drug_sensitivity": np.array([0.01])}, draws=30, seed=3, workers=2)
    assert hi["n_response_first"].mean() >= lo["n_response_first"].mean() + 1.0
    assert hi["n_pd_first"].mean() < lo["n_pd_first"].mean()
    rows = {r["statistic"]: r for r in table_rows(lo)}
    assert rows["n_response_first"]["observed"] == 0 and rows["n_pd_first"]["observed"] == 3


def _script(name: str):
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "calibration" / "joint"
    spec_ = importlib.util.spec_from_file_location(name, root / f"{name}.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    return mod, root


def test_heldout_levers_statistics():
    """The PRCC finds the one driver among independent inputs."""
    hl, _ = _script("heldout_levers")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(400, 4))
    y = np.exp(3 * x[:, 0]) - 2 * x[:, 2] ** 2 + rng.normal(0, 0.1, 400)   # monotone in x0, decreasing in x2
    y[:5] = np.nan                                                        # undefined draws are dropped
    rho = hl.partial_rank_correlation(x, y)
    assert rho[0] > 0.9 and rho[2] < -0.5 and abs(rho[1]) < 0.15 and abs(rho[3]) < 0.15
    assert np.isnan(hl.partial_rank_correlation(x[:6], y[:6] + 1)).all()   # fewer draws than inputs + 3


def test_binomial_tail_is_the_scorers_interval():
    """The binomial rows' tail (heldout_levers' p_rule): the scorer's predictive, its verdict, no double noise."""
    from nksim.calibration.registry import share_interval_between_trials, share_tail_between_trials

    flags = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])      # two draws, each share 1/2
    assert share_tail_between_trials(flags, 1, 2) == pytest.approx(0.75)       # P(X <= 1) = P(X >= 1) = 3/4
    assert share_tail_between_trials(np.array([[1.0], [1.0]]), 0, 4) == 0.0   # share 1: no trial has 0 of 4
    # draws that do not differ (every patient Bernoulli(1/2)): the count of 12 is binomial, P(X <= 2) = 1.93 %;
    # mixing binomials of 12 at each draw's simulated share would count the binomial noise twice (about 7.6 %)
    rng = np.random.default_rng(7)
    same = (rng.uniform(size=(12, 4000)) < 0.5).astype(float)
    assert share_tail_between_trials(same, 2, 12) == pytest.approx(stats.binom.cdf(2, 12, 0.5), abs=0.004)
    mixed = np.mean(stats.binom.cdf(2, 12, np.nanmean(same, axis=0)))
    assert mixed > 3 * share_tail_between_trials(same, 2, 12)
    # a tail above 5 % is exactly the scorer's binomial_90 verdict "inside" (share_interval_between_trials)
    for spread in (0.0, 0.15, 0.35):     # between-draw spread of the patient probability
        p = np.clip(rng.normal(0.6, spread, 300), 0.0, 1.0)
        flags = (rng.uniform(size=(10, 300)) < p).astype(float)
        flags[rng.uniform(size=flags.shape) < 0.1] = np.nan                       # patients that do not count
        _, lo, hi = share_interval_between_trials(flags, 12)
        for k in range(13):
            inside = lo * 12 - 1e-9 <= k <= hi * 12 + 1e-9
            assert (share_tail_between_trials(flags, k, 12) > 0.05) == inside, (spread, k)
    assert np.isnan(share_tail_between_trials(np.full((3, 4), np.nan), 1, 5))


def test_heldout_levers_on_the_committed_posterior(tmp_path):
    """calibration/joint/heldout_levers.py end to end on two cheap rows, one compared with another row (paired)."""
    import csv

    hl, root = _script("heldout_levers")
    rows = ["miller_lo_cy_detectable_d7", "miller_flu_il15_below_hi_cy_flu"]
    assert hl.main(rows + ["--draws", "4", "--workers", "1", "--out", str(tmp_path),
                           "--posterior", str(root / "results" / "posterior.nc")]) == 0
    with (tmp_path / "heldout_levers.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    k = len(load_joint_spec(root / "joint.toml").parameters)
    assert len(lines) == 2 * k and {r["row"] for r in lines} == set(rows)
    for r in lines:
        assert 0.0 <= float(r["p_rule"]) <= 1.0 and r["draws"] == "4" and math.isnan(float(r["rho"]))
        assert r["verdict"] in ("agrees", "disagrees") and r["monte_carlo"] in ("true", "false")
        assert float(r["median_lo"]) <= float(r["median_over_draws"]) <= float(r["median_hi"])
    per = json.loads((tmp_path / "heldout_levers.json").read_text())["per_draw"]
    assert set(per) == set(rows) | {"bachanova_il15_rise_cohort1"} and all(len(v) == 4 for v in per.values())
    below = [a < b for a, b in zip(per["miller_flu_il15_below_hi_cy_flu"], per["bachanova_il15_rise_cohort1"])]
    p = {r["row"]: float(r["p_rule"]) for r in lines}
    assert p["miller_flu_il15_below_hi_cy_flu"] == np.mean(below)
    for bad, key in ((["bachanova_cr_cohort1"], "rows"), (["no_such_row"], "rows"), (["--draws", "0"], "draws")):
        with pytest.raises(NksimInputError) as e:
            hl.main(bad + ["--out", str(tmp_path), "--posterior", str(root / "results" / "posterior.nc")])
        assert key in str(e.value)
    before = (tmp_path / "heldout_levers.csv").read_bytes()     # results already written are not replaced
    with pytest.raises(OutputExistsError) as e:
        hl.main(rows[:1] + ["--draws", "2", "--out", str(tmp_path), "--posterior",
                            str(root / "results" / "posterior.nc")])
    assert "heldout_levers.csv" in str(e.value) and "--overwrite" in str(e.value)
    assert (tmp_path / "heldout_levers.csv").read_bytes() == before
    assert hl.main(rows[:1] + ["--draws", "2", "--workers", "1", "--out", str(tmp_path), "--overwrite",
                               "--posterior", str(root / "results" / "posterior.nc")]) == 0
    with (tmp_path / "heldout_levers.csv").open() as fh:
        assert {r["row"] for r in csv.DictReader(fh)} == set(rows[:1])


def test_tail_check_of_a_target_row(tmp_path):
    """calibration/joint/tail_check.py: the tail probabilities of the observed count, on the committed posterior."""
    tc, root = _script("tail_check")
    assert tc.main(["bachanova_il2dt_cr", "--draws", "3", "--workers", "1", "--out", str(tmp_path),
                    "--posterior", str(root / "results" / "posterior.nc")]) == 0
    res = json.loads((tmp_path / "tail_bachanova_il2dt_cr.json").read_text())
    assert res["observed"] == "8/15" and res["draws"] == 3 and sum(res["counts"]) == 3 and len(res["counts"]) == 16
    k = np.repeat(np.arange(16), res["counts"])
    assert res["p_at_least_observed"] == np.mean(k >= 8) and res["p_at_most_observed"] == np.mean(k <= 8)
    lo, hi = res["p_at_least_observed_95ci"]
    assert lo <= res["p_at_least_observed"] <= hi
    assert res["inside_90"] == (min(np.mean(k >= 8), np.mean(k <= 8)) > 0.05)
    for bad, key in ((["no_such_row"], "row"), (["bachanova_il2dt_cr", "--draws", "0"], "draws")):
        with pytest.raises(NksimInputError) as e:
            tc.main(bad + ["--out", str(tmp_path), "--posterior", str(root / "results" / "posterior.nc")])
        assert key in str(e.value)
    before = (tmp_path / "tail_bachanova_il2dt_cr.json").read_bytes()   # not replaced without --overwrite
    with pytest.raises(OutputExistsError) as e:
        tc.main(["bachanova_il2dt_cr", "--draws", "2", "--out", str(tmp_path), "--posterior",
                 str(root / "results" / "posterior.nc")])
    assert "tail_bachanova_il2dt_cr.json" in str(e.value)
    assert (tmp_path / "tail_bachanova_il2dt_cr.json").read_bytes() == before


def test_whatif_split_promotes_only_held_out_rows(tmp_path):
    """calibration/joint/whatif_split.py: named held-out rows become targets in memory; other rows are refused."""
    ws, root = _script("whatif_split")
    reg = load_registry()
    row = "fehniger_detected_d14_on"
    mod = ws.promoted_registry(reg, [row])
    before = {o.name: o for o in reg.observations}
    after = {o.name: o for o in mod.observations}
    assert after[row].role == "target" and before[row].role == "held_out"
    assert all(after[n] == o for n, o in before.items() if n != row)        # nothing else changes
    assert len(mod.with_role("target")) == len(reg.with_role("target")) + 1
    assert load_registry().observation(row).role == "held_out"               # the files are untouched
    for bad in (["bachanova_cr_cohort1"], ["no_such_row"], []):
        with pytest.raises(NksimInputError) as e:
            ws.promoted_registry(reg, bad)
        assert e.value.key == "rows"
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "scores.nc").write_bytes(b"kept")                    # a fit already there is not replaced
    with pytest.raises(OutputExistsError):
        ws.main([row, "--out", str(tmp_path / "fit"), "--bank-from", str(tmp_path / "nobank")])
    assert (tmp_path / "fit" / "scores.nc").read_bytes() == b"kept"
    with pytest.raises(NksimInputError) as e:                                 # no bank to start from
        ws.main([row, "--out", str(tmp_path / "new"), "--bank-from", str(tmp_path / "nobank")])
    assert "bank.json" in str(e.value)
    report = tmp_path / "REPORT.md"                                           # the generated report is marked once
    report.write_text("# Title\n\nBody\n")
    ws.mark_report(report, [row])
    ws.mark_report(report, [row])
    lines = report.read_text().splitlines()
    assert lines[0] == "# Title" and lines[2].startswith("> **Exploratory what-if") and row in lines[2]
    assert report.read_text().count("Exploratory what-if") == 1 and lines[-1] == "Body"
