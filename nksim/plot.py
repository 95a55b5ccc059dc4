"""Figures from nksim Datasets (matplotlib, safe with the Agg backend). Each function returns a Figure.

=========================== ====================================================================
``trial_figure(ds)``        multi-panel summary of a cohort run (written by ``nksim run``)
``time_course(ds, ...)``    median and central bands of daily variables over patients x
                            replicates (x draws), protocol events marked; per group/scenario
``swimmer_plot(ds, obs)``   one lane per patient: response at each assessment, progression,
                            censoring; beside it the trial's observed outcomes
``km_plot(data, by=...)``   Kaplan-Meier progression-free curves per scenario (sweep) or dose
                            group (cohort) with censor ticks and a number-at-risk table
``heatmap(summary, ...)``   a sweep-summary outcome over two schedule factors, annotated cells
``lattice_snapshot(ds, p)`` the marrow lattice of one patient at its snapshot days, NK agents
                            as dots, scale bar in mm
=========================== ====================================================================

Inputs are the package's own xarray Datasets: ``simulate``/``simulate_cohort`` outputs (dims
``patient``, ``replicate``, ``time`` ...), sweep stores opened with ``nksim.sweep.open_sweep``
(extra dims ``scenario``, ``draw``) and ``nksim.sweep.summarize`` summaries (dim ``scenario``).
Axis labels take ``units`` and ``long_name`` from the variables' attributes. A variable or
coordinate missing from the input raises ``ValueError`` naming it and listing what is available.

When ``ax`` is given the function draws into it (its figure is returned) and leaves the figure
title to the caller; otherwise it creates a figure with a caption-like title (``suptitle``).
Artists carry ``gid`` tags (``median:<var>:<group>``, ``lane:<patient>``,
``observed:<patient>``, ``km:<group>``, ``heatmap:<outcome>``, ``lattice:<var>:<day>``) so that
tests and scripts can find the plotted data.
"""
from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg", force=False)  # headless by default; Jupyter keeps its inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .observables import RESPONSE_CODES, RESPONSE_FILL, km_curve  # noqa: E402

RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "PD": "#d73027"}
NOT_ASSESSED_COLOUR = "#bdbdbd"
FOLLOW_UP_COLOUR = "#eeeeee"
GROUP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                 "#7f7f7f", "#d62728"]
LD_COLOUR = "0.86"
TIME_LABEL = "time since first NK infusion (day)"

#: Default variables of :func:`time_course`.
TIME_COURSE_VARIABLES = ("donor_chimerism_nk", "donor_nk_blood", "host_t_blood", "il15", "marrow_blast_pct")

#: Variables drawn on a log scale by default (chimerism and cell counts).
LOG_VARIABLES = frozenset({
    "donor_chimerism_nk", "donor_chimerism_pbmc", "donor_nk_blood", "host_nk_blood", "host_t_blood",
    "donor_nk_marrow", "donor_nk_tissue", "donor_nk_agents", "blasts_total", "normal_total", "nk_kills",
})

#: Short axis names (the title of a panel is the variable's ``long_name``).
SHORT_NAMES = {
    "donor_chimerism_nk": "donor chimerism, blood NK",
    "donor_chimerism_pbmc": "donor chimerism, blood lymphocytes",
    "donor_nk_blood": "donor NK in blood",
    "host_nk_blood": "host NK in blood",
    "host_t_blood": "host T cells in blood",
    "il15": "plasma IL-15",
    "flu_conc": "plasma fludarabine",
    "cy_conc": "plasma cyclophosphamide",
    "marrow_blast_pct": "marrow blasts",
    "donor_nk_marrow": "donor NK in marrow",
    "donor_nk_tissue": "donor NK in other tissues",
    "donor_nk_agents": "donor NK agents (region)",
    "blasts_total": "marrow blasts",
    "normal_total": "normal marrow cells",
    "nk_kills": "blasts killed by NK (cumulative)",
    "blast_susceptible_fraction": "NK-susceptible fraction of blasts",
    "nk_exhausted_fraction": "exhausted fraction of marrow NK",
    "drug_kill_hazard": "Flu/Cy kill hazard",
    "p_pd_first": "P(PD at first assessment)",
    "pfs_landmark": "P(progression-free at landmark)",
    "median_pfs": "median progression-free time",
    "peak_chimerism_nk": "peak donor chimerism, blood NK",
    "peak_chimerism_pbmc": "peak donor chimerism, blood lymphocytes",
    "donor_nk_auc": "donor NK AUC in blood",
    "lattice_susceptible_blasts": "NK-susceptible blasts",
    "lattice_resistant_blasts": "NK-resistant blasts",
    "lattice_normal": "normal cells",
    "lattice_nk": "donor NK agents",
    "interval": "interval between infusions",
    "dose_split": "dose split",
    "gap": "gap after lymphodepletion",
    "total_dose": "total NK dose",
    "first_dose_pct": "first dose share",
    "n_infusions": "number of infusions",
}

