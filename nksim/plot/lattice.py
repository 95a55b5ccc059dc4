"""Marrow lattice snapshots of one patient (:func:`lattice_snapshot`)."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ._data import _need, _pick
from ._style import _as_str, _provenance
from .labels import SHORT_NAMES, axis_label

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
