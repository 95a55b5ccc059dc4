"""Posterior (and prior) predictive checks against the observed trial.

Draw parameter vectors from the final ABC generation (by weight) -- or from the prior --
simulate one virtual trial (the observed trial's patients, doses and follow-up) per draw and
compare the trial-level statistics with the observed ones:

* ``n_pd_first``          -- patients with PD at the first assessment (observed 3 of 9);
* ``n_response_first``    -- CR/PR at the first assessment (observed 0);
* ``n_progressed``        -- followed SD patients progressing by the end of follow-up (observed 3);
* ``n_followed_sd``       -- followed SD patients (observed 5): ``n_progressed / n_followed_sd``;
* one statistic per chimerism target (e.g. median peak donor chimerism, its day).

For each statistic: the 90 % predictive interval, whether the observed value is inside, and the
two one-sided predictive p-values ``P(sim >= obs)``, ``P(sim <= obs)``.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .model import CalibrationModel
from .summaries import CATEGORY_INDEX

COUNT_STATS = {
    "n_pd_first": ("patients with PD at the first assessment", ("pd_first",)),
    "n_response_first": ("patients with CR or PR at the first assessment", ("response_first",)),
    "n_progressed": ("followed SD patients with PD by the end of follow-up", ("progressed",)),
    "n_followed_sd": ("SD patients followed beyond the first assessment", ("progressed", "stable")),
}


def trial_statistics(model: CalibrationModel, summary: dict) -> dict[str, float]:
    counts = np.asarray(summary["counts"])
    out = {k: float(sum(counts[CATEGORY_INDEX[c]] for c in cats)) for k, (_, cats) in COUNT_STATS.items()}
    for t in model.targets:
        out[t.name] = float(summary[t.name])
    return out


def predictive_check(model: CalibrationModel, thetas: list[dict[str, float]], *, seed: int, label: str,
                     workers: int = 1, progress: bool = False) -> xr.Dataset:
    """Simulate one virtual trial per parameter vector; statistics vs observed (see module docstring)."""
    from concurrent.futures import ThreadPoolExecutor

    seeds = np.random.SeedSequence([int(seed), 0x9C]).generate_state(len(thetas), dtype=np.uint64) >> np.uint64(1)

    def one(i: int) -> dict[str, float]:
        s = model.summarise(model.simulate_patients(thetas[i], seed=int(seeds[i]), virtual_trials=1))
        return trial_statistics(model, s)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(thetas), desc=f"{label} predictive", unit="trial")
    results: list[dict[str, float]] = []
    try:
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for r in pool.map(one, range(len(thetas))):
                    results.append(r)
                    if bar is not None:
                        bar.update(1)
        else:
            for i in range(len(thetas)):
                results.append(one(i))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    obs = trial_statistics(model, model.observed_summary())
    data = {}
    for name in obs:
        sim = np.array([r[name] for r in results])
        if name in COUNT_STATS:
            long_name, units = COUNT_STATS[name][0], "1"
        else:
            t = next(t for t in model.targets if t.name == name)
            long_name = f"{t.statistic} {t.quantity.replace('_', ' ')} over patients (days {t.window[0]:g}-{t.window[1]:g})"
            units = t.unit
        finite = sim[np.isfinite(sim)]
        lo, hi = (np.quantile(finite, [0.05, 0.95]) if finite.size else (np.nan, np.nan))
        data[name] = xr.DataArray(sim, dims=("draw",), attrs={
            "units": units, "long_name": f"simulated {long_name}", "observed": obs[name],
            "interval_90_lo": float(lo), "interval_90_hi": float(hi),
            "observed_inside_90": int(bool(lo <= obs[name] <= hi)),
            "p_sim_ge_obs": float(np.mean(finite >= obs[name])) if finite.size else np.nan,
            "p_sim_le_obs": float(np.mean(finite <= obs[name])) if finite.size else np.nan})
    for f in model.config.fit:
        data[f"theta__{f.key.replace('.', '__')}"] = xr.DataArray(
            np.array([t[f.key] for t in thetas]), dims=("draw",),
            attrs={"units": f.unit, "long_name": f"{f.key} of the draw"})
    ds = xr.Dataset(data, coords={"draw": ("draw", np.arange(len(thetas)), {"units": "1", "long_name": "draw"})})
    ds.attrs.update({"title": f"nksim {label} predictive check", "predictive": label, "seed": int(seed),
                     "n_draws": len(thetas),
                     "statistics": " ".join(obs)})
    return ds


def prior_thetas(model: CalibrationModel, n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng([int(seed), 0x9D])
    out = []
    for _ in range(n):
        out.append({f.key: f.from_unit(rng.uniform(*f.bounds)) for f in model.config.fit})
    return out


def posterior_thetas(values: dict[str, np.ndarray], weights: np.ndarray, n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng([int(seed), 0x9E])
    idx = rng.choice(weights.size, size=n, replace=True, p=weights)
    return [{k: float(v[i]) for k, v in values.items()} for i in idx]


def check_table(ds: xr.Dataset) -> list[tuple[str, float, float, float, bool]]:
    """Rows (statistic, observed, 90% lo, 90% hi, inside)."""
    rows = []
    for name in ds.attrs["statistics"].split():
        a = ds[name].attrs
        rows.append((name, a["observed"], a["interval_90_lo"], a["interval_90_hi"], bool(a["observed_inside_90"])))
    return rows