#: What a dimensionless ("1") variable counts, for axis labels.
_DIMENSIONLESS = {
    "il15": "fold of baseline",
    "donor_nk_marrow": "cells", "donor_nk_tissue": "cells", "blasts_total": "cells", "normal_total": "cells",
    "nk_kills": "cells", "donor_nk_agents": "agents",
    "lattice_susceptible_blasts": "cells per voxel", "lattice_resistant_blasts": "cells per voxel",
    "lattice_normal": "cells per voxel", "lattice_nk": "agents per voxel",
    "p_pd_first": "probability", "pfs_landmark": "probability", "n_infusions": "count",
}

_SPECIAL_UNITS = {"percent": "%", "1": "dimensionless", "um": "µm", "degC": "°C"}


# --- labels, units, validation -----------------------------------------------------------------
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


def _available(ds: xr.Dataset) -> list[str]:
    return sorted(str(v) for v in ds.data_vars)


def _need(ds: xr.Dataset, names: Iterable[str], what: str = "variable") -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset (an nksim output), got {type(ds).__name__}")
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise ValueError(f"{what}{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} not in the "
                         f"dataset; available variables: {_available(ds)}")


def _need_coord(ds: xr.Dataset, name: str, what: str) -> None:
    if name not in ds.variables:
        raise ValueError(f"{what} {name!r} is not in the dataset; available coordinates: "
                         f"{sorted(str(c) for c in ds.coords)}, variables: {_available(ds)}")


def _provenance(ds: xr.Dataset) -> str:
    a = ds.attrs
    what = (f"sweep '{a['sweep_name']}'" if "sweep_name" in a
            else f"protocol '{a['protocol']}'" if "protocol" in a else "nksim output")
    par = f"parameters '{a['parameter_set']}'" if "parameter_set" in a else ""
    status = f" ({a['parameter_status']})" if a.get("parameter_status") else ""
    seed = f", seed {a['seed']}" if "seed" in a else ""
    return f"nksim: {what}, {par}{status}{seed}".rstrip(", ")


def _finish(fig: Figure, own: bool, caption: str) -> Figure:
    if own:
        fig.suptitle(caption, fontsize=10, wrap=True)
    return fig


def _as_str(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return f"{float(v):g}"
    return str(v.item() if isinstance(v, np.generic) else v)


def _nice(v: float) -> str:
    """Short number: 1e6 -> '1e6', 1.5e7 -> '1.5e7', 7.0 -> '7'."""
    v = float(v)
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:g}"
    e = int(np.floor(np.log10(abs(v))))
    m = v / 10 ** e
    return f"{m:g}e{e}"


def _colours(n: int) -> list[str]:
    return [GROUP_COLOURS[i % len(GROUP_COLOURS)] for i in range(n)]


# --- protocol events -----------------------------------------------------------------------------
def _parse_events(text: Any) -> list[tuple[float, str, float]]:
    return [(float(e[0]), str(e[1]), float(e[2])) for e in json.loads(str(text))]


def protocol_schedule(ds: xr.Dataset) -> dict[str, list[tuple[float, str, float]]]:
    """Dated events ``(day, kind, dose)`` per dose group (cohort output: ``protocol_events``
    attribute) or per scenario (sweep store: ``events`` variable); ``{}`` if neither is there."""
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


# --- splitting by group / scenario ---------------------------------------------------------------
def _group_label(ds: xr.Dataset, by: str, key: Any) -> str:
    if by == "scenario":
        lab = ""
        if "label" in ds.coords or "label" in ds.variables:
            try:
                lab = " " + str(np.asarray(ds["label"].sel(scenario=key).values).item())
            except (KeyError, ValueError, IndexError):
                lab = ""
        return f"#{_as_str(key)}{lab}"
    if by == "group":
        sched = protocol_schedule(ds).get(str(key))
        if sched:
            doses = [x for _, k, x in sched if k == "nk_infusion"]
            if doses:
                return f"group {key} (NK {' + '.join(_nice(x) for x in doses)} kg$^{{-1}}$)"
        return f"group {key}"
    return f"{by} {_as_str(key)}"


