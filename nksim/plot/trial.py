"""The multi-panel summary figure of a cohort run, written by ``nksim run`` (:func:`trial_figure`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._data import _pick, _samples, _stats
from ._protocol import _mark_protocol
from ._style import GROUP_COLOURS, TIME_LABEL, _as_str
from .km import km_plot
from .swimmer import _swimmer_axes, _swimmer_handles


def _band(ax: Axes, da: xr.DataArray, colour: str, label: str, log: bool = False) -> None:
    """Median over patients and replicates with the 10-90 % band."""
    med, (lo, hi) = _stats(_samples(da, "time"), [0.1, 0.9])
    t = da["time"].values
    ax.fill_between(t, lo, hi, color=colour, alpha=0.25, lw=0)
    ax.plot(t, med, color=colour, lw=1.8, label=label)
    if log:
        ax.set_yscale("log")


def trial_figure(ds: xr.Dataset, *, xmax: float = 120.0) -> Figure:
    """Multi-panel summary of a cohort run (written by ``nksim run``).

    Panels: donor chimerism (blood NK, PBMC), donor NK per uL blood by dose group, host
    lymphocytes and IL-15, marrow blasts per patient with their PD thresholds, a swimmer plot
    of replicate 0 and Kaplan-Meier progression-free curves per dose group. Grey band:
    lymphodepletion; dotted lines: NK infusions.
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
    ax.set(xlabel=TIME_LABEL, ylabel="donor chimerism (%)", title="Donor chimerism in blood" + "\n" + band_note)
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[0, 1]
    for g in groups:
        sub = tsel.where(tsel.group == g, drop=True)
        _band(ax, sub.donor_nk_blood.clip(min=1e-3), gcol[g], f"group {g}", log=True)
    _mark_protocol(ax, ds)
    ax.set(xlabel=TIME_LABEL, ylabel="donor NK (cells µL$^{-1}$)", title="Donor NK cells in blood by dose group")
    ax.set_ylim(bottom=1e-2)
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    _band(ax, tsel.host_nk_blood + tsel.host_t_blood, "C2", "host lymphocytes (NK + T)", log=True)
    _mark_protocol(ax, ds)
    ax.set(xlabel=TIME_LABEL, ylabel="host lymphocytes (cells µL$^{-1}$)", title="Host lymphodepletion and IL-15")
    ax2 = ax.twinx()
    _band(ax2, tsel.il15, "C1", "IL-15")
    ax2.set_ylabel("IL-15 (fold of baseline)", color="C1")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")

    ax = axes[1, 0]
    r0 = ds.isel(replicate=0)
    for p in ds.patient.values:
        pc = r0.sel(patient=p)
        c = gcol[str(pc.group.values)]
        ax.plot(pc.time, pc.marrow_blast_pct, color=c, lw=1.2, alpha=0.9)
        ax.hlines(float(pc.pd_threshold_pct), pc.time.values[0], pc.time.values[-1], color=c, lw=0.6, ls="--",
                  alpha=0.6)
    for d in ds.assessment.values:
        ax.axvline(d, color="0.6", lw=0.5)
    ax.set(xlabel=TIME_LABEL, ylabel="marrow blasts (% of nucleated cells)",
           title="Marrow blasts per patient (replicate 0)\ndashed: each patient's PD threshold")
    ax.legend(handles=[Patch(color=gcol[g], label=f"group {g}") for g in groups], fontsize=8)

    ax = axes[1, 1]
    rep0 = ds["replicate"].values[0]
    sub, _ = _pick(ds, ["response", "time_to_progression"], {"patient", "assessment"}, {"replicate": rep0})
    _swimmer_axes(ax, sub, float(ds["time"].values.max()), legend=False)
    ax.legend(handles=_swimmer_handles(observed=False), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Response per patient (replicate {_as_str(rep0)}; NE: not evaluable)")

    ax = axes[1, 2]
    km_plot(ds, by="group", ax=ax, landmark=270.0)
    ax.set_title(f"Progression-free (evaluable patients x {nrep} replicates)")

    fig.suptitle(f"nksim: protocol '{ds.attrs.get('protocol', '?')}', parameters '{ds.attrs.get('parameter_set', '?')}'"
                 f" ({ds.attrs.get('parameter_status', '')}), seed {ds.attrs.get('seed', '?')}", fontsize=12)
    return fig
