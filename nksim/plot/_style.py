"""Backend choice, colours, figure layout and caption helpers shared by the figures of :mod:`nksim.plot`."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg", force=False)  # headless by default; Jupyter keeps its inline backend
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "PD": "#d73027"}
NOT_ASSESSED_COLOUR = "#bdbdbd"
FOLLOW_UP_COLOUR = "#eeeeee"
GROUP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                 "#7f7f7f", "#d62728"]
LD_COLOUR = "0.86"
TIME_LABEL = "time since first NK infusion (day)"


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
