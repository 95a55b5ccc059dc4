"""Quiet days: the blood integrated a day at a time, the marrow's updates merged, and what they must keep.

A quiet day has no NK agent, no event, no donor pool that could home and a negligible drug hazard
(:func:`nksim.engine.kernel._quiet`). Its blood is advanced by the Rosenbrock 2(3) pair
(:func:`nksim.engine.blood.quiet_day`) and consecutive quiet days share one marrow update that
follows each voxel's mean path (:func:`nksim.engine.kernel.quiet_marrow_days`,
``marrow_update(mean_path=True)``); the daily records between are filled from it
(:func:`nksim.engine.kernel.backfill_marrow`). Checked here against what each replaces: a fine RK4
of the same equations, finite differences, the item-by-item split, many short updates, and the
lattice itself on the days that must be exact.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import nksim
from nksim.engine import blood as B
from nksim.engine import kernel as K
from nksim.engine import pcg64, samplers
from nksim.engine.build import patient_inputs
from nksim.engine.layout import DONOR_STRIDE, KP, N_C, N_Y, C, Y
from nksim.patients import draw_effects
from nksim.streams import generators


def _kp(protocol: str = "ahmadvand2023", overrides: dict | None = None, patient: int = 1, **head):
    params = nksim.load_parameters("default").with_values(overrides or {})
    proto = dataclasses.replace(nksim.load_protocol(protocol), **head)  # head: e.g. nk_product, host_tolerant
    pt = proto.patients[patient]
    eff = draw_effects(params, generators(0, pt.id, 0)["patient"], pt.covariates)
    kp, _ = patient_inputs(params, eff, proto, pt)
    return kp


#: Ranges of the blood's inputs (blood.U_*) drawn for the Jacobian check: up to a few times their clinical values.
INPUT_RANGES = {B.U_HF: (0, 2), B.U_HC: (0, 2), B.U_IL2: (0, 3), B.U_N803: (0, 300), B.U_DTX: (0, 40),
                B.U_RH_IN: (0, 5000)}


def _random_state_and_inputs(kp, rng, n):
    y = np.zeros(n)
    y[Y.host_nk], y[Y.host_t], y[Y.il15] = rng.uniform(5, 300), rng.uniform(10, 1200), rng.uniform(0.5, 12)
    y[Y.host_treg] = rng.uniform(0.5, 400)
    y[Y.il15_exo] = rng.uniform(0, 50) if rng.uniform() < 0.7 else 0.0
    for d in range(int(kp[KP.n_donors])):
        y[Y.donor_nk_blood + DONOR_STRIDE * d], y[Y.donor_nk_tissue + DONOR_STRIDE * d] = rng.uniform(0, 1e8, 2)
    u = np.zeros(B.N_U)
    assert set(INPUT_RANGES) == set(range(B.N_U)), "every input of the blood needs a range here"
    for i, (lo, hi) in INPUT_RANGES.items():
        u[i] = rng.uniform(lo, hi) if rng.uniform() < 0.8 else 0.0  # each input also absent at times
    return y, u


@pytest.mark.parametrize("protocol, head", [
    ("ahmadvand2023", {}), ("bachanova2014_hi_cy_flu", {}),
    ("bachanova2014_hi_cy_flu", {"nk_product": "ciml"}), ("bachanova2014_hi_cy_flu", {"host_tolerant": True}),
    ("ahmadvand2023", {"nk_product": "ciml", "host_tolerant": True}),
])
def test_blood_jacobian_matches_finite_differences(protocol, head):
    """Every state (host NK, T, Tregs, IL-15, exogenous IL-15, each donor's pools) and input (blood.U_*)."""
    kp = _kp(protocol, **head)
    n = N_Y + DONOR_STRIDE * (int(kp[KP.n_donors]) - 1)
    rng = np.random.default_rng(3)
    for _ in range(40):
        y, u = _random_state_and_inputs(kp, rng, n)
        primed = rng.uniform(0, 1, int(kp[KP.n_donors]))
        args = (u, 1e6, primed)  # inputs, marrow donor NK, priming
        jac = np.zeros((n, n))
        B.blood_jacobian(kp, y, *args, jac)
        num = np.zeros((n, n))
        rounding = np.zeros((n, n))
        # the rounding error of a central difference: eps x (largest term of the row) / step; a row's largest
        # term is at most the fastest rate times the cells it moves (a donor's blood and tissue pools together)
        lam = B.blood_stiffness(kp, y, u, 1e6, primed)
        scale = lam * np.abs(y)
        for d in range(int(kp[KP.n_donors])):
            ib, it = Y.donor_nk_blood + DONOR_STRIDE * d, Y.donor_nk_tissue + DONOR_STRIDE * d
            scale[ib] = scale[it] = lam * (y[ib] + y[it])
        for j in range(n):
            e = 1e-6 * max(abs(y[j]), 1.0)
            up, dn = y.copy(), y.copy()
            up[j] += e
            dn[j] -= e
            fu, fd = np.zeros(n), np.zeros(n)
            B.blood_rhs(kp, up, *args, fu)
            if j == Y.il15_exo and y[j] == 0.0:
                # no rhIL-15 in plasma: the state cannot go below 0, where the IL-15 Emax terms have their kink
                # (without N-803), so the Jacobian is the derivative from above: a second-order forward difference
                f0, f2 = np.zeros(n), np.zeros(n)
                up2 = y.copy()
                up2[j] += 2 * e
                B.blood_rhs(kp, y, *args, f0)
                B.blood_rhs(kp, up2, *args, f2)
                num[:, j] = (4 * fu - f2 - 3 * f0) / (2 * e)
            else:
                B.blood_rhs(kp, dn, *args, fd)
                num[:, j] = (fu - fd) / (2 * e)
            rounding[:, j] = 1e-14 * scale / e
        np.testing.assert_array_less(np.abs(jac - num), 1e-4 * np.abs(num) + 1e-7 * np.abs(num).max() + rounding)


def _reference_blood(kp, y, days, pk, first_exposure, dt=1.0 / 960):
    """The blood over ``days`` by RK4 steps of 90 s with the quiet-day inputs at each stage (the reference)."""
    n = y.shape[0]
    primed = np.zeros(first_exposure.shape[0])
    out = [np.empty(n) for _ in range(5)]
    u0, um, u1 = np.zeros(B.N_U), np.zeros(B.N_U), np.zeros(B.N_U)
    scratch = [np.empty(B.N_U) for _ in range(3)]
    for i in range(int(round(days / dt))):
        s = i * dt
        # RK4 with the inputs at start, middle and end, the priming at mid-step
        B.quiet_inputs(kp, s, pk, first_exposure, primed, u0)
        B.quiet_inputs(kp, s + dt, pk, first_exposure, primed, u1)
        B.quiet_inputs(kp, s + 0.5 * dt, pk, first_exposure, primed, um)  # leaves primed at mid-step
        B.rk4_blood(kp, y, dt, u0, um, u1, 0.0, primed, *out, *scratch)
    return y


@pytest.mark.parametrize("case", ["after lymphodepletion", "with IL-2 and a donor pool",
                                  "with IL-15 agonists, IL2DT and a donor pool"])
def test_a_quiet_day_follows_a_fine_rk4_of_the_same_equations(case):
    kp = _kp("ahmadvand2023" if case == "after lymphodepletion" else "bachanova2014_hi_cy_flu")
    n = N_Y + DONOR_STRIDE * (int(kp[KP.n_donors]) - 1)
    y0 = np.zeros(n)
    y0[Y.host_nk], y0[Y.host_t], y0[Y.il15], y0[Y.host_treg] = 30.0, 120.0, 6.0, 5.0
    y0[Y.donor_nk_blood], y0[Y.donor_nk_tissue] = 2e5, 4e5
    pk = np.zeros(B.N_PK)
    # drug amounts whose hazard is just below the quiet threshold; for the second case IL-2 in depot and blood
    pk[B.PK_FLU], pk[B.PK_CY] = 0.1, 1.0
    if "IL-2" in case:
        pk[B.PK_IL2_DEPOT], pk[B.PK_IL2] = 9.0, 2.0
    if "agonists" in case:  # (0.6.0) N-803 in its depot and central, rhIL-15 (depot, plasma) and IL2DT just below
        pk[B.PK_N803_DEPOT], pk[B.PK_N803] = 0.5, 0.05  # their quiet thresholds
        pk[B.PK_RH_DEPOT] = 0.45 * B.QUIET_MAX_RHIL15 / kp[KP.rhil15_fold_per_ug]
        pk[B.PK_IL2DT] = 0.9 * B.QUIET_MAX_HAZARD / kp[KP.il2dt_kill_per_ug]
        y0[Y.il15_exo] = 0.45 * B.QUIET_MAX_RHIL15
        assert kp[KP.n803_fold_per_ug] * pk[B.PK_N803] > kp[KP.nk_il15_ec50]  # N-803 active
    assert 0.002 < B.drug_hazard(kp, pk[B.PK_FLU], pk[B.PK_CY]) < B.QUIET_MAX_HAZARD
    first = np.array([-3.0])  # the donor was first infused 3 days before this day: priming under way
    ref = _reference_blood(kp, y0.copy(), 1.0, pk, first)
    y = y0.copy()
    work = np.zeros((B.N_WORK, n))
    jac, mat, piv = np.zeros((n, n)), np.zeros((n, n)), np.zeros(n, dtype=np.int64)
    h, steps = B.quiet_day(kp, y, 1.0, pk, first, np.zeros(1), 0.1, *B.quiet_tolerances(kp, n)[::-1], work, jac, mat,
                           piv)
    assert 1 <= steps <= 60 and 0.0 < h <= 1.0  # (90-second RK4 steps: 960)
    # local tolerance 1e-5 per step, so within 1e-4 of the reference after a day
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-3)


