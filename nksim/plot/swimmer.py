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


#: Lane status before the first assessment (nothing known yet).
BEFORE_ASSESSMENT = "not yet assessed"
#: Lane status of a patient who was not evaluable in the trial (no response, no progression drawn).
NOT_EVALUABLE = "not evaluable"


def response_segments(assessment_days: Sequence[float], responses: Sequence[str | None], time_to_progression: float,
                      t_end: float, *, evaluable: bool = True) -> list[tuple[float, float, str]]:
    """The stretches ``(start, end, status)`` of one swimmer lane from day 0 to ``t_end``.

    Each stretch carries the status known at its start: :data:`BEFORE_ASSESSMENT` up to the
    first assessment, then the response called at the last assessment before it (``"CR"``,
    ``"PR"``, ``"SD"``, ``"PD"``); the colour changes on the assessment day. Progression
    (``time_to_progression``, NaN = none) starts a ``"PD"`` stretch on its own day, between
    assessments too, and the lane stays ``"PD"`` from then on (progression ends
    progression-free follow-up, as in the trial). An assessment that was not made (``None``)
    leaves the status unchanged. After the last assessment the last status runs to ``t_end``.
    A patient that is not evaluable has one stretch, :data:`NOT_EVALUABLE`.
    """
    t_end = float(t_end)
    if not evaluable:
        return [(0.0, t_end, NOT_EVALUABLE)]
    days = [float(d) for d in assessment_days]
    if len(days) != len(responses):
        raise ValueError(f"{len(days)} assessment days but {len(responses)} responses")
    ttp = float(time_to_progression)
    events: list[tuple[float, int, str | None]] = [(d, 0, r) for d, r in zip(days, responses)]
    if np.isfinite(ttp):
        events.append((ttp, 1, "PD"))  # on an assessment day, after the assessment
    events.sort(key=lambda e: (e[0], e[1]))
    segs: list[tuple[float, float, str]] = []
    start, status, progressed = 0.0, BEFORE_ASSESSMENT, False
    for day, kind, name in events:
        if day >= t_end:
            break
        if progressed or name is None:
            continue
        new = name if kind == 0 else "PD"
        progressed = kind == 1
        if new == status:
            continue
        day = max(day, start)
        if day > start:
            segs.append((start, day, status))
        start, status = day, new
    if t_end > start or not segs:
        segs.append((start, max(t_end, start), status))
    return segs


def _status_colour(status: str) -> str:
    if status == NOT_EVALUABLE:
        return "white"
    return RESPONSE_COLOURS.get(status, NOT_ASSESSED_COLOUR)


def simulated_lanes(sub: xr.Dataset, t_end: float | None = None) -> dict[str, list[tuple[float, float, str]]]:
    """:func:`response_segments` of every patient of one simulation (``sub``: dims patient, assessment)."""
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
    evaluable = np.atleast_1d(sub["evaluable"].values) if "evaluable" in sub.coords else [1] * len(pids)
    out = {}
    for i, pid in enumerate(pids):
        names = [None if int(c) == RESPONSE_FILL else codes.get(int(c)) for c in resp.values[i]]
        out[pid] = response_segments(assess, names, ttp[i], t_end, evaluable=bool(evaluable[i]))
    return out


