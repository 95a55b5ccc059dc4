"""A simulation bank of prior draws on the trial registry's rows: the training set of the joint fit.

The joint calibration across trials (issue 26; :mod:`nksim.calibration.joint`) learns, for every
registry row, how the simulated outcome of one virtual patient depends on the parameters. It
learns it from a **bank**: ``points`` parameter vectors spread over the prior box by a scrambled
Sobol' sequence (``scipy.stats.qmc.Sobol``, on each parameter's sampling scale), and at every point
each protocol the rows need simulated once for ``replicates`` virtual trials
(:func:`~nksim.calibration.scoring.protocol_run`, as ``nksim score`` runs them). What is kept is
each simulated patient's outcome for each row (:func:`~nksim.calibration.registry.simulated_per_patient`:
0/1 for shares, the value in the row's unit for quantities, NaN where the patient does not count),
so the fit sees thousands of labelled patients per row, not one number per point.

Seeds: point ``i`` simulates protocol ``P`` with ``derived_seed(seed, f"bank:{i}:protocol:P")``
(:func:`~nksim.calibration.scoring.derived_seed`), so a point's outcomes depend only on the seed,
the point's index and its parameters: not on the number of workers, the order points finish in,
or whether the bank was built in one run or resumed.

Storage: a folder of parts ``part-NNNNN.nc`` of ``chunk`` points each (netCDF written atomically
by :func:`nksim.io.write_netcdf`), plus ``bank.json`` (the design: parameters, priors, seed,
resolution, rows; refused on resume if it differs). A run that is interrupted keeps every finished
part; running the same command again simulates only the missing parts. :func:`open_bank` joins
the parts into one Dataset (variables below) and refuses a part whose design does not match.

Variables of the joined Dataset (dimension ``point``, ``parameter``, ``row``, ``slot``):

* ``theta`` (point, parameter): the parameter values, in each parameter's unit;
* ``u`` (point, parameter): the same on the unit cube of the prior (0 = lower bound);
* ``outcome`` (point, row, slot): per-patient outcomes; slot = patient x virtual trial, padded
  with NaN to the largest protocol;
* ``statistic`` (point, row): the row's statistic per point (share, or median/mean of a quantity,
  pooled over the point's virtual trials);
* ``cpu_seconds`` (point): CPU time of the point's simulations (process time of its thread).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_seed, show
from ..errors import NksimInputError
from ..threads import ordered_thread_map
from .config import FitParameter
from .registry import Registry, TrialObservation, group_by_protocol, load_registry, simulated_per_patient
from .scoring import derived_seed, protocol_run, registry_run_attrs, resolution_params

if TYPE_CHECKING:  # pragma: no cover
    import xarray

    from ..parameters import ParameterSet

_SOURCE = "run_bank"
DESIGN_FILE = "bank.json"
PART_PATTERN = "part-{:05d}.nc"
#: Sub-folder prefix of a row supplement (rows added to the registry after the bank was started).
SUPPLEMENT_PREFIX = "rows-"
#: ``lattice.cell_diameter`` of the bank's resolution (um): 16 x fewer cell places and NK agents than the
#: calibration resolution's 10 um, same region, same whole-body scale (calibration/README.md, "cost cap").
BANK_CELL_DIAMETER = 40.0


def prior_unit_to_values(fit: Sequence[FitParameter], u: np.ndarray) -> np.ndarray:
    """Points of the unit cube (n, k) -> parameter values (n, k) on each parameter's prior (integers rounded)."""
    u = np.atleast_2d(np.asarray(u, float))
    out = np.empty_like(u)
    for j, f in enumerate(fit):
        lo, hi = f.bounds
        out[:, j] = [f.from_unit(lo + x * (hi - lo)) for x in u[:, j]]
    return out


def values_to_prior_unit(fit: Sequence[FitParameter], theta: np.ndarray) -> np.ndarray:
    """Parameter values (n, k) -> positions on the unit cube of the prior (n, k)."""
    theta = np.atleast_2d(np.asarray(theta, float))
    out = np.empty_like(theta)
    for j, f in enumerate(fit):
        lo, hi = f.bounds
        x = np.log10(theta[:, j]) if f.scale == "log" else theta[:, j]
        out[:, j] = (x - lo) / (hi - lo)
    return out


def sobol_design(k: int, n: int, seed: int) -> np.ndarray:
    """``n`` points of a scrambled Sobol' sequence in [0, 1)^k (the first ``n`` of the next power of 2)."""
    from scipy.stats import qmc

    m = max(int(math.ceil(math.log2(max(n, 1)))), 0)
    return qmc.Sobol(k, scramble=True, seed=np.random.default_rng(seed)).random_base2(m)[:n]


