"""Per-patient random effects: distributions, fixed covariates, stream alignment."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nksim.patients import EFFECT_META, PatientEffects, draw_effects


def logit(p):
    p = np.asarray(p)
    return np.log(p / (1 - p))


def test_zero_spread_gives_population_values(default_params):
    ps = default_params.with_values({
        "random_effects.baseline_blast_logit_sd": 0.0, "random_effects.blast_growth_log_sd": 0.0,
        "random_effects.susceptible_logit_sd": 0.0, "random_effects.host_recovery_log_sd": 0.0})
    eff = draw_effects(ps, np.random.default_rng(1))
    assert eff.baseline_blast_pct == pytest.approx(ps["blasts.baseline_pct"], rel=1e-12)
    assert eff.blast_net_growth_rate == ps["blasts.net_growth_rate"]
    assert eff.susceptible_fraction == pytest.approx(ps["blasts.susceptible_fraction"], rel=1e-12)
    assert eff.host_nk_recovery_rate == ps["host.nk_recovery_rate"]
    assert eff.host_t_recovery_rate == ps["host.t_recovery_rate"]
    assert eff.body_weight == ps["anatomy.body_weight"]
    assert eff.body_surface_area == ps["anatomy.body_surface_area"]


def test_covariates_replace_the_draw_and_keep_streams_aligned(default_params):
    cov = {"baseline_blast_pct": 12.5, "body_weight": 81.0, "body_surface_area": 1.95}
    a = draw_effects(default_params, np.random.default_rng(7), cov)
    b = draw_effects(default_params, np.random.default_rng(7))
    assert (a.baseline_blast_pct, a.body_weight, a.body_surface_area) == (12.5, 81.0, 1.95)
    assert b.baseline_blast_pct != 12.5
    # the other effects use the same deviates whether or not a covariate is fixed
    assert a.blast_net_growth_rate == b.blast_net_growth_rate
    assert a.susceptible_fraction == b.susceptible_fraction
    assert a.host_nk_recovery_rate == b.host_nk_recovery_rate


def test_effect_metadata_covers_fields():
    assert set(EFFECT_META) == set(PatientEffects.__dataclass_fields__)


def test_population_distributions(default_params):
    n = 4000
    rng = np.random.default_rng(2024)
    effs = [draw_effects(default_params, rng) for _ in range(n)]
    p = default_params

    def check_normal(x, centre, sd, name):
        # sample median within 4 SE (SE of a normal median = 1.2533 sd / sqrt(n));
        # sample sd within 4 relative SE (1 / sqrt(2 n))
        x = np.asarray(x)
        assert abs(np.median(x) - centre) < 4 * 1.2533 * sd / math.sqrt(n), name
        assert abs(x.std(ddof=1) / sd - 1) < 4 / math.sqrt(2 * n), name

    check_normal(logit(np.array([e.baseline_blast_pct for e in effs]) / 100), logit(p["blasts.baseline_pct"] / 100),
                 p["random_effects.baseline_blast_logit_sd"], "baseline blasts (logit-normal)")
    check_normal(np.log([e.blast_net_growth_rate for e in effs]), math.log(p["blasts.net_growth_rate"]),
                 p["random_effects.blast_growth_log_sd"], "growth rate (log-normal)")
    check_normal(logit([e.susceptible_fraction for e in effs]), logit(p["blasts.susceptible_fraction"]),
                 p["random_effects.susceptible_logit_sd"], "susceptible fraction (logit-normal)")
    check_normal(np.log([e.host_nk_recovery_rate for e in effs]), math.log(p["host.nk_recovery_rate"]),
                 p["random_effects.host_recovery_log_sd"], "host NK recovery (log-normal)")
    # one factor scales both lineages: T recovery is NK recovery times the population ratio
    np.testing.assert_allclose([e.host_t_recovery_rate / e.host_nk_recovery_rate for e in effs],
                               p["host.t_recovery_rate"] / p["host.nk_recovery_rate"], rtol=1e-12)
    # the four effects are independent: |correlation| < 4 / sqrt(n)
    z = np.column_stack([
        logit(np.array([e.baseline_blast_pct for e in effs]) / 100), np.log([e.blast_net_growth_rate for e in effs]),
        logit([e.susceptible_fraction for e in effs]), np.log([e.host_nk_recovery_rate for e in effs])])
    corr = np.corrcoef(z.T)
    assert np.all(np.abs(corr[np.triu_indices(4, 1)]) < 4 / math.sqrt(n))


def test_negative_growth_rate_keeps_its_sign(default_params):
    ps = default_params.with_values({"blasts.net_growth_rate": -0.05})
    rng = np.random.default_rng(3)
    rates = [draw_effects(ps, rng).blast_net_growth_rate for _ in range(200)]
    assert all(r < 0 for r in rates)


@pytest.mark.parametrize("key, value, field", [
    ("blasts.susceptible_fraction", 0.0, "susceptible_fraction"),
    ("blasts.susceptible_fraction", 1.0, "susceptible_fraction"),
    ("blasts.baseline_pct", 0.0, "baseline_blast_pct"),
    ("blasts.baseline_pct", 100.0, "baseline_blast_pct"),
])
def test_degenerate_fractions_are_not_spread(default_params, key, value, field):
    ps = default_params.with_values({key: value})
    rng = np.random.default_rng(4)
    vals = {getattr(draw_effects(ps, rng), field) for _ in range(20)}
    assert vals == {value}