def test_quiet_days_over_months_stay_on_the_reference():
    """Sixty quiet days of regrowth after lymphodepletion, a day per call as the kernel does."""
    kp = _kp()
    n = N_Y + DONOR_STRIDE * (int(kp[KP.n_donors]) - 1)
    y = np.zeros(n)
    y[Y.host_nk], y[Y.host_t], y[Y.il15], y[Y.host_treg] = 20.0, 100.0, 8.0, 3.0
    ref = y.copy()
    pk = np.zeros(B.N_PK)
    first = np.array([np.inf])
    work = np.zeros((B.N_WORK, n))
    jac, mat, piv = np.zeros((n, n)), np.zeros((n, n)), np.zeros(n, dtype=np.int64)
    h = 0.1
    total = 0
    for day in range(60):
        pk[B.PK_T0] = day
        h, steps = B.quiet_day(kp, y, 1.0, pk, first, np.zeros(1), h, *B.quiet_tolerances(kp, n)[::-1], work, jac,
                               mat, piv)
        total += steps
        ref = _reference_blood(kp, ref, 1.0, pk, first, dt=1.0 / 96)
    assert total <= 4 * 60  # a few steps a day, not 24
    for j in (Y.host_nk, Y.host_t, Y.host_treg, Y.il15):
        assert abs(y[j] / ref[j] - 1.0) < 5e-5, (j, y[j], ref[j])


