"""Morris sensitivity screen (nksim.calibration.screen): analytic case, determinism, dataset, real screen, CLI."""
from __future__ import annotations

import argparse
import math
from dataclasses import replace

import cf_units
import matplotlib
import numpy as np
import pytest
import xarray as xr

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nksim.calibration.config import FitParameter, load_config
from nksim.calibration.model import CalibrationModel
from nksim.calibration.screen import (
    SCREEN_OUTPUTS,
    cohort_outputs,
    morris_indices,
    run_screen,
    screen_parameters,
    screen_table,
)
from nksim.calibration.summaries import CATEGORY_INDEX
from nksim.errors import OutputExistsError
from nksim.plot import screen_figure
from nksim.quantities import PARAMETERS

SMALL_KEYS = ("blasts.net_growth_rate", "nk.rejection_rate", "il15.max_fold")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def smoke():
    return load_config("ahmadvand2023").smoke_version()


@pytest.fixture(scope="module")
def small_config(smoke):
    """The smoke config fitting (and screening) only three parameters."""
    fit = tuple(p for p in screen_parameters(smoke) if p.key in SMALL_KEYS)
    assert {f.key for f in fit} == set(SMALL_KEYS)
    return replace(smoke, fit=fit)


@pytest.fixture(scope="module")
def small_screen(small_config):
    return run_screen(small_config, trajectories=2, levels=4, virtual_trials=1, workers=1, progress=False,
                      params=small_config.fit)


# ----------------------------------------------------------------------------- analytic case
def _synthetic(theta):
    return {"y": 3.0 * theta["x0"] + 0.0 * theta["x1"] + theta["x2"] ** 2}


def test_morris_machinery_on_a_known_function():
    params = [FitParameter(f"x{i}", 0.0, 1.0, "linear", "1") for i in range(3)]
    ds = morris_indices(params, _synthetic, ["y"], trajectories=20, levels=4, seed=7)
    mu_star = ds["mu_star"].sel(output="y")
    # effects are per full prior range: y = 3 x0 over [0, 1] -> every elementary effect is exactly 3
    assert float(mu_star.sel(parameter="x0")) == pytest.approx(3.0, rel=1e-9)
    assert float(ds["sigma"].sel(parameter="x0", output="y")) == pytest.approx(0.0, abs=1e-9)
    assert float(mu_star.sel(parameter="x1")) == 0.0
    # x2^2: elementary effects (x + d)^2 - x^2 over d = 2/3 lie in [2/3, 4/3], mean 1 over the 4-level grid
    assert 0.6 <= float(mu_star.sel(parameter="x2")) <= 1.4
    assert float(ds["sigma"].sel(parameter="x2", output="y")) > 0  # non-linear
    assert ds["selected"].to_series().to_dict() == {"x0": 1, "x1": 0, "x2": 1}
    assert float(ds["mu_star_rel"].sel(parameter="x0", output="y")) == pytest.approx(1.0)
    assert ds.sizes["point"] == 20 * 4
    assert ds["X"].shape == (80, 3) and ds["Y"].shape == (80, 1)


def test_morris_effects_scale_with_the_prior_range_and_log_scale():
    params = [FitParameter("a", 0.0, 2.0, "linear", "1"), FitParameter("b", 1.0, 100.0, "log", "1"),
              FitParameter("c", 3.0, 10.0, "linear", "1", integer=True)]
    ds = morris_indices(params, lambda t: {"y": 3.0 * t["a"] + 5.0 * math.log10(t["b"])}, ["y"],
                        trajectories=6, levels=4, seed=1)
    # y = 3 a over a range of 2 -> 6 per range; 5 log10 b over 2 decades -> 10 per range
    assert float(ds["mu_star"].sel(parameter="a", output="y")) == pytest.approx(6.0)
    assert float(ds["mu_star"].sel(parameter="b", output="y")) == pytest.approx(10.0)
    assert float(ds["mu_star"].sel(parameter="c", output="y")) == 0.0
    assert set(np.unique(ds["theta"].sel(parameter="c").to_numpy())) <= set(range(3, 11))  # integers
    np.testing.assert_allclose(ds["theta"].sel(parameter="b"), 10.0 ** ds["X"].sel(parameter="b"))


def test_nan_outputs_are_replaced_and_counted():
    params = [FitParameter(f"x{i}", 0.0, 1.0, "linear", "1") for i in range(2)]

    def f(t):
        return {"y": t["x0"], "z": math.nan if t["x1"] > 0.5 else t["x1"], "w": math.nan}

    ds = morris_indices(params, f, ["y", "z", "w"], trajectories=4, levels=4, seed=3)
    n = ds["n_undefined"].to_series().to_dict()
    assert n["y"] == 0 and 0 < n["z"] < ds.sizes["point"] and n["w"] == ds.sizes["point"]
    assert np.isfinite(ds["mu_star"].sel(output="z")).all()
    assert np.isnan(ds["mu_star"].sel(output="w")).all()
    assert ds["selected"].sel(parameter="x0") == 1


