"""The blood compartment: drug PK/PD, cytokines, priming, rejection and the blood ODEs with their integrators.

Well mixed and deterministic (docs/architecture.md, "What one simulation is"): host NK, host T and
host Tregs per uL, endogenous IL-15 relative to baseline, exogenous rhIL-15 (fold of the baseline
IL-15 concentration), each donor's NK in blood and in other tissues (whole-body cells), driven by
the PK state (Flu/Cy amounts, the cytokines' s.c. depots and central amounts, IL2DT: all first order,
analytic; :func:`pk_inputs`) and the host's primed response to each donor (Erlang delay). Two
integrators advance the same right-hand side (:func:`blood_rhs`):

* :func:`rk4_blood`: one kernel step ``dt`` while NK agents live in the marrow (the agents and the
  blood exchange cells every step), sub-stepped where the system is stiff;
* :func:`quiet_day`: a whole quiet day (no agent, no event, no donor pool large enough to home)
  with the Rosenbrock 2(3) pair of Shampine & Reichelt (MATLAB's ``ode23s``) under error control:
  L-stable, so IL-15's fast relaxation (about 10 day-1) does not force short steps; the drug
  hazards, the cytokine amounts and the priming are evaluated at each stage's own time.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .jitopts import ENGINE_JIT, LEAF_JIT
from .layout import DONOR_STRIDE, EV, KP, Y

# --------------------------------------------------------------------------- PK state and its inputs to the blood
#: The PK state ``pk`` (float64 array, :data:`N_PK`): the time (days since the start) it refers to, the
#: drug amounts (mg), the s.c. depot and central amount of IL-2 (MIU) and of N-803 (ug), the IL2DT amount in
#: plasma (ug) and the s.c. depot of rhIL-15 (ug). Everything here decays first order, so :func:`pk_inputs`
#: evaluates it exactly at any later time.
PK_T0, PK_FLU, PK_CY, PK_IL2_DEPOT, PK_IL2, PK_N803_DEPOT, PK_N803, PK_IL2DT, PK_RH_DEPOT = range(9)
N_PK = 9
#: The inputs ``u`` of the blood ODEs at one time (float64 array, :data:`N_U`), computed from the PK state by
#: :func:`pk_inputs`: the fludarabine and cyclophosphamide reference hazards (day-1), the IL-2 (MIU) and N-803
#: (ug) central amounts, the IL2DT kill hazard on host Tregs (day-1) and the rhIL-15 absorbed from its s.c.
#: depot (fold of the baseline IL-15 concentration per day).
U_HF, U_HC, U_IL2, U_N803, U_DTX, U_RH_IN = range(6)
N_U = 6


@njit(**LEAF_JIT)
def flu_hazard(kp, flu_amt):
    """Fludarabine reference kill hazard (day-1) for an amount ``flu_amt`` (mg): an Emax term."""
    cf = flu_amt / kp[KP.drugs_flu_volume]
    return kp[KP.drugs_flu_emax] * cf / (cf + kp[KP.drugs_flu_ec50])


@njit(**LEAF_JIT)
def cy_hazard(kp, cy_amt):
    """Cyclophosphamide reference kill hazard (day-1) for an amount ``cy_amt`` (mg): an Emax term."""
    cc = cy_amt / kp[KP.drugs_cy_volume]
    return kp[KP.drugs_cy_emax] * cc / (cc + kp[KP.drugs_cy_ec50])


@njit(**LEAF_JIT)
def drug_hazard(kp, flu_amt, cy_amt):
    """Flu + Cy reference kill hazard (day-1), as on marrow cells and donor NK: the sum of the two Emax terms.

    Host lineages weigh the two terms by their own sensitivities (:func:`lineage_hazards`).
    """
    return flu_hazard(kp, flu_amt) + cy_hazard(kp, cy_amt)


@njit(**LEAF_JIT)
def lineage_hazards(kp, u):
    """Flu/Cy kill hazards (day-1) on host NK, T and Tregs at inputs ``u``: each drug term times a sensitivity.

    IL2DT's hazard on Tregs (``u[U_DTX]``) is not included.
    """
    hf = u[U_HF]
    hc = u[U_HC]
    return (kp[KP.host_nk_flu_sensitivity] * hf + kp[KP.host_nk_cy_sensitivity] * hc,
            kp[KP.host_t_flu_sensitivity] * hf + kp[KP.host_t_cy_sensitivity] * hc,
            kp[KP.host_treg_flu_sensitivity] * hf + kp[KP.host_treg_cy_sensitivity] * hc)


@njit(**LEAF_JIT)
def pk_inputs(kp, pk, s, u):
    """Fill ``u`` with the blood's inputs ``s`` days after the PK state ``pk`` (exact first-order decay)."""
    u[U_HF] = flu_hazard(kp, pk[PK_FLU] * math.exp(-kp[KP.flu_elimination_rate] * s))
    u[U_HC] = cy_hazard(kp, pk[PK_CY] * math.exp(-kp[KP.cy_elimination_rate] * s))
    u[U_IL2] = 0.0
    u[U_N803] = 0.0
    u[U_DTX] = 0.0
    u[U_RH_IN] = 0.0
    if pk[PK_IL2_DEPOT] + pk[PK_IL2] > 0.0:
        u[U_IL2] = depot_step(pk[PK_IL2_DEPOT], pk[PK_IL2], kp[KP.il2_absorption_rate], kp[KP.il2_elimination_rate],
                              s)[1]
    if pk[PK_N803_DEPOT] + pk[PK_N803] > 0.0:
        u[U_N803] = depot_step(pk[PK_N803_DEPOT], pk[PK_N803], kp[KP.n803_absorption_rate],
                               kp[KP.n803_elimination_rate], s)[1]
    if pk[PK_IL2DT] > 0.0:
        u[U_DTX] = kp[KP.il2dt_kill_per_ug] * pk[PK_IL2DT] * math.exp(-kp[KP.il2dt_elimination_rate] * s)
    if pk[PK_RH_DEPOT] > 0.0:
        ka = kp[KP.rhil15_sc_absorption_rate]
        u[U_RH_IN] = ka * pk[PK_RH_DEPOT] * math.exp(-ka * s) * kp[KP.rhil15_fold_per_ug]


