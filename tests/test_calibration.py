"""Calibration machinery: early stopping, categories and censoring, distance, model, ABC, posterior I/O."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from nksim import load_parameters, load_protocol
from nksim.calibration.config import CALIBRATION_DIR, load_config
from nksim.calibration.data import default_observed
from nksim.calibration.distance import g_statistic, target_z, total_distance
from nksim.calibration.model import CalibrationModel, theta_seed
from nksim.calibration.summaries import (
    CATEGORIES,
    CATEGORY_INDEX,
    Slot,
    make_slots,
    observed_counts,
    simulated_category,
)
from nksim.engine import layout as L
from nksim.errors import NksimInputError, NksimWarning
from nksim.observables import pd_threshold, response_thresholds
from nksim.simulate import run_one

CONFIG = CALIBRATION_DIR / "ahmadvand2023.toml"
ASSESS = (28.0, 90.0, 180.0, 270.0, 365.0)


@pytest.fixture(scope="module")
def smoke():
    return load_config(CONFIG).smoke_version()


@pytest.fixture(scope="module")
def model(smoke):
    return CalibrationModel(smoke)


# ----------------------------------------------------------------------------- early stopping
def test_early_stop_is_the_full_run_truncated_after_a_pd_assessment():
    params = load_parameters("default").with_values({"lattice.side": 5, "lattice.voxel_side": 3200.0,
                                                      "blasts.net_growth_rate": 0.03})
    proto = load_protocol("ahmadvand2023")
    th = response_thresholds(params)
    stopped_any = False
    for pat in proto.patients[:6]:
        full = run_one(params, proto, pat, 3, 0)
        stop = run_one(params, proto, pat, 3, 0, stop_days=[28, 90, 180, 270])
        n = int(np.isfinite(stop.rec[:, L.R.marrow_blast_pct]).sum())
        assert np.array_equal(full.rec[:n], stop.rec[:n], equal_nan=True)
        assert np.array_equal(full.cnt[:n], stop.cnt[:n])
        thr = pd_threshold(full.rec[0, L.R.marrow_blast_pct], th)
        checks = [int(d - proto.start_day) for d in (28, 90, 180, 270)]
        first_pd = next((i for i in checks if full.rec[i, L.R.marrow_blast_pct] >= thr), None)
        if first_pd is None:
            assert n == full.rec.shape[0]  # never stopped
        else:
            stopped_any = True
            assert n == first_pd + 1  # stopped right after the assessment that established PD
            assert np.all(np.isnan(stop.rec[n:, L.R.marrow_blast_pct]))
    assert stopped_any


# ----------------------------------------------------------------------------- categories
def test_shipped_outcomes_give_the_trial_table():
    obs = default_observed()
    slots = make_slots(obs.outcomes, ASSESS)
    counts = dict(zip(CATEGORIES, observed_counts(slots).tolist()))
    assert counts == {"pd_first": 3, "response_first": 0, "progressed_by_180": 0, "progressed_after_180": 3,
                      "stable": 2, "censored": 1}
    by = {s.patient: s for s in slots}
    # event patients are followed to the study horizon; censored ones only as long as observed
    assert by["p02"].followup_day == 270 and by["p04"].followup_day == 270 and by["p08"].followup_day == 270
    assert by["p03"].followup_day == 28 and by["p03"].category == "censored"
    assert "p01" not in by


def _rec(blasts_at: dict[float, float], base: float = 40.0) -> np.ndarray:
    rec = np.full((380, L.N_R), np.nan)
    rec[0, L.R.marrow_blast_pct] = base
    for d, b in blasts_at.items():
        rec[int(d + 9), L.R.marrow_blast_pct] = b
    return rec


@pytest.mark.parametrize("blasts, follow, expected", [
    ({28: 60.0}, 270, "pd_first"),  # 60 >= 1.5 x 40
    ({28: 4.0}, 270, "response_first"),  # CR
    ({28: 45.0, 90: 50, 180: 61.0, 270: 70.0}, 270, "progressed_by_180"),  # PD first called on day 180
    ({28: 45.0, 90: 50, 180: 59.0, 270: 70.0}, 270, "progressed_after_180"),  # ... on day 270
    ({28: 45.0, 90: 50, 180: 55.0, 270: 59.0, 365: 80.0}, 270, "stable"),  # PD only after follow-up
    ({28: 45.0, 90: 80.0}, 28, "censored"),  # lost after the first assessment: later PD unseen
    ({28: 45.0, 90: 70.0}, 270, "progressed_by_180"),  # after early stop later rows are NaN
])
def test_simulated_category(blasts, follow, expected):
    th = response_thresholds(load_parameters("default"))
    slot = Slot("p04", 28.0, float(follow), "stable")
    assert simulated_category(_rec(blasts), -9.0, slot, ASSESS, th) == expected


# ----------------------------------------------------------------------------- distance
def test_g_statistic_is_the_likelihood_ratio_test_of_homogeneity():
    obs = np.array([3, 0, 3, 2, 1])
    assert g_statistic(obs, obs) == 0.0
    assert g_statistic(obs, 4 * obs) == pytest.approx(0.0, abs=1e-12)  # same proportions
    rng = np.random.default_rng(1)
    for _ in range(20):
        sim = rng.integers(0, 6, size=5)
        table = np.vstack([obs, sim])
        keep = table.sum(axis=0) > 0
        ref = chi2_contingency(table[:, keep], lambda_="log-likelihood", correction=False)[0]
        assert g_statistic(obs, sim) == pytest.approx(ref, rel=1e-10)
        assert g_statistic(obs, sim) == pytest.approx(g_statistic(sim, obs))
        assert g_statistic(obs, sim) >= 0


def test_target_z_and_total_distance():
    t = replace(default_observed().targets[0])  # 0.065 percent, log10 sd 0.5
    assert target_z(t.value, t) == 0.0
    assert target_z(t.value * 10 ** t.log10_sd, t) == pytest.approx(1.0)
    assert target_z(0.0, t) == 10.0 and target_z(np.nan, t) == 10.0
    obs = {"counts": np.array([3, 0, 3, 2, 1]), t.name: t.value}
    sim = {"counts": np.array([3, 0, 3, 2, 1]), t.name: t.value * 100.0}  # 2 decades = 4 sd
    assert total_distance(sim, obs, [t], 1.0) == pytest.approx(16.0 * t.weight)
    assert total_distance(sim, obs, [t], 0.0) == 0.0


# ----------------------------------------------------------------------------- model
def test_theta_seed_is_deterministic_and_order_free():
    a = theta_seed(5, {"x": 1.0, "y": 2.0})
    assert a == theta_seed(5, {"y": 2.0, "x": 1.0})
    assert a != theta_seed(5, {"x": 1.0, "y": 2.0000000001}) and a != theta_seed(6, {"x": 1.0, "y": 2.0})
    assert 0 <= a < 2**63


def test_model_simulation_is_a_function_of_theta(model, smoke):
    theta = {f.key: model.base[f.key] for f in smoke.fit}
    s1, s2 = model.simulate(theta), model.simulate(dict(reversed(list(theta.items()))))
    assert np.array_equal(s1["counts"], s2["counts"]) and s1[model.targets[0].name] == s2[model.targets[0].name]
    assert s1["counts"].sum() == len(model.slots) * smoke.virtual_trials
    pats = model.simulate_patients(theta, seed=1, virtual_trials=3)
    assert pats["category"].shape == (3, len(model.slots))
    # the censored slot (p03, lost after day 28) can only be censored, PD-first or a responder
    j = [s.patient for s in model.slots].index("p03")
    assert set(pats["category"][:, j]) <= {CATEGORY_INDEX[c] for c in ("censored", "pd_first", "response_first")}


def test_fast_blast_growth_drives_pd(model, smoke):
    """A known limit: very fast growth -> nearly everyone PD at day 28; very slow -> nearly nobody."""
    theta = {f.key: model.base[f.key] for f in smoke.fit}
    fast = model.simulate_patients({**theta, "blasts.net_growth_rate": 0.05, "random_effects.blast_growth_log_sd": 0.1,
                                    "blasts.baseline_pct": 20.0, "blasts.drug_sensitivity": 0.01},
                                   seed=2, virtual_trials=3)
    slow = model.simulate_patients({**theta, "blasts.net_growth_rate": 0.0005,
                                    "random_effects.blast_growth_log_sd": 0.1, "blasts.baseline_pct": 20.0,
                                    "random_effects.proliferative_fraction": 0.0},
                                   seed=2, virtual_trials=3)
    assert np.mean(fast["category"] == CATEGORY_INDEX["pd_first"]) >= 0.6
    assert np.mean(slow["category"] == CATEGORY_INDEX["pd_first"]) == 0.0
    assert np.all(np.isin(slow["category"], [CATEGORY_INDEX[c] for c in ("stable", "censored", "response_first")]))


# ----------------------------------------------------------------------------- config
def _write(tmp_path: Path, text: str) -> Path:
    shutil.copytree(CALIBRATION_DIR / "data", tmp_path / "data")
    p = tmp_path / "cal.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("edit, key, words", [
    (("[abc]", "[abc]\nbogus = 1"), "abc.bogus", "allowed keys"),
    (("virtual_trials = 1", "virtual_trials = 0"), "distance.virtual_trials", "[1, 1000]"),
    (('"lattice.side" = 5', '"lattice.side" = -5'), "simulator.lattice.side", "outside the allowed range [2, "),
    (('"lattice.side" = 5', '"lattice.sidee" = 5'), "simulator.lattice.sidee", "unknown key"),
    (('outcomes = "data/ahmadvand2023_outcomes.csv"', 'outcomes = "data/nothere.csv"'), "data.outcomes", "not found"),
    (('    "drugs.cy_emax",', '    "drugs.cy_emax",\n    "nk.speed_typo",'), "fit.parameters",
     "unknown parameter"),
    (('    "drugs.cy_emax",', '    "drugs.cy_emax",\n    "nk.refractory_time",'), "fit.parameters", "no prior"),
    (("[fit.scale]", '[fit.prior]\n"blasts.baseline_pct" = [-5.0, 90.0]\n\n[fit.scale]'),
     "fit.prior.blasts.baseline_pct", "lo < hi"),
    (('"drugs.cy_emax" = "log"', '"drugs.cy_emax" = "cubic"'), "fit.scale.drugs.cy_emax",
     "'linear' or 'log'"),
    (('progression_timing = "interval"', 'progression_timing = "exact"'), "distance.progression_timing", "'any'"),
])
def test_config_errors_name_file_and_key(tmp_path, edit, key, words):
    text = CONFIG.read_text()
    assert edit[0] in text
    p = _write(tmp_path, text.replace(edit[0], edit[1], 1))
    with pytest.raises(NksimInputError) as e:
        load_config(p)
    assert str(p) in str(e.value) and key in str(e.value) and words in str(e.value)


def test_shipped_config_and_smoke_version():
    cfg = load_config(CONFIG)
    # a quarter of the default region's area (half its side), on coarser voxels: documented in the config
    assert cfg.simulator_overrides["lattice.side"] * cfg.simulator_overrides["lattice.voxel_side"] == pytest.approx(
        0.5 * load_parameters("default")["lattice.side"] * load_parameters("default")["lattice.voxel_side"])
    s = cfg.smoke_version()
    assert s.is_smoke and s.abc.population_size < cfg.abc.population_size and s.fit == cfg.fit
    for f in cfg.fit:
        lo, hi = f.bounds
        assert f.from_unit(lo) == pytest.approx(f.lo) and f.from_unit(hi) == pytest.approx(f.hi)


# ----------------------------------------------------------------------------- ABC + outputs
def test_abc_single_core_is_reproducible(tmp_path, smoke):
    from nksim.calibration.abc import run_abc
    from nksim.calibration.posterior import history_dataset

    cfg = replace(smoke, abc=replace(smoke.abc, population_size=6, max_generations=2, max_simulations=60))
    posts = []
    for i in range(2):
        run = run_abc(cfg, tmp_path / f"abc{i}.db", workers=1, progress=False)
        posts.append(history_dataset(run.history, cfg, seconds=run.seconds, workers=1))
    a, b = posts
    for k in a.attrs["fitted_parameters"].split():
        name = k.replace(".", "__")
        assert np.array_equal(a[name].values, b[name].values, equal_nan=True)
        lo, hi = a[name].attrs["prior_lo"], a[name].attrs["prior_hi"]
        v = a[name].values[np.isfinite(a[name].values)]
        assert np.all((v >= lo * (1 - 1e-12)) & (v <= hi * (1 + 1e-12)))  # particles stay in the prior
    assert np.array_equal(a["weight"].values, b["weight"].values, equal_nan=True)
    w = a["weight"].isel(generation=-1).values
    assert np.nansum(w) == pytest.approx(1.0)
    assert np.all(np.diff(a["epsilon"].values) <= 0)  # the threshold never increases


def test_weighted_quantile_matches_unweighted():
    from nksim.calibration.posterior import weighted_quantile

    x = np.random.default_rng(0).normal(size=4001)
    q = weighted_quantile(x, np.ones_like(x), [0.05, 0.5, 0.95])
    assert q == pytest.approx(np.quantile(x, [0.05, 0.5, 0.95]), abs=1e-2)  # midpoint vs linear rule
    # duplicating a point is the same as doubling its weight
    y = np.array([1.0, 2.0, 3.0])
    assert weighted_quantile(y, np.array([1.0, 2.0, 1.0]), [0.5])[0] == pytest.approx(
        np.median([1.0, 2.0, 2.0, 3.0]))


def test_apply_to_model_rewrites_values_and_sources(tmp_path):
    from nksim.calibration.posterior import SUMMARY_COLUMNS, apply_to_model, write_summary_csv

    model = tmp_path / "m.toml"
    shutil.copy(Path(load_parameters("default").origin), model)
    rows = [{"parameter": "blasts.net_growth_rate", "unit": "day-1", "prior_lo": "0.0005", "prior_hi": "0.05",
             "scale": "log", "median": "0.0123", "q05": "0.004", "q25": "0.008", "q75": "0.02", "q95": "0.03",
             "n_particles": "100", "ess": "80"}]
    assert set(rows[0]) == set(SUMMARY_COLUMNS)
    write_summary_csv(rows, tmp_path / "s.csv")
    before = model.read_text()
    changed = apply_to_model(tmp_path / "s.csv", model, provenance="calibrated (test)")
    assert changed == ["blasts.net_growth_rate"]
    p = load_parameters(model)
    assert p["blasts.net_growth_rate"] == pytest.approx(0.0123)
    assert "calibrated (test): posterior median 0.0123" in p.parameters["blasts.net_growth_rate"].source
    assert p["blasts.cycle_time"] == load_parameters("default")["blasts.cycle_time"]
    assert model.read_text().count("\n") == before.count("\n")  # only lines replaced, comments kept
    rows[0]["median"] = "7.0"  # outside the schema range: the model file is left untouched
    write_summary_csv(rows, tmp_path / "s.csv")
    with pytest.raises(NksimInputError):
        apply_to_model(tmp_path / "s.csv", model, provenance="bad")
    assert load_parameters(model)["blasts.net_growth_rate"] == pytest.approx(0.0123)


def test_cli_smoke_end_to_end(tmp_path, capsys):
    import xarray as xr

    from nksim.cli import main

    out = tmp_path / "cal"
    assert main(["calibrate", str(CONFIG), "--smoke", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "posterior predictive check" in text and "ABC-SMC:" in text
    for f in ("abc.db", "posterior.nc", "posterior_summary.csv", "ppc_posterior.nc", "ppc_prior.nc", "report.png",
              "ppc.png", "diagnostics.png"):
        assert (out / f).stat().st_size > 0, f
    post = xr.open_dataset(out / "posterior.nc", engine="h5netcdf")
    assert post.attrs["Conventions"] == "CF-1.8"
    for v in post.data_vars.values():
        assert "units" in v.attrs and "long_name" in v.attrs
    ppc = xr.open_dataset(out / "ppc_posterior.nc", engine="h5netcdf")
    n = len(CalibrationModel(load_config(CONFIG).smoke_version()).slots)
    assert np.all(ppc["n_pd_first"] + ppc["n_response_first"] + ppc["n_followed_sd"] <= n)
    assert np.all(ppc["n_progressed_by_180"] + ppc["n_converted_after_180"] == ppc["n_progressed"])
    assert ppc["n_converted_after_180"].attrs["observed"] == 3 and ppc["n_followed_sd"].attrs["observed"] == 5
    assert ppc["median_conversion_day"].attrs["observed"] == 270
    assert ppc["conversion_call_day"].dims == ("draw", "patient") and ppc.sizes["patient"] == n
    for name in ("nkae_peak_chimerism", "cart_ld_lymphocyte_count"):
        assert name in ppc.attrs["statistics"].split()
    assert "conversion_call_day" not in ppc.attrs["statistics"].split()
    assert "median PD call day" in text or "simulated conversions" not in text
    # refuses to overwrite results unless asked; the earlier files survive
    mtime = (out / "posterior.nc").stat().st_mtime_ns
    assert main(["calibrate", str(CONFIG), "--smoke", "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "posterior.nc").stat().st_mtime_ns == mtime


def test_synthetic_trial_round_trips_its_categories(model, smoke):
    """Recovery's synthetic data: the observed table of a synthetic trial is the simulated one."""
    from nksim.calibration.recovery import synthetic_observed

    theta = {f.key: f.from_unit(np.mean(f.bounds)) for f in smoke.fit}
    obs = synthetic_observed(model, theta, seed=11)
    sim = model.simulate_patients(theta, seed=11, virtual_trials=1)
    m2 = CalibrationModel(smoke, obs)
    assert np.array_equal(m2.obs_counts, np.bincount(sim["category"][0], minlength=len(CATEGORIES)))
    assert [s.patient for s in m2.slots] == [s.patient for s in model.slots]
    # the censoring pattern is the real trial's: p03 stays censored-or-event, followed to day 28 only
    assert next(s for s in m2.slots if s.patient == "p03").followup_day == 28
    t = obs.targets[0]
    assert t.value == pytest.approx(model.summarise(sim)[t.name])