def bank_rows(registry: Registry, roles: Sequence[str] = ("target",)) -> list[TrialObservation]:
    """The registry rows of ``roles`` that have a simulated counterpart, in file order."""
    return [o for o in registry.observations if o.role in roles and o.has_counterpart]


def _design(p: ParameterSet, fit: Sequence[FitParameter], rows: Sequence[TrialObservation], *, points: int,
            replicates: int, seed: int, chunk: int, resolution: str, overrides: Mapping[str, float]) -> dict[str, Any]:
    return {
        "what": "nksim simulation bank (nksim.calibration.bank)",
        "parameter_set": p.name,
        "parameter_digest": p.digest(),
        "parameters": [{"key": f.key, "lo": f.lo, "hi": f.hi, "scale": f.scale, "unit": f.unit,
                        "integer": bool(f.integer)} for f in fit],
        "rows": [o.name for o in rows],
        "points": int(points),
        "replicates": int(replicates),
        "seed": int(seed),
        "chunk": int(chunk),
        "resolution": resolution,
        "lattice_overrides": {k: float(v) for k, v in sorted(overrides.items())},
    }


def _digest(design: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(design, sort_keys=True).encode()).hexdigest()[:16]


def simulate_point(q: ParameterSet, runs: Mapping[str, tuple[Any, list[str]]],
                   by_protocol: Mapping[str, Sequence[TrialObservation]], seeds: Mapping[str, int],
                   replicates: int) -> dict[str, np.ndarray]:
    """Each row's per-patient outcomes (flattened patient x virtual trial) at one parameter set ``q``."""
    from ..simulate import simulate_cohort

    out: dict[str, np.ndarray] = {}
    for name, obs in by_protocol.items():
        proto, ids = runs[name]
        ds = simulate_cohort(q, proto, replicates=replicates, seed=seeds[name], patients=ids, workers=1)
        for o in obs:
            out[o.name] = simulated_per_patient(o, ds).ravel()
    return out


