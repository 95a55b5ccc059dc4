"""Per-scenario summaries of a sweep store, the ranking table and netCDF export.

Metrics (per scenario, pooled over draws x patients x replicates):

==================== ============ ============================================================
``p_pd_first``       1            fraction with progressive disease (PD) at the first assessment
``pfs_landmark``     1            Kaplan-Meier probability of being progression-free at the
                                  landmark day (``landmark_day``, default 270 = 9 months)
``median_pfs``       day          Kaplan-Meier median progression-free time (inf: not reached)
``peak_chimerism_nk`` percent     median over simulations of the peak donor chimerism of blood NK
``peak_chimerism_pbmc`` percent   same, of blood lymphocytes
``donor_nk_auc``     uL-1 day     median over simulations of the area under donor NK per uL blood
                                  from day 0 to ``end_day`` (trapezoid rule, daily values)
==================== ============ ============================================================

Progression-free time is ``time_to_progression`` (first day on or after the first assessment at
the PD threshold), censored at ``end_day`` when NaN; Kaplan-Meier estimates come from
:func:`scipy.stats.ecdf` on :class:`scipy.stats.CensoredData`.

Uncertainty, for every metric:

* ``<metric>_mc_se``: Monte-Carlo standard error over replicates -- the metric computed for each
  replicate (pooled over draws and patients), standard deviation / sqrt(replicates); NaN with
  one replicate or when a per-replicate value is infinite;
* ``<metric>_draw_lo`` / ``_draw_hi``: 5 % and 95 % quantiles (nearest rank) over parameter
  draws of the metric computed per draw (pooled over patients and replicates); NaN with one draw.

Paired comparison (common random numbers): ``pfs_landmark_diff`` / ``p_pd_first_diff`` are
the mean over simulations of the paired difference (this scenario minus the reference scenario,
same draw, patient and replicate) and ``*_diff_se`` its standard error (sd / sqrt(n)).
All censoring happens at ``end_day`` >= landmark, so the landmark indicator is exact and the
paired difference of PFS at the landmark equals the difference of the Kaplan-Meier estimates.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..observables import RESPONSE_CODES, km_median, km_survival

if TYPE_CHECKING:  # pragma: no cover
    from .store import SweepStore  # imported where used: METRICS etc. load without zarr

#: metric -> (units, long_name, higher_is_better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "p_pd_first": ("1", "probability of progressive disease at the first assessment", False),
    "pfs_landmark": ("1", "Kaplan-Meier probability of being progression-free at the landmark day", True),
    "median_pfs": ("day", "Kaplan-Meier median progression-free time since first infusion (inf: not reached)", True),
    "peak_chimerism_nk": ("percent", "median over simulations of peak donor chimerism of blood NK cells", True),
    "peak_chimerism_pbmc": ("percent", "median over simulations of peak donor chimerism of blood lymphocytes", True),
    "donor_nk_auc": ("uL-1 day", "median over simulations of the AUC of donor NK per uL blood, day 0 to end", True),
}


# --- per-simulation outcomes -----------------------------------------------------------------
def per_simulation(store: SweepStore, s: int) -> dict[str, np.ndarray]:
    """Outcomes of every simulation of scenario ``s``, arrays of shape (draw, patient, replicate)."""
    time = store.coord("time")
    resp = store.read("response", s)
    out = {
        "pd_first": (resp[..., 0] == RESPONSE_CODES["PD"]).astype(float),
        "ttp": store.read("time_to_progression", s),
    }
    with np.errstate(all="ignore"):
        out["peak_nk"] = np.nanmax(store.read("donor_chimerism_nk", s).astype(float), axis=-1)
        out["peak_pbmc"] = np.nanmax(store.read("donor_chimerism_pbmc", s).astype(float), axis=-1)
    after = time >= 0
    nk = store.read("donor_nk_blood", s)[..., after].astype(float)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # noqa: NPY201  numpy < 2 (still supported) has only trapz
    out["auc"] = trapezoid(nk, time[after], axis=-1)
    return out


def _metric_functions(end_day: float, landmark: float) -> dict[str, Callable[[dict[str, np.ndarray]], float]]:
    return {
        "p_pd_first": lambda o: float(np.mean(o["pd_first"])),
        "pfs_landmark": lambda o: km_survival(o["ttp"], end_day, landmark),
        "median_pfs": lambda o: km_median(o["ttp"], end_day),
        "peak_chimerism_nk": lambda o: float(np.median(o["peak_nk"])),
        "peak_chimerism_pbmc": lambda o: float(np.median(o["peak_pbmc"])),
        "donor_nk_auc": lambda o: float(np.median(o["auc"])),
    }


def _subset(o: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in o.items()}


def scenario_metrics(o: dict[str, np.ndarray], end_day: float, landmark: float) -> dict[str, float]:
    """Every metric with its Monte-Carlo SE and draw interval for one scenario's outcomes."""
    n_draws, _, n_reps = o["ttp"].shape
    out: dict[str, float] = {}
    for name, f in _metric_functions(end_day, landmark).items():
        out[name] = f(o)
        per_rep = np.array([f(_subset(o, (slice(None), slice(None), r))) for r in range(n_reps)])
        out[f"{name}_mc_se"] = (float(np.std(per_rep, ddof=1) / np.sqrt(n_reps))
                                if n_reps > 1 and np.all(np.isfinite(per_rep)) else float("nan"))
        if n_draws > 1:
            per_draw = np.array([f(_subset(o, d)) for d in range(n_draws)])
            lo, hi = np.quantile(per_draw, [0.05, 0.95], method="nearest")
            out[f"{name}_draw_lo"], out[f"{name}_draw_hi"] = float(lo), float(hi)
        else:
            out[f"{name}_draw_lo"] = out[f"{name}_draw_hi"] = float("nan")
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = (np.asarray(a, float) - np.asarray(b, float)).ravel()
    se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return float(np.mean(diff)), se


