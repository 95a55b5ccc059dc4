"""The trial figure (``nksim run``'s trial.png) tells the truth: the data behind each panel.

Issue 12 item 7: swimmer stretches carry the status known at their start (the last assessment
before them, PD from progression), not the next assessment's; a not-evaluable patient has no
response and no progression mark; chimerism below a stated detection limit is not drawn (no
floor); the Flu/Cy band and infusion lines are in the legend; PD thresholds are matched to
their patients by colour. A synthetic cohort Dataset (no simulation) feeds the figure.
"""
from __future__ import annotations

import json
import types

import matplotlib
import numpy as np
import pytest
import xarray as xr

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nksim import plot
from nksim.observables import RESPONSE_CODES, RESPONSE_FILL
from nksim.plot.swimmer import (
    BEFORE_ASSESSMENT,
    NOT_EVALUABLE,
    observed_segments,
    response_segments,
    simulated_lanes,
)
from nksim.plot.trial import CHIMERISM_DETECTION_LIMIT_PCT, above_detection, detectable_band, patient_colours

ASSESS = [28.0, 90.0, 180.0, 270.0, 365.0]
C = RESPONSE_CODES
#: patient -> (evaluable, responses at ASSESS, time to progression)
TABLE = {
    "p01": (0, ["SD", "PD", "PD", "PD", "PD"], 60.0),   # not evaluable: nothing of this may be drawn
    "p02": (1, ["SD", "SD", "SD", "SD", "SD"], np.nan),
    "p03": (1, ["CR", "PR", "SD", "PD", "PD"], 230.0),
    "p09": (1, ["SD", "SD", "PD", "PD", "PD"], 176.0),  # the example: SD at day 90, progressed day 176
    "p10": (1, ["PD", "PD", "PD", "PD", "PD"], 28.0),
}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _cohort() -> xr.Dataset:
    """A cohort-shaped Dataset with the variables the trial figure reads (one replicate)."""
    pids = list(TABLE)
    time = np.arange(-9.0, 366.0)
    n, nt = len(pids), time.size
    resp = np.array([[C[r] for r in TABLE[p][1]] for p in pids], dtype=np.int8)[:, None, :]
    ttp = np.array([TABLE[p][2] for p in pids])[:, None]
    # chimerism: 0 before day 0, 1 % at day 1 decaying 10-fold every 10 days (below 0.01 % after day 21)
    chim = np.where(time > 0, 1.0 * 10.0 ** (-(time - 1) / 10.0), 0.0)
    chim = np.broadcast_to(chim, (n, 1, nt)).copy()
    blasts = np.broadcast_to(np.linspace(30, 60, nt), (n, 1, nt)).copy()
    ones = np.ones((n, 1, nt))
    events = [[-9.0, "fludarabine", 20.0, "mg m-2"], [-8.0, "cyclophosphamide", 20.0, "mg kg-1"],
              [0.0, "nk_infusion", 1e6, "kg-1"], [7.0, "nk_infusion", 5e6, "kg-1"]]
    dims = ("patient", "replicate", "time")
    ds = xr.Dataset(
        {
            "donor_chimerism_nk": (dims, chim, {"units": "%"}),
            "donor_chimerism_pbmc": (dims, chim / 3, {"units": "%"}),
            "donor_nk_blood": (dims, ones, {"units": "uL-1"}),
            "host_nk_blood": (dims, 100 * ones, {"units": "uL-1"}),
            "host_t_blood": (dims, 500 * ones, {"units": "uL-1"}),
            "il15": (dims, ones, {"units": "1"}),
            "marrow_blast_pct": (dims, blasts, {"units": "%"}),
            "pd_threshold_pct": ("patient", np.linspace(40, 70, n), {"units": "%"}),
            "response": (("patient", "replicate", "assessment"), resp,
                         {"units": "1", "flag_values": np.array([0, 1, 2, 3], dtype=np.int8),
                          "flag_meanings": "CR PR SD PD"}),
            "time_to_progression": (("patient", "replicate"), ttp, {"units": "day"}),
        },
        coords={"patient": pids, "replicate": [0], "time": time, "assessment": ASSESS,
                "group": ("patient", ["g1", "g1", "g1", "g2", "g2"]),
                "evaluable": ("patient", np.array([TABLE[p][0] for p in pids], dtype=np.int8))},
        attrs={"protocol": "synthetic", "parameter_set": "none", "seed": 0, "end_day": 365.0,
               "protocol_events": json.dumps({"g1": events, "g2": events})},
    )
    return ds


