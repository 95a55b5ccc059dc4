"""Posterior (and prior) predictive checks against the observed trial.

Draw parameter vectors from the final ABC generation (by weight) -- or from the prior --
simulate one virtual trial (the observed trial's patients, doses and follow-up) per draw and
compare the trial-level statistics with the observed ones:

* ``n_pd_first``            -- patients with PD at the first assessment (observed 3 of 9);
* ``n_response_first``      -- CR/PR at the first assessment (observed 0);
* ``n_progressed``          -- followed SD patients progressing by the end of follow-up (observed 3);
* ``n_followed_sd``         -- followed SD patients (observed 5): ``n_progressed / n_followed_sd``;
* ``n_progressed_by_180``   -- followed SD patients with PD first called on or before day 180
  (observed 0; only with ``progression_timing = "interval"``);
* ``n_converted_after_180`` -- followed SD patients with PD first called after day 180, within
  follow-up: "converted at 9 months" (observed 3 of the 5 followed SD patients; only with
  ``progression_timing = "interval"``);
* ``median_conversion_day`` -- median over the followed SD patients who progressed of the day PD
  was first called (an assessment day; observed: the median ``progression_day_hi``, 270); NaN in a
  virtual trial in which nobody converted (left out of the interval);
* one statistic per target (e.g. median peak donor chimerism, the lymphocyte count at infusion).

For each statistic: the 90 % predictive interval, whether the observed value is inside, and the
two one-sided predictive p-values ``P(sim >= obs)``, ``P(sim <= obs)``. The dataset also keeps,
per draw and trial patient, the simulated conversion days (``conversion_call_day``: the
assessment day of the PD call; ``conversion_cross_day``: the first day the daily blasts met the
PD criterion) next to the observed progression intervals (``observed_progression_day_lo/hi``),
for the conversion-day panel of the figures (:mod:`nksim.plot.calibration`).
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .model import CalibrationModel
from .summaries import PROGRESSED, median_conversion_day

#: statistic -> (long name, table categories it counts; "progressed" = every progression category)
COUNT_STATS = {
    "n_pd_first": ("patients with PD at the first assessment", ("pd_first",)),
    "n_response_first": ("patients with CR or PR at the first assessment", ("response_first",)),
    "n_progressed": ("followed SD patients with PD by the end of follow-up", ("progressed",)),
    "n_followed_sd": ("SD patients followed beyond the first assessment", ("progressed", "stable")),
    "n_progressed_by_180": ("followed SD patients with PD first called on or before day 180",
                            ("progressed_by_180",)),
    "n_converted_after_180": ("followed SD patients with PD first called after day 180 within follow-up "
                              "(converted at 9 months)", ("progressed_after_180",)),
}
CONVERSION_STAT = "median_conversion_day"
CONVERSION_LONG_NAME = ("median over followed SD patients who progressed of the day PD was first called "
                        "(assessment day)")


def _expand(categories: tuple[str, ...], names: tuple[str, ...]) -> list[str] | None:
    """Table categories a count statistic sums; None if the table cannot resolve it."""
    out = []
    for c in names:
        if c == "progressed":
            out.extend(x for x in categories if x == "progressed" or x in PROGRESSED)
        elif c in categories:
            out.append(c)
        else:
            return None
    return out


def count_statistics(categories: tuple[str, ...]) -> list[str]:
    """The count statistics a category table supports (split ones only in the "interval" mode)."""
    return [k for k, (_, names) in COUNT_STATS.items() if _expand(categories, names) is not None]


def observed_conversion_day(model: CalibrationModel) -> float:
    """Median ``progression_day_hi`` of the observed SD patients who progressed (the day PD was called)."""
    prog = {s.patient for s in model.slots if s.category == "progressed" or s.category in PROGRESSED}
    return median_conversion_day(np.array([o.progression_day_hi for o in model.observed.outcomes
                                           if o.patient in prog], dtype=float))


def trial_statistics(model: CalibrationModel, summary: dict, patients: dict | None = None) -> dict[str, float]:
    """Trial-level statistics of a summary (observed when ``patients`` is None, else simulated per-patient results)."""
    counts = np.asarray(summary["counts"])
    idx = {c: i for i, c in enumerate(model.categories)}
    out = {}
    for k in count_statistics(model.categories):
        out[k] = float(sum(counts[idx[c]] for c in _expand(model.categories, COUNT_STATS[k][1])))
    out[CONVERSION_STAT] = (observed_conversion_day(model) if patients is None
                            else median_conversion_day(patients["pd_call_day"]))
    for t in model.targets:
        out[t.name] = float(summary[t.name])
    return out


def predictive_check(model: CalibrationModel, thetas: list[dict[str, float]], *, seed: int, label: str,
                     workers: int = 1, progress: bool = False) -> xr.Dataset:
    """Simulate one virtual trial per parameter vector; statistics vs observed (see module docstring)."""
    from ..threads import ordered_thread_map

    seeds = np.random.SeedSequence([int(seed), 0x9C]).generate_state(len(thetas), dtype=np.uint64) >> np.uint64(1)

    def one(i: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        pts = model.simulate_patients(thetas[i], seed=int(seeds[i]), virtual_trials=1)
        return trial_statistics(model, model.summarise(pts), pts), pts["pd_call_day"][0], pts["pd_cross_day"][0]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(thetas), desc=f"{label} predictive", unit="trial")
    try:
        results = ordered_thread_map(one, range(len(thetas)), workers,
                                     on_result=None if bar is None else (lambda _: bar.update(1)))
    finally:
        if bar is not None:
            bar.close()
    obs = trial_statistics(model, model.observed_summary())
    data = {}
    for name in obs:
        sim = np.array([r[0][name] for r in results])
        if name in COUNT_STATS:
            long_name, units = COUNT_STATS[name][0], "1"
        elif name == CONVERSION_STAT:
            long_name, units = CONVERSION_LONG_NAME, "day"
        else:
            t = next(t for t in model.targets if t.name == name)
            proto = f", protocol {t.protocol}" if t.protocol else ""
            long_name = (f"{t.statistic} {t.quantity.replace('_', ' ')} over patients "
                         f"(days {t.window[0]:g}-{t.window[1]:g}{proto})")
            units = t.unit
        finite = sim[np.isfinite(sim)]
        lo, hi = (np.quantile(finite, [0.05, 0.95]) if finite.size else (np.nan, np.nan))
        data[name] = xr.DataArray(sim, dims=("draw",), attrs={
            "units": units, "long_name": f"simulated {long_name}", "observed": obs[name],
            "interval_90_lo": float(lo), "interval_90_hi": float(hi),
            "observed_inside_90": int(bool(lo <= obs[name] <= hi)),
            "p_sim_ge_obs": float(np.mean(finite >= obs[name])) if finite.size else np.nan,
            "p_sim_le_obs": float(np.mean(finite <= obs[name])) if finite.size else np.nan})
    n = len(model.slots)
    call = np.array([r[1] for r in results]).reshape(len(results), n)
    cross = np.array([r[2] for r in results]).reshape(len(results), n)
    by = {o.patient: o for o in model.observed.outcomes}
    prog = [s.category == "progressed" or s.category in PROGRESSED for s in model.slots]
    olo = np.array([float(by[s.patient].progression_day_lo) if p and by[s.patient].progression_day_lo is not None
                    else (s.first_day if p else np.nan) for s, p in zip(model.slots, prog)])
    ohi = np.array([float(by[s.patient].progression_day_hi) if p else np.nan for s, p in zip(model.slots, prog)])
    data["conversion_call_day"] = xr.DataArray(call, dims=("draw", "patient"), attrs={
        "units": "day", "long_name": "simulated day PD was first called after SD at the first assessment "
                                     "(assessment day; NaN: no conversion within follow-up)"})
    data["conversion_cross_day"] = xr.DataArray(cross, dims=("draw", "patient"), attrs={
        "units": "day", "long_name": "simulated first day the daily marrow blasts met the PD criterion after SD at "
                                     "the first assessment (NaN: no conversion within follow-up)"})
    data["observed_progression_day_lo"] = xr.DataArray(olo, dims=("patient",), attrs={
        "units": "day", "long_name": "observed progression after SD: last day known not progressed (NaN: none)"})
    data["observed_progression_day_hi"] = xr.DataArray(ohi, dims=("patient",), attrs={
        "units": "day", "long_name": "observed progression after SD: day progression was observed (NaN: none)"})
    for f in model.config.fit:
        data[f"theta__{f.key.replace('.', '__')}"] = xr.DataArray(
            np.array([t[f.key] for t in thetas]), dims=("draw",),
            attrs={"units": f.unit, "long_name": f"{f.key} of the draw"})
    ds = xr.Dataset(data, coords={
        "draw": ("draw", np.arange(len(thetas)), {"units": "1", "long_name": "draw"}),
        "patient": ("patient", np.array([s.patient for s in model.slots], dtype=object),
                    {"long_name": "evaluable trial patient (simulated twin)"})})
    ds.attrs.update({"title": f"nksim {label} predictive check", "predictive": label, "seed": int(seed),
                     "n_draws": len(thetas), "progression_timing": model.timing,
                     "statistics": " ".join(obs)})
    return ds


def prior_thetas(model: CalibrationModel, n: int, seed: int) -> list[dict[str, float]]:
    """``n`` parameter sets drawn from the uniform prior (sampling scale), in model units."""
    rng = np.random.default_rng([int(seed), 0x9D])
    out = []
    for _ in range(n):
        out.append({f.key: f.from_unit(rng.uniform(*f.bounds)) for f in model.config.fit})
    return out


def posterior_thetas(values: dict[str, np.ndarray], weights: np.ndarray, n: int, seed: int) -> list[dict[str, float]]:
    """``n`` parameter sets resampled (with replacement) from weighted posterior particles."""
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
