"""Calibration figures: prior vs posterior, predictive checks, ABC diagnostics, Morris screen, parameter recovery.

Inputs are the files of ``nksim calibrate`` (``posterior.nc``, ``ppc_posterior.nc``,
``ppc_prior.nc``), ``nksim screen`` (``morris.nc``) and ``nksim calibrate --recovery``
(``recovery.nc``), or the Datasets the calibration functions return.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._data import _need


def conversion_panel(ax, posterior_ppc: xr.Dataset, prior_ppc: xr.Dataset | None = None) -> None:
    """Simulated conversion days (SD at the first assessment, then PD within follow-up) beside the trial's.

    Bars: the assessment day at which PD was first called (``conversion_call_day``), as a share of
    all simulated conversions (posterior; prior in grey); line: the first day the daily blasts met
    the PD criterion (``conversion_cross_day``, 10-day bins). Red brackets: the observed patients'
    progression intervals ``(lo, hi]`` (``observed_progression_day_lo/hi``) with a mark at the day
    progression was observed.
    """
    call = posterior_ppc["conversion_call_day"].to_numpy().ravel()
    call = call[np.isfinite(call)]
    cross = posterior_ppc["conversion_cross_day"].to_numpy().ravel()
    cross = cross[np.isfinite(cross)]
    lo = posterior_ppc["observed_progression_day_lo"].to_numpy()
    hi = posterior_ppc["observed_progression_day_hi"].to_numpy()
    obs = np.isfinite(hi)
    days = np.unique(np.concatenate([call, hi[obs]]))
    width = 12.0
    if prior_ppc is not None and "conversion_call_day" in prior_ppc:
        pc = prior_ppc["conversion_call_day"].to_numpy().ravel()
        pc = pc[np.isfinite(pc)]
        if pc.size:
            u, k = np.unique(pc, return_counts=True)
            ax.bar(u - width / 2, k / pc.size, width=width, color="0.6", alpha=0.6,
                   label=f"prior predictive: PD call day (n={pc.size})")
    if call.size:
        u, k = np.unique(call, return_counts=True)
        ax.bar(u + (width / 2 if prior_ppc is not None else 0.0), k / call.size, width=width, color="C0", alpha=0.7,
               label=f"posterior predictive: PD call day (n={call.size}, median {np.median(call):g})")
    if cross.size:
        top = max(float(np.nanmax(call)) if call.size else 0.0, float(np.nanmax(cross)), 10.0)
        bins = np.arange(0.0, top + 10.0, 10.0)
        h, e = np.histogram(cross, bins=bins)
        ax.step(e[:-1], h / cross.size, where="post", color="C1", lw=1.2,
                label=f"posterior predictive: day blasts met PD (10-d bins, median {np.median(cross):g})")
    ymax = max(ax.get_ylim()[1], 0.1)
    n_obs = int(obs.sum())
    for i, (a, b) in enumerate(zip(lo[obs], hi[obs])):
        y = ymax * (1.08 + 0.08 * i)
        ax.plot([a, b], [y, y], color="C3", lw=2, label="trial: progression interval (lo, hi]" if i == 0 else None)
        ax.plot([b], [y], "|", color="C3", ms=8)
    ax.set_ylim(0, ymax * (1.15 + 0.08 * max(n_obs, 1)))
    n_sd = int(posterior_ppc["n_followed_sd"].attrs["observed"]) if "n_followed_sd" in posterior_ppc else None
    title = f"conversion days: trial {n_obs}" + (f" of {n_sd} followed SD" if n_sd is not None else "")
    if len(days):
        ax.set_xticks(days)
    ax.set_xlim(0, max([280.0, *(days + 10.0)]))
    ax.set_xlabel("day after the first infusion [day]", fontsize=8)
    ax.set_ylabel("share of simulated conversions [1]", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=5.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def prior_posterior(posterior: xr.Dataset, *, generations: bool = True, ppc: xr.Dataset | None = None,
                    ppc_prior: xr.Dataset | None = None) -> Figure:
    """Prior vs ABC-SMC posterior of every fitted parameter (``posterior.nc`` of ``nksim calibrate``).

    One panel per parameter: the uniform prior density (dashed; log-uniform for log-scale
    parameters), the final generation's weighted histogram, its weighted median, and (grey, right
    axis) each generation's weighted median and 90 % interval (if ``generations``). With a
    predictive check ``ppc`` (``ppc_posterior.nc``; ``ppc_prior`` optional) that has conversion
    days, one more panel shows the simulated conversion days beside the trial's
    (:func:`conversion_panel`).
    """
    from ..calibration.posterior import var_name, weighted_quantile

    _need(posterior, ["weight", "epsilon"])
    keys = posterior.attrs["fitted_parameters"].split()
    extra = ppc is not None and "conversion_call_day" in ppc
    ncol = min(4, len(keys) + extra)
    nrow = math.ceil((len(keys) + extra) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    last = posterior.isel(generation=-1)
    w = last["weight"].to_numpy()
    ok = np.isfinite(w)
    for ax, k in zip(axes.ravel(), keys):
        v = posterior[var_name(k)]
        a = v.attrs
        lo, hi, log = float(a["prior_lo"]), float(a["prior_hi"]), a["scale"] == "log"
        x = last[var_name(k)].to_numpy()[ok]
        ww = w[ok] / w[ok].sum()
        bins = np.geomspace(lo, hi, 25) if log else np.linspace(lo, hi, 25)
        ax.hist(x, bins=bins, weights=ww, density=True, color="C0", alpha=0.7, label="posterior")
        if log:
            from matplotlib.ticker import LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(numticks=4))
            ax.xaxis.set_minor_formatter(NullFormatter())
            grid = np.geomspace(lo, hi, 200)
            dens = 1.0 / (grid * np.log(hi / lo))
        else:
            grid = np.linspace(lo, hi, 200)
            dens = np.full_like(grid, 1.0 / (hi - lo))
        ax.plot(grid, dens, color="k", lw=1.2, ls="--", label="prior")
        med = weighted_quantile(x, ww, [0.5])[0]
        ax.axvline(med, color="C3", lw=1.5, label=f"median {med:.3g}")
        if generations and posterior.sizes["generation"] > 1:
            ax2 = ax.twinx()
            for g in range(posterior.sizes["generation"]):
                gw = posterior["weight"].isel(generation=g).to_numpy()
                gok = np.isfinite(gw)
                gx = v.isel(generation=g).to_numpy()[gok]
                q = weighted_quantile(gx, gw[gok] / gw[gok].sum(), [0.05, 0.5, 0.95])
                ax2.plot([q[0], q[2]], [g, g], color="0.5", lw=1)
                ax2.plot(q[1], g, "o", color="0.4", ms=3)
            ax2.set_ylabel("generation", fontsize=7, color="0.4")
            ax2.tick_params(labelsize=6, colors="0.4")
        ax.set_xlabel(f"{k} [{a['units']}]", fontsize=8)
        ax.set_ylabel("density [1/unit]", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper right")
    if extra:
        conversion_panel(axes.ravel()[len(keys)], ppc, ppc_prior)
    for ax in axes.ravel()[len(keys) + extra:]:
        ax.set_visible(False)
    n_sim = posterior.attrs.get("total_simulations", "?")
    fig.suptitle(f"Prior (dashed) vs ABC-SMC posterior (histogram; grey: generations' 90 % intervals), "
                 f"{posterior.sizes['generation']} generations, {n_sim} simulations", fontsize=10)
    fig.tight_layout()
    return fig


def predictive_check(posterior_ppc: xr.Dataset, prior_ppc: xr.Dataset | None = None) -> Figure:
    """Posterior (and prior) predictive distributions of the trial statistics.

    With the observed values and the posterior 90 % predictive intervals
    (``ppc_posterior.nc``/``ppc_prior.nc``).
    """
    if "statistics" not in posterior_ppc.attrs:
        raise ValueError("not a predictive-check dataset (no 'statistics' attribute); expected ppc_posterior.nc "
                         "written by nksim calibrate")
    names = posterior_ppc.attrs["statistics"].split()
    extra = "conversion_call_day" in posterior_ppc
    ncol = min(3, len(names) + extra)
    nrow = math.ceil((len(names) + extra) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.8 * ncol, 3.0 * nrow), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        a = posterior_ppc[name].attrs
        sims = [("posterior", posterior_ppc[name].to_numpy(), "C0")]
        if prior_ppc is not None and name in prior_ppc:
            sims.insert(0, ("prior", prior_ppc[name].to_numpy(), "0.6"))
        is_count = a["units"] == "1"
        chim = a["units"] in ("percent", "uL-1")  # compared on the log10 scale
        for label, x, c in sims:
            x = x[np.isfinite(x)]
            if chim:
                x = np.log10(np.clip(x, 1e-6, None))
            if is_count:
                bins = np.arange(-0.5, 10.5, 1.0)
            else:
                bins = 25
            ax.hist(x, bins=bins, density=True, alpha=0.55 if label == "posterior" else 0.4, color=c,
                    label=f"{label} predictive")
        obs = a["observed"]
        obs_x = np.log10(obs) if chim else obs
        ax.axvline(obs_x, color="C3", lw=2, label=f"observed {obs:g}")
        lo, hi = a["interval_90_lo"], a["interval_90_hi"]
        if np.isfinite(lo):
            ax.axvspan(np.log10(max(lo, 1e-6)) if chim else lo, np.log10(max(hi, 1e-6)) if chim else hi,
                       color="C0", alpha=0.1, label="posterior 90 % interval")
        unit = f"log10 {a['units']}" if chim else a["units"]
        ax.set_xlabel(f"{name} [{unit}]", fontsize=8)
        ax.set_ylabel("probability density [1/unit]", fontsize=8)
        inside = "inside" if a["observed_inside_90"] else "OUTSIDE"
        ax.set_title(f"observed {inside} 90 % PI", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    if extra:
        conversion_panel(axes.ravel()[len(names)], posterior_ppc, prior_ppc)
    for ax in axes.ravel()[len(names) + extra:]:
        ax.set_visible(False)
    fig.suptitle(f"Predictive checks: {posterior_ppc.attrs.get('n_draws', '?')} virtual trials of the observed "
                 "patients (doses, follow-up) vs the trial", fontsize=10)
    fig.tight_layout()
    return fig


def abc_diagnostics(posterior: xr.Dataset) -> Figure:
    """Epsilon, acceptance rate and effective sample size per ABC-SMC generation."""
    _need(posterior, ["epsilon", "acceptance_rate", "ess"])
    g = posterior["generation"].to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    for ax, name, log in zip(axes, ("epsilon", "acceptance_rate", "ess"), (False, True, False)):
        ax.plot(g, posterior[name].to_numpy(), "o-", label=posterior[name].attrs["long_name"])
        ax.set_xlabel("generation [1]")
        ax.set_ylabel(f"{name} [{posterior[name].attrs['units']}]")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"ABC-SMC diagnostics ({posterior.attrs.get('total_simulations', '?')} simulations, "
                 f"{float(posterior.attrs.get('wall_time_s', float('nan'))) / 60:.1f} min on "
                 f"{posterior.attrs.get('workers', '?')} workers)", fontsize=10)
    fig.tight_layout()
    return fig


def screen_figure(ds: xr.Dataset) -> Figure:
    """One panel per output: mu*/max mu* per parameter (sorted bars, 95% CI), selected ones highlighted."""
    from ..calibration.screen import SELECTION_THRESHOLD

    outputs = [str(o) for o in ds["output"].to_numpy()]
    keys = np.array([str(p) for p in ds["parameter"].to_numpy()])
    sel = ds["selected"].to_numpy().astype(bool)
    ncol = 2 if len(outputs) > 1 else 1
    nrow = math.ceil(len(outputs) / ncol)
    h = max(3.0, 0.22 * len(keys) + 1.2)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.6 * ncol, h * nrow), squeeze=False)
    thr = float(ds.attrs.get("selection_threshold", SELECTION_THRESHOLD))
    for ax, o in zip(axes.ravel(), outputs):
        ms = ds["mu_star"].sel(output=o).to_numpy()
        conf = ds["mu_star_conf"].sel(output=o).to_numpy()
        rel = ds["mu_star_rel"].sel(output=o).to_numpy()
        unit = str(ds["output_units"].sel(output=o).item())
        mx = np.nanmax(ms) if np.isfinite(ms).any() else np.nan
        order = np.argsort(np.nan_to_num(rel, nan=-1.0))
        y = np.arange(len(keys))
        err = conf / mx if np.isfinite(mx) and mx > 0 else np.zeros_like(conf)  # every mu* is 0: no bar
        colors = ["C3" if sel[i] and rel[i] >= thr else ("C1" if sel[i] else "0.6") for i in order]
        ax.barh(y, np.nan_to_num(rel[order]), xerr=np.nan_to_num(err[order]), color=colors,
                error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.2"})
        ax.axvline(thr, color="k", ls="--", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(keys[order], fontsize=6.5)
        ax.set_xlim(0, min(1.6, max(1.05, float(np.nanmax(np.nan_to_num(rel + err, nan=0.0))) + 0.05)))
        ax.set_xlabel("relative mu* (mu* / max mu* of the output) [1]", fontsize=8)
        ax.set_ylabel("parameter [prior range on its sampling scale]", fontsize=8)
        nund = int(ds["n_undefined"].sel(output=o)) if "n_undefined" in ds else 0
        extra = f"; undefined at {nund} points" if nund else ""
        ax.set_title(f"{o}\nmax mu* = {mx:.3g} {unit if unit != '1' else ''} per prior range{extra}".replace("  ", " "),
                     fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes.ravel()[len(outputs):]:
        ax.set_visible(False)
    handles = [Patch(color="C3", label=f"selected, mu*/max >= {thr:g} for this output"),
               Patch(color="C1", label="selected through another output"),
               Patch(color="0.6", label="not selected (fix)"),
               plt.Line2D([], [], color="k", ls="--", lw=0.8, label=f"selection threshold {thr:g}"),
               plt.Line2D([], [], color="0.2", marker="|", ls="", label="95% bootstrap CI of mu*")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    vt = ds.attrs.get("virtual_trials")
    npat = ds.attrs.get("patients_per_trial")
    per = f"{int(vt) * int(npat)} virtual patients per point ({vt} virtual trials x {npat} patients)" \
        if vt is not None and npat is not None else "synthetic function"
    fig.suptitle(f"Morris screen{(': ' + ds.attrs['config_name']) if 'config_name' in ds.attrs else ''} -- "
                 f"{ds.attrs.get('trajectories')} trajectories, {ds.attrs.get('levels')} levels, {per}; "
                 f"{int(sel.sum())} of {len(keys)} parameters selected", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig


def recovery_figure(ds: xr.Dataset) -> Figure:
    """True value vs posterior median with 50/90 % intervals, one panel per parameter."""
    keys = list(ds["parameter"].to_numpy())
    ncol = min(4, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.0 * nrow), squeeze=False)
    for ax, k, unit in zip(axes.ravel(), keys, ds["parameter_unit"].to_numpy()):
        t = ds["true_value"].sel(parameter=k).to_numpy()
        q = ds["posterior_quantile"].sel(parameter=k).to_numpy()
        ins = ds["inside_90"].sel(parameter=k).to_numpy().astype(bool)
        ax.vlines(t, q[:, 0], q[:, 4], color="0.6", lw=1, label="90% interval")
        ax.vlines(t, q[:, 1], q[:, 3], color="C0", lw=3, label="50% interval")
        ax.plot(t[ins], q[ins, 2], "o", color="C0", ms=4, label="median (truth inside 90%)")
        ax.plot(t[~ins], q[~ins, 2], "x", color="C3", ms=6, label="median (truth outside)")
        lo, hi = np.nanmin([t.min(), q.min()]), np.nanmax([t.max(), q.max()])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="identity")
        if lo > 0 and hi / lo > 20:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(f"{k}\ncoverage 90%: {float(ds['coverage_90'].sel(parameter=k)):.0%}, "
                     f"50%: {float(ds['coverage_50'].sel(parameter=k)):.0%}", fontsize=7)
        ax.set_xlabel(f"true value [{unit}]", fontsize=7)
        ax.set_ylabel(f"posterior [{unit}]", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.ravel()[0].legend(fontsize=5)
    for ax in axes.ravel()[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(f"Parameter recovery: {ds.sizes['dataset']} synthetic trials (truth drawn from the prior); "
                 f"mean coverage 90%: {ds.attrs['mean_coverage_90']:.0%}, 50%: {ds.attrs['mean_coverage_50']:.0%}",
                 fontsize=9)
    fig.tight_layout()
    return fig
