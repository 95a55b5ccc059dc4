"""Text summary of a cohort Dataset (printed by ``nksim run``)."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .observables import RESPONSE_CODES


def summary_table(ds: xr.Dataset) -> str:
    """Response counts per assessment (evaluable patients), median peak chimerism, median time to PD."""
    ev = ds.where(ds.evaluable == 1, drop=True) if "evaluable" in ds.coords else ds
    n = ev.sizes["patient"] * ev.sizes["replicate"]
    lines = [f"evaluable simulations: {ev.sizes['patient']} patients x {ev.sizes['replicate']} replicates = {n}", ""]
    header = f"{'assessment':>12} " + " ".join(f"{k:>5}" for k in RESPONSE_CODES)
    lines.append(header)
    for a in ev.assessment.values:
        r = ev.response.sel(assessment=a).values
        lines.append(f"{'day ' + str(int(a)):>12} " + " ".join(f"{int(np.sum(r == c)):>5}" for c in RESPONSE_CODES.values()))
    peak_nk = ev.donor_chimerism_nk.max("time").values.ravel()
    peak_pbmc = ev.donor_chimerism_pbmc.max("time").values.ravel()
    peak_day = ev.donor_chimerism_nk.idxmax("time").values.ravel()
    ttp = ev.time_to_progression.values.ravel()
    n_pd = int(np.isfinite(ttp).sum())
    lines += [
        "",
        f"median peak donor chimerism: {np.median(peak_nk):.3g} % of blood NK, {np.median(peak_pbmc):.3g} % of lymphocytes"
        f" (median peak day {np.median(peak_day):.0f})",
        f"progressed within follow-up: {n_pd}/{n}; median time to PD among them: "
        + (f"{np.median(ttp[np.isfinite(ttp)]):.0f} days" if n_pd else "n/a"),
    ]
    km = _km_median(ttp, float(ds.time.values[-1]))
    lines.append(f"median progression-free time (Kaplan-Meier, censored at day {ds.time.values[-1]:.0f}): {km}")
    return "\n".join(lines)


def _km_median(ttp: np.ndarray, end: float) -> str:
    from scipy.stats import CensoredData, ecdf

    if ttp.size == 0:
        return "n/a"
    observed = np.isfinite(ttp)
    times = np.where(observed, ttp, end)
    data = CensoredData(uncensored=times[observed], right=times[~observed])
    sf = ecdf(data).sf
    below = np.nonzero(sf.probabilities <= 0.5)[0]
    return f"{sf.quantiles[below[0]]:.0f} days" if below.size else f"not reached (> {end:.0f} days)"
