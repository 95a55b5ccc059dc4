"""Parameter recovery: checks that the calibration finds the parameters it generated the data from.

For each of ``datasets`` synthetic trials:

1. draw ``theta_true`` from the prior (so that, averaged over datasets, an exact posterior's
   central credible intervals contain the truth at exactly their nominal rate);
2. simulate the observed trial's patients at ``theta_true`` (their doses and follow-up) and turn
   the result into a synthetic :class:`~nksim.calibration.data.ObservedTrial`: each patient's
   outcome category, and the chimerism targets' values replaced by the simulated statistics
   (with the real targets' uncertainties);
3. run the same ABC-SMC (the config's ``[recovery]`` sizes) on it;
4. record whether ``theta_true`` lies in the 50 % and 90 % central posterior intervals.

ABC with a final epsilon > 0 gives a posterior wider than the exact one, so coverage at or
somewhat above nominal is the expected result; clearly below nominal means a biased calibration.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from .config import CalibrationConfig
from .model import CalibrationModel
from .posterior import final_population, history_dataset, weighted_quantile
from .summaries import CATEGORIES, PROGRESSED


def synthetic_observed(model: CalibrationModel, theta: dict[str, float], seed: int):
    """A synthetic ObservedTrial: the observed trial's patients simulated at ``theta``."""
    from .data import ObservedTrial, PatientOutcome

    res = model.simulate_patients(theta, seed=seed, virtual_trials=1)
    cats = [CATEGORIES[i] for i in res["category"][0]]
    calls = [float(d) for d in res["pd_call_day"][0]]
    days = model.protocol.assessment_days
    outcomes = []
    slot_by = {s.patient: (s, c, d) for s, c, d in zip(model.slots, cats, calls)}
    for o in model.observed.outcomes:
        if o.patient not in slot_by:
            outcomes.append(o)
            continue
        s, c, call = slot_by[o.patient]
        common = dict(patient=o.patient, evaluable=True, dose_group=o.dose_group,
                      first_assessment_day=s.first_day, lost_to_follow_up=False,
                      source=f"synthetic: simulated at theta_true (seed {seed})", confidence="synthetic", note="")
        if c == "pd_first":
            po = PatientOutcome(first_response="PD", progressed=True, progression_day_lo=0.0,
                                progression_day_hi=s.first_day, last_followup_day=None, **common)
        elif c == "response_first":
            po = PatientOutcome(first_response="PR", progressed=None, progression_day_lo=None,
                                progression_day_hi=None, last_followup_day=s.first_day, **common)
        elif c == "censored":
            po = PatientOutcome(first_response="SD", progressed=None, progression_day_lo=None,
                                progression_day_hi=None, last_followup_day=s.first_day,
                                **{**common, "lost_to_follow_up": True})
        elif c in PROGRESSED:
            # interval-censored between the assessment before the PD call and the call
            prev = max(d for d in days if d < call)
            po = PatientOutcome(first_response="SD", progressed=True, progression_day_lo=prev,
                                progression_day_hi=call, last_followup_day=None, **common)
        else:
            po = PatientOutcome(first_response="SD", progressed=False, progression_day_lo=None,
                                progression_day_hi=None, last_followup_day=s.followup_day, **common)
        outcomes.append(po)
    summary = model.summarise(res)
    targets = []
    for t in model.targets:
        v = float(summary[t.name])
        if not np.isfinite(v) or (t.quantity not in ("peak_day", "share_donor_nk_above") and v <= 0):
            continue  # undefined at theta_true (no donor cells): this synthetic trial has no such target
        targets.append(replace(t, value=v, source="synthetic", confidence="synthetic"))
    horizon = max(s.followup_day for s in model.slots)  # the real trial's: event twins followed as long
    return ObservedTrial(outcomes=tuple(outcomes), targets=tuple(targets), series=(), files=("<synthetic>",),
                         horizon=horizon)