@pytest.mark.parametrize("m", [0, 1, 3, 25, 26, 27, 52, 53, 100, 777, 5000])
def test_split_even4_counts_the_same_items_as_one_by_one(m):
    """The population-count split gives, draw for draw, the counts of reading each item's 2 bits in turn."""
    for seed in range(20):
        a = np.random.Generator(np.random.PCG64(seed))
        b = np.random.Generator(np.random.PCG64(seed))
        got = samplers.split_even4(pcg64.pack(a), np.int64(m))
        st = pcg64.pack(b)
        counts = [0, 0, 0, 0]
        left = m
        while left > 0:
            bits = int(pcg64.uniform(st) * 2.0**53)
            for _ in range(min(left, 26)):
                counts[bits & 3] += 1
                bits >>= 2
            left -= min(left, 26)
        assert tuple(got) == tuple(counts)


def _lattice(kp, nv, rng, occ=0.97, blast_share=0.4):
    cap = int(kp[KP.voxel_capacity])
    tot = rng.binomial(cap, occ, nv)
    bl = rng.binomial(tot, blast_share)
    sus = rng.binomial(bl, 0.5)
    return sus.astype(np.int32), (bl - sus).astype(np.int32), (tot - bl).astype(np.int32)


def test_a_merged_update_has_the_mean_of_the_deterministic_voxel_path():
    """One merged 5-day update versus 120 hourly ones: the same mean lattice (within 4 standard errors).

    An indolent disease (p03) in a marrow regrowing after chemotherapy: the normal cells' rate falls as
    they fill the marrow, which a merged update with the rates frozen at its start would miss.
    """
    kp = _kp(overrides={"lattice.side": 2, "lattice.voxel_side": 1600.0, "blasts.spread_fraction": 0.0,
                        "normal.spread_fraction": 0.0}, patient=2)
    rng = np.random.default_rng(5)
    sus0, res0, nor0 = _lattice(kp, 4, rng, occ=0.6, blast_share=0.3)  # regrowing after chemotherapy
    z = lambda: np.zeros(4, dtype=np.int32)  # noqa: E731
    halt = np.zeros(1, dtype=np.int64)
    merged, hourly = [], []
    births = {"merged": [], "hourly": []}  # normal-cell divisions counted
    for rep in range(300):
        st = pcg64.pack(np.random.Generator(np.random.PCG64(rep)))
        s, r, n = sus0.copy(), res0.copy(), nor0.copy()
        cnt = np.zeros(N_C, dtype=np.int64)
        K.marrow_update(kp, st, s, r, n, z(), z(), z(), 0.0, cnt, 5.0, halt, True)
        merged.append([s.sum() + r.sum(), n.sum()])
        births["merged"].append(cnt[C.normal_births])
        s, r, n = sus0.copy(), res0.copy(), nor0.copy()
        cnt = np.zeros(N_C, dtype=np.int64)
        for _ in range(120):
            K.marrow_update(kp, st, s, r, n, z(), z(), z(), 0.0, cnt, 1.0 / 24, halt)
        hourly.append([s.sum() + r.sum(), n.sum()])
        births["hourly"].append(cnt[C.normal_births])
    # the division counter counts divisions, not only the lineages one long update draws (within 1 %)
    assert abs(np.mean(births["merged"]) / np.mean(births["hourly"]) - 1.0) < 0.01, births
    merged, hourly = np.array(merged, float), np.array(hourly, float)
    se = np.sqrt(merged.var(0) / len(merged) + hourly.var(0) / len(hourly))
    assert np.all(np.abs(merged.mean(0) - hourly.mean(0)) < 4 * se + 1e-4 * hourly.mean(0)), (
        merged.mean(0), hourly.mean(0), se)
    # and a frozen-rate update of the same length would not be there: the test can tell the difference
    frozen = []
    for rep in range(300):
        st = pcg64.pack(np.random.Generator(np.random.PCG64(10_000 + rep)))
        s, r, n = sus0.copy(), res0.copy(), nor0.copy()
        K.marrow_update(kp, st, s, r, n, z(), z(), z(), 0.0, np.zeros(N_C, dtype=np.int64), 5.0, halt)
        frozen.append(n.sum())
    assert abs(np.mean(frozen) - hourly[:, 1].mean()) > 4 * se[1]


