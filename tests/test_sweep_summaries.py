"""Summaries: Kaplan-Meier on hand-made data, uncertainty, ranking, netCDF export, CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from _sweep_util import constructed_store, tiny, tiny_spec, write_toml

from nksim.cli import main
from nksim.observables import RESPONSE_CODES
from nksim.sweep import km_median, km_survival, summarize
from nksim.sweep.summaries import CONTRASTS, METRICS, Z95, rank_order, scenario_metrics

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
    cr = np.array([[[0, 1], [0, 1]], [[1, 1], [0, 0]]], dtype=float)  # never CR where PD
    o = {"pd_first": pd, "cr_first": cr, "ttp": np.full(pd.shape, np.nan), "peak_nk": np.ones(pd.shape),
         "peak_pbmc": np.ones(pd.shape), "auc": np.arange(8.0).reshape(pd.shape)}
    m = scenario_metrics(o, END, 270)
    assert m["p_pd_first"] == 0.5
    assert m["p_cr_first"] == 0.5  # replicate 0: 0,0,1,0 ; replicate 1: 1,1,1,0 ; draw 0: 2/4, draw 1: 2/4
    assert m["p_cr_first_mc_se"] == pytest.approx(np.std([1 / 4, 3 / 4], ddof=1) / np.sqrt(2))
    assert (m["p_cr_first_draw_lo"], m["p_cr_first_draw_hi"]) == (0.5, 0.5)
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


def test_p_cr_first_is_the_share_in_cr_at_the_first_assessment(tmp_path):
    """A constructed store whose response codes are known: p_cr_first is the CR share; its contrast the difference."""
    # scenario 0 = the trial's schedule (gap 7, the reference); scenario 1 = gap 14. 2 draws x 3 patients x 2 replicates
    spec = tiny_spec(sweep={"design": "list"}, factors=None, cohort={"draws": 2, "patients": 3, "replicates": 2},
                     scenarios=[{"gap": 7}, {"gap": 14}])
    cr, pr, pd = RESPONSE_CODES["CR"], RESPONSE_CODES["PR"], RESPONSE_CODES["PD"]

    def first(s, d, p, r):  # response code at the first assessment
        if s == 0:
            return cr if p == 0 else pd  # 1/3 in CR, whatever the draw and replicate
        return cr if (p + r + d) % 2 == 0 else (pr if p == 1 else pd)  # CR in 6 of 12 simulations

    def fill(plan, s, d, ps, rs):
        resp = np.full((ps.stop - ps.start, rs.stop - rs.start, len(plan["assessment_days"])), RESPONSE_CODES["SD"])
        for i, p in enumerate(range(ps.start, ps.stop)):
            for j, r in enumerate(range(rs.start, rs.stop)):
                resp[i, j, 0] = first(s, d, p, r)
                resp[i, j, 1:] = cr  # later assessments do not count
        return {"response": resp}

    ds = summarize(constructed_store(tmp_path / "cr.zarr", spec, fill))
    known = np.array([[[[first(s, d, p, r) == cr for r in range(2)] for p in range(3)] for d in range(2)]
                      for s in range(2)], dtype=float)  # (scenario, draw, patient, replicate)
    assert ds.attrs["reference_scenario"] == 0 and "trial's schedule" in ds.attrs["reference_rule"]
    np.testing.assert_allclose(ds.p_cr_first.values, known.mean(axis=(1, 2, 3)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ds.p_cr_first.values, [1 / 3, 1 / 2], rtol=0, atol=1e-15)
    pd_known = np.array([[[[first(s, d, p, r) == pd for r in range(2)] for p in range(3)] for d in range(2)]
                         for s in range(2)], dtype=float)
    np.testing.assert_allclose(ds.p_pd_first.values, pd_known.mean(axis=(1, 2, 3)), rtol=0, atol=1e-15)  # unchanged
    # uncertainty: per replicate and per draw, as for every metric
    per_rep = known[1].mean(axis=(0, 1))
    assert float(ds.p_cr_first_mc_se[1]) == pytest.approx(np.std(per_rep, ddof=1) / np.sqrt(2))
    per_draw = known[1].mean(axis=(1, 2))
    assert (float(ds.p_cr_first_draw_lo[1]), float(ds.p_cr_first_draw_hi[1])) == (per_draw.min(), per_draw.max())
    # the paired contrast is the difference of the two shares, with its paired SE and 95 % interval
    diff = (known[1] - known[0]).ravel()
    assert float(ds.p_cr_first_diff[1]) == pytest.approx(1 / 2 - 1 / 3, abs=1e-15)
    assert float(ds.p_cr_first_diff[1]) == pytest.approx(float(ds.p_cr_first[1] - ds.p_cr_first[0]), abs=1e-15)
    se = np.std(diff, ddof=1) / np.sqrt(diff.size)
    assert float(ds.p_cr_first_diff_se[1]) == pytest.approx(se)
    assert (float(ds.p_cr_first_diff_lo[1]), float(ds.p_cr_first_diff_hi[1])) == pytest.approx(
        (1 / 6 - Z95 * se, 1 / 6 + Z95 * se))
    assert [float(ds[f"p_cr_first{x}"][0]) for x in ("_diff", "_diff_se", "_diff_lo", "_diff_hi")] == [0.0] * 4
    # CF metadata like its neighbours
    assert ds.p_cr_first.attrs["units"] == "1" and "complete remission" in ds.p_cr_first.attrs["long_name"]
    assert ds.p_cr_first_diff.attrs["units"] == "1" and "complete remission" in ds.p_cr_first_diff.attrs["long_name"]
    assert "p_cr_first" in METRICS and "p_cr_first" in CONTRASTS and METRICS["p_cr_first"][2] is True