@njit(**LEAF_JIT)
def pk_advance(kp, pk, dt):
    """Advance the PK state ``pk`` by ``dt`` days in place (exact), its time ``pk[PK_T0]`` included."""
    pk[PK_T0] += dt
    pk[PK_FLU] *= math.exp(-kp[KP.flu_elimination_rate] * dt)
    pk[PK_CY] *= math.exp(-kp[KP.cy_elimination_rate] * dt)
    if pk[PK_IL2DT] > 0.0:  # (0 times the factor is 0: no exp for a drug never given)
        pk[PK_IL2DT] *= math.exp(-kp[KP.il2dt_elimination_rate] * dt)
    if pk[PK_RH_DEPOT] > 0.0:
        pk[PK_RH_DEPOT] *= math.exp(-kp[KP.rhil15_sc_absorption_rate] * dt)
    if pk[PK_IL2_DEPOT] + pk[PK_IL2] > 0.0:
        pk[PK_IL2_DEPOT], pk[PK_IL2] = depot_step(pk[PK_IL2_DEPOT], pk[PK_IL2], kp[KP.il2_absorption_rate],
                                                  kp[KP.il2_elimination_rate], dt)
    if pk[PK_N803_DEPOT] + pk[PK_N803] > 0.0:
        pk[PK_N803_DEPOT], pk[PK_N803] = depot_step(pk[PK_N803_DEPOT], pk[PK_N803], kp[KP.n803_absorption_rate],
                                                    kp[KP.n803_elimination_rate], dt)


@njit(**LEAF_JIT)
def apply_event(kp, kind, amount, donor, t, pk, y, first_exposure):
    """Apply one protocol event (kind code ``EV.*``, ``amount`` in its amount unit) at time ``t`` (days since start).

    Drug doses go into the PK amounts, IL2DT into plasma, s.c. cytokines into their depots (IL-2
    and rhIL-15 s.c. times their bioavailability), an i.v. rhIL-15 bolus into the exogenous IL-15
    state, an NK infusion into its donor's blood pool (the donor's first infusion starts the host's
    priming clock). ``il15_agonist`` is N-803 (a deprecated alias).

    Returns the log kill of marrow blasts the event adds for the next marrow update (dimensionless):
    ``blasts.cytarabine_log_kill`` per g m-2 for a cytarabine dose (``amount`` in mg m-2; its plasma
    half-life, hours, is shorter than an update, so no PK state), 0 for every other kind.
    """
    if kind == EV.cytarabine:
        return kp[KP.blasts_cytarabine_log_kill] * 1e-3 * amount
    if kind == EV.fludarabine:
        pk[PK_FLU] += amount
    elif kind == EV.cyclophosphamide:
        pk[PK_CY] += amount
    elif kind == EV.nk_infusion:
        y[Y.donor_nk_blood + DONOR_STRIDE * donor] += amount
        if first_exposure[donor] == np.inf:
            first_exposure[donor] = t
    elif kind == EV.il2:
        pk[PK_IL2_DEPOT] += kp[KP.il2_bioavailability] * amount  # the share of an s.c. dose that reaches plasma
    elif kind == EV.n803 or kind == EV.il15_agonist:
        pk[PK_N803_DEPOT] += amount
    elif kind == EV.il2dt:
        pk[PK_IL2DT] += amount
    elif kind == EV.rhil15_iv:
        y[Y.il15_exo] += kp[KP.rhil15_fold_per_ug] * amount
    elif kind == EV.rhil15_sc:
        pk[PK_RH_DEPOT] += kp[KP.rhil15_sc_bioavailability] * amount
    return 0.0


# --------------------------------------------------------------------------- IL-15 signals and donor NK rates
@njit(**LEAF_JIT)
def il15_exogenous(kp, y, u):
    """The exogenous IL-15 signal (fold of the baseline IL-15 concentration): rhIL-15 in plasma plus N-803."""
    return y[Y.il15_exo] + kp[KP.n803_fold_per_ug] * u[U_N803]


@njit(**LEAF_JIT)
def nk_proliferation(kp, il15, x_exo):
    """Donor NK division rate (day-1) from IL-15: basal + Emax in the IL-15 signal above baseline.

    The signal is the endogenous excess ``max(il15 - 1, 0)`` plus the exogenous signal ``x_exo``
    (rhIL-15, N-803: one dose-response for every IL-15 signal).
    """
    x = il15 - 1.0
    if x < 0.0:
        x = 0.0
    x += x_exo
    return kp[KP.nk_proliferation_rate] + kp[KP.patient_nk_il15_proliferation_max] * x / (x + kp[KP.nk_il15_ec50])


@njit(**LEAF_JIT)
def nk_division_rate(kp, il15, x_exo, sup_prolif):
    """Donor NK division rate (day-1): IL-15-driven plus IL-2 support, at most ``nk.max_division_rate``."""
    rate = nk_proliferation(kp, il15, x_exo) + sup_prolif
    cap = kp[KP.nk_max_division_rate]
    return rate if rate < cap else cap


@njit(**LEAF_JIT)
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


@njit(**LEAF_JIT)
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


@njit(**LEAF_JIT)
def treg_competition(kp, y):
    """Share of the IL-2 signal left to donor NK by host Tregs: ``1 / (1 + R / treg.nk_half_suppression)``."""
    return 1.0 / (1.0 + y[Y.host_treg] / kp[KP.treg_nk_half_suppression])