# ----------------------------------------------------------------------------- parameters and outputs
def test_screen_parameters_cover_priors_and_fit(smoke):
    params = screen_parameters(smoke)
    keys = [p.key for p in params]
    assert len(keys) == len(set(keys))
    priors = smoke.base_parameters().priors()
    assert set(priors) <= set(keys) and {f.key for f in smoke.fit} <= set(keys)
    by = {p.key: p for p in params}
    for f in smoke.fit:  # the config's prior and scale win
        assert by[f.key] == f
    assert by["blasts.cycle_time"].scale == "log"  # 12-211 h
    assert by["nk.il15_proliferation_max"].scale == "linear"  # lo = 0
    assert by["nk.speed"].scale == "linear"  # 2-10
    assert by["random_effects.blast_growth_log_sd"].scale == "linear"  # config says linear although hi/lo = 20
    assert by["nk.max_kills"].integer and PARAMETERS["nk.max_kills"].integer
    assert by["nk.max_kills"].from_unit(5.4) == 5.0


def test_cohort_outputs_definitions(smoke):
    model = CalibrationModel(smoke)
    out = cohort_outputs(model, {}, seed=11, virtual_trials=1)
    assert tuple(out) == SCREEN_OUTPUTS
    pts = model.simulate_patients({}, seed=11, virtual_trials=1)
    cat = pts["category"].ravel()
    assert out["p_pd_first"] == pytest.approx(np.mean(cat == 0))
    prog = np.sum((cat == CATEGORY_INDEX["progressed_by_180"]) | (cat == CATEGORY_INDEX["progressed_after_180"]))
    stab = np.sum(cat == CATEGORY_INDEX["stable"])
    if prog + stab:
        assert out["p_progressed_given_sd"] == pytest.approx(prog / (prog + stab))
    else:
        assert math.isnan(out["p_progressed_given_sd"])
    assert out["log10_peak_chimerism_pbmc"] == pytest.approx(np.log10(np.median(pts["peak_donor_chimerism_pbmc"])))
    assert out["peak_day"] == pytest.approx(np.median(pts["peak_day"]))
    assert cohort_outputs(model, {}, seed=11, virtual_trials=1) == out  # deterministic for a seed


# ----------------------------------------------------------------------------- real (smoke) screen
def test_small_real_screen_sees_the_blast_growth_rate(small_screen):
    ds = small_screen
    assert list(ds["parameter"].to_numpy()) == list(SMALL_KEYS)
    assert list(ds["output"].to_numpy()) == list(SCREEN_OUTPUTS)
    assert ds.sizes["point"] == 2 * (len(SMALL_KEYS) + 1)
    g = ds["mu_star"].sel(parameter="blasts.net_growth_rate")
    assert float(g.sel(output="p_pd_first")) > 0 or float(g.sel(output="p_progressed_given_sd")) > 0
    assert int(ds["selected"].sel(parameter="blasts.net_growth_rate")) == 1
    assert ds.attrs["trajectories"] == 2 and ds.attrs["levels"] == 4 and ds.attrs["virtual_trials"] == 1
    assert ds.attrs["config_name"].endswith("-smoke")


def test_results_do_not_depend_on_workers(small_config, small_screen):
    ds2 = run_screen(small_config, trajectories=2, levels=4, virtual_trials=1, workers=2, progress=False,
                     params=small_config.fit)
    np.testing.assert_array_equal(ds2["X"].to_numpy(), small_screen["X"].to_numpy())
    np.testing.assert_array_equal(ds2["Y"].to_numpy(), small_screen["Y"].to_numpy())
    for v in ("mu_star", "mu_star_conf", "sigma", "mu", "selected"):
        np.testing.assert_array_equal(ds2[v].to_numpy(), small_screen[v].to_numpy())


