"""The numba kernel: one virtual patient from the start of lymphodepletion to follow-up.

State is struct-of-arrays NumPy data:

* marrow lattice: ``sus``, ``res``, ``nor`` (int32, one entry per voxel) -- counts of
  NK-susceptible blasts, NK-resistant blasts and normal haematopoietic cells in a voxel
  of capacity ``K``; a 2-D periodic lattice flattened row-major;
* donor NK agents in the lattice region: ``a_pos`` (voxel), ``a_comp`` (killer
  competent), ``a_kills`` (serial kills so far), ``a_ready`` (first step at which the refractory period
  ends); the first ``n_agents`` entries are alive (swap-remove on death);
* blood, well mixed: ``y`` indexed by ``Y`` (``y[Y.host_nk]``, ``y[Y.host_t]`` per uL,
  ``y[Y.il15]`` relative, ``y[Y.donor_nk_blood]``, ``y[Y.donor_nk_tissue]`` whole-body cells;
  declared in :data:`nksim.quantities.BLOOD_STATE`) and drug amounts ``flu``, ``cy`` (mg).

Every array index is a named field of :mod:`nksim.engine.layout` (``kp[KP.nk_kill_probability]``,
``rec[r, R.marrow_blast_pct]``, ``cnt_now[C.nk_homed]``), derived from :mod:`nksim.quantities`.

Step order (one step of ``dt``; documented in docs/architecture.md and kept stable):

1. record the day (state *before* that day's events) when a day boundary is reached;
2. apply the events scheduled for this step (drug doses, NK infusions into blood);
3. PK: drug concentrations decay analytically; the lymphocyte kill hazard is integrated
   over the step (Simpson) and accumulated for the marrow update;
4. blood and IL-15: RK4 over the step (host Gompertz regrowth minus drug kill, IL-15
   production/consumption, donor NK proliferation/death/rejection, tissue exchange);
5. NK agents: motility (Poisson number of voxel hops), then contact killing;
6. NK agents: fate (divide / die / egress to blood), competing risks;
7. homing: binomial number of whole blood donor NK (pool / scale) entering the region;
8. marrow cells (every ``marrow_every`` steps): deaths then divisions per voxel, daughters
   placed locally or in a random neighbour when there is room.

Every stochastic process draws only from its own generator (``rng_move``, ``rng_kill``,
``rng_fate``, ``rng_traffic``, ``rng_marrow``; ``rng_init`` for the initial lattice), so
two protocols run with the same seeds share random numbers until their histories differ.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layout import C, EV, KP, N_C, N_R, N_S, N_Y, R, S, Y


# --------------------------------------------------------------------------- helpers
@njit(cache=True)
def drug_hazard(kp, flu_amt, cy_amt):
    """Kill hazard (day-1) on blood lymphocytes for drug amounts (mg): sum of two Emax terms."""
    cf = flu_amt / kp[KP.drugs_flu_volume]
    cc = cy_amt / kp[KP.drugs_cy_volume]
    return kp[KP.drugs_flu_emax] * cf / (cf + kp[KP.drugs_flu_ec50]) + kp[KP.drugs_cy_emax] * cc / (cc + kp[KP.drugs_cy_ec50])


@njit(cache=True)
def nk_proliferation(kp, il15):
    """Donor NK division rate (day-1) at relative IL-15 ``il15``: basal + Emax in the excess over 1."""
    x = il15 - 1.0
    if x < 0.0:
        x = 0.0
    return kp[KP.nk_proliferation_rate] + kp[KP.nk_il15_proliferation_max] * x / (x + kp[KP.nk_il15_ec50])


@njit(cache=True)
def blood_rhs(kp, y, hazard, out):
    """Right-hand side of the blood ODEs (per day); ``hazard`` is the drug kill hazard.

    ``y`` and ``out`` are indexed by ``Y`` (:data:`nksim.quantities.BLOOD_STATE`).
    """
    hnk = max(y[Y.host_nk], 1e-12)
    ht = max(y[Y.host_t], 1e-12)
    il = y[Y.il15]
    rec = kp[KP.patient_host_recovery_rate]
    out[Y.host_nk] = rec * hnk * math.log(kp[KP.host_nk_baseline] / hnk) - hazard * hnk if kp[KP.host_nk_baseline] > 0 else -hazard * hnk
    out[Y.host_t] = rec * ht * math.log(kp[KP.host_t_baseline] / ht) - hazard * ht if kp[KP.host_t_baseline] > 0 else -hazard * ht
    # IL-15: production balances removal at baseline (il = 1); removal = clearance + consumption
    tau = kp[KP.il15_turnover_rate]
    k_clear = tau / kp[KP.il15_max_fold]
    k_cons = tau - k_clear
    base = kp[KP.host_nk_baseline] + kp[KP.host_t_baseline]
    donor_ul = y[Y.donor_nk_blood] / kp[KP.blood_volume_ul]
    lrel = (y[Y.host_nk] + y[Y.host_t] + kp[KP.il15_donor_nk_weight] * donor_ul) / base if base > 0 else 0.0
    out[Y.il15] = tau - (k_clear + k_cons * lrel) * il
    # donor NK outside the marrow: net growth (division - death - rejection - drug), tissue exchange
    rej = kp[KP.nk_rejection_rate] * (y[Y.host_t] / kp[KP.host_t_baseline] if kp[KP.host_t_baseline] > 0 else 0.0)
    net = nk_proliferation(kp, il) - kp[KP.nk_death_rate] - rej - hazard
    out[Y.donor_nk_blood] = net * y[Y.donor_nk_blood] - kp[KP.nk_tissue_uptake_rate] * y[Y.donor_nk_blood] + kp[KP.nk_tissue_return_rate] * y[Y.donor_nk_tissue]
    out[Y.donor_nk_tissue] = net * y[Y.donor_nk_tissue] + kp[KP.nk_tissue_uptake_rate] * y[Y.donor_nk_blood] - kp[KP.nk_tissue_return_rate] * y[Y.donor_nk_tissue]


@njit(cache=True)
def _rk4_substep(kp, y, dt, h0, hmid, h1, k1, k2, k3, k4, tmp):
    n = y.shape[0]
    blood_rhs(kp, y, h0, k1)
    for i in range(n):
        tmp[i] = y[i] + 0.5 * dt * k1[i]
    blood_rhs(kp, tmp, hmid, k2)
    for i in range(n):
        tmp[i] = y[i] + 0.5 * dt * k2[i]
    blood_rhs(kp, tmp, hmid, k3)
    for i in range(n):
        tmp[i] = y[i] + dt * k3[i]
    blood_rhs(kp, tmp, h1, k4)
    for i in range(n):
        y[i] = y[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        if y[i] < 0.0:
            y[i] = 0.0


@njit(cache=True)
def blood_stiffness(kp, y, hazard):
    """Upper bound (day-1) on the fastest decay rate of the blood ODEs at state ``y``."""
    tau = kp[KP.il15_turnover_rate]
    base = kp[KP.host_nk_baseline] + kp[KP.host_t_baseline]
    donor_ul = y[Y.donor_nk_blood] / kp[KP.blood_volume_ul]
    lrel = (y[Y.host_nk] + y[Y.host_t] + kp[KP.il15_donor_nk_weight] * donor_ul) / base if base > 0 else 0.0
    lam = tau * (1.0 / kp[KP.il15_max_fold] + (1.0 - 1.0 / kp[KP.il15_max_fold]) * lrel)
    rec = kp[KP.patient_host_recovery_rate]
    for j in (Y.host_nk, Y.host_t):
        l0 = kp[KP.host_nk_baseline] if j == Y.host_nk else kp[KP.host_t_baseline]
        if l0 > 0.0 and y[j] > 0.0:
            g = rec * (abs(math.log(l0 / y[j])) + 1.0) + hazard
            if g > lam:
                lam = g
    nk = (nk_proliferation(kp, y[Y.il15]) + kp[KP.nk_death_rate] + kp[KP.nk_rejection_rate] + hazard
          + kp[KP.nk_tissue_uptake_rate] + kp[KP.nk_tissue_return_rate])
    if nk > lam:
        lam = nk
    return lam


@njit(cache=True)
def rk4_blood(kp, y, dt, h0, hmid, h1, k1, k2, k3, k4, tmp):
    """Advance the blood ODEs by ``dt`` days with RK4; drug hazard given at start, middle, end.

    The step is split into ``n`` equal RK4 sub-steps with ``n * (fastest rate) * sub-step <= 1``
    (RK4 is stable up to about 2.8), so any ``numerics.dt`` the schema allows is stable; the
    hazard inside the step is the quadratic through ``h0, hmid, h1``. With the default
    dt = 1 h, n = 1.
    """
    lam = blood_stiffness(kp, y, max(h0, max(hmid, h1)))
    n_sub = int(math.ceil(lam * dt))
    if n_sub < 1:
        n_sub = 1
    if n_sub == 1:
        _rk4_substep(kp, y, dt, h0, hmid, h1, k1, k2, k3, k4, tmp)
        return
    hs = dt / n_sub
    for k in range(n_sub):
        # quadratic (Lagrange) interpolation of the hazard at the sub-step's start, middle, end
        a = _hazard_at(k / n_sub, h0, hmid, h1)
        m = _hazard_at((k + 0.5) / n_sub, h0, hmid, h1)
        e = _hazard_at((k + 1.0) / n_sub, h0, hmid, h1)
        _rk4_substep(kp, y, hs, a, m, e, k1, k2, k3, k4, tmp)


@njit(cache=True)
def _hazard_at(s, h0, hmid, h1):
    """Quadratic through (0, h0), (1/2, hmid), (1, h1) at fraction ``s`` of the step (>= 0)."""
    v = h0 * (2.0 * s - 1.0) * (s - 1.0) + hmid * 4.0 * s * (1.0 - s) + h1 * s * (2.0 * s - 1.0)
    return v if v > 0.0 else 0.0


@njit(cache=True)
def neighbour(v, direction, side):
    """Von Neumann neighbour of flat voxel ``v`` on a periodic ``side`` x ``side`` lattice."""
    r = v // side
    c = v - r * side
    if direction == 0:
        r = r - 1 if r > 0 else side - 1
    elif direction == 1:
        r = r + 1 if r < side - 1 else 0
    elif direction == 2:
        c = c - 1 if c > 0 else side - 1
    else:
        c = c + 1 if c < side - 1 else 0
    return r * side + c


@njit(cache=True)
def init_lattice(kp, rng_init, sus, res, nor):
    """Fill the lattice: cells ~ Bin(K, cellularity), blasts ~ Bin(cells, f_blast), susceptible ~ Bin(blasts, f_sus)."""
    K = int(kp[KP.voxel_capacity])
    for v in range(sus.shape[0]):
        tot = rng_init.binomial(K, kp[KP.cellularity])
        b = rng_init.binomial(tot, kp[KP.blast_fraction0])
        s = rng_init.binomial(b, kp[KP.susceptible_fraction0])
        sus[v] = s
        res[v] = b - s
        nor[v] = tot - b


@njit(cache=True)
def _split_drug(rng, deaths, nat_rate_dt, drug_h):
    """How many of ``deaths`` are attributed to the drug (competing hazards)."""
    if drug_h <= 0.0 or deaths == 0:
        return 0
    return rng.binomial(deaths, drug_h / (nat_rate_dt + drug_h))


@njit(cache=True)
def marrow_update(kp, rng, sus, res, nor, bsus, bres, bnor, hazard_integral, cnt_now, delta):
    """Deaths and divisions of marrow cells over ``delta`` days (mean-exact tau-leap per voxel).

    Per capita, blasts divide at ``b`` and die at ``max(b - r (1 - occ), 0)`` so that their
    net growth is logistic, ``r (1 - occ)``, in the voxel occupancy ``occ = cells / K``;
    normal cells regrow as ``r_n (1 - occ / c)`` toward the target occupancy ``c`` and are
    crowded out by blasts. ``hazard_integral`` (dimensionless) is the integrated drug kill
    hazard on lymphocytes, scaled by each population's drug sensitivity.
    """
    nv = sus.shape[0]
    side = int(kp[KP.lattice_side])
    K = int(kp[KP.voxel_capacity])
    b_b = kp[KP.blast_birth_rate]
    r_b = kp[KP.blast_net_growth_rate]
    b_n = kp[KP.normal_birth_rate]
    r_n = kp[KP.normal_recovery_rate]
    c_n = kp[KP.normal_target]
    hb = kp[KP.blasts_drug_sensitivity] * hazard_integral
    hn = kp[KP.normal_drug_sensitivity] * hazard_integral
    p_switch = kp[KP.blasts_switch_probability]
    # pass 1: deaths (in place) and number of daughters per voxel
    for v in range(nv):
        s = sus[v]
        rr = res[v]
        n = nor[v]
        tot = s + rr + n
        if tot == 0:
            bsus[v] = 0
            bres[v] = 0
            bnor[v] = 0
            continue
        occ = tot / K
        db = b_b - r_b * (1.0 - occ)
        if db < 0.0:
            db = 0.0
        dn = b_n - r_n * (1.0 - occ / c_n)
        if dn < 0.0:
            dn = 0.0
        # Deaths and divisions are drawn independently from the cells present at the start
        # of the step with p_die = 1 - exp(-(d delta + h)) and p_div = exp(-(d delta + h))
        # (exp(b delta) - 1), so the expected count after the step is exactly
        # n exp((b - d) delta - h): no tau-leap bias even though b and d nearly cancel.
        surv_b = math.exp(-(db * delta + hb))
        surv_n = math.exp(-(dn * delta + hn))
        p_die_b = 1.0 - surv_b
        p_die_n = 1.0 - surv_n
        p_birth_b = min(surv_b * (math.exp(b_b * delta) - 1.0), 1.0)
        p_birth_n = min(surv_n * (math.exp(b_n * delta) - 1.0), 1.0)
        ds = rng.binomial(s, p_die_b) if s > 0 else 0
        dr = rng.binomial(rr, p_die_b) if rr > 0 else 0
        dnn = rng.binomial(n, p_die_n) if n > 0 else 0
        bs = rng.binomial(s, p_birth_b) if s > 0 else 0
        br = rng.binomial(rr, p_birth_b) if rr > 0 else 0
        bn = rng.binomial(n, p_birth_n) if n > 0 else 0
        drug_b = _split_drug(rng, ds + dr, db * delta, hb)
        drug_n = _split_drug(rng, dnn, dn * delta, hn)
        cnt_now[C.blast_deaths] += ds + dr - drug_b
        cnt_now[C.blast_drug_deaths] += drug_b
        cnt_now[C.normal_deaths] += dnn - drug_n
        cnt_now[C.normal_drug_deaths] += drug_n
        sus[v] = s - ds
        res[v] = rr - dr
        nor[v] = n - dnn
        if p_switch > 0.0:
            s2r = rng.binomial(bs, p_switch) if bs > 0 else 0
            r2s = rng.binomial(br, p_switch) if br > 0 else 0
            bs += r2s - s2r
            br += s2r - r2s
        bsus[v] = bs
        bres[v] = br
        bnor[v] = bn
    # pass 2: place daughters in the mother's voxel or, with the spread fraction, a neighbour
    sp_b = kp[KP.blasts_spread_fraction]
    sp_n = kp[KP.normal_spread_fraction]
    for v in range(nv):
        for kind in range(3):
            if kind == 0:
                nb = bsus[v]
                sp = sp_b
            elif kind == 1:
                nb = bres[v]
                sp = sp_b
            else:
                nb = bnor[v]
                sp = sp_n
            if nb == 0:
                continue
            n_out = rng.binomial(nb, sp) if sp > 0.0 else 0
            n_loc = nb - n_out
            free = K - sus[v] - res[v] - nor[v]
            placed = n_loc if n_loc <= free else free
            lost = n_loc - placed
            if kind == 0:
                sus[v] += placed
            elif kind == 1:
                res[v] += placed
            else:
                nor[v] += placed
            # emigrants split evenly over the 4 neighbours (multinomial as 3 binomials)
            left = n_out
            for d in range(4):
                if left == 0:
                    break
                m = left if d == 3 else rng.binomial(left, 1.0 / (4 - d))
                left -= m
                if m == 0:
                    continue
                w = neighbour(v, d, side)
                room = K - sus[w] - res[w] - nor[w]
                put = m if m <= room else room
                if put < 0:
                    put = 0
                placed += put
                lost += m - put
                if kind == 0:
                    sus[w] += put
                elif kind == 1:
                    res[w] += put
                else:
                    nor[w] += put
            if kind == 2:
                cnt_now[C.normal_births] += placed + lost
                cnt_now[C.normal_daughters_lost] += lost
            else:
                cnt_now[C.blast_births] += placed + lost
                cnt_now[C.blast_daughters_lost] += lost


@njit(cache=True)
def _grow(arr, n):
    out = np.empty(n, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


@njit(cache=True)
def record_day(kp, rec, cnt, r, y, flu, cy, hazard, sus, res, nor, n_agents, a_comp, a_kills,
               cnt_now):
    """Fill day ``r`` of the record from the current state."""
    scale = kp[KP.scale]
    ss = 0
    rs = 0
    ns = 0
    for v in range(sus.shape[0]):
        ss += sus[v]
        rs += res[v]
        ns += nor[v]
    cnt_now[C.susceptible_blasts] = ss
    cnt_now[C.resistant_blasts] = rs
    cnt_now[C.normal_cells] = ns
    cnt_now[C.nk_agents] = n_agents
    comp = 0
    exh = 0
    maxk = int(kp[KP.nk_max_kills])
    for i in range(n_agents):
        if a_comp[i]:
            comp += 1
            if a_kills[i] >= maxk:
                exh += 1
    rec[r, R.donor_nk_blood] = y[Y.donor_nk_blood] / kp[KP.blood_volume_ul]
    rec[r, R.host_nk_blood] = y[Y.host_nk]
    rec[r, R.host_t_blood] = y[Y.host_t]
    rec[r, R.il15] = y[Y.il15]
    rec[r, R.flu_conc] = flu / kp[KP.drugs_flu_volume]
    rec[r, R.cy_conc] = cy / kp[KP.drugs_cy_volume]
    rec[r, R.donor_nk_marrow] = n_agents * scale
    rec[r, R.donor_nk_tissue] = y[Y.donor_nk_tissue]
    rec[r, R.donor_nk_agents] = n_agents
    b = ss + rs
    rec[r, R.blasts_total] = b * scale
    rec[r, R.normal_total] = ns * scale
    rec[r, R.marrow_blast_pct] = 100.0 * b / (b + ns) if b + ns > 0 else 0.0
    rec[r, R.blast_susceptible_fraction] = ss / b if b > 0 else np.nan
    rec[r, R.nk_kills] = cnt_now[C.blasts_killed_by_nk] * scale
    rec[r, R.nk_exhausted_fraction] = exh / comp if comp > 0 else np.nan
    rec[r, R.drug_kill_hazard] = hazard
    for j in range(cnt.shape[1]):
        cnt[r, j] = cnt_now[j]


@njit(cache=True, nogil=True)
def run_patient(kp, ev_step, ev_kind, ev_amount, snap_days, stop_days, rng_init, rng_move, rng_kill,
                rng_fate, rng_traffic, rng_marrow):
    """Simulate one patient. Returns ``(rec, cnt, snaps)``.

    Early stopping: when ``kp[KP.stop_enabled]`` is 1, the run ends after the first record
    index in ``stop_days`` (sorted) at which the marrow blast percentage reaches the PD
    threshold computed from the baseline exactly as :func:`nksim.observables.pd_threshold`
    does; the remaining rows of ``rec`` stay NaN (and of ``cnt`` zero). Everything up to
    and including that day is identical to a run without early stopping.

    ``kp``: parameter vector (see :mod:`nksim.engine.layout`); ``ev_step/kind/amount``:
    events sorted by step (amount in mg for drugs, whole-body cells for NK);
    ``snap_days``: record indices (days since start) at which the lattice is copied.
    """
    side = int(kp[KP.lattice_side])
    nv = side * side
    K = int(kp[KP.voxel_capacity])
    dt = kp[KP.dt]
    n_steps = int(kp[KP.n_steps])
    spd = int(kp[KP.steps_per_day])
    m_every = int(kp[KP.marrow_every])
    n_days = n_steps // spd
    scale = kp[KP.scale]
    maxk = int(kp[KP.nk_max_kills])

    rec = np.full((n_days + 1, N_R), np.nan)
    cnt = np.zeros((n_days + 1, N_C), dtype=np.int64)
    snaps = np.zeros((snap_days.shape[0], N_S, side, side), dtype=np.int32)
    cnt_now = np.zeros(N_C, dtype=np.int64)

    sus = np.zeros(nv, dtype=np.int32)
    res = np.zeros(nv, dtype=np.int32)
    nor = np.zeros(nv, dtype=np.int32)
    bsus = np.zeros(nv, dtype=np.int32)
    bres = np.zeros(nv, dtype=np.int32)
    bnor = np.zeros(nv, dtype=np.int32)
    nk_grid = np.zeros(nv, dtype=np.int32)
    init_lattice(kp, rng_init, sus, res, nor)

    cap = 1024
    a_pos = np.zeros(cap, dtype=np.int32)
    a_comp = np.zeros(cap, dtype=np.bool_)
    a_kills = np.zeros(cap, dtype=np.int32)
    a_ready = np.zeros(cap, dtype=np.int64)  # first step at which the agent may kill again
    n_agents = 0

    y = np.zeros(N_Y)  # blood state, named by Y
    y[Y.host_nk] = kp[KP.host_nk_baseline]
    y[Y.host_t] = kp[KP.host_t_baseline]
    y[Y.il15] = 1.0
    k1 = np.empty(N_Y)
    k2 = np.empty(N_Y)
    k3 = np.empty(N_Y)
    k4 = np.empty(N_Y)
    tmp = np.empty(N_Y)
    flu = 0.0
    cy = 0.0
    kflu = kp[KP.flu_elimination_rate]
    kcy = kp[KP.cy_elimination_rate]
    h_marrow = 0.0  # integrated drug hazard since the last marrow update

    p_hop_mean = kp[KP.nk_hop_rate] * dt
    p_zero_hops = math.exp(-p_hop_mean)
    contact = kp[KP.nk_contact_rate]
    p_kill = kp[KP.nk_kill_probability]
    # refractory period in whole steps after the kill step (ceil, so never shorter than asked)
    refract_steps = int(math.ceil(kp[KP.nk_refractory_days] / dt - 1e-9))
    p_egress_rate = kp[KP.nk_egress_rate]

    ev_i = 0
    n_ev = ev_step.shape[0]
    snap_i = 0
    hazard_now = drug_hazard(kp, flu, cy)
    record_day(kp, rec, cnt, 0, y, flu, cy, hazard_now, sus, res, nor, n_agents, a_comp, a_kills, cnt_now)
    stop_pct = pd_threshold_pct(kp, rec[0, R.marrow_blast_pct])
    stop_i = 0
    if snap_i < snap_days.shape[0] and snap_days[snap_i] == 0:
        _snapshot(snaps, snap_i, sus, res, nor, nk_grid, a_pos, n_agents, side)
        snap_i += 1

    for step in range(n_steps):
        # 2. events
        while ev_i < n_ev and ev_step[ev_i] == step:
            kind = ev_kind[ev_i]
            if kind == EV.fludarabine:
                flu += ev_amount[ev_i]
            elif kind == EV.cyclophosphamide:
                cy += ev_amount[ev_i]
            elif kind == EV.nk_infusion:
                y[Y.donor_nk_blood] += ev_amount[ev_i]
            ev_i += 1
        # 3. PK and hazard over [t, t + dt]
        h0 = drug_hazard(kp, flu, cy)
        hmid = drug_hazard(kp, flu * math.exp(-kflu * 0.5 * dt), cy * math.exp(-kcy * 0.5 * dt))
        flu *= math.exp(-kflu * dt)
        cy *= math.exp(-kcy * dt)
        h1 = drug_hazard(kp, flu, cy)
        h_step = dt / 6.0 * (h0 + 4.0 * hmid + h1)
        h_marrow += h_step
        # 4. blood and IL-15
        rk4_blood(kp, y, dt, h0, hmid, h1, k1, k2, k3, k4, tmp)
        il15 = y[Y.il15]
        # 5. NK motility and killing
        for i in range(n_agents):
            if p_hop_mean > 0.0:
                # Poisson number of hops by inversion of its CDF with one uniform (usually 0 hops)
                u = rng_move.random()
                if u > p_zero_hops:
                    nh = 0
                    pk = p_zero_hops
                    cdf = p_zero_hops
                    while u > cdf and nh < 10000:
                        nh += 1
                        pk *= p_hop_mean / nh
                        cdf += pk
                    pos = a_pos[i]
                    for _ in range(nh):
                        pos = neighbour(pos, rng_move.integers(0, 4), side)
                    a_pos[i] = pos
            if a_comp[i] and a_kills[i] < maxk and step >= a_ready[i]:
                v = a_pos[i]
                b = sus[v] + res[v]
                if b > 0:
                    u = rng_kill.random()
                    if u < 1.0 - math.exp(-contact * (b / K) * dt):
                        # engaged a blast: susceptible with prob sus/b, then killed with p_kill
                        if rng_kill.random() * b < sus[v] and rng_kill.random() < p_kill:
                            sus[v] -= 1
                            a_kills[i] += 1
                            a_ready[i] = step + 1 + refract_steps
                            cnt_now[C.blasts_killed_by_nk] += 1
        # 6. NK fate: divide / die / egress (competing risks over dt)
        rate_div = nk_proliferation(kp, il15)
        rate_die = kp[KP.nk_death_rate] + kp[KP.nk_rejection_rate] * (y[Y.host_t] / kp[KP.host_t_baseline] if kp[KP.host_t_baseline] > 0 else 0.0) + h_step / dt
        rate_tot = rate_div + rate_die + p_egress_rate
        p_any = 1.0 - math.exp(-rate_tot * dt)
        # Iterate downwards over the agents alive at the start of the step: a removed agent's
        # slot is filled by the last agent, which is either a newborn of this step or an agent
        # already processed, so every agent is decided exactly once and newborns not at all.
        for i in range(n_agents - 1, -1, -1):
            u = rng_fate.random()
            if u >= p_any:
                continue
            w = u / p_any * rate_tot
            if w < rate_div:
                if n_agents == a_pos.shape[0]:
                    cap = 2 * cap
                    a_pos = _grow(a_pos, cap)
                    a_comp = _grow(a_comp, cap)
                    a_kills = _grow(a_kills, cap)
                    a_ready = _grow(a_ready, cap)
                a_pos[n_agents] = a_pos[i]
                a_comp[n_agents] = a_comp[i]
                a_kills[n_agents] = 0
                a_ready[n_agents] = step + 1
                n_agents += 1
                cnt_now[C.nk_born] += 1
            else:
                if w < rate_div + rate_die:
                    cnt_now[C.nk_died] += 1
                else:
                    cnt_now[C.nk_egressed] += 1
                    y[Y.donor_nk_blood] += scale
                last = n_agents - 1
                a_pos[i] = a_pos[last]
                a_comp[i] = a_comp[last]
                a_kills[i] = a_kills[last]
                a_ready[i] = a_ready[last]
                n_agents -= 1
        # 7. homing from blood into the region
        if kp[KP.nk_homing_rate] > 0.0 and y[Y.donor_nk_blood] >= scale:
            # the blood pool holds floor(blood / scale) whole region-equivalent agents; each homes
            # with probability 1 - exp(-homing_rate dt) during the step
            n_in = rng_traffic.binomial(int(y[Y.donor_nk_blood] / scale), -math.expm1(-kp[KP.nk_homing_rate] * dt))
            for _ in range(n_in):
                if n_agents == a_pos.shape[0]:
                    cap = 2 * cap
                    a_pos = _grow(a_pos, cap)
                    a_comp = _grow(a_comp, cap)
                    a_kills = _grow(a_kills, cap)
                    a_ready = _grow(a_ready, cap)
                a_pos[n_agents] = rng_traffic.integers(0, nv)
                a_comp[n_agents] = rng_traffic.random() < kp[KP.nk_competent_fraction]
                a_kills[n_agents] = 0
                a_ready[n_agents] = step + 1
                n_agents += 1
            y[Y.donor_nk_blood] -= n_in * scale
            cnt_now[C.nk_homed] += n_in
        # 8. marrow cells
        if (step + 1) % m_every == 0:
            marrow_update(kp, rng_marrow, sus, res, nor, bsus, bres, bnor, h_marrow, cnt_now, m_every * dt)
            h_marrow = 0.0
        # 1. record at day boundaries
        if (step + 1) % spd == 0:
            r = (step + 1) // spd
            hazard_now = drug_hazard(kp, flu, cy)
            record_day(kp, rec, cnt, r, y, flu, cy, hazard_now, sus, res, nor, n_agents, a_comp, a_kills, cnt_now)
            if snap_i < snap_days.shape[0] and snap_days[snap_i] == r:
                _snapshot(snaps, snap_i, sus, res, nor, nk_grid, a_pos, n_agents, side)
                snap_i += 1
            while stop_i < stop_days.shape[0] and stop_days[stop_i] < r:
                stop_i += 1
            if stop_i < stop_days.shape[0] and stop_days[stop_i] == r:
                stop_i += 1
                if kp[KP.stop_enabled] == 1.0 and is_pd(kp, rec[r, R.marrow_blast_pct], rec[0, R.marrow_blast_pct], stop_pct):
                    break
    return rec, cnt, snaps


@njit(cache=True)
def is_pd(kp, b, b0, pd_pct):
    """The response call is PD: at the PD threshold and neither CR nor PR (which take precedence)."""
    if not b >= pd_pct:  # also False for NaN
        return False
    if b < kp[KP.response_cr_blast_pct]:
        return False
    if b <= kp[KP.response_pr_blast_pct] and b <= b0 * (1.0 - kp[KP.pr_min_fall_fraction]):
        return False
    return True


@njit(cache=True)
def pd_threshold_pct(kp, b0):
    """PD threshold (percent) for baseline blasts ``b0`` (percent); mirrors observables.pd_threshold."""
    rel = b0 * (1.0 + kp[KP.pd_relative_rise_fraction])
    if b0 < kp[KP.response_pd_absolute_below]:
        absolute = b0 + kp[KP.response_pd_absolute_rise]
        return max(rel, absolute)
    return rel


@njit(cache=True)
def _snapshot(snaps, k, sus, res, nor, nk_grid, a_pos, n_agents, side):
    nk_grid[:] = 0
    for i in range(n_agents):
        nk_grid[a_pos[i]] += 1
    for v in range(sus.shape[0]):
        r = v // side
        c = v - r * side
        snaps[k, S.lattice_susceptible_blasts, r, c] = sus[v]
        snaps[k, S.lattice_resistant_blasts, r, c] = res[v]
        snaps[k, S.lattice_normal, r, c] = nor[v]
        snaps[k, S.lattice_nk, r, c] = nk_grid[v]
