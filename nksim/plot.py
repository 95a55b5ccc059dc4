"""Figures from nksim Datasets (matplotlib). Each function returns a Figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .observables import RESPONSE_CODES  # noqa: E402

RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "PD": "#d73027"}
GROUP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def _events(ds: xr.Dataset) -> tuple[list[float], list[float]]:
    import json

    ld, inf = set(), set()
    for evs in json.loads(ds.attrs.get("protocol_events", "{}")).values():
        for day, kind, *_ in evs:
            (inf if kind == "nk_infusion" else ld).add(float(day))
    return sorted(ld), sorted(inf)


def _mark_protocol(ax, ds: xr.Dataset) -> None:
    ld, inf = _events(ds)
    if ld:
        ax.axvspan(min(ld), max(ld) + 1, color="0.85", zorder=0, lw=0)
    for d in inf:
        ax.axvline(d, color="0.4", ls=":", lw=0.8, zorder=0)


def _band(ax, da: xr.DataArray, colour: str, label: str, log: bool = False) -> None:
    """Median over patients and replicates with the 10-90 % band."""
    flat = da.stack(sim=("patient", "replicate")).transpose("time", "sim").values
    t = da["time"].values
    lo, med, hi = np.nanpercentile(flat, [10, 50, 90], axis=1)
    ax.fill_between(t, lo, hi, color=colour, alpha=0.25, lw=0)
    ax.plot(t, med, color=colour, lw=1.8, label=label)
    if log:
        ax.set_yscale("log")


def trial_figure(ds: xr.Dataset, *, xmax: float = 120.0) -> Figure:
    """Multi-panel summary of a cohort run.

    Panels: donor chimerism (blood NK, PBMC), donor NK per uL blood, host lymphocytes and
    IL-15, marrow blasts per patient with their PD thresholds, and the response of each
    patient at each assessment. Grey band: lymphodepletion; dotted lines: NK infusions.
    """
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
    groups = list(dict.fromkeys(ds["group"].values.tolist()))
    gcol = {g: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, g in enumerate(groups)}
    tsel = ds.sel(time=slice(None, xmax))
    nrep = ds.sizes["replicate"]
    band_note = f" (median, 10-90 % over {ds.sizes['patient']} patients x {nrep} replicates)"

    ax = axes[0, 0]
    _band(ax, tsel.donor_chimerism_nk.clip(min=1e-4), "C3", "of blood NK", log=True)
    _band(ax, tsel.donor_chimerism_pbmc.clip(min=1e-4), "C0", "of blood lymphocytes", log=True)
    _mark_protocol(ax, ds)
    ax.set(xlabel="day since first NK infusion", ylabel="donor chimerism (%)", title="Donor chimerism in blood" + "\n" + band_note)
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[0, 1]
    for g in groups:
        sub = tsel.where(tsel.group == g, drop=True)
        _band(ax, sub.donor_nk_blood.clip(min=1e-3), gcol[g], f"group {g}", log=True)
    _mark_protocol(ax, ds)
    ax.set(xlabel="day since first NK infusion", ylabel="donor NK (cells uL$^{-1}$)", title="Donor NK cells in blood by dose group")
    ax.set_ylim(bottom=1e-2)
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    _band(ax, tsel.host_nk_blood + tsel.host_t_blood, "C2", "host lymphocytes (NK + T)", log=True)
    _mark_protocol(ax, ds)
    ax.set(xlabel="day since first NK infusion", ylabel="host lymphocytes (cells uL$^{-1}$)", title="Host lymphodepletion and IL-15")
    ax2 = ax.twinx()
    _band(ax2, tsel.il15, "C1", "IL-15")
    ax2.set_ylabel("IL-15 (fold of baseline)", color="C1")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")

    ax = axes[1, 0]
    r0 = ds.isel(replicate=0)
    for i, p in enumerate(ds.patient.values):
        pc = r0.sel(patient=p)
        c = gcol[str(pc.group.values)]
        ax.plot(pc.time, pc.marrow_blast_pct, color=c, lw=1.2, alpha=0.9)
        ax.hlines(float(pc.pd_threshold_pct), pc.time.values[0], pc.time.values[-1], color=c, lw=0.6, ls="--", alpha=0.6)
    for d in ds.assessment.values:
        ax.axvline(d, color="0.6", lw=0.5)
    ax.set(xlabel="day since first NK infusion", ylabel="marrow blasts (% of nucleated cells)",
           title="Marrow blasts per patient (replicate 0)\ndashed: each patient's PD threshold")
    ax.legend(handles=[Patch(color=gcol[g], label=f"group {g}") for g in groups], fontsize=8)

    ax = axes[1, 1]
    codes = r0.response.values.astype(float)
    codes[codes < 0] = np.nan
    cmap = ListedColormap([RESPONSE_COLOURS[k] for k in RESPONSE_CODES])
    ax.imshow(codes, aspect="auto", cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
    ax.set_xticks(range(ds.sizes["assessment"]), [f"d{int(a)}" for a in ds.assessment.values])
    labels = [f"{p} ({g}){'' if e else ' NE'}" for p, g, e in zip(ds.patient.values, ds.group.values, ds.evaluable.values)]
    ax.set_yticks(range(ds.sizes["patient"]), labels, fontsize=8)
    ax.set(xlabel="assessment day", title="Response per patient (replicate 0; NE: not evaluable)")
    ax.legend(handles=[Patch(color=c, label=k) for k, c in RESPONSE_COLOURS.items()], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))

    ax = axes[1, 2]
    ttp = ds.time_to_progression.where(ds.evaluable == 1).values.ravel()
    ttp = ttp[~np.isnan(ttp)] if np.isfinite(ttp).any() else np.array([])
    n_eval = int((ds.evaluable == 1).sum()) * nrep
    t_grid = ds.time.values[ds.time.values >= 0]
    pf = [1.0 - np.sum(ttp <= t) / n_eval for t in t_grid] if n_eval else []
    ax.step(t_grid, pf, where="post", color="k")
    ax.set(xlabel="day since first NK infusion", ylabel="fraction progression-free",
           title=f"Progression-free (evaluable patients x {nrep} replicates)", ylim=(0, 1.02))
    ax.axvline(270, color="C3", ls="--", lw=0.8, label="9 months")
    ax.legend(fontsize=8)

    fig.suptitle(f"nksim: protocol '{ds.attrs.get('protocol', '?')}', parameters '{ds.attrs.get('parameter_set', '?')}'"
                 f" ({ds.attrs.get('parameter_status', '')}), seed {ds.attrs.get('seed', '?')}", fontsize=12)
    return fig