@njit(**LEAF_JIT)
def treg_kill_factor(kp, y):
    """Factor on donor-NK engagements from host Tregs: ``1 - treg.nk_kill_suppression * R / (R + R_half)``.

    ``R``: host Tregs per uL (blood, standing for the whole body and marrow); ``R_half``: the Treg level of
    half-suppression shared with the IL-2 competition (``treg.nk_half_suppression``). Tregs inhibit NK cytotoxicity
    by membrane-bound TGF-beta (Ghiringhelli et al. 2005 J Exp Med 202:1075); ``treg.nk_kill_suppression`` 0 (the
    default) gives 1: no effect (``docs/model.md`` section 9.15).
    """
    s = kp[KP.treg_nk_kill_suppression]
    if s == 0.0:
        return 1.0
    return 1.0 - s * (1.0 - min(treg_competition(kp, y), 1.0))  # R / (R + R_half) = 1 - phi; R < 0 (ODE undershoot): 0


@njit(**LEAF_JIT)
def cytokine_support(kp, y, u):
    """Effects of exogenous cytokines on donor NK at blood state ``y`` and inputs ``u`` (:func:`pk_inputs`).

    Returns ``(extra division rate day-1 from IL-2, death-rate multiplier, combined support 0..1)``.
    IL-2 acts through its occupancy ``f2 = phi C2 / (C2 + EC50)`` of its central amount (the
    product's EC50, ``donor_il2_ec50``; ``phi``: the share host Tregs leave, :func:`treg_competition`,
    Bachanova 2014: competition for IL-2, not IL-15): division rises by ``il2.proliferation_max * f2``,
    homeostatic death falls by ``1 - il2.survival_effect * f2``. Exogenous IL-15 (rhIL-15, N-803:
    :func:`il15_exogenous`) drives division through the IL-15 dose-response (:func:`nk_proliferation`)
    and lowers death by ``1 - il15.exo_survival_effect * fe``, ``fe = x / (x + nk.il15_ec50)``. The
    multiplier of ``nk.death_rate`` includes the product's own factor (``donor_death_factor``).
    """
    il2 = u[U_IL2]
    f2 = treg_competition(kp, y) * il2 / (il2 + kp[KP.donor_il2_ec50]) if il2 > 0.0 else 0.0
    xe = il15_exogenous(kp, y, u)
    fe = xe / (xe + kp[KP.nk_il15_ec50]) if xe > 0.0 else 0.0
    prolif = kp[KP.il2_proliferation_max] * f2
    death = (kp[KP.donor_death_factor] * (1.0 - kp[KP.il2_survival_effect] * f2)
             * (1.0 - kp[KP.il15_exo_survival_effect] * fe))
    support = 1.0 - (1.0 - f2) * (1.0 - fe)
    return prolif, death, support


@njit(**LEAF_JIT)
def _primed_t_factor(kp, t_rel):
    """``(T/T0)^e`` of the primed rejection (1 for ``e`` = 0; 0 without host T)."""
    e = kp[KP.allo_primed_t_exponent]
    return 1.0 if e == 0.0 else (t_rel ** e if t_rel > 0.0 else 0.0)


@njit(**LEAF_JIT)
def _rejection_boost(kp, x_exo):
    """Factor on the primed rejection from exogenous IL-15: ``1 + boost x / (x + host.t_il15_ec50)``."""
    return 1.0 + kp[KP.allo_il15_rejection_boost] * x_exo / (x_exo + kp[KP.host_t_il15_ec50]) if x_exo > 0.0 else 1.0


@njit(**LEAF_JIT)
def donor_nk_rejection(kp, host_t, primed, x_exo):
    """Rejection rate (day-1) of one donor's NK: ``rejection_rate T/T0 + primed_rejection_rate primed (T/T0)^e B``.

    The first term is the unprimed (innate and naive T-cell) rejection, proportional to the host
    T count; the second is the primed anti-donor response, which expands clonally from the
    surviving T-cell pool and so depends on it less than in proportion: ``e`` =
    ``allo.primed_t_exponent`` (0: independent of the T count; 1: proportional to it).
    ``B = 1 + allo.il15_rejection_boost x / (x + host.t_il15_ec50)``: exogenous IL-15 (``x_exo``,
    :func:`il15_exogenous`) speeds the primed T cells' killing of donor NK (Berrien-Elliott 2022).
    0 for a host that tolerates the donor (``kp[KP.allo_rejection_enabled]`` = 0: ``protocol.host_tolerant``).
    """
    if kp[KP.allo_rejection_enabled] == 0.0:  # a tolerant host (protocol.host_tolerant)
        return 0.0
    t_rel = host_t / kp[KP.host_t_baseline] if kp[KP.host_t_baseline] > 0 else 0.0
    return (kp[KP.patient_nk_rejection_rate] * t_rel
            + kp[KP.patient_primed_rejection_rate] * primed * _primed_t_factor(kp, t_rel) * _rejection_boost(kp, x_exo))


@njit(**LEAF_JIT)
def il15_consumers(kp, y, marrow_donor):
    """IL-15 consumers relative to baseline: (host NK + host T + Tregs + w * all donor NK) / (NK0 + T0 + R0).

    Host blood counts stand for their whole-body pools; donor NK (blood, other tissues and
    ``marrow_donor``, whole body) enter on the same scale through ``donor_il15_consumption``.
    Tregs consume like any host lymphocyte (weight 1; an assumption).
    """
    donor = marrow_donor
    for d in range(int(kp[KP.n_donors])):
        donor += y[Y.donor_nk_blood + DONOR_STRIDE * d] + y[Y.donor_nk_tissue + DONOR_STRIDE * d]
    base = _il15_consumer_base(kp)
    return ((y[Y.host_nk] + y[Y.host_t] + y[Y.host_treg] + kp[KP.donor_il15_consumption] * donor) / base
            if base > 0 else 0.0)


@njit(**LEAF_JIT)
def _il15_consumer_base(kp):
    """The host lymphocytes per uL at baseline that consume IL-15: NK0 + T0 + R0."""
    return kp[KP.host_nk_baseline] + kp[KP.host_t_baseline] + kp[KP.host_treg_baseline]


@njit(**LEAF_JIT)
def _gompertz(rate, base, x):
    """Gompertz regrowth ``rate * x * ln(base / x)`` toward ``base`` (0 without a baseline)."""
    return rate * x * math.log(base / x) if base > 0 else 0.0