def test_user_series_become_targets(tmp_path):
    """Dropping per-patient chimerism series into [data] series adds series-based targets."""
    text = CONFIG.read_text().replace('# series = "my_measurements.csv"',
                                      'series = "data/examples/synthetic_series.csv"')
    assert 'series = "data/examples/synthetic_series.csv"' in text
    p = _write(tmp_path, text)
    cfg = load_config(p).smoke_version()
    with pytest.warns(NksimWarning, match="marrow_blast_pct"):  # the example also has blast series
        m = CalibrationModel(cfg)
    names = [t.name for t in m.targets]
    assert "series_peak_donor_chimerism_pbmc" in names and "nkae_peak_chimerism" in names
    t = next(t for t in m.targets if t.name == "series_peak_donor_chimerism_pbmc")
    frame = m.observed.series_frame()
    sub = frame[frame.quantity == "donor_chimerism_pbmc"]
    vals = np.where(sub.below_lod, 0.5 * sub.lod, sub.value)
    peaks = sub.assign(v=vals).groupby("patient")["v"].max()
    assert t.value == pytest.approx(float(np.median(peaks)))
    assert t.log10_sd >= 0.1 and t.window[0] >= 1
    theta = {f.key: m.base[f.key] for f in cfg.fit}
    s = m.simulate(theta)
    assert np.isfinite(m.distance(s)) and t.name in s


