"""Per-patient random effects: distributions, fixed covariates, stream alignment."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nksim.patients import EFFECT_META, N_EFFECT_NORMALS, PatientEffects, draw_effects, effects_from_normals


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
    # growth: log-normal within each kinetic class (the proliferative class shifted by log fold)
    log_fold = math.log(p["random_effects.proliferative_growth_fold"])
    cls = np.array([e.proliferative_disease for e in effs])
    within = np.log([e.blast_net_growth_rate for e in effs]) - log_fold * cls
    check_normal(within, math.log(p["blasts.net_growth_rate"]),
                 p["random_effects.blast_growth_log_sd"], "growth rate within class (log-normal)")
    check_normal(logit([e.susceptible_fraction for e in effs]), logit(p["blasts.susceptible_fraction"]),
                 p["random_effects.susceptible_logit_sd"], "susceptible fraction (logit-normal)")
    check_normal(np.log([e.host_nk_recovery_rate for e in effs]), math.log(p["host.nk_recovery_rate"]),
                 p["random_effects.host_recovery_log_sd"], "host NK recovery (log-normal)")
    # one factor scales both lineages: T recovery is NK recovery times the population ratio
    np.testing.assert_allclose([e.host_t_recovery_rate / e.host_nk_recovery_rate for e in effs],
                               p["host.t_recovery_rate"] / p["host.nk_recovery_rate"], rtol=1e-12)
    # the four effects are independent: |correlation| < 4 / sqrt(n)
    z = np.column_stack([
        logit(np.array([e.baseline_blast_pct for e in effs]) / 100), within,
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


def _mixture(params, fraction, fold, sd=0.0):
    return params.with_values({"random_effects.proliferative_fraction": fraction,
                               "random_effects.proliferative_growth_fold": fold,
                               "random_effects.blast_growth_log_sd": sd})


def test_growth_mixture_has_two_classes_at_the_stated_rates(default_params):
    ps = _mixture(default_params, 0.3, 12.0)
    rng = np.random.default_rng(5)
    effs = [draw_effects(ps, rng) for _ in range(3000)]
    r = ps["blasts.net_growth_rate"]
    cls = np.array([e.proliferative_disease for e in effs])
    rates = np.array([e.blast_net_growth_rate for e in effs])
    assert set(np.unique(cls)) == {0.0, 1.0}
    np.testing.assert_allclose(rates[cls == 0], r, rtol=1e-12)
    np.testing.assert_allclose(rates[cls == 1], 12.0 * r, rtol=1e-12)
    # class share within 4 binomial SE of the stated probability
    assert abs(cls.mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / cls.size)


@pytest.mark.parametrize("fraction, expected", [(0.0, 0.0), (1.0, 1.0)])
def test_growth_mixture_limits_are_one_class(default_params, fraction, expected):
    ps = _mixture(default_params, fraction, 7.0)
    rng = np.random.default_rng(6)
    assert {draw_effects(ps, rng).proliferative_disease for _ in range(200)} == {expected}


def test_class_draw_leaves_the_other_effects_on_their_deviates(default_params):
    """The class uses a sixth deviate; the other effects keep their deviates.

    The first five deviates (and so every other effect) are those of a stream that draws only
    five, as before 0.4.0, and the same whatever the class probability.
    """
    a = draw_effects(_mixture(default_params, 0.0, 10.0, sd=0.4), np.random.default_rng(8))
    b = draw_effects(_mixture(default_params, 1.0, 10.0, sd=0.4), np.random.default_rng(8))
    z = np.random.default_rng(8).standard_normal(5)
    r = default_params["blasts.net_growth_rate"]
    assert a.blast_net_growth_rate == pytest.approx(r * math.exp(0.4 * z[1]), rel=1e-12)
    assert b.blast_net_growth_rate == pytest.approx(10.0 * a.blast_net_growth_rate, rel=1e-12)
    for f in ("baseline_blast_pct", "susceptible_fraction", "host_nk_recovery_rate", "nk_il15_proliferation_max"):
        assert getattr(a, f) == getattr(b, f), f


def test_growth_mixture_is_independent_of_the_other_effects(default_params):
    ps = _mixture(default_params, 0.5, 10.0, sd=0.3)
    rng = np.random.default_rng(9)
    effs = [draw_effects(ps, rng) for _ in range(4000)]
    cls = np.array([e.proliferative_disease for e in effs])
    for f in ("baseline_blast_pct", "susceptible_fraction", "host_nk_recovery_rate"):
        x = np.array([getattr(e, f) for e in effs])
        assert abs(np.corrcoef(cls, x)[0, 1]) < 4 / math.sqrt(cls.size), f


# ----------------------------------------------------------------------------- regrowth from remission
def _remission(params, doubling=14.0, sd=0.6):
    return params.with_values({"blasts.remission_doubling_time": doubling, "blasts.remission_doubling_log_sd": sd})


def test_remission_regrowth_has_the_stated_doubling_time_distribution(default_params):
    """In remission the doubling time ln 2 / rate is log-normal(log 14 d, 0.6), whatever the kinetic classes say."""
    ps = _mixture(_remission(default_params), 0.9, 50.0, sd=0.1)  # active disease would be mostly proliferative
    rng = np.random.default_rng(12)
    effs = [draw_effects(ps, rng, disease="remission") for _ in range(4000)]
    assert {e.proliferative_disease for e in effs} == {0.0}
    log_t = np.log(math.log(2.0) / np.array([e.blast_net_growth_rate for e in effs]))
    # mean within 4 standard errors; SD within 5 % (its standard error is 0.6 / sqrt(2 n) = 1.1 %)
    assert abs(log_t.mean() - math.log(14.0)) < 4 * 0.6 / math.sqrt(log_t.size)
    assert abs(log_t.std() / 0.6 - 1.0) < 0.05


def test_remission_uses_the_growth_deviate_and_leaves_the_other_effects(default_params):
    ps = _mixture(_remission(default_params, 20.0, 0.5), 0.4, 30.0, sd=0.3)
    z = np.random.default_rng(13).standard_normal(N_EFFECT_NORMALS)
    act = draw_effects(ps, np.random.default_rng(13))
    rem = draw_effects(ps, np.random.default_rng(13), disease="remission")
    assert rem.blast_net_growth_rate == pytest.approx(math.log(2.0) / 20.0 * math.exp(0.5 * z[1]), rel=1e-12)
    for f in ("baseline_blast_pct", "susceptible_fraction", "host_nk_recovery_rate", "nk_il15_proliferation_max"):
        assert getattr(act, f) == getattr(rem, f), f
    with pytest.raises(ValueError, match="remission"):
        draw_effects(ps, np.random.default_rng(13), disease="cured")


def test_a_protocol_patient_in_remission_is_simulated_with_the_remission_rate(default_params):
    """The status travels from the protocol file to the run (the engine's growth law is tested in test_limits)."""
    import nksim

    ps = _remission(default_params, 10.0, 0.0).with_values(
        {"lattice.side": 4, "lattice.voxel_side": 200.0})
    proto = nksim.load_protocol("fehniger2018_cndo109")
    ds = nksim.simulate_cohort(ps, proto, patients=["feh_d3e5_01"], seed=3)
    np.testing.assert_allclose(ds.blast_net_growth_rate.values, math.log(2.0) / 10.0, rtol=1e-12)
    np.testing.assert_allclose(ds.proliferative_disease.values, 0.0)


# ----------------------------------------------------------------------------- between-patient rejection
#: The patient-level factors that are off by default: (SD key, PatientEffects field, deviate index, seed).
SPREADS_OFF_BY_DEFAULT = [("random_effects.rejection_log_sd", "rejection_factor", 6, 5),
                          ("random_effects.nk_death_log_sd", "death_factor", 7, 6),
                          ("random_effects.il15_production_log_sd", "il15_production_factor", 8, 7)]


@pytest.mark.parametrize("key, field, index, seed", SPREADS_OFF_BY_DEFAULT)
def test_spread_is_off_by_default_and_leaves_the_other_effects(default_params, key, field, index, seed):
    """Default SD 0: every patient's factor is exactly 1; a spread changes only its factor (its own deviate)."""
    assert default_params[key] == 0.0
    rng = np.random.default_rng(seed + 20)
    assert {getattr(draw_effects(default_params, rng), field) for _ in range(200)} == {1.0}
    a = draw_effects(default_params, np.random.default_rng(seed))
    b = draw_effects(default_params.with_values({key: 0.9}), np.random.default_rng(seed))
    z = np.random.default_rng(seed).standard_normal(N_EFFECT_NORMALS)
    assert getattr(b, field) == pytest.approx(math.exp(0.9 * z[index]), rel=1e-12)
    assert {f: v for f, v in a.as_dict().items() if f != field} == {f: v for f, v in b.as_dict().items() if f != field}
    # the deviates before it are those of a stream that draws only them (earlier patients keep their values)
    np.testing.assert_array_equal(np.random.default_rng(seed).standard_normal(index), z[:index])


def test_rejection_factor_is_log_normal_with_the_stated_sd(default_params):
    ps = default_params.with_values({"random_effects.rejection_log_sd": 0.8})
    rng = np.random.default_rng(22)
    effs = [draw_effects(ps, rng) for _ in range(4000)]
    log_f = np.log([e.rejection_factor for e in effs])
    # median 1 (mean of the log within 4 standard errors); SD within 5 % (standard error 0.8 / sqrt(2 n) = 1.1 %)
    assert abs(log_f.mean()) < 4 * 0.8 / math.sqrt(log_f.size)
    assert abs(log_f.std() / 0.8 - 1.0) < 0.05
    x = np.log([e.nk_il15_proliferation_max for e in effs])
    assert abs(np.corrcoef(log_f, x)[0, 1]) < 4 / math.sqrt(log_f.size)


def test_rejection_factor_scales_both_rejection_rates_in_the_kernel(default_params):
    from nksim.engine import layout as L
    from nksim.engine.build import kernel_parameters
    from nksim.engine.kernel import donor_nk_rejection

    z = np.zeros(N_EFFECT_NORMALS)
    z[6] = 1.5
    ps = default_params.with_values({"random_effects.rejection_log_sd": 0.6})
    eff = effects_from_normals(ps, z)
    typical = effects_from_normals(ps, np.zeros(N_EFFECT_NORMALS))
    kp = kernel_parameters(ps, eff, -7.0, 28.0, nk_product="fresh")
    kp0 = kernel_parameters(ps, typical, -7.0, 28.0, nk_product="fresh")
    f = math.exp(0.6 * 1.5)
    assert kp[L.KP.patient_nk_rejection_rate] == pytest.approx(f * ps["nk.rejection_rate"], rel=1e-12)
    assert kp[L.KP.patient_primed_rejection_rate] == pytest.approx(f * ps["allo.primed_rejection_rate"], rel=1e-12)
    assert kp0[L.KP.patient_nk_rejection_rate] == ps["nk.rejection_rate"]
    t0 = kp[L.KP.host_t_baseline]
    for t in (0.1 * t0, t0):
        for primed in (0.0, 0.7):
            assert donor_nk_rejection(kp, t, primed, 0.0) == pytest.approx(f * donor_nk_rejection(kp0, t, primed, 0.0),
                                                                           rel=1e-12)


# ------------------------------------------------------- between-patient donor-NK death and IL-15 production
#: Log-normal factors checked against the others: (SD key, its SD, another spread on, its field, fields, seed).
LOG_NORMAL_FACTORS = [
    ("random_effects.nk_death_log_sd", 0.7, "random_effects.rejection_log_sd", "death_factor",
     ("rejection_factor", "nk_il15_proliferation_max"), 32),
    ("random_effects.il15_production_log_sd", 0.6, "random_effects.nk_death_log_sd", "il15_production_factor",
     ("death_factor", "nk_il15_proliferation_max"), 42),
]


@pytest.mark.parametrize("key, sd, other_key, field, others, seed", LOG_NORMAL_FACTORS)
def test_factor_is_log_normal_and_independent(default_params, key, sd, other_key, field, others, seed):
    """Median 1 and the stated SD of its log, uncorrelated with the other effects (another spread on as well)."""
    ps = default_params.with_values({key: sd, other_key: 0.5})
    rng = np.random.default_rng(seed)
    effs = [draw_effects(ps, rng) for _ in range(4000)]
    log_f = np.log([getattr(e, field) for e in effs])
    # median 1 (mean of the log within 4 standard errors); SD within 5 % (standard error sd / sqrt(2 n) = 1.1 %)
    assert abs(log_f.mean()) < 4 * sd / math.sqrt(log_f.size)
    assert abs(log_f.std() / sd - 1.0) < 0.05
    for other in others:
        x = np.log([getattr(e, other) for e in effs])
        assert abs(np.corrcoef(log_f, x)[0, 1]) < 4 / math.sqrt(log_f.size)


@pytest.mark.parametrize("product", ["fresh", "ciml"])
def test_death_factor_multiplies_the_products_death_in_the_kernel(default_params, product):
    from nksim.engine import layout as L
    from nksim.engine.build import kernel_parameters

    z = np.zeros(N_EFFECT_NORMALS)
    z[7] = -1.2
    ps = default_params.with_values({"random_effects.nk_death_log_sd": 0.9})
    kp = kernel_parameters(ps, effects_from_normals(ps, z), -7.0, 28.0, nk_product=product)
    kp0 = kernel_parameters(ps, effects_from_normals(ps, np.zeros(N_EFFECT_NORMALS)), -7.0, 28.0, nk_product=product)
    product_factor = ps["ciml_nk.death_rate_factor"] if product == "ciml" else 1.0
    assert kp0[L.KP.donor_death_factor] == product_factor
    assert kp[L.KP.donor_death_factor] == pytest.approx(product_factor * math.exp(-0.9 * 1.2), rel=1e-12)
    assert kp[L.KP.nk_death_rate] == kp0[L.KP.nk_death_rate]


# ----------------------------------------------------------------------------- between-patient IL-15 production
def test_il15_production_factor_reaches_the_kernel_alone(default_params):
    """Her factor is the kernel's production slot; every other kernel input is the typical patient's."""
    from nksim.engine import layout as L
    from nksim.engine.build import kernel_parameters

    z = np.zeros(N_EFFECT_NORMALS)
    z[8] = 1.3
    ps = default_params.with_values({"random_effects.il15_production_log_sd": 0.7})
    kp = kernel_parameters(ps, effects_from_normals(ps, z), -7.0, 28.0, nk_product="fresh")
    kp0 = kernel_parameters(ps, effects_from_normals(ps, np.zeros(N_EFFECT_NORMALS)), -7.0, 28.0, nk_product="fresh")
    assert kp0[L.KP.patient_il15_production] == 1.0
    assert kp[L.KP.patient_il15_production] == pytest.approx(math.exp(0.7 * 1.3), rel=1e-12)
    differ = np.flatnonzero(kp != kp0)
    assert [L.KP._fields[i] for i in differ] == ["patient_il15_production"]