def _split(ds: xr.Dataset, by: str | None, select: Sequence[Any] | None = None
           ) -> list[tuple[str, str, xr.Dataset]]:
    """``[(key, label, subset)]`` along a dimension or a 1-D coordinate ``by`` (None: one group)."""
    if by is None:
        return [("all", "all", ds)]
    if by in ds.dims:
        values = list(ds[by].values) if by in ds.coords else list(range(ds.sizes[by]))
        index = {v: [i] for i, v in enumerate(values)}
        dim = by
    elif by in ds.coords and ds[by].ndim == 1:
        dim = ds[by].dims[0]
        raw = [_as_str(v) for v in np.asarray(ds[by].values)]
        values = list(dict.fromkeys(raw))
        index = {v: [i for i, r in enumerate(raw) if r == v] for v in values}
    else:
        raise ValueError(f"cannot split by {by!r}: it is neither a dimension nor a 1-D coordinate of the dataset; "
                         f"available dimensions: {sorted(str(d) for d in ds.dims)}, coordinates: "
                         f"{sorted(str(c) for c in ds.coords)}")
    if select is not None:
        wanted = [select] if isinstance(select, (str, int, np.integer)) else list(select)
        by_str = {_as_str(v): v for v in values}
        chosen = []
        for w in wanted:
            if w in index:
                chosen.append(w)
            elif _as_str(w) in by_str:
                chosen.append(by_str[_as_str(w)])
            else:
                raise ValueError(f"{by} {w!r} is not in the dataset; available: {[_as_str(v) for v in values]}")
        values = chosen
    return [(_as_str(v), _group_label(ds, by, v), ds.isel({dim: index[v]})) for v in values]


def _pick(ds: xr.Dataset, names: Sequence[str], keep: set[str], select: Mapping[str, Any] | None
          ) -> tuple[xr.Dataset, list[str]]:
    """Reduce ``ds[names]`` to one element along every dim of those variables not in ``keep``.

    ``select`` gives the value (by coordinate value, else by position) per dim; other dims
    take their first element. Returns the subset and notes like ``"replicate 0"``.
    """
    sub = ds[list(names)]
    select = dict(select or {})
    unknown = [k for k in select if k not in sub.dims and k not in keep]
    if unknown:
        raise ValueError(f"cannot select {unknown}: not a dimension of {list(names)}; dimensions: "
                         f"{sorted(str(d) for d in sub.dims)}")
    notes = []
    for dim in [d for d in sub.dims if d not in keep]:
        has_coord = dim in sub.coords
        if dim in select:
            value = select[dim]
            if has_coord:
                avail = [_as_str(v) for v in np.asarray(sub[dim].values)]
                if _as_str(value) not in avail:
                    raise ValueError(f"{dim} {value!r} is not in the dataset; available: {avail}")
                pos = avail.index(_as_str(value))
            else:
                if not (0 <= int(value) < sub.sizes[dim]):
                    raise ValueError(f"{dim} {value!r} out of range 0..{sub.sizes[dim] - 1}")
                pos = int(value)
        else:
            pos = 0
        label = _as_str(sub[dim].values[pos]) if has_coord else str(pos)
        sub = sub.isel({dim: pos})
        notes.append(f"{dim} {label}")
    return sub, notes


def _samples(da: xr.DataArray, keep: str) -> np.ndarray:
    """Values as a 2-D array (keep, samples): every other dim flattened."""
    other = [d for d in da.dims if d != keep]
    return np.asarray(da.transpose(keep, *other).values, dtype=float).reshape(da.sizes[keep], -1)


def _stats(arr: np.ndarray, qs: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN days (sweep: before a scenario starts)
        med = np.nanmedian(arr, axis=1)
        pct = [np.nanpercentile(arr, 100.0 * q, axis=1) for q in qs]
    return med, pct


# --- time course ---------------------------------------------------------------------------------
def _axes_grid(n: int, ncols: int | None, size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    ncols = ncols or min(n, 3)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), constrained_layout=True,
                             squeeze=False)
    flat = list(axes.ravel())
    for extra in flat[n:]:
        fig.delaxes(extra)
    return fig, flat[:n]


def _given_axes(ax: Axes | Sequence[Axes], n: int) -> list[Axes]:
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != n:
        raise ValueError(f"ax must hold {n} axes (one per panel), got {len(axes)}")
    return axes