def test_quiet_marrow_days_bounds():
    kp = _kp(overrides={"lattice.side": 2, "lattice.voxel_side": 1600.0})
    rng = np.random.default_rng(2)
    near = _lattice(kp, 4, rng, occ=float(kp[KP.normal_target]), blast_share=0.0)
    # normal cells at their target occupancy: nothing changes, the cap rules
    assert K.quiet_marrow_days(kp, *near, 7, 1.0) == 7
    # a marrow emptied by chemotherapy regrows fast: short merges, each division probability a probability
    low = _lattice(kp, 4, rng, occ=0.05, blast_share=0.1)
    days = K.quiet_marrow_days(kp, *low, 7, 1.0)
    assert days < 7
    occ = (low[0] + low[1] + low[2]) / kp[KP.voxel_capacity]
    b_n = kp[KP.normal_birth_rate]
    d_n = np.maximum(b_n - kp[KP.normal_recovery_rate] * (1 - occ / kp[KP.normal_target]), 0.0).min()
    assert np.exp(-d_n * days) * np.expm1(b_n * days) <= K.QUIET_MARROW_MAX_P_DIV
    # a merge is never shorter than the regular marrow step
    assert K.quiet_marrow_days(kp, *near, 7, 8.0) == 0
    # within the bounds, the paths bend by at most QUIET_MARROW_BEND from a straight log line over the merge
    mid = _lattice(kp, 4, rng, occ=0.8, blast_share=0.3)
    days = K.quiet_marrow_days(kp, *mid, 7, 1.0)
    cap = kp[KP.voxel_capacity]
    occ = (mid[0] + mid[1] + mid[2]) / cap
    b_n, r_n, c_n = kp[KP.normal_birth_rate], kp[KP.normal_recovery_rate], kp[KP.normal_target]
    g_n = b_n - np.maximum(b_n - r_n * (1 - occ / c_n), 0.0)
    g_b = kp[KP.blast_birth_rate] - np.maximum(kp[KP.blast_birth_rate] - kp[KP.blast_net_growth_rate] * (1 - occ), 0)
    growth = ((mid[0] + mid[1]) * g_b + mid[2] * g_n).sum() / (4 * cap)
    drift = max(abs(kp[KP.blast_net_growth_rate]), r_n / c_n) * abs(growth)
    assert 1 <= days < 7 and drift * days**2 / 8 <= K.QUIET_MARROW_BEND + 1e-12 < drift * (days + 1) ** 2 / 8