def summarize(store: SweepStore | str | Path, reference: int | None = None,
              rank_by: str = "pfs_landmark") -> xr.Dataset:
    """Per-scenario metrics of a store (complete scenarios only) as an xarray Dataset.

    ``reference``: scenario index for the paired differences (default: the best scenario by
    ``rank_by``). Scenarios whose batches are not all written are left out (see
    ``attrs['scenarios_incomplete']``). The store is verified first (:meth:`SweepStore.check`):
    a damaged store raises :class:`~nksim.sweep.store.StoreDamagedError` rather than give numbers.
    """
    from .store import SweepStore

    if not isinstance(store, SweepStore):
        store = SweepStore.open_existing(store)
    if rank_by not in METRICS:
        raise ValueError(f"rank_by must be one of {list(METRICS)}, got {rank_by!r}")
    plan = store.plan
    end_day, landmark = float(plan["end_day"]), float(plan["landmark_day"])
    done = store.check()  # verified; batches finished later by a running writer are left for the next call
    complete = np.flatnonzero(done.reshape(plan.n_scenarios, plan.batches_per_scenario).all(axis=1))
    rows: dict[str, list[float]] = {}
    outcomes_pfs: dict[int, np.ndarray] = {}
    outcomes_pd: dict[int, np.ndarray] = {}
    for s in complete:
        o = per_simulation(store, int(s))
        for k, v in scenario_metrics(o, end_day, landmark).items():
            rows.setdefault(k, []).append(v)
        outcomes_pfs[int(s)] = ~(o["ttp"] <= landmark)  # progression-free at landmark (NaN -> True)
        outcomes_pd[int(s)] = o["pd_first"]
    ds = xr.Dataset(coords={"scenario": ("scenario", complete.astype(np.int64), {"long_name": "scenario index"})})
    for name in ["label", "regimen", "nk_product", "gap", "interval", "dose_split", "n_infusions", "first_dose_pct",
                 "total_dose", "start_day", *[k for k in plan["swept"] if "." in k]]:
        arr = store.array(name)
        values = np.asarray(store.coord(name))[complete]
        if values.dtype.kind in "TU":  # numpy StringDType from zarr -> object strings (netCDF char arrays)
            values = values.astype(object)
        ds.coords[name] = ("scenario", values, dict(arr.attrs))
    for name, (units, long_name, _) in METRICS.items():
        ds[name] = ("scenario", np.array(rows.get(name, []), dtype=float), {"units": units, "long_name": long_name})
        for suffix, what in [("_mc_se", "Monte-Carlo standard error over replicates"),
                             ("_draw_lo", "5% quantile over parameter draws"),
                             ("_draw_hi", "95% quantile over parameter draws")]:
            ds[name + suffix] = ("scenario", np.array(rows.get(name + suffix, []), dtype=float),
                                 {"units": units, "long_name": f"{long_name}: {what}"})
    if complete.size:
        if reference is None:
            reference = int(complete[rank_order(ds, rank_by)[0]])
        if reference not in outcomes_pfs:
            raise ValueError(f"reference scenario {reference} is not a complete scenario of the store")
        for key, outcome, units in [("pfs_landmark", outcomes_pfs, "1"), ("p_pd_first", outcomes_pd, "1")]:
            d_se = [_paired(outcome[int(s)], outcome[reference]) for s in complete]
            ds[f"{key}_diff"] = ("scenario", np.array([x[0] for x in d_se]), {
                "units": units, "long_name": f"paired difference of {key} vs scenario {reference} (same draw, "
                "patient and replicate: common random numbers)"})
            ds[f"{key}_diff_se"] = ("scenario", np.array([x[1] for x in d_se]), {
                "units": units, "long_name": f"standard error of the paired difference of {key}"})
    ds.attrs.update({
        "Conventions": "CF-1.8",
        "title": f"summary of nksim sweep '{plan['name']}'",
        "sweep_name": plan["name"],
        "nksim_version": store.attrs["nksim_version"],
        "plan_digest": plan.digest,
        "parameter_set": store.attrs.get("parameter_set", ""),
        "parameter_status": store.attrs.get("parameter_status", ""),
        "landmark_day": landmark,
        "end_day": end_day,
        "reference_scenario": -1 if reference is None else int(reference),
        "simulations_per_scenario": plan.n_draws * len(plan.patients) * plan.replicates,
        "draws": plan.n_draws, "patients": len(plan.patients), "replicates": plan.replicates,
        "scenarios_total": plan.n_scenarios,
        "scenarios_incomplete": int(plan.n_scenarios - complete.size),
    })
    return ds