def test_dataset_is_cf_annotated_and_round_trips(small_screen, tmp_path):
    from nksim.io import open_output, write_netcdf

    ds = small_screen
    for name, var in ds.variables.items():
        assert "long_name" in var.attrs, name
        if var.dtype.kind in "fiu":
            assert "units" in var.attrs, name
            cf_units.Unit(var.attrs["units"])
    assert ds.attrs["Conventions"] == "CF-1.8"
    for key in ("nksim_version", "git_commit", "method", "trajectories", "levels", "virtual_trials", "seed",
                "config_name"):
        assert key in ds.attrs, key
    assert list(ds["output_units"].to_numpy()) == ["1", "1", "1", "day", "1"]
    assert list(ds["selected"].attrs["flag_values"]) == [0, 1]
    path = write_netcdf(ds, tmp_path / "morris.nc")
    back = open_output(path)
    for v in ds.data_vars:
        np.testing.assert_array_equal(back[v].to_numpy(), ds[v].to_numpy())
        assert back[v].attrs.get("units") == ds[v].attrs.get("units"), v
    assert list(back["parameter"].to_numpy()) == list(ds["parameter"].to_numpy())
    assert list(back["scale"].to_numpy()) == list(ds["scale"].to_numpy())
    xr.testing.assert_allclose(back["mu_star"], ds["mu_star"])


def test_figure_and_table(small_screen):
    fig = screen_figure(small_screen)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == len(SCREEN_OUTPUTS)
    for ax in axes:
        assert "[" in ax.get_xlabel() and "[" in ax.get_ylabel()
        assert len(ax.patches) == len(SMALL_KEYS)
    assert "2 trajectories" in fig._suptitle.get_text() and "4 levels" in fig._suptitle.get_text()
    # bar lengths are mu_star_rel
    ax = axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    widths = {lab: p.get_width() for lab, p in zip(labels, ax.patches)}
    for k, w in widths.items():
        assert w == pytest.approx(float(np.nan_to_num(
            small_screen["mu_star_rel"].sel(parameter=k, output=SCREEN_OUTPUTS[0]))))
    text = screen_table(small_screen)
    assert all(k in text for k in SMALL_KEYS) and "selected" in text


# ----------------------------------------------------------------------------- CLI
def _parser():
    from nksim.calibration.cli_screen import add_screen_parser

    p = argparse.ArgumentParser(prog="nksim")
    add_screen_parser(p.add_subparsers(dest="command"))
    return p


def test_cli_refuses_to_overwrite(tmp_path):
    from nksim.calibration.cli_screen import cmd_screen

    (tmp_path / "morris.nc").write_text("old")
    args = _parser().parse_args(["screen", "ahmadvand2023", "--smoke", "--out", str(tmp_path), "--no-progress"])
    with pytest.raises(OutputExistsError):
        cmd_screen(args)
    assert (tmp_path / "morris.nc").read_text() == "old"


def test_cli_writes_results(tmp_path, capsys, monkeypatch):
    from nksim.calibration import screen
    from nksim.calibration.cli_screen import cmd_screen
    from nksim.io import open_output

    full = screen.screen_parameters
    monkeypatch.setattr(screen, "screen_parameters",
                        lambda config, model=None: [p for p in full(config, model) if p.key in SMALL_KEYS])
    args = _parser().parse_args(["screen", "ahmadvand2023", "--smoke", "--virtual-trials", "1", "--out",
                                 str(tmp_path), "--no-progress"])
    assert cmd_screen(args) == 0
    ds = open_output(tmp_path / "morris.nc")
    assert ds.attrs["trajectories"] == 2 and ds.attrs["config_name"] == "ahmadvand2023-smoke"
    assert list(ds["parameter"].to_numpy()) == list(SMALL_KEYS)
    assert (tmp_path / "morris.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "blasts.net_growth_rate" in out and "wrote" in out
    with pytest.raises(OutputExistsError):
        cmd_screen(args)


def test_cli_options_parse():
    a = _parser().parse_args(["screen", "cfg.toml", "--trajectories", "3", "--levels", "6", "--virtual-trials", "2",
                              "--workers", "2", "--smoke", "--overwrite"])
    assert (a.trajectories, a.levels, a.virtual_trials, a.workers, a.smoke, a.overwrite) == (3, 6, 2, 2, True, True)
    with pytest.raises(SystemExit):
        _parser().parse_args(["screen", "cfg.toml", "--trajectories", "1"])


def test_dose_factor_scales_only_nk_doses():
    """Screens at higher NK doses scale the trial's NK infusions and nothing else."""
    from nksim.protocol import load_protocol

    proto = load_protocol("ahmadvand2023")
    big = proto.with_nk_dose_factor(10.0)
    for p in proto.patients:
        for a, b in zip(proto.events_for(p), big.events_for(p)):
            assert (a.day, a.kind) == (b.day, b.kind)
            assert b.dose == (a.dose * 10.0 if a.kind == "nk_infusion" else a.dose)
    with pytest.raises(ValueError, match="dose factor"):
        proto.with_nk_dose_factor(0.0)
