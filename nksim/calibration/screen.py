"""Morris elementary-effects screen (SALib) of the prior ranges on the outcome summaries.

Which parameters are worth calibrating? Every parameter of the base model that has a prior
(plus the config's fit parameters) is moved over its prior range on a Morris design (SALib,
``num_levels`` grid levels, ``trajectories`` one-at-a-time trajectories of ``k + 1`` points),
and the virtual trial of the calibration (:class:`~.model.CalibrationModel`) is reduced to four
outputs (:data:`SCREEN_OUTPUTS`):

* ``p_pd_first`` -- share of simulated patients with PD at the first assessment;
* ``p_progressed_given_sd`` -- progressed / (progressed + stable): PD by the end of follow-up
  (9 months) among patients with SD at the first assessment;
* ``log10_peak_chimerism_pbmc`` -- log10 of the median over patients of the peak donor
  chimerism of blood lymphocytes (percent) over the chimerism-target window;
* ``peak_day`` -- median over patients of the day of that peak (days after the first infusion);
* ``log10_nk_kill_fraction`` -- log10 of the median over patients of the fraction of baseline
  marrow blasts killed by donor NK by day 28 (what NK killing could do at this dose).

``dose_factor`` scales every NK dose of the trial protocol, so the screen can be repeated at
doses above the trial's: the NK-killing parameters have no effect on the trial's outcomes at
its doses, and the question is whether they would at higher ones.

Common random numbers: every design point is simulated with the same simulation seed, so an
elementary effect (difference between two neighbouring points of a trajectory) measures the
parameter's effect, not Monte Carlo noise.

Units of the indices. SALib divides each output difference by the Morris step expressed as a
fraction of the parameter's range on its *sampling scale* (log10 for log-scale parameters):
``mu``, ``mu_star`` and ``sigma`` are in the output's units per full prior range (linear
extrapolation of the change when the parameter crosses its whole prior range; for a log-scale
parameter, per its prior range in decades). ``mu_star_rel`` = ``mu_star`` / max over
parameters (per output) makes the outputs comparable; a parameter is *selected* when
``mu_star_rel >= 0.1`` for any output.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from .._optional import require
from ..checks import check_seed
from ..quantities import PARAMETERS
from ..threads import ordered_thread_map
from .config import CalibrationConfig, FitParameter
from .model import CalibrationModel
from .summaries import CATEGORY_INDEX, PROGRESSED

SCREEN_OUTPUTS: tuple[str, ...] = ("p_pd_first", "p_progressed_given_sd", "log10_peak_chimerism_pbmc", "peak_day",
                                   "log10_nk_kill_fraction")

#: Output -> (units, long_name).
OUTPUT_META: dict[str, tuple[str, str]] = {
    "p_pd_first": ("1", "share of simulated patients with PD at the first assessment"),
    "p_progressed_given_sd": ("1", "share progressed (PD by the end of follow-up) among patients with SD at the "
                                   "first assessment"),
    "log10_peak_chimerism_pbmc": ("1", "log10 of the median over patients of the peak donor chimerism of blood "
                                       "lymphocytes (percent)"),
    "peak_day": ("day", "median over patients of the day of the peak donor chimerism of blood lymphocytes"),
    "log10_nk_kill_fraction": ("1", "log10 of the median over patients of the fraction of baseline marrow blasts "
                                    "killed by donor NK by day 28 (floor 1e-9)"),
}

#: Relative effect (mu* / max mu* of the output) from which a parameter counts as influential.
SELECTION_THRESHOLD = 0.1


# ---------------------------------------------------------------------------------- parameters
def prior_parameter(key: str, lo: float, hi: float) -> FitParameter:
    """The parameter ``key`` with prior ``[lo, hi]``: log scale when ``hi / lo >= 10`` and ``lo > 0``, else linear."""
    spec = PARAMETERS[key]
    lo, hi = float(lo), float(hi)
    scale = "log" if lo > 0 and hi / lo >= 10 else "linear"
    return FitParameter(key, lo, hi, scale, spec.unit, spec.integer)


def screen_parameters(config: CalibrationConfig, model: CalibrationModel | None = None) -> list[FitParameter]:
    """The screened parameters: every base-model parameter with a prior, plus the config's fit parameters.

    Base-model priors are sampled on a log scale when ``hi / lo >= 10`` and ``lo > 0``, else
    linearly; parameters listed in ``config.fit`` keep the config's prior and scale. Integer
    parameters (``PARAMETERS[key].integer``) are rounded by :meth:`FitParameter.from_unit`.
    """
    base = model.base if model is not None else config.base_parameters()
    fit = {f.key: f for f in config.fit}
    out: list[FitParameter] = []
    for key, (lo, hi) in base.priors().items():
        if key in fit:
            out.append(fit[key])
            continue
        out.append(prior_parameter(key, lo, hi))
    seen = {f.key for f in out}
    out.extend(f for f in config.fit if f.key not in seen)
    return out


# ---------------------------------------------------------------------------------- outputs
def cohort_outputs(model: CalibrationModel, theta: Mapping[str, float], seed: int,
                   virtual_trials: int) -> dict[str, float]:
    """The four screen outputs (:data:`SCREEN_OUTPUTS`) of ``virtual_trials`` virtual trials at ``theta``.

    NaN where undefined: ``p_progressed_given_sd`` without any SD patient followed beyond the
    first assessment, chimerism outputs without any finite (positive) peak.
    """
    pts = model.simulate_patients(theta, seed=seed, virtual_trials=virtual_trials)
    cat = np.asarray(pts["category"]).ravel()
    n = cat.size
    prog = int(np.sum(np.isin(cat, [CATEGORY_INDEX[c] for c in PROGRESSED])))
    stable = int(np.sum(cat == CATEGORY_INDEX["stable"]))
    peak = np.asarray(pts["peak_donor_chimerism_pbmc"], dtype=float).ravel()
    peak = peak[np.isfinite(peak)]
    med = float(np.median(peak)) if peak.size else math.nan
    day = np.asarray(pts["peak_day"], dtype=float).ravel()
    day = day[np.isfinite(day)]
    kills = np.asarray(pts["nk_kill_fraction"], dtype=float).ravel()
    kills = kills[np.isfinite(kills)]
    return {
        "p_pd_first": float(np.sum(cat == CATEGORY_INDEX["pd_first"])) / n if n else math.nan,
        "p_progressed_given_sd": prog / (prog + stable) if prog + stable > 0 else math.nan,
        "log10_peak_chimerism_pbmc": math.log10(med) if med > 0 else math.nan,
        "peak_day": float(np.median(day)) if day.size else math.nan,
        "log10_nk_kill_fraction": math.log10(max(float(np.median(kills)), 1e-9)) if kills.size else math.nan,
    }


# ---------------------------------------------------------------------------------- Morris core
def _problem(params: Sequence[FitParameter]) -> dict:
    return {"num_vars": len(params), "names": [p.key for p in params],
            "bounds": [list(p.bounds) for p in params]}


def evaluate_points(params: Sequence[FitParameter], X: np.ndarray,
                    func: Callable[[dict[str, float]], Mapping[str, float]], outputs: Sequence[str], *,
                    workers: int = 1, progress: bool = False) -> np.ndarray:
    """``func`` (model values ``{key: value}`` -> ``{output: value}``) at every row of ``X`` (sampling scale).

    ``workers > 1`` evaluates in a thread pool (the numba kernel releases the GIL); the first
    point runs alone first so the kernel is compiled/loaded once. The result is in row order and
    does not depend on ``workers``.
    """
    thetas = [{p.key: p.from_unit(float(u)) for p, u in zip(params, row)} for row in X]
    Y = np.full((len(thetas), len(outputs)), np.nan)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(thetas), desc="Morris screen", unit="point", smoothing=0.1, dynamic_ncols=True)

    def work(theta: dict[str, float]) -> list[float]:
        res = func(theta)
        if bar is not None:
            bar.update(1)
        return [float(res[o]) for o in outputs]

    try:
        if workers > 1 and len(thetas) > 1:
            Y[0] = work(thetas[0])
            for i, row in enumerate(ordered_thread_map(work, thetas[1:], workers), start=1):
                Y[i] = row
        else:
            for i, theta in enumerate(thetas):
                Y[i] = work(theta)
    finally:
        if bar is not None:
            bar.close()
    return Y


def morris_indices(params: Sequence[FitParameter], func: Callable[[dict[str, float]], Mapping[str, float]],
                   outputs: Sequence[str], *, trajectories: int, levels: int, seed: int, workers: int = 1,
                   progress: bool = False, output_units: Mapping[str, str] | None = None,
                   threshold: float = SELECTION_THRESHOLD) -> xr.Dataset:
    """Morris design over ``params`` (prior ranges, sampling scale), ``func`` at every point, indices.

    Returns the Dataset described in :func:`run_screen` without the run-specific global
    attributes. ``func`` receives model values (``from_unit`` of the sampling-scale point) and
    returns a mapping with every name in ``outputs``; NaN outputs are replaced by that output's
    mean over the finite points before the analysis (counted in ``n_undefined``).
    """
    morris_sample = require("SALib.sample.morris", "calibrate", "the Morris screen (nksim screen)")

    params = list(params)
    outputs = list(outputs)
    if trajectories < 2:
        raise ValueError(f"trajectories must be >= 2, got {trajectories}")
    if levels < 2 or levels % 2:
        raise ValueError(f"levels must be an even integer >= 2, got {levels}")
    problem = _problem(params)
    X = morris_sample.sample(problem, int(trajectories), num_levels=int(levels), seed=int(seed))
    Y = evaluate_points(params, X, func, outputs, workers=workers, progress=progress)
    return indices_dataset(params, X, Y, outputs, levels=levels, seed=seed, output_units=output_units,
                           threshold=threshold)


def indices_dataset(params: Sequence[FitParameter], X: np.ndarray, Y: np.ndarray, outputs: Sequence[str], *,
                    levels: int, seed: int, output_units: Mapping[str, str] | None = None,
                    threshold: float = SELECTION_THRESHOLD) -> xr.Dataset:
    """Analyse a Morris design ``X`` (sampling scale) with outputs ``Y`` (point, output) into a Dataset."""
    morris_analyze = require("SALib.analyze.morris", "calibrate", "the Morris screen (nksim screen)")

    params = list(params)
    outputs = list(outputs)
    problem = _problem(params)
    units = {o: (output_units or {}).get(o, OUTPUT_META.get(o, ("1", ""))[0]) for o in outputs}
    k, m = len(params), len(outputs)
    stats = {s: np.full((k, m), np.nan) for s in ("mu_star", "mu_star_conf", "sigma", "mu")}
    n_undef = np.zeros(m, dtype=np.int64)
    for j, _o in enumerate(outputs):
        y = np.array(Y[:, j], dtype=float)
        bad = ~np.isfinite(y)
        n_undef[j] = int(bad.sum())
        if bad.all():
            continue  # no defined value: indices stay NaN
        y[bad] = float(np.mean(y[~bad]))
        si = morris_analyze.analyze(problem, X, y, num_levels=int(levels), seed=int(seed))
        for s in stats:
            stats[s][:, j] = np.asarray(si[s], dtype=float)
    mx = np.nanmax(np.where(np.isfinite(stats["mu_star"]), stats["mu_star"], -np.inf), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(mx > 0, stats["mu_star"] / np.where(mx > 0, mx, 1.0), 0.0)
    rel = np.where(np.isfinite(stats["mu_star"]), rel, np.nan)
    selected = np.any(np.nan_to_num(rel, nan=0.0) >= threshold, axis=1)

    eff_comment = ("Elementary effect = change of the output divided by the Morris step expressed as a fraction of "
                   "the parameter's prior range on its sampling scale (log10 for scale = log): the output's units "
                   "(coordinate output_units) per full prior range of the parameter (per its range in decades for "
                   "log-scale parameters). units = '1' is exact for the dimensionless outputs; effects on peak_day "
                   "are in day.")
    out_units = np.array([units[o] for o in outputs], dtype=object)
    thetas = np.array([[p.from_unit(float(u)) for p, u in zip(params, row)] for row in X], dtype=float)
    data = {
        "mu_star": (("parameter", "output"), stats["mu_star"], {
            "units": "1", "long_name": "Morris mu*: mean absolute elementary effect (output units per prior range "
                                       "of the parameter on its sampling scale)", "comment": eff_comment}),
        "mu_star_conf": (("parameter", "output"), stats["mu_star_conf"], {
            "units": "1", "long_name": "half-width of the bootstrap 95% confidence interval of mu* (output units "
                                       "per prior range on the sampling scale)", "comment": eff_comment}),
        "sigma": (("parameter", "output"), stats["sigma"], {
            "units": "1", "long_name": "Morris sigma: standard deviation of the elementary effects (interactions / "
                                       "non-linearity; output units per prior range on the sampling scale)",
            "comment": eff_comment}),
        "mu": (("parameter", "output"), stats["mu"], {
            "units": "1", "long_name": "Morris mu: mean signed elementary effect (output units per prior range on "
                                       "the sampling scale)", "comment": eff_comment}),
        "mu_star_rel": (("parameter", "output"), rel, {
            "units": "1", "long_name": "mu* relative to the largest mu* of the output over parameters"}),
        "selected": (("parameter",), selected.astype(np.int8), {
            "units": "1", "long_name": f"influential: mu_star_rel >= {threshold:g} for at least one output",
            "flag_values": np.array([0, 1], dtype=np.int8), "flag_meanings": "fix calibrate",
            "threshold": float(threshold)}),
        "n_undefined": (("output",), n_undef, {
            "units": "1", "long_name": "design points where the output was undefined (NaN), replaced by the "
                                       "output's mean over the defined points before the analysis"}),
        "X": (("point", "parameter"), np.asarray(X, dtype=float), {
            "units": "1", "long_name": "Morris design on the sampling scale (log10 of the value in parameter_unit "
                                       "where scale = log, else the value in parameter_unit)",
            "scale": " ".join(p.scale for p in params)}),
        "theta": (("point", "parameter"), thetas, {
            "units": "1", "long_name": "parameter value simulated at the design point (in parameter_unit; "
                                       "integer parameters rounded)"}),
        "Y": (("point", "output"), np.asarray(Y, dtype=float), {
            "units": "1", "long_name": "screen outputs at the design points (NaN where undefined; units per "
                                       "output in output_units: peak_day in day, others dimensionless)"}),
    }
    coords = {
        "parameter": ("parameter", np.array([p.key for p in params], dtype=object),
                      {"long_name": "model parameter key (nksim/quantities.py)"}),
        "output": ("output", np.array(outputs, dtype=object), {"long_name": "screen output"}),
        "point": ("point", np.arange(X.shape[0], dtype=np.int64), {"units": "1", "long_name": "design point"}),
        "output_units": ("output", out_units, {"long_name": "UDUNITS-2 units of the output (and of its effects)"}),
        "output_long_name": ("output", np.array([OUTPUT_META.get(o, ("", o))[1] or o for o in outputs],
                                                dtype=object), {"long_name": "description of the output"}),
        "parameter_unit": ("parameter", np.array([p.unit for p in params], dtype=object),
                           {"long_name": "unit of the parameter value"}),
        "scale": ("parameter", np.array([p.scale for p in params], dtype=object),
                  {"long_name": "sampling scale of the prior (log: uniform in log10)"}),
        "prior_lo": ("parameter", np.array([p.lo for p in params], dtype=float),
                     {"units": "1", "long_name": "lower prior bound (in parameter_unit)"}),
        "prior_hi": ("parameter", np.array([p.hi for p in params], dtype=float),
                     {"units": "1", "long_name": "upper prior bound (in parameter_unit)"}),
    }
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({
        "method": "Morris elementary effects (SALib.sample.morris / SALib.analyze.morris) over uniform priors on "
                  "the sampling scale",
        "levels": int(levels),
        "trajectories": int(X.shape[0] // (len(params) + 1)),
        "analysis_seed": int(seed),
        "selection_threshold": float(threshold),
        "n_undefined": json.dumps({o: int(n) for o, n in zip(outputs, n_undef)}),
    })
    return ds


# ---------------------------------------------------------------------------------- the screen
def run_screen(config: CalibrationConfig, *, trajectories: int = 10, levels: int = 4, virtual_trials: int = 4,
               seed: int | None = None, workers: int = 1, progress: bool = True,
               params: Sequence[FitParameter] | None = None, dose_factor: float = 1.0) -> xr.Dataset:
    """Morris screen of the config's model over the prior ranges on :data:`SCREEN_OUTPUTS`.

    Parameters
    ----------
    config:
        The calibration config (resolution, patients, follow-up, seed).
    trajectories, levels:
        Morris trajectories (``trajectories * (k + 1)`` design points for ``k`` parameters) and
        grid levels (even).
    virtual_trials:
        Virtual trials (each: every evaluable patient of the trial) per design point.
    seed:
        Design and bootstrap seed (default ``config.seed``), an integer in ``[0, 2**64)``
        (:func:`nksim.checks.check_seed`); the simulation seed is ``config.seed`` at every point
        (common random numbers).
    workers:
        Threads evaluating design points; results do not depend on it.
    params:
        The screened parameters (default :func:`screen_parameters`).
    dose_factor:
        Multiplies every NK infusion dose of the trial protocol: screens at doses other than the
        trial's show which NK parameters would matter if more cells were given.

    Returns
    -------
    xarray.Dataset
        dims ``parameter``, ``output``, ``point``: ``mu_star``, ``mu_star_conf``, ``sigma``,
        ``mu``, ``mu_star_rel`` (parameter, output), ``selected`` (parameter, 0/1 flag),
        ``n_undefined`` (output), the design ``X`` (sampling scale) and ``theta`` (model values)
        (point, parameter), outputs ``Y`` (point, output); CF attributes and provenance.
    """
    from ..output import provenance_attrs

    seed = config.seed if seed is None else check_seed(seed, source="run_screen", key="seed")
    model = CalibrationModel(config)
    if dose_factor != 1.0:
        model.protocol = model.protocol.with_nk_dose_factor(dose_factor)
    params = list(params) if params is not None else screen_parameters(config, model)
    sim_seed = int(config.seed)

    def func(theta: dict[str, float]) -> dict[str, float]:
        return cohort_outputs(model, theta, sim_seed, virtual_trials)

    t0 = time.perf_counter()
    ds = morris_indices(params, func, SCREEN_OUTPUTS, trajectories=trajectories, levels=levels, seed=seed,
                        workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    attrs = provenance_attrs(model.base, model.protocol, sim_seed, virtual_trials)
    attrs.update(ds.attrs)
    attrs.update({
        "title": f"nksim Morris sensitivity screen: {config.name}",
        "comment": (f"{ds.sizes['point']} design points, each {virtual_trials} virtual trial(s) of the "
                    f"{len(model.slots)} evaluable trial patients (same follow-up as observed) at the calibration "
                    f"resolution; simulation seed {sim_seed} at every point (common random numbers). "
                    f"Base parameter set '{model.base.name}': {model.base.status}"),
        "virtual_trials": int(virtual_trials),
        "patients_per_trial": int(len(model.slots)),
        "seed": seed,
        "simulation_seed": sim_seed,
        "config_name": config.name,
        "calibration_config": json.dumps(config.as_dict(), sort_keys=True),
        "wall_time_s": float(seconds),
        "workers": int(workers),
        "nk_dose_factor": float(dose_factor),
    })
    ds.attrs = attrs
    return ds


def screen_table(ds: xr.Dataset) -> str:
    """Plain-text table: parameter, mu* per output (units per prior range), selected."""
    outputs = [str(o) for o in ds["output"].to_numpy()]
    keys = [str(p) for p in ds["parameter"].to_numpy()]
    w = max(len("parameter"), *(len(k) for k in keys))
    cols = [max(12, len(o)) for o in outputs]
    head = "parameter".ljust(w) + "  " + "  ".join(o.rjust(c) for o, c in zip(outputs, cols)) + "  selected"
    units = " " * w + "  " + "  ".join(f"[{ds['output_units'].sel(output=o).item()}/range]".rjust(c)
                                         for o, c in zip(outputs, cols))
    lines = [head, units]
    order = np.argsort(-np.nan_to_num(ds["mu_star_rel"].max("output").to_numpy(), nan=-1.0))
    for i in order:
        k = keys[i]
        vals = "  ".join(f"{float(ds['mu_star'].sel(parameter=k, output=o)):.4g}".rjust(c)
                         for o, c in zip(outputs, cols))
        lines.append(k.ljust(w) + "  " + vals + "  " + ("yes" if int(ds["selected"].sel(parameter=k)) else "no"))
    return "\n".join(lines)