def run_recovery(config: CalibrationConfig, *, datasets: int = 10, population_size: int = 100,
                 max_generations: int = 5, max_simulations: int = 3000, workers: int = 1,
                 progress: bool = True) -> xr.Dataset:
    """Calibrate ``datasets`` synthetic trials; returns truths, posterior quantiles and coverage."""
    from .abc import run_abc

    base_model = CalibrationModel(config)
    rng = np.random.default_rng([config.seed, 0x7EC])
    abc_cfg = replace(config, abc=replace(config.abc, population_size=population_size,
                                          max_generations=max_generations, max_simulations=max_simulations))
    keys = [f.key for f in config.fit]
    q_levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    truth = np.zeros((datasets, len(keys)))
    quant = np.zeros((datasets, len(keys), len(q_levels)))
    eps = np.zeros(datasets)
    sims = np.zeros(datasets, dtype=np.int64)
    secs = np.zeros(datasets)
    obs_counts = np.zeros((datasets, len(base_model.categories)), dtype=np.int64)
    for d in range(datasets):
        theta = {f.key: f.from_unit(rng.uniform(*f.bounds)) for f in config.fit}
        truth[d] = [theta[k] for k in keys]
        obs = synthetic_observed(base_model, theta, seed=int(rng.integers(2**62)))
        cfg_d = replace(abc_cfg, seed=config.seed + 1000 + d)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            run = run_abc(cfg_d, Path(tmp) / "abc.db", workers=workers, observed=obs, progress=False)
            post = history_dataset(run.history, cfg_d, seconds=run.seconds, workers=run.workers)
        secs[d] = time.perf_counter() - t0
        vals, w = final_population(post)
        for j, k in enumerate(keys):
            quant[d, j] = weighted_quantile(vals[k], w, q_levels)
        eps[d] = float(post["epsilon"][-1])
        sims[d] = int(run.n_simulations)
        obs_counts[d] = CalibrationModel(cfg_d, obs).obs_counts
        if progress:
            inside = np.mean((quant[d, :, 0] <= truth[d]) & (truth[d] <= quant[d, :, 4]))
            print(f"  recovery dataset {d + 1}/{datasets}: {sims[d]} simulations, {secs[d]:.0f} s, "
                  f"final epsilon {eps[d]:.3g}, {inside:.0%} of parameters inside their 90% interval", flush=True)
    inside90 = (quant[..., 0] <= truth) & (truth <= quant[..., 4])
    inside50 = (quant[..., 1] <= truth) & (truth <= quant[..., 3])
    fit = {f.key: f for f in config.fit}
    ds = xr.Dataset(
        {
            "true_value": (("dataset", "parameter"), truth,
                           {"units": "1", "long_name": "parameter value generating the synthetic trial "
                            "(model units of each parameter)"}),
            "posterior_quantile": (("dataset", "parameter", "quantile"), quant,
                                   {"units": "1",
                                    "long_name": "weighted posterior quantile (model units of each parameter)"}),
            "inside_90": (("dataset", "parameter"), inside90.astype(np.int8),
                          {"units": "1", "long_name": "true value inside the central 90% credible interval",
                           "flag_values": np.array([0, 1], dtype=np.int8), "flag_meanings": "outside inside"}),
            "inside_50": (("dataset", "parameter"), inside50.astype(np.int8),
                          {"units": "1", "long_name": "true value inside the central 50% credible interval",
                           "flag_values": np.array([0, 1], dtype=np.int8), "flag_meanings": "outside inside"}),
            "coverage_90": (("parameter",), inside90.mean(axis=0),
                            {"units": "1", "long_name": "fraction of datasets with the truth inside the 90% interval"}),
            "coverage_50": (("parameter",), inside50.mean(axis=0),
                            {"units": "1", "long_name": "fraction of datasets with the truth inside the 50% interval"}),
            "final_epsilon": (("dataset",), eps, {"units": "1", "long_name": "final ABC epsilon"}),
            "n_simulations": (("dataset",), sims, {"units": "1", "long_name": "simulations used"}),
            "wall_time": (("dataset",), secs, {"units": "s", "long_name": "wall time of the calibration"}),
            "observed_counts": (("dataset", "category"), obs_counts,
                                {"units": "1", "long_name": "synthetic trial's outcome-category counts"}),
        },
        coords={
            "dataset": ("dataset", np.arange(datasets), {"units": "1", "long_name": "synthetic trial"}),
            "parameter": ("parameter", np.array(keys, dtype=object), {"long_name": "fitted parameter key"}),
            "quantile": ("quantile", np.array(q_levels), {"units": "1", "long_name": "posterior quantile level"}),
            "category": ("category", np.array(base_model.categories, dtype=object), {"long_name": "outcome category"}),
            "parameter_unit": ("parameter", np.array([fit[k].unit for k in keys], dtype=object),
                               {"long_name": "unit of the parameter"}),
        },
    )
    from ..output import tool_attrs

    ds.attrs.update(tool_attrs())
    ds.attrs.update({
        "title": f"nksim parameter recovery: {config.name}",
        "method": "theta_true ~ prior; synthetic trial simulated at theta_true (same patients, doses, follow-up); "
                  "ABC-SMC as in the calibration with the [recovery] sizes",
        "datasets": datasets, "population_size": population_size, "max_generations": max_generations,
        "max_simulations": max_simulations, "seed": config.seed,
        "mean_coverage_90": float(inside90.mean()), "mean_coverage_50": float(inside50.mean()),
    })
    return ds


def write_recovery(config: CalibrationConfig, out: str | Path, settings, *, workers: int = 1, overwrite: bool = False,
                   progress: bool = True) -> xr.Dataset:
    """Run :func:`run_recovery` with ``settings`` and write ``recovery.nc`` / ``recovery.png`` into ``out``."""
    from ..fileio import check_output_folder, save_figure
    from ..io import write_netcdf
    from ..io.lock import output_lock
    from ..plot.calibration import recovery_figure

    out = Path(out)
    with output_lock(out, "nksim calibrate --recovery"):  # one writer per --out, from the checks to the last file
        check_output_folder(out, ("recovery.nc", "recovery.png"), overwrite)
        t0 = time.perf_counter()
        ds = run_recovery(config, datasets=settings.datasets, population_size=settings.population_size,
                          max_generations=settings.max_generations, max_simulations=settings.max_simulations,
                          workers=workers, progress=progress)
        ds.attrs["wall_time_s"] = time.perf_counter() - t0
        write_netcdf(ds, out / "recovery.nc", overwrite=overwrite)
        save_figure(recovery_figure(ds), out / "recovery.png")
    print(f"parameter recovery: {settings.datasets} synthetic trials, mean coverage of the 90% interval "
          f"{ds.attrs['mean_coverage_90']:.0%}, of the 50% interval {ds.attrs['mean_coverage_50']:.0%} "
          f"({ds.attrs['wall_time_s'] / 60:.1f} min); wrote {out}/recovery.nc, recovery.png")
    for k in ds["parameter"].to_numpy():
        print(f"  {k:38s} coverage 90%: {float(ds['coverage_90'].sel(parameter=k)):.0%}  "
              f"50%: {float(ds['coverage_50'].sel(parameter=k)):.0%}")
    return ds
