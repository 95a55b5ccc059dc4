"""Blood-only arithmetic for the expansion-size question of issue 24 (no engine code, no marrow lattice).

Re-implements, in plain NumPy, the deterministic blood ODEs of ``nksim/engine/kernel.py`` (``blood_rhs``,
``cytokine_support``, ``depot_step``, ``donor_nk_rejection``, ``drug_hazard``, ``primed_fraction``) with the
values of ``models/default.toml``, for one Bachanova-2014 cohort-1 patient (Hi-Cy/Flu, 9.6e6 NK/kg fresh,
IL-2 9 MIU s.c. every other day x 6). The marrow agents are replaced by a well-mixed marrow pool with the
same rates (homing 2/day, egress 0.4/day), which is what the agents do on average.

It answers: with which parameter does a high-expansion-capacity patient (an "expander": the upper tail of
``random_effects.nk_expansion_log_sd``) reach ~1000 donor NK/uL at day 14 instead of ~190?

Run:  python docs/evidence/expansion_limit.py        (pure NumPy, < 1 s)
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def load_default() -> dict[str, float]:
    """Every value of models/default.toml by key (``section.name``)."""
    data = tomllib.loads((ROOT / "models" / "default.toml").read_text())
    out = {}
    for section, table in data.items():
        if section == "meta":
            continue
        for name, entry in table.items():
            out[f"{section}.{name}"] = float(entry["value"])
    return out


@dataclass(frozen=True)
class Case:
    """One variant of the default model and the Bachanova cohort-1 protocol."""

    name: str
    z_expansion: float = 1.645  # standard-normal quantile of the patient's expansion capacity
    max_division: float | None = None  # None: the model's nk.max_division_rate
    donor_weight: float | None = None  # il15.donor_nk_weight
    host_nk_recovery: float | None = None
    host_t_sensitivity: float | None = None
    rejection_scale: float = 1.0  # multiplies both rejection terms (0 = tolerant host)
    il15_max_fold: float | None = None
    nk_dose_per_kg: float = 9.6e6
    il2_prolif_scale: float = 1.0
    treg_il2_share: float = 0.0  # fraction of IL-2 effect removed by host Tregs (sketch of the Treg module)
    primed_scale: float = 1.0  # multiplies the primed rejection term only
    tissue_return: float | None = None  # nk.tissue_return_rate (blood share at equilibrium = return/(uptake+return))
    il2_absorption_half_life: float | None = None  # h
    il2_ec50: float | None = None  # MIU in the central compartment
    il2_bioavailability: float = 1.0  # fraction of the s.c. dose reaching the central compartment
    il2_elimination_half_life: float | None = None  # h


def simulate(p: dict[str, float], case: Case, days: float = 28.0, dt: float = 1 / 24) -> dict[str, np.ndarray]:
    """Integrate the blood ODEs (RK4, hourly) from day -6 to ``days``; returns time series."""
    bw, bsa = 70.0, 1.8
    bv_ul = p["anatomy.blood_volume"] * bw * 1000.0
    ratio = p["anatomy.lymphocyte_body_to_blood_ratio"]
    w = p["il15.donor_nk_weight"] if case.donor_weight is None else case.donor_weight
    c_donor = w / (bv_ul * ratio)
    nk0, t0 = p["host.nk_baseline"], p["host.t_baseline"]
    r_nk = p["host.nk_recovery_rate"] if case.host_nk_recovery is None else case.host_nk_recovery
    r_t = p["host.t_recovery_rate"]
    s_nk = p["host.nk_drug_sensitivity"]
    s_t = p["host.t_drug_sensitivity"] if case.host_t_sensitivity is None else case.host_t_sensitivity
    tau = p["il15.turnover_rate"]
    M = p["il15.max_fold"] if case.il15_max_fold is None else case.il15_max_fold
    k_clear, k_cons = tau / M, tau - tau / M
    p15 = p["nk.il15_proliferation_max"] * math.exp(p["random_effects.nk_expansion_log_sd"] * case.z_expansion)
    ec50 = p["nk.il15_ec50"]
    cap = p["nk.max_division_rate"] if case.max_division is None else case.max_division
    prolif0, death0 = p["nk.proliferation_rate"], p["nk.death_rate"]
    up = p["nk.tissue_uptake_rate"]
    back = p["nk.tissue_return_rate"] if case.tissue_return is None else case.tissue_return
    home, egress = p["nk.homing_rate"], p["nk.egress_rate"]
    rej0, rejp, e = p["nk.rejection_rate"], p["allo.primed_rejection_rate"], p["allo.primed_t_exponent"]
    k_stage, n_stage = p["allo.priming_stages"] / p["allo.priming_delay"], int(p["allo.priming_stages"])
    ka2 = math.log(2) / ((p["il2.absorption_half_life"] if case.il2_absorption_half_life is None
                          else case.il2_absorption_half_life) / 24)
    ke2 = math.log(2) / ((p["il2.elimination_half_life"] if case.il2_elimination_half_life is None
                          else case.il2_elimination_half_life) / 24)
    il2_ec50 = p["il2.ec50"] if case.il2_ec50 is None else case.il2_ec50
    il2_pmax, il2_surv = ( p["il2.proliferation_max"] * case.il2_prolif_scale, p["il2.survival_effect"])
    kf = math.log(2) / (p["drugs.flu_half_life"] / 24)
    kc = math.log(2) / (p["drugs.cy_half_life"] / 24)

    # events (day since first NK infusion): Hi-Cy/Flu, NK day 0, IL-2 days 0..10 every other day
    flu_days = [-6, -5, -4, -3, -2]
    cy_days = [-5, -4]
    il2_days = [0, 2, 4, 6, 8, 10]
    start = -6.0
    n = int(round((days - start) / dt))
    t_axis = start + dt * np.arange(n + 1)

    def hazard(flu, cy):
        cf, cc = flu / p["drugs.flu_volume"], cy / p["drugs.cy_volume"]
        return (p["drugs.flu_emax"] * cf / (cf + p["drugs.flu_ec50"])
                + p["drugs.cy_emax"] * cc / (cc + p["drugs.cy_ec50"]))

    def primed(t):
        if t <= 0:
            return 0.0
        x = k_stage * t
        term, acc = 1.0, 1.0
        for i in range(1, n_stage):
            term *= x / i
            acc += term
        return 1.0 - math.exp(-x) * acc

    def rhs(y, h, sup_prolif, sup_death, pr):
        hnk, ht, il, b, ti, m = y
        hnk, ht = max(hnk, 1e-12), max(ht, 1e-12)
        out = np.empty(6)
        out[0] = r_nk * hnk * math.log(nk0 / hnk) - s_nk * h * hnk
        out[1] = r_t * ht * math.log(t0 / ht) - s_t * h * ht
        lrel = (hnk + ht + c_donor * (b + ti + m)) / (nk0 + t0)
        out[2] = tau - (k_clear + k_cons * lrel) * il
        x = max(il - 1.0, 0.0)
        div = min(cap, prolif0 + p15 * x / (x + ec50) + sup_prolif)
        t_rel = ht / t0
        rej = case.rejection_scale * (rej0 * t_rel + case.primed_scale * rejp * pr * t_rel ** e)
        net = div - death0 * sup_death - h - rej
        out[3] = net * b - up * b + back * ti - home * b + egress * m
        out[4] = net * ti + up * b - back * ti
        out[5] = net * m + home * b - egress * m
        return out

    y = np.array([nk0, t0, 1.0, 0.0, 0.0, 0.0])
    flu = cy = dep = cen = 0.0
    rec = np.zeros((n + 1, 6))
    rec_il2f = np.zeros(n + 1)
    rec[0] = y
    for k in range(n):
        t = t_axis[k]
        day = round(t, 6)
        if abs(day - round(day)) < 1e-9:
            d = int(round(day))
            if d in flu_days:
                flu += 25.0 * bsa
            if d in cy_days:
                cy += 60.0 * bw
            if d == 0:
                y[3] += case.nk_dose_per_kg * bw
            if d in il2_days:
                dep += 9.0 * case.il2_bioavailability
        h = hazard(flu * math.exp(-kf * dt / 2), cy * math.exp(-kc * dt / 2))
        # IL-2 at mid-step (exact depot -> central)
        ea, ee = math.exp(-ka2 * dt / 2), math.exp(-ke2 * dt / 2)
        cen_mid = cen * ee + dep * ka2 / (ke2 - ka2) * (ea - ee)
        f2 = cen_mid / (cen_mid + il2_ec50) if cen_mid > 0 else 0.0
        f2 *= (1.0 - case.treg_il2_share)
        sup_prolif, sup_death = il2_pmax * f2, 1.0 - il2_surv * f2
        pr = primed(t + dt / 2)
        k1 = rhs(y, h, sup_prolif, sup_death, pr)
        k2 = rhs(y + dt / 2 * k1, h, sup_prolif, sup_death, pr)
        k3 = rhs(y + dt / 2 * k2, h, sup_prolif, sup_death, pr)
        k4 = rhs(y + dt * k3, h, sup_prolif, sup_death, pr)
        y = np.maximum(y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), 0.0)
        ea, ee = math.exp(-ka2 * dt), math.exp(-ke2 * dt)
        cen = cen * ee + dep * ka2 / (ke2 - ka2) * (ea - ee)
        dep *= ea
        flu *= math.exp(-kf * dt)
        cy *= math.exp(-kc * dt)
        rec[k + 1] = y
        rec_il2f[k + 1] = f2
    return {"t": t_axis, "host_nk": rec[:, 0], "host_t": rec[:, 1], "il15": rec[:, 2],
            "donor_ul": rec[:, 3] / bv_ul, "donor_total": rec[:, 3] + rec[:, 4] + rec[:, 5], "il2_f": rec_il2f}


def summary(r: dict[str, np.ndarray]) -> dict[str, float]:
    """Day-14 and peak donor NK per uL (recorded at whole days >= 1), chimerism at the peak, IL-15, host counts."""
    t = r["t"]
    win = (t >= 1) & (t <= 28) & (abs(t - np.round(t)) < 1e-6)
    i_pk = np.argmax(np.where(win, r["donor_ul"], -1))
    i14 = np.argmin(abs(t - 14))
    i0 = np.argmin(abs(t - 0))
    chim = 100 * r["donor_ul"][i_pk] / (r["donor_ul"][i_pk] + r["host_nk"][i_pk] + r["host_t"][i_pk])
    return {"d14": r["donor_ul"][i14], "peak": r["donor_ul"][i_pk], "peak_day": t[i_pk], "chim_pk": chim,
            "il15_max": r["il15"].max(), "il15_d14": r["il15"][i14], "hostNK_d0": r["host_nk"][i0],
            "hostT_d0": r["host_t"][i0], "hostNK_d14": r["host_nk"][i14], "hostT_d14": r["host_t"][i14]}


def main() -> None:
    """Print the one-factor-at-a-time table of docs/evidence/mechanisms.md section G."""
    p = load_default()
    cases = [
        Case("median patient (z = 0)", z_expansion=0.0),
        Case("expander z = 1.28 (90th pct)", z_expansion=1.28),
        Case("expander z = 1.645 (95th pct)"),
        Case("z=1.645, division cap 2/day", max_division=2.0),
        Case("z=1.645, division cap 0.5/day", max_division=0.5),
        Case("z=1.645, donor IL-15 weight 1 (not 5)", donor_weight=1.0),
        Case("z=1.645, donor IL-15 weight 0", donor_weight=0.0),
        Case("z=1.645, host NK recovery 0.05/day", host_nk_recovery=0.05),
        Case("z=1.645, host T sensitivity 0.3 (shallower T depletion)", host_t_sensitivity=0.3),
        Case("z=1.645, no rejection (tolerant host)", rejection_scale=0.0),
        Case("z=1.645, weight 1 + no rejection", donor_weight=1.0, rejection_scale=0.0),
        Case("z=1.645, IL2DT-like: no Treg IL-2 competition, dose 26e6/kg", nk_dose_per_kg=26e6),
        Case("z=1.645, il15.max_fold 30", il15_max_fold=30.0),
        Case("z=1.645, primed rejection off (unprimed kept)", primed_scale=0.0),
        Case("z=1.645, blood share 10 % (tissue_return 5/day)", tissue_return=5.0),
        Case("z=1.645, IL-2 pmax x2.27 (1.5/day, prior top)", il2_prolif_scale=1.5 / 0.6604),
        Case("z=1.645, IL-2 absorption t1/2 12 h", il2_absorption_half_life=12.0),
        Case("z=1.645, IL-2 EC50 0.1 MIU", il2_ec50=0.1),
        Case("z=1.645, IL-2 EC50 0.1 + abs 12 h", il2_ec50=0.1, il2_absorption_half_life=12.0),
        Case("z=1.645, weight 1 + IL-2 EC50 0.1 + abs 12 h", donor_weight=1.0, il2_ec50=0.1,
             il2_absorption_half_life=12.0),
        Case("z=1.645, blood share 10 % + IL-2 EC50 0.1 + abs 12 h", tissue_return=5.0, il2_ec50=0.1,
             il2_absorption_half_life=12.0),
        Case("z=2.33 (99th pct)", z_expansion=2.33),
        # IL-2 PK from the sources (F 0.13-0.3, Tmax ~4 h, apparent t1/2 3.3 h; serum 20-110 IU/mL; central
        # volume ~14 L extracellular fluid): EC50 of the high-affinity receptor 25 pM ~ 6 IU/mL ~ 0.084 MIU in 14 L,
        # of the intermediate-affinity receptor 2 nM ~ 500 IU/mL ~ 7 MIU (Caligiuri 1990)
        Case("z=1.645, IL-2 F 0.3, abs 3.3 h, EC50 0.084 (high-affinity)", il2_bioavailability=0.3,
             il2_absorption_half_life=3.3, il2_ec50=0.084),
        Case("z=1.645, IL-2 F 0.3, abs 3.3 h, EC50 0.3", il2_bioavailability=0.3,
             il2_absorption_half_life=3.3, il2_ec50=0.3),
        Case("z=1.645, IL-2 F 0.3, abs 3.3 h, EC50 7 (intermediate)", il2_bioavailability=0.3,
             il2_absorption_half_life=3.3, il2_ec50=7.0),
        Case("z=1.645, IL-2 F 0.3, abs 8 h, EC50 0.084", il2_bioavailability=0.3,
             il2_absorption_half_life=8.0, il2_ec50=0.084),
        Case("z=0, IL-2 F 0.3, abs 8 h, EC50 0.084", z_expansion=0.0, il2_bioavailability=0.3,
             il2_absorption_half_life=8.0, il2_ec50=0.084),
        Case("z=1.645, IL-2 F 0.3, abs 8 h, EC50 0.084, Treg takes 50 % of IL-2", il2_bioavailability=0.3,
             il2_absorption_half_life=8.0, il2_ec50=0.084, treg_il2_share=0.5),
    ]
    hdr = (f"{'case':58s} {'d14/uL':>8s} {'peak/uL':>8s} {'day':>5s} {'chim%':>6s} {'IL15max':>8s} "
           f"{'IL15d14':>8s} {'NKd0':>6s} {'Td0':>6s} {'NKd14':>6s} {'Td14':>6s}")
    print(hdr)
    for c in cases:
        s = summary(simulate(p, c))
        print(f"{c.name:58s} {s['d14']:8.1f} {s['peak']:8.1f} {s['peak_day']:5.1f} {s['chim_pk']:6.1f} "
              f"{s['il15_max']:8.2f} {s['il15_d14']:8.2f} {s['hostNK_d0']:6.1f} {s['hostT_d0']:6.1f} "
              f"{s['hostNK_d14']:6.1f} {s['hostT_d14']:6.1f}")


def decompose(p: dict[str, float], case: Case, days=(1, 3, 5, 7, 9, 11, 14, 21)) -> None:
    """Print the donor-NK rate budget (per day) of one case at chosen days."""
    r = simulate(p, case)
    t = r["t"]
    p15 = p["nk.il15_proliferation_max"] * math.exp(p["random_effects.nk_expansion_log_sd"] * case.z_expansion)
    ec50 = p["nk.il15_ec50"]
    cap = p["nk.max_division_rate"] if case.max_division is None else case.max_division
    k_stage, n_stage = p["allo.priming_stages"] / p["allo.priming_delay"], int(p["allo.priming_stages"])
    print(f"\nrate budget, {case.name} (day^-1): IL-15 term = p15 x/(x+EC50), p15 = {p15:.3f}")
    print(f"{'day':>4s} {'IL15':>6s} {'il15div':>8s} {'il2div':>7s} {'div(capped)':>11s} {'rej_unpr':>8s} "
          f"{'rej_prim':>8s} {'net':>7s} {'donor/uL':>9s} {'hostNK':>7s} {'hostT':>6s} "
          f"{'donor share of IL-15 use':>24s}")
    for d in days:
        i = int(np.argmin(abs(t - d)))
        il = r["il15"][i]
        x = max(il - 1, 0)
        f2 = r["il2_f"][i]
        il2div = p["il2.proliferation_max"] * case.il2_prolif_scale * f2
        div = min(cap, p["nk.proliferation_rate"] + p15 * x / (x + ec50) + il2div)
        t_rel = r["host_t"][i] / p["host.t_baseline"]
        xs = k_stage * d
        acc, term = 1.0, 1.0
        for j in range(1, n_stage):
            term *= xs / j
            acc += term
        pr = 1 - math.exp(-xs) * acc
        rej_u = case.rejection_scale * p["nk.rejection_rate"] * t_rel
        rej_p = (case.rejection_scale * case.primed_scale * p["allo.primed_rejection_rate"] * pr
                 * t_rel ** p["allo.primed_t_exponent"])
        net = div - p["nk.death_rate"] * (1 - p["il2.survival_effect"] * f2) - rej_u - rej_p
        w = p["il15.donor_nk_weight"] if case.donor_weight is None else case.donor_weight
        bv = p["anatomy.blood_volume"] * 70 * 1000
        donor_eq = w * r["donor_total"][i] / (bv * p["anatomy.lymphocyte_body_to_blood_ratio"])
        share = donor_eq / (donor_eq + r["host_nk"][i] + r["host_t"][i])
        print(f"{d:4d} {il:6.2f} {p15 * x / (x + ec50):8.3f} {il2div:7.3f} {div:11.3f} {rej_u:8.3f} {rej_p:8.3f} "
              f"{net:7.3f} {r['donor_ul'][i]:9.1f} {r['host_nk'][i]:7.1f} {r['host_t'][i]:6.1f} {100 * share:23.0f}%")


if __name__ == "__main__":
    main()
    _p = load_default()
    decompose(_p, Case("expander z = 1.645 (defaults)"))
    decompose(_p, Case("z=1.645, IL-2 EC50 0.1 + abs 12 h", il2_ec50=0.1, il2_absorption_half_life=12.0))
    for capv in (1.0, 2.0):
        s = summary(simulate(_p, Case("", il2_ec50=0.1, il2_absorption_half_life=12.0, max_division=capv)))
        print(f"\nIL-2 EC50 0.1 + abs 12 h, cap {capv}/day: d14 {s['d14']:.0f}/uL, peak {s['peak']:.0f}/uL "
              f"day {s['peak_day']:.0f}")
