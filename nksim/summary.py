"""Text summary of a cohort Dataset (printed by ``nksim run``)."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .observables import RESPONSE_CODES, km_median


def summary_table(ds: xr.Dataset) -> str:
    """Response counts per assessment (evaluable patients), median peak chimerism, median time to PD."""
    ev = ds.where(ds.evaluable == 1, drop=True) if "evaluable" in ds.coords else ds
    n = ev.sizes["patient"] * ev.sizes["replicate"]
    lines = [f"evaluable simulations: {ev.sizes['patient']} patients x {ev.sizes['replicate']} replicates = {n}", ""]
    header = f"{'assessment':>12} " + " ".join(f"{k:>5}" for k in RESPONSE_CODES)
    lines.append(header)
    for a in ev.assessment.values:
        r = ev.response.sel(assessment=a).values
        lines.append(f"{'day ' + str(int(a)):>12} "
                     + " ".join(f"{int(np.sum(r == c)):>5}" for c in RESPONSE_CODES.values()))
    peak_nk = ev.donor_chimerism_nk.max("time").values.ravel()
    peak_pbmc = ev.donor_chimerism_pbmc.max("time").values.ravel()
    peak_day = ev.donor_chimerism_nk.idxmax("time").values.ravel()
    ttp = ev.time_to_progression.values.ravel()
    n_pd = int(np.isfinite(ttp).sum())
    lines += [
        "",
        f"median peak donor chimerism: {np.median(peak_nk):.3g} % of blood NK, "
        f"{np.median(peak_pbmc):.3g} % of lymphocytes"
        f" (median peak day {np.median(peak_day):.0f})",
        f"progressed within follow-up: {n_pd}/{n}; median time to PD among them: "
        + (f"{np.median(ttp[np.isfinite(ttp)]):.0f} days" if n_pd else "n/a"),
    ]
    end = float(ds.time.values[-1])
    med = km_median(ttp, end)
    km = "n/a" if np.isnan(med) else (f"{med:.0f} days" if np.isfinite(med) else f"not reached (> {end:.0f} days)")
    lines.append(f"median progression-free time (Kaplan-Meier, censored at day {end:.0f}): {km}")
    return "\n".join(lines)