def _swimmer_axes(ax: Axes, sub: xr.Dataset, t_end: float | None = None, *, legend: bool = True,
                  lane: tuple[float, float] = (0.0, 0.7)) -> list[str]:
    """Draw simulated lanes (one per patient, follow-up to ``t_end``) into ``ax``; returns the patient ids.

    ``lane``: (offset of the bar's centre from the patient's row, bar height), in rows.
    """
    if "patient" not in sub["response"].dims:
        sub = sub.expand_dims("patient")
    if t_end is None:
        t_end = float(np.nanmax(sub["time"].values)) if "time" in sub.coords else float(sub["assessment"].max())
    lanes = simulated_lanes(sub, t_end)
    ttp = np.atleast_1d(np.asarray(sub["time_to_progression"].values, dtype=float))
    pids = list(lanes)
    n = len(pids)
    groups = np.atleast_1d(sub["group"].values) if "group" in sub.coords else [None] * n
    evaluable = np.atleast_1d(sub["evaluable"].values) if "evaluable" in sub.coords else [None] * n
    off, h = lane
    for i, pid in enumerate(pids):
        segs = lanes[pid]
        if segs[0][2] == NOT_EVALUABLE:
            ax.broken_barh([(0.0, t_end)], (i - h / 2, 0.7 if h < 0.7 else h), facecolors="white", edgecolors="0.6",
                           hatch="///",
                           linewidth=0.6, gid=f"lane:{pid}")
            ax.text(t_end / 2, i, "not evaluable", ha="center", va="center", fontsize=7, color="0.3",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
            continue
        ax.broken_barh([(a, b - a) for a, b, _ in segs], (i + off - h / 2, h),
                       facecolors=[_status_colour(s) for _, _, s in segs], edgecolors="white", linewidth=0.6,
                       gid=f"lane:{pid}")
        if np.isfinite(ttp[i]) and ttp[i] <= t_end:
            ax.plot(ttp[i], i + off, marker="X", color="k", ms=7, ls="none", zorder=3, gid=f"progression:{pid}")
        else:
            ax.plot(t_end, i + off, marker=">", color="k", ms=6, ls="none", zorder=3, gid=f"censored:{pid}")
    ax.set_yticks(range(n), [_lane_label(p, g, e) for p, g, e in zip(pids, groups, evaluable)], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, t_end * 1.03)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("patient (id, dose group)")
    if legend:
        ax.legend(handles=_swimmer_handles(observed=False), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return pids


def _swimmer_handles(observed: bool) -> list[Any]:
    h: list[Any] = [Patch(color=c, label=f"{k} (from this assessment on)") for k, c in RESPONSE_COLOURS.items()]
    h.append(Patch(color=NOT_ASSESSED_COLOUR, label=BEFORE_ASSESSMENT))
    h.append(Patch(facecolor="white", edgecolor="0.5", hatch="///", label="not evaluable (no response drawn)"))
    h.append(Line2D([], [], marker="X", color="k", ls="none", label="progression (lane PD from here)"))
    h.append(Line2D([], [], marker=">", color="k", ls="none", label="censored (no progression)"))
    if observed:
        h.append(Line2D([], [], marker="|", color="k", ls="-", label="progression interval (observed)"))
        h.append(Line2D([], [], marker="o", mfc="white", color="k", ls="none", label="lost to follow-up"))
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


def observed_segments(o: Any) -> list[tuple[float, float, str]]:
    """The stretches ``(start, end, status)`` of one observed patient, as :func:`response_segments`.

    The trial reports the first response at ``first_assessment_day`` and progression within
    [``progression_day_lo``, ``progression_day_hi``]: the lane is "not yet assessed" up to the
    first assessment, then the first response, then PD from the day progression was known
    (``progression_day_hi``, else ``lo``), to the last day on record.
    """
    fa = getattr(o, "first_assessment_day", None)
    lf = getattr(o, "last_followup_day", None)
    lo, hi = getattr(o, "progression_day_lo", None), getattr(o, "progression_day_hi", None)
    end = max([float(x) for x in (fa, lf, lo, hi) if x is not None] or [0.0])
    evaluable = getattr(o, "evaluable", True)
    if evaluable is False or evaluable == 0:
        return [(0.0, max(end, 1.0), NOT_EVALUABLE)]
    if fa is None:
        return [(0.0, max(end, 1.0), BEFORE_ASSESSMENT)]
    first = getattr(o, "first_response", None)
    known = hi if hi is not None else lo
    ttp = float(known) if getattr(o, "progressed", None) and known is not None else float("nan")
    return response_segments([float(fa)], [str(first) if first else None], ttp, max(end, float(fa), 1.0))


def _observed_axes(ax: Axes, outcomes: list[Any], order: Sequence[str], *, lane: tuple[float, float] = (0.0, 0.7),
                   own_axes: bool = True) -> list[str]:
    """Observed lanes (:func:`observed_segments`), progression interval, censoring marks.

    ``lane``: (offset of the bar's centre from the patient's row, bar height), in rows;
    ``own_axes``: label and scale the axes (False: the lanes are drawn into a simulated
    swimmer's axes, beside its lanes, and not-evaluable patients are left to it).
    """
    by_id = {str(o.patient): o for o in outcomes}
    ids = [p for p in order if p in by_id] + [p for p in by_id if p not in order]
    off, h = lane
    t_max = 0.0
    not_evaluable: list[int] = []
    for i, pid in enumerate(ids):
        o = by_id[pid]
        fa = getattr(o, "first_assessment_day", None)
        lf = getattr(o, "last_followup_day", None)
        lo, hi = getattr(o, "progression_day_lo", None), getattr(o, "progression_day_hi", None)
        end = max([float(x) for x in (fa, lf, lo, hi) if x is not None] or [0.0])
        t_max = max(t_max, end)
        evaluable = getattr(o, "evaluable", True)
        if evaluable is False or evaluable == 0:
            not_evaluable.append(i)
            continue
        progressed = getattr(o, "progressed", None)
        segs = observed_segments(o)
        y = i + off
        ax.broken_barh([(a, b - a) for a, b, _ in segs], (y - h / 2, h),
                       facecolors=[_status_colour(st) for _, _, st in segs], edgecolors="white", linewidth=0.6,
                       gid=f"observed:{pid}")
        small = h < 0.7  # a thin lane beside a simulated one: smaller marks
        if progressed and (lo is not None or hi is not None):
            a = float(lo if lo is not None else hi)
            b = float(hi if hi is not None else lo)
            ax.plot([a, b], [y, y], color="k", lw=1.2, marker="|", ms=5 if small else 8, zorder=3)
            ax.plot((a + b) / 2, y, marker="X", color="k", ms=5 if small else 7, ls="none", zorder=4)
        elif getattr(o, "lost_to_follow_up", False):
            ax.plot(end, y, marker="o", mfc="white", color="k", ms=4 if small else 6, ls="none", zorder=3)
        elif progressed is False:
            ax.plot(end, y, marker=">", color="k", ms=4 if small else 6, ls="none", zorder=3)
        else:
            ax.text(end, y, " ?", va="center", fontsize=8)
    if not own_axes:
        return ids
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

    Each lane runs from the first infusion (day 0) to the end of follow-up and is cut into
    stretches (:func:`response_segments`): each stretch carries the status known at its start,
    grey before the first assessment, then the response called at the last assessment before it
    (CR/PR/SD/PD from the ``response`` variable's ``flag_values``/``flag_meanings``), PD from
    the progression day (X, ``time_to_progression``) on; >: censored at the end without
    progression. Patients that were not evaluable (``evaluable`` coordinate 0) are hatched and
    labelled "not evaluable", with no response and no progression mark.

    ``observed``: an ``nksim.calibration.data.ObservedTrial`` (or any object with
    ``.outcomes``, each with ``patient``, ``evaluable``, ``dose_group``, ``first_response``,
    ``first_assessment_day``, ``progressed``, ``progression_day_lo``/``_hi``,
    ``last_followup_day``, ``lost_to_follow_up``) drawn in a second panel, lanes in the same
    patient order (:func:`observed_segments`): grey up to the first assessment, then the first
    response, PD from the end of the progression interval [lo, hi] (drawn with X at its
    middle); o: lost to follow-up; hatched: not evaluable.

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
    caption = ("Swimmer plot: status known at each day (response at the last assessment before it; PD from "
               "progression, X), censoring (>) per patient"
               + ("; right: observed outcomes" if outcomes is not None else "")
               + f".\n{_provenance(ds)}")
    return _finish(fig, own, caption)
