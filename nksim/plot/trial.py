"""The multi-panel summary figure of a cohort run, written by ``nksim run`` (:func:`trial_figure`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..trial_reference import run_count

if TYPE_CHECKING:  # pragma: no cover
    from ..trial_reference import TrialReference

from ..observables import km_curve
from ._data import _pick, _samples, _stats
from ._protocol import _mark_protocol
from ._style import GROUP_COLOURS, TIME_LABEL, _as_str
from .km import km_plot
from .swimmer import _observed_axes, _swimmer_axes, _swimmer_handles

#: Default detection limit of donor chimerism (percent): a typical limit of STR/qPCR chimerism
#: assays (0.01 % = 1 donor cell in 10^4). Values below it are not drawn.
CHIMERISM_DETECTION_LIMIT_PCT = 0.01


def above_detection(values: np.ndarray, limit: float) -> np.ndarray:
    """``values`` as float with everything below ``limit`` (or NaN) set to NaN: not drawn.

    A curve that falls below the limit ends there (and reappears only if it rises above it
    again); nothing is drawn at a floor value.
    """
    v = np.array(values, dtype=float, copy=True)
    with np.errstate(invalid="ignore"):
        v[~(v >= limit)] = np.nan
    return v


def detectable_band(med: np.ndarray, lo: np.ndarray, hi: np.ndarray, limit: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and band masked at a detection ``limit``.

    The median is drawn only where it is at or above the limit; the band only where its upper
    edge is, with its lower edge cut at the limit (the part below is undetectable).
    """
    m = above_detection(med, limit)
    h = above_detection(hi, limit)
    lo_cut = np.where(np.isnan(h), np.nan, np.maximum(np.asarray(lo, dtype=float), limit))
    return m, lo_cut, h


def patient_colours(patients) -> dict[str, str]:
    """One colour per patient (marrow-blast curve and its PD threshold share it)."""
    return {_as_str(p): GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, p in enumerate(patients)}


def _band(ax: Axes, da: xr.DataArray, colour: str, label: str, log: bool = False,
          detection_limit: float | None = None) -> None:
    """Median over patients and replicates with the 10-90 % band (masked below ``detection_limit``)."""
    med, (lo, hi) = _stats(_samples(da, "time"), [0.1, 0.9])
    if detection_limit is not None:
        med, lo, hi = detectable_band(med, lo, hi, detection_limit)
    t = da["time"].values
    ax.fill_between(t, lo, hi, color=colour, alpha=0.25, lw=0)
    ax.plot(t, med, color=colour, lw=1.8, label=label, gid=f"median:{da.name}")
    if log:
        ax.set_yscale("log")