def _gids(fig, prefix):
    out = {}
    for ax in fig.axes:
        for a in ax.get_children():
            g = a.get_gid()
            if isinstance(g, str) and g.startswith(prefix):
                out[g[len(prefix):]] = a
    return out


# --- the stretches of a lane -------------------------------------------------------------------
def test_stretch_carries_the_status_known_at_its_start():
    # p09: SD at days 28 and 90, progression on day 176, PD at the later assessments
    segs = response_segments(ASSESS, ["SD", "SD", "PD", "PD", "PD"], 176.0, 365.0)
    assert segs == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 176.0, "SD"), (176.0, 365.0, "PD")]
    # not red from day 90 (the old drawing coloured 90-180 by the day-180 call)
    assert all(s == "SD" for a, b, s in segs if a <= 90.0 < b)


def test_colour_switches_on_each_assessment_day():
    segs = response_segments([28, 90, 180], ["CR", "PR", "SD"], np.nan, 200.0)
    assert segs == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 90.0, "CR"), (90.0, 180.0, "PR"), (180.0, 200.0, "SD")]


def test_equal_calls_merge_and_the_last_status_runs_to_the_end():
    assert response_segments([28, 90], ["SD", "SD"], np.nan, 365.0) == [(0.0, 28.0, BEFORE_ASSESSMENT),
                                                                        (28.0, 365.0, "SD")]


def test_progression_on_an_assessment_day_and_progression_is_final():
    assert response_segments([28, 90], ["PD", "PD"], 28.0, 100.0) == [(0.0, 28.0, BEFORE_ASSESSMENT),
                                                                      (28.0, 100.0, "PD")]
    # blasts fell back below the threshold at day 90: the lane stays PD after progression
    assert response_segments([28, 90], ["SD", "SD"], 50.0, 100.0) == [(0.0, 28.0, BEFORE_ASSESSMENT),
                                                                      (28.0, 50.0, "SD"), (50.0, 100.0, "PD")]


def test_missing_assessment_keeps_the_status_and_late_events_are_cut():
    assert response_segments([28, 90, 180], ["PR", None, "SD"], np.nan, 120.0) == [
        (0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 120.0, "PR")]
    assert response_segments([28], ["SD"], 400.0, 365.0) == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 365.0, "SD")]


def test_not_evaluable_has_one_neutral_stretch():
    segs = response_segments(ASSESS, ["SD", "PD", "PD", "PD", "PD"], 60.0, 365.0, evaluable=False)
    assert segs == [(0.0, 365.0, NOT_EVALUABLE)]


def test_segments_tile_the_lane():
    rng = np.random.default_rng(0)
    names = list(RESPONSE_CODES)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        days = np.sort(rng.choice(np.arange(1, 300), k, replace=False)).astype(float)
        resp = [names[i] for i in rng.integers(0, 4, k)]
        ttp = float(rng.choice([np.nan, float(rng.integers(days[0], 320))]))
        segs = response_segments(days, resp, ttp, 300.0)
        assert segs[0][0] == 0.0 and segs[-1][1] == 300.0
        assert all(a < b for a, b, _ in segs)
        assert all(segs[i][1] == segs[i + 1][0] and segs[i][2] != segs[i + 1][2] for i in range(len(segs) - 1))
        if np.isfinite(ttp) and ttp < 300:
            assert all(s == "PD" for a, b, s in segs if b > ttp)  # PD from the progression day on