@njit(**LEAF_JIT)
def _gompertz_slope(rate, base, x):
    """d/dx of :func:`_gompertz`: ``rate * (ln(base / x) - 1)``."""
    return rate * (math.log(base / x) - 1.0) if base > 0 else 0.0


@njit(**LEAF_JIT)
def treg_il2_growth(kp, u):
    """IL-2-driven expansion of host Tregs (day-1): ``treg.il2_proliferation_max * C2 / (C2 + treg.il2_ec50)``."""
    il2 = u[U_IL2]
    return kp[KP.treg_il2_proliferation_max] * il2 / (il2 + kp[KP.treg_il2_ec50]) if il2 > 0.0 else 0.0


@njit(**LEAF_JIT)
def host_il15_growth(kp, x_exo):
    """Growth (day-1) of host NK and host T under exogenous IL-15 ``x_exo`` (rhIL-15, N-803): an Emax each.

    Only the exogenous signal: the endogenous rise after lymphodepletion is in the calibrated
    Gompertz recovery. Tregs have no IL-15 term (Romee 2018).
    """
    if x_exo <= 0.0:
        return 0.0, 0.0
    return (kp[KP.host_nk_il15_proliferation_max] * x_exo / (x_exo + kp[KP.nk_il15_ec50]),
            kp[KP.host_t_il15_proliferation_max] * x_exo / (x_exo + kp[KP.host_t_il15_ec50]))


@njit(**LEAF_JIT)
def blood_rhs(kp, y, u, marrow_donor, primed, out):
    """Right-hand side of the blood ODEs (per day) at state ``y`` and inputs ``u`` (:func:`pk_inputs`).

    ``y`` and ``out`` are indexed by ``Y`` (:data:`nksim.quantities.BLOOD_STATE`), donor ``d`` at
    ``+ DONOR_STRIDE * d``. ``marrow_donor``: donor NK in the marrow (whole body, held fixed over
    the step); ``primed[d]``: the host's primed response to donor ``d``. Host NK, T and Tregs take
    each drug's reference hazard times their own sensitivity (:func:`lineage_hazards`); donor NK take
    the reference hazards unscaled, as marrow cells do. Tregs regrow (Gompertz), expand under IL-2
    and are killed by IL2DT; host NK and T grow under exogenous IL-15; exogenous rhIL-15 is absorbed
    from its depot, cleared renally and consumed by lymphocytes like endogenous IL-15.
    """
    hnk = max(y[Y.host_nk], 1e-12)
    ht = max(y[Y.host_t], 1e-12)
    hr = max(y[Y.host_treg], 1e-12)
    il = y[Y.il15]
    h_nk, h_t, h_r = lineage_hazards(kp, u)
    hazard = u[U_HF] + u[U_HC]
    xe = il15_exogenous(kp, y, u)
    g_nk, g_t = host_il15_growth(kp, xe)
    sup_prolif, sup_death, _ = cytokine_support(kp, y, u)
    out[Y.host_nk] = _gompertz(kp[KP.patient_host_nk_recovery_rate], kp[KP.host_nk_baseline], hnk) + (g_nk - h_nk) * hnk
    out[Y.host_t] = _gompertz(kp[KP.patient_host_t_recovery_rate], kp[KP.host_t_baseline], ht) + (g_t - h_t) * ht
    out[Y.host_treg] = (_gompertz(kp[KP.treg_recovery_rate], kp[KP.host_treg_baseline], hr)
                        + (treg_il2_growth(kp, u) - h_r - u[U_DTX]) * hr)
    # IL-15: production balances removal at baseline (il = 1); removal = clearance + consumption by
    # every lymphocyte: host NK, T and Tregs (blood counts standing for their whole-body pools) and all
    # donor NK (blood, other tissues, marrow) converted to the same blood-count scale. Exogenous rhIL-15:
    # input from its s.c. depot, renal clearance and the same consumption.
    n_donors = int(kp[KP.n_donors])
    tau = kp[KP.il15_turnover_rate]
    k_clear = tau / kp[KP.il15_max_fold]
    k_cons = tau - k_clear
    lrel = il15_consumers(kp, y, marrow_donor)
    out[Y.il15] = tau * kp[KP.patient_il15_production] - (k_clear + k_cons * lrel) * il
    out[Y.il15_exo] = u[U_RH_IN] - (kp[KP.rhil15_elimination_rate] + k_cons * lrel) * y[Y.il15_exo]
    # donor NK outside the marrow: division - death - rejection - drug, and tissue exchange
    grow = nk_division_rate(kp, il, xe, sup_prolif) - kp[KP.nk_death_rate] * sup_death - hazard
    up = kp[KP.donor_tissue_uptake_rate]
    back = kp[KP.donor_tissue_return_rate]
    for d in range(n_donors):
        ib = Y.donor_nk_blood + DONOR_STRIDE * d
        it = Y.donor_nk_tissue + DONOR_STRIDE * d
        net = grow - donor_nk_rejection(kp, y[Y.host_t], primed[d], xe)
        out[ib] = net * y[ib] - up * y[ib] + back * y[it]
        out[it] = net * y[it] + up * y[ib] - back * y[it]


