"""Heatmaps of a sweep-summary outcome over two schedule factors (:func:`heatmap`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ._data import _need, _need_coord
from ._style import _as_str, _finish, _nice, _provenance
from .labels import SHORT_NAMES, axis_label


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
    (``reference_scenario`` attribute) is outlined. A paired difference (``<metric>_diff``) is drawn on a
    diverging map centred on 0 with symmetric limits; a probability on its whole 0-1 range.
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
    # a paired difference against the reference (nksim.sweep.summarize's `<metric>_diff`): a diverging map centred
    # on 0 (no difference), symmetric limits -- never the 0-1 range of a probability, which hides differences
    difference = outcome.endswith("_diff")
    default_cmap = "PuOr" if difference else ("viridis_r" if outcome == "p_pd_first" else "viridis")
    cm = plt.get_cmap(cmap or default_cmap).with_extremes(bad="0.92")
    img = np.ma.masked_invalid(grid)
    finite = grid[np.isfinite(grid)]
    if difference and finite.size and np.abs(finite).max() > 0:
        hi = float(np.abs(finite).max())
        lo = -hi
    elif units == "1" and not difference and finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
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
                # white text on dark cells: the cell colour's luminance (any colour map, diverging ones included)
                r, g, b, _ = cm(norm(v)) if np.isfinite(v) else (1.0, 1.0, 1.0, 1.0)
                light = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
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
