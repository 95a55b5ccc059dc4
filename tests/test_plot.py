"""Figures of nksim.plot: every function returns a Figure whose plotted data equal the dataset's.

Small inputs only: the trial protocol cut at day 120 on a 10 x 10 lattice of 1.6 mm voxels
(10 patients x 2 replicates) and a 4-scenario sweep on a 6 x 6 lattice (3 patients x 2
replicates), both built once per module.
"""
from __future__ import annotations

import re
import tomllib
import types
import warnings

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

import nksim
from nksim import plot
from nksim.observables import km_curve, km_survival
from nksim.plot.swimmer import observed_segments, simulated_lanes
from nksim.protocol import protocol_from_dict, resolve_protocol_path

UNITS = re.compile(r"[\(\[][^\)\]]+[\)\]]")
END_DAY = 120


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cohort() -> nksim.xr.Dataset:
    params = nksim.load_parameters("default").with_values({"lattice.side": 10, "lattice.voxel_side": 1600.0})
    raw = tomllib.loads(resolve_protocol_path("ahmadvand2023").read_text())
    raw["protocol"].update(end_day=END_DAY, assessment_days=[28, 90], snapshot_days=[-9, 0, 14, 90])
    proto = protocol_from_dict(raw, "<test_plot>")
    return nksim.simulate_cohort(params, proto, replicates=2, seed=3)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from _sweep_util import tiny_spec

    from nksim.sweep import open_sweep, run_sweep, summarize

    path = tmp_path_factory.mktemp("sweep") / "tiny.zarr"
    run_sweep(tiny_spec(), path, workers=0)
    return open_sweep(path), summarize(path)


def data_axes(fig: Figure):
    return [a for a in fig.axes if a.get_label() not in ("<colorbar>", "<at-risk>")]


def assert_publishable(fig: Figure) -> None:
    """A Figure with a title, unit-labelled axes and at least one legend."""
    assert isinstance(fig, Figure)
    assert fig._suptitle is not None and fig._suptitle.get_text().strip()
    axes = data_axes(fig)
    assert axes
    for ax in axes:
        assert UNITS.search(ax.get_xlabel()), f"x label without units: {ax.get_xlabel()!r}"
        assert UNITS.search(ax.get_ylabel()), f"y label without units: {ax.get_ylabel()!r}"
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert UNITS.search(ax.get_ylabel() or ax.get_xlabel()), "colour bar without units"
    assert fig.legends or any(ax.get_legend() is not None for ax in fig.axes), "no legend"
    fig.canvas.draw()  # renders without error (mathtext in labels included)


def by_gid(fig: Figure, prefix: str) -> dict[str, object]:
    out = {}
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.collections, *ax.images]:
            gid = artist.get_gid()
            if gid and gid.startswith(prefix):
                out[gid[len(prefix):]] = artist
    return out


# --- units ------------------------------------------------------------------------------------
@pytest.mark.parametrize("units, name, expected", [
    ("percent", "", "%"), ("uL-1", "", "µL$^{-1}$"), ("mg L-1", "", "mg L$^{-1}$"), ("day", "", "day"),
    ("1", "il15", "fold of baseline"), ("1", "", "dimensionless"), ("uL-1 day", "", "µL$^{-1}$ day"),
])
def test_unit_text(units, name, expected):
    assert plot.unit_text(units, name) == expected