def test_default_model_takes_the_committed_posterior_medians():
    """models/default.toml's fitted values are the committed posterior's medians, with provenance."""
    from nksim.calibration.posterior import read_summary_csv

    rows = read_summary_csv(CALIBRATION_DIR / "posterior" / "posterior_summary.csv")
    params = load_parameters("default")
    # 0.6.0 split host.t_drug_sensitivity into per-drug sensitivities (docs/model.md 9.1): the config now fits
    # host.t_cy_sensitivity, whose default is derived from the committed median (its source says how), not equal to it
    renamed = {"host.t_drug_sensitivity": "host.t_cy_sensitivity"}
    assert {renamed.get(k, k) for k in rows} == {f.key for f in load_config(CONFIG).fit}
    for key, r in rows.items():
        if key in renamed:
            assert f"{float(r['median']):.4g}" in params.parameters[renamed[key]].source, key
            continue
        assert params[key] == pytest.approx(float(r["median"]), rel=1e-3), key
        assert float(r["q05"]) <= params[key] <= float(r["q95"])
        assert "posterior_summary.csv" in params.parameters[key].source and "90% CrI" in params.parameters[key].source
    assert params.status.startswith("calibrated")


def test_committed_posterior_is_consistent():
    import xarray as xr

    from nksim.calibration.posterior import summary_rows

    post = xr.open_dataset(CALIBRATION_DIR / "posterior" / "posterior.nc", engine="h5netcdf")
    rows = {r["parameter"]: r for r in summary_rows(post)}
    committed = (CALIBRATION_DIR / "posterior" / "posterior_summary.csv").read_text()
    for k, r in rows.items():
        assert f"{k},{r['unit']},{r['prior_lo']},{r['prior_hi']},{r['scale']},{r['median']}" in committed
    assert post.attrs["total_simulations"] > 1000 and float(post["epsilon"][-1]) < float(post["epsilon"][0])
    ppc = xr.open_dataset(CALIBRATION_DIR / "posterior" / "ppc_posterior.nc", engine="h5netcdf")
    # the trial's outcome table lies inside the posterior predictive 90% intervals
    for name in ("n_pd_first", "n_progressed", "n_followed_sd", "n_response_first"):
        assert ppc[name].attrs["observed_inside_90"] == 1, name