def test_simulated_lanes_from_the_response_table():
    ds = _cohort().isel(replicate=0)
    lanes = simulated_lanes(ds[["response", "time_to_progression"]], 365.0)
    assert lanes["p01"] == [(0.0, 365.0, NOT_EVALUABLE)]
    assert lanes["p02"] == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 365.0, "SD")]
    assert lanes["p03"] == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 90.0, "CR"), (90.0, 180.0, "PR"),
                            (180.0, 230.0, "SD"), (230.0, 365.0, "PD")]
    assert lanes["p09"] == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 176.0, "SD"), (176.0, 365.0, "PD")]
    assert lanes["p10"] == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 365.0, "PD")]
    # a not-assessed code keeps the status
    ds2 = ds.copy(deep=True)
    ds2["response"].loc[{"patient": "p02", "assessment": 90.0}] = RESPONSE_FILL
    assert simulated_lanes(ds2[["response", "time_to_progression"]], 365.0)["p02"] == lanes["p02"]


def test_observed_lanes_use_the_same_rule():
    o = types.SimpleNamespace(patient="p09", evaluable=True, first_response="SD", first_assessment_day=28.0,
                              progressed=True, progression_day_lo=90.0, progression_day_hi=180.0,
                              last_followup_day=None, lost_to_follow_up=False)
    assert observed_segments(o) == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 180.0, "SD")]
    o.last_followup_day = 250.0
    assert observed_segments(o) == [(0.0, 28.0, BEFORE_ASSESSMENT), (28.0, 180.0, "SD"), (180.0, 250.0, "PD")]
    ne = types.SimpleNamespace(patient="p01", evaluable=False, first_response=None, first_assessment_day=None,
                               progressed=None, progression_day_lo=None, progression_day_hi=None,
                               last_followup_day=None, lost_to_follow_up=False)
    assert [s for _, _, s in observed_segments(ne)] == [NOT_EVALUABLE]


