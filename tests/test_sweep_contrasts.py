"""Paired contrasts, probability of being best and the fair clock of sweep summaries (issue 15, items 3-4).

Constructed stores (a real plan, hand-made batch arrays written through SweepStore.write_batch)
give cases where the answer is known exactly; two small real sweeps check the paired design
(self-contrast, shrinking intervals) and the lymphodepletion-clock assessments.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from _sweep_util import constructed_store, tiny_spec

from nksim.cli import main
from nksim.errors import NksimInputError
from nksim.observables import RESPONSE_CODES
from nksim.sweep import build_plan, run_sweep, summarize
from nksim.sweep.store import SweepStore
from nksim.sweep.summaries import CONTRASTS, paired_difference, per_simulation, probability_best

matplotlib = pytest.importorskip("matplotlib")


def _grid(plan, ps, rs):
    """(patient, replicate) index grids of a batch."""
    return np.meshgrid(np.arange(ps.start, ps.stop), np.arange(rs.start, rs.stop), indexing="ij")


# --- the statistics ------------------------------------------------------------------------------
def test_paired_difference_and_probability_best_by_hand():
    a = np.array([1.0, 2.0, 4.0, np.nan])
    mean, se, lo, hi = paired_difference(a, a)
    assert (mean, se, lo, hi) == (0.0, 0.0, 0.0, 0.0)  # itself: exactly 0, zero-width interval
    b = np.array([0.0, 1.0, 1.0, 5.0])
    mean, se, lo, hi = paired_difference(a, b)  # differences 1, 1, 3 (the NaN pair left out)
    assert mean == pytest.approx(5 / 3) and se == pytest.approx(np.std([1, 1, 3], ddof=1) / np.sqrt(3))
    assert (lo, hi) == pytest.approx((mean - 1.96 * se, mean + 1.96 * se))
    # 3 scenarios x 4 draws; draw 1 is a tie of scenarios 0 and 2, draw 3 all NaN (left out)
    per_draw = np.array([[0.9, 0.5, 0.1, np.nan], [0.2, 0.3, 0.4, np.nan], [0.1, 0.5, 0.2, np.nan]])
    p = probability_best(per_draw, higher_is_better=True)
    np.testing.assert_allclose(p, [1.5 / 3, 1 / 3, 0.5 / 3])
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(probability_best(per_draw[:, :1], higher_is_better=False), [0, 0, 1])


# --- constructed stores: known answers -----------------------------------------------------------
def test_fair_clock_moves_time_to_progression_by_the_gap_difference(tmp_path):
    # two scenarios that differ only in the gap (7 = the trial's schedule, 14); both progress on the
    # same days since their first infusion (30 + 3 x patient + replicate, all before the landmark)
    spec = tiny_spec(sweep={"design": "list"}, factors=None, scenarios=[{"gap": 7}, {"gap": 14}])
    path = constructed_store(tmp_path / "gap.zarr", spec,
                             lambda plan, s, d, ps, rs: {"time_to_progression": 30.0 + 3.0 * _grid(plan, ps, rs)[0]
                                                         + _grid(plan, ps, rs)[1]})
    inf = summarize(path, clock="infusion")
    ld = summarize(path, clock="lymphodepletion")
    assert inf.attrs["clock"] == "infusion" and ld.attrs["clock"] == "lymphodepletion"
    assert ld.attrs["assessment_clock"] == "infusion" and "not assessed on the same days" in ld.attrs["comment"]
    assert "since the start of lymphodepletion" in ld.median_pfs.attrs["long_name"]
    assert "since the first NK infusion" in inf.rmst_landmark.attrs["long_name"]
    np.testing.assert_array_equal(ld.clock_offset.values, [9.0, 16.0])  # Flu/Cy starts 2 days before its last dose
    gap_diff = float(ld.gap[1] - ld.gap[0])
    assert gap_diff == 7.0 and int(ld.reference[1]) == 0  # the gap-7 scenario is the trial's schedule
    store = SweepStore.open_existing(path)
    moved = per_simulation(store, 1, 16.0)["ttp"] - per_simulation(store, 0, 9.0)["ttp"]
    np.testing.assert_array_equal(moved, gap_diff)
    # infusion clock: identical; lymphodepletion clock: later by exactly the gap difference, no uncertainty
    for name in ("rmst_landmark", "median_pfs"):
        assert float(inf[name][1] - inf[name][0]) == 0.0
        assert float(ld[name][1] - ld[name][0]) == gap_diff
    assert float(inf.rmst_landmark_diff[1]) == 0.0
    assert (float(ld.rmst_landmark_diff[1]), float(ld.rmst_landmark_diff_lo[1]),
            float(ld.rmst_landmark_diff_hi[1])) == (gap_diff, gap_diff, gap_diff)


def test_contrasts_have_the_right_sign(tmp_path):
    # scenario 1 (100/0) vs scenario 0 (the trial's 50/50): earlier progression, more blasts on day 28,
    # higher blood chimerism; everything per patient and replicate so that the differences vary
    spec = tiny_spec(sweep={"design": "list"}, factors=None, cohort={"patients": 6, "replicates": 3},
                     scenarios=[{"dose_split": [50, 50]}, {"dose_split": [100, 0]}])
    t_inf = None

    def fill(plan, s, d, ps, rs):
        nonlocal t_inf
        t_inf = plan.time_start + np.arange(plan.n_time)
        p, r = _grid(plan, ps, rs)
        u = (1 + p + 2 * r)[..., None].astype(float)  # 1 ... 16, varies per simulation
        blasts = np.where(t_inf >= 28, 10.0 + s * 0.5 * u, 10.0)
        chim = np.where(t_inf >= 0, 1.0 + s * 0.1 * u, 0.0)
        return {"time_to_progression": np.where(s == 1, 40.0 - r, np.where(p % 2 == 0, 60.0, np.nan)),
                "marrow_blast_pct": blasts, "donor_chimerism_pbmc": chim, "donor_chimerism_nk": 2 * chim}

    ds = summarize(constructed_store(tmp_path / "sign.zarr", spec, fill))
    assert ds.attrs["reference_scenario"] == 0 and "trial's schedule" in ds.attrs["reference_rule"]
    r = ds.sel(scenario=1)
    # 100/0 progresses on day 40 - replicate; the trial's on day 60 (even patients) or never (censored: landmark 90)
    assert float(r.rmst_landmark_diff_hi) < 0 and float(r.rmst_landmark_diff) == pytest.approx((-21.0 - 51.0) / 2)
    assert float(r.pfs_landmark_diff) == -0.5 and float(r.pfs_landmark_diff_hi) < 0
    assert float(r.p_pd_first_diff) == 0.0
    assert float(r.blast_change_d28_diff_lo) > 0
    for name in ("peak_chimerism_nk_d28", "auc_chimerism_nk_d28", "peak_chimerism_pbmc_d28", "auc_chimerism_pbmc_d28"):
        assert float(r[f"{name}_diff_lo"]) > 0, name
    # AUC over days 0-28 of a constant excess 0.1 u (trapezoid on daily values): 28 x 0.1 x mean(u)
    u_mean = np.mean([1 + p + 2 * rep for p in range(6) for rep in range(3)])
    assert float(r.auc_chimerism_pbmc_d28_diff) == pytest.approx(28 * 0.1 * u_mean, rel=1e-5)
    for name, (units, _, _) in CONTRASTS.items():  # CF metadata on every contrast variable
        for suffix in ("_diff", "_diff_se", "_diff_lo", "_diff_hi"):
            assert ds[name + suffix].attrs["units"] == units and ds[name + suffix].attrs["long_name"]
    assert float(ds.p_best.sum()) == pytest.approx(1.0) and float(ds.p_best.sel(scenario=0)) == 1.0


def test_references_and_best_are_per_group_of_swept_parameters(tmp_path):
    spec = tiny_spec(factors={"interval": [7, 14], "nk.kill_probability": [0.2, 0.6]}, cohort={"draws": 3})
    plan = build_plan(spec)
    kill = {s: plan["scenarios"][s]["parameters"]["nk.kill_probability"] for s in range(plan.n_scenarios)}
    path = constructed_store(tmp_path / "groups.zarr", spec, lambda plan_, s, d, ps, rs: {
        "time_to_progression": np.where((s + d) % 2 == 0, 50.0, np.nan)})
    ds = summarize(path)
    assert sorted(set(ds.comparison_group.values.tolist())) == [0, 1]
    for s in range(plan.n_scenarios):  # the reference: interval 7 (the trial's schedule) at the same kill probability
        ref = int(ds.reference.sel(scenario=s))
        assert float(ds.interval.sel(scenario=ref)) == 7.0 and kill[ref] == kill[s]
    for g in (0, 1):
        assert float(ds.p_best.where(ds.comparison_group == g).sum()) == pytest.approx(1.0)
    assert len(ds.attrs["reference_scenarios"]) == 2


# --- real sweeps ---------------------------------------------------------------------------------
SHRINK = dict(sweep={"seed": 12, "batch_size": 32, "end_day": 40, "assessment_days": [28, 35], "landmark_day": 35},
              factors={"dose_split": [[50, 50], [100, 0]]})
CONTINUOUS = ("blast_change_d28", "auc_chimerism_pbmc_d28", "peak_chimerism_nk_d28", "auc_chimerism_nk_d28")


@pytest.fixture(scope="module")
def doubled(tmp_path_factory):
    """The same 2-scenario sweep with 4 and with 8 replicates (replicates 0-3 are shared: same streams)."""
    d = tmp_path_factory.mktemp("shrink")
    out = {}
    for reps in (4, 8):
        run_sweep(tiny_spec(**SHRINK, cohort={"patients": 24, "replicates": reps}), d / f"r{reps}.zarr", workers=0)
        out[reps] = d / f"r{reps}.zarr"
    return out


def test_self_contrast_is_exactly_zero(doubled):
    for ref in (0, 1):
        ds = summarize(doubled[4], reference=ref)
        r = ds.sel(scenario=ref)
        for name in CONTRASTS:
            vals = [float(r[name + sfx]) for sfx in ("_diff", "_diff_se", "_diff_lo", "_diff_hi")]
            assert vals == [0.0, 0.0, 0.0, 0.0], (name, vals)
        assert ds.attrs["reference_rule"] == f"#{ref}: given"


def test_confidence_interval_shrinks_by_sqrt2_when_replicates_double(doubled):
    s4, s8 = summarize(doubled[4]), summarize(doubled[8])
    assert s4.attrs["simulations_per_scenario"] * 2 == s8.attrs["simulations_per_scenario"] == 192
    ratios = []
    st4, st8 = SweepStore.open_existing(doubled[4]), SweepStore.open_existing(doubled[8])
    for name in CONTINUOUS:
        half4 = float(s4[f"{name}_diff_hi"][1] - s4[f"{name}_diff"][1])
        half8 = float(s8[f"{name}_diff_hi"][1] - s8[f"{name}_diff"][1])
        assert half4 > 0 and half8 > 0, name
        ratios.append(half8 / half4)
        # exactly: half-width = 1.96 sd(differences) / sqrt(n), so the ratio is sd8/sd4 / sqrt(2)
        fn = CONTRASTS[name][2]
        sd = {}
        for reps, st in ((4, st4), (8, st8)):
            diff = fn(per_simulation(st, 1), 35.0) - fn(per_simulation(st, 0), 35.0)
            sd[reps] = np.std(diff[~np.isnan(diff)], ddof=1)
        assert half8 / half4 == pytest.approx(sd[8] / sd[4] / np.sqrt(2), rel=1e-9)
    # statistically: about 1/sqrt(2) = 0.71; geometric mean over the four continuous contrasts in
    # [0.55, 0.9] (single contrasts scatter more: heavy-tailed differences of a 6x6 lattice)
    gmean = float(np.exp(np.mean(np.log(ratios))))
    assert 0.55 <= gmean <= 0.9, (ratios, gmean)


@pytest.fixture(scope="module")
def fair(tmp_path_factory):
    """A small sweep assessed on the lymphodepletion clock: gap 7 (the trial), gap 14, Hi-Cy/Flu gap 3."""
    spec = tiny_spec(sweep={"design": "list", "clock": "lymphodepletion", "assessment_days": [40, 90]}, factors=None,
                     cohort={"draws": 3, "patients": 3, "replicates": 2},
                     scenarios=[{"gap": 7}, {"gap": 14}, {"regimen": "hi_cy_flu", "gap": 3}])
    out = tmp_path_factory.mktemp("fair") / "fair.zarr"
    run_sweep(spec, out, workers=0)
    return spec, out


def test_lymphodepletion_clock_assesses_on_common_calendar_days(fair, capsys):
    spec, out = fair
    plan = build_plan(spec)
    assert plan.clock == "lymphodepletion"
    offsets = [plan.clock_offset(s) for s in range(3)]
    assert offsets == [9.0, 16.0, 7.0] == [sc["clock_offset"] for sc in plan["scenarios"]]
    for s, off in enumerate(offsets):  # protocol days = calendar days - offset
        assert plan["scenarios"][s]["protocol"]["protocol"]["assessment_days"] == [40.0 - off, 90.0 - off]
    # the stored responses were called on those days: PD <=> blasts at the PD threshold on day 40 - offset
    st = SweepStore.open_existing(out)
    time = st.coord("time")
    for s, off in enumerate(offsets):
        blast = st.read("marrow_blast_pct", s)[..., int(np.searchsorted(time, 40.0 - off))].astype(float)
        pd = st.read("response", s)[..., 0] == RESPONSE_CODES["PD"]
        np.testing.assert_array_equal(pd, blast >= st.read("pd_threshold_pct", s))
    ds = summarize(out)  # default: the plan's clock
    assert ds.attrs["clock"] == ds.attrs["assessment_clock"] == "lymphodepletion"
    assert "count from the start of lymphodepletion" in ds.attrs["comment"]
    assert int(ds.reference[2]) == 0 and float(ds.p_best.sum()) == pytest.approx(1.0)
    np.testing.assert_array_equal(SweepStore.open_existing(out).coord("assessment"), [40.0, 90.0])
    assert "since the start of lymphodepletion" in st.array("assessment").attrs["long_name"]
    # the CLI: --clock infusion is a second view of the same store
    assert main(["summarize", str(out), "--clock", "infusion", "--rank-by", "rmst_landmark"]) == 0
    text = capsys.readouterr().out
    assert "clock 'infusion', assessments on clock 'lymphodepletion'" in text and "P(best)" in text


def test_clock_in_the_plan_only_when_used():
    base = build_plan(tiny_spec())
    assert build_plan(tiny_spec(sweep={"clock": "infusion"})).digest == base.digest
    assert "clock" not in base.content and base.clock == "infusion"
    assert build_plan(tiny_spec(sweep={"clock": "lymphodepletion"})).digest != base.digest
    with pytest.raises(NksimInputError, match=r"sweep\.clock.*must be one of"):
        tiny_spec(sweep={"clock": "calendar"})
    # gap 28 with Flu/Cy: lymphodepletion starts 30 days before the infusion; day 28 would come before it
    with pytest.raises(NksimInputError, match=r"gap=28.*sweep\.assessment_days.*at least 31"):
        build_plan(tiny_spec(sweep={"clock": "lymphodepletion"}, scenarios=[{"gap": 28}]))


def test_forest_plot(fair):
    from matplotlib.figure import Figure

    from nksim import plot

    _, out = fair
    ds = summarize(out)
    fig = plot.contrast_forest(ds, ["pfs_landmark", "rmst_landmark", "blast_change_d28"])
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    gids = {a.get_gid() for ax in fig.axes for a in ax.get_children() if a.get_gid()}
    assert {f"contrast:{c}:{s}" for c in ("rmst_landmark", "blast_change_d28") for s in (0, 1, 2)} <= gids
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert any("(reference)" in t and t.startswith("#0") for t in labels)
    assert "start of lymphodepletion" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="not in the dataset"):
        plot.contrast_forest(ds, "kills")
    with pytest.raises(ValueError, match=r"scenarios \[9\]"):
        plot.contrast_forest(ds, select=[0, 9])
    xr.testing.assert_identical(ds, summarize(out))  # plotting leaves the summary alone
    matplotlib.pyplot.close("all")