def test_committed_posterior_fits_the_conversion_timing():
    """Issue "Fit the timing the trial reports": the committed posterior's timing check passes.

    The trial's stable patients converted "at 9 months", encoded as
    (180, 270] in the data file: no conversion first called by day 180 and 3 of 5 after it lie
    inside the posterior predictive 90 % intervals, and the median day PD is first called among
    simulated converting SD patients (pooled over the posterior virtual trials) lies in (180, 270].
    """
    import xarray as xr

    from nksim.calibration.data import load_outcomes

    ppc = xr.open_dataset(CALIBRATION_DIR / "posterior" / "ppc_posterior.nc", engine="h5netcdf")
    for name in ("n_progressed_by_180", "n_converted_after_180"):
        assert ppc[name].attrs["observed_inside_90"] == 1, name
    window = {(o.progression_day_lo, o.progression_day_hi) for o in load_outcomes(
        CALIBRATION_DIR / "data" / "ahmadvand2023_outcomes.csv") if o.progressed and o.first_response == "SD"}
    assert window == {(180.0, 270.0)}
    calls = ppc["conversion_call_day"].values
    calls = calls[np.isfinite(calls)]
    assert calls.size >= 50  # enough conversions over the posterior draws for a median
    assert 180.0 < np.median(calls) <= 270.0


