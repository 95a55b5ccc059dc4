"""The numba kernel: one virtual patient from the start of lymphodepletion to follow-up.

State is struct-of-arrays NumPy data:

* marrow lattice: ``sus``, ``res``, ``nor`` (int32, one entry per voxel) -- counts of
  NK-susceptible blasts, NK-resistant blasts and normal haematopoietic cells in a voxel
  of capacity ``K``; a 2-D periodic lattice flattened row-major;
* donor NK agents in the lattice region: ``a_pos`` (voxel), ``a_comp`` (killer
  competent), ``a_kills`` (lytic units used and not yet restored), ``a_ready`` (first step at
  which the refractory period ends), ``a_donor`` (donor index); the first ``n_agents`` entries
  are alive (swap-remove on death);
* blood, well mixed: ``y`` indexed by ``Y`` (``y[Y.host_nk]``, ``y[Y.host_t]`` per uL,
  ``y[Y.il15]`` relative, ``y[Y.donor_nk_blood]``, ``y[Y.donor_nk_tissue]`` whole-body cells;
  declared in :data:`nksim.quantities.BLOOD_STATE`) and drug amounts ``flu``, ``cy`` (mg).

Every array index is a named field of :mod:`nksim.engine.layout` (``kp[KP.nk_kill_probability]``,
``rec[r, R.marrow_blast_pct]``, ``cnt_now[C.nk_homed]``), derived from :mod:`nksim.quantities`.

Step order (one step of ``dt``; documented in docs/architecture.md and kept stable):

1. record the day (state *before* that day's events) when a day boundary is reached;
2. apply the events scheduled for this step (drug doses; NK infusions into their donor's blood
   pool, starting that donor's priming clock at its first infusion; IL-2 / IL-15 agonist into
   their s.c. depots);
3. PK: drug concentrations decay analytically and the lymphocyte kill hazard is integrated
   over the step (Simpson) and accumulated for the marrow update; cytokine depots and central
   amounts advance analytically, their effects (extra division, death multiplier, support) are
   taken at mid-step; each donor's primed fraction is taken at mid-step;
4. blood and IL-15: RK4 over the step (host NK and host T Gompertz regrowth minus drug kill,
   each with its own rate and sensitivity; IL-15 production and consumption by every
   lymphocyte, donor NK included; donor NK division, death, unprimed and primed rejection, tissue exchange);
5. NK agents: motility (Poisson number of voxel hops), recovery of one lytic unit (with
   probability ``1 - exp(-recovery_rate (1 + boost support) dt)`` for an agent with used units),
   then contact killing while fewer than ``max_kills`` units are used;
6. NK agents: fate (divide / die / egress to their donor's blood pool), competing risks, the
   death rate depending on the agent's donor (primed rejection);
7. homing: per donor, a binomial number of whole blood donor NK (pool / scale) entering the region;
8. marrow cells (every ``marrow_every`` steps): deaths then divisions per voxel, daughters
   placed locally or in a random neighbour when there is room.

Every stochastic process draws only from its own generator (``rng_move``, ``rng_kill``,
``rng_fate``, ``rng_traffic``, ``rng_marrow``; ``rng_init`` for the initial lattice), so
two protocols run with the same seeds share random numbers until their histories differ.
Each ``rng_*`` is the state array of that process's ``PCG64`` Generator
(:func:`nksim.engine.pcg64.pack`), advanced in place by :func:`~nksim.engine.pcg64.uniform`
and :func:`~nksim.engine.pcg64.below`: the values ``Generator.random()`` and
``Generator.integers(0, n)`` would give, without a call through numpy's bit generator.

Halting: ``halt`` is a one-element ``int64`` array that another thread may set to nonzero (on
Ctrl-C or SIGTERM, :mod:`nksim.simulate`); the kernel reads it with an atomic load
(:func:`halt_requested`) at every step and every :data:`HALT_CHECK_VOXELS` voxels of a lattice
pass, and then returns at once with ``halted`` True: its arrays are incomplete and never a
result. Reading the flag draws nothing, so a run that is not halted is unchanged bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .layout import DONOR_STRIDE, EV, KP, N_C, N_R, N_S, N_Y, C, R, S, Y
from .pcg64 import below, uniform
from .samplers import binomial, binomial_draw, binomial_setup, split_even4

#: A lattice pass (initial lattice, marrow update) reads the halt flag once every this many voxels
#: (a power of two: the test is ``v & (HALT_CHECK_VOXELS - 1) == 0``); about 30 ms of work apart.
HALT_CHECK_VOXELS = 65536


# --------------------------------------------------------------------------- helpers
@intrinsic
def halt_requested(typingctx, halt):
    """Whether ``halt[0]`` (a one-element int64 array) is nonzero, read with an atomic (monotonic) load.

    Atomic so that the compiler never hoists the read out of a loop: a flag set by another
    thread while the kernel runs is seen at the next check.
    """
    if not (isinstance(halt, types.Array) and halt.dtype == types.int64 and halt.ndim == 1):
        return None
    sig = types.boolean(halt)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        word = ir.IntType(64)
        value = builder.load_atomic(ary.data, "monotonic", 8, typ=word)
        return builder.icmp_signed("!=", value, ir.Constant(word, 0))

    return sig, codegen


@njit(cache=True)
def drug_hazard(kp, flu_amt, cy_amt):
    """Kill hazard (day-1) on blood lymphocytes for drug amounts (mg): sum of two Emax terms."""
    cf = flu_amt / kp[KP.drugs_flu_volume]
    cc = cy_amt / kp[KP.drugs_cy_volume]
    return (kp[KP.drugs_flu_emax] * cf / (cf + kp[KP.drugs_flu_ec50])
            + kp[KP.drugs_cy_emax] * cc / (cc + kp[KP.drugs_cy_ec50]))


@njit(cache=True)
def nk_proliferation(kp, il15):
    """Donor NK division rate (day-1) at relative IL-15 ``il15``: basal + Emax in the excess over 1."""
    x = il15 - 1.0
    if x < 0.0:
        x = 0.0
    return kp[KP.nk_proliferation_rate] + kp[KP.patient_nk_il15_proliferation_max] * x / (x + kp[KP.nk_il15_ec50])


@njit(cache=True)
def nk_division_rate(kp, il15, sup_prolif):
    """Donor NK division rate (day-1): IL-15-driven plus cytokine support, at most ``nk.max_division_rate``."""
    rate = nk_proliferation(kp, il15) + sup_prolif
    cap = kp[KP.nk_max_division_rate]
    return rate if rate < cap else cap


@njit(cache=True)
def primed_fraction(kp, since):
    """Fraction of the primed anti-donor response reached ``since`` days after first exposure.

    The response matures through ``allo.priming_stages`` stages of equal mean length (an Erlang
    delay with mean ``allo.priming_delay``); it never wanes (memory). 0 before exposure
    (``since`` < 0 or infinite).
    """
    if not since > 0.0 or since == np.inf:
        return 0.0
    x = kp[KP.allo_stage_rate] * since
    k = int(kp[KP.allo_priming_stages])
    term = 1.0
    acc = 1.0
    for i in range(1, k):
        term *= x / i
        acc += term
    out = 1.0 - math.exp(-x) * acc
    return out if out > 0.0 else 0.0


@njit(cache=True)
def depot_step(depot, central, ka, ke, dt):
    """Advance a first-order s.c. depot -> central -> elimination model by ``dt`` (exact).

    Returns ``(depot, central)`` after the step (amounts in the dose unit).
    """
    ea = math.exp(-ka * dt)
    ee = math.exp(-ke * dt)
    if abs(ka - ke) > 1e-9 * (ka + ke):
        c = central * ee + depot * ka / (ke - ka) * (ea - ee)
    else:
        c = central * ee + depot * ka * dt * ee
    return depot * ea, c


@njit(cache=True)
def cytokine_support(kp, il2, il15a):
    """Effects of exogenous cytokines on donor NK, from central amounts ``il2`` (MIU), ``il15a`` (ug).

    Returns ``(extra division rate day-1, death-rate multiplier, combined support 0..1)``: each
    cytokine acts through its occupancy ``f = A / (A + EC50)``; division rises by
    ``proliferation_max * f``, homeostatic death falls by the factor ``1 - survival_effect * f``.
    """
    f2 = il2 / (il2 + kp[KP.il2_ec50]) if il2 > 0.0 else 0.0
    f15 = il15a / (il15a + kp[KP.il15_agonist_ec50]) if il15a > 0.0 else 0.0
    prolif = kp[KP.il2_proliferation_max] * f2 + kp[KP.il15_agonist_proliferation_max] * f15
    death = (1.0 - kp[KP.il2_survival_effect] * f2) * (1.0 - kp[KP.il15_agonist_survival_effect] * f15)
    support = 1.0 - (1.0 - f2) * (1.0 - f15)
    return prolif, death, support


@njit(cache=True)
def donor_nk_rejection(kp, host_t, primed):
    """Rejection rate (day-1) of one donor's NK: ``rejection_rate * T/T0 + primed_rejection_rate * primed * (T/T0)^e``.

    The first term is the unprimed (innate and naive T-cell) rejection, proportional to the host
    T count; the second is the primed anti-donor response, which expands clonally from the
    surviving T-cell pool and so depends on it less than in proportion: ``e`` =
    ``allo.primed_t_exponent`` (0: independent of the T count; 1: proportional to it).
    """
    t_rel = host_t / kp[KP.host_t_baseline] if kp[KP.host_t_baseline] > 0 else 0.0
    e = kp[KP.allo_primed_t_exponent]
    t_fac = 1.0 if e == 0.0 else (t_rel ** e if t_rel > 0.0 else 0.0)
    return kp[KP.nk_rejection_rate] * t_rel + kp[KP.allo_primed_rejection_rate] * primed * t_fac


@njit(cache=True)
def il15_consumers(kp, y, marrow_donor):
    """IL-15 consumers relative to baseline: (host NK + host T + w * all donor NK) / (NK0 + T0).

    Host blood counts stand for their whole-body pools; donor NK (blood, other tissues and
    ``marrow_donor``, whole body) enter on the same scale through ``donor_il15_consumption``.
    """
    donor = marrow_donor
    for d in range(int(kp[KP.n_donors])):
        donor += y[Y.donor_nk_blood + DONOR_STRIDE * d] + y[Y.donor_nk_tissue + DONOR_STRIDE * d]
    base = kp[KP.host_nk_baseline] + kp[KP.host_t_baseline]
    return (y[Y.host_nk] + y[Y.host_t] + kp[KP.donor_il15_consumption] * donor) / base if base > 0 else 0.0


@njit(cache=True)
def blood_rhs(kp, y, hazard, marrow_donor, primed, sup_prolif, sup_death, out):
    """Right-hand side of the blood ODEs (per day); ``hazard`` is the drug kill hazard.

    ``y`` and ``out`` are indexed by ``Y`` (:data:`nksim.quantities.BLOOD_STATE`), donor ``d`` at
    ``+ DONOR_STRIDE * d``. ``marrow_donor``: donor NK in the marrow (whole body, held fixed over
    the step); ``primed[d]``: the host's primed response to donor ``d``; ``sup_prolif``,
    ``sup_death``: cytokine effects (:func:`cytokine_support`).
    """
    hnk = max(y[Y.host_nk], 1e-12)
    ht = max(y[Y.host_t], 1e-12)
    il = y[Y.il15]
    h_nk = kp[KP.host_nk_drug_sensitivity] * hazard
    h_t = kp[KP.host_t_drug_sensitivity] * hazard
    r_nk = kp[KP.patient_host_nk_recovery_rate]
    r_t = kp[KP.patient_host_t_recovery_rate]
    nk0 = kp[KP.host_nk_baseline]
    t0 = kp[KP.host_t_baseline]
    out[Y.host_nk] = r_nk * hnk * math.log(nk0 / hnk) - h_nk * hnk if nk0 > 0 else -h_nk * hnk
    out[Y.host_t] = r_t * ht * math.log(t0 / ht) - h_t * ht if t0 > 0 else -h_t * ht
    # IL-15: production balances removal at baseline (il = 1); removal = clearance + consumption by
    # every lymphocyte: host NK and T (blood counts standing for their whole-body pools) and all
    # donor NK (blood, other tissues, marrow) converted to the same blood-count scale
    n_donors = int(kp[KP.n_donors])
    tau = kp[KP.il15_turnover_rate]
    k_clear = tau / kp[KP.il15_max_fold]
    k_cons = tau - k_clear
    lrel = il15_consumers(kp, y, marrow_donor)
    out[Y.il15] = tau - (k_clear + k_cons * lrel) * il
    # donor NK outside the marrow: division - death - rejection - drug, and tissue exchange
    grow = nk_division_rate(kp, il, sup_prolif) - kp[KP.nk_death_rate] * sup_death - hazard
    up = kp[KP.donor_tissue_uptake_rate]
    back = kp[KP.donor_tissue_return_rate]
    for d in range(n_donors):
        ib = Y.donor_nk_blood + DONOR_STRIDE * d
        it = Y.donor_nk_tissue + DONOR_STRIDE * d
        net = grow - donor_nk_rejection(kp, y[Y.host_t], primed[d])
        out[ib] = net * y[ib] - up * y[ib] + back * y[it]
        out[it] = net * y[it] + up * y[ib] - back * y[it]


@njit(cache=True)
def _rk4_substep(kp, y, dt, h0, hmid, h1, marrow_donor, primed, sup_prolif, sup_death, k1, k2, k3, k4, tmp):
    n = y.shape[0]
    blood_rhs(kp, y, h0, marrow_donor, primed, sup_prolif, sup_death, k1)
    for i in range(n):
        tmp[i] = y[i] + 0.5 * dt * k1[i]
    blood_rhs(kp, tmp, hmid, marrow_donor, primed, sup_prolif, sup_death, k2)
    for i in range(n):
        tmp[i] = y[i] + 0.5 * dt * k2[i]
    blood_rhs(kp, tmp, hmid, marrow_donor, primed, sup_prolif, sup_death, k3)
    for i in range(n):
        tmp[i] = y[i] + dt * k3[i]
    blood_rhs(kp, tmp, h1, marrow_donor, primed, sup_prolif, sup_death, k4)
    for i in range(n):
        y[i] = y[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        if y[i] < 0.0:
            y[i] = 0.0


@njit(cache=True)
def blood_stiffness(kp, y, hazard, marrow_donor, primed, sup_prolif):
    """Upper bound (day-1) on the fastest decay rate of the blood ODEs at state ``y``."""
    n_donors = int(kp[KP.n_donors])
    tau = kp[KP.il15_turnover_rate]
    lrel = il15_consumers(kp, y, marrow_donor)
    lam = tau * (1.0 / kp[KP.il15_max_fold] + (1.0 - 1.0 / kp[KP.il15_max_fold]) * lrel)
    for j in (Y.host_nk, Y.host_t):
        if j == Y.host_nk:
            l0 = kp[KP.host_nk_baseline]
            g = kp[KP.patient_host_nk_recovery_rate]
            h = kp[KP.host_nk_drug_sensitivity] * hazard
        else:
            l0 = kp[KP.host_t_baseline]
            g = kp[KP.patient_host_t_recovery_rate]
            h = kp[KP.host_t_drug_sensitivity] * hazard
        if l0 > 0.0 and y[j] > 0.0:
            rate = g * (abs(math.log(l0 / y[j])) + 1.0) + h
            if rate > lam:
                lam = rate
    rej = 0.0
    for d in range(n_donors):
        r = donor_nk_rejection(kp, y[Y.host_t], primed[d])
        if r > rej:
            rej = r
    nk = (nk_division_rate(kp, y[Y.il15], sup_prolif) + kp[KP.nk_death_rate] + rej + hazard
          + kp[KP.donor_tissue_uptake_rate] + kp[KP.donor_tissue_return_rate])
    if nk > lam:
        lam = nk
    return lam


@njit(cache=True)
def rk4_blood(kp, y, dt, h0, hmid, h1, marrow_donor, primed, sup_prolif, sup_death, k1, k2, k3, k4, tmp):
    """Advance the blood ODEs by ``dt`` days with RK4; drug hazard given at start, middle, end.

    The step is split into ``n`` equal RK4 sub-steps with ``n * (fastest rate) * sub-step <= 1``
    (RK4 is stable up to about 2.8), so any ``numerics.dt`` the schema allows is stable; the
    hazard inside the step is the quadratic through ``h0, hmid, h1``; marrow donor NK, priming
    and cytokine effects are held at their values for the step. With the default dt = 1 h,
    n = 1.
    """
    lam = blood_stiffness(kp, y, max(h0, max(hmid, h1)), marrow_donor, primed, sup_prolif)
    n_sub = int(math.ceil(lam * dt))
    if n_sub < 1:
        n_sub = 1
    if n_sub == 1:
        _rk4_substep(kp, y, dt, h0, hmid, h1, marrow_donor, primed, sup_prolif, sup_death, k1, k2, k3, k4, tmp)
        return
    hs = dt / n_sub
    for k in range(n_sub):
        # quadratic (Lagrange) interpolation of the hazard at the sub-step's start, middle, end
        a = _hazard_at(k / n_sub, h0, hmid, h1)
        m = _hazard_at((k + 0.5) / n_sub, h0, hmid, h1)
        e = _hazard_at((k + 1.0) / n_sub, h0, hmid, h1)
        _rk4_substep(kp, y, hs, a, m, e, marrow_donor, primed, sup_prolif, sup_death, k1, k2, k3, k4, tmp)


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
def init_lattice(kp, rng_init, sus, res, nor, halt):
    """Fill the lattice: cells ~ Bin(K, cellularity), blasts ~ Bin(cells, f_blast), susceptible ~ Bin(blasts, f_sus).

    Returns early, the lattice incomplete, when ``halt`` is set (:func:`halt_requested`).
    """
    K = np.int64(kp[KP.voxel_capacity])
    for v in range(sus.shape[0]):
        if v & (HALT_CHECK_VOXELS - 1) == 0 and halt_requested(halt):
            return
        tot = binomial(rng_init, K, kp[KP.cellularity])
        b = binomial(rng_init, tot, kp[KP.blast_fraction0])
        s = binomial(rng_init, b, kp[KP.susceptible_fraction0])
        sus[v] = s
        res[v] = b - s
        nor[v] = tot - b


@njit(cache=True)
def _split_drug(rng, deaths, nat_rate_dt, drug_h):
    """How many of ``deaths`` (int64) are attributed to the drug (competing hazards); no draw without a drug."""
    if drug_h <= 0.0 or deaths == 0:
        return np.int64(0)
    return binomial(rng, deaths, drug_h / (nat_rate_dt + drug_h))


@njit(cache=True)
def _death_setup(x, q):
    """:func:`samplers.binomial_setup` of ``p = 1 - q``, ``q = exp(-x)`` (``x >= 0``), reusing ``log q = -x``."""
    p = 1.0 - q
    if p <= 0.5:
        return (p, q, -x, False) if p > 0.0 else (0.0, 1.0, 0.0, False)
    return binomial_setup(p)


@njit(cache=True)
def marrow_update(kp, rng, sus, res, nor, bsus, bres, bnor, hazard_integral, cnt_now, delta, halt):
    """Deaths and divisions of marrow cells over ``delta`` days (mean-exact tau-leap per voxel).

    Per capita, blasts divide at ``b`` and die at ``max(b - r (1 - occ), 0)`` so that their
    net growth is logistic, ``r (1 - occ)``, in the voxel occupancy ``occ = cells / K``;
    normal cells regrow as ``r_n (1 - occ / c)`` toward the target occupancy ``c`` and are
    crowded out by blasts. ``hazard_integral`` (dimensionless) is the integrated drug kill
    hazard on lymphocytes, scaled by each population's drug sensitivity.

    Draws come from :mod:`nksim.engine.samplers` (exact binomials; counts as int64). Work that
    cannot change anything costs a branch: empty voxels, empty populations and zero
    probabilities draw nothing, the drug split is skipped without a drug hazard, the switch
    draws without a switch probability.

    Returns early, the update incomplete, when ``halt`` is set (:func:`halt_requested`).
    """
    nv = sus.shape[0]
    side = int(kp[KP.lattice_side])
    K = np.int64(kp[KP.voxel_capacity])
    b_b = kp[KP.blast_birth_rate]
    r_b = kp[KP.blast_net_growth_rate]
    b_n = kp[KP.normal_birth_rate]
    r_n = kp[KP.normal_recovery_rate]
    c_n = kp[KP.normal_target]
    hb = kp[KP.blasts_drug_sensitivity] * hazard_integral
    hn = kp[KP.normal_drug_sensitivity] * hazard_integral
    p_switch = kp[KP.blasts_switch_probability]
    grow_b = math.expm1(b_b * delta)  # exp(b delta) - 1, the same for every voxel
    grow_n = math.expm1(b_n * delta)
    # pass 1: deaths (in place) and number of daughters per voxel
    for v in range(nv):
        if v & (HALT_CHECK_VOXELS - 1) == 0 and halt_requested(halt):
            return
        s = np.int64(sus[v])
        rr = np.int64(res[v])
        n = np.int64(nor[v])
        tot = s + rr + n
        if tot == 0:
            bsus[v] = 0
            bres[v] = 0
            bnor[v] = 0
            continue
        occ = tot / K
        # Deaths and divisions are drawn independently from the cells present at the start
        # of the step with p_die = 1 - exp(-(d delta + h)) and p_div = exp(-(d delta + h))
        # (exp(b delta) - 1), so the expected count after the step is exactly
        # n exp((b - d) delta - h): no tau-leap bias even though b and d nearly cancel.
        ds = np.int64(0)
        dr = np.int64(0)
        bs = np.int64(0)
        br = np.int64(0)
        db = 0.0
        if s + rr > 0:
            db = b_b - r_b * (1.0 - occ)
            if db < 0.0:
                db = 0.0
            x = db * delta + hb
            surv = math.exp(-x)
            die_b = _death_setup(x, surv)
            birth_b = binomial_setup(min(surv * grow_b, 1.0))
            ds = binomial_draw(rng, s, die_b)
            dr = binomial_draw(rng, rr, die_b)
            bs = binomial_draw(rng, s, birth_b)
            br = binomial_draw(rng, rr, birth_b)
        dnn = np.int64(0)
        bn = np.int64(0)
        dn = 0.0
        if n > 0:
            dn = b_n - r_n * (1.0 - occ / c_n)
            if dn < 0.0:
                dn = 0.0
            x = dn * delta + hn
            surv = math.exp(-x)
            dnn = binomial_draw(rng, n, _death_setup(x, surv))
            bn = binomial_draw(rng, n, binomial_setup(min(surv * grow_n, 1.0)))
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
            s2r = binomial(rng, bs, p_switch)
            r2s = binomial(rng, br, p_switch)
            bs += r2s - s2r
            br += s2r - r2s
        bsus[v] = bs
        bres[v] = br
        bnor[v] = bn
    # pass 2: place daughters in the mother's voxel or, with the spread fraction, a neighbour
    spread_b = binomial_setup(kp[KP.blasts_spread_fraction])
    spread_n = binomial_setup(kp[KP.normal_spread_fraction])
    for v in range(nv):
        if v & (HALT_CHECK_VOXELS - 1) == 0 and halt_requested(halt):
            return
        for kind in range(3):
            if kind == 0:
                nb = np.int64(bsus[v])
            elif kind == 1:
                nb = np.int64(bres[v])
            else:
                nb = np.int64(bnor[v])
            if nb == 0:
                continue
            n_out = binomial_draw(rng, nb, spread_n if kind == 2 else spread_b)
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
            # emigrants split evenly over the 4 neighbours (each picks one at random)
            if n_out > 0:
                split = split_even4(rng, n_out)
                for d in range(4):
                    m = split[d]
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
    for i in range(arr.shape[0]):  # a loop, not out[:m] = arr: numba would compile a shape-error message
        out[i] = arr[i]            # formatter (str of ints, unicode concatenation) for the slice copy
    return out


@njit(cache=True)
def record_day(kp, rec, cnt, r, y, flu, cy, hazard, sus, res, nor, n_agents, a_comp, a_kills, cnt_now, primed,
               il2, il15a, support):
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
    blood = 0.0
    tissue = 0.0
    prim = 0.0
    for d in range(int(kp[KP.n_donors])):
        blood += y[Y.donor_nk_blood + DONOR_STRIDE * d]
        tissue += y[Y.donor_nk_tissue + DONOR_STRIDE * d]
        if primed[d] > prim:
            prim = primed[d]
    rec[r, R.donor_nk_blood] = blood / kp[KP.blood_volume_ul]
    rec[r, R.host_nk_blood] = y[Y.host_nk]
    rec[r, R.host_t_blood] = y[Y.host_t]
    rec[r, R.il15] = y[Y.il15]
    rec[r, R.flu_conc] = flu / kp[KP.drugs_flu_volume]
    rec[r, R.cy_conc] = cy / kp[KP.drugs_cy_volume]
    rec[r, R.donor_nk_marrow] = n_agents * scale
    rec[r, R.donor_nk_tissue] = tissue
    rec[r, R.donor_nk_agents] = n_agents
    b = ss + rs
    rec[r, R.blasts_total] = b * scale
    rec[r, R.normal_total] = ns * scale
    rec[r, R.marrow_blast_pct] = 100.0 * b / (b + ns) if b + ns > 0 else 0.0
    rec[r, R.blast_susceptible_fraction] = ss / b if b > 0 else np.nan
    rec[r, R.nk_kills] = cnt_now[C.blasts_killed_by_nk] * scale
    rec[r, R.nk_exhausted_fraction] = exh / comp if comp > 0 else np.nan
    rec[r, R.drug_kill_hazard] = hazard
    rec[r, R.donor_nk_total] = blood + tissue + n_agents * scale
    rec[r, R.allo_priming] = prim
    rec[r, R.il2_central] = il2
    rec[r, R.il15_agonist_central] = il15a
    rec[r, R.cytokine_support] = support
    for j in range(cnt.shape[1]):
        cnt[r, j] = cnt_now[j]


@njit(cache=True)
def _add_agent(a_pos, a_comp, a_kills, a_ready, a_donor, n_agents, pos, comp, ready, donor):
    """Append an agent, growing the arrays when full; returns the (possibly new) arrays."""
    if n_agents == a_pos.shape[0]:
        cap = 2 * a_pos.shape[0]
        a_pos = _grow(a_pos, cap)
        a_comp = _grow(a_comp, cap)
        a_kills = _grow(a_kills, cap)
        a_ready = _grow(a_ready, cap)
        a_donor = _grow(a_donor, cap)
    a_pos[n_agents] = pos
    a_comp[n_agents] = comp
    a_kills[n_agents] = 0
    a_ready[n_agents] = ready
    a_donor[n_agents] = donor
    return a_pos, a_comp, a_kills, a_ready, a_donor


@njit(cache=True, nogil=True)
def run_patient(kp, ev_step, ev_kind, ev_amount, ev_donor, snap_days, stop_days, rng_init, rng_move, rng_kill,
                rng_fate, rng_traffic, rng_marrow, halt):
    """Simulate one patient. Returns ``(rec, cnt, snaps, halted)``.

    ``halt``: one-element int64 array; once another thread sets it nonzero, the kernel returns
    within one step (or :data:`HALT_CHECK_VOXELS` voxels of a lattice pass) with ``halted``
    True and incomplete arrays, which are never a result (module docstring).

    Early stopping: when ``kp[KP.stop_enabled]`` is 1, the run ends after the first record
    index in ``stop_days`` (sorted) at which the marrow blast percentage reaches the PD
    threshold computed from the baseline exactly as :func:`nksim.observables.pd_threshold`
    does; the remaining rows of ``rec`` stay NaN (and of ``cnt`` zero). Everything up to
    and including that day is identical to a run without early stopping.

    ``kp``: parameter vector (see :mod:`nksim.engine.layout`); ``ev_step/kind/amount/donor``:
    events sorted by step (amount in the kind's amount unit, donor index for NK infusions);
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
    n_donors = int(kp[KP.n_donors])
    for i in range(ev_donor.shape[0]):
        if ev_donor[i] < 0 or ev_donor[i] >= n_donors:
            raise ValueError("an event's donor index is outside 0 .. kp[KP.n_donors] - 1")

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
    init_lattice(kp, rng_init, sus, res, nor, halt)

    cap = 1024
    a_pos = np.zeros(cap, dtype=np.int32)
    a_comp = np.zeros(cap, dtype=np.bool_)
    a_kills = np.zeros(cap, dtype=np.int32)  # lytic units used and not yet restored
    a_ready = np.zeros(cap, dtype=np.int64)  # first step at which the agent may kill again
    a_donor = np.zeros(cap, dtype=np.int32)
    # Integer arguments of the kernel's functions are int64 everywhere (np.int64(0), not 0; int32 array
    # elements cast): numba compiles one specialisation per distinct argument type, Literal[int](0) included.
    n_agents = np.int64(0)

    n_y = N_Y + DONOR_STRIDE * (n_donors - 1)
    y = np.zeros(n_y)  # blood state, named by Y (donor d at + DONOR_STRIDE * d)
    y[Y.host_nk] = kp[KP.host_nk_baseline]
    y[Y.host_t] = kp[KP.host_t_baseline]
    y[Y.il15] = 1.0
    k1 = np.empty(n_y)
    k2 = np.empty(n_y)
    k3 = np.empty(n_y)
    k4 = np.empty(n_y)
    tmp = np.empty(n_y)
    first_exposure = np.full(n_donors, np.inf)  # day (since start) of each donor's first infusion
    primed = np.zeros(n_donors)
    rate_die = np.zeros(n_donors)
    p_any = np.zeros(n_donors)
    rate_tot = np.zeros(n_donors)
    flu = 0.0
    cy = 0.0
    kflu = kp[KP.flu_elimination_rate]
    kcy = kp[KP.cy_elimination_rate]
    il2_depot = 0.0
    il2 = 0.0
    il15a_depot = 0.0
    il15a = 0.0
    ka2 = kp[KP.il2_absorption_rate]
    ke2 = kp[KP.il2_elimination_rate]
    ka15 = kp[KP.il15_agonist_absorption_rate]
    ke15 = kp[KP.il15_agonist_elimination_rate]
    support = 0.0
    h_marrow = 0.0  # integrated drug hazard since the last marrow update

    p_hop_mean = kp[KP.nk_hop_rate] * dt
    p_zero_hops = math.exp(-p_hop_mean)
    contact = kp[KP.nk_contact_rate]
    p_kill = kp[KP.nk_kill_probability]
    # engagement probability 1 - exp(-contact (b / K) dt) of an agent in a voxel with b blasts, kept per b
    # once computed (the same expression, so the same value; -1 = not yet): one exp per distinct b
    # instead of one per agent-step
    n_engage = min(K, 4096) + 1
    p_engage = np.full(n_engage, -1.0)
    # refractory period in whole steps after the kill step (ceil, so never shorter than asked)
    refract_steps = int(math.ceil(kp[KP.nk_refractory_days] / dt - 1e-9))
    p_egress_rate = kp[KP.nk_egress_rate]
    recover_rate = kp[KP.nk_function_recovery_rate]

    ev_i = 0
    n_ev = ev_step.shape[0]
    snap_i = np.int64(0)
    hazard_now = drug_hazard(kp, flu, cy)
    record_day(kp, rec, cnt, np.int64(0), y, flu, cy, hazard_now, sus, res, nor, n_agents, a_comp, a_kills, cnt_now,
               primed, il2, il15a, support)
    stop_pct = pd_threshold_pct(kp, rec[0, R.marrow_blast_pct])
    stop_i = 0
    if snap_i < snap_days.shape[0] and snap_days[snap_i] == 0:
        _snapshot(snaps, snap_i, sus, res, nor, nk_grid, a_pos, n_agents, side)
        snap_i += 1

    halted = halt_requested(halt)
    for step in range(n_steps):
        if halted or halt_requested(halt):
            halted = True
            break
        t = step * dt
        # 2. events
        while ev_i < n_ev and ev_step[ev_i] == step:
            kind = ev_kind[ev_i]
            if kind == EV.fludarabine:
                flu += ev_amount[ev_i]
            elif kind == EV.cyclophosphamide:
                cy += ev_amount[ev_i]
            elif kind == EV.nk_infusion:
                d = ev_donor[ev_i]
                y[Y.donor_nk_blood + DONOR_STRIDE * d] += ev_amount[ev_i]
                if first_exposure[d] == np.inf:
                    first_exposure[d] = t
            elif kind == EV.il2:
                il2_depot += ev_amount[ev_i]
            elif kind == EV.il15_agonist:
                il15a_depot += ev_amount[ev_i]
            ev_i += 1
        # 3. PK and hazard over [t, t + dt]; cytokine effects and priming at mid-step
        h0 = drug_hazard(kp, flu, cy)
        hmid = drug_hazard(kp, flu * math.exp(-kflu * 0.5 * dt), cy * math.exp(-kcy * 0.5 * dt))
        flu *= math.exp(-kflu * dt)
        cy *= math.exp(-kcy * dt)
        h1 = drug_hazard(kp, flu, cy)
        h_step = dt / 6.0 * (h0 + 4.0 * hmid + h1)
        h_marrow += h_step
        sup_prolif = 0.0
        sup_death = 1.0
        support = 0.0
        if il2_depot + il2 + il15a_depot + il15a > 0.0:
            il2_mid = depot_step(il2_depot, il2, ka2, ke2, 0.5 * dt)[1]
            il15a_mid = depot_step(il15a_depot, il15a, ka15, ke15, 0.5 * dt)[1]
            sup_prolif, sup_death, support = cytokine_support(kp, il2_mid, il15a_mid)
            il2_depot, il2 = depot_step(il2_depot, il2, ka2, ke2, dt)
            il15a_depot, il15a = depot_step(il15a_depot, il15a, ka15, ke15, dt)
        for d in range(n_donors):  # at mid-step: second-order accurate over the step
            primed[d] = primed_fraction(kp, t + 0.5 * dt - first_exposure[d])
        # 4. blood and IL-15
        rk4_blood(kp, y, dt, h0, hmid, h1, n_agents * scale, primed, sup_prolif, sup_death, k1, k2, k3, k4, tmp)
        il15 = y[Y.il15]
        # 5. NK motility, recovery of lytic function, killing
        p_recover = -math.expm1(-recover_rate * (1.0 + kp[KP.nk_cytokine_recovery_boost] * support) * dt)
        for i in range(n_agents):
            if p_hop_mean > 0.0:
                # Poisson number of hops by inversion of its CDF with one uniform (usually 0 hops)
                u = uniform(rng_move)
                if u > p_zero_hops:
                    nh = 0
                    pk = p_zero_hops
                    cdf = p_zero_hops
                    while u > cdf and nh < 10000:
                        nh += 1
                        pk *= p_hop_mean / nh
                        cdf += pk
                    pos = np.int64(a_pos[i])
                    for _ in range(nh):
                        pos = neighbour(pos, below(rng_move, np.int64(4)), side)
                    a_pos[i] = pos
            if a_kills[i] > 0 and p_recover > 0.0 and uniform(rng_kill) < p_recover:
                a_kills[i] -= 1  # one lytic unit restored (granule stores refill)
            if a_comp[i] and a_kills[i] < maxk and step >= a_ready[i]:
                v = a_pos[i]
                b = sus[v] + res[v]
                if b > 0:
                    u = uniform(rng_kill)
                    if b < n_engage:
                        pe = p_engage[b]
                        if pe < 0.0:
                            pe = 1.0 - math.exp(-contact * (b / K) * dt)
                            p_engage[b] = pe
                    else:
                        pe = 1.0 - math.exp(-contact * (b / K) * dt)
                    if u < pe:
                        # engaged a blast: susceptible with prob sus/b, then killed with p_kill
                        if uniform(rng_kill) * b < sus[v] and uniform(rng_kill) < p_kill:
                            sus[v] -= 1
                            a_kills[i] += 1
                            a_ready[i] = step + 1 + refract_steps
                            cnt_now[C.blasts_killed_by_nk] += 1
        # 6. NK fate: divide / die / egress (competing risks over dt); death depends on the donor
        rate_div = nk_division_rate(kp, il15, sup_prolif)
        for d in range(n_donors):
            rate_die[d] = (kp[KP.nk_death_rate] * sup_death + donor_nk_rejection(kp, y[Y.host_t], primed[d])
                           + h_step / dt)
            rate_tot[d] = rate_div + rate_die[d] + p_egress_rate
            p_any[d] = 1.0 - math.exp(-rate_tot[d] * dt)
        # Iterate downwards over the agents alive at the start of the step: a removed agent's
        # slot is filled by the last agent, which is either a newborn of this step or an agent
        # already processed, so every agent is decided exactly once and newborns not at all.
        for i in range(n_agents - 1, -1, -1):
            d = a_donor[i]
            u = uniform(rng_fate)
            if u >= p_any[d]:
                continue
            w = u / p_any[d] * rate_tot[d]
            if w < rate_div:
                a_pos, a_comp, a_kills, a_ready, a_donor = _add_agent(
                    a_pos, a_comp, a_kills, a_ready, a_donor, n_agents, np.int64(a_pos[i]), a_comp[i], step + 1,
                    np.int64(d))
                n_agents += 1
                cnt_now[C.nk_born] += 1
            else:
                if w < rate_div + rate_die[d]:
                    cnt_now[C.nk_died] += 1
                else:
                    cnt_now[C.nk_egressed] += 1
                    y[Y.donor_nk_blood + DONOR_STRIDE * d] += scale
                last = n_agents - 1
                a_pos[i] = a_pos[last]
                a_comp[i] = a_comp[last]
                a_kills[i] = a_kills[last]
                a_ready[i] = a_ready[last]
                a_donor[i] = a_donor[last]
                n_agents -= 1
        # 7. homing from blood into the region, donor by donor
        if kp[KP.nk_homing_rate] > 0.0:
            p_home = -math.expm1(-kp[KP.nk_homing_rate] * dt)
            for d in range(n_donors):
                ib = Y.donor_nk_blood + DONOR_STRIDE * d
                if y[ib] < scale:
                    continue
                # the blood pool holds floor(blood / scale) whole region-equivalent agents; each
                # homes with probability 1 - exp(-homing_rate dt) during the step
                n_in = binomial(rng_traffic, np.int64(y[ib] / scale), p_home)
                for _ in range(n_in):
                    pos = below(rng_traffic, np.int64(nv))
                    comp = uniform(rng_traffic) < kp[KP.nk_competent_fraction]
                    a_pos, a_comp, a_kills, a_ready, a_donor = _add_agent(
                        a_pos, a_comp, a_kills, a_ready, a_donor, n_agents, pos, comp, step + 1, d)
                    n_agents += 1
                y[ib] -= n_in * scale
                cnt_now[C.nk_homed] += n_in
        # 8. marrow cells
        if (step + 1) % m_every == 0:
            marrow_update(kp, rng_marrow, sus, res, nor, bsus, bres, bnor, h_marrow, cnt_now, m_every * dt, halt)
            h_marrow = 0.0
            if halt_requested(halt):  # the update may be incomplete: record nothing more
                halted = True
                break
        # 1. record at day boundaries
        if (step + 1) % spd == 0:
            r = (step + 1) // spd
            hazard_now = drug_hazard(kp, flu, cy)
            for d in range(n_donors):  # priming and cytokine support at the day boundary, for the record
                primed[d] = primed_fraction(kp, (step + 1) * dt - first_exposure[d])
            support_now = cytokine_support(kp, il2, il15a)[2]
            record_day(kp, rec, cnt, r, y, flu, cy, hazard_now, sus, res, nor, n_agents, a_comp, a_kills, cnt_now,
                       primed, il2, il15a, support_now)
            if snap_i < snap_days.shape[0] and snap_days[snap_i] == r:
                _snapshot(snaps, snap_i, sus, res, nor, nk_grid, a_pos, n_agents, side)
                snap_i += 1
            while stop_i < stop_days.shape[0] and stop_days[stop_i] < r:
                stop_i += 1
            if stop_i < stop_days.shape[0] and stop_days[stop_i] == r:
                stop_i += 1
                if kp[KP.stop_enabled] == 1.0 and is_pd(kp, rec[r, R.marrow_blast_pct], rec[0, R.marrow_blast_pct],
                                                        stop_pct):
                    break
    return rec, cnt, snaps, halted


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
