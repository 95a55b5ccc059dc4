"""Axis-label tables and helpers: short names, log-scale variables, what a dimensionless variable counts.

Output variables take their labels from their declarations in :mod:`nksim.quantities`; sweep
summary metrics and schedule factors are labelled here. Used by every figure of
:mod:`nksim.plot` for axis labels and default scales.
"""
from __future__ import annotations

import re

import xarray as xr

from ..quantities import all_variables

_VARIABLES = all_variables()

#: Variables drawn on a log scale by default (chimerism and cell counts), from :mod:`nksim.quantities`.
LOG_VARIABLES = frozenset(name for name, v in _VARIABLES.items() if v.log)

#: Labels of what figures show besides output variables: sweep-summary metrics
#: (:data:`nksim.sweep.summaries.METRICS`) and schedule factors (:mod:`nksim.sweep.factors`).
_SWEEP_LABELS = {
    "p_pd_first": ("P(PD at first assessment)", "probability"),
    "p_cr_first": ("P(CR at first assessment)", "probability"),
    "pfs_landmark": ("P(progression-free at landmark)", "probability"),
    "median_pfs": ("median progression-free time", None),
    "peak_chimerism_nk": ("peak donor chimerism, blood NK", None),
    "peak_chimerism_pbmc": ("peak donor chimerism, blood lymphocytes", None),
    "donor_nk_auc": ("donor NK AUC in blood", None),
    "interval": ("interval between infusions", None),
    "dose_split": ("dose split", None),
    "gap": ("gap after lymphodepletion", None),
    "total_dose": ("total NK dose", None),
    "first_dose_pct": ("first dose share", None),
    "n_infusions": ("number of infusions", "count"),
    "nk_product": ("NK product", None),
    "cytokine": ("cytokine support", None),
    "cytokine_course": ("cytokine course", None),
    "rmst_landmark": ("restricted mean progression-free time", None),
}
#: Paired contrasts of sweep summaries (``<contrast>_diff``, :data:`nksim.sweep.summaries.CONTRASTS`).
_CONTRAST_SHORT = {
    "pfs_landmark": ("Δ P(progression-free at landmark)", "probability"),
    "p_pd_first": ("Δ P(PD at first assessment)", "probability"),
    "p_cr_first": ("Δ P(CR at first assessment)", "probability"),
    "rmst_landmark": ("Δ restricted mean progression-free time", None),
    "blast_change_d28": ("Δ day-28 blast change", None),
    "peak_chimerism_nk_d28": ("Δ peak chimerism, blood NK, days 0-28", None),
    "auc_chimerism_nk_d28": ("Δ chimerism AUC, blood NK, days 0-28", None),
    "peak_chimerism_pbmc_d28": ("Δ peak chimerism, blood lymphocytes, days 0-28", None),
    "auc_chimerism_pbmc_d28": ("Δ chimerism AUC, blood lymphocytes, days 0-28", None),
}
_SWEEP_LABELS |= {f"{k}_diff": v for k, v in _CONTRAST_SHORT.items()}

#: Short axis names (the title of a panel is the variable's ``long_name``).
SHORT_NAMES = {name: v.short for name, v in _VARIABLES.items()} | {k: v[0] for k, v in _SWEEP_LABELS.items()}

#: What a dimensionless ("1") variable counts, for axis labels.
_DIMENSIONLESS = ({name: v.counts for name, v in _VARIABLES.items() if v.counts}
                  | {k: v[1] for k, v in _SWEEP_LABELS.items() if v[1]})

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
