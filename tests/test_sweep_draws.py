"""Parameter draws of a sweep: weighted posterior resampling with its digest, priors on their scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import nksim
from nksim.calibration.posterior import final_population
from nksim.errors import NksimInputError
from nksim.sweep.draws import file_digest, posterior_draws, posterior_file, prior_draws, prior_scale


@pytest.fixture(scope="module")
def params():
    return nksim.load_parameters("default")


def _fake_posterior(path, values, weights, key="blasts.net_growth_rate"):
    ds = xr.Dataset({key.replace(".", "__"): (("generation", "particle"), np.array([values])),
                     "weight": (("generation", "particle"), np.array([weights]))},
                    attrs={"fitted_parameters": key})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_posterior_draws_follow_the_weights(tmp_path, params):
    """Multinomial resampling: each particle is drawn in proportion to its weight (chi-square, 1e-3 level)."""
    values = [0.01, 0.02, 0.03, 0.04]
    weights = [0.1, 0.2, 0.3, 0.4]
    path = _fake_posterior(tmp_path / "post.nc", values, weights)
    n = 4000
    draws = posterior_draws(params, path, n, seed=7)
    counts = np.array([sum(d["blasts.net_growth_rate"] == v for d in draws) for v in values])
    expected = n * np.array(weights)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, (counts, expected)  # chi-square(3) 0.999 quantile
    assert posterior_draws(params, path, 50, seed=7) == draws[:50]  # the sweep seed fixes the draws
    assert posterior_draws(params, path, 50, seed=8) != draws[:50]


def test_shipped_posterior_resampling_and_digest(params):
    path = posterior_file("posterior")
    assert path.is_file()
    vals, w = final_population(xr.load_dataset(path, engine="h5netcdf"))
    draws = posterior_draws(params, path, 20, seed=1)
    # 0.6.0: the committed posterior's host.t_drug_sensitivity is carried to the per-drug T sensitivities
    # (nksim.sweep.draws.carry_deprecated: the model's values times the draw over the posterior's median)
    from nksim.calibration.posterior import weighted_quantile
    old = vals.pop("host.t_drug_sensitivity")
    median = weighted_quantile(old, w, [0.5])[0]
    for new in ("host.t_flu_sensitivity", "host.t_cy_sensitivity"):
        vals[new] = params[new] * old / median
    for d in draws:
        assert set(d) == set(vals)
        assert all(np.any(np.isclose(vals[k], v)) for k, v in d.items())
    assert len(file_digest(path)) == 16


def test_posterior_draws_reject_a_broken_file(tmp_path, params):
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"not a netcdf file")
    with pytest.raises(NksimInputError, match="posterior"):
        posterior_draws(params, bad, 3, seed=1)


def test_prior_draws_use_each_prior_scale(params):
    """Log-uniform where the prior spans a decade: the median of the draws is the geometric midpoint."""
    draws = prior_draws(params, 2000, seed=3)
    lo, hi = params.priors()["blasts.net_growth_rate"]
    assert prior_scale(lo, hi) == "log"
    x = np.array([d["blasts.net_growth_rate"] for d in draws])
    assert np.all((x >= lo) & (x <= hi))
    assert abs(np.median(np.log(x)) - 0.5 * (math.log(lo) + math.log(hi))) < 0.1 * math.log(hi / lo)
    lo2, hi2 = params.priors()["blasts.baseline_pct"]
    assert prior_scale(lo2, hi2) == "linear"
    y = np.array([d["blasts.baseline_pct"] for d in draws])
    assert abs(np.median(y) - 0.5 * (lo2 + hi2)) < 0.05 * (hi2 - lo2)
