"""Protocol events (lymphodepletion days, NK infusions) read from nksim Datasets and marked on time axes."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._style import LD_COLOUR, _as_str


def _parse_events(text: Any) -> list[tuple[float, str, float]]:
    return [(float(e[0]), str(e[1]), float(e[2])) for e in json.loads(str(text))]


def protocol_schedule(ds: xr.Dataset) -> dict[str, list[tuple[float, str, float]]]:
    """Dated events ``(day, kind, dose)`` per dose group or per scenario; ``{}`` if neither is there.

    Per dose group from a cohort output (``protocol_events`` attribute), per scenario from a
    sweep store (``events`` variable).
    """
    if "events" in ds.variables:
        ev = ds["events"]
        if ev.ndim == 0:
            key = _as_str(ds["scenario"].values) if "scenario" in ds.coords else "scenario"
            return {key: _parse_events(ev.values)}
        if ev.dims == ("scenario",):
            keys = ds["scenario"].values if "scenario" in ds.coords else range(ev.size)
            return {_as_str(k): _parse_events(v) for k, v in zip(keys, np.asarray(ev.values).ravel())}
    if "protocol_events" in ds.attrs:
        raw = json.loads(ds.attrs["protocol_events"])
        return {str(g): [(float(d), str(k), float(x)) for d, k, x, *_ in evs] for g, evs in raw.items()}
    return {}


def _days(events: list[tuple[float, str, float]]) -> tuple[list[float], list[float]]:
    ld = sorted({d for d, k, _ in events if k != "nk_infusion"})
    inf = sorted({d for d, k, _ in events if k == "nk_infusion"})
    return ld, inf


def _spans(days: Sequence[float]) -> list[tuple[float, float]]:
    """Consecutive whole days merged into [first, last + 1) spans."""
    out: list[list[float]] = []
    for d in sorted(days):
        if out and d <= out[-1][1]:
            out[-1][1] = max(out[-1][1], d + 1)
        else:
            out.append([d, d + 1])
    return [(a, b) for a, b in out]


def _mark_protocol(ax: Axes, ds: xr.Dataset, colours: Mapping[str, str] | None = None,
                   label: bool = True) -> list[Any]:
    """Grey spans on lymphodepletion days, dotted lines on infusion days; returns legend handles.

    ``colours`` (schedule key -> colour): infusion lines coloured per group/scenario when their
    infusion days differ.
    """
    sched = protocol_schedule(ds)
    if not sched:
        return []
    per = {k: _days(v) for k, v in sched.items()}
    ld = sorted(set().union(*[set(p[0]) for p in per.values()]))
    handles: list[Any] = []
    for a, b in _spans(ld):
        ax.axvspan(a, b, color=LD_COLOUR, lw=0, zorder=0)
    if ld:
        handles.append(Patch(color=LD_COLOUR, label="Flu/Cy lymphodepletion"))
    inf_sets = {k: tuple(p[1]) for k, p in per.items()}
    if colours and len(set(inf_sets.values())) > 1:
        for k, days in inf_sets.items():
            for d in days:
                ax.axvline(d, color=colours.get(k, "0.35"), ls=":", lw=0.9, zorder=0.5)
        handles.append(Line2D([], [], color="0.35", ls=":", label="NK infusion (colour: schedule)"))
    else:
        days = sorted(set().union(*[set(v) for v in inf_sets.values()]))
        for d in days:
            ax.axvline(d, color="0.35", ls=":", lw=0.9, zorder=0.5)
        if days:
            handles.append(Line2D([], [], color="0.35", ls=":", label="NK infusion"))
    return handles if label else []
