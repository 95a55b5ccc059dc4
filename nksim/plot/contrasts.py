"""Forest plot of a sweep summary's paired contrasts with their 95 % confidence intervals (:func:`contrast_forest`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._data import _need
from ._style import _finish, _given_axes, _provenance
from .labels import unit_text

#: Short panel names of the contrasts of :data:`nksim.sweep.summaries.CONTRASTS`.
CONTRAST_NAMES = {
    "pfs_landmark": "Δ P(progression-free at landmark)",
    "p_pd_first": "Δ P(PD at first assessment)",
    "p_cr_first": "Δ P(CR at first assessment)",
    "rmst_landmark": "Δ restricted mean progression-free time",
    "blast_change_d28": "Δ day-28 marrow blast change",
    "peak_chimerism_nk_d28": "Δ peak donor chimerism, blood NK, days 0-28",
    "auc_chimerism_nk_d28": "Δ AUC donor chimerism, blood NK, days 0-28",
    "peak_chimerism_pbmc_d28": "Δ peak donor chimerism, blood lymphocytes, days 0-28",
    "auc_chimerism_pbmc_d28": "Δ AUC donor chimerism, blood lymphocytes, days 0-28",
}

#: Colours of contrasts whose CI excludes 0 (neutral: whether higher is better depends on the contrast).
ABOVE, BELOW = "#1f77b4", "#ff7f0e"


def contrast_forest(summary: xr.Dataset, contrasts: str | Sequence[str] = "pfs_landmark", *,
                    select: Sequence[Any] | None = None, order: str | None = "diff",
                    ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """Forest plot: each scenario's paired contrast vs its reference with the 95 % confidence interval.

    ``summary``: ``nksim.sweep.summarize(store)`` (variables ``<contrast>_diff``, ``_diff_lo``,
    ``_diff_hi`` and ``reference``). ``contrasts``: one name or a list (one panel each, sharing
    the scenario axis), e.g. ``["pfs_landmark", "rmst_landmark", "blast_change_d28"]``.
    ``select``: scenario indices to show (default all). ``order``: ``"diff"`` (by the first
    contrast, largest on top), ``"scenario"`` (index order, first on top) or None (as in the
    summary). One row per scenario: a dot at the mean paired difference and a bar over its
    95 % CI (mean -/+ 1.96 SE), coloured when the CI excludes 0; a reference scenario is drawn
    as an open square at 0 and labelled "(reference)"; a dashed line marks no difference.
    Artists carry ``gid = "contrast:<name>:<scenario>"``.
    """
    names = [contrasts] if isinstance(contrasts, str) else list(contrasts)
    if not names:
        raise ValueError("contrasts must name at least one contrast")
    _need(summary, [f"{n}{suffix}" for n in names for suffix in ("_diff", "_diff_lo", "_diff_hi")] + ["reference"],
          "contrast variable")
    if "scenario" not in summary.dims:
        raise ValueError("summary must have the dimension 'scenario' (nksim.sweep.summarize)")
    sub = summary
    if select is not None:
        wanted = [int(s) for s in select]
        missing = sorted(set(wanted) - set(int(s) for s in summary["scenario"].values))
        if missing:
            raise ValueError(f"scenarios {missing} are not in the summary; available: "
                             f"{[int(s) for s in summary['scenario'].values]}")
        sub = summary.sel(scenario=wanted)
    n = sub.sizes["scenario"]
    if n == 0:
        raise ValueError("no scenario to plot")
    if order == "diff":
        key = np.nan_to_num(sub[f"{names[0]}_diff"].values.astype(float), nan=-np.inf)
        pos = np.argsort(-key, kind="stable")
    elif order == "scenario":
        pos = np.argsort(sub["scenario"].values, kind="stable")
    elif order is None:
        pos = np.arange(n)
    else:
        raise ValueError(f"order must be 'diff', 'scenario' or None, got {order!r}")
    scen = sub["scenario"].values.astype(int)[pos]
    refs = sub["reference"].values.astype(int)[pos]
    labels = sub["label"].values[pos] if "label" in sub.variables else [""] * n
    ticks = [f"#{s} {lab}" + (" (reference)" if s == r else "") for s, lab, r in zip(scen, labels, refs)]
    own = ax is None
    if own:
        fig, axes_arr = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 2.6, 0.32 * n + 1.9),
                                     sharey=True, constrained_layout=True, squeeze=False)
        axes = list(axes_arr.ravel())
    else:
        axes = _given_axes(ax, len(names))
        fig = axes[0].figure
    y = np.arange(n)[::-1]  # first row on top
    for a, name in zip(axes, names):
        da = sub[f"{name}_diff"]
        mean = da.values.astype(float)[pos]
        lo = sub[f"{name}_diff_lo"].values.astype(float)[pos]
        hi = sub[f"{name}_diff_hi"].values.astype(float)[pos]
        a.axvline(0.0, color="0.4", ls="--", lw=0.8)
        for yi, s, r, m, lo_i, hi_i in zip(y, scen, refs, mean, lo, hi):
            if s == r:
                a.plot([0.0], [yi], marker="s", mfc="white", mec="k", ls="none", gid=f"contrast:{name}:{s}")
                continue
            colour = "0.55" if not np.isfinite(lo_i) or lo_i <= 0.0 <= hi_i else (ABOVE if m > 0 else BELOW)
            eb = a.errorbar([m], [yi], xerr=[[m - lo_i if np.isfinite(lo_i) else 0.0],
                                             [hi_i - m if np.isfinite(hi_i) else 0.0]],
                            fmt="o", ms=4, color=colour, ecolor=colour, elinewidth=1.4, capsize=2.5)
            eb.lines[0].set_gid(f"contrast:{name}:{s}")
        units = da.attrs.get("units")
        a.set_xlabel(f"difference vs reference ({unit_text(units, name)})", fontsize=8)
        a.set_title(CONTRAST_NAMES.get(name, name), fontsize=8)
        a.grid(axis="x", color="0.92", lw=0.6)
    axes[0].set_yticks(y, ticks, fontsize=7)
    axes[0].set_ylabel("scenario (index, label)")
    axes[0].set_ylim(-0.7, n - 0.3)
    handles = [Line2D([], [], marker="o", color=ABOVE, ls="-", label="above the reference (CI excludes 0)"),
               Line2D([], [], marker="o", color=BELOW, ls="-", label="below the reference (CI excludes 0)"),
               Line2D([], [], marker="o", color="0.55", ls="-", label="95% CI includes 0"),
               Line2D([], [], marker="s", mfc="white", mec="k", ls="none", label="reference scenario")]
    if own:
        fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=4, frameon=False)
    else:
        axes[0].legend(handles=handles, fontsize=6.5, loc="best")
    a_ = summary.attrs
    clock = a_.get("clock")
    origin = "the start of lymphodepletion" if clock == "lymphodepletion" else "the first NK infusion"
    n_sim = a_.get("simulations_per_scenario")
    caption = ("Paired contrasts vs the reference scenario (same draw, patient and replicate), mean and 95% CI "
               "(mean ± 1.96 SE)" + (f"; {n_sim} simulations per scenario" if n_sim else "")
               + (f"; times since {origin} (clock '{clock}')" if clock else "")
               + (f"; landmark day {float(a_['landmark_day']):g}" if "landmark_day" in a_ else "")
               + f".\n{_provenance(summary)}")
    return _finish(fig, own, caption)
