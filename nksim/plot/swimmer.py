"""Swimmer plots: one lane per patient, simulated and observed (:func:`swimmer_plot`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..observables import RESPONSE_CODES, RESPONSE_FILL
from ._data import _need, _pick
from ._style import (
    FOLLOW_UP_COLOUR,
    NOT_ASSESSED_COLOUR,
    RESPONSE_COLOURS,
    TIME_LABEL,
    _as_str,
    _finish,
    _given_axes,
    _provenance,
)


def _response_codes(da: xr.DataArray) -> dict[int, str]:
    """Code -> name from the ``flag_values``/``flag_meanings`` attributes (else RESPONSE_CODES)."""
    fv, fm = da.attrs.get("flag_values"), da.attrs.get("flag_meanings")
    if fv is not None and fm:
        names = str(fm).split()
        vals = list(np.atleast_1d(np.asarray(fv)).astype(int))
        if len(names) == len(vals):
            return dict(zip(vals, names))
    return {v: k for k, v in RESPONSE_CODES.items()}


def _lane_label(pid: str, group: Any, evaluable: Any) -> str:
    g = f" ({group})" if group not in (None, "") else ""
    ne = " NE" if evaluable is not None and not bool(evaluable) else ""
    return f"{pid}{g}{ne}"


def _swimmer_axes(ax: Axes, sub: xr.Dataset, t_end: float | None = None, *, legend: bool = True) -> list[str]:
    """Draw simulated lanes (one per patient, follow-up to ``t_end``) into ``ax``; returns the patient ids."""
    resp = sub["response"]
    if "patient" not in resp.dims:
        sub = sub.expand_dims("patient")
        resp = sub["response"]
    resp = resp.transpose("patient", "assessment")
    codes = _response_codes(resp)
    assess = np.asarray(sub["assessment"].values, dtype=float)
    ttp = np.atleast_1d(np.asarray(sub["time_to_progression"].values, dtype=float))
    if t_end is None:
        t_end = float(np.nanmax(sub["time"].values)) if "time" in sub.coords else float(assess.max())
    pids = [_as_str(p) for p in np.atleast_1d(sub["patient"].values)]
    n = len(pids)
    groups = np.atleast_1d(sub["group"].values) if "group" in sub.coords else [None] * n
    evaluable = np.atleast_1d(sub["evaluable"].values) if "evaluable" in sub.coords else [None] * n
    h = 0.7
    for i, pid in enumerate(pids):
        segs, cols = [], []
        start = 0.0
        for j, a in enumerate(assess):
            c = int(resp.values[i, j])
            name = codes.get(c)
            cols.append(RESPONSE_COLOURS.get(name, NOT_ASSESSED_COLOUR) if c != RESPONSE_FILL else NOT_ASSESSED_COLOUR)
            segs.append((start, max(a - start, 0.0)))
            start = a
        if t_end > start:
            segs.append((start, t_end - start))
            cols.append(FOLLOW_UP_COLOUR)
        ax.broken_barh(segs, (i - h / 2, h), facecolors=cols, edgecolors="white", linewidth=0.6, gid=f"lane:{pid}")
        if np.isfinite(ttp[i]):
            ax.plot(ttp[i], i, marker="X", color="k", ms=7, ls="none", zorder=3, gid=f"progression:{pid}")
        else:
            ax.plot(t_end, i, marker=">", color="k", ms=6, ls="none", zorder=3, gid=f"censored:{pid}")
    ax.set_yticks(range(n), [_lane_label(p, g, e) for p, g, e in zip(pids, groups, evaluable)], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, t_end * 1.03)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("patient (id, dose group)")
    if legend:
        ax.legend(handles=_swimmer_handles(observed=False), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return pids


def _swimmer_handles(observed: bool) -> list[Any]:
    h: list[Any] = [Patch(color=c, label=k) for k, c in RESPONSE_COLOURS.items()]
    h.append(Patch(color=NOT_ASSESSED_COLOUR, label="not assessed"))
    h.append(Patch(facecolor=FOLLOW_UP_COLOUR, edgecolor="0.6", label="follow-up without assessment"))
    h.append(Line2D([], [], marker="X", color="k", ls="none", label="progression"))
    h.append(Line2D([], [], marker=">", color="k", ls="none", label="censored (no progression)"))
    if observed:
        h.append(Line2D([], [], marker="|", color="k", ls="-", label="progression interval (observed)"))
        h.append(Line2D([], [], marker="o", mfc="white", color="k", ls="none", label="lost to follow-up"))
        h.append(Patch(facecolor="white", edgecolor="0.5", hatch="///", label="not evaluable"))
    return h


def _outcomes(observed: Any) -> list[Any]:
    items = getattr(observed, "outcomes", observed)
    try:
        items = list(items)
    except TypeError:
        raise ValueError("observed must be an ObservedTrial (with .outcomes) or a sequence of patient outcomes, "
                         f"got {type(observed).__name__}") from None
    for o in items:
        if not hasattr(o, "patient"):
            raise ValueError(f"observed outcome {o!r} has no 'patient' attribute")
    return items


def _observed_axes(ax: Axes, outcomes: list[Any], order: Sequence[str]) -> list[str]:
    """Observed lanes: first response up to the first assessment, then follow-up; progression interval."""
    by_id = {str(o.patient): o for o in outcomes}
    ids = [p for p in order if p in by_id] + [p for p in by_id if p not in order]
    h = 0.7
    t_max = 0.0
    not_evaluable: list[int] = []
    for i, pid in enumerate(ids):
        o = by_id[pid]
        fa = getattr(o, "first_assessment_day", None)
        lf = getattr(o, "last_followup_day", None)
        lo, hi = getattr(o, "progression_day_lo", None), getattr(o, "progression_day_hi", None)
        end = max([float(x) for x in (fa, lf, lo, hi) if x is not None] or [0.0])
        t_max = max(t_max, end)
        first = getattr(o, "first_response", None)
        evaluable = getattr(o, "evaluable", True)
        if evaluable is False or evaluable == 0:
            not_evaluable.append(i)
            continue
        segs, cols = [], []
        if fa is not None:
            segs.append((0.0, float(fa)))
            cols.append(RESPONSE_COLOURS.get(str(first), NOT_ASSESSED_COLOUR) if first else NOT_ASSESSED_COLOUR)
            if end > float(fa):
                segs.append((float(fa), end - float(fa)))
                cols.append(FOLLOW_UP_COLOUR)
        else:
            segs.append((0.0, max(end, 1.0)))
            cols.append(FOLLOW_UP_COLOUR)
        ax.broken_barh(segs, (i - h / 2, h), facecolors=cols, edgecolors="white", linewidth=0.6,
                       gid=f"observed:{pid}")
        progressed = getattr(o, "progressed", None)
        if progressed and (lo is not None or hi is not None):
            a = float(lo if lo is not None else hi)
            b = float(hi if hi is not None else lo)
            ax.plot([a, b], [i, i], color="k", lw=1.2, marker="|", ms=8, zorder=3)
            ax.plot((a + b) / 2, i, marker="X", color="k", ms=7, ls="none", zorder=4)
        elif getattr(o, "lost_to_follow_up", False):
            ax.plot(end, i, marker="o", mfc="white", color="k", ms=6, ls="none", zorder=3)
        elif progressed is False:
            ax.plot(end, i, marker=">", color="k", ms=6, ls="none", zorder=3)
        else:
            ax.text(end, i, " ?", va="center", fontsize=8)
    for i in not_evaluable:  # hatched over the whole follow-up range
        ax.broken_barh([(0.0, max(t_max, 1.0))], (i - h / 2, h), facecolors="white", edgecolors="0.5", hatch="///",
                       linewidth=0.6, gid=f"observed:{ids[i]}")
    labels = [_lane_label(p, getattr(by_id[p], "dose_group", None), getattr(by_id[p], "evaluable", None)) for p in ids]
    ax.set_yticks(range(len(ids)), labels, fontsize=8)
    ax.set_ylim(len(ids) - 0.5, -0.5)
    ax.set_xlim(0, max(t_max, 1.0) * 1.05)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("patient (id, dose group)")
    return ids


def swimmer_plot(ds: xr.Dataset, observed: Any = None, *, replicate: Any = 0, select: Mapping[str, Any] | None = None,
                 ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """Swimmer plot: one lane per patient of one simulated replicate, beside the observed trial.

    Each lane runs from the first infusion (day 0) to the end of follow-up; the segment ending
    at an assessment is coloured by the response called there (CR/PR/SD/PD from the
    ``response`` variable's ``flag_values``/``flag_meanings``; grey: not assessed), the part
    after the last assessment is light grey. X: progression (``time_to_progression``); >:
    censored at the end without progression.

    ``observed``: an ``nksim.calibration.data.ObservedTrial`` (or any object with
    ``.outcomes``, each with ``patient``, ``evaluable``, ``dose_group``, ``first_response``,
    ``first_assessment_day``, ``progressed``, ``progression_day_lo``/``_hi``,
    ``last_followup_day``, ``lost_to_follow_up``) drawn in a second panel, lanes in the same
    patient order: first response up to the first assessment, then follow-up; the progression
    interval [lo, hi] with X at its middle; o: lost to follow-up; hatched: not evaluable.

    ``replicate`` (value of the ``replicate`` coordinate) and ``select`` (other dims, e.g.
    ``{"scenario": 3, "draw": 0}`` for a sweep store; default: their first element) choose the
    simulation shown. ``ax``: one Axes, or two when ``observed`` is given.
    """
    _need(ds, ["response", "time_to_progression"])
    sel = dict(select or {})
    if "replicate" in ds.dims:
        sel.setdefault("replicate", replicate)
    sub, notes = _pick(ds, ["response", "time_to_progression"], {"patient", "assessment"}, sel)
    outcomes = _outcomes(observed) if observed is not None else None
    own = ax is None
    n = sub.sizes.get("patient", 1)
    if own:
        ncols = 2 if outcomes is not None else 1
        fig, axs = plt.subplots(1, ncols, figsize=(6.0 * ncols + 2.2, 0.35 * n + 2.0), constrained_layout=True,
                                squeeze=False)
        axes = list(axs.ravel())
    else:
        axes = _given_axes(ax, 2 if outcomes is not None else 1)
        fig = axes[0].figure
    t_end = float(np.nanmax(ds["time"].values)) if "time" in ds.coords else None
    pids = _swimmer_axes(axes[0], sub, t_end, legend=outcomes is None)
    axes[0].set_title("Simulated" + (f" ({', '.join(notes)})" if notes else ""), fontsize=9)
    if outcomes is not None:
        _observed_axes(axes[1], outcomes, pids)
        src = getattr(observed, "source", None) or getattr(observed, "name", None)
        axes[1].set_title("Observed trial outcomes" + (f" ({src})" if src else ""), fontsize=9, wrap=True)
        hi = max(axes[0].get_xlim()[1], axes[1].get_xlim()[1])
        for a in axes[:2]:
            a.set_xlim(0, hi)
        axes[1].legend(handles=_swimmer_handles(observed=True), fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0))
    caption = ("Swimmer plot: response at each assessment (segment ending at the assessment), progression (X) and "
               "censoring (>) per patient" + ("; right: observed outcomes" if outcomes is not None else "")
               + f".\n{_provenance(ds)}")
    return _finish(fig, own, caption)