@njit(**LEAF_JIT)
def blood_jacobian(kp, y, u, marrow_donor, primed, jac):
    """Jacobian ``d blood_rhs / d y`` (per day) at state ``y``, with the inputs held (as :func:`blood_rhs`).

    Written out from :func:`blood_rhs` term by term (``tests/test_quiet_days.py`` checks it
    against finite differences); a host count at its floor (1e-12) has no derivative.
    """
    n = y.shape[0]
    for i in range(n):
        for j in range(n):
            jac[i, j] = 0.0
    h_nk, h_t, h_r = lineage_hazards(kp, u)
    hazard = u[U_HF] + u[U_HC]
    xe = il15_exogenous(kp, y, u)
    g_nk, g_t = host_il15_growth(kp, xe)
    ec_nk = kp[KP.nk_il15_ec50]
    ec_t = kp[KP.host_t_il15_ec50]
    dfe_nk = ec_nk / ((xe + ec_nk) * (xe + ec_nk))  # d/dx of x / (x + EC50) (x = xe >= 0)
    dfe_t = ec_t / ((xe + ec_t) * (xe + ec_t))
    fe_nk = xe / (xe + ec_nk)
    sup_prolif, sup_death, _ = cytokine_support(kp, y, u)
    hnk = max(y[Y.host_nk], 1e-12)
    ht = max(y[Y.host_t], 1e-12)
    if y[Y.host_nk] > 1e-12:
        jac[Y.host_nk, Y.host_nk] = (_gompertz_slope(kp[KP.patient_host_nk_recovery_rate], kp[KP.host_nk_baseline],
                                                     y[Y.host_nk]) + g_nk - h_nk)
    if y[Y.host_t] > 1e-12:
        jac[Y.host_t, Y.host_t] = (_gompertz_slope(kp[KP.patient_host_t_recovery_rate], kp[KP.host_t_baseline],
                                                   y[Y.host_t]) + g_t - h_t)
    jac[Y.host_nk, Y.il15_exo] = kp[KP.host_nk_il15_proliferation_max] * dfe_nk * hnk
    jac[Y.host_t, Y.il15_exo] = kp[KP.host_t_il15_proliferation_max] * dfe_t * ht
    if y[Y.host_treg] > 1e-12:
        jac[Y.host_treg, Y.host_treg] = (_gompertz_slope(kp[KP.treg_recovery_rate], kp[KP.host_treg_baseline],
                                                         y[Y.host_treg]) + treg_il2_growth(kp, u) - h_r - u[U_DTX])
    n_donors = int(kp[KP.n_donors])
    il = y[Y.il15]
    tau = kp[KP.il15_turnover_rate]
    k_clear = tau / kp[KP.il15_max_fold]
    k_cons = tau - k_clear
    base = _il15_consumer_base(kp)
    lrel = il15_consumers(kp, y, marrow_donor)
    jac[Y.il15, Y.il15] = -(k_clear + k_cons * lrel)
    jac[Y.il15_exo, Y.il15_exo] = -(kp[KP.rhil15_elimination_rate] + k_cons * lrel)
    if base > 0:
        for row, level in ((Y.il15, il), (Y.il15_exo, y[Y.il15_exo])):
            per = -k_cons * level / base
            jac[row, Y.host_nk] = per
            jac[row, Y.host_t] = per
            jac[row, Y.host_treg] = per
            for d in range(n_donors):
                jac[row, Y.donor_nk_blood + DONOR_STRIDE * d] = per * kp[KP.donor_il15_consumption]
                jac[row, Y.donor_nk_tissue + DONOR_STRIDE * d] = per * kp[KP.donor_il15_consumption]
    # donor NK: division (through endogenous and exogenous IL-15 and the Tregs' share of IL-2, below its cap) -
    # death (through the Tregs' share of IL-2 and exogenous IL-15) - rejection (through host T and exogenous
    # IL-15) - drug, exchange
    grow = nk_division_rate(kp, il, xe, sup_prolif) - kp[KP.nk_death_rate] * sup_death - hazard
    below_cap = nk_proliferation(kp, il, xe) + sup_prolif < kp[KP.nk_max_division_rate]
    x_tot = max(il - 1.0, 0.0) + xe
    ddiv_dx = 0.0  # d division / d (IL-15 signal), below the cap
    if below_cap:
        ddiv_dx = kp[KP.patient_nk_il15_proliferation_max] * ec_nk / ((x_tot + ec_nk) * (x_tot + ec_nk))
    ddiv_dil = ddiv_dx if il > 1.0 else 0.0
    se = kp[KP.il15_exo_survival_effect]
    il2 = u[U_IL2]
    f2 = treg_competition(kp, y) * il2 / (il2 + kp[KP.donor_il2_ec50]) if il2 > 0.0 else 0.0
    # exogenous IL-15: division through the signal, death through 1 - se fe
    dgrow_dx = ddiv_dx + kp[KP.nk_death_rate] * kp[KP.donor_death_factor] * (
        1.0 - kp[KP.il2_survival_effect] * f2) * se * dfe_nk
    # Treg competition phi = 1 / (1 + R / R_half) scales the IL-2 occupancy f2 of cytokine_support
    dgrow_dr = 0.0
    if il2 > 0.0:
        r_half = kp[KP.treg_nk_half_suppression]
        q = 1.0 + y[Y.host_treg] / r_half
        dphi_dr = -1.0 / (r_half * q * q)
        f2_raw = il2 / (il2 + kp[KP.donor_il2_ec50])
        dsd_dr = kp[KP.donor_death_factor] * (-kp[KP.il2_survival_effect] * f2_raw * dphi_dr) * (1.0 - se * fe_nk)
        dgrow_dr = -kp[KP.nk_death_rate] * dsd_dr
        if below_cap:
            dgrow_dr += kp[KP.il2_proliferation_max] * f2_raw * dphi_dr
    t_base = kp[KP.host_t_baseline]
    enabled = kp[KP.allo_rejection_enabled] != 0.0
    boost = _rejection_boost(kp, xe)
    up = kp[KP.donor_tissue_uptake_rate]
    back = kp[KP.donor_tissue_return_rate]
    for d in range(n_donors):
        ib = Y.donor_nk_blood + DONOR_STRIDE * d
        it = Y.donor_nk_tissue + DONOR_STRIDE * d
        net = grow - donor_nk_rejection(kp, y[Y.host_t], primed[d], xe)
        drej_dt = 0.0
        drej_dx = 0.0
        if t_base > 0 and enabled:
            t_rel = y[Y.host_t] / t_base
            e = kp[KP.allo_primed_t_exponent]
            drej_dt = kp[KP.patient_nk_rejection_rate] / t_base
            primed_rate = kp[KP.patient_primed_rejection_rate] * primed[d]
            if e == 1.0:
                drej_dt += primed_rate * boost / t_base
            elif e > 0.0 and t_rel > 0.0:
                drej_dt += primed_rate * boost * e * t_rel ** (e - 1.0) / t_base
            drej_dx = primed_rate * _primed_t_factor(kp, t_rel) * kp[KP.allo_il15_rejection_boost] * dfe_t
        jac[ib, ib] = net - up
        jac[ib, it] = back
        jac[it, it] = net - back
        jac[it, ib] = up
        for j, slope in ((Y.il15, ddiv_dil), (Y.host_t, -drej_dt), (Y.host_treg, dgrow_dr),
                         (Y.il15_exo, dgrow_dx - drej_dx)):
            jac[ib, j] = slope * y[ib]
            jac[it, j] = slope * y[it]


