"""Numeric baseline: a small configuration's outputs are pinned (tests/baseline/baseline.nc).

A difference means the numbers nksim produces changed. If that is a bug, fix it; if it is
meant (a model change), regenerate the baseline with ``python tests/baseline/make_baseline.py``,
bump the version and record the change in CHANGELOG.md under **[outputs changed]**.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

HERE = Path(__file__).resolve().parent / "baseline"
_spec = importlib.util.spec_from_file_location("make_baseline", HERE / "make_baseline.py")
make_baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_baseline)

ADVICE = ("outputs changed. If deliberate: python tests/baseline/make_baseline.py, bump nksim/_version.py "
          "and add an [outputs changed] entry to CHANGELOG.md")


@pytest.fixture(scope="module")
def pinned() -> xr.Dataset:
    return xr.load_dataset(make_baseline.BASELINE, engine="h5netcdf")


@pytest.fixture(scope="module")
def current() -> xr.Dataset:
    return make_baseline.simulate_baseline()


def test_same_variables_and_coordinates(pinned, current):
    assert set(current.data_vars) == set(pinned.data_vars), ADVICE
    assert set(current.coords) == set(pinned.coords), ADVICE
    for name in pinned.variables:
        assert current[name].dims == pinned[name].dims, f"{name}: dims differ; {ADVICE}"
        for key in ("units", "long_name", "flag_values", "flag_meanings"):
            a, b = current[name].attrs.get(key), pinned[name].attrs.get(key)
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"{name}.{key}: {a!r} != {b!r}; {ADVICE}"


def test_values_match_the_baseline(pinned, current):
    for v in sorted(pinned.data_vars):
        a, b = current[v].values, pinned[v].values
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b, err_msg=f"{v}: {ADVICE}")
        else:
            # same platform, same seed: bitwise equal in practice; 1e-12 allows for libm differences
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True, err_msg=f"{v}: {ADVICE}")
    for c in pinned.coords:
        np.testing.assert_array_equal(current[c].values, pinned[c].values, err_msg=f"coordinate {c}: {ADVICE}")


def test_baseline_exercises_every_process(pinned):
    """The pinned configuration would notice a change in any process (drugs, NK, cell turnover)."""
    final = pinned.region_counts.isel(time=-1)
    for counter in ("blast_births", "blast_deaths", "blast_drug_deaths", "blasts_killed_by_nk", "normal_births",
                    "normal_deaths", "normal_drug_deaths", "nk_homed", "nk_egressed", "nk_died"):
        assert int(final.sel(counter=counter).sum()) > 0, f"baseline configuration never exercises {counter}"
    assert float(pinned.donor_chimerism_pbmc.max()) > 0
