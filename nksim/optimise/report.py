"""``REPORT.md`` and figures of an optimisation (``nksim optimise``).

Figures (PNG, in the output folder):

* ``search_history.png``: every trial's value on the search bank (TPE and polish) and the running
  incumbent; the incumbent's search value is biased upward (it is a maximum of noisy estimates);
* ``near_optimal.png``: the confirmed schedules on the fresh bank, mean with interval, the
  near-optimal set marked, the reference and the selected schedule named;
* ``factors.png``: the objective against each varied factor over the search's distinct schedules,
  with the mean per level: a marginal view of the proposals (TPE samples more where it expects
  good values, so these are not a model-based partial dependence);
* ``per_draw_best.png``: each confirmed schedule's mean within every posterior draw, and the share
  of draws in which it is best;
* ``profiles.png``: one factor at a time varied from the selected schedule, the paired difference from
  it on the search bank with its interval (common random numbers remove the patients' spread): how
  much each factor matters near the answer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .search import SearchHistory


def _fmt(x: float, digits: int = 1) -> str:
    return "NA" if not np.isfinite(x) else f"{x:.{digits}f}"


def _verdict(ds: xr.Dataset) -> str:
    """One plain sentence saying whether any schedule is shown better than the reference."""
    a = ds.attrs
    unit = a["delta_units"]
    ref = int(np.flatnonzero(np.char.find(ds["role"].values.astype(str), "reference") >= 0)[0])
    gain = f"{_fmt(a['held_out_gain'])} {unit} ({_fmt(a['held_out_gain_lo'])} to {_fmt(a['held_out_gain_hi'])})"
    if a["held_out_gain_lo"] > 0 and a["held_out_gain_hi"] < a["delta"]:
        return (f"**Verdict**: the selected schedule is better than the reference by {gain}: an interval above 0 "
                f"but entirely below the margin delta = {a['delta']:g} {unit}, so a real but small gain, not a "
                "meaningful one by the margin this study set.")
    if a["held_out_gain_lo"] > 0:
        return (f"**Verdict**: the selected schedule is better than the reference by {gain} (interval above 0; "
                f"margin delta = {a['delta']:g} {unit}).")
    if ds["near_optimal"].values[ref]:
        return (f"**Verdict**: no schedule is shown better than the reference: the reference is in the near-optimal "
                f"set (not ruled out as within {a['delta']:g} {unit} of the best) and the selected schedule's gain "
                f"over it on the estimate bank has an interval that includes 0.")
    return ("**Verdict**: the reference is ruled out of the near-optimal set on the confirm bank, but the selected "
            "schedule's gain over it on the estimate bank has an interval that includes 0: read both.")


def report_markdown(ds: xr.Dataset, history: SearchHistory, spec: Any) -> str:
    """The report's text (markdown)."""
    a = ds.attrs
    obj = a["objective"]
    unit = a["delta_units"]
    level = f"{100 * (1 - a['alpha']):g} %"
    sel = int(np.flatnonzero(ds["selected"].values)[0])
    nos = [str(ds["label"].values[i]) for i in np.flatnonzero(ds["near_optimal"].values)]
    lines = [
        f"# nksim optimise: {spec.name}",
        "",
        spec.description.strip() or "",
        "",
        f"Objective: restricted mean progression-free time from the start of lymphodepletion to day "
        f"{a['horizon']:g} ({unit}); P(progression-free) at day {a['landmark_day']:g} reported beside. "
        f"Search: {a['search_trials']} trials on {a['search_units']} units; confirmation: "
        f"{a['confirm_units']} units ({a['confirm_draws']} posterior draws); estimate: {a['estimate_units']} units. "
        f"Intervals: {level}, clustered by posterior draw. Patients: {a.get('population', 'active disease')}.",
        "",
        "## Answer",
        "",
        f"* **Selected schedule**: {a['selected_label']}: {_fmt(a['held_out_value'])} {unit} "
        f"({_fmt(a['held_out_value_lo'])} to {_fmt(a['held_out_value_hi'])}) on the independent estimate bank.",
        f"* **Gain over the reference** ({a['reference_label']}): {_fmt(a['held_out_gain'])} {unit} "
        f"({_fmt(a['held_out_gain_lo'])} to {_fmt(a['held_out_gain_hi'])}), paired, estimate bank.",
        f"* **Near-optimal set** (not ruled out as within {a['delta']:g} {unit} of the best): {len(nos)} of "
        f"{ds.sizes['candidate']} confirmed schedules: " + "; ".join(nos) + ".",
        f"* **Dependence on the posterior**: the selected schedule is best in "
        f"{100 * float(ds['p_best'].values[sel]):.0f} % of posterior draws; EVPI about the draw between "
        f"{_fmt(a['evpi_cross_fitted'], 2)} (cross-fitted) and {_fmt(a['evpi_plain'], 2)} {unit} (plain).",
        "",
        _verdict(ds),
        "",
        "The search bank's value of its own best schedule is biased upward and is not the answer; the "
        "values above come from banks that took no part in the search.",
        "",
        "## Confirmed schedules",
        "",
        f"| schedule | role | search ({unit}) | confirm mean ({unit}) | {level} | vs reference ({unit}) | "
        f"vs selected ({unit}) | near-optimal | P(best per draw) | PFS d{a['landmark_day']:g} | CR first |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = np.argsort(-ds[f"{obj}_mean"].values)
    for i in order:
        r = ds.isel(candidate=int(i))
        lines.append(
            f"| {r['label'].item()}{' **(selected)**' if r['selected'].item() else ''} | {r['role'].item()} | "
            f"{_fmt(float(r[f'{obj}_search']))} | {_fmt(float(r[f'{obj}_mean']))} | "
            f"{_fmt(float(r[f'{obj}_lo']))} to {_fmt(float(r[f'{obj}_hi']))} | "
            f"{_fmt(float(r['gain_vs_reference']))} ({_fmt(float(r['gain_vs_reference_lo']))} to "
            f"{_fmt(float(r['gain_vs_reference_hi']))}) | {_fmt(float(r['diff_vs_selected']))} | "
            f"{'yes' if r['near_optimal'].item() else 'no'} | {float(r['p_best']):.2f} | "
            f"{float(r['pfs_mean']):.2f} | {float(r['cr_mean']):.2f} |")
    if "profile_point" in ds.dims:
        lines += ["", "## One factor at a time from the selected schedule (search bank, paired)", "",
                  f"| factor | levels | largest loss ({unit}) | at | largest gain ({unit}) | at |",
                  "|---|---|---|---|---|---|"]
        for f in dict.fromkeys(ds["profile_factor"].values.tolist()):
            m = ds["profile_factor"].values == f
            d = ds["profile_diff"].values[m]
            lv = ds["profile_level"].values[m]
            worst, best = int(np.argmin(d)), int(np.argmax(d))
            lines.append(f"| {f} | {_fmt(lv.min(), 0)}-{_fmt(lv.max(), 0)} | {_fmt(d[worst])} | {_fmt(lv[worst], 0)} | "
                         f"{_fmt(d[best])} | {_fmt(lv[best], 0)} |")
    lines += ["", "## Search space", ""] + [f"* {x}" for x in spec.space.describe()] + [
        "", "Figures: `search_history.png`, `near_optimal.png`, `profiles.png`, `factors.png`, `per_draw_best.png`; "
        "data: `result.nc`, `history.csv`.", ""]
    return "\n".join(lines)


def write_report(ds: xr.Dataset, history: SearchHistory, spec: Any, out: Path, figures: bool = True) -> None:
    """Write ``REPORT.md`` (atomically) and, with ``figures``, the four figures into ``out``."""
    from ..fileio import write_atomic

    write_atomic(out / "REPORT.md", report_markdown(ds, history, spec))
    if figures:
        plot_search_history(history, out / "search_history.png")
        plot_near_optimal(ds, out / "near_optimal.png")
        plot_factors(history, spec, out / "factors.png")
        plot_per_draw(ds, out / "per_draw_best.png")
        if "profile_point" in ds.dims:
            plot_profiles(ds, out / "profiles.png")


def plot_search_history(history: SearchHistory, path: Path) -> None:
    """The search-history figure (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    for src, colour in (("tpe", "tab:blue"), ("polish", "tab:orange")):
        ts = [t for t in history.trials if t.source == src]
        ax.scatter([t.number for t in ts], [t.value for t in ts], s=14, color=colour, label=src, alpha=0.8)
    best = np.maximum.accumulate([t.value for t in history.trials])
    ax.step(range(len(best)), best, where="post", color="k", lw=1, label="incumbent (biased upward)")
    ax.set_xlabel("trial")
    ax.set_ylabel("progression-free time, search bank (day)")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # days, not an offset from 204.4
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def plot_near_optimal(ds: xr.Dataset, path: Path) -> None:
    """The near-optimal figure (module docstring): means, and paired differences from the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    obj = ds.attrs["objective"]
    order = np.argsort(ds[f"{obj}_mean"].values)
    k = len(order)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.42 * k + 1.6), sharey=True,
                                 gridspec_kw={"width_ratios": [1, 1]}, layout="constrained")
    labels = []
    for row, i in enumerate(order):
        r = ds.isel(candidate=int(i))
        colour = "tab:green" if r["near_optimal"].item() else "0.5"
        m, lo, hi = float(r[f"{obj}_mean"]), float(r[f"{obj}_lo"]), float(r[f"{obj}_hi"])
        a1.errorbar(m, row, xerr=[[m - lo], [hi - m]], fmt="o", color=colour, capsize=2)
        g, glo, ghi = (float(r["gain_vs_reference"]), float(r["gain_vs_reference_lo"]),
                       float(r["gain_vs_reference_hi"]))
        a2.errorbar(g, row, xerr=[[g - glo], [ghi - g]], fmt="o", color=colour, capsize=2)
        tag = " [selected]" if r["selected"].item() else (" [reference]" if "reference" in r["role"].item() else "")
        labels.append(f"{r['label'].item()}{tag}")
    a1.set_yticks(np.arange(k), labels, fontsize=7)
    a1.set_xlabel(f"mean (day), confirm bank, with {100 * (1 - ds.attrs['alpha']):g} % interval")
    d = float(ds.attrs["delta"])
    a2.axvspan(-d, d, color="0.92", zorder=0)
    a2.axvline(0, color="k", lw=0.8)
    a2.set_xlabel(f"paired difference from the reference (day); grey: +-delta ({d:g} day)")
    fig.suptitle(f"green: near-optimal (not ruled out as within {d:g} day of the best); progression-free time to "
                 f"day {ds.attrs['horizon']:g} from the start of lymphodepletion", fontsize=9)
    save_figure(fig, path)


