"""The parameter schema: every model parameter, its unit and its allowed range.

This table is the contract between parameter files (``models/*.toml``) and the
engine. A parameter file gives, for each key below, its value in exactly the
unit declared here, a short description, its source and (when it is
calibrated) a prior range. Values come from the file; this table only says what
is *allowed*, so that a typo or a wrong unit is an error instead of a number.

Units are UDUNITS-2 strings. Allowed ranges are physical/numerical bounds, not
priors: priors live in the parameter files.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamSpec:
    """Declaration of one parameter: canonical unit, inclusive bounds, integer flag."""

    key: str
    unit: str
    lo: float
    hi: float
    integer: bool = False


def _s(key: str, unit: str, lo: float, hi: float, integer: bool = False) -> ParamSpec:
    return ParamSpec(key, unit, float(lo), float(hi), integer)


INF = float("inf")

#: All model parameters, grouped by TOML section.
SCHEMA: dict[str, ParamSpec] = {
    s.key: s
    for s in [
        # --- patient anatomy -------------------------------------------------
        _s("anatomy.body_weight", "kg", 1, 300),
        _s("anatomy.body_surface_area", "m2", 0.2, 3.5),
        _s("anatomy.blood_volume", "mL kg-1", 30, 150),
        _s("anatomy.marrow_cells_per_kg", "kg-1", 1e8, 1e12),
        _s("anatomy.reference_cellularity", "percent", 1, 100),
        # --- marrow lattice and resolution -----------------------------------
        _s("lattice.side", "1", 2, 4096, integer=True),
        _s("lattice.voxel_side", "um", 10, 5000),
        _s("lattice.cell_diameter", "um", 2, 50),
        _s("lattice.marrow_cellularity", "percent", 1, 100),
        # --- AML blasts -------------------------------------------------------
        _s("blasts.baseline_pct", "percent", 0, 100),
        _s("blasts.cycle_time", "h", 1, 2000),
        _s("blasts.growth_fraction", "1", 0, 1),
        _s("blasts.net_growth_rate", "day-1", -2, 2),
        _s("blasts.spread_fraction", "1", 0, 1),
        _s("blasts.susceptible_fraction", "1", 0, 1),
        _s("blasts.switch_probability", "1", 0, 1),
        _s("blasts.drug_sensitivity", "1", 0, 100),
        # --- normal haematopoiesis -------------------------------------------
        _s("normal.division_rate", "day-1", 0, 10),
        _s("normal.recovery_rate", "day-1", 0, 10),
        _s("normal.spread_fraction", "1", 0, 1),
        _s("normal.drug_sensitivity", "1", 0, 100),
        # --- donor NK cells ---------------------------------------------------
        _s("nk.speed", "um min-1", 0, 100),
        _s("nk.persistence_time", "min", 0.01, 600),
        _s("nk.engagement_interval", "h", 0.01, 1000),
        _s("nk.kill_probability", "1", 0, 1),
        _s("nk.refractory_time", "h", 0, 1000),
        _s("nk.max_kills", "1", 0, 1000, integer=True),
        _s("nk.competent_fraction", "1", 0, 1),
        _s("nk.proliferation_rate", "day-1", 0, 10),
        _s("nk.il15_proliferation_max", "day-1", 0, 20),
        _s("nk.il15_ec50", "1", 1e-6, 1e6),
        _s("nk.death_rate", "day-1", 0, 20),
        _s("nk.rejection_rate", "day-1", 0, 50),
        _s("nk.homing_rate", "day-1", 0, 1000),
        _s("nk.egress_rate", "day-1", 0, 1000),
        _s("nk.tissue_uptake_rate", "day-1", 0, 1000),
        _s("nk.tissue_return_rate", "day-1", 0, 1000),
        # --- host lymphocytes (blood) ----------------------------------------
        _s("host.nk_baseline", "uL-1", 0, 1e5),
        _s("host.t_baseline", "uL-1", 0, 1e5),
        _s("host.recovery_rate", "day-1", 0, 10),
        # --- IL-15 ------------------------------------------------------------
        _s("il15.max_fold", "1", 1, 1e5),
        _s("il15.turnover_rate", "day-1", 1e-3, 1e4),
        _s("il15.donor_nk_weight", "1", 0, 1e4),
        # --- lymphodepleting drugs -------------------------------------------
        _s("drugs.flu_half_life", "h", 0.1, 1000),
        _s("drugs.flu_volume", "L", 0.1, 1e5),
        _s("drugs.flu_ec50", "mg L-1", 1e-9, 1e6),
        _s("drugs.flu_emax", "day-1", 0, 1000),
        _s("drugs.cy_half_life", "h", 0.1, 1000),
        _s("drugs.cy_volume", "L", 0.1, 1e5),
        _s("drugs.cy_ec50", "mg L-1", 1e-9, 1e6),
        _s("drugs.cy_emax", "day-1", 0, 1000),
        # --- per-patient random effects (population spread) ------------------
        _s("random_effects.baseline_blast_logit_sd", "1", 0, 10),
        _s("random_effects.blast_growth_log_sd", "1", 0, 10),
        _s("random_effects.susceptible_logit_sd", "1", 0, 10),
        _s("random_effects.host_recovery_log_sd", "1", 0, 10),
        # --- response classification (ELN-style) -----------------------------
        _s("response.cr_blast_pct", "percent", 0, 100),
        _s("response.pr_blast_pct", "percent", 0, 100),
        _s("response.pr_min_fall", "percent", 0, 100),
        _s("response.pd_relative_rise", "percent", 0, 1000),
        _s("response.pd_absolute_rise", "percent", 0, 100),
        _s("response.pd_absolute_below", "percent", 0, 100),
        # --- numerics ----------------------------------------------------------
        _s("numerics.dt", "h", 0.01, 24),
        _s("numerics.marrow_step", "h", 0.01, 168),
    ]
}

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.split(".")[0] for k in SCHEMA))