def test_observed_and_simulated_categories_use_one_rule():
    """A lost patient seen again in SD at day 90/180 is 'stable' (not 'censored'), like its twin."""
    from nksim.calibration.data import PatientOutcome
    from nksim.calibration.summaries import observed_category

    th = response_thresholds(load_parameters("default"))
    base = dict(patient="p03", evaluable=True, dose_group="g1", first_response="SD", first_assessment_day=28.0,
                progression_day_lo=None, progression_day_hi=None, source="s", confidence="assumption", note="")
    lost_late = PatientOutcome(progressed=None, last_followup_day=180.0, lost_to_follow_up=True, **base)
    lost_early = PatientOutcome(progressed=None, last_followup_day=60.0, lost_to_follow_up=True, **base)
    short_sd = PatientOutcome(progressed=False, last_followup_day=28.0, lost_to_follow_up=False, **base)
    for o, expected in ((lost_late, "stable"), (lost_early, "censored"), (short_sd, "censored")):
        assert observed_category(o, ASSESS) == expected
        (slot,) = make_slots([o], ASSESS)
        assert slot.category == expected
        # a twin that stays SD gets the same category
        assert simulated_category(_rec({28: 45.0, 90: 46.0, 180: 47.0, 270: 48.0}), -9.0, slot, ASSESS, th) == expected