def test_the_marrow_is_exact_on_assessment_and_snapshot_days():
    """Merged updates never span the days whose records are read as the lattice's own (snapshots, assessments)."""
    params = nksim.load_parameters("default").with_values({"lattice.side": 4, "lattice.voxel_side": 1600.0})
    proto = nksim.load_protocol("ahmadvand2023")
    proto = dataclasses.replace(proto, snapshot_days=(60.0, 91.0, 150.0, 200.0, 300.0))
    ds = nksim.simulate_cohort(params, proto, patients=["p03", "p05", "p08"], replicates=2, seed=3)
    for day in proto.snapshot_days:
        lat = ds.sel(snapshot_time=day)
        for var, counter in (("lattice_susceptible_blasts", "susceptible_blasts"),
                             ("lattice_resistant_blasts", "resistant_blasts"), ("lattice_normal", "normal_cells")):
            total = lat[var].sum(("y", "x")).values
            np.testing.assert_array_equal(total, ds.region_counts.sel(time=day, counter=counter).values)
    # quiet days do merge here: some record between snapshot days is not a lattice state drawn that day, which
    # shows as a straight line of the cumulative marrow counters over the merged days
    births = ds.region_counts.sel(counter="normal_births").values.astype(float)
    steps = np.diff(births, axis=-1)[..., 100:140]
    assert np.any(np.abs(np.diff(steps, axis=-1)) <= 1)


def test_a_merged_update_is_not_taken_when_it_would_be_inaccurate():
    """A proliferative disease near half occupancy changes fast: its quiet days keep daily marrow updates."""
    kp = _kp(overrides={"lattice.side": 2, "lattice.voxel_side": 1600.0, "blasts.net_growth_rate": 0.3})
    rng = np.random.default_rng(4)
    assert K.quiet_marrow_days(kp, *_lattice(kp, 4, rng, occ=0.5, blast_share=0.9), 7, 1.0) == 0
    assert math.isfinite(K.QUIET_MARROW_MAX_P_DIV) and K.QUIET_MARROW_MAX_P_DIV < 1.0


def test_days_with_il2dt_or_rhil15_are_not_quiet():
    """IL2DT (t 1/2 about 1 h) killing Tregs and rhIL-15 (cleared within hours) keep a day step by step (0.6.0)."""
    kp = _kp()
    n = N_Y + DONOR_STRIDE * (int(kp[KP.n_donors]) - 1)
    spd, n_steps = int(kp[KP.steps_per_day]), int(kp[KP.n_steps])
    y = np.zeros(n)
    y[Y.host_nk], y[Y.host_t], y[Y.host_treg], y[Y.il15] = 50.0, 100.0, 5.0, 3.0
    none = np.zeros(0, dtype=np.int64)

    def quiet(pk, y):
        return K._quiet(kp, np.int64(spd * 40), np.int64(spd), np.int64(n_steps), np.int64(0), y, none, np.int64(0),
                        pk)

    pk = np.zeros(B.N_PK)
    assert quiet(pk, y)
    pk[B.PK_IL2DT] = 2 * B.QUIET_MAX_HAZARD / kp[KP.il2dt_kill_per_ug]
    assert not quiet(pk, y)
    pk[B.PK_IL2DT] = 0.0
    pk[B.PK_RH_DEPOT] = 2 * B.QUIET_MAX_RHIL15 / kp[KP.rhil15_fold_per_ug]
    assert not quiet(pk, y)
    pk[B.PK_RH_DEPOT] = 0.0
    y2 = y.copy()
    y2[Y.il15_exo] = 2 * B.QUIET_MAX_RHIL15
    assert not quiet(pk, y2)
    pk[B.PK_N803_DEPOT] = 100.0  # N-803 (hours to days) is integrated on quiet days
    assert quiet(pk, y)