def plot_factors(history: SearchHistory, spec: Any, path: Path) -> None:
    """The factor figure (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    ts = history.distinct()
    factors = {
        "n_infusions": ("infusions", lambda c: c.n_infusions),
        "gap": ("gap (day)", lambda c: c.gap),
        "interval": ("first interval (day)", lambda c: c.intervals[0] if c.n_infusions > 1 else np.nan),
        "share": ("first share (percent)", lambda c: c.shares[0]),
        "donor": ("distinct donors", lambda c: c.new_donors),
        "cytokine_start": ("cytokine start (day)", lambda c: c.cytokine_start),
        "cytokine_days": ("cytokine course length (day)", lambda c: c.cytokine_days),
    }
    multi = any(t.candidate.n_infusions > 1 for t in ts)
    shown = [k for k in factors if (k == "share" and multi) or (k != "share" and not spec.space.dims[k].fixed)]
    shown = shown or ["n_infusions"]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.0 * len(shown), 3.6), sharey=True, squeeze=False,
                             layout="constrained")
    y = np.array([t.value for t in ts])
    for ax, k in zip(axes[0], shown, strict=True):
        label, f = factors[k]
        x = np.array([f(t.candidate) for t in ts], dtype=float)
        ax.scatter(x, y, s=10, alpha=0.6)
        ok = np.isfinite(x)
        levels = np.unique(x[ok])
        if len(levels) <= 30:
            ax.plot(levels, [y[ok][x[ok] == v].mean() for v in levels], color="k", lw=1)
        ax.set_xlabel(label)
    axes[0][0].set_ylabel("progression-free time, search bank (day)")
    axes[0][0].ticklabel_format(axis="y", useOffset=False, style="plain")
    fig.suptitle("objective against each factor over the search's schedules (marginal, not model-based)", fontsize=9)
    save_figure(fig, path)


def plot_per_draw(ds: xr.Dataset, path: Path) -> None:
    """The per-draw figure (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    obj = ds.attrs["objective"]
    m = ds[f"{obj}_by_draw"].values
    rel = m - m.mean(axis=0, keepdims=True)
    k = m.shape[0]
    colours = plt.get_cmap("tab10")(np.arange(k) % 10)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 0.3 * k + 3.0), layout="constrained",
                                 gridspec_kw={"width_ratios": [3, 2]})
    for i in range(k):
        a1.plot(np.arange(m.shape[1]), rel[i], marker="o", ms=3, lw=1, color=colours[i])
    a1.set_xlabel("posterior draw (confirm bank)")
    a1.set_ylabel("mean minus the draw's average over schedules (day)")
    a2.barh(np.arange(k), ds["p_best"].values, color=colours)
    a2.set_yticks(np.arange(k), [str(x) for x in ds["label"].values], fontsize=7)
    a2.yaxis.tick_right()
    a2.set_xlabel("share of posterior draws in which best (colours as left)")
    save_figure(fig, path)


