"""The calibrated posterior as CF-style xarray: every ABC generation's weighted particles.

``posterior.nc`` (dims ``generation``, ``particle``): one variable per fitted parameter (model
units, ``long_name`` = the parameter key), ``weight`` and ``distance`` per particle, and per
generation ``epsilon``, ``acceptance_rate``, ``n_simulations``, ``ess``. The last generation is
the posterior. ``posterior_summary.csv`` (one row per parameter): prior bounds and scale, the
weighted posterior median and 5/25/75/95 % quantiles; ``models/default.toml`` takes its values
from the median column (:func:`apply_to_model`).
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import NksimInputError
from ..fileio import open_text, read_text
from .config import CalibrationConfig

SUMMARY_COLUMNS = ("parameter", "unit", "prior_lo", "prior_hi", "scale", "median", "q05", "q25", "q75", "q95",
                   "n_particles", "ess")


def var_name(key: str) -> str:
    """Dataset variable name of a parameter key (dots become ``__``)."""
    return key.replace(".", "__")


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles of a weighted sample (inverse of the weighted ECDF, midpoint rule)."""
    v = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    order = np.argsort(v)
    v, w = v[order], w[order]
    cw = np.cumsum(w) - 0.5 * w
    cw /= w.sum()
    return np.interp(np.asarray(q, dtype=float), cw, v)


def history_dataset(history, config: CalibrationConfig, *, seconds: float, workers: int) -> xr.Dataset:
    """All generations of a pyabc History as a Dataset (see module docstring)."""
    from ..output import tool_attrs

    pops = history.get_all_populations()
    pops = pops[pops["t"] >= 0].reset_index(drop=True)
    n_gen = len(pops)
    n_part = int(pops["particles"].max())
    data = {f.key: np.full((n_gen, n_part), np.nan) for f in config.fit}
    weight = np.full((n_gen, n_part), np.nan)
    dist = np.full((n_gen, n_part), np.nan)
    ess = np.zeros(n_gen)
    for g, t in enumerate(pops["t"]):
        # one query gives each particle's parameters, weight and distance together (row order of
        # get_distribution and get_weighted_distances is not guaranteed to agree)
        particles = history.get_population(t=int(t)).particles
        w = np.array([p.weight for p in particles], dtype=float)
        w = w / w.sum()
        n = len(particles)
        for f in config.fit:
            data[f.key][g, :n] = [f.from_unit(float(p.parameter[f.safe_name])) for p in particles]
        weight[g, :n] = w
        dist[g, :n] = [float(p.distance) for p in particles]
        ess[g] = 1.0 / np.sum(w ** 2)
    variables = {}
    for f in config.fit:
        variables[var_name(f.key)] = xr.DataArray(data[f.key], dims=("generation", "particle"), attrs={
            "units": f.unit if f.unit != "1" else "1", "long_name": f.key,
            "prior": f"uniform on {'log10 ' if f.scale == 'log' else ''}scale over [{f.lo:g}, {f.hi:g}] {f.unit}",
            "prior_lo": f.lo, "prior_hi": f.hi, "scale": f.scale})
    variables["weight"] = xr.DataArray(weight, dims=("generation", "particle"),
                                       attrs={"units": "1", "long_name": "normalised importance weight"})
    variables["distance"] = xr.DataArray(dist, dims=("generation", "particle"),
                                         attrs={"units": "1", "long_name": "ABC distance of the accepted simulation"})
    variables["epsilon"] = xr.DataArray(pops["epsilon"].to_numpy(float), dims=("generation",),
                                        attrs={"units": "1", "long_name": "ABC acceptance threshold"})
    variables["n_simulations"] = xr.DataArray(pops["samples"].to_numpy(np.int64), dims=("generation",),
                                              attrs={"units": "1", "long_name": "simulations run in the generation"})
    variables["acceptance_rate"] = xr.DataArray(
        pops["particles"].to_numpy(float) / pops["samples"].to_numpy(float), dims=("generation",),
        attrs={"units": "1", "long_name": "accepted particles / simulations"})
    variables["ess"] = xr.DataArray(ess, dims=("generation",),
                                    attrs={"units": "1", "long_name": "effective sample size (1 / sum w^2)"})
    ds = xr.Dataset(variables, coords={
        "generation": ("generation", pops["t"].to_numpy(np.int64), {"long_name": "ABC-SMC generation", "units": "1"}),
        "particle": ("particle", np.arange(n_part, dtype=np.int64), {"long_name": "particle index", "units": "1"}),
    })
    ds.attrs.update(tool_attrs())
    ds.attrs.update({
        "title": f"nksim ABC-SMC posterior: {config.name}",
        "method": "ABC-SMC (pyabc), uniform priors on the sampling scale, quantile epsilon schedule, "
                  "likelihood-ratio-shaped distance (nksim.calibration.distance)",
        "calibration_config": json.dumps(config.as_dict(), sort_keys=True),
        "fitted_parameters": " ".join(f.key for f in config.fit),
        "total_simulations": int(history.total_nr_simulations),
        "wall_time_s": float(seconds),
        "workers": int(workers),
        "seed": int(config.seed),
    })
    return ds