def test_simulated_category_refuses_a_missing_first_assessment():
    th = response_thresholds(load_parameters("default"))
    with pytest.raises(ValueError, match="first assessment"):
        simulated_category(_rec({90: 45.0}), -9.0, Slot("p04", 28.0, 270.0, "stable"), ASSESS, th)


def test_kernel_stop_rule_gives_cr_and_pr_precedence_over_pd():
    """Early stopping follows classify_response: no stop on a day that is called CR or PR."""
    from nksim.engine.kernel import is_pd, pd_threshold_pct
    from nksim.observables import RESPONSE_CODES

    # overlapping thresholds the schema allows: PD at any rise (0 %, +0 points)
    params = load_parameters("default").with_values({"response.pd_relative_rise": 0.0,
                                                      "response.pd_absolute_rise": 0.0,
                                                      "response.pr_min_fall": 0.0})
    th = response_thresholds(params)
    kp = np.zeros(L.N_P)
    kp[L.KP.pd_relative_rise_fraction] = 0.0
    kp[L.KP.response_pd_absolute_rise] = 0.0
    kp[L.KP.response_pd_absolute_below] = th["pd_absolute_below"]
    kp[L.KP.response_cr_blast_pct] = th["cr_blast_pct"]
    kp[L.KP.response_pr_blast_pct] = th["pr_blast_pct"]
    kp[L.KP.pr_min_fall_fraction] = 0.0
    for b0, b in ((3.0, 4.0), (3.0, 6.0), (20.0, 20.0), (20.0, 30.0), (40.0, 60.0), (40.0, np.nan)):
        thr = pd_threshold_pct(kp, b0)
        assert thr == pytest.approx(float(pd_threshold(b0, th)))
        code = classify_response_one(b, b0, th)
        assert is_pd(kp, b, b0, thr) == (code == RESPONSE_CODES["PD"]), (b0, b, code)


def classify_response_one(b, b0, th):
    from nksim.observables import classify_response

    return int(classify_response(np.array([b]), np.array([b0]), th)[0])


@pytest.mark.parametrize("edit, field", [
    # SD at day 28 cannot 'progress' on or before day 28
    (("p04,true,g1,SD,28,true,180,270", "p04,true,g1,SD,28,true,0,28"), "progression_day"),
    # lost to follow-up and seen to progress contradict each other
    (("p04,true,g1,SD,28,true,180,270,,false", "p04,true,g1,SD,28,true,180,270,,true"), "lost_to_follow_up"),
])
def test_outcome_contradictions_are_errors(tmp_path, edit, field):
    from nksim.calibration.data import load_observed

    src = (CALIBRATION_DIR / "data" / "ahmadvand2023_outcomes.csv").read_text()
    assert edit[0] in src, edit[0]
    p = tmp_path / "o.csv"
    p.write_text(src.replace(edit[0], edit[1]))
    with pytest.raises(NksimInputError) as e:
        load_observed(p)
    assert str(p) in str(e.value) and field in str(e.value) and "row" in str(e.value)


# ----------------------------------------------------------------------------- time to conversion
def _sd_outcome(pid: str, lo: float | None, hi: float | None, **kw):
    from nksim.calibration.data import PatientOutcome

    base = dict(patient=pid, evaluable=True, dose_group="g1", first_response="SD", first_assessment_day=28.0,
                progressed=hi is not None, progression_day_lo=lo, progression_day_hi=hi,
                last_followup_day=None if hi is not None else 270.0, lost_to_follow_up=False, source="s",
                confidence="assumption", note="")
    base.update(kw)
    return PatientOutcome(**base)


def test_observed_progression_intervals_fall_in_one_bin():
    from nksim.calibration.summaries import COARSE_CATEGORIES, observed_category

    assert observed_category(_sd_outcome("p04", 28.0, 180.0), ASSESS) == "progressed_by_180"
    assert observed_category(_sd_outcome("p04", 90.0, 180.0), ASSESS) == "progressed_by_180"
    assert observed_category(_sd_outcome("p04", None, 90.0), ASSESS) == "progressed_by_180"  # lo = first assessment
    assert observed_category(_sd_outcome("p04", 180.0, 270.0), ASSESS) == "progressed_after_180"
    assert observed_category(_sd_outcome("p04", 28.0, 270.0), ASSESS, "any") == "progressed"
    outs = [_sd_outcome("p04", 180.0, 270.0), _sd_outcome("p05", 28.0, 270.0)]
    # a straddling interval is an error that names the file, the data row and the patient ...
    with pytest.raises(NksimInputError) as e:
        make_slots(outs, ASSESS, "my_outcomes.csv")
    msg = str(e.value)
    assert "my_outcomes.csv" in msg and "data row 2" in msg and "p05" in msg and "(28, 270]" in msg
    assert 'progression_timing = "any"' in msg
    # ... unless the progression bins are merged ("any"): every progression is then one category
    slots = make_slots(outs, ASSESS, "my_outcomes.csv", timing="any")
    assert [s.category for s in slots] == ["progressed", "progressed"]
    assert dict(zip(COARSE_CATEGORIES, observed_counts(slots, "any").tolist()))["progressed"] == 2


