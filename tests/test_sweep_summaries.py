"""Summaries: Kaplan-Meier on hand-made data, uncertainty, ranking, netCDF export, CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from _sweep_util import tiny, write_toml

from nksim.cli import main
from nksim.sweep import km_median, km_survival, summarize
from nksim.sweep.summaries import METRICS, rank_order, scenario_metrics

END = 365.0


def test_km_on_hand_made_data():
    # NaN = no progression, censored at END. Times 10, 20, 20, 40, NaN, NaN, NaN (n = 7), by hand:
    # S(10) = 6/7; S(20) = 6/7 * 4/6 = 4/7; S(40) = 4/7 * 3/4 = 3/7 (first S <= 0.5 -> median 40).
    ttp = np.array([10, 20, 20, 40, np.nan, np.nan, np.nan])
    assert km_median(ttp, END) == 40
    assert km_survival(ttp, END, 9.9) == 1.0
    assert km_survival(ttp, END, 15) == pytest.approx(6 / 7)
    assert km_survival(ttp, END, 20) == pytest.approx(4 / 7)
    assert km_survival(ttp, END, 270) == pytest.approx(3 / 7)
    # exactly one half: times 10, 30, NaN, NaN -> S(10) = 3/4, S(30) = 3/4 * 2/3 = 1/2 -> median 30
    assert km_median(np.array([10, 30, np.nan, np.nan]), END) == 30
    # median not reached; no event at all
    assert km_median(np.array([50, np.nan, np.nan]), END) == math.inf
    assert km_median(np.full(4, np.nan), END) == math.inf
    assert km_survival(np.full(4, np.nan), END, 270) == 1.0
    assert km_survival(np.array([270.0, np.nan]), END, 270) == 0.5  # progressed on day 270: not free at 270


def test_uncertainty_over_replicates_and_draws():
    # 2 draws x 2 patients x 2 replicates; PD at first assessment by hand
    pd = np.array([[[1, 0], [1, 0]], [[0, 0], [1, 1]]], dtype=float)
    o = {"pd_first": pd, "ttp": np.full(pd.shape, np.nan), "peak_nk": np.ones(pd.shape),
         "peak_pbmc": np.ones(pd.shape), "auc": np.arange(8.0).reshape(pd.shape)}
    m = scenario_metrics(o, END, 270)
    assert m["p_pd_first"] == 0.5
    per_rep = np.array([3 / 4, 1 / 4])  # replicate 0: 1,1,0,1 ; replicate 1: 0,0,0,1
    assert m["p_pd_first_mc_se"] == pytest.approx(np.std(per_rep, ddof=1) / np.sqrt(2))
    assert (m["p_pd_first_draw_lo"], m["p_pd_first_draw_hi"]) == (0.5, 0.5)
    assert (m["donor_nk_auc_draw_lo"], m["donor_nk_auc_draw_hi"]) == (1.5, 5.5)
    assert m["pfs_landmark"] == 1.0 and m["median_pfs"] == math.inf and math.isnan(m["median_pfs_mc_se"])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("sum")
    spec = write_toml(d / "s.toml", tiny(cohort={"draws": 2}, scenarios=[{"regimen": "hi_cy_flu", "gap": 3}]))
    out = d / "s.zarr"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    return out


def test_summarize_and_rank(store, capsys):
    ds = summarize(store)
    assert ds.sizes["scenario"] == 5 and ds.attrs["scenarios_incomplete"] == 0
    for v in ("p_pd_first", "pfs_landmark", "median_pfs", "peak_chimerism_nk", "donor_nk_auc"):
        assert ds[v].attrs["units"] and np.all(np.isfinite(ds[v].values) | np.isinf(ds[v].values))
        assert np.all(np.isfinite(ds[v + "_draw_lo"]) | np.isinf(ds[v + "_draw_lo"]))
    ref = ds.attrs["reference_scenario"]
    assert float(ds.pfs_landmark_diff.sel(scenario=ref)) == 0.0
    # the paired difference equals the difference of the KM landmark estimates (censoring at end only)
    np.testing.assert_allclose(ds.pfs_landmark_diff, ds.pfs_landmark - ds.pfs_landmark.sel(scenario=ref), atol=1e-12)
    # Hi-Cy/Flu (doses over 5 days) ending 3 days before the infusion: starts on day -7
    assert float(ds.start_day.sel(scenario=4)) == -7.0
    assert main(["summarize", str(store), "--rank-by", "p_pd_first", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "ranked by p_pd_first" in out
    assert len([ln for ln in out.splitlines() if "dose_split=" in ln or "regimen=" in ln]) == 3


def test_netcdf_export(store, tmp_path):
    nc, full = tmp_path / "summary.nc", tmp_path / "all.nc"
    assert main(["summarize", str(store), "--netcdf", str(nc), "--export", str(full)]) == 0
    s = xr.load_dataset(nc, engine="h5netcdf")
    assert "pfs_landmark" in s and s.attrs["plan_digest"]
    a = xr.load_dataset(full, engine="h5netcdf")
    assert a.donor_nk_blood.shape[:4] == (5, 2, 3, 2)
    assert main(["summarize", str(store), "--netcdf", str(nc)]) == 2  # refuses to overwrite


def test_cli_errors(tmp_path, capsys):
    bad = write_toml(tmp_path / "bad.toml", tiny(factors={"interval": [7, 1000]}))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "x.zarr"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "factors.interval[1]" in err and "allowed range [0, 180] day" in err
    assert not (tmp_path / "x.zarr").exists()
    assert main(["summarize", str(tmp_path)]) == 2
    assert "not a Zarr v3 store" in capsys.readouterr().err


def test_rank_order_with_tie_breaks():
    vals = {"pfs_landmark": [0.5, 0.8, 0.8, np.nan], "p_pd_first": [0.1, 0.3, 0.2, 0.0],
            "median_pfs": [100, np.inf, np.inf, 50]}
    ds = xr.Dataset({k: ("scenario", np.array(vals.get(k, [0.0] * 4), dtype=float)) for k in METRICS})
    assert list(rank_order(ds, "pfs_landmark")) == [2, 1, 0, 3]  # tie 0.8 broken by lower P(PD); NaN last
    assert list(rank_order(ds, "p_pd_first")) == [3, 0, 2, 1]