# --- time course --------------------------------------------------------------------------------
def test_time_course_median_equals_dataset_median(cohort):
    variables = ("donor_chimerism_nk", "donor_nk_blood", "host_t_blood", "il15", "marrow_blast_pct")
    fig = plot.time_course(cohort)
    assert_publishable(fig)
    lines = by_gid(fig, "median:")
    assert sorted(lines) == sorted(f"{v}:all" for v in variables)
    for v in variables:
        line = lines[f"{v}:all"]
        values = cohort[v].transpose("time", "patient", "replicate").values.reshape(cohort.sizes["time"], -1)
        np.testing.assert_array_equal(line.get_xdata(), cohort.time.values)
        np.testing.assert_allclose(line.get_ydata(), np.median(values, axis=1), rtol=1e-12, atol=0)
    units = {ax.get_title(): ax.get_ylabel() for ax in data_axes(fig)}
    assert units["marrow blasts as percentage of nucleated marrow cells"].endswith("(%)")
    log_axes = [ax for ax in data_axes(fig) if ax.get_yscale() == "log"]
    assert len(log_axes) == 3  # chimerism and the two blood counts


def test_time_course_bands_and_protocol_marks(cohort):
    fig = plot.time_course(cohort, "marrow_blast_pct", bands=(0.8,), xlim=(-9, 60))
    ax = data_axes(fig)[0]
    assert ax.get_xlim() == (-9.0, 60.0)
    band = ax.collections[0]  # the fill_between polygon: lower and upper 10 / 90 % percentiles
    sel = cohort.marrow_blast_pct.sel(time=slice(-9, 60))
    values = sel.transpose("time", ...).values.reshape(sel.sizes["time"], -1)
    verts = band.get_paths()[0].vertices
    lo, hi = np.percentile(values, [10, 90], axis=1)
    for target in (lo, hi):
        for t, v in zip(sel.time.values[::7], target[::7]):
            assert np.any(np.isclose(verts[:, 0], t) & np.isclose(verts[:, 1], v))
    # lymphodepletion (Flu/Cy days -9..-7) as one span, NK infusions on days 0 and 7 as lines
    spans = [p for p in ax.patches if p.get_x() == -9.0]
    assert spans and np.isclose(spans[0].get_width(), 3.0)
    infusion_days = sorted({float(line.get_xdata()[0]) for line in ax.lines if line.get_linestyle() == ":"})
    assert infusion_days == [0.0, 7.0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"median", "central 80 %", "Flu/Cy lymphodepletion", "NK infusion"} <= set(labels)


def test_time_course_by_group_and_by_scenario(cohort, sweep):
    fig = plot.time_course(cohort, ["marrow_blast_pct"], by="group")
    assert_publishable(fig)
    lines = by_gid(fig, "median:marrow_blast_pct:")
    assert sorted(lines) == ["g1", "g2"]
    for g in ("g1", "g2"):
        sub = cohort.marrow_blast_pct.where(cohort.group == g, drop=True)
        expected = np.median(sub.transpose("time", ...).values.reshape(sub.sizes["time"], -1), axis=1)
        np.testing.assert_allclose(lines[g].get_ydata(), expected, rtol=1e-12)

    store, _ = sweep
    fig = plot.time_course(store, ["donor_nk_blood", "il15"], by="scenario", select=[0, 3])
    assert_publishable(fig)
    lines = by_gid(fig, "median:donor_nk_blood:")
    assert sorted(lines) == ["0", "3"]
    da = store.donor_nk_blood.sel(scenario=3).values.astype(float)  # (draw, patient, replicate, time)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN before the scenario's first day
        expected = np.nanmedian(np.moveaxis(da, -1, 0).reshape(da.shape[-1], -1), axis=1)
    np.testing.assert_allclose(lines["3"].get_ydata(), expected, rtol=1e-6, equal_nan=True)


def test_time_course_single_simulation(cohort):
    one = cohort.isel(patient=3, replicate=1)
    fig = plot.time_course(one, ["il15"])
    np.testing.assert_array_equal(by_gid(fig, "median:")["il15:all"].get_ydata(), one.il15.values)


def test_time_course_into_given_axes(cohort):
    fig, axes = plt.subplots(1, 2)
    out = plot.time_course(cohort, ["il15", "marrow_blast_pct"], ax=axes)
    assert out is fig and fig._suptitle is None
    assert axes[1].get_ylabel() == "marrow blasts (%)"


