"""Time courses: median and central bands of daily variables (:func:`time_course`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._data import _need, _samples, _split, _stats
from ._protocol import _mark_protocol
from ._style import _axes_grid, _colours, _finish, _given_axes, _provenance
from .labels import LOG_VARIABLES, axis_label

#: Default variables of :func:`time_course`.
TIME_COURSE_VARIABLES = ("donor_chimerism_nk", "donor_nk_blood", "host_t_blood", "il15", "marrow_blast_pct")


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
