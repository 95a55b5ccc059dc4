"""The observed trial beside a run (``nksim run``'s summary and figure): right counts, right intervals, right cases.

* the trial's counts in the committed predictive check equal those of the outcome table;
* this run's counts, read from the Dataset, equal the calibration's own per-patient rule
  (:func:`nksim.calibration.summaries.simulated_outcome` on the raw kernel record);
* the 90 % predictive intervals are shown for the shipped default model only, and nothing is shown
  for another protocol, a modified copy of the trial's, or a subset of its patients;
* ``nksim run`` prints the comparison and ``trial.png`` draws the trial's lanes and its
  Kaplan-Meier curve.
"""
from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import nksim
from nksim.calibration.data import load_outcomes
from nksim.calibration.summaries import CATEGORIES, make_slots, simulated_outcome
from nksim.cli import main
from nksim.io import open_output
from nksim.observables import response_thresholds
from nksim.resources import data_path
from nksim.simulate import run_one
from nksim.trial_reference import (
    COMMITTED_CHECKS,
    STATISTICS,
    ReferenceRow,
    TrialReference,
    reference_table,
    simulated_categories,
    trial_reference,
)

SMALL = {"lattice.side": 4, "lattice.voxel_side": 1600.0}
ASSESS = [28.0, 90.0, 180.0, 270.0, 365.0]


@pytest.fixture(scope="module")
def trial():
    return nksim.load_protocol("ahmadvand2023")


@pytest.fixture(scope="module")
def small_cohort(trial):
    params = nksim.load_parameters("default").with_values(SMALL)
    return params, nksim.simulate_cohort(params, trial, replicates=3, seed=11, workers=2)


def _slots():
    _, outcomes_rel, _ = COMMITTED_CHECKS["ahmadvand2023"]
    path = data_path("calibration") / outcomes_rel
    return make_slots(load_outcomes(path), ASSESS, source=str(path))


def test_the_committed_check_holds_the_outcome_tables_counts():
    slots = _slots()
    cats = [s.category for s in slots]
    check_rel, _, _ = COMMITTED_CHECKS["ahmadvand2023"]
    check = open_output(data_path("calibration") / check_rel)
    for name, (_, counted) in STATISTICS.items():
        assert check[name].attrs["observed"] == sum(c in counted for c in cats), name
        assert check[name].attrs["interval_90_lo"] <= check[name].attrs["interval_90_hi"]
    # the trial as published: 3 PD, 0 CR/PR at day 28, 5 SD followed, 3 of them PD at 9 months
    assert [sum(c in STATISTICS[k][1] for c in cats) for k in STATISTICS] == [3, 0, 5, 3, 3]


def test_run_counts_follow_the_calibrations_rule_patient_by_patient(trial, small_cohort):
    params, ds = small_cohort
    slots = _slots()
    cats = simulated_categories(ds, slots)
    th = response_thresholds(params)
    seen = set()
    for i, slot in enumerate(slots):
        patient = trial.patient(slot.patient)
        for r in range(ds.sizes["replicate"]):
            raw = run_one(params, trial, patient, 11, r)
            expected = simulated_outcome(raw.rec, trial.start_day, slot, ASSESS, th)[0]
            assert cats[i, r] == expected, (slot.patient, r)
            seen.add(expected)
    assert set(cats.ravel()) <= set(CATEGORIES)
    assert len(seen) >= 2  # the comparison is not vacuous: more than one category occurs


def test_intervals_only_for_the_default_model(trial, small_cohort):
    params, ds = small_cohort
    ref = trial_reference(ds, params, trial)
    assert ref is not None and ref.evaluable == 9 and ref.no_interval_reason is not None
    assert all(r.interval is None for r in ref.rows)
    assert all(r.simulated.shape == (3,) for r in ref.rows)
    default = trial_reference(ds, nksim.load_parameters("default"), trial)
    assert default.no_interval_reason is None
    pd_first = default.row("n_pd_first")
    assert pd_first.observed == 3 and pd_first.interval[0] <= 3 <= pd_first.interval[1]
    followed, progressed = default.row("n_followed_sd").simulated, default.row("n_progressed").simulated
    assert np.all(progressed <= followed) and np.all(followed + default.row("n_pd_first").simulated <= 9)


def test_no_reference_for_another_protocol_a_modified_trial_or_a_subset(trial, small_cohort):
    params, ds = small_cohort
    assert trial_reference(ds, params, nksim.load_protocol("hi_cy_flu")) is None
    changed = dataclasses.replace(trial, end_day=300.0)
    assert trial_reference(ds, params, changed) is None
    assert trial_reference(ds.sel(patient=["p02", "p03"]), params, trial) is None
    moved = dataclasses.replace(trial, origin="/elsewhere/ahmadvand2023.toml")  # same content, other path
    assert trial_reference(ds, params, moved) is not None


def _ref(values, interval=(0.0, 6.0)):
    row = ReferenceRow("n_pd_first", "PD at the first assessment", 3.0, np.asarray(values, dtype=float), interval)
    return TrialReference("Trial X", 9, (row,), (), "check.nc", 200, None if interval else "other model")


def test_table_marks_a_run_outside_the_interval_and_only_then():
    out = reference_table(_ref([7]))
    line = next(x for x in out.splitlines() if x.startswith("PD at the first"))
    assert line.split()[-4:] == ["3", "7", "0-6", "*"]
    assert "outside the model's 90 % interval" in out
    inside = reference_table(_ref([4]))
    assert "*" not in inside and "--replicates 20" in inside
    many = reference_table(_ref([1, 3, 7]))
    assert "median (range) of 3 trials" in many and "3 (1-7)" in many and "*" not in many
    other = reference_table(_ref([4], interval=None))
    assert "not shown: other model" in other


def test_nksim_run_prints_the_trial_and_draws_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "the trial beside the model (Ahmadvand 2023: 9 evaluable patients" in text
    line = next(x for x in text.splitlines() if x.startswith("PD at the first assessment"))
    assert line.split()[5] == "3" and line.split()[7] == "0-6"  # trial 3, model 90 % PI 0-6 (committed check)
    ds = open_output(out / "trial.nc")
    ref = trial_reference(ds, nksim.load_parameters("default"), nksim.load_protocol("ahmadvand2023"))
    assert line.split()[6] == f"{ref.row('n_pd_first').simulated[0]:g}"
    from nksim.plot import trial_figure

    fig = trial_figure(ds, reference=ref)
    gids = {a.get_gid() for ax in fig.axes for a in ax.get_children()}
    assert "km:observed" in gids
    assert {f"observed:p{i:02d}" for i in range(2, 11)} <= gids
    km = next(a for ax in fig.axes for a in ax.get_children() if a.get_gid() == "km:observed")
    t, s = km.get_data()
    assert s[0] == 1.0 and np.isclose(s[-1], 6 / 9 * 2 / 5)  # 3 of 9 PD at day 28, 3 of 5 at risk at day 270
    assert any("trial 3" in ax.get_title() for ax in fig.axes)