@njit(**LEAF_JIT)
def _rk4_substep(kp, y, dt, u0, um, u1, marrow_donor, primed, k1, k2, k3, k4, tmp):
    n = y.shape[0]
    blood_rhs(kp, y, u0, marrow_donor, primed, k1)
    for i in range(n):
        tmp[i] = y[i] + 0.5 * dt * k1[i]
    blood_rhs(kp, tmp, um, marrow_donor, primed, k2)
    for i in range(n):
        tmp[i] = y[i] + 0.5 * dt * k2[i]
    blood_rhs(kp, tmp, um, marrow_donor, primed, k3)
    for i in range(n):
        tmp[i] = y[i] + dt * k3[i]
    blood_rhs(kp, tmp, u1, marrow_donor, primed, k4)
    for i in range(n):
        y[i] = y[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        if y[i] < 0.0:
            y[i] = 0.0


@njit(**LEAF_JIT)
def blood_stiffness(kp, y, u, marrow_donor, primed):
    """Upper bound (day-1) on the fastest decay rate of the blood ODEs at state ``y`` and inputs ``u``.

    Every term grows with every input, so ``u`` may be the componentwise largest inputs over a step.
    """
    n_donors = int(kp[KP.n_donors])
    tau = kp[KP.il15_turnover_rate]
    lrel = il15_consumers(kp, y, marrow_donor)
    k_cons = tau * (1.0 - 1.0 / kp[KP.il15_max_fold])
    lam = tau / kp[KP.il15_max_fold] + k_cons * lrel
    lam_exo = kp[KP.rhil15_elimination_rate] + k_cons * lrel
    if lam_exo > lam:
        lam = lam_exo
    h_nk, h_t, h_r = lineage_hazards(kp, u)
    xe = il15_exogenous(kp, y, u)
    g_nk, g_t = host_il15_growth(kp, xe)
    for j in (Y.host_nk, Y.host_t, Y.host_treg):
        if j == Y.host_nk:
            l0 = kp[KP.host_nk_baseline]
            g = kp[KP.patient_host_nk_recovery_rate]
            h = h_nk + g_nk
        elif j == Y.host_t:
            l0 = kp[KP.host_t_baseline]
            g = kp[KP.patient_host_t_recovery_rate]
            h = h_t + g_t
        else:
            l0 = kp[KP.host_treg_baseline]
            g = kp[KP.treg_recovery_rate]
            h = h_r + u[U_DTX] + treg_il2_growth(kp, u)
        if y[j] > 0.0:
            rate = (g * (abs(math.log(l0 / y[j])) + 1.0) if l0 > 0.0 else 0.0) + h
            if rate > lam:
                lam = rate
    rej = 0.0
    for d in range(n_donors):
        r = donor_nk_rejection(kp, y[Y.host_t], primed[d], xe)
        if r > rej:
            rej = r
    sup_prolif = cytokine_support(kp, y, u)[0]
    nk = (nk_division_rate(kp, y[Y.il15], xe, sup_prolif) + kp[KP.nk_death_rate] * max(kp[KP.donor_death_factor], 1.0)
          + rej + u[U_HF] + u[U_HC] + kp[KP.donor_tissue_uptake_rate] + kp[KP.donor_tissue_return_rate])
    if nk > lam:
        lam = nk
    return lam


@njit(**LEAF_JIT)
def rk4_blood(kp, y, dt, u0, um, u1, marrow_donor, primed, k1, k2, k3, k4, tmp, ua, ub, uc):
    """Advance the blood ODEs by ``dt`` days with RK4; inputs given at the step's start, middle and end.

    The step is split into ``n`` equal RK4 sub-steps with ``n * (fastest rate) * sub-step <= 1``
    (RK4 is stable up to about 2.8), so any ``numerics.dt`` the schema allows is stable; each input
    inside the step is the quadratic through its values in ``u0, um, u1``; marrow donor NK and priming
    are held at their values for the step. With the default dt = 1 h, n = 1. ``ua``, ``ub``, ``uc``
    (length :data:`N_U`) are scratch arrays.
    """
    for i in range(u0.shape[0]):
        ua[i] = max(u0[i], max(um[i], u1[i]))
    lam = blood_stiffness(kp, y, ua, marrow_donor, primed)
    n_sub = int(math.ceil(lam * dt))
    if n_sub < 1:
        n_sub = 1
    if n_sub == 1:
        _rk4_substep(kp, y, dt, u0, um, u1, marrow_donor, primed, k1, k2, k3, k4, tmp)
        return
    hs = dt / n_sub
    for k in range(n_sub):
        # quadratic (Lagrange) interpolation of every input at the sub-step's start, middle, end
        for i in range(u0.shape[0]):
            if u0[i] == 0.0 and um[i] == 0.0 and u1[i] == 0.0:  # an absent input (no IL-2, ...): 0 throughout
                ua[i] = 0.0
                ub[i] = 0.0
                uc[i] = 0.0
                continue
            ua[i] = _hazard_at(k / n_sub, u0[i], um[i], u1[i])
            ub[i] = _hazard_at((k + 0.5) / n_sub, u0[i], um[i], u1[i])
            uc[i] = _hazard_at((k + 1.0) / n_sub, u0[i], um[i], u1[i])
        _rk4_substep(kp, y, hs, ua, ub, uc, marrow_donor, primed, k1, k2, k3, k4, tmp)


@njit(**LEAF_JIT)
def _hazard_at(s, h0, hmid, h1):
    """Quadratic through (0, h0), (1/2, hmid), (1, h1) at fraction ``s`` of the step (>= 0)."""
    v = h0 * (2.0 * s - 1.0) * (s - 1.0) + hmid * 4.0 * s * (1.0 - s) + h1 * s * (2.0 * s - 1.0)
    return v if v > 0.0 else 0.0


# --------------------------------------------------------------------------- quiet days: Rosenbrock 2(3)
#: Relative tolerance of the quiet-day integrator for host NK, host T and IL-15 (numerical choice: within 5e-5
#: of a fine RK4 over months, ``tests/test_quiet_days.py``; benchmarks/README.md, "Quiet days").
QUIET_RTOL = 1e-5
#: Relative tolerance for the donor NK pools outside the marrow (numerical choice: on a quiet day a pool holds
#: less than one region-equivalent agent, whose homing or egress moves it by 100 %; 0.1 % is far below that).
QUIET_POOL_RTOL = 1e-3
#: A day is quiet only when the drug kill hazard on lymphocytes is below this (day-1) at its start: the fast
#: transients right after Flu/Cy are integrated step by step.
QUIET_MAX_HAZARD = 0.01
#: A day is quiet only when rhIL-15 (in plasma, and in its s.c. depot in the same fold units) is below this (fold of
#: the baseline IL-15 concentration) at its start: its fast clearance (about 1 h) would make the quiet-day integrator
#: take more steps than the step-by-step one (0.6.0). N-803 (hours to days) needs no such bound.
QUIET_MAX_RHIL15 = 0.01
#: Rows of the work array of :func:`quiet_day` (each of the blood state's length, which is at least :data:`N_U`):
#: stages, the inputs ``u`` of the latest right-hand side and those at the current step's start with its priming.
_F0, _F1, _F2, _K1, _K2, _K3, _YN, _TMP, _DFDT, _ERR, _U, _U_S, _PRIMED_S = range(13)
N_WORK = 13
_D = 1.0 / (2.0 + math.sqrt(2.0))
_E32 = 6.0 + math.sqrt(2.0)


@njit(**LEAF_JIT)
def hazard_integral(kp, flu, cy, length):
    """Integral (dimensionless) of the drug kill hazard over ``length`` days from amounts ``flu``, ``cy`` (mg).

    Composite Simpson with 8 intervals over the exact exponential decay of both drugs (used on
    quiet days, where the hazard is below :data:`QUIET_MAX_HAZARD`).
    """
    n = 8
    h = length / n
    kf = kp[KP.flu_elimination_rate]
    kc = kp[KP.cy_elimination_rate]
    acc = 0.0
    for i in range(n + 1):
        w = 1.0 if i == 0 or i == n else (4.0 if i % 2 == 1 else 2.0)
        acc += w * drug_hazard(kp, flu * math.exp(-kf * i * h), cy * math.exp(-kc * i * h))
    return acc * h / 3.0


@njit(**LEAF_JIT)
def cy_exposure(kp, cy, length):
    """Integral of the plasma cyclophosphamide concentration (mg day L-1) over ``length`` days from amount ``cy`` (mg).

    Exact for the first-order elimination: ``cy / V (1 - exp(-k length)) / k``.
    """
    if cy <= 0.0:
        return 0.0
    k = kp[KP.cy_elimination_rate]
    return cy / kp[KP.drugs_cy_volume] * -math.expm1(-k * length) / k


@njit(**ENGINE_JIT)
def quiet_tolerances(kp, n_y):
    """Absolute and relative tolerances ``(atol, rtol)`` of the quiet-day integrator, per blood component.

    Host NK, T and Tregs: 1e-6 uL-1 and :data:`QUIET_RTOL`; IL-15: 1e-9 (relative to baseline) and
    :data:`QUIET_RTOL`; exogenous rhIL-15: 1 % of :data:`QUIET_MAX_RHIL15` (fold units: a quiet day has less than
    that) and :data:`QUIET_RTOL`; donor NK pools: 0.01 cells (whole body: below a cell a pool is empty in
    all but name) and :data:`QUIET_POOL_RTOL`.
    """
    atol = np.full(n_y, 1e-9)
    rtol = np.full(n_y, QUIET_RTOL)
    atol[Y.host_nk] = 1e-6
    atol[Y.host_t] = 1e-6
    atol[Y.host_treg] = 1e-6
    atol[Y.il15_exo] = 1e-2 * QUIET_MAX_RHIL15  # below the quiet bound rhIL-15 is negligible (fold units)
    for d in range(int(kp[KP.n_donors])):
        for j in (Y.donor_nk_blood + DONOR_STRIDE * d, Y.donor_nk_tissue + DONOR_STRIDE * d):
            atol[j] = 1e-2
            rtol[j] = QUIET_POOL_RTOL
    return atol, rtol


@njit(**LEAF_JIT)
def quiet_inputs(kp, s, pk, first_exposure, primed, u):
    """The blood's inputs ``s`` days into a quiet day into ``u``; fills ``primed`` (per donor).

    The same analytic PK as the kernel's steps (:func:`pk_inputs`) from the PK state ``pk`` at
    the start of the day (``pk[PK_T0]``: that day, since the start of the simulation).
    """
    pk_inputs(kp, pk, s, u)
    for d in range(first_exposure.shape[0]):
        primed[d] = primed_fraction(kp, pk[PK_T0] + s - first_exposure[d])


@njit(**LEAF_JIT)
def _quiet_rhs(kp, y, s, pk, first_exposure, primed, u, out):
    quiet_inputs(kp, s, pk, first_exposure, primed, u)
    blood_rhs(kp, y, u, 0.0, primed, out)


@njit(**LEAF_JIT)
def _copy_inputs(u, primed, u_to, primed_to):
    """Copy the inputs ``u`` and the priming ``primed`` into ``u_to`` and ``primed_to``."""
    for i in range(u.shape[0]):
        u_to[i] = u[i]
    for d in range(primed.shape[0]):
        primed_to[d] = primed[d]


@njit(**LEAF_JIT)
def _lu_factor(a, piv):
    """LU decomposition with partial pivoting of the small square matrix ``a``, in place."""
    n = a.shape[0]
    for k in range(n):
        p = k
        big = abs(a[k, k])
        for i in range(k + 1, n):
            if abs(a[i, k]) > big:
                big = abs(a[i, k])
                p = i
        piv[k] = p
        if p != k:
            for j in range(n):
                tmp = a[k, j]
                a[k, j] = a[p, j]
                a[p, j] = tmp
        if a[k, k] == 0.0:
            continue  # singular column: the solve leaves that component as is (cannot happen for I - h d J, h small)
        for i in range(k + 1, n):
            a[i, k] /= a[k, k]
            f = a[i, k]
            if f != 0.0:
                for j in range(k + 1, n):
                    a[i, j] -= f * a[k, j]


@njit(**LEAF_JIT)
def _lu_solve(a, piv, b):
    """Solve ``A x = b`` in place in ``b`` with the factors of :func:`_lu_factor`."""
    n = a.shape[0]
    for k in range(n):
        p = piv[k]
        if p != k:
            tmp = b[k]
            b[k] = b[p]
            b[p] = tmp
    for i in range(n):
        acc = b[i]
        for j in range(i):
            acc -= a[i, j] * b[j]
        b[i] = acc
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, n):
            acc -= a[i, j] * b[j]
        b[i] = acc / a[i, i] if a[i, i] != 0.0 else acc