# --- swimmer ----------------------------------------------------------------------------------
def _observed():
    try:
        from nksim.calibration.data import default_observed
    except ImportError:  # stand-in with the documented fields
        def o(pid, **kw):
            base = dict(patient=pid, evaluable=True, dose_group="g1", first_response="SD", first_assessment_day=28.0,
                        progressed=False, progression_day_lo=None, progression_day_hi=None,
                        last_followup_day=270.0, lost_to_follow_up=False)
            base.update(kw)
            return types.SimpleNamespace(**base)

        return types.SimpleNamespace(outcomes=(
            o("p01", evaluable=False, first_response=None, first_assessment_day=None, progressed=None,
              last_followup_day=None),
            o("p02", first_response="PD", progressed=True, progression_day_lo=0.0, progression_day_hi=28.0,
              last_followup_day=None),
            o("p03", progressed=None, last_followup_day=28.0, lost_to_follow_up=True),
            o("p04", progressed=True, progression_day_lo=28.0, progression_day_hi=270.0, last_followup_day=None),
            o("p08", dose_group="g2"),
        ))
    return default_observed()


def test_swimmer_one_lane_per_patient(cohort):
    fig = plot.swimmer_plot(cohort, replicate=1)
    assert_publishable(fig)
    lanes = by_gid(fig, "lane:")
    assert sorted(lanes) == sorted(cohort.patient.values.tolist())
    r1 = cohort.sel(replicate=1)
    # each stretch has the colour of the status known at its start (tests/test_trial_figure.py)
    segs = simulated_lanes(r1[["response", "time_to_progression"]], float(cohort.time.max()))
    for pid, lane in lanes.items():
        if segs[pid][0][2] == "not evaluable":
            continue
        faces = [tuple(c) for c in lane.get_facecolors()]
        assert faces == [matplotlib.colors.to_rgba(plot.RESPONSE_COLOURS.get(s, plot.NOT_ASSESSED_COLOUR))
                         for _, _, s in segs[pid]]
    ev = r1.evaluable.values == 1
    ttp = r1.time_to_progression.values
    assert len(by_gid(fig, "progression:")) == int((np.isfinite(ttp) & ev).sum())
    assert len(by_gid(fig, "censored:")) == int((np.isnan(ttp) & ev).sum())
    ax = data_axes(fig)[0]
    assert ax.get_xlim()[1] >= END_DAY
    assert [t.get_text().split()[0] for t in ax.get_yticklabels()] == cohort.patient.values.tolist()


def test_swimmer_with_observed(cohort):
    observed = _observed()
    fig = plot.swimmer_plot(cohort, observed)
    assert_publishable(fig)
    assert len(data_axes(fig)) == 2
    assert len(by_gid(fig, "lane:")) == cohort.sizes["patient"]
    obs_lanes = by_gid(fig, "observed:")
    assert sorted(obs_lanes) == sorted(o.patient for o in observed.outcomes)
    sim_ax, obs_ax = data_axes(fig)
    assert sim_ax.get_xlim() == obs_ax.get_xlim()
    # observed lanes follow the simulated patient order
    order = [t.get_text().split()[0] for t in obs_ax.get_yticklabels()]
    assert order == [p for p in cohort.patient.values.tolist() if p in order]
    by_id = {o.patient: o for o in observed.outcomes}
    for pid, lane in obs_lanes.items():
        segs = observed_segments(by_id[pid])
        if by_id[pid].evaluable and by_id[pid].first_response and len(segs) > 1:
            # grey up to the first assessment, then the first response from that day on
            assert segs[0][2] == "not yet assessed" and segs[1][:1] == (by_id[pid].first_assessment_day,)
            assert tuple(lane.get_facecolors()[1]) == matplotlib.colors.to_rgba(
                plot.RESPONSE_COLOURS[by_id[pid].first_response])


