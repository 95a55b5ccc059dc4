"""Axis-label tables and helpers: short names, log-scale variables, what a dimensionless variable counts.

Plain dicts/sets in one place (one entry per output variable, sweep-summary metric or scenario
factor), used by every figure of :mod:`nksim.plot` for axis labels and default scales.
"""
from __future__ import annotations

import re

import xarray as xr

#: Variables drawn on a log scale by default (chimerism and cell counts).
LOG_VARIABLES = frozenset({
    "donor_chimerism_nk", "donor_chimerism_pbmc", "donor_nk_blood", "host_nk_blood", "host_t_blood",
    "donor_nk_marrow", "donor_nk_tissue", "donor_nk_agents", "blasts_total", "normal_total", "nk_kills",
})

#: Short axis names (the title of a panel is the variable's ``long_name``).
SHORT_NAMES = {
    "donor_chimerism_nk": "donor chimerism, blood NK",
    "donor_chimerism_pbmc": "donor chimerism, blood lymphocytes",
    "donor_nk_blood": "donor NK in blood",
    "host_nk_blood": "host NK in blood",
    "host_t_blood": "host T cells in blood",
    "il15": "plasma IL-15",
    "flu_conc": "plasma fludarabine",
    "cy_conc": "plasma cyclophosphamide",
    "marrow_blast_pct": "marrow blasts",
    "donor_nk_marrow": "donor NK in marrow",
    "donor_nk_tissue": "donor NK in other tissues",
    "donor_nk_agents": "donor NK agents (region)",
    "blasts_total": "marrow blasts",
    "normal_total": "normal marrow cells",
    "nk_kills": "blasts killed by NK (cumulative)",
    "blast_susceptible_fraction": "NK-susceptible fraction of blasts",
    "nk_exhausted_fraction": "exhausted fraction of marrow NK",
    "drug_kill_hazard": "Flu/Cy kill hazard",
    "p_pd_first": "P(PD at first assessment)",
    "pfs_landmark": "P(progression-free at landmark)",
    "median_pfs": "median progression-free time",
    "peak_chimerism_nk": "peak donor chimerism, blood NK",
    "peak_chimerism_pbmc": "peak donor chimerism, blood lymphocytes",
    "donor_nk_auc": "donor NK AUC in blood",
    "lattice_susceptible_blasts": "NK-susceptible blasts",
    "lattice_resistant_blasts": "NK-resistant blasts",
    "lattice_normal": "normal cells",
    "lattice_nk": "donor NK agents",
    "interval": "interval between infusions",
    "dose_split": "dose split",
    "gap": "gap after lymphodepletion",
    "total_dose": "total NK dose",
    "first_dose_pct": "first dose share",
    "n_infusions": "number of infusions",
}

#: What a dimensionless ("1") variable counts, for axis labels.
_DIMENSIONLESS = {
    "il15": "fold of baseline",
    "donor_nk_marrow": "cells", "donor_nk_tissue": "cells", "blasts_total": "cells", "normal_total": "cells",
    "nk_kills": "cells", "donor_nk_agents": "agents",
    "lattice_susceptible_blasts": "cells per voxel", "lattice_resistant_blasts": "cells per voxel",
    "lattice_normal": "cells per voxel", "lattice_nk": "agents per voxel",
    "p_pd_first": "probability", "pfs_landmark": "probability", "n_infusions": "count",
}

_SPECIAL_UNITS = {"percent": "%", "1": "dimensionless", "um": "µm", "degC": "°C"}


def unit_text(units: str | None, name: str = "") -> str:
    """Display form of a UDUNITS-2 unit string (``"uL-1"`` -> ``"µL$^{-1}$"``, ``"percent"`` -> ``"%"``)."""
    if units is None or str(units).strip() == "":
        return _DIMENSIONLESS.get(name, "dimensionless")
    units = str(units).strip()
    if units == "1" and name in _DIMENSIONLESS:
        return _DIMENSIONLESS[name]
    if units in _SPECIAL_UNITS:
        return _SPECIAL_UNITS[units]
    out = []
    for tok in units.split():
        m = re.fullmatch(r"([A-Za-z]+)(-?\d+)?", tok)
        if not m:
            out.append(tok)
            continue
        base, exp = m.group(1), m.group(2)
        if base.startswith("u") and len(base) > 1:
            base = "µ" + base[1:]
        out.append(base + (f"$^{{{exp}}}$" if exp else ""))
    return " ".join(out)


def axis_label(obj: xr.DataArray | xr.Variable | None, name: str, what: str | None = None) -> str:
    """``"<short name> (<units>)"`` for a variable or coordinate."""
    attrs = dict(getattr(obj, "attrs", {}) or {})
    text = what or SHORT_NAMES.get(name) or attrs.get("long_name") or name
    return f"{text} ({unit_text(attrs.get('units'), name)})"
