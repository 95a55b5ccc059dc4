"""Reproducibility: same seed -> identical output whatever the worker count, order or subset.

Common random numbers across protocols that differ only later in time.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import nksim
from nksim.protocol import Event
from nksim.streams import generators, patient_key, seed_sequence


def strip(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs.pop("history", None)  # creation timestamp
    return ds


def assert_same_values(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


@pytest.fixture(scope="module")
def params(small_params):
    return small_params.with_values({"lattice.side": 6})


@pytest.fixture(scope="module")
def cohort(params, ahmadvand):
    return nksim.simulate_cohort(params, ahmadvand, replicates=2, seed=99)


def test_same_seed_identical(cohort, params, ahmadvand):
    again = nksim.simulate_cohort(params, ahmadvand, replicates=2, seed=99)
    xr.testing.assert_identical(strip(cohort), strip(again))


def test_different_seed_differs(cohort, params, ahmadvand):
    other = nksim.simulate_cohort(params, ahmadvand, replicates=2, seed=100)
    assert not np.array_equal(cohort.region_counts.values, other.region_counts.values)
    assert not np.array_equal(cohort.marrow_blast_pct.values, other.marrow_blast_pct.values)
    assert other.attrs["seed"] == 100 and cohort.attrs["seed"] == 99


def test_replicates_and_patients_are_independent_draws(cohort):
    rc = cohort.region_counts.values
    assert not np.array_equal(rc[:, 0], rc[:, 1]), "replicates must differ"
    assert not np.array_equal(rc[0], rc[1]), "patients must differ"
    assert len(np.unique(cohort.baseline_blast_pct.values)) == cohort.baseline_blast_pct.size


@pytest.mark.parametrize("patient, replicate", [("p01", 0), ("p07", 1)])
def test_single_simulation_equals_cohort_cell(cohort, params, ahmadvand, patient, replicate):
    one = nksim.simulate(params, ahmadvand, patient, seed=99, replicate=replicate)
    assert one.patient.item() == patient and one.replicate.item() == replicate
    assert_same_values(one, cohort.sel(patient=patient, replicate=replicate))


def test_replicate_beyond_cohort_size_is_a_fresh_stream(cohort, params, ahmadvand):
    one = nksim.simulate(params, ahmadvand, "p01", seed=99, replicate=5)
    assert not np.array_equal(one.region_counts.values, cohort.region_counts.sel(patient="p01", replicate=0).values)


def test_worker_count_does_not_change_results(cohort, params, ahmadvand):
    threaded = nksim.simulate_cohort(params, ahmadvand, replicates=2, seed=99, workers=2)
    xr.testing.assert_identical(strip(cohort), strip(threaded))


def test_patient_order_and_subset_do_not_change_results(cohort, params, ahmadvand):
    sub = nksim.simulate_cohort(params, ahmadvand, replicates=2, seed=99, patients=["p09", "p02", "p05"])
    assert list(sub.patient.values) == ["p09", "p02", "p05"]
    for p in ("p09", "p02", "p05"):
        assert_same_values(sub.sel(patient=p), cohort.sel(patient=p))
    assert list(sub.group.values) == ["g2", "g1", "g1"]


def test_more_replicates_keep_the_first_ones(cohort, params, ahmadvand):
    three = nksim.simulate_cohort(params, ahmadvand, replicates=3, seed=99, patients=["p04"])
    assert_same_values(three.sel(patient="p04", replicate=[0, 1]), cohort.sel(patient="p04"))


def test_streams_are_stable_and_distinct():
    assert patient_key("p01") == patient_key("p01") != patient_key("p02")
    a = generators(5, "p01", 0)
    b = generators(5, "p01", 0)
    for name in a:
        assert a[name].random() == b[name].random()
    draws = [g.random() for g in generators(5, "p01", 0).values()]
    assert len(set(draws)) == len(draws), "each process has its own stream"
    with pytest.raises(ValueError):
        seed_sequence(-1, "p01", 0)
    with pytest.raises(ValueError):
        seed_sequence(1, "p01", -1)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_seed_or_replicates_rejected(params, ahmadvand, bad):
    with pytest.raises(ValueError):
        nksim.simulate_cohort(params, ahmadvand, seed=bad, patients=["p01"])
    with pytest.raises(ValueError):
        nksim.simulate_cohort(params, ahmadvand, replicates=bad if bad != 1.5 else 0, patients=["p01"])


def _second_infusion_on(protocol, day):
    groups = {g: [e if e.day != 7 else Event(float(day), e.kind, e.dose, e.source) for e in evs]
              for g, evs in protocol.groups.items()}
    return protocol.with_events(protocol.events, groups)


def test_common_random_numbers_until_schedules_differ(params, ahmadvand):
    late = _second_infusion_on(ahmadvand, 14)
    a = nksim.simulate_cohort(params, ahmadvand, seed=7, patients=["p02", "p08"])
    b = nksim.simulate_cohort(params, late, seed=7, patients=["p02", "p08"])
    # same virtual patients
    for v in ("baseline_blast_pct", "blast_net_growth_rate", "susceptible_fraction", "host_nk_recovery_rate",
              "host_t_recovery_rate"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    # the record at day 7 is the state before day-7 events: identical up to and including it
    early = dict(time=slice(None, 7))
    for v in a.data_vars:
        if "time" in a[v].dims:
            np.testing.assert_array_equal(a[v].sel(**early).values, b[v].sel(**early).values, err_msg=v)
    early_snap = dict(snapshot_time=slice(None, 7))
    np.testing.assert_array_equal(a.lattice_nk.sel(**early_snap).values, b.lattice_nk.sel(**early_snap).values)
    # and different from day 8 on (the second dose is in blood in one arm only)
    assert np.all(a.donor_nk_blood.sel(time=8).values != b.donor_nk_blood.sel(time=8).values)
    assert not np.array_equal(a.region_counts.sel(time=slice(8, None)).values,
                              b.region_counts.sel(time=slice(8, None)).values)


def test_lymphodepletion_regimens_share_the_virtual_patient(params, ahmadvand):
    hi = nksim.load_protocol("hi_cy_flu")
    a = nksim.simulate_cohort(params, ahmadvand, seed=3, patients=["p05"])
    b = nksim.simulate_cohort(params, hi, seed=3, patients=["p05"])
    for v in ("baseline_blast_pct", "blast_net_growth_rate", "susceptible_fraction", "host_nk_recovery_rate",
              "host_t_recovery_rate"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    # same initial marrow (the init stream does not depend on the schedule)
    np.testing.assert_array_equal(a.region_counts.isel(time=0).values, b.region_counts.isel(time=0).values)