def plot_profiles(ds: xr.Dataset, path: Path) -> None:
    """The profiles figure (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    names = list(dict.fromkeys(ds["profile_factor"].values.tolist()))
    labels = {"gap": "gap (day)", "interval": "first interval (day)", "first_share": "first share (percent)",
              "cytokine_start": "cytokine start (day)", "cytokine_days": "cytokine course length (day)"}
    fig, axes = plt.subplots(1, len(names), figsize=(max(3.2 * len(names), 6.5), 3.6), sharey=True, squeeze=False,
                             layout="constrained")
    d = float(ds.attrs["delta"])
    for ax, name in zip(axes[0], names, strict=True):
        m = ds["profile_factor"].values == name
        x = ds["profile_level"].values[m]
        o = np.argsort(x)
        y, lo, hi = (ds[v].values[m][o] for v in ("profile_diff", "profile_diff_lo", "profile_diff_hi"))
        ax.axhspan(-d, d, color="0.92", zorder=0)
        ax.fill_between(x[o], lo, hi, alpha=0.3)
        ax.plot(x[o], y, marker="o", ms=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(labels.get(name, name))
    axes[0][0].set_ylabel("difference from the selected schedule (day)")
    fig.suptitle(f"one factor at a time from the selected schedule\n(paired differences, search bank; grey: "
                 f"+-delta = {d:g} day)", fontsize=9)
    save_figure(fig, path)
