"""Analytic limits of the model (docs/model.md section 8).

a. no NK, no drugs, blasts only, no spread: mean blasts per voxel follow the logistic solution;
b. blood: no drugs -> host lymphocytes at baseline and IL-15 at 1; with drugs the daily record
   matches an independent scipy solution of the documented blood/PK equations;
c. a well-mixed limit of NK killing matches the mass-action ODE (solve_ivp);
plus exact rules of the NK agents (serial killing, refractory time, exhaustion) and analytic
NK population limits (pure death, trafficking conservation, pure birth).

Every expected value is computed here from the model equations (architecture.md, kernel
docstrings), never copied from a run.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import build_protocol, fixed_blast_patient, region_scale, voxel_capacity
from scipy.integrate import solve_ivp

import nksim
from nksim.engine.blood import QUIET_RTOL

HOURS = 24.0


def blasts(ds):
    rc = ds.region_counts
    return (rc.sel(counter="susceptible_blasts") + rc.sel(counter="resistant_blasts")).values.astype(float)


def counter(ds, name):
    return ds.region_counts.sel(counter=name).values


# =============================================================================== a. logistic
LOGISTIC_BASE = {
    "lattice.side": 8,
    "lattice.voxel_side": 2000.0,  # K = 40 000 cells per voxel: demographic noise ~ 1/sqrt(K)
    "blasts.spread_fraction": 0.0,
    "blasts.switch_probability": 0.0,
    "random_effects.blast_growth_log_sd": 0.0,  # individual r == blasts.net_growth_rate
    "random_effects.proliferative_fraction": 0.0,  # (one kinetic class)
    "nk.homing_rate": 0.0,  # infused NK never enter the marrow region
    "numerics.dt": 1.0,
    "numerics.marrow_step": 1.0,  # marrow update every hour: r * delta <= 0.15 / 24
}


def _logistic_run(r, growth_fraction, cycle_time, cellularity, days=60, reps=4, seed=7):
    params = nksim.load_parameters().with_values({
        **LOGISTIC_BASE,
        "blasts.net_growth_rate": r,
        "blasts.growth_fraction": growth_fraction,
        "blasts.cycle_time": cycle_time,
        "lattice.marrow_cellularity": cellularity,
    })
    # no lymphodepletion; a token NK infusion (the protocol needs one) that never homes
    proto = build_protocol([(0, "nk_infusion", 1.0)], start_day=0, end_day=days,
                           patients=[fixed_blast_patient(pct=100.0)])
    return params, nksim.simulate_cohort(params, proto, replicates=reps, seed=seed)


@pytest.mark.parametrize(
    "r, growth_fraction, cycle_time, cellularity",
    [
        (0.15, 0.0, 48.0, 10.0),  # b = r: pure logistic growth from 10 % occupancy
        (0.15, 1.0, 24.0, 10.0),  # b = ln2/day > r: same net growth with turnover
        (-0.10, 0.0, 48.0, 90.0),  # decline: b = 0, d = |r| (1 - occ)
    ],
    ids=["growth", "growth_with_turnover", "decline"],
)
def test_logistic_limit(r, growth_fraction, cycle_time, cellularity):
    params, ds = _logistic_run(r, growth_fraction, cycle_time, cellularity)
    K = voxel_capacity(params)
    nv = int(params["lattice.side"]) ** 2
    # all cells are blasts: normal cells, NK and drugs are absent
    assert np.all(counter(ds, "normal_cells") == 0)
    assert np.all(counter(ds, "nk_agents") == 0)
    assert np.all(counter(ds, "blast_drug_deaths") == 0)
    np.testing.assert_array_equal(ds.blast_net_growth_rate.values, r)

    B = blasts(ds)[0] / nv  # (replicate, time): mean blasts per voxel
    t = ds.time.values - ds.time.values[0]
    # initial lattice: every voxel ~ Bin(K, cellularity); the region total is within 4 sd of its mean
    n0 = blasts(ds)[0, :, 0]
    mean0 = nv * K * cellularity / 100
    sd0 = math.sqrt(nv * K * (cellularity / 100) * (1 - cellularity / 100))
    assert np.all(np.abs(n0 - mean0) < 4 * sd0)

    B0 = B[:, :1]
    sol = K * B0 / (B0 + (K - B0) * np.exp(-r * t))
    rel = B / sol - 1.0
    # Tolerance 1 %: the kernel's mean map per marrow step delta is n -> n exp(r (1 - n/K) delta)
    # (Ricker), which differs from the logistic flow by O(r delta) = O(0.6 %) relative over the
    # whole run; demographic noise of the 64-voxel mean is ~ 1/sqrt(64 K n/K) < 0.1 %.
    # Days where the solution is within 5 % of K are excluded: there the hard capacity cap
    # truncates the O(sqrt(b K / r)) fluctuations around K and biases the mean down (checked
    # separately below).
    use = sol <= 0.95 * K
    assert use.sum() > 10
    mean_rel = np.where(use, rel, 0.0).mean(axis=0)
    assert np.max(np.abs(mean_rel)) < 0.01, f"max relative deviation {np.max(np.abs(mean_rel)):.4f}"
    # capacity is never exceeded, and near saturation the mean stays within 2 % of K
    assert np.all(B <= K)
    sat = sol.mean(axis=0) > 0.99 * K
    if sat.any():
        assert np.all(B[:, sat].mean(axis=0) > 0.98 * K)


def test_zero_net_growth_without_turnover_freezes_the_marrow():
    params, ds = _logistic_run(0.0, 0.0, 48.0, 60.0, days=5, reps=1)
    B = blasts(ds)[0, 0]
    assert np.all(B == B[0])
    for c in ("blast_births", "blast_deaths", "blast_daughters_lost"):
        assert np.all(counter(ds, c) == 0)


# =============================================================================== b. blood
def test_no_drugs_host_lymphocytes_and_il15_stay_at_baseline(default_params):
    params = default_params.with_values({"lattice.side": 4})
    proto = build_protocol([(0, "nk_infusion", 5e6)], start_day=-5, end_day=10)
    ds = nksim.simulate(params, proto, seed=1)
    # host cells see no drug hazard: Gompertz regrowth is exactly zero at baseline, whole run
    np.testing.assert_allclose(ds.host_nk_blood.values, params["host.nk_baseline"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ds.host_t_blood.values, params["host.t_baseline"], rtol=1e-12, atol=0)
    assert np.all(ds.flu_conc.values == 0) and np.all(ds.cy_conc.values == 0)
    assert np.all(ds.drug_kill_hazard.values == 0)
    # IL-15 production balances clearance + consumption at baseline: I = 1 until NK are infused
    # (the record at day 0 is the state before that day's infusion)
    before = ds.time.values <= 0
    np.testing.assert_allclose(ds.il15.values[before], 1.0, rtol=0, atol=1e-9)
    assert np.all(ds.donor_nk_blood.values[before] == 0)
    # donor NK add to consumption (L_rel > 1), so IL-15 falls below its baseline afterwards
    assert ds.il15.sel(time=1).item() < 1.0 - 1e-4
    assert np.all(ds.il15.values[~before] < 1.0)


DRUG_EVENTS = [
    (-40, "fludarabine", 30.0), (-39, "fludarabine", 30.0), (-38, "fludarabine", 30.0),
    (-39, "cyclophosphamide", 60.0), (-38, "cyclophosphamide", 60.0),
]


def _reference_blood(params, weight, bsa, rec_nk, rec_t, events, days):
    """Independent solution of the documented blood equations (before any NK infusion).

    PK: one compartment, first-order elimination k = ln2 / half-life, bolus amounts dose * BSA
    (Flu, mg m-2) and dose * weight (Cy, mg kg-1); C = amount / V (analytic).
    Reference hazards h_F = Emax_F C_F/(C_F + EC50_F), h_C = Emax_C C_C/(C_C + EC50_C) (day-1).
    Host L in {NK, T, Treg}: dL/dt = rec_L L ln(L0/L) - (s_LF h_F + s_LC h_C) L (own rate and per-drug
    sensitivities; Tregs without IL-2 or IL2DT here).
    IL-15: dI/dt = tau - (tau/M + (tau - tau/M) L_rel) I, L_rel = (NK + T + Treg)/(NK0 + T0 + Treg0).
    Returns arrays at the integer days ``days`` (left limits, i.e. before that day's doses).
    """
    v = params.values()
    k = {"fludarabine": math.log(2) / (v["drugs.flu_half_life"] / HOURS),
         "cyclophosphamide": math.log(2) / (v["drugs.cy_half_life"] / HOURS)}
    vol = {"fludarabine": v["drugs.flu_volume"], "cyclophosphamide": v["drugs.cy_volume"]}
    doses = [(d, kind, x * (bsa if kind == "fludarabine" else weight)) for d, kind, x in events
             if kind != "nk_infusion"]

    def conc(kind, t, strict):
        return sum(a * math.exp(-k[kind] * (t - d)) for d, kk, a in doses
                   if kk == kind and (d < t if strict else d <= t)) / vol[kind]

    def hazards(t):
        cf, cc = conc("fludarabine", t, False), conc("cyclophosphamide", t, False)
        return (v["drugs.flu_emax"] * cf / (cf + v["drugs.flu_ec50"]),
                v["drugs.cy_emax"] * cc / (cc + v["drugs.cy_ec50"]))

    n0, t0, r0 = v["host.nk_baseline"], v["host.t_baseline"], v["host.treg_baseline"]
    tau, m = v["il15.turnover_rate"], v["il15.max_fold"]

    def rhs(t, y):
        hf, hc = hazards(t)
        h_nk = v["host.nk_flu_sensitivity"] * hf + v["host.nk_cy_sensitivity"] * hc
        h_t = v["host.t_flu_sensitivity"] * hf + v["host.t_cy_sensitivity"] * hc
        h_r = v["host.treg_flu_sensitivity"] * hf + v["host.treg_cy_sensitivity"] * hc
        nk, tc, il, tr = y
        lrel = (nk + tc + tr) / (n0 + t0 + r0)
        return [rec_nk * nk * math.log(n0 / nk) - h_nk * nk, rec_t * tc * math.log(t0 / tc) - h_t * tc,
                tau - (tau / m + (tau - tau / m) * lrel) * il,
                v["treg.recovery_rate"] * tr * math.log(r0 / tr) - h_r * tr]

    y = np.array([n0, t0, 1.0, r0])
    out = [y]
    for a, b in zip(days[:-1], days[1:]):  # integrate day by day: doses fall on day boundaries
        sol = solve_ivp(rhs, (a, b), y, method="LSODA", rtol=1e-10, atol=1e-10)
        assert sol.success
        y = sol.y[:, -1]
        out.append(y)
    out = np.array(out)
    flu = np.array([conc("fludarabine", t, True) for t in days])
    cy = np.array([conc("cyclophosphamide", t, True) for t in days])
    return out[:, 0], out[:, 1], out[:, 2], flu, cy


@pytest.mark.parametrize("weight, bsa", [(None, None), (55.0, 1.5)])
def test_blood_ode_with_drugs_matches_scipy(default_params, weight, bsa):
    # lineages with their own recovery rates and drug sensitivities
    params = default_params.with_values({"lattice.side": 4, "host.t_flu_sensitivity": 1.6,
                                         "host.t_cy_sensitivity": 0.7, "host.nk_flu_sensitivity": 1.2,
                                         "host.nk_cy_sensitivity": 2.5, "host.t_recovery_rate": 0.01})
    patient = {"id": "p1", "group": "a"}
    if weight is not None:
        patient["body_weight"] = {"value": weight, "unit": "kg"}
        patient["body_surface_area"] = {"value": bsa, "unit": "m2"}
    proto = build_protocol(DRUG_EVENTS + [(0, "nk_infusion", 1e7)], start_day=-40, end_day=3, patients=[patient])
    ds = nksim.simulate(params, proto, seed=3)
    w, a = float(ds.body_weight), float(ds.body_surface_area)
    rec_nk, rec_t = float(ds.host_nk_recovery_rate), float(ds.host_t_recovery_rate)
    if weight is not None:
        assert (w, a) == (weight, bsa)
    days = np.arange(-40, 1)  # up to the record of day 0 = before the first infusion
    nk, tc, il, flu, cy = _reference_blood(params, w, a, rec_nk, rec_t, DRUG_EVENTS, days)
    sim = ds.sel(time=days)
    # PK is analytic in the kernel: agreement to rounding (relative 1e-9; absolute floor for
    # concentrations that have decayed to ~0)
    np.testing.assert_allclose(sim.flu_conc.values, flu, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(sim.cy_conc.values, cy, rtol=1e-9, atol=1e-300)
    assert flu.max() > params["drugs.flu_ec50"], "the test regimen must reach an effective concentration"
    # host NK/T and IL-15: RK4 with dt = 1 h against LSODA at rtol 1e-10 -> rtol 1e-3
    np.testing.assert_allclose(sim.host_nk_blood.values, nk, rtol=1e-3)
    np.testing.assert_allclose(sim.host_t_blood.values, tc, rtol=1e-3)
    np.testing.assert_allclose(sim.il15.values, il, rtol=1e-3)
    # the regimen is strong enough to make the comparison meaningful
    assert nk.min() < 0.1 * params["host.nk_baseline"] and il.max() > 2.0
    # hazard recorded at the day boundary = Emax formula at the recorded concentrations
    v = params.values()
    cf, cc = sim.flu_conc.values, sim.cy_conc.values
    h = v["drugs.flu_emax"] * cf / (cf + v["drugs.flu_ec50"]) + v["drugs.cy_emax"] * cc / (cc + v["drugs.cy_ec50"])
    np.testing.assert_allclose(sim.drug_kill_hazard.values, h, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("dt_h", [
    1.0, 6.0,
    8.0, 12.0, 24.0,
])
def test_blood_stays_physical_for_every_allowed_time_step(default_params, ahmadvand, dt_h):
    # Every dt that divides 24 h is accepted by the schema and by resolution(); for each, the
    # blood ODEs must either be integrated stably or the step must be rejected with an error
    # naming numerics.dt. Invariants of the exact solution: 0 < IL-15 <= max_fold (dI/dt =
    # tau - k I with k >= tau/M), host lymphocytes <= baseline, and IL-15 back near 1 once the
    # host has recovered (day 120 -> within 10 %).
    params = default_params.with_values({"lattice.side": 4, "numerics.dt": dt_h, "numerics.marrow_step": 24.0})
    try:
        ds = nksim.simulate(params, ahmadvand, "p02", seed=1)
    except nksim.NksimInputError as exc:
        assert "numerics.dt" in str(exc)
        return
    il = ds.il15.values
    assert np.all(np.isfinite(il)) and np.all(il > 0)
    assert np.all(il <= params["il15.max_fold"] * (1 + 1e-6)), f"IL-15 max {il.max():.3g}"
    assert np.all(ds.host_t_blood.values <= params["host.t_baseline"] * (1 + 1e-6))
    # IL-15 turns over within hours, so by day 120 it sits at the quasi-steady state of its
    # production and consumption by the lymphocytes present then (host NK and T, donor NK)
    v = params.values()
    d = ds.sel(time=120)
    blood_ul = v["anatomy.blood_volume"] * float(ds.body_weight) * 1000.0
    lrel = ((d.host_nk_blood + d.host_t_blood + d.host_treg_blood
             + v["il15.donor_nk_weight"] * d.donor_nk_total / blood_ul)
            / (v["host.nk_baseline"] + v["host.t_baseline"] + v["host.treg_baseline"])).item()
    m = v["il15.max_fold"]
    steady = 1.0 / (1.0 / m + (1.0 - 1.0 / m) * lrel)
    assert abs(d.il15.item() / steady - 1.0) < 0.05


# =============================================================================== NK agent rules
FROZEN_MARROW = {
    "lattice.marrow_cellularity": 100.0,  # every voxel starts exactly full: Bin(K, 1) = K
    "blasts.net_growth_rate": 0.0,
    "blasts.growth_fraction": 0.0,  # b = max(0, r) = 0 and d = max(b - r(1-occ), 0) = 0
    "blasts.susceptible_fraction": 1.0,
    "random_effects.blast_growth_log_sd": 0.0,
    "nk.proliferation_rate": 0.0,
    "nk.il15_proliferation_max": 0.0,
    "nk.death_rate": 0.0,
    "nk.rejection_rate": 0.0,
    "nk.egress_rate": 0.0,
    "nk.tissue_uptake_rate": 0.0,
    "nk.homing_rate": 1000.0,  # all infused agents enter in the first step (Poisson mean >> cap)
    "nk.competent_fraction": 1.0,
    "nk.max_kills": 1000,
    "nk.function_recovery_rate": 0.0,  # lytic units are not restored (the permanent-cap limit)
    "allo.primed_rejection_rate": 0.0,
}


def _dose_for_agents(params, n_agents, weight=70.0):
    """NK dose (kg-1) that gives exactly ``n_agents`` whole agents: floor(dose*weight/scale)."""
    return n_agents * region_scale(params, weight) / weight * (1 + 1e-7)


def _kill_setup(overrides, n_agents, days, reps, seed, side=8):
    params = nksim.load_parameters().with_values({**FROZEN_MARROW, "lattice.side": side, **overrides})
    proto = build_protocol([(0, "nk_infusion", _dose_for_agents(params, n_agents))], start_day=0, end_day=days,
                           patients=[fixed_blast_patient(pct=100.0)])
    return params, nksim.simulate_cohort(params, proto, replicates=reps, seed=seed)


@pytest.mark.parametrize(
    "refractory_h, steps_between_kills",
    [(0.0, 1), (0.5, 2), (1.0, 2), (2.5, 4)],  # refractory rounded up to whole 1 h steps
)
def test_serial_killing_and_refractory_time_exact(refractory_h, steps_between_kills):
    # Engagement is certain (rate 2400 day-1 * occupancy >= 0.28 over a 1 h step: probability
    # 1 - e^-28) and kill_probability = 1, agents do not move: each agent kills at its first
    # eligible step (the step after homing, step 1) and then every (1 + refractory steps) steps.
    params, ds = _kill_setup({"nk.engagement_interval": 0.01, "nk.kill_probability": 1.0, "nk.speed": 0.0,
                              "nk.refractory_time": refractory_h, "lattice.voxel_side": 200.0},
                             n_agents=4, days=3, reps=2, seed=4)
    assert np.all(ds.donor_nk_agents.values[..., 1:] == 4)
    kills = counter(ds, "blasts_killed_by_nk")[0]
    for day in (1, 2, 3):
        last_step = 24 * day - 1
        per_agent = (last_step - 1) // steps_between_kills + 1
        np.testing.assert_array_equal(kills[:, day], 4 * per_agent)
    # kills are the only change to the frozen marrow
    np.testing.assert_array_equal(blasts(ds)[0] + kills, np.broadcast_to(blasts(ds)[0, :, :1], kills.shape))


def test_max_kills_exhausts_agents():
    params, ds = _kill_setup({"nk.engagement_interval": 0.01, "nk.kill_probability": 1.0, "nk.speed": 0.0,
                              "nk.refractory_time": 0.0, "nk.max_kills": 5, "lattice.voxel_side": 200.0},
                             n_agents=6, days=3, reps=1, seed=2)
    kills = counter(ds, "blasts_killed_by_nk")[0, 0]
    assert kills[1] == kills[-1] == 6 * 5
    np.testing.assert_allclose(ds.nk_exhausted_fraction.values[0, 0, 1:], 1.0)
    assert np.all(ds.nk_kills.values[0, 0] == kills * region_scale(params, 70.0))


def test_lytic_units_recover_at_their_rate():
    # Exhausted agents (5 units used within the first hours) restore one unit at a time at rate r
    # and spend it at once (engagement certain, kill probability 1, no refractory period), so
    # kills after exhaustion form a Poisson process of rate r per agent: E[kills(t)] = n (5 + r t)
    # (t from the exhaustion, about 5 h after homing), Var = n r t.
    r, n, days, reps = 2.0, 6, 5, 12
    params, ds = _kill_setup({"nk.engagement_interval": 0.01, "nk.kill_probability": 1.0, "nk.speed": 0.0,
                              "nk.refractory_time": 0.0, "nk.max_kills": 5, "lattice.voxel_side": 200.0,
                              "nk.function_recovery_rate": r},
                             n_agents=n, days=days, reps=reps, seed=5)
    kills = counter(ds, "blasts_killed_by_nk")[0][:, -1].astype(float)
    t = days - 6.0 / 24.0
    mean, sd = n * (5 + r * t), math.sqrt(n * r * t)
    assert abs(kills.mean() - mean) < 4 * sd / math.sqrt(reps), (kills.mean(), mean)
    assert 0.4 < kills.var(ddof=1) / sd**2 < 2.2  # chi-square(11) 99.8 % band for a Poisson variance


@pytest.mark.parametrize("override", [{"nk.competent_fraction": 0.0}, {"nk.kill_probability": 0.0}])
def test_no_kills_without_competent_agents_or_kill_probability(override):
    _, ds = _kill_setup({"nk.engagement_interval": 0.01, **override}, n_agents=20, days=2, reps=1, seed=2)
    assert np.all(counter(ds, "blasts_killed_by_nk") == 0)
    assert np.all(ds.donor_nk_agents.values[..., 1:] == 20)


def test_kills_only_susceptible_blasts():
    # half the blasts resistant: resistant counts never change when the marrow is frozen
    _, ds = _kill_setup({"nk.engagement_interval": 0.5, "blasts.susceptible_fraction": 0.5},
                        n_agents=50, days=3, reps=1, seed=8)
    res = counter(ds, "resistant_blasts")[0, 0]
    sus = counter(ds, "susceptible_blasts")[0, 0]
    assert np.all(res == res[0]) and res[0] > 0
    assert sus[-1] < sus[0]
    np.testing.assert_array_equal(sus[0] - sus, counter(ds, "blasts_killed_by_nk")[0, 0])


# =============================================================================== c. mass action
def _mass_action_check(params, ds, n_agents, t_eval, exact_step, bias):
    """Mean S(t) over replicates within 4 standard errors + ``bias`` (relative) of the ODE."""
    K = voxel_capacity(params)
    nv = int(params["lattice.side"]) ** 2
    c = HOURS / params["nk.engagement_interval"]  # engagements per day in a blast-packed voxel
    p = params["nk.kill_probability"]
    dt = params["numerics.dt"] / HOURS
    S = counter(ds, "susceptible_blasts")[0].astype(float)  # (replicate, time)
    N = ds.donor_nk_agents.values[0]
    # every infused agent homes in step 0; none is born, dies or leaves afterwards
    assert np.all(N[:, 1:] == n_agents)
    S0 = S[0, 0]
    assert np.all(S[:, 0] == nv * K)

    if exact_step:
        # Per step of dt an eligible agent in voxel v engages with probability 1 - exp(-c dt s_v/K)
        # and kills with p: with agents well mixed over a near-uniform lattice the expected loss
        # rate is N p (1 - exp(-c dt S/(K nv)))/dt, which tends to mass action c p N S/(K nv) as dt -> 0.
        def rhs(t, s):
            return -n_agents * p * (1 - np.exp(-c * dt * s / (K * nv))) / dt
    else:
        def rhs(t, s):
            return -c * p * n_agents * s / (K * nv)
    # agents home at the end of step 0 and kill from step 1 on: the ODE starts at t = dt
    idx = np.searchsorted(ds.time.values, t_eval)
    sol = solve_ivp(rhs, (dt, t_eval[-1]), [S0], t_eval=t_eval, rtol=1e-10, atol=1e-8).y[0]
    mean = S[:, idx].mean(axis=0)
    se = S[:, idx].std(axis=0, ddof=1) / math.sqrt(S.shape[0])
    rel = mean / sol - 1
    assert np.all(np.abs(mean - sol) < 4 * se + bias * sol), f"relative deviation {rel}, relative SE {se / sol}"
    assert sol[-1] < 0.8 * S0, "the check must cover substantial depletion"
    return rel, se / sol


def test_well_mixed_killing_matches_mass_action():
    # 200 agents, K = 100, 8 x 8 voxels (6400 blasts); agents hop ~10 voxels per hour
    # (D = speed^2 persistence / 2), so their positions decorrelate from local depletion far faster
    # than blasts are depleted (~0.5 % per hour).
    overrides = {"lattice.voxel_side": 100.0, "nk.speed": 20.0, "nk.persistence_time": 2.0,
                 "nk.engagement_interval": 6.0, "nk.kill_probability": 0.5, "nk.refractory_time": 0.0}
    params, ds = _kill_setup(overrides, n_agents=200, days=6, reps=8, seed=5)
    # Tolerance: 4 standard errors of the mean over 8 replicates (SE ~0.15 % of S) plus a 0.5 %
    # deterministic budget: residual spatial correlation (agents that just killed sit in slightly
    # depleted voxels) slows killing by O(0.3 %); the Euler-in-time error of the per-step map is
    # < 0.1 %. For comparison, a 5 % error in the kill rate shifts S(6 d) by ~1.7 %.
    _mass_action_check(params, ds, 200, np.arange(1.0, 7.0), exact_step=True, bias=0.005)


@pytest.mark.slow
def test_well_mixed_killing_matches_pure_mass_action_small_dt():
    # dt = 15 min and c = 1 day-1, so c dt = 1/96: the per-step engagement probability differs
    # from the mass-action rate by at most c dt / 2 ~ 0.5 %; 4000 agents deplete 16 x 16 x 100
    # blasts at 0.156 day-1 (S falls to ~30 % in 8 days).
    overrides = {"lattice.voxel_side": 100.0, "nk.speed": 20.0, "nk.persistence_time": 2.0,
                 "nk.engagement_interval": 24.0, "nk.kill_probability": 1.0, "nk.refractory_time": 0.0,
                 "numerics.dt": 0.25, "numerics.marrow_step": 24.0}
    params, ds = _kill_setup(overrides, n_agents=4000, days=8, reps=8, seed=9, side=16)
    # Tolerance: 4 SE (SE ~0.2 % of S) + 1 % deterministic budget: <= 0.5 % per-step
    # discretisation of the rate (<= 0.6 % in S after 1.3 e-folds) + spatial correlation (~0.3 %).
    _mass_action_check(params, ds, 4000, np.arange(1.0, 9.0), exact_step=False, bias=0.01)


# =============================================================================== NK populations
# the analytic limits hold without the numerical ceiling on donor NK (numerics.max_marrow_donor_nk): on this
# small region (about 2.3e8 cells per agent) the default 2e12 would stop a pure-birth process at 8791 agents
NK_ONLY = {**FROZEN_MARROW, "lattice.side": 8, "lattice.voxel_side": 100.0, "nk.speed": 5.0,
           "numerics.max_marrow_donor_nk": 1e16}


def test_marrow_nk_pure_death_is_exponential():
    mu = 0.5
    params = nksim.load_parameters().with_values({**NK_ONLY, "nk.death_rate": mu})
    proto = build_protocol([(0, "nk_infusion", _dose_for_agents(params, 500))], start_day=0, end_day=5,
                           patients=[fixed_blast_patient()])
    ds = nksim.simulate_cohort(params, proto, replicates=8, seed=6)
    N = ds.donor_nk_agents.values[0].astype(float)  # (replicate, time)
    homed = counter(ds, "nk_homed")[0]
    np.testing.assert_array_equal(N, homed - counter(ds, "nk_died")[0])
    # blood NK die at mu too during step 0 (before homing), so fewer than 500 whole agents home,
    # all of them in step 0: the blood remainder is below one agent and never homes again
    n0 = homed[0, 1]
    assert np.all(homed[:, 1:] == n0) and 0.95 * 500 < n0 <= 500
    # agents enter at the end of step 0, then survive each 1 h step with probability exp(-mu dt),
    # so E N(day d) = n0 exp(-mu (d - 1/24)); N is binomial -> tolerance 4 standard errors
    days = np.arange(1, 6)
    p = np.exp(-mu * (days - 1 / 24))
    mean = N[:, days].mean(axis=0)
    se = np.sqrt(n0 * p * (1 - p) / N.shape[0])
    assert np.all(np.abs(mean - n0 * p) < 4 * se), (mean, n0 * p, se)


def test_donor_nk_conserved_by_trafficking():
    # no division, death, rejection or drug: whole-body donor NK (blood + tissue + marrow agents x
    # scale) must equal the infused number at every day, whatever the traffic
    params = nksim.load_parameters().with_values({
        **NK_ONLY, "nk.homing_rate": 2.0, "nk.egress_rate": 1.5, "nk.tissue_uptake_rate": 4.0,
        "nk.tissue_return_rate": 0.4})
    dose = 3e8  # ~90 agents per infusion on this small region (scale ~ 2.3e8 cells per agent)
    proto = build_protocol([(0, "nk_infusion", dose), (2, "nk_infusion", dose)], start_day=-1, end_day=8,
                           patients=[fixed_blast_patient()])
    ds = nksim.simulate(params, proto, seed=12)
    w = float(ds.body_weight)
    blood_ul = params["anatomy.blood_volume"] * w * 1000.0
    total = ds.donor_nk_blood.values * blood_ul + ds.donor_nk_tissue.values + ds.donor_nk_marrow.values
    infused = np.where(ds.time.values > 2, 2 * dose * w, np.where(ds.time.values > 0, dose * w, 0.0))
    np.testing.assert_allclose(total, infused, rtol=1e-9, atol=1e-3)
    np.testing.assert_allclose(ds.donor_nk_marrow.values, ds.donor_nk_agents.values * region_scale(params, w),
                               rtol=1e-12)
    assert counter(ds, "nk_egressed")[-1] > 0 and ds.donor_nk_tissue.values[-1] > 0


@pytest.mark.slow
def test_marrow_nk_pure_birth_is_exponential():
    lam = 0.2
    params = nksim.load_parameters().with_values({**NK_ONLY, "nk.proliferation_rate": lam, "nk.speed": 0.0,
                                                  "numerics.dt": 0.25, "numerics.marrow_step": 24.0})
    n0 = 3000
    days = 10
    proto = build_protocol([(0, "nk_infusion", _dose_for_agents(params, n0))], start_day=0, end_day=days,
                           patients=[fixed_blast_patient()])
    ds = nksim.simulate_cohort(params, proto, replicates=12, seed=13)
    N = ds.donor_nk_agents.values[0, :, -1].astype(float)
    dt = 0.25 / HOURS
    expected = n0 * math.exp(lam * (days - dt))
    # Yule process: Var N = n0 e^{lam t}(e^{lam t} - 1). Tolerance: 4 standard errors plus the
    # first-order bias of the competing-risks step (a daughter cannot divide in its birth step:
    # per-step growth 2 - e^{-lam dt} instead of e^{lam dt}, relative deficit <= lam^2 dt t).
    g = math.exp(lam * (days - dt))
    se = math.sqrt(n0 * g * (g - 1) / len(N))
    bias = lam ** 2 * dt * days * expected
    assert abs(N.mean() - expected) < 4 * se + bias, (N.mean(), expected, se, bias)


# =============================================================================== drugs in marrow
def _hazard_integral(params, weight, bsa, events, start, days):
    """H(d) = integral of the lymphocyte kill hazard from ``start`` to each day in ``days``."""
    from scipy.integrate import quad

    v = params.values()
    k = {"fludarabine": math.log(2) / (v["drugs.flu_half_life"] / HOURS),
         "cyclophosphamide": math.log(2) / (v["drugs.cy_half_life"] / HOURS)}
    amounts = [(d, kind, x * (bsa if kind == "fludarabine" else weight)) for d, kind, x in events
               if kind != "nk_infusion"]

    def hazard(t):
        cf = sum(a * math.exp(-k[kk] * (t - d)) for d, kk, a in amounts if kk == "fludarabine" and d <= t)
        cc = sum(a * math.exp(-k[kk] * (t - d)) for d, kk, a in amounts if kk == "cyclophosphamide" and d <= t)
        cf /= v["drugs.flu_volume"]
        cc /= v["drugs.cy_volume"]
        return (v["drugs.flu_emax"] * cf / (cf + v["drugs.flu_ec50"])
                + v["drugs.cy_emax"] * cc / (cc + v["drugs.cy_ec50"]))

    out, acc, prev = [], 0.0, start
    for d in days:
        for a in range(int(prev), int(d)):  # day by day: doses fall on day boundaries
            acc += quad(hazard, a, a + 1, epsabs=1e-13, epsrel=1e-11)[0]
        prev = d
        out.append(acc)
    return np.array(out)


def test_drug_kill_in_frozen_marrow_is_exponential_in_hazard_integral():
    # Marrow without births or natural deaths (blasts r = 0, growth fraction 0; normal cells with
    # zero division and recovery rates): each population is thinned by exp(-sensitivity * H(t)),
    # H = integrated lymphocyte kill hazard, so B(t) ~ Bin(B0, exp(-s_b H(t))).
    s_b, s_n = 0.3, 0.6
    params = nksim.load_parameters().with_values({
        "lattice.side": 8, "lattice.voxel_side": 1000.0, "lattice.marrow_cellularity": 100.0,
        "blasts.net_growth_rate": 0.0, "blasts.growth_fraction": 0.0, "random_effects.blast_growth_log_sd": 0.0,
        "normal.division_rate": 0.0, "normal.recovery_rate": 0.0,
        "blasts.drug_sensitivity": s_b, "normal.drug_sensitivity": s_n, "nk.homing_rate": 0.0})
    proto = build_protocol(DRUG_EVENTS + [(0, "nk_infusion", 1.0)], start_day=-40, end_day=2,
                           patients=[fixed_blast_patient(pct=50.0)])
    ds = nksim.simulate(params, proto, seed=21)
    days = np.arange(-39, 3)
    H = _hazard_integral(params, float(ds.body_weight), float(ds.body_surface_area), DRUG_EVENTS, -40, days)
    assert H[-1] > 1.0, "regimen must remove a sizeable fraction"
    for name, s in (("blasts", s_b), ("normal", s_n)):
        if name == "blasts":
            n = (ds.region_counts.sel(counter="susceptible_blasts") + ds.region_counts.sel(counter="resistant_blasts"))
        else:
            n = ds.region_counts.sel(counter="normal_cells")
        n = n.values.astype(float)
        n0 = n[0]
        p = np.exp(-s * H)
        se = np.sqrt(n0 * p * (1 - p))
        # binomial thinning: 4 standard errors (plus 1e-6 relative for the Simpson quadrature)
        assert np.all(np.abs(n[1:] - n0 * p) < 4 * se + 1e-6 * n0), (name, n[1:] / (n0 * p) - 1)
    rc = ds.region_counts
    lost = rc.sel(counter="susceptible_blasts") + rc.sel(counter="resistant_blasts")
    np.testing.assert_array_equal(rc.sel(counter="blast_drug_deaths").values, (lost[0] - lost).values)
    assert np.all(rc.sel(counter="blast_deaths").values == 0) and np.all(rc.sel(counter="normal_deaths").values == 0)


def test_cy_exposure_kill_of_blasts_is_exponential_in_the_cy_auc():
    # Frozen marrow as above, blasts insensitive to the reference hazard (drug_sensitivity 0) but killed at
    # blasts.cy_exposure_kill per mg L-1 of plasma Cy: B(t) ~ Bin(B0, exp(-k AUC_cy(t))), with the AUC of
    # first-order elimination in closed form, dose / V (1 - exp(-kel (t - d))) / kel; normal cells untouched.
    k = 0.02
    params = nksim.load_parameters().with_values({
        "lattice.side": 8, "lattice.voxel_side": 1000.0, "lattice.marrow_cellularity": 100.0,
        "blasts.net_growth_rate": 0.0, "blasts.growth_fraction": 0.0, "random_effects.blast_growth_log_sd": 0.0,
        "normal.division_rate": 0.0, "normal.recovery_rate": 0.0,
        "blasts.drug_sensitivity": 0.0, "normal.drug_sensitivity": 0.0, "blasts.cy_exposure_kill": k,
        "nk.homing_rate": 0.0})
    proto = build_protocol(DRUG_EVENTS + [(0, "nk_infusion", 1.0)], start_day=-40, end_day=2,
                           patients=[fixed_blast_patient(pct=50.0)])
    ds = nksim.simulate(params, proto, seed=22)
    v = params.values()
    kel = math.log(2) / (v["drugs.cy_half_life"] / HOURS)
    weight = float(ds.body_weight)
    days = np.arange(-39, 3)
    auc = np.array([sum(x * weight / v["drugs.cy_volume"] * -math.expm1(-kel * (t - d)) / kel
                        for d, kind, x in DRUG_EVENTS if kind == "cyclophosphamide" and d <= t) for t in days])
    assert k * auc[-1] > 0.5, "regimen must remove a sizeable fraction"
    rc = ds.region_counts
    n = (rc.sel(counter="susceptible_blasts") + rc.sel(counter="resistant_blasts")).values.astype(float)
    p = np.exp(-k * auc)
    se = np.sqrt(n[0] * p * (1 - p))
    assert np.all(np.abs(n[1:] - n[0] * p) < 4 * se + 1e-9 * n[0]), n[1:] / (n[0] * p) - 1
    np.testing.assert_array_equal(rc.sel(counter="normal_cells").values, rc.sel(counter="normal_cells").values[0])


def test_cytarabine_kills_blasts_log_linearly_in_the_dose():
    # Frozen marrow as above, no reference drug hazard: each cytarabine dose (mg m-2) kills blasts at the
    # next marrow update with the log kill blasts.cytarabine_log_kill per g m-2, so after doses D_1..D_j
    # B ~ Bin(B0, exp(-k sum D_i / 1000)); normal cells untouched. With k = 0 the doses change nothing,
    # bit for bit (the same streams: the mechanism is off for every protocol without cytarabine).
    k = 0.2
    base = {"lattice.side": 8, "lattice.voxel_side": 1000.0, "lattice.marrow_cellularity": 100.0,
            "blasts.net_growth_rate": 0.0, "blasts.growth_fraction": 0.0, "random_effects.blast_growth_log_sd": 0.0,
            "normal.division_rate": 0.0, "normal.recovery_rate": 0.0, "blasts.drug_sensitivity": 0.0,
            "normal.drug_sensitivity": 0.0, "nk.homing_rate": 0.0}
    flag = [(-10 + i, "cytarabine", 2000.0) for i in range(5)] + [(-10 + i, "fludarabine", 30.0) for i in range(5)]
    proto = build_protocol(flag + [(0, "nk_infusion", 1.0)], start_day=-12, end_day=2,
                           patients=[fixed_blast_patient(pct=50.0)])
    ds = nksim.simulate(nksim.load_parameters().with_values({**base, "blasts.cytarabine_log_kill": k}), proto, seed=5)
    rc = ds.region_counts
    n = (rc.sel(counter="susceptible_blasts") + rc.sel(counter="resistant_blasts")).values.astype(float)
    days = np.arange(-11, 3)  # record day t holds the state before that day's events
    grams = np.array([sum(2.0 for d, kind, _ in flag if kind == "cytarabine" and d < t) for t in days])
    p = np.exp(-k * grams)
    assert p[-1] < 0.2, "five doses must remove most blasts"
    se = np.sqrt(n[0] * p * (1 - p))
    assert np.all(np.abs(n[1:] - n[0] * p) < 4 * se + 1e-9 * n[0]), n[1:] / (n[0] * p) - 1
    np.testing.assert_array_equal(rc.sel(counter="normal_cells").values, rc.sel(counter="normal_cells").values[0])
    off = nksim.simulate(nksim.load_parameters().with_values({**base, "blasts.cytarabine_log_kill": 0.0}), proto,
                         seed=5)
    no_drug = build_protocol([e for e in flag if e[1] != "cytarabine"] + [(0, "nk_infusion", 1.0)], start_day=-12,
                             end_day=2, patients=[fixed_blast_patient(pct=50.0)])
    plain = nksim.simulate(nksim.load_parameters().with_values(base), no_drug, seed=5)
    np.testing.assert_array_equal(off.region_counts.values, plain.region_counts.values)


def test_normal_cells_regrow_logistically_after_drugs():
    # Normal-only marrow: occupancy regrows as r_n (1 - occ / c) toward the target occupancy c,
    # i.e. logistic with capacity c K. Drugs push it down first; from day -20 on (>= 18
    # half-lives of both drugs after the last dose, so the hazard is < 1e-4 day-1) the mean
    # per voxel must follow the logistic solution from its day -20 value.
    r_n, c = 0.1, 0.5
    params = nksim.load_parameters().with_values({
        "lattice.side": 8, "lattice.voxel_side": 2000.0, "lattice.marrow_cellularity": 100 * c,
        "normal.division_rate": 0.3, "normal.recovery_rate": r_n, "normal.spread_fraction": 0.0,
        "normal.drug_sensitivity": 0.4, "nk.homing_rate": 0.0, "numerics.marrow_step": 1.0,
        "drugs.flu_emax": 1.0, "drugs.cy_emax": 3.0})  # deep enough depletion to test the regrowth
    proto = build_protocol(DRUG_EVENTS + [(0, "nk_infusion", 1.0)], start_day=-40, end_day=30,
                           patients=[fixed_blast_patient(pct=0.0)])
    ds = nksim.simulate_cohort(params, proto, replicates=2, seed=17)
    K = voxel_capacity(params)
    nv = 64
    rc = ds.region_counts
    assert np.all((rc.sel(counter="susceptible_blasts") + rc.sel(counter="resistant_blasts")).values == 0)
    n = rc.sel(counter="normal_cells").values[0].astype(float) / nv  # (replicate, time)
    t = ds.time.values
    # at baseline the marrow sits at its target occupancy (within 4 binomial sd of c K)
    assert np.all(np.abs(n[:, 0] - c * K) < 4 * math.sqrt(c * (1 - c) * K / nv))
    i0 = int(np.searchsorted(t, -20))
    low = n[:, i0]
    assert np.all(low < 0.3 * c * K), "the drugs must have depleted the marrow"
    cap = c * K
    tt = t[i0:] - t[i0]
    sol = cap * low[:, None] / (low[:, None] + (cap - low[:, None]) * np.exp(-r_n * tt))
    rel = n[:, i0:] / sol - 1
    # 1 %: Ricker-vs-logistic discretisation O(r_n delta) with delta = 1 h, demographic noise of
    # the 64-voxel mean < 0.2 %; a 5 % error in r_n would give ~3.5 % deviation
    assert np.max(np.abs(rel.mean(axis=0))) < 0.01, rel.mean(axis=0)
    assert sol[:, -1].min() > 0.9 * cap, "the check must reach the plateau"


# =============================================================================== blood donor NK and IL-15
def test_il15_without_host_lymphocytes_relaxes_to_max_fold():
    # host baselines 0: L_rel = 0, so dI/dt = tau - (tau/M) I and I(t) = M - (M - 1) exp(-tau t / M)
    params = nksim.load_parameters().with_values({"lattice.side": 4, "host.nk_baseline": 0.0,
                                                  "host.t_baseline": 0.0, "host.treg_baseline": 0.0})
    proto = build_protocol([(0, "nk_infusion", 1e6)], start_day=-3, end_day=5)  # infusion 3 days after the start
    ds = nksim.simulate(params, proto, seed=1)
    tau, m = params["il15.turnover_rate"], params["il15.max_fold"]
    t = ds.time.values - proto.start_day  # days since the start of the simulation (I = 1 then)
    # days -3..-1 are quiet days (no agent, no event): their blood is integrated by quiet_day under error control
    # (relative tolerance QUIET_RTOL = 1e-5 per step; 5e-5 globally here), the infusion days step by step with RK4
    assert QUIET_RTOL <= 1e-5
    np.testing.assert_allclose(ds.il15.values, m - (m - 1) * np.exp(-tau * t / m), rtol=1e-4)
    assert np.all(ds.host_nk_blood.values == 0) and np.all(ds.host_t_blood.values == 0)
    assert np.all(ds.host_treg_blood.values == 0)
    after = ds.time.values > 0
    np.testing.assert_allclose(ds.donor_chimerism_nk.values[after], 100.0)


@pytest.mark.parametrize("factor", [0.4, 2.5])
def test_il15_scales_with_the_patients_production(factor):
    """A patient whose IL-15 production is ``factor`` times the population's (her random effect).

    Without drugs her IL-15 stays at ``factor`` (production = clearance + consumption at baseline lymphocytes) until
    donor NK are infused; without host lymphocytes it relaxes from ``factor`` to ``factor`` M:
    I(t) = f (M - (M - 1) exp(-tau t / M)).
    """
    from nksim.engine.layout import R
    from nksim.patients import N_EFFECT_NORMALS, effects_from_normals
    from nksim.simulate import run_one

    ps = nksim.load_parameters().with_values({"lattice.side": 4,
                                              "random_effects.il15_production_log_sd": abs(math.log(factor))})
    z = np.zeros(N_EFFECT_NORMALS)
    z[8] = math.copysign(1.0, math.log(factor))
    eff = effects_from_normals(ps, z)
    assert eff.il15_production_factor == pytest.approx(factor, rel=1e-12)
    proto = build_protocol([(0, "nk_infusion", 5e6)], start_day=-5, end_day=3)
    il = run_one(ps, proto, proto.patients[0], 1, 0, effects=eff).rec[:, R.il15]
    days = proto.start_day + np.arange(il.size)
    np.testing.assert_allclose(il[days <= 0], factor, rtol=0, atol=1e-9)
    empty = ps.with_values({"host.nk_baseline": 0.0, "host.t_baseline": 0.0, "host.treg_baseline": 0.0})
    proto = build_protocol([(0, "nk_infusion", 1e6)], start_day=-3, end_day=5)
    il = run_one(empty, proto, proto.patients[0], 1, 0, effects=eff).rec[:, R.il15]
    tau, m = empty["il15.turnover_rate"], empty["il15.max_fold"]
    t = np.arange(il.size)  # days since the start of the simulation (I = f then)
    np.testing.assert_allclose(il, factor * (m - (m - 1) * np.exp(-tau * t / m)), rtol=1e-4)


@pytest.mark.parametrize("product", ["fresh", "expanded"])
def test_donor_nk_outside_marrow_follow_linear_odes(default_params, product):
    # No homing, no drugs, IL-15 boost off: blood (B) and tissue (T) donor NK obey
    #   B' = g B - u B + r T,  T' = g T + u B - r T,  g = proliferation - death - rejection,
    # (rejection at host T baseline), so B + T = D e^{g t} and B = (B+T)(r + u e^{-(u+r)t})/(u+r).
    # u and r are the protocol's product's: nk.* (fresh) or expanded_nk.* (expanded); the other
    # product's pair is set far off, so using it would fail the comparison.
    p_, mu, rho, u, r = 0.3, 0.069, 0.2, 4.0, 0.4
    group, other = ("nk", "expanded_nk") if product == "fresh" else ("expanded_nk", "nk")
    params = default_params.with_values({
        "lattice.side": 4, "nk.homing_rate": 0.0, "nk.il15_proliferation_max": 0.0, "nk.proliferation_rate": p_,
        "nk.death_rate": mu, "nk.rejection_rate": rho, f"{group}.tissue_uptake_rate": u,
        f"{group}.tissue_return_rate": r, f"{other}.tissue_uptake_rate": 40.0, f"{other}.tissue_return_rate": 0.05,
        "allo.primed_rejection_rate": 0.0})
    dose = 5e6
    proto = build_protocol([(0, "nk_infusion", dose)], start_day=-2, end_day=12, nk_product=product)
    ds = nksim.simulate(params, proto, seed=2)
    w = float(ds.body_weight)
    blood_ul = params["anatomy.blood_volume"] * w * 1000.0
    days = np.arange(1, 13)
    g = p_ - mu - rho
    total = dose * w * np.exp(g * days)
    blood = total * (r + u * np.exp(-(u + r) * days)) / (u + r)
    sim = ds.sel(time=days)
    # RK4 with (u + r) dt = 0.18: relative global error ~1e-5
    np.testing.assert_allclose(sim.donor_nk_blood.values * blood_ul, blood, rtol=1e-4)
    np.testing.assert_allclose(sim.donor_nk_tissue.values, total - blood, rtol=1e-4)
    assert np.all(ds.donor_nk_agents.values == 0)


def test_primed_rejection_follows_the_erlang_delay(default_params):
    # No homing, no IL-15 boost, host T at baseline: all donor NK outside the marrow (B + T) obey
    #   (B + T)' = g(t) (B + T),  g(t) = p - mu - rho - rho_p P(t),
    # with P the Erlang(k, k / delay) CDF of the time since the first infusion, so
    # B + T = D exp(int_0^t g).
    from scipy.stats import gamma

    p_, mu, rho, rho_p, delay, k = 0.3, 0.069, 0.05, 0.3, 5.0, 3
    params = default_params.with_values({
        "lattice.side": 4, "nk.homing_rate": 0.0, "nk.il15_proliferation_max": 0.0, "nk.proliferation_rate": p_,
        "nk.death_rate": mu, "nk.rejection_rate": rho, "allo.primed_rejection_rate": rho_p,
        "allo.priming_delay": delay, "allo.priming_stages": k})
    dose = 5e6
    proto = build_protocol([(0, "nk_infusion", dose)], start_day=-2, end_day=14)
    ds = nksim.simulate(params, proto, seed=2)
    w = float(ds.body_weight)
    days = np.arange(1, 15)
    cdf_integral = np.array([np.trapezoid(gamma.cdf(np.linspace(0, t, 4001), k, scale=delay / k),
                                          np.linspace(0, t, 4001)) for t in days])
    log_total = np.log(dose * w) + (p_ - mu - rho) * days - rho_p * cdf_integral
    sim = ds.sel(time=days)
    np.testing.assert_allclose(np.log(sim.donor_nk_total.values), log_total, atol=2e-4)
    np.testing.assert_allclose(sim.allo_priming.values, gamma.cdf(days, k, scale=delay / k), atol=0.02)


def test_second_infusion_meets_the_primed_response_of_its_donor(default_params):
    """Same donor on day 14: that infusion is rejected at the primed rate; a new donor is not."""
    params = default_params.with_values({"lattice.side": 4, "nk.homing_rate": 0.0, "allo.primed_rejection_rate": 2.0,
                                         "allo.priming_delay": 5.0, "nk.il15_proliferation_max": 0.0})
    from nksim.protocol import protocol_from_dict

    def run(second_donor):
        events = [{"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1", "donor": "A"},
                  {"day": 14, "kind": "nk_infusion", "dose": 1e7, "unit": "kg-1", "donor": second_donor}]
        proto = protocol_from_dict({"protocol": {"name": "t", "start_day": -1, "end_day": 21,
                                                 "assessment_days": [21], "nk_product": "fresh"},
                                    "events": events, "patients": [{"id": "p1", "group": "a"}]})
        return nksim.simulate(params, proto, seed=1)

    same, other = run("A"), run("B")
    # identical until the second infusion; then the primed host clears the same donor faster
    np.testing.assert_array_equal(same.donor_nk_total.sel(time=slice(-1, 14)).values,
                                  other.donor_nk_total.sel(time=slice(-1, 14)).values)
    assert same.donor_nk_total.sel(time=21).item() < 0.2 * other.donor_nk_total.sel(time=21).item()
    assert same.allo_priming.sel(time=15).item() > 0.95


def test_cytokine_pk_and_support_match_their_equations(default_params):
    # IL-2 (MIU, flat dose, times its bioavailability) and N-803 (ug kg-1) go into s.c. depots: D' = -ka D,
    # C' = ka D - ke C, solved independently with LSODA; N-803's exogenous IL-15 signal is
    # n803_fold_per_ug x C; the recorded support is 1 - (1 - f2)(1 - fe) with f2 = phi C2 / (C2 + EC50)
    # (phi = 1 / (1 + Tregs / half suppression)) and fe = x / (x + nk.il15_ec50).
    params = default_params.with_values({"lattice.side": 4})
    v = params.values()
    il2_doses = [(0, 10.0), (2, 10.0), (4, 10.0)]
    n803_doses = [(1, 10.0)]
    events = [(d, "il2", x) for d, x in il2_doses] + [(d, "n803", x) for d, x in n803_doses] + [
        (0, "nk_infusion", 1e6)]
    proto = build_protocol(events, start_day=0, end_day=8)
    ds = nksim.simulate(params, proto, seed=1)
    w = float(ds.body_weight)

    def central(doses, ka_h, ke_h, per):
        ka, ke = math.log(2) / (ka_h / HOURS), math.log(2) / (ke_h / HOURS)
        y, out = np.zeros(2), [0.0]
        for day in range(8):
            for d, x in doses:
                if d == day:
                    y[0] += x * per
            sol = solve_ivp(lambda t, z: [-ka * z[0], ka * z[0] - ke * z[1]], (0, 1), y, method="LSODA",
                            rtol=1e-11, atol=1e-12)
            y = sol.y[:, -1]
            out.append(y[1])
        return np.array(out)

    # an s.c. IL-2 dose puts its bioavailable share into the depot (0.6.0)
    c2 = central(il2_doses, v["il2.absorption_half_life"], v["il2.elimination_half_life"], v["il2.bioavailability"])
    cn = central(n803_doses, v["n803.absorption_half_life"], v["n803.elimination_half_life"], w)
    np.testing.assert_allclose(ds.il2_central.values, c2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ds.n803_central.values, cn, rtol=1e-6, atol=1e-12)
    fold = 1e6 * v["n803.potency"] / (v["anatomy.plasma_volume"] * w * v["il15.baseline_concentration"])
    np.testing.assert_allclose(ds.il15_exogenous.values, fold * cn, rtol=1e-6, atol=1e-12)
    x = fold * cn
    assert x.max() > v["nk.il15_ec50"] and c2[1:].max() > 1e-3  # the doses are pharmacologically active
    phi = 1.0 / (1.0 + ds.host_treg_blood.values / v["treg.nk_half_suppression"])
    f2 = phi * c2 / (c2 + v["il2.ec50"])
    fe = x / (x + v["nk.il15_ec50"])
    np.testing.assert_allclose(ds.cytokine_support.values, 1 - (1 - f2) * (1 - fe), rtol=1e-6, atol=1e-12)
    # the deprecated event kind il15_agonist is N-803
    alias = build_protocol([(d, "il2", x) for d, x in il2_doses] + [(d, "il15_agonist", x) for d, x in n803_doses]
                           + [(0, "nk_infusion", 1e6)], start_day=0, end_day=8)
    same = nksim.simulate(params, alias, seed=1)
    for name in ("n803_central", "il15_exogenous", "donor_nk_total", "host_t_blood"):
        np.testing.assert_array_equal(same[name].values, ds[name].values)


def test_primed_rejection_scales_with_surviving_t_cells(default_params):
    """Primed term = primed_rejection_rate x primed x (T/T0)^e: e = 0 ignores lymphodepletion, e = 1 is proportional."""
    from nksim.engine import layout as L
    from nksim.engine.build import kernel_parameters
    from nksim.engine.kernel import donor_nk_rejection
    from nksim.patients import draw_effects

    eff = draw_effects(default_params, np.random.default_rng(0))
    t0 = default_params["host.t_baseline"]
    for e in (0.0, 0.5, 1.0):
        p = default_params.with_values({"allo.primed_t_exponent": e, "nk.rejection_rate": 0.2,
                                        "allo.primed_rejection_rate": 1.5})
        kp = kernel_parameters(p, eff, -9.0, 30.0, nk_product="expanded")
        assert kp[L.KP.allo_primed_t_exponent] == e
        for t_rel in (1.0, 0.25, 0.04, 0.0):
            for primed in (0.0, 0.6, 1.0):
                expected = 0.2 * t_rel + 1.5 * primed * (1.0 if e == 0.0 else t_rel ** e)
                assert donor_nk_rejection(kp, t_rel * t0, primed, 0.0) == pytest.approx(expected, rel=1e-12,
                                                                                         abs=1e-15)
    # at the host's baseline T count the exponent changes nothing; after deep depletion it delays rejection
    kp_half = kernel_parameters(default_params.with_values({"allo.primed_t_exponent": 0.5}), eff, -9.0, 30.0,
                                nk_product="expanded")
    kp_zero = kernel_parameters(default_params.with_values({"allo.primed_t_exponent": 0.0}), eff, -9.0, 30.0,
                                nk_product="expanded")
    assert donor_nk_rejection(kp_half, t0, 1.0, 0.0) == donor_nk_rejection(kp_zero, t0, 1.0, 0.0)
    assert donor_nk_rejection(kp_half, 0.02 * t0, 1.0, 0.0) < donor_nk_rejection(kp_zero, 0.02 * t0, 1.0, 0.0)
