"""Two-stage calibration: the combined posterior keeps stage A's population and stage B's marginals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from nksim.calibration.posterior import final_population, summary_rows, var_name, weighted_quantile
from nksim.calibration.stages import combine_stages
from nksim.errors import NksimInputError


def _posterior(keys, values, weights, *, generations=2):
    """A posterior.nc-shaped Dataset: ``values[k]`` and ``weights`` are the last generation."""
    n = weights.size
    data = {}
    for k in keys:
        arr = np.full((generations, n), np.nan)
        arr[-1] = values[k]
        arr[0] = values[k][::-1]
        data[var_name(k)] = xr.DataArray(arr, dims=("generation", "particle"), attrs={
            "units": "1", "long_name": k, "prior_lo": 0.0, "prior_hi": 10.0, "scale": "linear"})
    w = np.full((generations, n), 1.0 / n)
    w[-1] = weights / weights.sum()
    data["weight"] = xr.DataArray(w, dims=("generation", "particle"))
    data["epsilon"] = xr.DataArray(np.linspace(10, 1, generations), dims=("generation",))
    return xr.Dataset(data, coords={"generation": np.arange(generations), "particle": np.arange(n)},
                      attrs={"fitted_parameters": " ".join(keys), "total_simulations": 100, "title": "t"})


@pytest.fixture
def stages():
    rng = np.random.default_rng(3)
    n = 400
    a = _posterior(["x", "y"], {"x": rng.normal(1, 0.1, n), "y": rng.normal(5, 1, n)}, rng.uniform(0.2, 1.0, n))
    nb = 300
    b = _posterior(["y", "z", "x", "u"], {"x": rng.normal(9, 1, nb), "y": rng.normal(0, 1, nb),
                                           "z": rng.gamma(2.0, 1.0, nb), "u": rng.uniform(0, 1, nb)},
                   rng.uniform(0.1, 1.0, nb))
    return a, b


def test_stage_a_population_is_kept_exactly(stages):
    a, b = stages
    c = combine_stages(a, b, seed=1)
    va, wa = final_population(a)
    vc, wc = final_population(c)
    np.testing.assert_array_equal(wc, wa)
    for k in ("x", "y"):
        np.testing.assert_array_equal(vc[k], va[k])
        # earlier generations too (the diagnostics stay those of stage A)
        np.testing.assert_array_equal(c[var_name(k)].values, a[var_name(k)].values)
    assert c.attrs["fitted_parameters"].split() == ["y", "z", "x", "u"]  # stage B's order
    assert c.attrs["stage_a_fitted_parameters"] == "x y"
    assert c.attrs["total_simulations"] == 200


def test_other_parameters_follow_stage_b_marginals(stages):
    a, b = stages
    c = combine_stages(a, b, seed=2)
    vb, wb = final_population(b)
    vc, wc = final_population(c)
    # every paired value is a stage-B particle's value, rows kept together (z and u of one particle)
    rows_b = set(zip(vb["z"].round(12), vb["u"].round(12)))
    assert set(zip(vc["z"].round(12), vc["u"].round(12))) <= rows_b
    # the weighted marginal medians agree within a Monte-Carlo tolerance: SE of a median of a
    # resample of size ESS is about 1.25 sd / sqrt(ESS); allow 4 SE
    ess = 1.0 / np.sum(wc ** 2)
    for k in ("z", "u"):
        m_b = weighted_quantile(vb[k], wb, [0.5])[0]
        m_c = weighted_quantile(vc[k], wc, [0.5])[0]
        assert abs(m_c - m_b) < 4 * 1.25 * vb[k].std() / math.sqrt(ess), k
    # earlier generations of stage-B-only parameters are empty
    assert np.isnan(c[var_name("z")].values[0]).all()


def test_combination_is_seeded(stages):
    a, b = stages
    assert combine_stages(a, b, seed=5).identical(combine_stages(a, b, seed=5))
    z5 = combine_stages(a, b, seed=5)["z"].values[-1]
    assert not np.array_equal(z5, combine_stages(a, b, seed=6)["z"].values[-1])


def test_summary_rows_cover_every_parameter(stages):
    a, b = stages
    rows = {r["parameter"]: r for r in summary_rows(combine_stages(a, b, seed=1))}
    assert list(rows) == ["y", "z", "x", "u"]
    va, wa = final_population(a)
    assert float(rows["x"]["median"]) == pytest.approx(weighted_quantile(va["x"], wa, [0.5])[0], rel=1e-5)


def test_stage_a_must_refit_a_subset(stages):
    a, b = stages
    b2 = b.drop_vars(var_name("x"))
    b2.attrs["fitted_parameters"] = "y z u"
    with pytest.raises(NksimInputError, match=r"stage A fits \['x'\]"):
        combine_stages(a, b2, seed=1)
    with pytest.raises(NksimInputError, match="not a permutation"):
        combine_stages(a, b, seed=1, order=["x", "y"])