def test_looser_reading_needs_the_merged_table(tmp_path):
    from nksim.calibration.summaries import COARSE_CATEGORIES

    text = CONFIG.read_text().replace('outcomes = "data/ahmadvand2023_outcomes.csv"',
                                      'outcomes = "data/ahmadvand2023_outcomes_any_time.csv"')
    p = _write(tmp_path, text)
    with pytest.raises(NksimInputError) as e:
        CalibrationModel(load_config(p).smoke_version())
    assert "ahmadvand2023_outcomes_any_time.csv" in str(e.value) and "data row 4" in str(e.value)
    assert "p04" in str(e.value)
    p = _write(tmp_path / "any", text.replace('progression_timing = "interval"', 'progression_timing = "any"'))
    m = CalibrationModel(load_config(p).smoke_version())
    assert m.categories == COARSE_CATEGORIES
    assert dict(zip(m.categories, m.obs_counts.tolist())) == {"pd_first": 3, "response_first": 0, "progressed": 3,
                                                              "stable": 2, "censored": 1}
    # simulated per-patient categories stay fine; the table merges the two progression bins
    cat = np.array([[CATEGORY_INDEX["progressed_by_180"], CATEGORY_INDEX["progressed_after_180"],
                     CATEGORY_INDEX["stable"]]])
    assert m.table_counts(cat).tolist() == [0, 0, 2, 1, 0]


def test_simulated_conversion_day_is_the_first_pd_call():
    from nksim.calibration.summaries import simulated_outcome

    th = response_thresholds(load_parameters("default"))
    rec = np.full((380, L.N_R), np.nan)
    days = np.arange(-9, 371)
    rec[:, L.R.marrow_blast_pct] = np.where(days < 28, 40.0, 40.0 + 0.1 * (days - 28))  # crosses 60 on day 228
    slot = Slot("p04", 28.0, 270.0, "progressed_after_180")
    assert simulated_outcome(rec, -9.0, slot, ASSESS, th) == ("progressed_after_180", 270.0, 228.0)
    rec[:, L.R.marrow_blast_pct] = np.where(days < 28, 40.0, 40.0 + 0.5 * (days - 28))  # crosses 60 on day 68
    assert simulated_outcome(rec, -9.0, slot, ASSESS, th) == ("progressed_by_180", 90.0, 68.0)
    # followed only to day 180: a crossing on day 228 is not seen -> stable, no conversion day
    rec[:, L.R.marrow_blast_pct] = np.where(days < 28, 40.0, 40.0 + 0.1 * (days - 28))
    cat, call, cross = simulated_outcome(rec, -9.0, replace(slot, followup_day=180.0), ASSESS, th)
    assert cat == "stable" and np.isnan(call) and np.isnan(cross)


def test_ppc_statistics_on_synthetic_inputs():
    from types import SimpleNamespace

    from nksim.calibration.ppc import count_statistics, trial_statistics
    from nksim.calibration.summaries import COARSE_CATEGORIES

    outs = [_sd_outcome("p04", 180.0, 270.0), _sd_outcome("p05", 180.0, 270.0), _sd_outcome("p07", 90.0, 180.0),
            _sd_outcome("p08", None, None, progressed=False)]
    slots = make_slots(outs, ASSESS)
    fake = SimpleNamespace(categories=CATEGORIES, slots=slots, observed=SimpleNamespace(outcomes=outs), targets=())
    obs = trial_statistics(fake, {"counts": observed_counts(slots)})
    assert obs["n_converted_after_180"] == 2 and obs["n_progressed_by_180"] == 1 and obs["n_progressed"] == 3
    assert obs["n_followed_sd"] == 4 and obs["median_conversion_day"] == 270.0  # median of 270, 270, 180
    # simulated: two twins called PD on day 90 and 270, the others stable
    counts = np.array([0, 0, 1, 1, 2, 0])
    sim = trial_statistics(fake, {"counts": counts}, {"pd_call_day": np.array([[90.0, np.nan, 270.0, np.nan]])})
    assert sim["n_converted_after_180"] == 1 and sim["n_progressed"] == 2 and sim["median_conversion_day"] == 180.0
    none = trial_statistics(fake, {"counts": np.array([0, 0, 0, 0, 4, 0])}, {"pd_call_day": np.full((1, 4), np.nan)})
    assert np.isnan(none["median_conversion_day"]) and none["n_converted_after_180"] == 0
    # the merged table has no split statistics
    assert "n_converted_after_180" not in count_statistics(COARSE_CATEGORIES)
    assert {"n_progressed", "n_followed_sd"} <= set(count_statistics(COARSE_CATEGORIES))