def time_course(ds: xr.Dataset, variables: str | Sequence[str] = TIME_COURSE_VARIABLES,
                bands: Sequence[float] = (0.5, 0.9), *, by: str | None = None, select: Sequence[Any] | None = None,
                xlim: tuple[float | None, float | None] | None = None, log: bool | None = None,
                ncols: int | None = None, ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """Median daily course of ``variables`` with central percentile bands, protocol events marked.

    Parameters
    ----------
    ds:
        A ``simulate``/``simulate_cohort`` output or a sweep store (``open_sweep``): the median
        and bands are over every dimension except ``time`` (patients x replicates [x draws]), per
        value of ``by`` if given.
    variables:
        Daily variables (dimension ``time``), one panel each.
    bands:
        Central probability masses of the bands (0.5 = 25-75 %, 0.9 = 5-95 % percentiles).
    by:
        Draw one median (and its bands) per value of a dimension or 1-D coordinate, e.g.
        ``"group"`` (dose group of a cohort) or ``"scenario"`` (sweep); ``select`` keeps only
        the listed values.
    xlim:
        Days shown (``(lo, hi)``, either None for open).
    log:
        Log y axis for every panel (True/False); None: chimerism and cell counts on a log scale.
    ax:
        One axes per variable (a single Axes for one variable) to draw into.

    Grey spans: lymphodepletion (Flu/Cy) days; dotted lines: NK infusion days (from the
    ``protocol_events`` attribute of a cohort output or the ``events`` of sweep scenarios).
    """
    variables = (variables,) if isinstance(variables, str) else tuple(variables)
    if not variables:
        raise ValueError("give at least one variable")
    _need(ds, variables)
    for v in variables:
        if "time" not in ds[v].dims:
            daily = [str(n) for n in ds.data_vars if "time" in ds[n].dims]
            raise ValueError(f"variable {v!r} has no 'time' dimension (dims {ds[v].dims}); daily variables: {daily}")
    bands = tuple(float(b) for b in bands)
    if any(not (0.0 < b < 1.0) for b in bands):
        raise ValueError(f"bands are central probability masses strictly between 0 and 1, got {bands}")
    groups = _split(ds, by, select)
    colours = dict(zip([g[0] for g in groups], _colours(len(groups)) if by else ["C3"]))
    own = ax is None
    fig, axes = _axes_grid(len(variables), ncols, (4.6, 3.3)) if own else (None, _given_axes(ax, len(variables)))
    fig = fig or axes[0].figure
    band_alpha = {b: a for b, a in zip(sorted(bands), np.linspace(0.35, 0.15, len(bands)))} if bands else {}
    qs = [q for b in sorted(bands, reverse=True) for q in ((1 - b) / 2, (1 + b) / 2)]
    for a, var in zip(axes, variables):
        plotted = []
        for key, label, sub in groups:
            da = sub[var]
            if xlim is not None:
                da = da.sel(time=slice(*xlim))
            t = np.asarray(da["time"].values, dtype=float)
            samples = _samples(da, "time")
            med, pct = _stats(samples, qs)
            single = samples.shape[1] == 1
            for i, b in enumerate([] if single else sorted(bands, reverse=True)):
                lo, hi = pct[2 * i], pct[2 * i + 1]
                a.fill_between(t, lo, hi, color=colours[key], alpha=band_alpha[b], lw=0)
                plotted += [lo, hi]
            a.plot(t, med, color=colours[key], lw=1.8, label=label if by else ("simulation" if single else "median"),
                   gid=f"median:{var}:{key}")
            plotted.append(med)
        use_log = (var in LOG_VARIABLES) if log is None else bool(log)
        if use_log:
            a.set_yscale("log", nonpositive="mask")
            vals = np.concatenate([np.ravel(p) for p in plotted]) if plotted else np.array([])
            pos = vals[np.isfinite(vals) & (vals > 0)]
            if pos.size:
                top = pos.max()
                a.set_ylim(max(pos.min(), top * 1e-6) / 1.5, top * 1.5)
        ev_handles = _mark_protocol(a, ds, colours if by else None)
        a.set_xlabel(axis_label(ds["time"], "time", "time since first NK infusion"))
        a.set_ylabel(axis_label(ds[var], var))
        a.set_title(str(ds[var].attrs.get("long_name", var)), fontsize=8.5, wrap=True)
        if xlim is not None:
            a.set_xlim(*[x if x is None else float(x) for x in xlim])
    handles, _ = axes[0].get_legend_handles_labels()
    if not single:
        handles += [Patch(color="0.5", alpha=band_alpha[b], label=f"central {100 * b:g} %") for b in sorted(bands)]
    handles += ev_handles
    axes[0].legend(handles=handles, fontsize=7, loc="best")
    first = groups[0][2][variables[0]]
    sizes = {d: n for d, n in first.sizes.items() if d != "time" and d != by}
    dims = " x ".join(f"{n} {d}{'s' if n != 1 else ''}" for d, n in sizes.items())
    n_sim = int(np.prod(list(sizes.values()) or [1]))
    if by is None and n_sim == 1:
        return _finish(fig, own, f"One simulation; grey: Flu/Cy lymphodepletion, dotted: NK infusions.\n"
                                 f"{_provenance(ds)}")
    if by is None:
        over = f"over {dims} = {n_sim} simulations"
    elif by in ds.dims:
        over = f"per {by} ({len(groups)} shown), each over {dims or 'one simulation'}"
    else:
        over = f"per {by} ({len(groups)} shown), each over the {' x '.join(f'{d}s' for d in sizes)} of that {by}"
    band_txt = " and ".join(f"{100 * b:g} %" for b in sorted(bands))
    caption = (f"Median (line) and central {band_txt} bands {over}; grey: Flu/Cy lymphodepletion, "
               f"dotted: NK infusions.\n{_provenance(ds)}")
    return _finish(fig, own, caption)


# --- swimmer plot -------------------------------------------------------------------------------
def _response_codes(da: xr.DataArray) -> dict[int, str]:
    """code -> name from the ``flag_values``/``flag_meanings`` attributes (else RESPONSE_CODES)."""
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


# --- Kaplan-Meier --------------------------------------------------------------------------------
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
        for i, (label, c, ttp) in enumerate(curves):
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


# --- heatmap ------------------------------------------------------------------------------------
def _levels(values: np.ndarray) -> list[Any]:
    vals = list(np.asarray(values))
    try:
        nums = [float(v) for v in vals]
        return sorted(set(nums))
    except (TypeError, ValueError):
        return list(dict.fromkeys(str(v) for v in vals))


def _key(v: Any, numeric: bool) -> Any:
    return float(v) if numeric else str(v)


def _matches(values: np.ndarray, wanted: Any) -> np.ndarray:
    vals = np.asarray(values)
    if isinstance(wanted, (list, tuple, set)):
        out = np.zeros(vals.shape, bool)
        for w in wanted:
            out |= _matches(vals, w)
        return out
    try:
        return np.isclose(vals.astype(float), float(wanted), rtol=1e-9, atol=0.0)
    except (TypeError, ValueError):
        return np.array([str(v) == str(wanted) for v in vals.ravel()]).reshape(vals.shape)


def _cell_text(v: float, units: str | None, se: float | None) -> str:
    if np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return ">end" if v > 0 else "-inf"
    txt = f"{v:.2f}" if units == "1" else f"{v:.3g}"
    if se is not None and np.isfinite(se) and se > 0:
        txt += f"\n±{se:.2f}" if units == "1" else f"\n±{se:.2g}"
    return txt


def heatmap(summary: xr.Dataset, outcome: str, x: str, y: str, *, where: Mapping[str, Any] | None = None,
            ax: Axes | None = None, cmap: str | None = None, annotate: bool = True) -> Figure:
    """Heatmap of a sweep-summary ``outcome`` over two scenario factors ``x`` and ``y``.

    ``summary``: ``nksim.sweep.summarize(store)`` (dim ``scenario``; factor coordinates such
    as ``interval``, ``dose_split``, ``regimen``, ``gap``, ``total_dose``, ``n_infusions``).
    ``where``: keep only scenarios whose coordinates equal these values (a list = any of them),
    e.g. ``{"regimen": "trial", "gap": 7, "n_infusions": 2}``. Every (x, y) cell must then hold
    at most one scenario; otherwise ``ValueError`` names the coordinates that differ. Cells
    show the value (± its Monte-Carlo SE when ``<outcome>_mc_se`` is there); ``>end``: median
    not reached; empty cells: no scenario. The reference scenario of the paired differences
    (``reference_scenario`` attribute) is outlined.
    """
    _need(summary, [outcome], "outcome")
    if "scenario" not in summary[outcome].dims or summary[outcome].ndim != 1:
        raise ValueError(f"outcome {outcome!r} must have the single dimension 'scenario' (a sweep summary), "
                         f"has {summary[outcome].dims}")
    if x == y:
        raise ValueError(f"x and y must be two different factors, got {x!r} twice")
    for name, what in ((x, "x factor"), (y, "y factor")):
        _need_coord(summary, name, what)
        if summary[name].dims != ("scenario",):
            raise ValueError(f"{what} {name!r} must be a per-scenario coordinate, has dims {summary[name].dims}")
    mask = np.ones(summary.sizes["scenario"], bool)
    for k, v in (where or {}).items():
        _need_coord(summary, k, "where coordinate")
        mask &= _matches(summary[k].values, v)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise ValueError(f"no scenario matches where={dict(where or {})}")
    sub = summary.isel(scenario=idx)
    xl, yl = _levels(sub[x].values), _levels(sub[y].values)
    xnum, ynum = isinstance(xl[0], float), isinstance(yl[0], float)
    grid = np.full((len(yl), len(xl)), np.nan)
    se_grid = np.full_like(grid, np.nan)
    scen = np.full(grid.shape, -1, dtype=np.int64)
    cells: dict[tuple[int, int], list[int]] = {}
    se_name = f"{outcome}_mc_se"
    for pos in range(sub.sizes["scenario"]):
        iy = yl.index(_key(sub[y].values[pos], ynum))
        ix = xl.index(_key(sub[x].values[pos], xnum))
        cells.setdefault((iy, ix), []).append(pos)
        grid[iy, ix] = float(sub[outcome].values[pos])
        if se_name in sub:
            se_grid[iy, ix] = float(sub[se_name].values[pos])
        scen[iy, ix] = int(sub["scenario"].values[pos]) if "scenario" in sub.coords else int(idx[pos])
    clash = {c: p for c, p in cells.items() if len(p) > 1}
    if clash:
        (iy, ix), ps = next(iter(clash.items()))
        others = [str(c) for c in sub.coords if sub[c].dims == ("scenario",) and c not in (x, y, "scenario", "label")]
        differ = {c: sorted({_as_str(sub[c].values[p]) for p in ps}) for c in others
                  if len({_as_str(sub[c].values[p]) for p in ps}) > 1}
        ids = [int(sub["scenario"].values[p]) for p in ps]
        raise ValueError(f"cell {x}={_as_str(xl[ix])}, {y}={_as_str(yl[iy])} holds scenarios {ids}, which differ in "
                         f"{differ}; fix those factors with where={{...}} (e.g. where={{"
                         + ", ".join(f"{k!r}: {v[0]!r}" for k, v in differ.items()) + "})")
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(1.3 * len(xl) + 3.4, 6.4), 0.8 * len(yl) + 2.6), constrained_layout=True)
    fig = ax.figure
    da = summary[outcome]
    units = da.attrs.get("units")
    cm = plt.get_cmap(cmap or ("viridis_r" if outcome == "p_pd_first" else "viridis")).with_extremes(bad="0.92")
    img = np.ma.masked_invalid(grid)
    finite = grid[np.isfinite(grid)]
    if units == "1" and finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        lo, hi = 0.0, 1.0  # probabilities: the whole range, comparable between figures
    elif finite.size and finite.max() > finite.min():
        lo, hi = float(finite.min()), float(finite.max())
    elif finite.size:
        lo, hi = float(finite[0]) - max(abs(float(finite[0])) * 0.05, 1e-6), float(finite[0]) + max(
            abs(float(finite[0])) * 0.05, 1e-6)
    else:
        lo, hi = 0.0, 1.0
    norm = Normalize(vmin=lo, vmax=hi)
    im = ax.imshow(img, origin="lower", aspect="auto", cmap=cm, norm=norm, interpolation="nearest",
                   gid=f"heatmap:{outcome}")
    ax.set_xticks(range(len(xl)), [_as_str(v) for v in xl])
    ax.set_yticks(range(len(yl)), [_as_str(v) for v in yl])
    ax.set_xlabel(axis_label(summary[x], x))
    ax.set_ylabel(axis_label(summary[y], y))
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(axis_label(da, outcome))
    if annotate:
        for iy in range(len(yl)):
            for ix in range(len(xl)):
                if scen[iy, ix] < 0:
                    continue
                v = grid[iy, ix]
                light = np.isfinite(v) and norm(v) < 0.55
                ax.text(ix, iy, _cell_text(v, units, se_grid[iy, ix]), ha="center", va="center", fontsize=7.5,
                        color="white" if light else "black")
    handles: list[Any] = [Patch(facecolor="none", edgecolor="none",
                                label="cell text: value" + (" ± Monte-Carlo SE" if se_name in summary else ""))]
    ref = summary.attrs.get("reference_scenario")
    if ref is not None and int(ref) in scen:
        iy, ix = np.argwhere(scen == int(ref))[0]
        ax.add_patch(Rectangle((ix - 0.5, iy - 0.5), 1, 1, fill=False, edgecolor="k", lw=2.0))
        handles.append(Patch(facecolor="none", edgecolor="k", lw=2.0, label=f"reference scenario #{int(ref)}"))
    if (scen < 0).any():
        handles.append(Patch(facecolor="0.92", label="no scenario"))
    if own:
        fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    else:
        ax.legend(handles=handles, fontsize=6.5, loc="best")
    long_name = str(da.attrs.get("long_name", outcome))
    ax.set_title(long_name if len(long_name) <= 60 else SHORT_NAMES.get(outcome, outcome), fontsize=8)
    filt = ", ".join(f"{k} = {_nice(v) if isinstance(v, (int, float)) else v}" for k, v in (where or {}).items())
    n_sim = summary.attrs.get("simulations_per_scenario")
    caption = (f"{SHORT_NAMES.get(outcome, outcome)} by {SHORT_NAMES.get(x, x)} and {SHORT_NAMES.get(y, y)}"
               + (f" ({filt})" if filt else "") + (f"; {n_sim} simulations per scenario" if n_sim else "")
               + f".\n{_provenance(summary)}")
    return _finish(fig, own, caption)