#: Tie-breakers after the ranking metric (outcomes only), in order.
TIE_BREAK: tuple[str, ...] = ("pfs_landmark", "p_pd_first", "median_pfs")


def _key(values: np.ndarray, higher_better: bool) -> np.ndarray:
    """Sort key, smaller = better, NaN last."""
    v = np.asarray(values, dtype=float)
    v = np.where(np.isnan(v), -np.inf if higher_better else np.inf, v)
    return -v if higher_better else v


def rank_order(ds: xr.Dataset, rank_by: str) -> np.ndarray:
    """Positions along ``scenario``, best first: ``rank_by``, then :data:`TIE_BREAK`, then index."""
    keys = [rank_by] + [k for k in TIE_BREAK if k != rank_by]
    cols = [_key(ds[k].values, METRICS[k][2]) for k in keys]
    return np.lexsort([np.arange(ds.sizes["scenario"])] + cols[::-1])


def _fmt(v: float, pct: bool = False) -> str:
    if np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return ">end" if v > 0 else "-inf"
    return f"{100 * v:.0f}%" if pct else f"{v:.3g}"


def ranking_table(ds: xr.Dataset, rank_by: str = "pfs_landmark", top: int | None = None) -> str:
    """The scenarios ranked by ``rank_by`` (best first), with uncertainty, as text."""
    if rank_by not in METRICS:
        raise ValueError(f"rank_by must be one of {list(METRICS)}, got {rank_by!r}")
    a = ds.attrs
    lines = [f"sweep '{a['sweep_name']}' "
             f"(plan {a['plan_digest']}, parameters '{a['parameter_set']}': {a['parameter_status']})",
             f"{a['scenarios_total'] - a['scenarios_incomplete']}/{a['scenarios_total']} scenarios complete; "
             f"{a['simulations_per_scenario']} simulations each ({a['draws']} draws x {a['patients']} patients x "
             f"{a['replicates']} replicates); landmark day {a['landmark_day']:g}; ranked by {rank_by} "
             f"(ties: {', '.join(k for k in TIE_BREAK if k != rank_by)}, then scenario index)"]
    if a["scenarios_incomplete"]:
        lines.append(f"note: {a['scenarios_incomplete']} scenarios are not finished and are left out; "
                     "re-run `nksim sweep` to complete them")
    if ds.sizes.get("scenario", 0) == 0:
        lines.append("no complete scenario yet")
        return "\n".join(lines)
    order = rank_order(ds, rank_by)
    if top is not None:
        order = order[:top]
    lm = int(a["landmark_day"])
    ref = a["reference_scenario"]
    header = (f"{'rank':>4} {'#':>4}  {'P(PD@1st) ±se':>14} {'PFS@d' + str(lm) + ' ±se':>14} {'[draws 5-95%]':>13} "
              f"{'ΔPFS vs #' + str(ref) + ' ±se':>17} {'medPFS':>7} {'peakNK%':>8} {'AUC':>8}  scenario")
    lines += ["", header]
    for rank, i in enumerate(order, 1):
        r = ds.isel(scenario=int(i))
        pd = f"{_fmt(float(r.p_pd_first), True)} ±{_fmt(float(r.p_pd_first_mc_se), True)}"
        pfs = f"{_fmt(float(r.pfs_landmark), True)} ±{_fmt(float(r.pfs_landmark_mc_se), True)}"
        dr = f"[{_fmt(float(r.pfs_landmark_draw_lo), True)}-{_fmt(float(r.pfs_landmark_draw_hi), True)}]"
        if int(r.scenario) == ref:
            diff = "reference"
        else:
            diff = f"{100 * float(r.pfs_landmark_diff):+.0f}% ±{_fmt(float(r.pfs_landmark_diff_se), True)}"
        lines.append(f"{rank:>4} {int(r.scenario):>4}  {pd:>14} {pfs:>14} {dr:>13} {diff:>17} "
                     f"{_fmt(float(r.median_pfs)):>7} {_fmt(float(r.peak_chimerism_nk)):>8} "
                     f"{_fmt(float(r.donor_nk_auc)):>8}  {str(r.label.values)}")
    return "\n".join(lines)


