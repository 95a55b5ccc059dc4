"""Kaplan-Meier progression-free curves with a number-at-risk table (:func:`km_plot`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..observables import km_curve
from ._data import _need, _split
from ._style import TIME_LABEL, _colours, _finish, _provenance


def _end_day(data: xr.Dataset, end_day: float | None) -> float:
    if end_day is not None:
        return float(end_day)
    if "end_day" in data.attrs:
        return float(data.attrs["end_day"])
    if "time" in data.coords:
        return float(np.nanmax(data["time"].values))
    raise ValueError("cannot tell the censoring day: the dataset has no 'time' coordinate or 'end_day' attribute; "
                     "pass end_day=")


def _at_risk(ttp: np.ndarray, end_day: float, day: float) -> int:
    t = np.where(np.isfinite(ttp), ttp, end_day)
    return int(np.sum(t >= day))


def km_plot(data: xr.Dataset, by: str | None = "auto", *, select: Sequence[Any] | None = None,
            end_day: float | None = None, risk_days: Sequence[float] | None = None, evaluable_only: bool = True,
            landmark: float | None = None, ax: Axes | None = None) -> Figure:
    """Kaplan-Meier progression-free curves per scenario (sweep) or dose group (cohort).

    ``data``: any dataset with ``time_to_progression`` (NaN = no progression, censored at
    ``end_day``: default the ``end_day`` attribute or the last ``time``). ``by``: ``"auto"``
    (``scenario`` if that dimension exists, else the ``group`` coordinate, else one pooled
    curve), a dimension or 1-D coordinate name, or None (pooled). Each curve pools every
    other dimension (draws x patients x replicates). ``select`` keeps only the listed values of
    ``by`` (e.g. scenario indices). ``evaluable_only``: drop patients whose ``evaluable``
    coordinate is 0 (trial cohort). Curves come from :func:`nksim.observables.km_curve`
    (the same estimate as ``km_survival``); ``|`` ticks mark censoring; below the curves a
    number-at-risk table (at ``risk_days``, default day 0 and the assessment days) when the
    figure is made here and there are at most 8 curves. ``landmark``: a dashed vertical line
    (default: the ``landmark_day`` attribute of a sweep, if any).
    """
    _need(data, ["time_to_progression"])
    if by == "auto":
        by = "scenario" if "scenario" in data["time_to_progression"].dims else (
            "group" if "group" in data.coords else None)
    if evaluable_only and "evaluable" in data.coords and data["evaluable"].dims == ("patient",):
        keep = np.flatnonzero(np.asarray(data["evaluable"].values) == 1)
        data = data.isel(patient=keep)
    end = _end_day(data, end_day)
    groups = _split(data, by, select)
    cols = _colours(len(groups)) if by else ["k"]
    if risk_days is None:
        risk_days = [0.0] + ([float(a) for a in data["assessment"].values] if "assessment" in data.coords
                             else list(np.linspace(0, end, 5)[1:]))
    risk_days = [float(d) for d in risk_days if d <= end]
    own = ax is None
    table = own and len(groups) <= 8
    if own:
        if table:
            fig, (ax, tab) = plt.subplots(2, 1, figsize=(7.5, 4.6 + 0.22 * len(groups)), constrained_layout=True,
                                          gridspec_kw={"height_ratios": [4.0, 0.45 + 0.22 * len(groups)]}, sharex=True)
        else:
            fig, ax = plt.subplots(figsize=(8.5, 5.0), constrained_layout=True)
    fig = ax.figure
    curves = []
    for (key, label, sub), c in zip(groups, cols):
        ttp = np.asarray(sub["time_to_progression"].values, dtype=float).ravel()
        t, s = km_curve(ttp, end)
        xs, ys = (np.append(t, end), np.append(s, s[-1])) if end > t[-1] else (t, s)
        n_ev = int(np.isfinite(ttp).sum())
        ax.step(xs, ys, where="post", color=c, lw=1.6, gid=f"km:{key}",
                label=f"{label if by else 'all'} (n = {ttp.size}, {n_ev} progressed)")
        cens = np.where(np.isfinite(ttp), np.nan, end)
        cens = np.unique(cens[np.isfinite(cens)])
        if cens.size:
            ax.plot(cens, s[np.searchsorted(t, cens, side="right") - 1], ls="none", marker="|", ms=9, color=c)
        curves.append((key if by in ("group", None) else f"{'#' if by == 'scenario' else ''}{key}", c, ttp))
    if landmark is None and "landmark_day" in data.attrs:
        landmark = float(data.attrs["landmark_day"])
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none", marker="|", ms=9, color="0.3", label="censored"))
    if landmark is not None and 0 <= landmark <= end:
        ax.axvline(landmark, color="0.4", ls="--", lw=0.8)
        handles.append(Line2D([], [], color="0.4", ls="--", lw=0.8, label=f"landmark day {landmark:g}"))
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlim(-0.04 * end, end * 1.04)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("progression-free (probability)")
    ax.legend(handles=handles, fontsize=7, loc="lower left")
    ax.set_title("Kaplan-Meier progression-free survival" + (f" by {by}" if by else ""), fontsize=9)
    if own and table:
        ax.tick_params(labelbottom=True)
        tab.set_label("<at-risk>")
        tab.set_ylim(len(curves) - 0.5, -0.5)
        for i, (_, c, ttp) in enumerate(curves):
            for d in risk_days:
                tab.text(d, i, str(_at_risk(ttp, end, d)), ha="center", va="center", fontsize=7, color=c)
        tab.set_yticks(range(len(curves)), [lab for lab, _, _ in curves], fontsize=7)
        for tl, (_, c, _) in zip(tab.get_yticklabels(), curves):
            tl.set_color(c)
        tab.set_title("number at risk (simulations)", fontsize=7, loc="left")
        tab.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
        for side in ("top", "right", "bottom", "left"):
            tab.spines[side].set_visible(False)
    n_note = "" if table or not own else f" (number-at-risk table left out: {len(curves)} curves)"
    caption = (f"Kaplan-Meier progression-free probability (progression = marrow blasts at the PD threshold on or "
               f"after the first assessment; no progression: censored at day {end:g}){n_note}.\n{_provenance(data)}")
    return _finish(fig, own, caption)