# --- lattice snapshots --------------------------------------------------------------------------
LATTICE_LAYERS = ("lattice_susceptible_blasts", "lattice_resistant_blasts", "lattice_normal")
_LAYER_CMAPS = {"lattice_susceptible_blasts": "Reds", "lattice_resistant_blasts": "Purples",
                "lattice_normal": "Greens"}


def _voxel_side_um(ds: xr.Dataset) -> float:
    try:
        return float(json.loads(ds.attrs["parameters"])["lattice.voxel_side"]["value"])
    except (KeyError, TypeError, ValueError):
        pass
    if "x" in ds.coords and ds.sizes.get("x", 0) > 1:
        return float(np.diff(ds["x"].values[:2])[0])
    raise ValueError("cannot tell the voxel side: no 'lattice.voxel_side' in the 'parameters' attribute and no "
                     "'x' coordinate")


def _capacity(ds: xr.Dataset) -> float | None:
    try:
        p = json.loads(ds.attrs["parameters"])
        return float(round((p["lattice.voxel_side"]["value"] / p["lattice.cell_diameter"]["value"]) ** 2))
    except (KeyError, TypeError, ValueError):
        return None


def _scale_bar(ax: Axes, width_mm: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    target = width_mm / 4
    nice = [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 50, 100]
    length = max([n for n in nice if n <= target] or [nice[0]])
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} mm", "lower right", pad=0.3, color="k", frameon=True,
                          size_vertical=width_mm / 80, fontproperties={"size": 7})
    bar.patch.set_alpha(0.7)
    ax.add_artist(bar)