# --- the figure's data --------------------------------------------------------------------------
def test_trial_figure_lane_colours_and_marks():
    ds = _cohort()
    fig = plot.trial_figure(ds)
    lanes = _gids(fig, "lane:")
    assert sorted(lanes) == sorted(TABLE)
    expected = simulated_lanes(ds.isel(replicate=0)[["response", "time_to_progression"]], 365.0)
    for pid, coll in lanes.items():
        if pid == "p01":
            continue
        faces = [tuple(c) for c in coll.get_facecolors()]
        want = [matplotlib.colors.to_rgba(plot.RESPONSE_COLOURS.get(s, plot.NOT_ASSESSED_COLOUR))
                for _, _, s in expected[pid]]
        assert faces == want, pid
        assert [float(p.vertices[:, 0].min()) for p in coll.get_paths()] == [a for a, _, _ in expected[pid]]
    # p09 is yellow (SD) at day 100, red (PD) from its progression day 176
    p09 = expected["p09"]
    assert [s for a, b, s in p09 if a <= 100 < b] == ["SD"] and [s for a, b, s in p09 if a <= 200 < b] == ["PD"]
    # progression marks only for evaluable patients that progressed; none for the not-evaluable p01
    marks = _gids(fig, "progression:")
    assert sorted(marks) == ["p03", "p09", "p10"]
    assert float(marks["p09"].get_xdata()[0]) == 176.0
    assert "p01" not in _gids(fig, "censored:")
    assert sorted(_gids(fig, "censored:")) == ["p02"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "not evaluable" in texts


def test_trial_figure_chimerism_stops_at_the_detection_limit():
    ds = _cohort()
    for limit in (CHIMERISM_DETECTION_LIMIT_PCT, 0.1):
        fig = plot.trial_figure(ds, detection_limit_pct=limit)
        line = _gids(fig, "median:")["donor_chimerism_nk"]
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        drawn = np.isfinite(y)
        assert drawn.any() and (y[drawn] >= limit).all()
        # the synthetic curve is below the limit after day 1 + 10 * log10(1 / limit): nothing drawn there
        last = 1 + 10 * np.log10(1.0 / limit)
        assert x[drawn].max() <= last and x[drawn].max() > last - 1.5
        assert not drawn[x <= 0].any()  # zero chimerism before the infusion is not drawn at a floor
        ax = line.axes
        assert f"{limit:g} %" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(f"detection limit {limit:g} %" in t for t in labels)
        assert _gids(fig, "detection_limit")[""].get_ydata()[0] == limit
        plt.close(fig)
    with pytest.raises(ValueError, match="detection_limit_pct"):
        plot.trial_figure(ds, detection_limit_pct=0)


def test_above_detection_and_band_masking():
    v = np.array([0.0, 1e-4, 0.009, 0.01, 0.5, np.nan, 2.0])
    out = above_detection(v, 0.01)
    np.testing.assert_array_equal(np.isnan(out), [True, True, True, False, False, True, False])
    np.testing.assert_array_equal(out[[3, 4, 6]], [0.01, 0.5, 2.0])
    assert v[1] == 1e-4  # input untouched
    med, lo, hi = detectable_band(np.array([0.001, 0.005, 0.5]), np.array([0.0, 0.001, 0.2]),
                                  np.array([0.005, 0.05, 1.0]), 0.01)
    np.testing.assert_array_equal(np.isnan(med), [True, True, False])
    np.testing.assert_array_equal(np.isnan(hi), [True, False, False])
    np.testing.assert_array_equal(lo[1:], [0.01, 0.2])  # band cut at the limit, not at a floor
    assert np.isnan(lo[0])


def test_protocol_marks_are_in_the_legends():
    fig = plot.trial_figure(_cohort())
    for ax in fig.axes[:3]:
        leg = ax.get_legend()
        assert leg is not None
        labels = [t.get_text() for t in leg.get_texts()]
        assert "Flu/Cy lymphodepletion" in labels and "NK infusion" in labels, labels


def test_pd_thresholds_are_colour_matched_to_patients():
    ds = _cohort()
    fig = plot.trial_figure(ds)
    blasts, thresholds = _gids(fig, "blasts:"), _gids(fig, "pd_threshold:")
    assert sorted(blasts) == sorted(thresholds) == sorted(TABLE)
    colours = patient_colours(ds.patient.values)
    assert len(set(colours.values())) == len(TABLE)  # one colour per patient
    for pid in TABLE:
        c = matplotlib.colors.to_rgba(colours[pid])
        assert matplotlib.colors.to_rgba(blasts[pid].get_color()) == c
        assert tuple(thresholds[pid].get_colors()[0][:3]) == c[:3]
        seg = thresholds[pid].get_segments()[0]
        assert seg[0, 1] == pytest.approx(float(ds.pd_threshold_pct.sel(patient=pid)))
    ax = blasts["p01"].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "p09 (g2)" in labels and any("PD threshold" in t for t in labels)
    assert {t.get_text() for t in ax.texts} >= set(TABLE)  # each threshold line labelled with its patient


def test_save_figure_runs_the_layout_once_with_the_same_pixels(tmp_path):
    """save_figure runs the constrained layout itself (one draw instead of two): same PNG bytes as savefig."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from nksim.fileio import _layout_once, save_figure

    ds = _cohort()
    fig = plot.trial_figure(ds)
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    _layout_once(fig, 110)
    assert not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)  # the fast path is taken
    plain = tmp_path / "plain.png"
    plot.trial_figure(ds).savefig(plain, dpi=110)  # matplotlib: layout in a first, unrendered draw
    fast = save_figure(plot.trial_figure(ds), tmp_path / "fast.png", dpi=110)
    assert fast.read_bytes() == plain.read_bytes()
    plot.trial_figure(ds).savefig(plain, dpi=60)  # another resolution
    assert save_figure(plot.trial_figure(ds), tmp_path / "fast60.png", dpi=60).read_bytes() == plain.read_bytes()