@njit(**LEAF_JIT)
def quiet_day(kp, y, length, pk, first_exposure, primed, h_first, rtol, atol, work, jac, wmat, piv):
    """Advance the blood state ``y`` (in place) over ``length`` days of a quiet day; returns ``(next step, steps)``.

    Rosenbrock 2(3) pair of Shampine & Reichelt (1997; MATLAB ``ode23s``): the second-order
    solution is kept, the third-order one estimates the local error, which must stay within
    ``atol[i] + rtol[i] * |y_i|`` for every component (max norm; :func:`quiet_tolerances`); the Jacobian is
    :func:`blood_jacobian` at each step, the time derivative a forward difference (the drug
    hazard, cytokines and priming depend on time). L-stable: the step follows the accuracy of the
    slow dynamics, not IL-15's fast relaxation. Components are kept non-negative. ``h_first``: the
    first step to try (the last accepted step of the previous quiet day); ``work``
    ((:data:`N_WORK`, n)), ``jac``, ``wmat`` ((n, n)) and ``piv`` (n) are scratch arrays.
    """
    n = y.shape[0]
    f0 = work[_F0]
    f1 = work[_F1]
    f2 = work[_F2]
    k1 = work[_K1]
    k2 = work[_K2]
    k3 = work[_K3]
    yn = work[_YN]
    tmp = work[_TMP]
    dfdt = work[_DFDT]
    u = work[_U, :N_U]
    u_s = work[_U_S, :N_U]
    n_d = first_exposure.shape[0]
    primed_s = work[_PRIMED_S, :n_d]
    s = 0.0
    h = h_first if h_first < length else length
    steps = 0
    _quiet_rhs(kp, y, s, pk, first_exposure, primed, u, f0)
    _copy_inputs(u, primed, u_s, primed_s)  # the inputs at s, kept for the Jacobian until the step is accepted
    while s < length:
        last = s + h >= length * (1.0 - 1e-12)
        if last:
            h = length - s
        # the Jacobian at every step (ode23s's stability and error estimate need the current one; one kept over a
        # day let the donor pools diverge), the time derivative by a forward difference
        blood_jacobian(kp, y, u_s, 0.0, primed_s, jac)
        dts = 1.5e-8 * max(s, 1.0)
        _quiet_rhs(kp, y, s + dts, pk, first_exposure, primed, u, tmp)
        for i in range(n):
            dfdt[i] = (tmp[i] - f0[i]) / dts
        hd = h * _D
        for i in range(n):
            for j in range(n):
                wmat[i, j] = -hd * jac[i, j]
            wmat[i, i] += 1.0
        _lu_factor(wmat, piv)
        for i in range(n):
            k1[i] = f0[i] + hd * dfdt[i]
        _lu_solve(wmat, piv, k1)
        for i in range(n):
            tmp[i] = y[i] + 0.5 * h * k1[i]
        _quiet_rhs(kp, tmp, s + 0.5 * h, pk, first_exposure, primed, u, f1)
        for i in range(n):
            k2[i] = f1[i] - k1[i]
        _lu_solve(wmat, piv, k2)
        for i in range(n):
            k2[i] += k1[i]
            yn[i] = y[i] + h * k2[i]
        _quiet_rhs(kp, yn, s + h, pk, first_exposure, primed, u, f2)
        for i in range(n):
            k3[i] = f2[i] - _E32 * (k2[i] - f1[i]) - 2.0 * (k1[i] - f0[i]) + hd * dfdt[i]
        _lu_solve(wmat, piv, k3)
        err = 0.0
        for i in range(n):
            e = abs(h / 6.0 * (k1[i] - 2.0 * k2[i] + k3[i])) / (atol[i] + rtol[i] * max(abs(y[i]), abs(yn[i])))
            if e > err:
                err = e
        steps += 1
        if err <= 1.0:
            s = length if last else s + h
            clipped = False
            for i in range(n):
                if yn[i] < 0.0:
                    yn[i] = 0.0
                    clipped = True
                y[i] = yn[i]
            if clipped:
                _quiet_rhs(kp, y, s, pk, first_exposure, primed, u, f0)
            else:
                for i in range(n):
                    f0[i] = f2[i]
            _copy_inputs(u, primed, u_s, primed_s)  # f2's inputs, at s + h: the new s
        fac = 5.0 if err == 0.0 else 0.8 * err ** (-1.0 / 3.0)
        fac = min(5.0, max(0.2, fac))
        if err <= 1.0 and last:
            return h * fac if h * fac < length else length, steps
        h *= fac
        if h < 1e-9 * length:
            raise RuntimeError("quiet_day: step size underflow in the blood integrator")
    return h, steps