def lattice_snapshot(ds: xr.Dataset, patient: str | None = None, replicate: Any = 0,
                     days: Sequence[float] | None = None, *, layers: Sequence[str] = LATTICE_LAYERS,
                     nk: bool = True, select: Mapping[str, Any] | None = None) -> Figure:
    """Spatial snapshots of one patient's marrow lattice: one row per layer, one column per day.

    Layers (``lattice_*`` variables, dims ``snapshot_time, y, x``): NK-susceptible blasts,
    NK-resistant blasts and normal cells per voxel, each row with one colour bar (0 to the
    row's maximum over the days shown; the voxel capacity K is in the title); donor NK agents
    (``lattice_nk``) as dots of area proportional to the agents per voxel on every panel
    (``nk=False``: off). Axes in mm
    (voxel side from the ``parameters`` attribute) with a scale bar. ``patient``: id (default:
    the first); ``days``: snapshot days (default: all); ``select``: other dims (sweep).
    """
    layers = tuple(layers)
    names = list(layers) + (["lattice_nk"] if nk else [])
    _need(ds, names)
    sel = dict(select or {})
    if patient is not None:
        if "patient" not in ds.dims:
            have = _as_str(ds["patient"].values) if "patient" in ds.coords else None
            if have is not None and have != str(patient):
                raise ValueError(f"patient {patient!r} is not in the dataset; available: [{have!r}]")
        else:
            sel["patient"] = patient
    if "replicate" in ds.dims:
        sel.setdefault("replicate", replicate)
    sub, notes = _pick(ds, names, {"snapshot_time", "y", "x"}, sel)
    if "snapshot_time" not in sub.dims or sub.sizes["snapshot_time"] == 0:
        raise ValueError("the dataset has no lattice snapshots (dimension 'snapshot_time' is missing or empty); "
                         "set snapshot_days in the protocol")
    avail = [float(d) for d in sub["snapshot_time"].values]
    if days is None:
        days = avail
    days = [float(d) for d in ([days] if np.isscalar(days) else days)]
    bad = [d for d in days if d not in avail]
    if bad:
        raise ValueError(f"snapshot day(s) {[f'{d:g}' for d in bad]} not in the dataset; available snapshot days: "
                         f"{[f'{d:g}' for d in avail]}")
    vs = _voxel_side_um(ds)
    ny, nx = sub.sizes["y"], sub.sizes["x"]
    w_mm, h_mm = nx * vs / 1000.0, ny * vs / 1000.0
    extent = (0.0, w_mm, 0.0, h_mm)
    cap = _capacity(ds)
    ncol, nrow = len(days), len(layers)
    fig, axs = plt.subplots(nrow, ncol, figsize=(2.5 * ncol + 1.4, 2.35 * nrow + 1.1), constrained_layout=True,
                            squeeze=False)
    nk_max = 1.0
    if nk:
        nk_max = max(1.0, float(np.max(sub["lattice_nk"].sel(snapshot_time=days).values)))
    xc = (np.arange(nx) + 0.5) * vs / 1000.0
    yc = (np.arange(ny) + 0.5) * vs / 1000.0
    xx, yy = np.meshgrid(xc, yc)
    for r, var in enumerate(layers):
        vals = sub[var].sel(snapshot_time=days)
        vmax = max(1.0, float(vals.max()))
        norm = Normalize(0.0, vmax)
        im = None
        for c, d in enumerate(days):
            ax = axs[r, c]
            arr = np.asarray(sub[var].sel(snapshot_time=d).transpose("y", "x").values)
            im = ax.imshow(arr, origin="lower", extent=extent, cmap=_LAYER_CMAPS.get(var, "viridis"), norm=norm,
                           interpolation="nearest", gid=f"lattice:{var}:{d:g}")
            if nk:
                n = np.asarray(sub["lattice_nk"].sel(snapshot_time=d).transpose("y", "x").values, dtype=float)
                on = n > 0
                ax.scatter(xx[on], yy[on], s=4 + 60 * n[on] / nk_max, c="#00bcd4", edgecolors="k", linewidths=0.4,
                           zorder=3, gid=f"nk:{d:g}")
            ax.set_title(f"day {d:g}: {SHORT_NAMES.get(var, var)}", fontsize=7.5)
            ax.set_xlabel("x (mm)", fontsize=7)
            ax.set_ylabel("y (mm)", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.yaxis.set_major_locator(MaxNLocator(3))
            ax.tick_params(labelsize=6, labelbottom=r == nrow - 1, labelleft=c == 0)
            if r == 0 and c == 0:
                _scale_bar(ax, w_mm)
        cb = fig.colorbar(im, ax=list(axs[r, :]), shrink=0.9, pad=0.01)
        cb.set_label(axis_label(ds[var], var), fontsize=7)
        cb.ax.tick_params(labelsize=6)
    if nk:
        sizes = sorted({1.0, float(np.ceil(nk_max / 2)), nk_max})
        handles = [Line2D([], [], ls="none", marker="o", mfc="#00bcd4", mec="k", mew=0.4,
                          ms=float(np.sqrt(4 + 60 * s / nk_max)), label=f"{s:g} NK agent{'s' if s != 1 else ''}")
                   for s in sizes]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7,
                   title="donor NK agents per voxel (dot area)", title_fontsize=7)
    pid = _as_str(ds["patient"].values) if "patient" in ds.coords and "patient" not in ds.dims else None
    who = ", ".join(([f"patient {pid}"] if pid else []) + notes)
    k_txt = f", capacity K = {cap:g} cells per voxel" if cap else ""
    caption = (f"Marrow lattice ({who}): {ny} x {nx} voxels of {vs:g} µm{k_txt}; colour: cells per voxel; "
               f"dots: donor NK agents.\n{_provenance(ds)}")
    fig.suptitle(caption, fontsize=9, wrap=True)
    return fig


