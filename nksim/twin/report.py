"""``REPORT.md`` and figure of ``nksim twin``: the recommendation, its uncertainty and the diagnostics."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr


def report_markdown(ds: xr.Dataset, spec: Any) -> str:
    """The report's text."""
    a = ds.attrs
    best = int(np.argmax(ds["pft_mean"].values))
    lines = [f"# nksim twin: patient {a['patient_id']}, decision on day {a['decision_day']:g}", "",
             spec.description.strip(), "",
             "## Diagnostics", "",
             f"* Patient: {a.get('population', 'active disease, marrow blasts drawn from the population')}.",
             f"* Bank: {a['bank_units']} virtual patients (population predictive"
             + (f"; grown from {a['bank_units_first']} while the effective sample size was below 20"
                if a.get("bank_units_first", a["bank_units"]) < a["bank_units"] else "")
             + f"); effective sample size after "
             f"conditioning **{a['effective_sample_size']:.1f}**"
             + (" (thin: enlarge the bank before trusting the numbers)" if a["thin_bank"] else "") + ".",
             f"* Prior-data conflict: {100 * a['prior_predictive_share']:.1f} % of synthetic patients from the bank "
             "have data at most as likely as hers"
             + (" -- **atypical patient**: the population model does not expect her series" if a["atypical"]
                else " (not atypical)") + ".",
             *_smc_lines(a),
             f"* Resampled: {a['resampled']} virtual patients ({a['distinct_resampled']} distinct).", "",
             "## Recommendation", ""]
    if a["separable"]:
        lines.append(f"**{ds['label'].values[best]}**: {ds['pft_mean'].values[best]:.1f} days progression-free "
                     f"({ds['pft_lo'].values[best]:.1f} to {ds['pft_hi'].values[best]:.1f}); the candidates marked "
                     f"'yes' below cannot be ruled out as within {a['delta']:g} days of it.")
    else:
        lines.append(f"**The data cannot separate the candidates**: every one is within {a['delta']:g} days of the "
                     f"best by the paired comparison (largest mean: {ds['label'].values[best]}).")
    lines += ["", "| candidate | mean PFT (day) | interval | 90 % predictive | vs best (day) | within delta | "
              "P(best) | P(PF at landmark) | P(CR first) | blast change d28 (points) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i in np.argsort(-ds["pft_mean"].values):
        r = ds.isel(candidate=int(i))
        lines.append(f"| {r['label'].item()} | {float(r['pft_mean']):.1f} | {float(r['pft_lo']):.1f} to "
                     f"{float(r['pft_hi']):.1f} | {float(r['pft_pred_lo']):.0f} to {float(r['pft_pred_hi']):.0f} | "
                     f"{float(r['diff_vs_best']):+.1f} ({float(r['diff_vs_best_lo']):+.1f} to "
                     f"{float(r['diff_vs_best_hi']):+.1f}) | {'yes' if r['within_delta'].item() else 'no'} | "
                     f"{float(r['p_best']):.2f} | {float(r['pfs_landmark']):.2f} | {float(r['cr_first']):.2f} | "
                     f"{float(r['blast_change_d28']):+.1f} |")
    lines += ["", "## What her series says about her (90 % intervals: population, conditioned)", "",
              "| parameter | population | conditioned |", "|---|---|---|"]
    width = (ds["param_conditioned"].sel(q=0.95) - ds["param_conditioned"].sel(q=0.05)) / \
        (ds["param_prior"].sel(q=0.95) - ds["param_prior"].sel(q=0.05))
    for i in np.argsort(width.values)[:12]:
        p = ds.isel(parameter=int(i))
        lines.append(f"| {p['parameter'].item()} | {float(p['param_prior'].sel(q=0.05)):.3g} to "
                     f"{float(p['param_prior'].sel(q=0.95)):.3g} | {float(p['param_conditioned'].sel(q=0.05)):.3g} to "
                     f"{float(p['param_conditioned'].sel(q=0.95)):.3g} |")
    lines += ["", "(the 12 narrowed most; all in `twin.nc`). Figure: `twin.png`.", ""]
    return "\n".join(lines)


def _smc_lines(a: Any) -> list[str]:
    """The ABC-SMC's diagnostics (none when the bank's weights were used)."""
    if a.get("conditioning", "bank") != "abc-smc":
        return []
    temps = json.loads(a["smc_temperatures"])
    out = [f"* **Patient-level ABC-SMC** (the bank was {'thin' if a['thin_bank'] else 'not used: mode always'}): "
           f"{a['smc_particles']} particles over the bank's {a['smc_pool']} posterior draws and her random effects, "
           f"{a['smc_stages']} stages (temperatures {', '.join(f'{t:.3g}' for t in temps)}), "
           f"{a['smc_simulations']} simulations; acceptance of the last stage's moves "
           f"{100 * a['smc_acceptance_last']:.0f} %; {a['smc_distinct']} distinct particles. The conditioned "
           "intervals and predictions below are the particles'."]
    if not a["smc_converged"]:
        out.append(f"* **The ABC-SMC stopped at temperature {a['smc_final_temperature']:.3g} < 1** ([twin.smc] "
                   "max_stages): its particles are not yet her posterior; the numbers below are too wide.")
    return out


def write_report(ds: xr.Dataset, spec: Any, out: Path, figures: bool = True) -> None:
    """``REPORT.md`` and ``twin.png`` in ``out``."""
    from ..fileio import write_atomic

    write_atomic(out / "REPORT.md", report_markdown(ds, spec))
    if figures:
        plot_twin(ds, out / "twin.png")


def plot_twin(ds: xr.Dataset, path: Path) -> None:
    """Left: measurements against the bank's and the conditioned predictions; right: the candidates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained", gridspec_kw={"width_ratios": [1, 1.3]})
    for q in dict.fromkeys(ds["obs_quantity"].values.tolist()):
        m = ds["obs_quantity"].values == q
        day = ds["obs_day"].values[m]
        a1.fill_between(day, ds["obs_prior"].values[m, 0], ds["obs_prior"].values[m, 2], alpha=0.15, step="mid")
        a1.errorbar(day, ds["obs_conditioned"].values[m, 1],
                    yerr=[ds["obs_conditioned"].values[m, 1] - ds["obs_conditioned"].values[m, 0],
                          ds["obs_conditioned"].values[m, 2] - ds["obs_conditioned"].values[m, 1]], fmt="s", ms=3,
                    capsize=2, label=f"{q}: conditioned")
        a1.scatter(day, ds["obs_value"].values[m], marker="x", color="k", zorder=5)
    a1.set_yscale("log")
    a1.set_xlabel("day since the first infusion")
    a1.set_ylabel("value (unit of the quantity)")
    a1.set_title("measured (x), population band, conditioned 90 %", fontsize=9)
    a1.legend(fontsize=7)
    order = np.argsort(ds["pft_mean"].values)
    for row, i in enumerate(order):
        r = ds.isel(candidate=int(i))
        colour = "tab:green" if r["within_delta"].item() else "0.5"
        m = float(r["diff_vs_best"])
        a2.errorbar(m, row, xerr=[[m - float(r["diff_vs_best_lo"])], [float(r["diff_vs_best_hi"]) - m]], fmt="o",
                    color=colour, capsize=2)
    d = float(ds.attrs["delta"])
    a2.axvspan(-d, 0, color="0.92", zorder=0)
    a2.set_yticks(np.arange(len(order)), [str(ds["label"].values[i]) for i in order], fontsize=7)
    a2.set_xlabel("progression-free time to the horizon: paired difference from the best candidate (day)")
    a2.set_title(f"candidates; green: within {ds.attrs['delta']:g} day of the best not ruled out", fontsize=9)
    save_figure(fig, path)