def test_swimmer_on_a_sweep(sweep):
    store, _ = sweep
    fig = plot.swimmer_plot(store, select={"scenario": 2})
    assert len(by_gid(fig, "lane:")) == store.sizes["patient"]
    assert "scenario 2" in data_axes(fig)[0].get_title()


def test_swimmer_rejects_bad_input(cohort):
    with pytest.raises(ValueError, match=r"'response'.*available variables: \[.*'time_to_progression'"):
        plot.swimmer_plot(cohort.drop_vars("response"))
    with pytest.raises(ValueError, match=r"replicate 7 .*available: \['0', '1'\]"):
        plot.swimmer_plot(cohort, replicate=7)
    with pytest.raises(ValueError, match="observed must be"):
        plot.swimmer_plot(cohort, observed=3)


# --- Kaplan-Meier -------------------------------------------------------------------------------
def _step_value(line, day: float) -> float:
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    return float(y[np.searchsorted(x, day, side="right") - 1])


def test_km_curve_matches_km_survival():
    rng = np.random.default_rng(0)
    ttp = np.where(rng.random(50) < 0.4, np.nan, rng.integers(28, 365, 50).astype(float))
    t, s = km_curve(ttp, 365.0)
    assert t[0] == 0 and s[0] == 1 and np.all(np.diff(t) > 0) and np.all(np.diff(s) <= 0)
    for day in [0, 27, 28, 29, 100, 180.5, 364, 365]:
        assert s[np.searchsorted(t, day, side="right") - 1] == pytest.approx(km_survival(ttp, 365.0, day))
    assert km_curve(np.full(4, np.nan), 100.0)[1].tolist() == [1.0]
    assert np.isnan(km_curve(np.array([]), 100.0)[1][0])


def test_km_per_dose_group_equals_km_survival(cohort):
    fig = plot.km_plot(cohort)
    assert_publishable(fig)
    curves = by_gid(fig, "km:")
    assert sorted(curves) == ["g1", "g2"]
    evaluable = cohort.where(cohort.evaluable == 1, drop=True)
    for g, line in curves.items():
        ttp = evaluable.time_to_progression.where(evaluable.group == g, drop=True).values.ravel()
        assert line.get_drawstyle() == "steps-post"
        for day in (0, 28, 29, 45, 60, 89, 90, 119, END_DAY):
            assert _step_value(line, day) == pytest.approx(km_survival(ttp, END_DAY, day)), (g, day)
        assert f"n = {ttp.size}" in line.get_label()
    table = [a for a in fig.axes if a.get_label() == "<at-risk>"]
    assert len(table) == 1 and "at risk" in table[0].get_title(loc="left")
    at_day0 = [int(t.get_text()) for t in table[0].texts if t.get_position()[0] == 0.0]
    # day 0: every evaluable simulation of the group is at risk (rows in curve order g1, g2)
    assert at_day0 == [int((evaluable.group == g).sum()) * cohort.sizes["replicate"] for g in ("g1", "g2")]


def test_km_per_scenario_of_a_sweep(sweep):
    store, summary = sweep
    fig = plot.km_plot(store, select=[1, 3], landmark=90)
    assert_publishable(fig)
    curves = by_gid(fig, "km:")
    assert sorted(curves) == ["1", "3"]
    for s, line in curves.items():
        ttp = store.time_to_progression.sel(scenario=int(s)).values.ravel()
        for day in (28, 60, 90, 120):
            assert _step_value(line, day) == pytest.approx(km_survival(ttp, 120.0, day))
        # the summary's landmark estimate is the same number
        assert _step_value(line, 90) == pytest.approx(float(summary.pfs_landmark.sel(scenario=int(s))))


def test_km_rejects_bad_input(cohort):
    with pytest.raises(ValueError, match=r"'time_to_progression'.*available variables"):
        plot.km_plot(cohort.drop_vars("time_to_progression"))
    with pytest.raises(ValueError, match=r"cannot split by 'colour'.*available dimensions"):
        plot.km_plot(cohort, by="colour")
    with pytest.raises(ValueError, match=r"group 'g9' is not in the dataset; available: \['g1', 'g2'\]"):
        plot.km_plot(cohort, select=["g9"])


