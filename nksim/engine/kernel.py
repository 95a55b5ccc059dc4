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

Every array index is a named field of :mod:`nksim.engine.layout` (``kp[KP.donor_kill_probability]``,
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
   then contact killing while fewer than ``max_kills`` units are used (engagements faster by
   ``1 + nk.cytokine_killing_boost * activation``, the activation following the IL-2 / IL-15 support
   with half-life ``nk.activation_half_life``, and slower by host Tregs' factor
   ``1 - treg.nk_kill_suppression * R / (R + treg.nk_half_suppression)``);
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

Compilation options of every function of the engine (this module, :mod:`~nksim.engine.blood`,
:mod:`~nksim.engine.samplers`, :mod:`~nksim.engine.pcg64`), declared once in
:mod:`~nksim.engine.jitopts` (``ENGINE_JIT``, ``LEAF_JIT``; ``tests/test_engine_jit.py`` holds them):

* ``error_model="numpy"``: a float division by zero gives inf or NaN instead of raising
  ``ZeroDivisionError``. numba's default (``"python"``) tests every divisor and gives every
  function that divides an exception path, which keeps LLVM from inlining and scheduling the
  small blood functions together: the blood right-hand side cost 125 ns a call with it and 36 ns
  without (0.6.0, 7 blood states), the kernel of a calibration-resolution simulation 3.9 ms and
  2.9 ms. The divisors that may be 0 are tested explicitly (``if base > 0``), the others
  (volumes, capacities, EC50s) are positive by the schema.
* ``_nrt=False`` (numba's own option, not in its documented API: used only where the installed
  numba declares it, otherwise the same functions compile with the runtime) for every function
  that allocates no array (all but :func:`run_patient`,
  :func:`_grow`, :func:`_add_agent`, :func:`~nksim.engine.blood.quiet_tolerances` and
  :func:`~nksim.engine.pcg64.spawned_states`): without numba's reference-counting runtime, a
  call that passes arrays to a function LLVM does not inline costs no atomic increment and
  decrement per array (a binomial draw passes its stream, a blood right-hand side five arrays;
  about 20 cycles each). The arrays all belong to :func:`run_patient` (or to the caller from
  Python), which outlives every call. Kernel of a calibration-resolution simulation: 2.8 ms with
  reference counting, 2.1 ms without. numba refuses to compile an allocation in such a function,
  so a helper that needs one must drop the option.

Neither option changes an arithmetic operation: the outputs are identical bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .blood import (
    N_PK,
    N_U,
    N_WORK,
    PK_CY,
    PK_FLU,
    PK_IL2,
    PK_IL2DT,
    PK_N803,
    PK_RH_DEPOT,
    PK_T0,
    QUIET_MAX_HAZARD,
    QUIET_MAX_RHIL15,
    U_HC,
    U_HF,
    apply_event,
    cy_exposure,
    cytokine_support,
    donor_nk_rejection,
    drug_hazard,
    hazard_integral,
    il15_exogenous,
    nk_division_rate,
    pk_advance,
    pk_inputs,
    primed_fraction,
    quiet_day,
    quiet_tolerances,
    rk4_blood,
    treg_kill_factor,
)
from .jitopts import ENGINE_JIT, LEAF_JIT
from .layout import DONOR_STRIDE, KP, N_C, N_R, N_S, N_Y, C, R, S, Y
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


@njit(**LEAF_JIT)
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


@njit(**LEAF_JIT)
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


@njit(**LEAF_JIT)
def _split_drug(rng, deaths, nat_rate_dt, drug_h):
    """How many of ``deaths`` (int64) are attributed to the drug (competing hazards); no draw without a drug."""
    if drug_h <= 0.0 or deaths == 0:
        return np.int64(0)
    return binomial(rng, deaths, drug_h / (nat_rate_dt + drug_h))


@njit(**LEAF_JIT)
def _death_setup(x, q):
    """:func:`samplers.binomial_setup` of ``p = 1 - q``, ``q = exp(-x)`` (``x >= 0``), reusing ``log q = -x``."""
    p = 1.0 - q
    if p <= 0.5:
        return (p, q, -x, False) if p > 0.0 else (0.0, 1.0, 0.0, False)
    return binomial_setup(p)


@njit(**LEAF_JIT)
def _marrow_rates(rates, xb, xn):
    """Net per-capita growth rates (day-1) of blasts and normal cells at occupancies ``xb``, ``xn`` (fractions of K).

    ``rates`` = (blast division, blast net growth, normal division, normal recovery, normal target
    occupancy): :func:`marrow_update`'s rules, division ``b`` and death ``max(b - r (1 - occ), 0)``.
    """
    b_b, r_b, b_n, r_n, c_n = rates
    occ = xb + xn
    return b_b - max(b_b - r_b * (1.0 - occ), 0.0), b_n - max(b_n - r_n * (1.0 - occ / c_n), 0.0)


#: RK4 steps of a voxel's mean path over a merged quiet-day update. A merge lasts at most 7 days and its rates
#: drift so little that the region's paths bend by at most QUIET_MARROW_BEND: two steps follow such a path to far
#: better than a cell per voxel (tests/test_quiet_days.py compares a merged update with hourly ones).
_MEAN_PATH_STEPS = 2


@njit(**LEAF_JIT)
def _mean_path_death_rates(rates, xb, xn, delta):
    """Constant death rates (day-1) of blasts and normal cells that give each its mean growth over ``delta``.

    The mean growth is that of the voxel's deterministic occupancy dynamics ``x' = g(x) x`` from
    occupancies ``xb``, ``xn`` (fractions of K), integrated with RK4 (``rates`` as in
    :func:`_marrow_rates`); a population that grows by the factor ``F`` gets ``d = b - ln(F) / delta``.
    """
    h = delta / _MEAN_PATH_STEPS
    yb = xb
    yn = xn
    for _ in range(_MEAN_PATH_STEPS):
        g1b, g1n = _marrow_rates(rates, yb, yn)
        k1b, k1n = g1b * yb, g1n * yn
        g2b, g2n = _marrow_rates(rates, yb + 0.5 * h * k1b, yn + 0.5 * h * k1n)
        k2b, k2n = g2b * (yb + 0.5 * h * k1b), g2n * (yn + 0.5 * h * k1n)
        g3b, g3n = _marrow_rates(rates, yb + 0.5 * h * k2b, yn + 0.5 * h * k2n)
        k3b, k3n = g3b * (yb + 0.5 * h * k2b), g3n * (yn + 0.5 * h * k2n)
        g4b, g4n = _marrow_rates(rates, yb + h * k3b, yn + h * k3n)
        k4b, k4n = g4b * (yb + h * k3b), g4n * (yn + h * k3n)
        yb += h / 6.0 * (k1b + 2.0 * k2b + 2.0 * k3b + k4b)
        yn += h / 6.0 * (k1n + 2.0 * k2n + 2.0 * k3n + k4n)
    d_b = rates[0] - math.log(yb / xb) / delta if xb > 0.0 and yb > 0.0 else rates[0]
    d_n = rates[2] - math.log(yn / xn) / delta if xn > 0.0 and yn > 0.0 else rates[2]
    return d_b, d_n


@njit(**LEAF_JIT)
def _unresolved_turnover(n, b, d, delta):
    """Divisions (and as many deaths) over ``delta`` days that one long update does not draw (int64, >= 0).

    Over ``delta`` at division rate ``b`` and death rate ``d``, ``n`` cells divide
    ``b n (exp(g delta) - 1) / g`` times on average (``g = b - d``), but one update draws only
    the lineages that leave more cells than they started with, ``n exp(-d delta) (exp(b delta) - 1)``.
    A merged quiet-day update adds the difference, rounded, to both its division and death
    counters, so that the counters keep counting divisions and deaths (and the bookkeeping still
    balances) however long the update; the cells themselves are unchanged.
    """
    g = b - d
    divisions = b * n * (math.expm1(g * delta) / g if abs(g) > 1e-12 else delta)
    drawn = n * math.exp(-d * delta) * math.expm1(b * delta)
    extra = divisions - drawn
    return np.int64(round(extra)) if extra > 0.0 else np.int64(0)


@njit(**LEAF_JIT)
def marrow_update(kp, rng, sus, res, nor, bsus, bres, bnor, hazard_integral, cnt_now, delta, halt, mean_path=False,
                  cy_exposure_integral=0.0, blast_log_kill=0.0):
    """Deaths and divisions of marrow cells over ``delta`` days (mean-exact tau-leap per voxel).

    Per capita, blasts divide at ``b`` and die at ``max(b - r (1 - occ), 0)`` so that their
    net growth is logistic, ``r (1 - occ)``, in the voxel occupancy ``occ = cells / K``;
    normal cells regrow as ``r_n (1 - occ / c)`` toward the target occupancy ``c`` and are
    crowded out by blasts. ``hazard_integral`` (dimensionless) is the integrated drug kill
    hazard on lymphocytes, scaled by each population's drug sensitivity; blasts are killed in
    addition at ``blasts.cy_exposure_kill`` times ``cy_exposure_integral`` (mg day L-1, the integral
    of the plasma cyclophosphamide concentration over the update): a log kill proportional to the
    alkylator's exposure (docs/model.md section 9.9), and by ``blast_log_kill`` (dimensionless: the
    cytarabine doses since the last update times ``blasts.cytarabine_log_kill``, docs/model.md section 9.10).

    Draws come from :mod:`nksim.engine.samplers` (exact binomials; counts as int64). Work that
    cannot change anything costs a branch: empty voxels, empty populations and zero
    probabilities draw nothing, the drug split is skipped without a drug hazard, the switch
    draws without a switch probability.

    ``mean_path`` (the long merged updates of quiet days): instead of freezing each voxel's
    death rates at the start, take the constant rates that give the voxel's blasts and normal
    cells the mean growth of their deterministic occupancy dynamics over ``delta``
    (:func:`_mean_path_death_rates`), so the update's mean follows the voxel however long it is;
    the division and death counters also get the turnover the update does not draw
    (:func:`_unresolved_turnover`).

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
    hb = (kp[KP.blasts_drug_sensitivity] * hazard_integral + kp[KP.blasts_cy_exposure_kill] * cy_exposure_integral
          + blast_log_kill)
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
        if mean_path:
            db_path, dn_path = _mean_path_death_rates((b_b, r_b, b_n, r_n, c_n), (s + rr) / K, n / K, delta)
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
            db = db_path if mean_path else b_b - r_b * (1.0 - occ)
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
            if mean_path:
                turnover = _unresolved_turnover(s + rr, b_b, db, delta)
                cnt_now[C.blast_births] += turnover
                cnt_now[C.blast_deaths] += turnover
        dnn = np.int64(0)
        bn = np.int64(0)
        dn = 0.0
        if n > 0:
            dn = dn_path if mean_path else b_n - r_n * (1.0 - occ / c_n)
            if dn < 0.0:
                dn = 0.0
            x = dn * delta + hn
            surv = math.exp(-x)
            dnn = binomial_draw(rng, n, _death_setup(x, surv))
            bn = binomial_draw(rng, n, binomial_setup(min(surv * grow_n, 1.0)))
            if mean_path:
                turnover = _unresolved_turnover(n, b_n, dn, delta)
                cnt_now[C.normal_births] += turnover
                cnt_now[C.normal_deaths] += turnover
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


#: Largest bend (in log population) of a population's path over one merged quiet-day marrow update away from the
#: straight log line along which the records between merged updates are filled (numerical choice: 0.2 %; the
#: update's own mean follows each voxel's path, _mean_path_death_rates, however long it is).
QUIET_MARROW_BEND = 0.002
#: Largest division probability a merged quiet-day marrow update may draw with (the tau-leap's probability
#: ``exp(-d delta) (exp(b delta) - 1)`` must stay a probability, with room).
QUIET_MARROW_MAX_P_DIV = 0.95
#: The counters a marrow update advances (cumulative; interpolated over merged quiet days by backfill_marrow): the
#: blasts' births, deaths, drug deaths and lost daughters, then the normal cells' (births first in each group). No
#: NK agent lives on a quiet day, so ``blasts_killed_by_nk`` does not move there.
MARROW_COUNTERS = (C.blast_births, C.blast_deaths, C.blast_drug_deaths, C.blast_daughters_lost, C.normal_births,
                   C.normal_deaths, C.normal_drug_deaths, C.normal_daughters_lost)


@njit(**LEAF_JIT)
def _p_div_ok(b, d, days):
    return d == np.inf or math.exp(-d * days) * math.expm1(b * days) <= QUIET_MARROW_MAX_P_DIV


@njit(**LEAF_JIT)
def quiet_marrow_days(kp, sus, res, nor, max_days, regular):
    """How many whole quiet days one merged marrow update may cover, from the lattice now (0 or 1 to ``max_days``).

    A merged update follows each voxel's mean path (:func:`_mean_path_death_rates`), so its
    length is bounded by what it cannot follow: the daily records between merged updates follow
    each population along a straight log line (:func:`backfill_marrow`), which its path may leave
    by at most :data:`QUIET_MARROW_BEND`, and each voxel's division probability must
    stay at most :data:`QUIET_MARROW_MAX_P_DIV` (a probability, with room; the death rate is
    lowest in the emptiest voxel). 0: not even the longer of a day and the ``regular`` marrow step
    (days) may be merged; the marrow then keeps its regular cadence.
    """
    K = kp[KP.voxel_capacity]
    b_b = kp[KP.blast_birth_rate]
    r_b = kp[KP.blast_net_growth_rate]
    b_n = kp[KP.normal_birth_rate]
    r_n = kp[KP.normal_recovery_rate]
    c_n = kp[KP.normal_target]
    d_b_min = np.inf
    d_n_min = np.inf
    blasts_all = 0.0
    normal_all = 0.0
    growth_b = 0.0  # the region's blasts and normal cells: net growth per day at the rates now
    growth_n = 0.0
    for v in range(sus.shape[0]):
        blasts = sus[v] + res[v]
        tot = blasts + nor[v]
        if tot == 0:
            continue
        occ = tot / K
        if blasts > 0:
            d = max(b_b - r_b * (1.0 - occ), 0.0)
            d_b_min = min(d_b_min, d)
            blasts_all += blasts
            growth_b += blasts * (b_b - d)
        if nor[v] > 0:
            d = max(b_n - r_n * (1.0 - occ / c_n), 0.0)
            d_n_min = min(d_n_min, d)
            normal_all += nor[v]
            growth_n += nor[v] * (b_n - d)
    # the per-capita rates drift with the occupancy, by about R x (growth of the cells per place) per day (R: a rate's
    # sensitivity to occupancy); a population's log path then bends by drift delta^2 / 8 from the straight log line
    # along which backfill_marrow fills the records between merged updates
    drift = max(abs(r_b), r_n / c_n) * abs(growth_b + growth_n) / (sus.shape[0] * K)
    days = max_days
    if drift * days * days / 8.0 > QUIET_MARROW_BEND:
        days = int(math.sqrt(8.0 * QUIET_MARROW_BEND / drift))
    while days > 0 and not (_p_div_ok(b_b, d_b_min, days) and _p_div_ok(b_n, d_n_min, days)):
        days -= 1
    return days if days >= max(1.0, regular) else 0


@njit(**LEAF_JIT)
def _growth_fraction(x0, x1, f):
    """Fraction of a change from ``x0`` to ``x1`` done at fraction ``f`` of the time, on the exponential path.

    ``(ratio^f - 1) / (ratio - 1)`` with ``ratio = x1 / x0``: at constant per-capita rates a
    population's cumulative births and deaths grow in that same proportion; ``f`` without change
    or without cells at an end.
    """
    if x0 <= 0.0 or x1 <= 0.0 or x0 == x1:
        return f
    ratio = x1 / x0
    return math.expm1(f * math.log(ratio)) / (ratio - 1.0)


@njit(**LEAF_JIT)
def backfill_marrow(kp, rec, cnt, r0, r_last, t_now, sus, res, nor, cnt_now):
    """Marrow fields of records ``r0 < r <= r_last``, written before a merged quiet-day update, from the update.

    Between record ``r0`` (the last one written with a current marrow) and the lattice now (at
    record time ``t_now``), the blasts and the normal cells each follow the exponential path
    through both ends, and so do their cumulative counters (births, deaths, drug deaths, daughters
    lost: at constant per-capita rates each grows in proportion to the population's change,
    :func:`_growth_fraction`). The counters are rounded and the cell counts follow from them, so
    every record keeps the bookkeeping identities (cells now = cells at the start + births - deaths
    - losses) exactly and every cumulative counter stays monotone; the susceptible share of the
    blasts moves linearly (a class absent at both ends stays absent). The derived fields (totals,
    blast percentage, susceptible fraction) are computed from them as :func:`record_day` does.
    """
    scale = kp[KP.scale]
    s1 = np.int64(0)
    b1 = np.int64(0)
    n1 = np.int64(0)
    for v in range(sus.shape[0]):
        s1 += sus[v]
        b1 += sus[v] + res[v]
        n1 += nor[v]
    b0 = cnt[r0, C.susceptible_blasts] + cnt[r0, C.resistant_blasts]
    n0 = cnt[r0, C.normal_cells]
    # the susceptible share moves linearly (a class absent at both ends stays absent)
    share0 = cnt[r0, C.susceptible_blasts] / b0 if b0 > 0 else (s1 / b1 if b1 > 0 else 0.0)
    share1 = s1 / b1 if b1 > 0 else share0
    for r in range(r0 + 1, r_last + 1):
        f = (r - r0) / (t_now - r0)
        fb = _growth_fraction(float(b0), float(b1), f)
        fn = _growth_fraction(float(n0), float(n1), f)
        b = b0
        n = n0
        for k in range(len(MARROW_COUNTERS)):
            j = MARROW_COUNTERS[k]
            g = fb if k < 4 else fn
            cnt[r, j] = np.int64(round(cnt[r0, j] + (cnt_now[j] - cnt[r0, j]) * g))
            delta = cnt[r, j] - cnt[r0, j]
            if k < 4:
                b += delta if k == 0 else -delta  # births in, deaths, drug deaths, daughters lost out
            else:
                n += delta if k == 4 else -delta
        s = min(max(np.int64(round(b * (share0 + (share1 - share0) * f))), 0), b)
        cnt[r, C.susceptible_blasts] = s
        cnt[r, C.resistant_blasts] = b - s
        cnt[r, C.normal_cells] = n
        rec[r, R.blasts_total] = b * scale
        rec[r, R.normal_total] = n * scale
        rec[r, R.marrow_blast_pct] = 100.0 * b / (b + n) if b + n > 0 else 0.0
        rec[r, R.blast_susceptible_fraction] = s / b if b > 0 else np.nan


@njit(**ENGINE_JIT)
def _grow(arr, n):
    out = np.empty(n, dtype=arr.dtype)
    for i in range(arr.shape[0]):  # a loop, not out[:m] = arr: numba would compile a shape-error message
        out[i] = arr[i]            # formatter (str of ints, unicode concatenation) for the slice copy
    return out


@njit(**LEAF_JIT)
def record_day(kp, rec, cnt, r, y, pk, u, sus, res, nor, n_agents, a_comp, a_kills, cnt_now, primed):
    """Fill day ``r`` of the record from the current state (``u``: the blood's inputs now, :func:`pk_inputs`)."""
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
    rec[r, R.host_treg_blood] = y[Y.host_treg]
    rec[r, R.il15] = y[Y.il15]
    rec[r, R.flu_conc] = pk[PK_FLU] / kp[KP.drugs_flu_volume]
    rec[r, R.cy_conc] = pk[PK_CY] / kp[KP.drugs_cy_volume]
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
    rec[r, R.drug_kill_hazard] = u[U_HF] + u[U_HC]
    rec[r, R.donor_nk_total] = blood + tissue + n_agents * scale
    rec[r, R.allo_priming] = prim
    rec[r, R.il2_central] = pk[PK_IL2]
    rec[r, R.il15_exogenous] = il15_exogenous(kp, y, u)
    rec[r, R.n803_central] = pk[PK_N803]
    rec[r, R.il2dt_amount] = pk[PK_IL2DT]
    rec[r, R.cytokine_support] = cytokine_support(kp, y, u)[2]
    for j in range(cnt.shape[1]):
        cnt[r, j] = cnt_now[j]


@njit(**LEAF_JIT)
def _drug_integrals(kp, flu, cy, length):
    """What the marrow accumulates over ``length`` days from drug amounts ``flu``, ``cy`` (mg), quiet days.

    ``(integrated reference kill hazard, integrated plasma Cy in mg day L-1)``: :func:`hazard_integral`
    and :func:`cy_exposure` of the same interval, kept together so that every quiet-day path adds both.
    """
    return hazard_integral(kp, flu, cy, length), cy_exposure(kp, cy, length)


@njit(**ENGINE_JIT)
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


@njit(nogil=True, **ENGINE_JIT)
def run_patient(kp, ev_step, ev_kind, ev_amount, ev_donor, snap_days, stop_days, sync_days, rng_init, rng_move,
                rng_kill, rng_fate, rng_traffic, rng_marrow, halt):
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
    ``snap_days``: record indices (days since start) at which the lattice is copied;
    ``sync_days``: sorted record indices at whose end the marrow must be current (assessment,
    snapshot and stop days): a merged quiet-day marrow update never spans them.

    Quiet days (:func:`_quiet`): the blood is integrated over the day at its end
    (:func:`~nksim.engine.blood.quiet_day`), and the marrow updates of consecutive quiet days
    are merged into one of up to ``kp[KP.quiet_marrow_days]`` days (:func:`quiet_marrow_days`),
    done at the end of the block (or at the start of the next day that is not quiet); the daily
    records written in between get their marrow fields from it (:func:`backfill_marrow`).
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
    max_agents = np.int64(kp[KP.max_donor_agents])
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
    y[Y.host_treg] = kp[KP.host_treg_baseline]
    y[Y.il15] = kp[KP.patient_il15_production]  # her steady state before lymphodepletion
    k1 = np.empty(n_y)
    k2 = np.empty(n_y)
    k3 = np.empty(n_y)
    k4 = np.empty(n_y)
    tmp = np.empty(n_y)
    # quiet days (no agent, no event, no donor pool that could home, negligible drug kill): the blood is
    # integrated over the whole day by quiet_day instead of step by step
    q_work = np.zeros((N_WORK, n_y))
    q_jac = np.zeros((n_y, n_y))
    q_mat = np.zeros((n_y, n_y))
    q_piv = np.zeros(n_y, dtype=np.int64)
    q_atol, q_rtol = quiet_tolerances(kp, n_y)
    q_step = 0.1  # first step (days) of the next quiet day's integrator
    quiet = False
    q_max_days = max(int(kp[KP.quiet_marrow_days]), 1)
    m_pending = 0  # quiet days whose marrow update is merged into the next one
    m_allowed = 1  # quiet days the pending merged update may cover (0: the regular cadence)
    m_last = 0  # step at which the marrow was last updated (each update covers the time since)
    r_fresh = 0  # the last record written with a current marrow
    sync_i = 0
    first_exposure = np.full(n_donors, np.inf)  # day (since start) of each donor's first infusion
    primed = np.zeros(n_donors)
    rate_die = np.zeros(n_donors)
    p_any = np.zeros(n_donors)
    rate_tot = np.zeros(n_donors)
    # PK state (drug amounts, cytokine depots and central amounts; blood.PK_*) and the blood's inputs computed
    # from it (drug hazards, cytokine amounts; blood.U_*) at a step's start, middle and end
    pk = np.zeros(N_PK)
    u0 = np.zeros(N_U)
    um = np.zeros(N_U)
    u1 = np.zeros(N_U)
    ua = np.zeros(N_U)
    ub = np.zeros(N_U)
    uc = np.zeros(N_U)
    kflu = kp[KP.flu_elimination_rate]
    kcy = kp[KP.cy_elimination_rate]
    h_marrow = 0.0  # integrated drug hazard since the last marrow update
    e_marrow = 0.0  # integrated plasma cyclophosphamide since then (mg day L-1; blasts.cy_exposure_kill)
    k_marrow = 0.0  # blast log kill of the cytarabine doses since then (1; blasts.cytarabine_log_kill)

    p_hop_mean = kp[KP.nk_hop_rate] * dt
    p_zero_hops = math.exp(-p_hop_mean)
    contact = kp[KP.nk_contact_rate]
    p_kill = kp[KP.donor_kill_probability]
    # engagement probability 1 - exp(-contact (b / K) dt) of an agent in a voxel with b blasts, kept per b
    # once computed (the same expression, so the same value; -1 = not yet): one exp per distinct b
    # instead of one per agent-step
    n_engage = min(K, 4096) + 1
    p_engage = np.full(n_engage, -1.0)
    contact_cached = contact  # the engagement rate p_engage was computed at
    # cytokine activation of killing (0..1): relaxes towards the cytokine support with half-life
    # nk.activation_half_life; multiplies the engagement rate by 1 + nk.cytokine_killing_boost * activation
    k_act_boost = kp[KP.nk_cytokine_killing_boost]
    k_act = math.log(2.0) / kp[KP.nk_activation_half_life] if k_act_boost > 0.0 else 0.0
    f_act_step = math.exp(-k_act * dt)
    activation = 0.0
    # refractory period in whole steps after the kill step (ceil, so never shorter than asked)
    refract_steps = int(math.ceil(kp[KP.nk_refractory_days] / dt - 1e-9))
    p_egress_rate = kp[KP.nk_egress_rate]
    recover_rate = kp[KP.nk_function_recovery_rate]

    ev_i = 0
    n_ev = ev_step.shape[0]
    snap_i = np.int64(0)
    pk_inputs(kp, pk, 0.0, u0)
    record_day(kp, rec, cnt, np.int64(0), y, pk, u0, sus, res, nor, n_agents, a_comp, a_kills, cnt_now, primed)
    stop_pct = pd_threshold_pct(kp, rec[0, R.marrow_blast_pct])
    stop_i = 0
    if snap_i < snap_days.shape[0] and snap_days[snap_i] == 0:
        _snapshot(snaps, snap_i, sus, res, nor, nk_grid, a_pos, n_agents, side)
        snap_i += 1

    halted = halt_requested(halt)
    step = 0
    while step < n_steps:
        if halted or halt_requested(halt):
            halted = True
            break
        t = step * dt
        if step % spd == 0:
            quiet = _quiet(kp, step, spd, n_steps, n_agents, y, ev_step, ev_i, pk)
            if not quiet and m_pending > 0:  # a merged update due at the end of the previous (quiet) day
                marrow_update(kp, rng_marrow, sus, res, nor, bsus, bres, bnor, h_marrow, cnt_now, (step - m_last) * dt,
                              halt, step - m_last > m_every, e_marrow, k_marrow)
                h_marrow = 0.0
                e_marrow = 0.0
                k_marrow = 0.0
                m_last = step
                if halt_requested(halt):  # the update may be incomplete: record nothing more
                    halted = True
                    break
                r_now = step // spd
                backfill_marrow(kp, rec, cnt, r_fresh, r_now, r_now, sus, res, nor, cnt_now)
                r_fresh = r_now
                m_pending = 0
        if quiet:
            # A quiet day in one block (steps 2.-7.): no event, no agent, nothing that could home. The drugs and
            # cytokine depots decay exactly over the day, the drug hazard on the marrow is integrated over it
            # (Simpson), and the blood is integrated over it by quiet_day from the PK state at its start.
            day = spd * dt
            pk[PK_T0] = t
            flu = pk[PK_FLU]
            cy = pk[PK_CY]
            if m_pending == 0:
                m_allowed = quiet_marrow_days(kp, sus, res, nor, q_max_days, m_every * dt)
            if m_allowed > 0:
                dh, de = _drug_integrals(kp, flu, cy, day)  # merged update at the day's (or a later day's) end
                h_marrow += dh
                e_marrow += de
            else:  # the marrow at its regular cadence through the day
                s_prev = 0.0
                for b in range(step + 1, step + spd + 1):
                    if b % m_every == 0:
                        s_b = (b - step) * dt
                        dh, de = _drug_integrals(kp, flu * math.exp(-kflu * s_prev), cy * math.exp(-kcy * s_prev),
                                                 s_b - s_prev)
                        h_marrow += dh
                        e_marrow += de
                        marrow_update(kp, rng_marrow, sus, res, nor, bsus, bres, bnor, h_marrow, cnt_now,
                                      (b - m_last) * dt, halt, False, e_marrow, k_marrow)
                        h_marrow = 0.0
                        e_marrow = 0.0
                        k_marrow = 0.0
                        m_last = b
                        s_prev = s_b
                if halt_requested(halt):
                    halted = True
                    break
                if s_prev < day:
                    dh, de = _drug_integrals(kp, flu * math.exp(-kflu * s_prev), cy * math.exp(-kcy * s_prev),
                                             day - s_prev)
                    h_marrow += dh
                    e_marrow += de
            q_step = quiet_day(kp, y, day, pk, first_exposure, primed, q_step, q_rtol, q_atol, q_work, q_jac,
                               q_mat, q_piv)[0]
            pk_advance(kp, pk, day)
            if k_act_boost > 0.0:  # activation relaxes over the day towards the support at its end
                pk_inputs(kp, pk, 0.0, u0)
                s_end = cytokine_support(kp, y, u0)[2]
                activation = s_end + (activation - s_end) * math.exp(-k_act * day)
            done = step + spd
        else:
            # 2. events
            while ev_i < n_ev and ev_step[ev_i] == step:
                k_marrow += apply_event(kp, ev_kind[ev_i], ev_amount[ev_i], ev_donor[ev_i], t, pk, y, first_exposure)
                ev_i += 1
            # 3. PK and hazard over [t, t + dt]; cytokine effects and priming at mid-step
            pk_inputs(kp, pk, 0.0, u0)
            pk_inputs(kp, pk, 0.5 * dt, um)
            pk_inputs(kp, pk, dt, u1)
            e_marrow += cy_exposure(kp, pk[PK_CY], dt)
            pk_advance(kp, pk, dt)
            h_step = dt / 6.0 * (u0[U_HF] + u0[U_HC] + 4.0 * (um[U_HF] + um[U_HC]) + u1[U_HF] + u1[U_HC])
            h_marrow += h_step
            for d in range(n_donors):  # at mid-step: second-order accurate over the step
                primed[d] = primed_fraction(kp, t + 0.5 * dt - first_exposure[d])
            # 4. blood and IL-15
            rk4_blood(kp, y, dt, u0, um, u1, n_agents * scale, primed, k1, k2, k3, k4, tmp, ua, ub, uc)
            il15 = y[Y.il15]
            # cytokine effects on the agents during the step: at mid-step inputs, on the blood state after it
            sup_prolif, sup_death, support = cytokine_support(kp, y, um)
            # 5. NK motility, recovery of lytic function, killing
            p_recover = -math.expm1(-recover_rate * (1.0 + kp[KP.nk_cytokine_recovery_boost] * support) * dt)
            # cytokine activation of killing: engagements faster by 1 + boost * activation (nk.cytokine_killing_boost);
            # the per-b engagement probabilities are kept while the rate is unchanged (always, for boost 0)
            if k_act_boost > 0.0:  # activation follows the support with half-life nk.activation_half_life
                activation = support + (activation - support) * f_act_step
            # host Tregs inhibit killing (treg.nk_kill_suppression; 1 when it is 0): on the blood state after the step
            contact_now = contact * (1.0 + k_act_boost * activation) * treg_kill_factor(kp, y)
            if contact_now != contact_cached:
                p_engage[:] = -1.0
                contact_cached = contact_now
            for i in range(n_agents):
                if p_hop_mean > 0.0:
                    # Poisson number of hops by inversion of its CDF with one uniform (usually 0 hops)
                    u = uniform(rng_move)
                    if u > p_zero_hops:
                        nh = 0
                        pmf = p_zero_hops
                        cdf = p_zero_hops
                        while u > cdf and nh < 10000:
                            nh += 1
                            pmf *= p_hop_mean / nh
                            cdf += pmf
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
                                pe = 1.0 - math.exp(-contact_now * (b / K) * dt)
                                p_engage[b] = pe
                        else:
                            pe = 1.0 - math.exp(-contact_now * (b / K) * dt)
                        if u < pe:
                            # engaged a blast: susceptible with prob sus/b, then killed with p_kill
                            if uniform(rng_kill) * b < sus[v] and uniform(rng_kill) < p_kill:
                                sus[v] -= 1
                                a_kills[i] += 1
                                a_ready[i] = step + 1 + refract_steps
                                cnt_now[C.blasts_killed_by_nk] += 1
            # 6. NK fate: divide / die / egress (competing risks over dt); death depends on the donor
            x_exo = il15_exogenous(kp, y, um)
            rate_div = nk_division_rate(kp, il15, x_exo, sup_prolif)
            for d in range(n_donors):
                rate_die[d] = (kp[KP.nk_death_rate] * sup_death + donor_nk_rejection(kp, y[Y.host_t], primed[d], x_exo)
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
                    if n_agents >= max_agents:  # numerics.max_marrow_donor_nk reached: no division
                        continue
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
                    if n_agents + n_in > max_agents:  # the ceiling: the rest stay in the blood
                        n_in = max(max_agents - n_agents, np.int64(0))
                    for _ in range(n_in):
                        pos = below(rng_traffic, np.int64(nv))
                        comp = uniform(rng_traffic) < kp[KP.donor_competent_fraction]
                        a_pos, a_comp, a_kills, a_ready, a_donor = _add_agent(
                            a_pos, a_comp, a_kills, a_ready, a_donor, n_agents, pos, comp, step + 1, d)
                        n_agents += 1
                    y[ib] -= n_in * scale
                    cnt_now[C.nk_homed] += n_in
            done = step + 1
        # 8. marrow cells (on quiet days merged into one update at the end of the day or of a block of days)
        if not quiet and done % m_every == 0:
            marrow_update(kp, rng_marrow, sus, res, nor, bsus, bres, bnor, h_marrow, cnt_now, (done - m_last) * dt,
                          halt, False, e_marrow, k_marrow)
            h_marrow = 0.0
            e_marrow = 0.0
            k_marrow = 0.0
            m_last = done
            if halt_requested(halt):  # the update may be incomplete: record nothing more
                halted = True
                break
        # 1. record at day boundaries
        if done % spd == 0:
            r = done // spd
            if quiet and m_allowed > 0:
                m_pending += 1
                while sync_i < sync_days.shape[0] and sync_days[sync_i] < r:
                    sync_i += 1
                if (m_pending >= m_allowed or done + spd > n_steps
                        or (sync_i < sync_days.shape[0] and sync_days[sync_i] == r)):
                    marrow_update(kp, rng_marrow, sus, res, nor, bsus, bres, bnor, h_marrow, cnt_now,
                                  (done - m_last) * dt, halt, done - m_last > m_every, e_marrow, k_marrow)
                    h_marrow = 0.0
                    e_marrow = 0.0
                    k_marrow = 0.0
                    m_last = done
                    if halt_requested(halt):
                        halted = True
                        break
                    backfill_marrow(kp, rec, cnt, r_fresh, r - 1, r, sus, res, nor, cnt_now)
                    m_pending = 0
            for d in range(n_donors):  # priming and cytokine support at the day boundary, for the record
                primed[d] = primed_fraction(kp, done * dt - first_exposure[d])
            pk_inputs(kp, pk, 0.0, u0)
            record_day(kp, rec, cnt, r, y, pk, u0, sus, res, nor, n_agents, a_comp, a_kills, cnt_now, primed)
            if m_pending == 0:
                r_fresh = r
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
        step = done
    return rec, cnt, snaps, halted


@njit(**LEAF_JIT)
def _quiet(kp, step, spd, n_steps, n_agents, y, ev_step, ev_i, pk):
    """Whether the day starting at ``step`` is quiet (its blood is then integrated by :func:`quiet_day`).

    Quiet: a whole day without agents, events, donor NK outside the marrow worth one
    region-equivalent agent (``scale`` cells, blood and other tissues together: none could home)
    a drug kill hazard (Flu/Cy reference hazard, or IL2DT's on Tregs) above :data:`QUIET_MAX_HAZARD`,
    or rhIL-15 (plasma and s.c. depot) above :data:`~nksim.engine.blood.QUIET_MAX_RHIL15`.

    On a quiet day nothing draws from the agents' or the traffic's streams, so the marrow and every
    stream stay aligned with a step-by-step run; only the blood's integrator differs.
    """
    if n_agents > 0 or step + spd > n_steps:
        return False
    if ev_i < ev_step.shape[0] and ev_step[ev_i] < step + spd:
        return False
    if drug_hazard(kp, pk[PK_FLU], pk[PK_CY]) > QUIET_MAX_HAZARD:
        return False
    if kp[KP.il2dt_kill_per_ug] * pk[PK_IL2DT] > QUIET_MAX_HAZARD:  # IL2DT still killing Tregs
        return False
    if y[Y.il15_exo] + kp[KP.rhil15_fold_per_ug] * pk[PK_RH_DEPOT] > QUIET_MAX_RHIL15:  # rhIL-15 still around
        return False
    for d in range(int(kp[KP.n_donors])):  # blood and tissue: a pool that large is also an output worth its RK4
        if y[Y.donor_nk_blood + DONOR_STRIDE * d] + y[Y.donor_nk_tissue + DONOR_STRIDE * d] >= kp[KP.scale]:
            return False
    return True


@njit(**LEAF_JIT)
def is_pd(kp, b, b0, pd_pct):
    """The response call is PD: at the PD threshold and neither CR nor PR (which take precedence)."""
    if not b >= pd_pct:  # also False for NaN
        return False
    if b < kp[KP.response_cr_blast_pct]:
        return False
    if b <= kp[KP.response_pr_blast_pct] and b <= b0 * (1.0 - kp[KP.pr_min_fall_fraction]):
        return False
    return True


@njit(**LEAF_JIT)
def pd_threshold_pct(kp, b0):
    """PD threshold (percent) for baseline blasts ``b0`` (percent); mirrors observables.pd_threshold."""
    if b0 < kp[KP.response_cr_blast_pct]:  # in remission at baseline: relapse at the CR threshold (ELN 2017)
        return kp[KP.response_cr_blast_pct]
    rel = b0 * (1.0 + kp[KP.pd_relative_rise_fraction])
    if b0 < kp[KP.response_pd_absolute_below]:
        absolute = b0 + kp[KP.response_pd_absolute_rise]
        return max(rel, absolute)
    return rel


@njit(**LEAF_JIT)
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
