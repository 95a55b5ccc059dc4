"""Every quantity of the model, declared once.

This module is the single table that the rest of nksim reads:

* :data:`PARAMETERS` -- every key of a model file (``models/*.toml``): its unit, allowed
  range and whether it is an integer. ``kernel=True`` passes the value to the numba kernel
  unchanged, in a slot named after the key (``nk.kill_probability`` ->
  ``kp[KP.nk_kill_probability]``).
* :data:`DERIVED_INPUTS` -- kernel inputs computed from several parameters, the patient's
  random effects or the numerical resolution (unit conversions happen here, once).
* :data:`RECORD` -- the kernel's daily record (one column per variable), with the units,
  long name, short label, plot scale and what a dimensionless value counts.
* :data:`OBSERVABLES` -- variables computed from the record after the run (chimerism), by
  functions that the output Dataset and the calibration summaries both call.
* :data:`COUNTERS`, :data:`SNAPSHOT_LAYERS`, :data:`EVENT_KINDS`, :data:`BLOOD_STATE` --
  region event counters, lattice snapshot layers, protocol event kinds and the blood ODE
  state vector, each in kernel order.

:mod:`nksim.engine.layout` turns these tables into the named index tuples the kernel uses
(``KP``, ``R``, ``C``, ``S``, ``EV``, ``Y``); :mod:`nksim.output`, :mod:`nksim.plot`, the
Mesa reference (:mod:`nksim.mesa_ref`) and the calibration summaries take names, units and
labels from here. ``docs/architecture.md`` ("Adding a parameter") walks through an example.

Model units: time in days (``day``), lengths in micrometres (``um``), cell counts
dimensionless (``1``), blood concentrations per microlitre (``uL-1``); units are UDUNITS-2
strings. Allowed ranges are physical/numerical bounds, not priors: priors live in the
parameter files.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .parameters import ParameterSet
    from .patients import PatientEffects

HOURS_PER_DAY = 24.0
MIN_PER_DAY = 1440.0
INF = float("inf")


# ================================================================================ parameters
@dataclass(frozen=True)
class ParamSpec:
    """One key of a model file: canonical unit, inclusive bounds, integer flag, kernel use.

    ``kernel=True``: the kernel reads the value unchanged from slot :attr:`slot`.
    """

    key: str
    unit: str
    lo: float
    hi: float
    integer: bool = False
    kernel: bool = False

    @property
    def slot(self) -> str:
        """The kernel slot name of this key (``"nk.kill_probability"`` -> ``"nk_kill_probability"``)."""
        return self.key.replace(".", "_")


def _p(key: str, unit: str, lo: float, hi: float, *, integer: bool = False, kernel: bool = False) -> ParamSpec:
    return ParamSpec(key, unit, float(lo), float(hi), integer, kernel)


#: All model parameters (keys of a model file), grouped by TOML section.
PARAMETERS: dict[str, ParamSpec] = {
    s.key: s
    for s in [
        # --- patient anatomy -------------------------------------------------
        _p("anatomy.body_weight", "kg", 1, 300),
        _p("anatomy.body_surface_area", "m2", 0.2, 3.5),
        _p("anatomy.blood_volume", "mL kg-1", 30, 150),
        _p("anatomy.plasma_volume", "mL kg-1", 10, 100),
        _p("anatomy.marrow_cells_per_kg", "kg-1", 1e8, 1e12),
        _p("anatomy.reference_cellularity", "percent", 1, 100),
        _p("anatomy.lymphocyte_body_to_blood_ratio", "1", 1, 1000),
        # --- marrow lattice and resolution -----------------------------------
        _p("lattice.side", "1", 2, 4096, integer=True, kernel=True),
        _p("lattice.voxel_side", "um", 10, 5000),
        _p("lattice.cell_diameter", "um", 2, 50),
        _p("lattice.marrow_cellularity", "percent", 1, 100),
        # --- AML blasts -------------------------------------------------------
        _p("blasts.baseline_pct", "percent", 0, 100),
        _p("blasts.cycle_time", "h", 1, 2000),
        _p("blasts.growth_fraction", "1", 0, 1),
        _p("blasts.net_growth_rate", "day-1", -2, 2),
        _p("blasts.spread_fraction", "1", 0, 1, kernel=True),
        _p("blasts.susceptible_fraction", "1", 0, 1),
        _p("blasts.switch_probability", "1", 0, 1, kernel=True),
        _p("blasts.drug_sensitivity", "1", 0, 100, kernel=True),
        _p("blasts.cy_exposure_kill", "L mg-1 day-1", 0, 10, kernel=True),
        _p("blasts.cytarabine_log_kill", "m2 g-1", 0, 10, kernel=True),
        _p("blasts.remission_doubling_time", "day", 0.5, 1000),
        _p("blasts.remission_doubling_log_sd", "1", 0, 10),
        # --- normal haematopoiesis -------------------------------------------
        _p("normal.division_rate", "day-1", 0, 10),
        _p("normal.recovery_rate", "day-1", 0, 10, kernel=True),
        _p("normal.spread_fraction", "1", 0, 1, kernel=True),
        _p("normal.drug_sensitivity", "1", 0, 100, kernel=True),
        # --- donor NK cells ---------------------------------------------------
        _p("nk.speed", "um min-1", 0, 100),
        _p("nk.persistence_time", "min", 0.01, 600),
        _p("nk.engagement_interval", "h", 0.01, 1000),
        _p("nk.kill_probability", "1", 0, 1),
        _p("nk.refractory_time", "h", 0, 1000),
        _p("nk.max_kills", "1", 0, 1000, integer=True, kernel=True),
        _p("nk.competent_fraction", "1", 0, 1),
        _p("nk.proliferation_rate", "day-1", 0, 10, kernel=True),
        _p("nk.il15_proliferation_max", "day-1", 0, 20),
        _p("nk.il15_ec50", "1", 1e-6, 1e6, kernel=True),
        _p("nk.max_division_rate", "day-1", 0.01, 10, kernel=True),
        _p("nk.death_rate", "day-1", 0, 20, kernel=True),
        _p("nk.rejection_rate", "day-1", 0, 50),
        _p("nk.homing_rate", "day-1", 0, 1000, kernel=True),
        _p("nk.egress_rate", "day-1", 0, 1000, kernel=True),
        _p("nk.tissue_uptake_rate", "day-1", 0, 1000),
        _p("nk.tissue_return_rate", "day-1", 0, 1000),
        # --- donor NK of an ex vivo expanded product (protocol.nk_product = "expanded") ---------------
        _p("expanded_nk.tissue_uptake_rate", "day-1", 0, 1000),
        _p("expanded_nk.tissue_return_rate", "day-1", 0, 1000),
        # --- donor NK of a cytokine-induced memory-like product (protocol.nk_product = "ciml", 0.6.0) -----------
        _p("ciml_nk.tissue_uptake_rate", "day-1", 0, 1000),
        _p("ciml_nk.tissue_return_rate", "day-1", 0, 1000),
        _p("ciml_nk.il2_ec50", "1e6", 1e-6, 1e4),
        _p("ciml_nk.death_rate_factor", "1", 0, 10),
        _p("ciml_nk.kill_probability_factor", "1", 0, 100),
        _p("ciml_nk.competent_fraction", "1", 0, 1),
        _p("nk.function_recovery_rate", "day-1", 0, 100, kernel=True),
        _p("nk.cytokine_recovery_boost", "1", 0, 100, kernel=True),
        _p("nk.cytokine_killing_boost", "1", 0, 1000, kernel=True),
        _p("nk.activation_half_life", "day", 1e-3, 100, kernel=True),
        # --- host lymphocytes (blood) ----------------------------------------
        _p("host.nk_baseline", "uL-1", 0, 1e5, kernel=True),
        _p("host.t_baseline", "uL-1", 0, 1e5, kernel=True),
        _p("host.nk_recovery_rate", "day-1", 0, 10),
        _p("host.t_recovery_rate", "day-1", 0, 10),
        # Flu and Cy hazards on each host lineage, relative to the reference hazard of each drug (marrow and
        # donor NK get the reference hazards unscaled)
        _p("host.nk_flu_sensitivity", "1", 0, 100, kernel=True),
        _p("host.nk_cy_sensitivity", "1", 0, 100, kernel=True),
        _p("host.t_flu_sensitivity", "1", 0, 100, kernel=True),
        _p("host.t_cy_sensitivity", "1", 0, 100, kernel=True),
        # host NK and T grow under exogenous IL-15 (rhIL-15, N-803; 0.6.0)
        _p("host.nk_il15_proliferation_max", "day-1", 0, 10, kernel=True),
        _p("host.t_il15_proliferation_max", "day-1", 0, 10, kernel=True),
        _p("host.t_il15_ec50", "1", 1e-6, 1e6, kernel=True),
        _p("host.treg_baseline", "uL-1", 0, 1e5, kernel=True),
        _p("host.treg_flu_sensitivity", "1", 0, 100, kernel=True),
        _p("host.treg_cy_sensitivity", "1", 0, 100, kernel=True),
        # --- host regulatory T cells (0.6.0): IL-2 expands them, they take IL-2 from donor NK, IL2DT kills them --
        _p("treg.recovery_rate", "day-1", 0, 10, kernel=True),
        _p("treg.il2_proliferation_max", "day-1", 0, 10, kernel=True),
        _p("treg.il2_ec50", "1e6", 1e-6, 1e4, kernel=True),
        _p("treg.nk_half_suppression", "uL-1", 1e-6, 1e6, kernel=True),
        _p("treg.nk_kill_suppression", "1", 0, 1, kernel=True),
        _p("il2dt.elimination_half_life", "h", 0.05, 500),
        _p("il2dt.treg_kill", "kg ug-1 day-1", 0, 1e4),
        # --- allo-rejection: priming and memory -------------------------------
        _p("allo.priming_delay", "day", 0.5, 100),
        _p("allo.priming_stages", "1", 1, 50, integer=True, kernel=True),
        _p("allo.primed_rejection_rate", "day-1", 0, 100),
        _p("allo.primed_t_exponent", "1", 0, 1, kernel=True),
        _p("allo.il15_rejection_boost", "1", 0, 100, kernel=True),
        # --- IL-15 ------------------------------------------------------------
        _p("il15.max_fold", "1", 1, 1e5, kernel=True),
        _p("il15.turnover_rate", "day-1", 1e-3, 1e4, kernel=True),
        _p("il15.donor_nk_weight", "1", 0, 1e4),
        _p("il15.baseline_concentration", "pg mL-1", 1e-3, 1e4),
        _p("il15.exo_survival_effect", "1", 0, 1, kernel=True),
        # --- cytokine support (protocol events il2, il15_agonist) --------------
        _p("il2.bioavailability", "1", 0, 1, kernel=True),
        _p("il2.absorption_half_life", "h", 0.05, 500),
        _p("il2.elimination_half_life", "h", 0.05, 500),
        _p("il2.ec50", "1e6", 1e-6, 1e4),
        _p("il2.proliferation_max", "day-1", 0, 10, kernel=True),
        _p("il2.survival_effect", "1", 0, 1, kernel=True),
        # --- IL-15 agonists as their own drugs (0.6.0): rhIL-15 i.v./s.c. into the exogenous IL-15 state, N-803 ---
        _p("rhil15.elimination_half_life", "h", 0.05, 500),
        _p("rhil15.sc_absorption_half_life", "h", 0.05, 500),
        _p("rhil15.sc_bioavailability", "1", 0, 1, kernel=True),
        _p("rhil15.potency", "1", 0, 1e3),
        _p("n803.potency", "1", 0, 1e4),
        _p("n803.absorption_half_life", "h", 0.05, 500),
        _p("n803.elimination_half_life", "h", 0.05, 500),
        # --- lymphodepleting drugs -------------------------------------------
        _p("drugs.flu_half_life", "h", 0.1, 1000),
        _p("drugs.flu_volume", "L", 0.1, 1e5, kernel=True),
        _p("drugs.flu_ec50", "mg L-1", 1e-9, 1e6, kernel=True),
        _p("drugs.flu_emax", "day-1", 0, 1000, kernel=True),
        _p("drugs.cy_half_life", "h", 0.1, 1000),
        _p("drugs.cy_volume", "L", 0.1, 1e5, kernel=True),
        _p("drugs.cy_ec50", "mg L-1", 1e-9, 1e6, kernel=True),
        _p("drugs.cy_emax", "day-1", 0, 1000, kernel=True),
        # --- per-patient random effects (population spread) ------------------
        _p("random_effects.baseline_blast_logit_sd", "1", 0, 10),
        _p("random_effects.blast_growth_log_sd", "1", 0, 10),
        _p("random_effects.proliferative_fraction", "1", 0, 1),
        _p("random_effects.proliferative_growth_fold", "1", 1, 1e4),
        _p("random_effects.susceptible_logit_sd", "1", 0, 10),
        _p("random_effects.host_recovery_log_sd", "1", 0, 10),
        _p("random_effects.nk_expansion_log_sd", "1", 0, 10),
        _p("random_effects.rejection_log_sd", "1", 0, 10),
        _p("random_effects.nk_death_log_sd", "1", 0, 10),
        _p("random_effects.il15_production_log_sd", "1", 0, 10),
        # --- response classification (ELN-style) -----------------------------
        _p("response.cr_blast_pct", "percent", 0, 100, kernel=True),
        _p("response.pr_blast_pct", "percent", 0, 100, kernel=True),
        _p("response.pr_min_fall", "percent", 0, 100),
        _p("response.pd_relative_rise", "percent", 0, 1000),
        _p("response.pd_absolute_rise", "percent", 0, 100, kernel=True),
        _p("response.pd_absolute_below", "percent", 0, 100, kernel=True),
        # --- numerics ----------------------------------------------------------
        _p("numerics.dt", "h", 0.01, 24),
        _p("numerics.marrow_step", "h", 0.01, 168),
        _p("numerics.quiet_marrow_step", "h", 24, 720),
        _p("numerics.max_marrow_donor_nk", "1", 1e6, 1e16),
    ]
}

#: Model-file sections, in declaration order.
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.split(".")[0] for k in PARAMETERS))

#: Deprecated model-file keys (nksim 0.6.0) -> the keys each sets to its value: a model file, a parameter
#: override or a calibration ``[simulator]`` table may still use them (with a
#: :class:`~nksim.errors.DeprecatedKeyWarning`); kept for one release.
PARAMETER_ALIASES: dict[str, tuple[str, ...]] = {
    # one Flu/Cy sensitivity per lineage (0.5.0) -> one per drug and lineage: the old value for both drugs
    "host.nk_drug_sensitivity": ("host.nk_flu_sensitivity", "host.nk_cy_sensitivity"),
    "host.t_drug_sensitivity": ("host.t_flu_sensitivity", "host.t_cy_sensitivity"),
    # the IL-15 agonist of 0.5.0 is N-803; its survival effect is that of every exogenous IL-15 signal
    "il15_agonist.absorption_half_life": ("n803.absorption_half_life",),
    "il15_agonist.elimination_half_life": ("n803.elimination_half_life",),
    "il15_agonist.survival_effect": ("il15.exo_survival_effect",),
}
#: Parameters of mechanisms added off by default -> the value at which the mechanism is absent, so that the model
#: is the one before the parameter was added (its simulations identical, seed for seed: the regression baseline,
#: ``tests/data/baseline.nc``, was kept when each was added). A calibration bank recorded the digest of the values
#: it simulated (:meth:`~nksim.parameters.ParameterSet.digest`); a model that differs from it only by such keys, each
#: at this value, simulates what the bank simulated (:func:`nksim.calibration.bank.bank_model_match`), so the bank
#: stays usable after the mechanism is added.
NEUTRAL_VALUES: dict[str, float] = {
    "random_effects.rejection_log_sd": 0.0,         # docs/model.md section 9.12
    "random_effects.nk_death_log_sd": 0.0,          # section 9.13
    "random_effects.il15_production_log_sd": 0.0,   # section 9.14
    "treg.nk_kill_suppression": 0.0,                # section 9.15
}
#: Retired model-file keys (no longer part of the model) -> why; a file that still has them loads, with a
#: :class:`~nksim.errors.DeprecatedKeyWarning`, and the value is ignored.
RETIRED_PARAMETERS: dict[str, str] = {
    "il15_agonist.proliferation_max": "0.6.0: N-803 acts through the donor NK's IL-15 dose-response "
                                      "(nk.il15_proliferation_max, nk.il15_ec50) at its exposure (n803.potency)",
    "il15_agonist.ec50": "0.6.0: N-803's exposure is in IL-15 fold units (n803.potency, il15.baseline_concentration, "
                         "anatomy.plasma_volume); its EC50 is nk.il15_ec50",
}
assert not set(PARAMETER_ALIASES) & set(PARAMETERS) and not set(RETIRED_PARAMETERS) & set(PARAMETERS)
assert all(k in PARAMETERS for keys in PARAMETER_ALIASES.values() for k in keys)


# ============================================================================= kernel inputs
@dataclass(frozen=True)
class KernelContext:
    """What a derived kernel input may be computed from (see :func:`nksim.engine.build.kernel_parameters`).

    ``resolution`` is a :class:`nksim.engine.build.Resolution`; days are since the first infusion;
    ``nk_product`` is the protocol's NK product (a key of :data:`nksim.protocol.NK_PRODUCTS`);
    ``host_tolerant``: the protocol's host tolerates the donor (``protocol.host_tolerant``, 0.6.0).
    """

    params: ParameterSet
    effects: PatientEffects
    resolution: Any
    start_day: float
    end_day: float
    nk_product: str
    host_tolerant: bool = False


@dataclass(frozen=True)
class DerivedInput:
    """A kernel input computed from parameters, patient effects or resolution.

    ``derive(ctx)`` returns the value in ``unit`` (the kernel's unit); ``uses`` lists the
    model-file keys it reads, for documentation and traceability.
    """

    slot: str
    unit: str
    doc: str
    derive: Callable[[KernelContext], float]
    uses: tuple[str, ...] = ()
    integer: bool = False


def _blast_division(c: KernelContext) -> float:
    birth = c.params["blasts.growth_fraction"] * math.log(2.0) / (c.params["blasts.cycle_time"] / HOURS_PER_DAY)
    # at least the net growth rate, so that the death rate is never negative
    return max(birth, c.effects.blast_net_growth_rate)


def _marrow_scale(c: KernelContext) -> float:
    marrow_capacity = (c.params["anatomy.marrow_cells_per_kg"] * c.effects.body_weight
                       / (c.params["anatomy.reference_cellularity"] / 100.0))
    return marrow_capacity / (c.resolution.n_voxels * c.resolution.capacity)


def _nk_hop_rate(c: KernelContext) -> float:
    diffusivity = c.params["nk.speed"] ** 2 * c.params["nk.persistence_time"] / 2.0 * MIN_PER_DAY  # um2 day-1
    return 4.0 * diffusivity / c.params["lattice.voxel_side"] ** 2


#: NK products (``protocol.nk_product``) whose own parameters are in a section of their own, and that section.
PRODUCT_SECTIONS: dict[str, str] = {"fresh": "nk", "expanded": "expanded_nk", "ciml": "ciml_nk"}


def _product_value(name: str, fresh: str,
                   combine: Callable[[float, float], float] | None = None) -> Callable[[KernelContext], float]:
    """The value of the protocol's NK product: ``<section>.<name>`` where the product's section has that key.

    ``fresh`` is the key of the fresh product's value (also the value of a product whose section
    lacks ``name``). ``combine(fresh value, product value)`` combines the two where the product's key
    is a factor on the fresh value (``None``: the product's value replaces it).
    """
    def derive(c: KernelContext) -> float:
        if c.nk_product not in PRODUCT_SECTIONS:
            raise ValueError(f"unknown NK product {c.nk_product!r}; allowed: {sorted(PRODUCT_SECTIONS)}")
        base = c.params[fresh]
        key = f"{PRODUCT_SECTIONS[c.nk_product]}.{name}"
        if c.nk_product == "fresh" or key not in PARAMETERS:
            return base
        return combine(base, c.params[key]) if combine is not None else c.params[key]
    return derive


def _product_rate(name: str) -> Callable[[KernelContext], float]:
    """``nk.<name>`` for a fresh product, ``<product section>.<name>`` for the others (expanded, CIML)."""
    return _product_value(name, f"nk.{name}")


def _il15_fold_per_ug(c: KernelContext, potency: str) -> float:
    """IL-15 signal, in folds of the baseline concentration, of 1 ug of an IL-15 agonist in plasma (ug-1)."""
    plasma_ml = c.params["anatomy.plasma_volume"] * c.effects.body_weight
    return 1e6 * c.params[potency] / (plasma_ml * c.params["il15.baseline_concentration"])


def _elimination(key: str) -> Callable[[KernelContext], float]:
    return lambda c: math.log(2.0) / (c.params[key] / HOURS_PER_DAY)


#: Kernel inputs that are not a model-file value passed unchanged.
DERIVED_INPUTS: tuple[DerivedInput, ...] = (
    # resolution and clock
    DerivedInput("voxel_capacity", "1", "cells per voxel, K = (voxel_side / cell_diameter)^2",
                 lambda c: c.resolution.capacity, ("lattice.voxel_side", "lattice.cell_diameter"), integer=True),
    DerivedInput("dt", "day", "time step", lambda c: 1.0 / c.resolution.steps_per_day, ("numerics.dt",)),
    DerivedInput("marrow_every", "1", "marrow update every this many steps", lambda c: c.resolution.marrow_every,
                 ("numerics.marrow_step",), integer=True),
    DerivedInput("quiet_marrow_days", "1", "longest merged marrow update on quiet days (whole days)",
                 lambda c: int(c.params["numerics.quiet_marrow_step"] // HOURS_PER_DAY),
                 ("numerics.quiet_marrow_step",), integer=True),
    DerivedInput("max_donor_agents", "1", "most donor NK agents in the region (numerics.max_marrow_donor_nk / scale, "
                 "at least 1): at this number an agent's division is suppressed",
                 lambda c: max(1, int(c.params["numerics.max_marrow_donor_nk"] / _marrow_scale(c))),
                 ("numerics.max_marrow_donor_nk", "anatomy.marrow_cells_per_kg", "anatomy.reference_cellularity"),
                 integer=True),
    DerivedInput("steps_per_day", "1", "time steps per day", lambda c: c.resolution.steps_per_day, ("numerics.dt",),
                 integer=True),
    DerivedInput("n_steps", "1", "time steps from start to end of the simulation",
                 lambda c: int(round((c.end_day - c.start_day) * c.resolution.steps_per_day)), integer=True),
    DerivedInput("start_day", "day", "first simulated day (since the first NK infusion)", lambda c: c.start_day),
    # anatomy
    DerivedInput("scale", "1", "whole-marrow cells per region cell place", _marrow_scale,
                 ("anatomy.marrow_cells_per_kg", "anatomy.reference_cellularity", "anatomy.body_weight")),
    DerivedInput("blood_volume_ul", "uL", "blood volume",
                 lambda c: c.params["anatomy.blood_volume"] * c.effects.body_weight * 1000.0,
                 ("anatomy.blood_volume",)),
    DerivedInput("donor_il15_consumption", "uL-1",
                 "IL-15 consumption of one donor NK cell, as host-lymphocyte equivalents per uL blood: weight / "
                 "(blood volume x whole-body-to-blood lymphocyte ratio), since the host term counts blood lymphocytes "
                 "standing for a whole-body pool",
                 lambda c: c.params["il15.donor_nk_weight"] / (
                     c.params["anatomy.blood_volume"] * c.effects.body_weight * 1000.0
                     * c.params["anatomy.lymphocyte_body_to_blood_ratio"]),
                 ("il15.donor_nk_weight", "anatomy.blood_volume", "anatomy.lymphocyte_body_to_blood_ratio")),
    DerivedInput("cellularity", "1", "baseline occupancy fraction of cell places",
                 lambda c: c.params["lattice.marrow_cellularity"] / 100.0, ("lattice.marrow_cellularity",)),
    # blasts (patient effects)
    DerivedInput("blast_fraction0", "1", "baseline blast fraction of nucleated cells (this patient)",
                 lambda c: c.effects.baseline_blast_pct / 100.0, ("blasts.baseline_pct",)),
    DerivedInput("susceptible_fraction0", "1", "baseline NK-susceptible fraction of blasts (this patient)",
                 lambda c: c.effects.susceptible_fraction, ("blasts.susceptible_fraction",)),
    DerivedInput("blast_birth_rate", "day-1", "blast division rate (at least the net growth rate)",
                 _blast_division, ("blasts.growth_fraction", "blasts.cycle_time")),
    DerivedInput("blast_net_growth_rate", "day-1", "blast net growth rate at zero occupancy (this patient)",
                 lambda c: c.effects.blast_net_growth_rate, ("blasts.net_growth_rate",)),
    # normal haematopoiesis
    DerivedInput("normal_birth_rate", "day-1", "normal-cell division rate (at least the recovery rate)",
                 lambda c: max(c.params["normal.division_rate"], c.params["normal.recovery_rate"]),
                 ("normal.division_rate", "normal.recovery_rate")),
    DerivedInput("normal_target", "1", "occupancy fraction toward which normal cells regrow",
                 lambda c: c.params["lattice.marrow_cellularity"] / 100.0, ("lattice.marrow_cellularity",)),
    # donor NK
    DerivedInput("nk_hop_rate", "day-1", "voxel hops per day (all directions), 4 D / voxel_side^2 with "
                 "D = speed^2 persistence / 2", _nk_hop_rate,
                 ("nk.speed", "nk.persistence_time", "lattice.voxel_side")),
    DerivedInput("donor_tissue_uptake_rate", "day-1",
                 "rate at which blood donor NK enter other tissues, for the protocol's NK product",
                 _product_rate("tissue_uptake_rate"),
                 ("nk.tissue_uptake_rate", "expanded_nk.tissue_uptake_rate", "ciml_nk.tissue_uptake_rate")),
    DerivedInput("donor_tissue_return_rate", "day-1",
                 "rate at which donor NK in other tissues return to blood, for the protocol's NK product",
                 _product_rate("tissue_return_rate"),
                 ("nk.tissue_return_rate", "expanded_nk.tissue_return_rate", "ciml_nk.tissue_return_rate")),
    DerivedInput("donor_il2_ec50", "1e6", "central IL-2 at half the maximal effect on the protocol's NK product "
                 "(il2.ec50; ciml_nk.il2_ec50 for CIML, which carry the high-affinity IL-2 receptor)",
                 _product_value("il2_ec50", "il2.ec50"), ("il2.ec50", "ciml_nk.il2_ec50")),
    DerivedInput("donor_death_factor", "1", "homeostatic death of this patient's donor NK relative to nk.death_rate: "
                 "the product's factor (1; ciml_nk.death_rate_factor for CIML) times her death factor",
                 lambda c: (c.params["ciml_nk.death_rate_factor"] if c.nk_product == "ciml" else 1.0)
                 * c.effects.death_factor,
                 ("ciml_nk.death_rate_factor", "random_effects.nk_death_log_sd")),
    DerivedInput("patient_il15_production", "1", "IL-15 production of this patient relative to the population's "
                 "(her IL-15 production factor): her steady IL-15 level before lymphodepletion, in units of the "
                 "population's baseline",
                 lambda c: c.effects.il15_production_factor, ("random_effects.il15_production_log_sd",)),
    DerivedInput("donor_kill_probability", "1", "probability that the protocol's NK product kills an engaged "
                 "susceptible blast: nk.kill_probability (times ciml_nk.kill_probability_factor for CIML, at most 1)",
                 _product_value("kill_probability_factor", "nk.kill_probability", combine=lambda b, f: min(1.0, b * f)),
                 ("nk.kill_probability", "ciml_nk.kill_probability_factor")),
    DerivedInput("donor_competent_fraction", "1", "killer-competent fraction of the protocol's NK product "
                 "(nk.competent_fraction; ciml_nk.competent_fraction for CIML)",
                 _product_value("competent_fraction", "nk.competent_fraction"),
                 ("nk.competent_fraction", "ciml_nk.competent_fraction")),
    DerivedInput("nk_contact_rate", "day-1", "engagements per day in a blast-packed voxel",
                 lambda c: HOURS_PER_DAY / c.params["nk.engagement_interval"], ("nk.engagement_interval",)),
    DerivedInput("nk_refractory_days", "day", "refractory period after a kill",
                 lambda c: c.params["nk.refractory_time"] / HOURS_PER_DAY, ("nk.refractory_time",)),
    # host
    DerivedInput("patient_nk_il15_proliferation_max", "day-1",
                 "extra donor-NK division at saturating IL-15 for this patient (donor/product variability)",
                 lambda c: c.effects.nk_il15_proliferation_max, ("nk.il15_proliferation_max",)),
    DerivedInput("patient_host_nk_recovery_rate", "day-1", "host NK Gompertz regrowth rate (this patient)",
                 lambda c: c.effects.host_nk_recovery_rate, ("host.nk_recovery_rate",)),
    DerivedInput("patient_host_t_recovery_rate", "day-1", "host T Gompertz regrowth rate (this patient)",
                 lambda c: c.effects.host_t_recovery_rate, ("host.t_recovery_rate",)),
    DerivedInput("patient_nk_rejection_rate", "day-1",
                 "unprimed rejection of donor NK at baseline host T (this patient: nk.rejection_rate x her "
                 "rejection factor)",
                 lambda c: c.params["nk.rejection_rate"] * c.effects.rejection_factor,
                 ("nk.rejection_rate", "random_effects.rejection_log_sd")),
    DerivedInput("patient_primed_rejection_rate", "day-1",
                 "primed rejection of donor NK (this patient: allo.primed_rejection_rate x her rejection factor)",
                 lambda c: c.params["allo.primed_rejection_rate"] * c.effects.rejection_factor,
                 ("allo.primed_rejection_rate", "random_effects.rejection_log_sd")),
    # allo-priming
    DerivedInput("allo_stage_rate", "day-1", "transit rate of each priming stage, stages / delay",
                 lambda c: c.params["allo.priming_stages"] / c.params["allo.priming_delay"],
                 ("allo.priming_stages", "allo.priming_delay")),
    DerivedInput("allo_rejection_enabled", "1", "1: the host rejects donor NK (allogeneic); 0: the host tolerates the "
                 "donor (protocol.host_tolerant, e.g. NK from the patient's own transplant donor): no rejection",
                 lambda c: 0.0 if c.host_tolerant else 1.0),
    DerivedInput("n_donors", "1", "number of NK donors of this patient's protocol (set by the event arrays)",
                 lambda c: 1, integer=True),
    # cytokines (s.c. depot -> central, first order)
    DerivedInput("il2_absorption_rate", "day-1", "IL-2 absorption rate, ln 2 / half-life",
                 _elimination("il2.absorption_half_life"), ("il2.absorption_half_life",)),
    DerivedInput("il2_elimination_rate", "day-1", "IL-2 elimination rate, ln 2 / half-life",
                 _elimination("il2.elimination_half_life"), ("il2.elimination_half_life",)),
    DerivedInput("il2dt_elimination_rate", "day-1", "IL-2-diphtheria toxin (denileukin diftitox) elimination rate, "
                 "ln 2 / half-life", _elimination("il2dt.elimination_half_life"), ("il2dt.elimination_half_life",)),
    DerivedInput("il2dt_kill_per_ug", "ug-1 day-1", "kill hazard on host Tregs per ug of IL2DT in plasma: "
                 "il2dt.treg_kill / body weight (the hazard is proportional to the amount per kg)",
                 lambda c: c.params["il2dt.treg_kill"] / c.effects.body_weight, ("il2dt.treg_kill",)),
    DerivedInput("n803_absorption_rate", "day-1", "N-803 absorption rate from the s.c. depot, ln 2 / half-life",
                 _elimination("n803.absorption_half_life"), ("n803.absorption_half_life",)),
    DerivedInput("n803_elimination_rate", "day-1", "N-803 elimination rate, ln 2 / half-life",
                 _elimination("n803.elimination_half_life"), ("n803.elimination_half_life",)),
    DerivedInput("n803_fold_per_ug", "ug-1", "exogenous IL-15 signal (fold of the baseline IL-15 concentration) per ug "
                 "of N-803 in the central compartment: 1e6 pg/ug x n803.potency / (plasma volume x IL-15 baseline)",
                 lambda c: _il15_fold_per_ug(c, "n803.potency"),
                 ("n803.potency", "anatomy.plasma_volume", "il15.baseline_concentration")),
    DerivedInput("rhil15_fold_per_ug", "ug-1", "exogenous IL-15 signal (fold of the baseline IL-15 concentration) "
                 "per ug of rhIL-15 in plasma: 1e6 pg/ug x rhil15.potency / (plasma volume x IL-15 baseline)",
                 lambda c: _il15_fold_per_ug(c, "rhil15.potency"),
                 ("rhil15.potency", "anatomy.plasma_volume", "il15.baseline_concentration")),
    DerivedInput("rhil15_elimination_rate", "day-1", "rhIL-15 renal elimination rate, ln 2 / half-life",
                 _elimination("rhil15.elimination_half_life"), ("rhil15.elimination_half_life",)),
    DerivedInput("rhil15_sc_absorption_rate", "day-1", "rhIL-15 absorption rate from the s.c. depot, ln 2 / half-life",
                 _elimination("rhil15.sc_absorption_half_life"), ("rhil15.sc_absorption_half_life",)),
    # drugs
    DerivedInput("flu_elimination_rate", "day-1", "fludarabine elimination rate, ln 2 / half-life",
                 _elimination("drugs.flu_half_life"), ("drugs.flu_half_life",)),
    DerivedInput("cy_elimination_rate", "day-1", "cyclophosphamide elimination rate, ln 2 / half-life",
                 _elimination("drugs.cy_half_life"), ("drugs.cy_half_life",)),
    # early stopping (calibration): stop after a check day at which blasts reach the PD threshold
    DerivedInput("stop_enabled", "1", "1: stop at the first PD call on a stop day; 0: never stop early",
                 lambda c: 0.0),
    DerivedInput("pd_relative_rise_fraction", "1", "response.pd_relative_rise / 100",
                 lambda c: c.params["response.pd_relative_rise"] / 100.0, ("response.pd_relative_rise",)),
    DerivedInput("pr_min_fall_fraction", "1", "response.pr_min_fall / 100",
                 lambda c: c.params["response.pr_min_fall"] / 100.0, ("response.pr_min_fall",)),
)

#: Kernel slot names in kernel order: derived inputs first, then the ``kernel=True`` parameters.
KERNEL_SLOTS: tuple[str, ...] = (tuple(d.slot for d in DERIVED_INPUTS)
                                 + tuple(s.slot for s in PARAMETERS.values() if s.kernel))

_clash = {d.slot for d in DERIVED_INPUTS} & {s.slot for s in PARAMETERS.values()}
assert not _clash, f"derived kernel inputs named like model-file keys: {sorted(_clash)}"

#: Kernel slots that hold whole numbers (the kernel converts them with ``int()``).
INTEGER_SLOTS: frozenset[str] = frozenset(
    [d.slot for d in DERIVED_INPUTS if d.integer] + [s.slot for s in PARAMETERS.values() if s.kernel and s.integer])


# ================================================================================== outputs
@dataclass(frozen=True)
class Variable:
    """An output variable: CF ``units`` and ``long_name``, and how figures show it.

    ``short``: axis label; ``log``: drawn on a log scale by default; ``counts``: what a
    dimensionless value counts (``"cells"``), for axis labels; ``whole_body``: a
    region count scaled to the whole marrow (times ``scale``); ``sweep``: kept as a daily
    series in sweep stores (every variable is in a single run's Dataset).
    """

    name: str
    units: str
    long_name: str
    short: str
    log: bool = False
    counts: str | None = None
    whole_body: bool = False
    sweep: bool = False


#: The kernel's daily record, in column order (state at the start of each day).
RECORD: tuple[Variable, ...] = (
    Variable("donor_nk_blood", "uL-1", "donor NK cells per uL blood", "donor NK in blood", log=True, sweep=True),
    Variable("host_nk_blood", "uL-1", "host NK cells per uL blood", "host NK in blood", log=True),
    Variable("host_t_blood", "uL-1", "host T cells per uL blood", "host T cells in blood", log=True, sweep=True),
    Variable("host_treg_blood", "uL-1", "host regulatory T cells per uL blood", "host Tregs in blood", log=True),
    Variable("il15", "1", "plasma IL-15 relative to pre-treatment baseline", "plasma IL-15", counts="fold of baseline",
             sweep=True),
    Variable("flu_conc", "mg L-1", "plasma fludarabine (2-F-ara-A) concentration", "plasma fludarabine"),
    Variable("cy_conc", "mg L-1", "plasma cyclophosphamide concentration", "plasma cyclophosphamide"),
    Variable("donor_nk_marrow", "1", "donor NK cells in the whole marrow (region agents x scale)",
             "donor NK in marrow", log=True, counts="cells", whole_body=True),
    Variable("donor_nk_tissue", "1", "donor NK cells in other tissues (lung, liver, spleen)",
             "donor NK in other tissues", log=True, counts="cells"),
    Variable("donor_nk_agents", "1", "donor NK agents in the simulated marrow region", "donor NK agents (region)",
             log=True, counts="agents"),
    Variable("marrow_blast_pct", "percent", "marrow blasts as percentage of nucleated marrow cells", "marrow blasts",
             sweep=True),
    Variable("blasts_total", "1", "AML blasts in the whole marrow", "marrow blasts", log=True, counts="cells",
             whole_body=True),
    Variable("normal_total", "1", "normal haematopoietic cells in the whole marrow", "normal marrow cells", log=True,
             counts="cells", whole_body=True),
    Variable("blast_susceptible_fraction", "1", "fraction of marrow blasts susceptible to NK killing",
             "NK-susceptible fraction of blasts"),
    Variable("nk_kills", "1", "cumulative blasts killed by donor NK, whole-marrow estimate",
             "blasts killed by NK (cumulative)", log=True, counts="cells", whole_body=True),
    Variable("nk_exhausted_fraction", "1", "fraction of killer-competent marrow NK agents that are exhausted",
             "exhausted fraction of marrow NK"),
    Variable("drug_kill_hazard", "day-1", "Flu/Cy reference kill hazard (Flu and Cy terms at sensitivity 1, as on "
             "marrow cells and donor NK; host lineages scale each drug's term by their own sensitivity)",
             "Flu/Cy kill hazard"),
    Variable("donor_nk_total", "1", "donor NK cells in the whole body (blood, other tissues and marrow)",
             "donor NK, whole body", log=True, counts="cells", whole_body=True),
    Variable("allo_priming", "1", "host anti-donor priming: fraction of the primed rejection response reached "
             "(largest over this patient's donors)", "anti-donor priming"),
    Variable("il2_central", "1e6", "IL-2 in the central compartment (million international units)",
             "IL-2 (central)"),
    Variable("il15_exogenous", "1", "exogenous IL-15 signal (rhIL-15 and N-803) relative to the baseline IL-15 "
             "concentration", "exogenous IL-15", counts="fold of baseline"),
    Variable("n803_central", "ug", "IL-15 superagonist N-803 in the central compartment", "N-803 (central)"),
    Variable("il2dt_amount", "ug", "IL-2-diphtheria toxin (IL2DT) in plasma", "IL2DT (plasma)"),
    Variable("cytokine_support", "1", "combined support of donor NK by IL-2 and exogenous IL-15 (0 none, 1 "
             "saturating)", "cytokine support"),
)


def chimerism(donor: np.ndarray, *hosts: np.ndarray) -> np.ndarray:
    """Donor share (percent) of ``donor + sum(hosts)``; 0 where there are no cells at all."""
    total = donor
    for host in hosts:  # left to right, as written: donor + host_nk + host_t
        total = total + host
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * donor / total, 0.0)


@dataclass(frozen=True)
class Observable:
    """An output variable computed from record columns after the run."""

    variable: Variable
    compute: Callable[[Mapping[str, np.ndarray]], np.ndarray] = field(repr=False)


#: Variables computed from the daily record (the calibration summaries use the same functions).
OBSERVABLES: tuple[Observable, ...] = (
    Observable(Variable("donor_chimerism_nk", "percent", "donor chimerism of blood NK cells (donor NK / all blood NK)",
                        "donor chimerism, blood NK", log=True, sweep=True),
               lambda r: chimerism(r["donor_nk_blood"], r["host_nk_blood"])),
    Observable(Variable("donor_chimerism_pbmc", "percent",
                        "donor chimerism of blood lymphocytes (donor NK / (NK + T + Tregs))",
                        "donor chimerism, blood lymphocytes", log=True, sweep=True),
               lambda r: chimerism(r["donor_nk_blood"], r["host_nk_blood"], r["host_t_blood"], r["host_treg_blood"])),
)


def observe(name: str, record: np.ndarray) -> np.ndarray:
    """An observable (or record column) from a record array ``(..., len(RECORD))``."""
    columns = _RecordColumns(record)
    if name in RECORD_INDEX:
        return columns[name]
    for o in OBSERVABLES:
        if o.variable.name == name:
            return o.compute(columns)
    known = sorted(RECORD_INDEX) + [o.variable.name for o in OBSERVABLES]
    raise KeyError(f"unknown observable {name!r}; known: {known}")


class _RecordColumns(Mapping[str, np.ndarray]):
    """Named read-only view of the last axis of a record array."""

    def __init__(self, record: np.ndarray):
        self._record = record

    def __getitem__(self, name: str) -> np.ndarray:
        return self._record[..., RECORD_INDEX[name]]

    def __iter__(self):
        return iter(RECORD_INDEX)

    def __len__(self) -> int:
        return len(RECORD_INDEX)


RECORD_INDEX: dict[str, int] = {v.name: i for i, v in enumerate(RECORD)}

#: Region counters (current cells and cumulative events since the start), in kernel order.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("susceptible_blasts", "NK-susceptible blasts now"),
    ("resistant_blasts", "NK-resistant blasts now"),
    ("normal_cells", "normal cells now"),
    ("blast_births", "blast divisions"),
    ("blast_deaths", "blast natural deaths (including crowding-dependent)"),
    ("blast_drug_deaths", "blast deaths by Flu/Cy"),
    ("blasts_killed_by_nk", "blasts killed by donor NK"),
    ("blast_daughters_lost", "blast daughters lost for lack of space"),
    ("normal_births", "normal-cell divisions"),
    ("normal_deaths", "normal-cell natural deaths"),
    ("normal_drug_deaths", "normal-cell deaths by Flu/Cy"),
    ("normal_daughters_lost", "normal daughters lost for lack of space"),
    ("nk_agents", "donor NK agents now"),
    ("nk_homed", "donor NK agents that entered from blood"),
    ("nk_egressed", "donor NK agents that left to blood"),
    ("nk_born", "donor NK agents born by division"),
    ("nk_died", "donor NK agents that died"),
)

#: Lattice snapshot layers, in kernel order: (output variable, short label, long name).
SNAPSHOT_LAYERS: tuple[Variable, ...] = (
    Variable("lattice_susceptible_blasts", "1", "NK-susceptible blasts per voxel", "NK-susceptible blasts",
             counts="cells per voxel"),
    Variable("lattice_resistant_blasts", "1", "NK-resistant blasts per voxel", "NK-resistant blasts",
             counts="cells per voxel"),
    Variable("lattice_normal", "1", "normal haematopoietic cells per voxel", "normal cells", counts="cells per voxel"),
    Variable("lattice_nk", "1", "donor NK agents per voxel", "donor NK agents", counts="agents per voxel"),
)

@dataclass(frozen=True)
class EventKind:
    """A kind of protocol event: the unit its dose is given in and how the kernel receives it.

    ``per``: the dose is per m2 of body surface (``"m2"``), per kg of body weight (``"kg"``) or
    flat (``""``); the kernel receives ``dose`` times that, in ``amount_unit``.
    """

    name: str
    dose_unit: str
    per: str
    amount_unit: str
    doc: str


#: Protocol event kinds, in kernel code order.
EVENT_KINDS: tuple[EventKind, ...] = (
    EventKind("fludarabine", "mg m-2", "m2", "mg", "fludarabine dose (i.v.), into the plasma compartment"),
    EventKind("cyclophosphamide", "mg kg-1", "kg", "mg", "cyclophosphamide dose (i.v.), into the plasma compartment"),
    EventKind("nk_infusion", "kg-1", "kg", "1", "donor NK cells infused into blood (optional field donor)"),
    EventKind("il2", "1e6", "", "1e6", "IL-2 (aldesleukin) s.c. dose in million international units (MIU), "
              "into the subcutaneous depot (times il2.bioavailability)"),
    EventKind("il15_agonist", "ug kg-1", "kg", "ug", "deprecated alias of n803 (0.6.0): IL-15 superagonist N-803 s.c. "
              "dose, into its subcutaneous depot"),
    EventKind("il2dt", "ug kg-1", "kg", "ug", "IL-2-diphtheria toxin (denileukin diftitox) i.v. dose, into plasma: "
              "kills host regulatory T cells"),
    EventKind("rhil15_iv", "ug kg-1", "kg", "ug", "recombinant human IL-15 i.v. bolus, into the exogenous IL-15 "
              "signal"),
    EventKind("rhil15_sc", "ug kg-1", "kg", "ug", "recombinant human IL-15 s.c. dose, into its subcutaneous depot "
              "(times rhil15.sc_bioavailability)"),
    EventKind("n803", "ug kg-1", "kg", "ug", "IL-15 superagonist N-803 (ALT-803) s.c. dose, into its subcutaneous "
              "depot"),
    EventKind("cytarabine", "mg m-2", "", "mg m-2", "cytarabine (Ara-C) i.v. dose: a log kill of marrow blasts "
              "proportional to the dose (blasts.cytarabine_log_kill), at the next marrow update (its plasma half-life, "
              "hours, is shorter than an update)"),
)

#: The blood ODE state vector ``y``, in order: (name, unit, meaning). The last
#: :data:`DONOR_STRIDE` entries are those of the first donor; donor ``d`` (0, 1, ...) has its own
#: copies at ``Y.<name> + DONOR_STRIDE * d``, so ``y`` holds ``len(BLOOD_STATE) + DONOR_STRIDE *
#: (n_donors - 1)`` values.
BLOOD_STATE: tuple[tuple[str, str, str], ...] = (
    ("host_nk", "uL-1", "host NK cells per uL blood"),
    ("host_t", "uL-1", "host T cells per uL blood"),
    ("host_treg", "uL-1", "host regulatory T cells per uL blood"),
    ("il15", "1", "plasma IL-15 relative to baseline"),
    ("il15_exo", "1", "exogenous rhIL-15 in plasma, as fold of the baseline IL-15 concentration"),
    ("donor_nk_blood", "1", "donor NK cells in blood (whole body), first donor"),
    ("donor_nk_tissue", "1", "donor NK cells in other tissues (whole body), first donor"),
)
#: Entries of :data:`BLOOD_STATE` repeated for each donor.
DONOR_STRIDE = 2


def all_variables() -> dict[str, Variable]:
    """Every declared output variable by name (record, observables, snapshot layers)."""
    out = {v.name: v for v in RECORD}
    out.update({o.variable.name: o.variable for o in OBSERVABLES})
    out.update({v.name: v for v in SNAPSHOT_LAYERS})
    return out
