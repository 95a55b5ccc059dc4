"""Turn a ParameterSet, a protocol schedule and a patient's effects into kernel inputs.

All unit conversions happen here, once: the kernel works in days, um and cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import NksimInputError
from ..parameters import ParameterSet
from ..patients import PatientEffects
from ..protocol import EVENT_CODES, Event
from . import layout as L

HOURS_PER_DAY = 24.0
MIN_PER_DAY = 1440.0


@dataclass(frozen=True)
class Resolution:
    """Numerical resolution derived from the parameters."""

    side: int
    capacity: int  # cells per voxel
    steps_per_day: int
    marrow_every: int  # steps per marrow update

    @property
    def n_voxels(self) -> int:
        return self.side * self.side


def resolution(params: ParameterSet) -> Resolution:
    """Lattice side, voxel capacity and step counts; errors name the offending key."""
    src = params.origin
    side = int(params["lattice.side"])
    k = (params["lattice.voxel_side"] / params["lattice.cell_diameter"]) ** 2
    capacity = int(round(k))
    if capacity < 1 or capacity > 2**30:
        raise NksimInputError(
            f"voxel capacity (voxel_side / cell_diameter)^2 = {k:g} must be in [1, 2^30]",
            source=src, key="lattice.voxel_side")
    spd = HOURS_PER_DAY / params["numerics.dt"]
    if abs(spd - round(spd)) > 1e-9:
        raise NksimInputError(
            f"dt = {params['numerics.dt']:g} h must divide 24 h (e.g. 0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 24)",
            source=src, key="numerics.dt")
    every = params["numerics.marrow_step"] / params["numerics.dt"]
    if abs(every - round(every)) > 1e-9 or round(every) < 1:
        raise NksimInputError(
            f"marrow_step = {params['numerics.marrow_step']:g} h must be a positive multiple of dt = {params['numerics.dt']:g} h",
            source=src, key="numerics.marrow_step")
    return Resolution(side, capacity, int(round(spd)), int(round(every)))


def kernel_parameters(params: ParameterSet, eff: PatientEffects, start_day: float, end_day: float) -> np.ndarray:
    """The kernel parameter vector (layout in :mod:`nksim.engine.layout`)."""
    res = resolution(params)
    kp = np.zeros(L.N_P)
    kp[L.P_SIDE] = res.side
    kp[L.P_K] = res.capacity
    kp[L.P_DT] = 1.0 / res.steps_per_day
    kp[L.P_MARROW_EVERY] = res.marrow_every
    kp[L.P_STEPS_PER_DAY] = res.steps_per_day
    kp[L.P_N_STEPS] = int(round((end_day - start_day) * res.steps_per_day))
    kp[L.P_START_DAY] = start_day
    marrow_capacity = params["anatomy.marrow_cells_per_kg"] * eff.body_weight / (params["anatomy.reference_cellularity"] / 100.0)
    kp[L.P_SCALE] = marrow_capacity / (res.n_voxels * res.capacity)
    kp[L.P_BLOOD_UL] = params["anatomy.blood_volume"] * eff.body_weight * 1000.0
    kp[L.P_CELLULARITY] = params["lattice.marrow_cellularity"] / 100.0
    kp[L.P_BLAST_FRAC0] = eff.baseline_blast_pct / 100.0
    kp[L.P_SUS_FRAC0] = eff.susceptible_fraction
    birth = params["blasts.growth_fraction"] * math.log(2.0) / (params["blasts.cycle_time"] / HOURS_PER_DAY)
    # Division rate is at least the net growth rate so that the death rate is never negative.
    kp[L.P_B_BIRTH] = max(birth, eff.blast_net_growth_rate)
    kp[L.P_B_NET] = eff.blast_net_growth_rate
    kp[L.P_B_SPREAD] = params["blasts.spread_fraction"]
    kp[L.P_B_SWITCH] = params["blasts.switch_probability"]
    kp[L.P_B_DRUG] = params["blasts.drug_sensitivity"]
    kp[L.P_N_BIRTH] = max(params["normal.division_rate"], params["normal.recovery_rate"])
    kp[L.P_N_NET] = params["normal.recovery_rate"]
    kp[L.P_N_TARGET] = params["lattice.marrow_cellularity"] / 100.0
    kp[L.P_N_SPREAD] = params["normal.spread_fraction"]
    kp[L.P_N_DRUG] = params["normal.drug_sensitivity"]
    diffusivity = params["nk.speed"] ** 2 * params["nk.persistence_time"] / 2.0 * MIN_PER_DAY  # um2 day-1
    kp[L.P_NK_HOP] = 4.0 * diffusivity / params["lattice.voxel_side"] ** 2
    kp[L.P_NK_CONTACT] = HOURS_PER_DAY / params["nk.engagement_interval"]
    kp[L.P_NK_PKILL] = params["nk.kill_probability"]
    kp[L.P_NK_REFRACT] = params["nk.refractory_time"] / HOURS_PER_DAY
    kp[L.P_NK_MAXKILLS] = params["nk.max_kills"]
    kp[L.P_NK_COMPETENT] = params["nk.competent_fraction"]
    kp[L.P_NK_PROLIF] = params["nk.proliferation_rate"]
    kp[L.P_NK_IL15MAX] = params["nk.il15_proliferation_max"]
    kp[L.P_NK_IL15EC50] = params["nk.il15_ec50"]
    kp[L.P_NK_DEATH] = params["nk.death_rate"]
    kp[L.P_NK_REJECT] = params["nk.rejection_rate"]
    kp[L.P_NK_HOME] = params["nk.homing_rate"]
    kp[L.P_NK_EGRESS] = params["nk.egress_rate"]
    kp[L.P_NK_TISSUE_IN] = params["nk.tissue_uptake_rate"]
    kp[L.P_NK_TISSUE_OUT] = params["nk.tissue_return_rate"]
    kp[L.P_HNK0] = params["host.nk_baseline"]
    kp[L.P_HT0] = params["host.t_baseline"]
    kp[L.P_HREC] = eff.host_recovery_rate
    kp[L.P_IL_MAXFOLD] = params["il15.max_fold"]
    kp[L.P_IL_TURNOVER] = params["il15.turnover_rate"]
    kp[L.P_IL_NKW] = params["il15.donor_nk_weight"]
    kp[L.P_FLU_K] = math.log(2.0) / (params["drugs.flu_half_life"] / HOURS_PER_DAY)
    kp[L.P_FLU_V] = params["drugs.flu_volume"]
    kp[L.P_FLU_EC50] = params["drugs.flu_ec50"]
    kp[L.P_FLU_EMAX] = params["drugs.flu_emax"]
    kp[L.P_CY_K] = math.log(2.0) / (params["drugs.cy_half_life"] / HOURS_PER_DAY)
    kp[L.P_CY_V] = params["drugs.cy_volume"]
    kp[L.P_CY_EC50] = params["drugs.cy_ec50"]
    kp[L.P_CY_EMAX] = params["drugs.cy_emax"]
    kp[L.P_STOP_ENABLED] = 0.0
    kp[L.P_PD_REL] = params["response.pd_relative_rise"] / 100.0
    kp[L.P_PD_ABS] = params["response.pd_absolute_rise"]
    kp[L.P_PD_BELOW] = params["response.pd_absolute_below"]
    kp[L.P_CR_PCT] = params["response.cr_blast_pct"]
    kp[L.P_PR_PCT] = params["response.pr_blast_pct"]
    kp[L.P_PR_FALL] = params["response.pr_min_fall"] / 100.0
    return kp


def event_arrays(events: tuple[Event, ...], eff: PatientEffects, start_day: float, steps_per_day: int,
                 source: str = "<protocol>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events as (step index, kind code, amount) arrays; amounts in mg (drugs) or cells (NK)."""
    steps, kinds, amounts = [], [], []
    for e in sorted(events):
        s = (e.day - start_day) * steps_per_day
        if abs(s - round(s)) > 1e-6:
            raise NksimInputError(
                f"{e.kind} on day {e.day:g} does not fall on a time step (dt = {24 / steps_per_day:g} h)",
                source=source, key="events")
        if e.kind == "fludarabine":
            amount = e.dose * eff.body_surface_area  # mg m-2 * m2
        else:  # cyclophosphamide mg kg-1, nk_infusion kg-1
            amount = e.dose * eff.body_weight
        steps.append(int(round(s)))
        kinds.append(EVENT_CODES[e.kind])
        amounts.append(amount)
    return np.array(steps, dtype=np.int64), np.array(kinds, dtype=np.int64), np.array(amounts, dtype=np.float64)
