"""Calibration figures: prior vs posterior, ABC diagnostics and predictive checks."""
from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .posterior import var_name, weighted_quantile


def prior_posterior_figure(post: xr.Dataset, *, generations: bool = True):
    """One panel per fitted parameter: the uniform prior, each generation's weighted median and
    90 % interval (if ``generations``), and the final weighted posterior histogram."""
    import matplotlib.pyplot as plt

    keys = post.attrs["fitted_parameters"].split()
    ncol = min(4, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    last = post.isel(generation=-1)
    w = last["weight"].to_numpy()
    ok = np.isfinite(w)
    for ax, k in zip(axes.ravel(), keys):
        v = post[var_name(k)]
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
        if generations and post.sizes["generation"] > 1:
            ax2 = ax.twinx()
            for g in range(post.sizes["generation"]):
                gw = post["weight"].isel(generation=g).to_numpy()
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
    for ax in axes.ravel()[len(keys):]:
        ax.set_visible(False)
    n_sim = post.attrs.get("total_simulations", "?")
    fig.suptitle(f"Prior (dashed) vs ABC-SMC posterior (histogram; grey: generations' 90 % intervals), "
                 f"{post.sizes['generation']} generations, {n_sim} simulations", fontsize=10)
    fig.tight_layout()
    return fig


def predictive_check_figure(post_ppc: xr.Dataset, prior_ppc: xr.Dataset | None = None):
    """Predictive distributions of the trial statistics with the observed values marked."""
    import matplotlib.pyplot as plt

    names = post_ppc.attrs["statistics"].split()
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.8 * ncol, 3.0 * nrow), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        a = post_ppc[name].attrs
        sims = [("posterior", post_ppc[name].to_numpy(), "C0")]
        if prior_ppc is not None and name in prior_ppc:
            sims.insert(0, ("prior", prior_ppc[name].to_numpy(), "0.6"))
        is_count = a["units"] == "1"
        chim = a["units"] == "percent"
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
        unit = "log10 percent" if chim else a["units"]
        ax.set_xlabel(f"{name} [{unit}]", fontsize=8)
        ax.set_ylabel("probability density [1/unit]", fontsize=8)
        inside = "inside" if a["observed_inside_90"] else "OUTSIDE"
        ax.set_title(f"observed {inside} 90 % PI", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"Predictive checks: {post_ppc.attrs.get('n_draws', '?')} virtual trials of the observed "
                 "patients (doses, follow-up) vs the trial", fontsize=10)
    fig.tight_layout()
    return fig


def diagnostics_figure(post: xr.Dataset):
    """Epsilon, acceptance rate and ESS per generation."""
    import matplotlib.pyplot as plt

    g = post["generation"].to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    for ax, name, log in zip(axes, ("epsilon", "acceptance_rate", "ess"), (False, True, False)):
        ax.plot(g, post[name].to_numpy(), "o-", label=post[name].attrs["long_name"])
        ax.set_xlabel("generation [1]")
        ax.set_ylabel(f"{name} [{post[name].attrs['units']}]")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"ABC-SMC diagnostics ({post.attrs.get('total_simulations', '?')} simulations, "
                 f"{float(post.attrs.get('wall_time_s', float('nan'))) / 60:.1f} min on {post.attrs.get('workers', '?')} "
                 "workers)", fontsize=10)
    fig.tight_layout()
    return fig