# --- the `nksim run` summary figure --------------------------------------------------------------
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


__all__ = ["trial_figure", "time_course", "swimmer_plot", "km_plot", "heatmap", "lattice_snapshot",
           "protocol_schedule", "unit_text", "axis_label", "TIME_COURSE_VARIABLES", "RESPONSE_COLOURS"]


# ----------------------------------------------------------------------------- calibration
def prior_posterior(posterior: xr.Dataset, *, generations: bool = True) -> Figure:
    """Prior vs ABC-SMC posterior of every fitted parameter (``posterior.nc`` of ``nksim calibrate``).

    One panel per parameter: the uniform prior density (dashed; log-uniform for log-scale
    parameters), the final generation's weighted histogram, its weighted median, and (grey, right
    axis) each generation's weighted median and 90 % interval.
    """
    from .calibration.report import prior_posterior_figure

    _need(posterior, ["weight", "epsilon"])
    return prior_posterior_figure(posterior, generations=generations)


def predictive_check(posterior_ppc: xr.Dataset, prior_ppc: xr.Dataset | None = None) -> Figure:
    """Posterior (and prior) predictive distributions of the trial statistics with the observed
    values and the posterior 90 % predictive intervals (``ppc_posterior.nc``/``ppc_prior.nc``)."""
    from .calibration.report import predictive_check_figure

    if "statistics" not in posterior_ppc.attrs:
        raise ValueError("not a predictive-check dataset (no 'statistics' attribute); expected ppc_posterior.nc "
                         "written by nksim calibrate")
    return predictive_check_figure(posterior_ppc, prior_ppc)


def abc_diagnostics(posterior: xr.Dataset) -> Figure:
    """Epsilon, acceptance rate and effective sample size per ABC-SMC generation."""
    from .calibration.report import diagnostics_figure

    _need(posterior, ["epsilon", "acceptance_rate", "ess"])
    return diagnostics_figure(posterior)