# --- heatmap ----------------------------------------------------------------------------------
def test_heatmap_cells_equal_summary(sweep):
    _, summary = sweep
    fig = plot.heatmap(summary, "peak_chimerism_nk", x="interval", y="dose_split")
    assert_publishable(fig)
    image = by_gid(fig, "heatmap:")["peak_chimerism_nk"]
    arr = np.ma.filled(image.get_array().astype(float), np.nan)
    ax = data_axes(fig)[0]
    xs = [float(t.get_text()) for t in ax.get_xticklabels()]
    ys = [t.get_text() for t in ax.get_yticklabels()]
    assert xs == sorted(set(summary.interval.values.tolist()))
    assert arr.shape == (len(ys), len(xs))
    for s in summary.scenario.values:
        r = summary.sel(scenario=s)
        iy, ix = ys.index(str(r.dose_split.values)), xs.index(float(r.interval))
        assert arr[iy, ix] == float(r.peak_chimerism_nk)
    cbar = [a for a in fig.axes if a.get_label() == "<colorbar>"][0]
    assert "(%)" in cbar.get_ylabel()
    assert "interval between infusions (day)" == ax.get_xlabel()
    assert ax.get_ylabel() == "dose split (%)"
    texts = {t.get_text().split("\n")[0] for t in ax.texts}
    assert f"{float(summary.peak_chimerism_nk[0]):.3g}" in texts


def test_heatmap_of_a_paired_difference_is_centred_on_zero(sweep):
    """A `_diff` outcome is drawn on symmetric colour limits around 0.

    Small positive differences of a probability used to get its 0-1 range, which hid them; a probability keeps 0-1.
    """
    _, summary = sweep
    diff = summary["pfs_landmark_diff"].copy()
    diff.values[:] = np.linspace(0.0, 0.03, diff.size)  # small differences >= 0, all inside [0, 1]
    s = summary.assign(pfs_landmark_diff=diff)
    fig = plot.heatmap(s, "pfs_landmark_diff", x="interval", y="dose_split")
    image = by_gid(fig, "heatmap:")["pfs_landmark_diff"]
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx((-0.03, 0.03))
    # cell text readable on the map: dark on the pale middle (small differences), light on the dark end
    colours = {t.get_text().split("\n")[0]: t.get_color() for t in data_axes(fig)[0].texts}
    assert colours["0.00"] == "black" and colours["0.03"] == "white"
    prob = by_gid(plot.heatmap(summary, "pfs_landmark", x="interval", y="dose_split"), "heatmap:")["pfs_landmark"]
    assert (prob.norm.vmin, prob.norm.vmax) == (0.0, 1.0)


def test_heatmap_where_and_clashes(sweep):
    _, summary = sweep
    doubled = summary.copy()
    doubled = doubled.assign_coords(interval=("scenario", np.full(summary.sizes["scenario"], 7.0)))
    with pytest.raises(ValueError, match=r"cell interval=7, dose_split=.* holds scenarios \[\d+, \d+\]"):
        plot.heatmap(doubled, "pfs_landmark", "interval", "dose_split")
    split = str(summary.dose_split.values[0])
    fig = plot.heatmap(summary, "pfs_landmark", "interval", "dose_split", where={"dose_split": split})
    arr = by_gid(fig, "heatmap:")["pfs_landmark"].get_array()
    assert arr.shape[0] == 1
    with pytest.raises(ValueError, match=r"no scenario matches"):
        plot.heatmap(summary, "pfs_landmark", "interval", "dose_split", where={"interval": 99})