def trial_figure(ds: xr.Dataset, *, xmax: float = 120.0,
                 detection_limit_pct: float = CHIMERISM_DETECTION_LIMIT_PCT,
                 reference: TrialReference | None = None) -> Figure:
    """Multi-panel summary of a cohort run (written by ``nksim run``).

    Panels: donor chimerism (blood NK, PBMC), donor NK per uL blood by dose group, host
    lymphocytes and IL-15, marrow blasts per patient with their PD thresholds (same colour),
    a swimmer plot of replicate 0 (each stretch coloured by the status known at its start,
    see :func:`nksim.plot.swimmer.response_segments`; not-evaluable patients hatched) and
    Kaplan-Meier progression-free curves per dose group. Grey band: Flu/Cy lymphodepletion;
    dotted lines: NK infusions (both in the legends).

    ``detection_limit_pct``: donor chimerism (percent) below which nothing is drawn, default
    0.01 % (:data:`CHIMERISM_DETECTION_LIMIT_PCT`, a typical STR/qPCR limit); a curve ends
    where it falls below it, and the limit is drawn and stated in the legend.

    ``reference`` (:func:`nksim.trial_reference.trial_reference`): the observed trial beside the
    run. The swimmer panel gains the trial's own lanes (same patient order), its title the
    trial's counts beside this run's and the model's 90 % predictive intervals, and the
    Kaplan-Meier panel the trial's observed curve (black).
    """
    if not detection_limit_pct > 0:
        raise ValueError(f"detection_limit_pct must be a positive percentage, got {detection_limit_pct!r}")
    fig, axes = plt.subplots(2, 3, figsize=(15, 9), constrained_layout=True)
    groups = list(dict.fromkeys(ds["group"].values.tolist()))
    gcol = {g: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, g in enumerate(groups)}
    tsel = ds.sel(time=slice(None, xmax))
    nrep = ds.sizes["replicate"]
    band_note = f" (median, 10-90 % over {ds.sizes['patient']} patients x {nrep} replicates)"

    ax = axes[0, 0]
    lim = float(detection_limit_pct)
    _band(ax, tsel.donor_chimerism_nk, "C3", "of blood NK", log=True, detection_limit=lim)
    _band(ax, tsel.donor_chimerism_pbmc, "C0", "of blood lymphocytes", log=True, detection_limit=lim)
    ax.axhline(lim, color="0.3", lw=0.8, ls="-.", gid="detection_limit")
    prot = _mark_protocol(ax, ds)
    ax.set_ylim(bottom=lim / 2)
    ax.set_xlim(float(tsel.time.values[0]), float(tsel.time.values[-1]))
    ax.set(xlabel=TIME_LABEL, ylabel=f"donor chimerism (%; drawn above {lim:g} %)",
           title="Donor chimerism in blood" + "\n" + band_note)
    h, _ = ax.get_legend_handles_labels()
    h.append(Line2D([], [], color="0.3", lw=0.8, ls="-.",
                    label=f"detection limit {lim:g} % (STR/qPCR);\ncurves end below it"))
    ax.legend(handles=h + prot, loc="upper right", fontsize=7)

    ax = axes[0, 1]
    for g in groups:
        sub = tsel.where(tsel.group == g, drop=True)
        _band(ax, sub.donor_nk_blood.clip(min=1e-3), gcol[g], f"group {g}", log=True)
    prot = _mark_protocol(ax, ds)
    ax.set(xlabel=TIME_LABEL, ylabel="donor NK (cells µL$^{-1}$)", title="Donor NK cells in blood by dose group")
    ax.set_ylim(bottom=1e-2)
    h, _ = ax.get_legend_handles_labels()
    ax.legend(handles=h + prot, fontsize=7)

    ax = axes[0, 2]
    host = tsel.host_nk_blood + tsel.host_t_blood
    if "host_treg_blood" in tsel:  # since 0.6.0 (files of earlier versions have no Tregs)
        host = host + tsel.host_treg_blood
    _band(ax, host, "C2", "host lymphocytes (NK + T + Tregs)" if "host_treg_blood" in tsel else
          "host lymphocytes (NK + T)", log=True)
    prot = _mark_protocol(ax, ds)
    ax.set(xlabel=TIME_LABEL, ylabel="host lymphocytes (cells µL$^{-1}$)", title="Host lymphodepletion and IL-15")
    ax2 = ax.twinx()
    _band(ax2, tsel.il15, "C1", "IL-15")
    ax2.set_ylabel("IL-15 (fold of baseline)", color="C1")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2 + prot, l1 + l2 + [x.get_label() for x in prot], fontsize=7, loc="lower right")

    ax = axes[1, 0]
    r0 = ds.isel(replicate=0)
    pcol = patient_colours(ds.patient.values)
    t0, t1 = float(ds.time.values[0]), float(ds.time.values[-1])
    handles = []
    for p in ds.patient.values:
        pc = r0.sel(patient=p)
        pid = _as_str(p)
        c = pcol[pid]
        ax.plot(pc.time, pc.marrow_blast_pct, color=c, lw=1.2, alpha=0.9, gid=f"blasts:{pid}")
        thr = float(pc.pd_threshold_pct)
        ax.hlines(thr, t0, t1, color=c, lw=0.8, ls="--", alpha=0.8, gid=f"pd_threshold:{pid}")
        ax.annotate(pid, (t1, thr), xytext=(2, 0), textcoords="offset points", fontsize=6, color=c, va="center",
                    annotation_clip=False)
        handles.append(Line2D([], [], color=c, lw=1.2, label=f"{pid} ({_as_str(pc.group.values)})"))
    for d in ds.assessment.values:
        ax.axvline(d, color="0.6", lw=0.5)
    handles.append(Line2D([], [], color="0.3", lw=0.8, ls="--", label="PD threshold (patient's colour)"))
    handles.append(Line2D([], [], color="0.6", lw=0.5, label="assessment day"))
    ax.set(xlabel=TIME_LABEL, ylabel="marrow blasts (% of nucleated cells)",
           title="Marrow blasts per patient (replicate 0)\ndashed: that patient's PD threshold")
    ax.legend(handles=handles, fontsize=6, ncol=2, loc="upper left", framealpha=0.85)

    rep0 = ds["replicate"].values[0]
    sub, _ = _pick(ds, ["response", "time_to_progression"], {"patient", "assessment"}, {"replicate": rep0})
    t_end = float(ds["time"].values.max())
    if reference is None:
        ax = axes[1, 1]
        _swimmer_axes(ax, sub, t_end, legend=False)
        ax.legend(handles=_swimmer_handles(observed=False), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(f"Response per patient (replicate {_as_str(rep0)}; NE: not evaluable)\n"
                     "colour: status known at the start of each stretch", fontsize=10)
    else:
        _swimmer_beside_trial(axes[1, 1], sub, t_end, _as_str(rep0), reference)

    ax = axes[1, 2]
    km_plot(ds, by="group", ax=ax, landmark=270.0)
    title = f"Progression-free (evaluable patients x {nrep} replicates)"
    if reference is not None:
        ttp, last = reference.progression()
        t, sv = km_curve(ttp, last)
        ax.step(t, sv, where="post", color="k", lw=2.0, ls="--", gid="km:observed",
                label=f"trial, observed ({reference.trial}; n = {ttp.size})")
        ax.legend(fontsize=7, loc="lower left")
        title += "\nblack dashed: the trial"
    ax.set_title(title)

    fig.suptitle(f"nksim: protocol '{ds.attrs.get('protocol', '?')}', parameters '{ds.attrs.get('parameter_set', '?')}'"
                 f" ({ds.attrs.get('parameter_status', '')}), seed {ds.attrs.get('seed', '?')}", fontsize=12)
    return fig


def _swimmer_beside_trial(ax: Axes, sub: xr.Dataset, t_end: float, rep: str, reference: TrialReference) -> None:
    """Simulated lanes (replicate ``rep``, thick) with the trial's own lanes (thin, below each), in ``ax``.

    The title gives the trial's counts beside this run's and the model's 90 % predictive
    intervals (:func:`nksim.trial_reference.trial_reference`).
    """
    pids = _swimmer_axes(ax, sub, t_end, legend=False, lane=(-0.1, 0.5))
    _observed_axes(ax, list(reference.outcomes), pids, lane=(0.27, 0.16), own_axes=False)
    ax.legend(handles=_swimmer_handles(observed=True), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    lines = [f"{r.label.strip()}: trial {r.observed:g}, this run {run_count(r.simulated)}"
             + (f", model 90 % PI {round(r.interval[0]):d}-{round(r.interval[1]):d}" if r.interval else "")
             for r in reference.rows[:2]]
    ax.set_title(f"Response per patient: simulated (replicate {rep}, thick) and\nthe trial ({reference.trial}, "
                 "thin); NE: not evaluable\n" + "\n".join(lines), fontsize=8)