def final_population(ds: xr.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(values by parameter key, normalised weights) of the last generation."""
    last = ds.isel(generation=-1)
    w = last["weight"].to_numpy()
    ok = np.isfinite(w)
    keys = ds.attrs["fitted_parameters"].split()
    vals = {k: last[var_name(k)].to_numpy()[ok] for k in keys}
    w = w[ok]
    return vals, w / w.sum()


def summary_rows(ds: xr.Dataset) -> list[dict[str, str]]:
    """One row per parameter: prior, weighted quantiles of the final generation."""
    vals, w = final_population(ds)
    ess = 1.0 / np.sum(w ** 2)
    rows = []
    for k, v in vals.items():
        a = ds[var_name(k)].attrs
        q = weighted_quantile(v, w, [0.5, 0.05, 0.25, 0.75, 0.95])
        rows.append({"parameter": k, "unit": a["units"], "prior_lo": f"{a['prior_lo']:.6g}",
                     "prior_hi": f"{a['prior_hi']:.6g}", "scale": a["scale"],
                     "median": f"{q[0]:.6g}", "q05": f"{q[1]:.6g}", "q25": f"{q[2]:.6g}", "q75": f"{q[3]:.6g}",
                     "q95": f"{q[4]:.6g}", "n_particles": str(v.size), "ess": f"{ess:.1f}"})
    return rows


def write_summary_csv(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """Write posterior summary rows (:data:`SUMMARY_COLUMNS`) as CSV to ``path``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    path.write_text(buf.getvalue())


def read_summary_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """Read a posterior summary CSV, checking its columns; rows keyed by parameter."""
    path = Path(path)
    rows = list(csv.DictReader(open_text(path, "posterior summary")))
    if not rows or set(rows[0]) != set(SUMMARY_COLUMNS):
        raise NksimInputError(f"not a posterior summary: columns must be {list(SUMMARY_COLUMNS)}", source=path)
    return {r["parameter"]: r for r in rows}


def apply_to_model(summary_csv: str | Path, model_toml: str | Path, *, provenance: str) -> list[str]:
    """Write the posterior medians into a model TOML (values and ``source`` lines); returns changed keys.

    Only ``value = ...`` and ``source = ...`` lines of the named ``[section.name]`` tables are
    rewritten, so comments and layout stay; the result is re-read and validated before it
    replaces the file.
    """
    from ..parameters import load_parameters

    rows = read_summary_csv(summary_csv)
    model_toml = Path(model_toml)
    text = read_text(model_toml, "model file")
    changed = []
    for key, r in rows.items():
        header = f"[{key}]"
        i = text.find("\n" + header + "\n")
        if i < 0:
            raise NksimInputError(f"model has no table {header}", source=model_toml, key=key)
        j = text.find("\n[", i + len(header) + 2)
        j = len(text) if j < 0 else j
        block = text[i:j]
        med = float(r["median"])
        value = f"{med:.4g}"
        if "." not in value and "e" not in value:
            value += ".0"
        src = (f"{provenance}: posterior median {float(r['median']):.4g} "
               f"(90% CrI {float(r['q05']):.3g}-{float(r['q95']):.3g}); prior [{r['prior_lo']}, {r['prior_hi']}]")
        block2 = re.sub(r"\nvalue = [^\n]*", f"\nvalue = {value}", block, count=1)
        block2 = re.sub(r"\nsource = [^\n]*", "\nsource = " + json.dumps(src), block2, count=1)
        if block2 != block:
            changed.append(key)
        text = text[:i] + block2 + text[j:]
    tmp = model_toml.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_parameters(tmp)
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(model_toml)
    return changed