# ----------------------------------------------------------------------------- analogue protocols
ANALOGUE_TARGETS = '''
[[target]]
name = "hcf_peak"
quantity = "peak_donor_chimerism_pbmc"
statistic = "median"
value = 1.0
unit = "percent"
log10_sd = 0.5
window = [1, 40]
protocol = "hi_cy_flu"
source = "test"
confidence = "synthetic"

[[target]]
name = "hcf_lymphocytes"
quantity = "lymphocyte_count"
statistic = "median"
value = 100.0
unit = "uL-1"
log10_sd = 0.4
window = [0, 0]
protocol = "hi_cy_flu"
source = "test"
confidence = "synthetic"

[[target]]
name = "trial_peak"
quantity = "peak_donor_chimerism_pbmc"
statistic = "median"
value = 0.1
unit = "percent"
log10_sd = 0.5
window = [1, 28]
protocol = "ahmadvand2023"
source = "test"
confidence = "synthetic"
'''


def test_analogue_targets_are_simulated_with_their_own_protocol(tmp_path, smoke):
    from nksim.calibration.summaries import lymphocyte_count

    p = _write(tmp_path, CONFIG.read_text())
    (tmp_path / "data" / "analogue_chimerism.toml").write_text(ANALOGUE_TARGETS)
    cfg = load_config(p).smoke_version()
    m = CalibrationModel(cfg)
    assert m.target_protocol == {"hcf_peak": "hi_cy_flu", "hcf_lymphocytes": "hi_cy_flu", "trial_peak": None}
    hcf = m.analogue_protocols["hi_cy_flu"]
    assert hcf.end_day == 40 and len(hcf.patients) == 10  # to the end of the longest window only
    assert m.window_end == 28  # the analogue window does not delay early stopping of the trial's twins
    theta = {f.key: m.base[f.key] for f in cfg.fit}
    pts = m.simulate_patients(theta, seed=5, virtual_trials=2)
    assert pts["target:hcf_peak"].shape == (2, 10) and pts["target:trial_peak"].shape == (2, len(m.slots))
    # every patient of the protocol, once per virtual trial, with the trial's seed derivation
    params = m.parameters(theta)
    for r in range(2):
        for k, pat in enumerate(hcf.patients[:3]):
            rec = run_one(params, hcf, pat, 5, r).rec
            assert pts["target:hcf_lymphocytes"][r, k] == lymphocyte_count(rec, hcf.start_day, 0.0)
            assert pts["target:hcf_lymphocytes"][r, k] == pytest.approx(
                rec[6, L.R.host_nk_blood] + rec[6, L.R.host_t_blood] + rec[6, L.R.host_treg_blood]
                + rec[6, L.R.donor_nk_blood])
    s1, s2 = m.simulate(theta), m.simulate(dict(reversed(list(theta.items()))))
    assert s1["hcf_peak"] == s2["hcf_peak"] and s1["hcf_lymphocytes"] == s2["hcf_lymphocytes"]
    assert s1["hcf_lymphocytes"] > 0 and np.isfinite(m.distance(s1))


def test_shipped_analogue_targets_use_the_analogue_protocols(model):
    assert model.target_protocol == {"nkae_peak_chimerism": "nkae_consolidation",
                                     "cart_ld_lymphocyte_count": "cart_flucy_ld",
                                     "bachanova_expansion_share": "bachanova2014_hi_cy_flu"}
    assert model.trial_targets == ()
    assert model.analogue_protocols["nkae_consolidation"].end_day == 28
    assert model.analogue_protocols["cart_flucy_ld"].end_day == 1  # the window is day 0 (run to day 1)
    assert model.analogue_protocols["bachanova2014_hi_cy_flu"].end_day == 14  # the day-14 share: recorded to day 14
    # each analogue is simulated with its own product
    assert model.analogue_protocols["bachanova2014_hi_cy_flu"].nk_product == "fresh"
    assert model.analogue_protocols["nkae_consolidation"].nk_product == "expanded"


def test_observed_and_simulated_twins_share_the_progression_bins():
    """A twin whose blasts cross in the same assessment interval as its patient's progression gets its category."""
    from nksim.calibration.summaries import simulated_outcome

    th = response_thresholds(load_parameters("default"))
    days = np.arange(-9, 371)
    for (lo, hi), slope in (((28.0, 90.0), 0.5), ((90.0, 180.0), 0.2), ((180.0, 270.0), 0.1)):
        (slot,) = make_slots([_sd_outcome("p04", lo, hi)], ASSESS)
        rec = np.full((380, L.N_R), np.nan)
        rec[:, L.R.marrow_blast_pct] = np.where(days < 28, 40.0, 40.0 + slope * (days - 28))  # crosses 60
        cat, call, cross = simulated_outcome(rec, -9.0, slot, ASSESS, th)
        assert cat == slot.category and call == hi and lo < cross <= hi