def row_statistic(o: TrialObservation, x: np.ndarray) -> float:
    """A row's statistic of per-patient outcomes ``x``: share (mean of flags) or the row's median/mean; NaN if none."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan
    return float(x.mean() if o.is_share or o.statistic == "mean" else np.median(x))


def run_bank(out: str | Path, params: ParameterSet | str | Path = "default",
             registry: Registry | str | Path | None = None, *, parameters: Sequence[FitParameter],
             points: int, replicates: int = 1, seed: int = 20261206, chunk: int = 32, workers: int = 1,
             resolution: str = "calibration", lattice_overrides: Mapping[str, float] | None = None,
             roles: Sequence[str] = ("target",), progress: bool = True, upto: int | None = None,
             on_part: Callable[[int, int], None] | None = None) -> Path:
    """Simulate (or complete) the bank in folder ``out``; returns the folder.

    ``parameters``: the fitted parameters with their priors; ``points``: Sobol' points over the prior
    box; ``replicates``: virtual trials per protocol and point; ``chunk``: points per part file;
    ``workers``: threads (the simulation kernel releases the GIL; results do not depend on it);
    ``lattice_overrides`` on top of ``resolution`` (default ``lattice.cell_diameter`` =
    :data:`BANK_CELL_DIAMETER`). Parts already in ``out`` with the same design are kept. ``upto``:
    simulate only the parts of the first ``upto`` points now (a later run completes the design).
    """
    from ..io import write_netcdf
    from ..io.lock import output_lock

    seed = check_seed(seed, source=_SOURCE, key="seed")
    for name, v, lo in (("points", points, 1), ("replicates", replicates, 1), ("chunk", chunk, 1),
                        ("workers", workers, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise NksimInputError(f"{name} must be an integer >= {lo}, got {show(v)}", source=_SOURCE, key=name)
    fit = list(parameters)
    if not fit:
        raise NksimInputError("no parameter to vary", source=_SOURCE, key="parameters")
    if registry is None or isinstance(registry, (str, Path)):
        registry = load_registry(registry)
    overrides = {"lattice.cell_diameter": BANK_CELL_DIAMETER, **(lattice_overrides or {})}
    p = resolution_params(params, resolution, overrides)
    for f in fit:
        if f.key not in p:
            raise NksimInputError(f"unknown parameter {show(f.key)}", source=_SOURCE, key="parameters")
    rows = bank_rows(registry, roles)
    if not rows:
        raise NksimInputError(f"the registry has no simulated row of role(s) {', '.join(roles)}",
                              source=registry.directory, key="roles")
    design = _design(p, fit, rows, points=points, replicates=replicates, seed=seed, chunk=chunk,
                     resolution=resolution, overrides=overrides)
    u_all = sobol_design(len(fit), points, seed)
    theta_all = prior_unit_to_values(fit, u_all)
    out = Path(out)
    attrs = registry_run_attrs(
        "nksim simulation bank on the trial registry (training set of the joint fit)",
        f"{points} scrambled Sobol' points over the prior box of {len(fit)} parameters, each protocol "
        f"simulated for {replicates} virtual trial(s) at the '{resolution}' resolution with "
        f"lattice.cell_diameter {overrides['lattice.cell_diameter']:g} um; point i simulates protocol P "
        "with derived_seed(seed, 'bank:i:protocol:P')", p, resolution=resolution,
        lattice_overrides=overrides, registry=registry)
    attrs["seed"] = int(seed)
    with output_lock(out, "nksim bank"):
        folders = _bank_folders(out, design, rows, registry, params=p)
        n_parts = -(-points // chunk)
        last = n_parts if upto is None else min(n_parts, -(-int(upto) // chunk))
        todo = [(c, f, r, d) for c in range(last) for f, r, d in folders
                if not (f / PART_PATTERN.format(c)).exists()]
        plans = {}  # per folder: its rows by protocol, each protocol's run, the slots of its largest protocol
        for f, frows, _ in folders:
            by_protocol = group_by_protocol(frows)
            runs = {name: protocol_run(name, obs) for name, obs in by_protocol.items()}
            plans[f] = (by_protocol, runs, max(len(runs[o.protocol][1]) * replicates for o in frows))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(min(chunk, points - c * chunk) for c, *_ in todo), desc="bank points",
                       unit="point")
        try:
            # part by part, the main folder and its row supplements side by side: a supplement first catches
            # up with the parts the main folder already has, then the bank grows in step
            for c, folder, frows, fdesign in todo:
                by_protocol, runs, n_slot = plans[folder]

                def one(i: int, by_protocol=by_protocol, runs=runs) -> tuple[dict[str, np.ndarray], float]:
                    q = p.with_values({f.key: float(theta_all[i, j]) for j, f in enumerate(fit)},
                                      origin=f"{p.origin} (bank point {i})")
                    seeds = {name: derived_seed(seed, f"bank:{i}:protocol:{name}") for name in by_protocol}
                    t0 = time.thread_time()
                    res = simulate_point(q, runs, by_protocol, seeds, replicates)
                    return res, time.thread_time() - t0

                idx = list(range(c * chunk, min((c + 1) * chunk, points)))
                # an interrupt (or error) stops at once: points not started are cancelled, running kernels halt,
                # the unfinished part is not written; finished parts are kept
                results = ordered_thread_map(one, idx, workers,
                                             on_result=None if bar is None else (lambda _: bar.update(1)))
                part_attrs = dict(attrs, design_digest=_digest(fdesign))
                ds = _part_dataset(fit, frows, idx, u_all, theta_all, results, n_slot, part_attrs)
                write_netcdf(ds, folder / PART_PATTERN.format(c), overwrite=False)
                if on_part is not None:
                    on_part(c, n_parts)
        finally:
            if bar is not None:
                bar.close()
    return out


def _without_rows(design: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in design.items() if k != "rows"}


def bank_model_match(recorded_digest: str | None, p: ParameterSet) -> list[str] | None:
    """Whether a bank that recorded ``recorded_digest`` (its ``parameter_digest``) simulated the model ``p``.

    ``[]`` when ``p``'s digest is the recorded one. Otherwise the keys of
    :data:`~nksim.quantities.NEUTRAL_VALUES` that ``p`` holds at their neutral value and without which its values
    have the recorded digest: parameters of mechanisms added off by default after the bank was simulated, at the
    value at which the model is the one the bank simulated (the fewest such keys; at most ``2**len`` digests are
    tried). ``None`` when no such set exists: the bank simulated another model.
    """
    from itertools import combinations

    from ..parameters import values_digest
    from ..quantities import NEUTRAL_VALUES

    if recorded_digest is None:
        return None
    values = p.values()
    if values_digest(values) == recorded_digest:
        return []
    neutral = [k for k, v in NEUTRAL_VALUES.items() if k in values and values[k] == v]
    for r in range(1, len(neutral) + 1):
        for keys in combinations(neutral, r):
            if values_digest({k: v for k, v in values.items() if k not in keys}) == recorded_digest:
                return list(keys)
    return None


def _bank_folders(out: Path, design: dict[str, Any], rows: Sequence[TrialObservation],
                  registry: Registry, params: ParameterSet | None = None,
                  ) -> list[tuple[Path, list[TrialObservation], dict[str, Any]]]:
    """The folders a bank of ``design`` writes: (folder, rows, design) for the main folder and each supplement.

    A new folder gets every row. A folder whose bank has the same design but fewer rows (rows added to
    the registry since) keeps its rows; the missing ones go into a **row supplement**
    ``rows-<digest>/`` (same points, seeds and resolution, only the protocols those rows need), which
    :func:`open_bank` joins: rows are added without simulating the old ones again. A bank whose parameter
    digest differs only because ``params`` holds parameters added since at their neutral value
    (:func:`bank_model_match`) keeps its design. Any other difference is refused.
    """
    design = json.loads(json.dumps(design))
    dfile = out / DESIGN_FILE
    if not dfile.exists():
        out.mkdir(parents=True, exist_ok=True)
        dfile.write_text(json.dumps(design, indent=1))
        return [(out, list(rows), design)]
    old = _read_design(dfile)
    if (params is not None and old.get("parameter_digest") != design.get("parameter_digest")
            and bank_model_match(old.get("parameter_digest"), params) is not None):
        design["parameter_digest"] = old["parameter_digest"]
    if _without_rows(old) != _without_rows(design):
        raise NksimInputError("the folder holds a bank of another design (parameters, priors, seed, points, chunk "
                              "or resolution differ); choose another folder", source=dfile)
    by_name = {o.name: o for o in registry.observations}
    folders = []
    have: set[str] = set()
    for folder, d in [(out, old), *_supplements(out, old)]:
        lost = [r for r in d["rows"] if r not in by_name]
        if lost:
            raise NksimInputError(f"the bank has row(s) {', '.join(lost)} that the registry no longer has; it cannot "
                                  "be completed: choose another folder", source=folder / DESIGN_FILE)
        folders.append((folder, [by_name[r] for r in d["rows"]], d))
        have.update(d["rows"])
    new = [o for o in rows if o.name not in have]
    if new:
        sdesign = dict(design, rows=[o.name for o in new])
        folder = out / f"{SUPPLEMENT_PREFIX}{_digest(sdesign)[:8]}"
        folder.mkdir(exist_ok=True)
        (folder / DESIGN_FILE).write_text(json.dumps(sdesign, indent=1))
        folders.append((folder, new, sdesign))
    return folders


def _read_design(dfile: Path) -> dict[str, Any]:
    try:
        return json.loads(dfile.read_text())
    except (OSError, ValueError) as exc:
        raise NksimInputError(f"cannot read the bank design ({exc})", source=dfile) from None


def _supplements(out: Path, design: Mapping[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """The row supplements of the bank in ``out`` (sorted by name); one of another design is refused."""
    found = []
    for dfile in sorted(out.glob(f"{SUPPLEMENT_PREFIX}*/{DESIGN_FILE}")):
        d = _read_design(dfile)
        if _without_rows(d) != _without_rows(design):
            raise NksimInputError("a row supplement of another design (parameters, priors, seed, points, chunk or "
                                  "resolution differ from the main bank's)", source=dfile)
        found.append((dfile.parent, d))
    return found


def _part_dataset(fit, rows, idx, u_all, theta_all, results, n_slot, attrs) -> xarray.Dataset:
    import xarray as xr

    n = len(idx)
    outcome = np.full((n, len(rows), n_slot), np.nan)
    stat = np.full((n, len(rows)), np.nan)
    for a, (res, _) in enumerate(results):
        for r, o in enumerate(rows):
            x = res[o.name]
            outcome[a, r, :x.size] = x
            stat[a, r] = row_statistic(o, x)
    keys = [f.key for f in fit]
    ds = xr.Dataset(
        {
            "theta": (("point", "parameter"), theta_all[idx], {"long_name": "parameter value (unit per parameter "
                                                                             "in parameter_unit)"}),
            "u": (("point", "parameter"), u_all[idx], {"long_name": "position on the unit cube of the prior "
                                                                     "(sampling scale)", "units": "1"}),
            "outcome": (("point", "row", "slot"), outcome,
                        {"long_name": "per-patient outcome of the row (0/1 for shares; the row's unit for "
                                      "quantities; NaN: does not count or padding)"}),
            "statistic": (("point", "row"), stat, {"long_name": "the row's statistic over the point's simulated "
                                                                 "patients (share, or median/mean)"}),
            "cpu_seconds": (("point",), np.array([s for _, s in results]),
                            {"long_name": "CPU time of the point's simulations", "units": "s"}),
        },
        coords={
            "point": ("point", np.array(idx, dtype=np.int64), {"long_name": "bank point index"}),
            "parameter": ("parameter", np.array(keys, dtype=object), {"long_name": "parameter key"}),
            "parameter_unit": ("parameter", np.array([f.unit for f in fit], dtype=object),
                               {"long_name": "unit of the parameter (UDUNITS-2)"}),
            "row": ("row", np.array([o.name for o in rows], dtype=object),
                    {"long_name": "registry observation name (calibration/data/trials/)"}),
            "row_unit": ("row", np.array(["1" if o.is_share else o.unit for o in rows], dtype=object),
                         {"long_name": "unit of the row's outcome"}),
        },
        attrs=attrs,
    )
    return ds


def open_bank(folder: str | Path) -> xarray.Dataset:
    """The bank in ``folder``: its parts joined along ``point`` (only complete parts; see module docstring).

    Row supplements (``rows-*/``, rows added to the registry after the bank was started) are joined
    along ``row``, on the points that the main folder and every supplement have finished. The
    design (``bank.json``, its ``rows`` those of the joined bank) is in ``attrs['design']`` (JSON)
    and the parameters as :class:`~nksim.calibration.config.FitParameter` via :func:`bank_parameters`.
    """
    import xarray as xr

    folder = Path(folder)
    dfile = folder / DESIGN_FILE
    if not dfile.exists():
        raise NksimInputError(f"not a bank folder (no {DESIGN_FILE})", source=folder)
    design = _read_design(dfile)
    supplements = _supplements(folder, design)
    banks = [_open_parts(folder, design)] + [_open_parts(f, d) for f, d in supplements]
    ds = banks[0]
    if len(banks) > 1:
        common = sorted(set.intersection(*(set(b["point"].values.tolist()) for b in banks)))
        if not common:
            raise NksimInputError("the bank and its row supplements have no finished point in common", source=folder)
        banks = [b.sel(point=common) for b in banks]
        for b, (f, _) in zip(banks[1:], supplements):
            if not np.array_equal(b["theta"].values, banks[0]["theta"].values):
                raise NksimInputError("a row supplement's points differ from the main bank's", source=f)
        n_slot = max(b.sizes["slot"] for b in banks)
        banks = [b.pad(slot=(0, n_slot - b.sizes["slot"])) if b.sizes["slot"] < n_slot else b for b in banks]
        cpu = sum(b["cpu_seconds"] for b in banks)
        ds = xr.concat([b[["outcome", "statistic"]] for b in banks], dim="row", combine_attrs="override")
        ds = ds.assign(theta=banks[0]["theta"], u=banks[0]["u"],
                       cpu_seconds=cpu.assign_attrs(banks[0]["cpu_seconds"].attrs))
        ds.attrs = dict(banks[0].attrs)
        design = dict(design, rows=[str(r) for r in ds["row"].values])
        ds.attrs["supplements"] = len(banks) - 1
    ds.attrs["design"] = json.dumps(design)
    return ds


def _open_parts(folder: Path, design: Mapping[str, Any]) -> xarray.Dataset:
    """The finished parts of one bank folder joined along ``point``; a part of another design is refused."""
    import xarray as xr

    from ..io import open_output

    digest = _digest(design)
    parts = sorted(folder.glob("part-*.nc"))
    if not parts:
        raise NksimInputError("the bank has no finished part yet", source=folder)
    dss = []
    for f in parts:
        ds = open_output(f).load()
        if ds.attrs.get("design_digest") != digest:
            raise NksimInputError(f"part of another design (design_digest {ds.attrs.get('design_digest')!r}, "
                                  f"bank.json {digest!r})", source=f)
        dss.append(ds)
    ds = xr.concat(dss, dim="point", data_vars="minimal", coords="minimal", compat="override",
                   combine_attrs="override")
    ds.attrs["parts"] = len(parts)
    return ds


def bank_parameters(ds: xarray.Dataset) -> list[FitParameter]:
    """The bank's parameters with their priors (from its design)."""
    design = json.loads(ds.attrs["design"])
    return [FitParameter(d["key"], float(d["lo"]), float(d["hi"]), d["scale"], d["unit"], bool(d["integer"]))
            for d in design["parameters"]]