def open_sweep(path: str | Path) -> xr.Dataset:
    """The whole store as a lazy xarray Dataset (checked to be an nksim sweep store, and verified, first).

    A damaged store raises :class:`~nksim.sweep.store.StoreDamagedError`.
    """
    from ..io import zarr as zio
    from .store import SweepStore

    SweepStore.open_existing(path).check()
    return zio.open_dataset(path)


def export_netcdf(path: str | Path, out: str | Path, *, what: str = "summary", overwrite: bool = False,
                  rank_by: str = "pfs_landmark") -> Path:
    """Write the summary (``what="summary"``) or the whole store (``"all"``) to netCDF, atomically.

    The store is verified first. The file is written to a temporary file in ``out``'s folder and
    renamed on success; on any failure the temporary file is removed and an existing ``out`` is
    left as it was.
    """
    from ..errors import NksimInputError
    from ..io import write_netcdf
    from ..io import zarr as zio
    from .store import CHECKSUMS, StoreDamagedError

    if what not in ("summary", "all"):
        raise ValueError(f"what must be 'summary' or 'all', got {what!r}")
    if Path(out).exists() and not overwrite:  # before reading anything
        from ..errors import OutputExistsError

        raise OutputExistsError("already exists; pass overwrite=True (CLI: --overwrite) to replace it", source=out)
    if what == "summary":
        return write_netcdf(summarize(path, rank_by=rank_by), out, overwrite=overwrite)
    ds = zio.netcdf_ready(open_sweep(path).drop_vars(CHECKSUMS, errors="ignore"))
    try:
        return write_netcdf(ds, out, overwrite=overwrite)  # removes its temporary file on any failure
    except (RuntimeError, ValueError) as exc:  # e.g. a chunk that cannot be decoded (Zstd: RuntimeError)
        if isinstance(exc, NksimInputError):
            raise
        raise StoreDamagedError(f"export to {out} failed while reading the store ({type(exc).__name__}: {exc}); "
                                f"{out} was not written or changed", source=path) from None