def test_heatmap_rejects_bad_input(sweep):
    _, summary = sweep
    with pytest.raises(ValueError, match=r"outcome 'pfs_at_day_9' not in the dataset; available variables: \[.*"
                                         r"'pfs_landmark'"):
        plot.heatmap(summary, "pfs_at_day_9", "interval", "dose_split")
    with pytest.raises(ValueError, match=r"x factor 'spacing' is not in the dataset; available coordinates: .*"
                                         r"'interval'"):
        plot.heatmap(summary, "pfs_landmark", "spacing", "dose_split")


# --- lattice ----------------------------------------------------------------------------------
def test_lattice_snapshot_images_equal_lattice(cohort):
    days = [0.0, 14.0]
    fig = plot.lattice_snapshot(cohort, "p07", replicate=1, days=days)
    assert_publishable(fig)
    images = by_gid(fig, "lattice:")
    assert len(images) == 3 * len(days)
    one = cohort.sel(patient="p07", replicate=1)
    for var in plot.LATTICE_LAYERS:
        for d in days:
            arr = images[f"{var}:{d:g}"].get_array()
            np.testing.assert_array_equal(np.asarray(arr), one[var].sel(snapshot_time=d).transpose("y", "x").values)
    # NK agents: one dot per occupied voxel
    dots = by_gid(fig, "nk:")
    for d in days:
        assert len(dots[f"{d:g}"].get_offsets()) == int((one.lattice_nk.sel(snapshot_time=d).values > 0).sum())
    # extent in mm from the voxel side (10 voxels of 1600 um = 16 mm) and a scale bar
    img = images[f"lattice_normal:{days[0]:g}"]
    assert img.get_extent() == [0.0, 16.0, 0.0, 16.0]
    assert any(type(a).__name__ == "AnchoredSizeBar" for ax in fig.axes for a in ax.artists)


def test_lattice_snapshot_of_one_simulation(cohort):
    one = cohort.isel(patient=0, replicate=0)
    fig = plot.lattice_snapshot(one)
    assert len(by_gid(fig, "lattice:")) == 3 * one.sizes["snapshot_time"]


def test_lattice_snapshot_rejects_bad_input(cohort):
    with pytest.raises(ValueError, match=r"snapshot day\(s\) \['5'\] not in the dataset; available snapshot days: "
                                         r"\['-9', '0', '14', '90'\]"):
        plot.lattice_snapshot(cohort, "p02", days=[5])
    with pytest.raises(ValueError, match=r"patient 'p99' is not in the dataset; available: \['p01'"):
        plot.lattice_snapshot(cohort, "p99")
    with pytest.raises(ValueError, match=r"'lattice_nk' not in the dataset; available variables"):
        plot.lattice_snapshot(cohort.drop_vars("lattice_nk"), "p02")


# --- bad input (time course) and the nksim run figure -------------------------------------------
def test_unknown_variable_names_it_and_the_available_ones(cohort):
    with pytest.raises(ValueError, match=r"variable 'donor_chimerism' not in the dataset; available variables: "
                                         r"\[.*'donor_chimerism_nk'"):
        plot.time_course(cohort, ["donor_chimerism", "il15"])
    with pytest.raises(ValueError, match=r"variable 'time_to_progression' has no 'time' dimension"):
        plot.time_course(cohort, "time_to_progression")
    with pytest.raises(ValueError, match="bands"):
        plot.time_course(cohort, "il15", bands=(1.5,))
    with pytest.raises(ValueError, match=r"scenario 9 is not in the dataset|cannot split by 'scenario'"):
        plot.time_course(cohort, "il15", by="scenario", select=[9])


def test_trial_figure_still_works(cohort, tmp_path):
    fig = plot.trial_figure(cohort)
    assert isinstance(fig, Figure)
    assert len(by_gid(fig, "lane:")) == cohort.sizes["patient"]
    assert sorted(by_gid(fig, "km:")) == ["g1", "g2"]
    fig.savefig(tmp_path / "trial.png", dpi=50)
    assert (tmp_path / "trial.png").stat().st_size > 10_000
