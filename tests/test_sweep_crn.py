"""Common random numbers: same patient + replicate -> same streams under every schedule."""
from __future__ import annotations

import numpy as np
import pytest
from _sweep_util import tiny_spec

from nksim.protocol import Patient
from nksim.simulate import run_one
from nksim.sweep import SweepStore, build_plan, run_batch, run_sweep


@pytest.fixture(scope="module")
def plan():
    # 0: 50/50 days 0 and 7; 1: 50/50 days 0 and 14; 2: 75/25 days 0 and 7
    spec = tiny_spec(factors={"interval": [7, 14]}, cohort={"patients": 3, "replicates": 2},
                     scenarios=[{"interval": 7, "dose_split": [75, 25]}], sweep={"batch_size": 6})
    return build_plan(spec)


def _kernel(plan, s, patient, rep):
    return run_one(plan.parameters(s, 0), plan.protocol(s), Patient(patient, "all"), plan["seed"], rep)


@pytest.mark.parametrize("other, first_difference", [(1, 7.0), (2, 0.0)])
def test_identical_until_first_differing_event(plan, other, first_difference):
    """Records agree up to and including the first day whose events differ, and differ after it.

    A record is the state at the start of each day, before its events.
    """
    for patient in plan.patients[:2]:
        for rep in range(2):
            a, b = _kernel(plan, 0, patient, rep), _kernel(plan, other, patient, rep)
            assert a.effects == b.effects  # same virtual patient
            start = plan.protocol(0).start_day
            k = int(first_difference - start)  # row of the first differing event day
            np.testing.assert_array_equal(a.rec[:k + 1], b.rec[:k + 1])
            np.testing.assert_array_equal(a.cnt[:k + 1], b.cnt[:k + 1])
            assert not np.array_equal(a.rec[k + 1], b.rec[k + 1])


def test_batch_outputs_share_prefix_on_common_axis(plan):
    """The same holds for the stored series, placed on the days-since-first-infusion axis."""
    ra, rb = run_batch(plan, 0), run_batch(plan, 1)  # one batch = whole cohort of a scenario
    time = plan.time_start + np.arange(plan.n_time)
    early = time <= 7
    for name in plan["time_series"]:
        np.testing.assert_array_equal(ra["arrays"][name][..., early], rb["arrays"][name][..., early])
    assert not np.array_equal(ra["arrays"]["donor_nk_blood"][..., ~early], rb["arrays"]["donor_nk_blood"][..., ~early])
    for name in ("baseline_blast_pct", "blast_net_growth_rate", "susceptible_fraction", "host_nk_recovery_rate",
                 "host_t_recovery_rate"):
        np.testing.assert_array_equal(ra["arrays"][name], rb["arrays"][name])


def test_paired_difference_variance_far_below_unpaired(tmp_path):
    spec = tiny_spec(factors={"interval": [7, 14]}, cohort={"patients": 12, "replicates": 2}, sweep={"batch_size": 24})
    run_sweep(spec, tmp_path / "crn.zarr", workers=0)
    st = SweepStore.open_existing(tmp_path / "crn.zarr")
    i = int(np.searchsorted(st.coord("time"), 90))
    x = st.read("marrow_blast_pct")[:, 0, :, :, i].astype(float)  # scenario, patient, replicate
    paired = x[0] - x[1]
    unpaired = x[0] - np.roll(x[1], 1, axis=0)  # scenario 1 of another virtual patient
    assert np.var(paired) < 0.05 * np.var(unpaired), (np.var(paired), np.var(unpaired))
