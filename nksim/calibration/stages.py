"""Two-stage calibration: one posterior from a joint run and a sharper run of a parameter subset.

Stage B fits every parameter against every summary (the trial's outcome table and the analogue
targets, one virtual trial per particle). Stage A refits a subset (the blast kinetics) against the
summaries that inform it (the outcome table alone), with the other parameters held at stage B's
posterior medians and several virtual trials per particle, which makes the distance far less noisy
at the same cost. :func:`combine_stages` forms the posterior used downstream:

* the stage-A parameters keep stage A's last population exactly (values and weights);
* each stage-A particle is paired with a stage-B particle drawn by stage-B weight (independently,
  from a seeded generator), so the other parameters follow stage B's marginal posterior.

This is the product of stage A's posterior and stage B's marginal of the rest: it assumes that,
given the rest at their medians, the subset's posterior does not depend on where in their posterior
the rest lie (true when the rest act on summaries the subset does not move, as NK trafficking and
expansion do here; approximate for the depth of lymphodepletion, which also scales the drug kill on
blasts). ``calibration/README.md`` states this for the committed posterior.

:func:`write_two_stage` writes the usual result files (:data:`nksim.calibration.run.RESULT_FILES`
except ``abc.db``) for the combined posterior, with predictive checks simulated by the stage-B
configuration (all summaries, one virtual trial per draw).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import NksimInputError
from .posterior import final_population, var_name

#: Files :func:`write_two_stage` writes.
TWO_STAGE_FILES = ("posterior.nc", "posterior_summary.csv", "ppc_posterior.nc", "ppc_prior.nc", "report.png",
                   "ppc.png", "diagnostics.png")


def combine_stages(stage_a: xr.Dataset, stage_b: xr.Dataset, *, seed: int,
                   order: list[str] | None = None) -> xr.Dataset:
    """The combined posterior of a stage-A and a stage-B ABC run (see the module docstring).

    Returns stage A's Dataset (all its generations, so its diagnostics stay those of the run that
    sampled the subset) with one variable per stage-B-only parameter, filled in the last
    generation only (NaN before), and attributes naming both stages. ``order``: the fitted
    parameters' order in the result (default: stage B's, which must include stage A's).
    """
    keys_a = stage_a.attrs["fitted_parameters"].split()
    keys_b = stage_b.attrs["fitted_parameters"].split()
    missing = [k for k in keys_a if k not in keys_b]
    if missing:
        raise NksimInputError(f"stage A fits {missing}, which stage B does not; stage A must refit a subset of "
                              f"stage B's parameters ({keys_b})", key="fitted_parameters")
    rest = [k for k in keys_b if k not in keys_a]
    order = list(order) if order is not None else keys_b
    if sorted(order) != sorted(keys_b):
        raise NksimInputError(f"order {order} is not a permutation of stage B's parameters {keys_b}",
                              key="fitted_parameters")
    vals_b, w_b = final_population(stage_b)
    last = stage_a.isel(generation=-1)
    ok = np.isfinite(last["weight"].to_numpy())
    rng = np.random.default_rng([int(seed), 0x5A6E])
    pick = rng.choice(w_b.size, size=int(ok.sum()), replace=True, p=w_b)
    out = stage_a.copy()
    n_gen, n_part = out.sizes["generation"], out.sizes["particle"]
    for k in rest:
        data = np.full((n_gen, n_part), np.nan)
        col = np.full(n_part, np.nan)
        col[ok] = vals_b[k][pick]
        data[-1] = col
        out[var_name(k)] = xr.DataArray(data, dims=("generation", "particle"), attrs=dict(stage_b[var_name(k)].attrs))
    out = out[[var_name(k) for k in order] + [v for v in out.data_vars if v not in {var_name(k) for k in order}]]
    out.attrs.update({
        "title": (f"nksim two-stage ABC-SMC posterior: {stage_a.attrs.get('title', '')} x "
                  f"{stage_b.attrs.get('title', '')}"),
        "method": (f"two-stage: parameters {' '.join(keys_a)} from stage A's last population (values and weights); "
                   f"{' '.join(rest)} paired from stage B's last population by weight (seeded; "
                   f"nksim.calibration.stages.combine_stages)"),
        "fitted_parameters": " ".join(order),
        "stage_a_fitted_parameters": " ".join(keys_a),
        "stage_a_calibration_config": stage_a.attrs.get("calibration_config", ""),
        "stage_b_calibration_config": stage_b.attrs.get("calibration_config", ""),
        "stage_a_total_simulations": int(stage_a.attrs.get("total_simulations", 0)),
        "stage_b_total_simulations": int(stage_b.attrs.get("total_simulations", 0)),
        "total_simulations": (int(stage_a.attrs.get("total_simulations", 0))
                              + int(stage_b.attrs.get("total_simulations", 0))),
        "combination_seed": int(seed),
    })
    return out


def write_two_stage(stage_a_dir: str | Path, stage_b_dir: str | Path, config_path: str | Path,
                    out: str | Path, *, workers: int = 1, overwrite: bool = False, progress: bool = True,
                    stream=None) -> xr.Dataset:
    """Combine two calibration output folders and write the result files into ``out``.

    ``config_path``: the stage-B configuration (its model, data, simulator and seed simulate the
    predictive checks; its ``posterior_draws`` sets their number). Returns the combined posterior.
    """
    from ..fileio import check_output_folder
    from ..io import write_netcdf
    from ..output import tool_attrs
    from .config import load_config
    from .model import CalibrationModel
    from .posterior import summary_rows, write_summary_csv
    from .run import predictive_checks, print_predictive_check, write_checks_and_figures

    stream = stream or sys.stdout
    out = Path(out)
    check_output_folder(out, TWO_STAGE_FILES, overwrite)
    config = load_config(config_path)
    a = xr.load_dataset(Path(stage_a_dir) / "posterior.nc", engine="h5netcdf")
    b = xr.load_dataset(Path(stage_b_dir) / "posterior.nc", engine="h5netcdf")
    post = combine_stages(a, b, seed=config.seed, order=[f.key for f in config.fit])
    post.attrs.update(tool_attrs())
    post.attrs["calibration_config"] = json.dumps(config.as_dict(), sort_keys=True)
    model = CalibrationModel(config)
    ppc_post, ppc_prior = predictive_checks(model, post, workers=workers, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        write_netcdf(post, stage / "posterior.nc")
        rows = summary_rows(post)
        write_summary_csv(rows, stage / "posterior_summary.csv")
        write_checks_and_figures(stage, post, ppc_post, ppc_prior, calibration=f"{config.name} (two-stage)")
        out.mkdir(parents=True, exist_ok=True)
        check_output_folder(out, TWO_STAGE_FILES, overwrite)
        for f in TWO_STAGE_FILES:
            shutil.move(str(stage / f), str(out / f))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"{'parameter':42s} {'unit':8s} {'median':>10s} {'90% CrI':>23s}  stage", file=stream)
    keys_a = set(post.attrs["stage_a_fitted_parameters"].split())
    for r in rows:
        print(f"{r['parameter']:42s} {r['unit']:8s} {float(r['median']):10.4g} "
              f"[{float(r['q05']):9.4g}, {float(r['q95']):9.4g}]  {'A' if r['parameter'] in keys_a else 'B'}",
              file=stream)
    print_predictive_check(ppc_post, stream)
    print(f"wrote {out}/ ({', '.join(TWO_STAGE_FILES)})", file=stream, flush=True)
    return post
