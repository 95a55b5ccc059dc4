"""``nksim optimise``: search, confirm, estimate; resumable; one labelled xarray result.

Stages (each on its own bank of units, :mod:`nksim.optimise.bank`):

1. **search** (:mod:`~nksim.optimise.search`): TPE proposals in synchronous batches, then a local
   polish, every schedule on the search bank with common random numbers;
2. **confirm** (:mod:`~nksim.optimise.select`): the ``top`` distinct schedules of the search and
   the reference on a fresh bank: means with draw-clustered intervals, paired differences against
   the reference and against the selected schedule, the near-optimal set, the per-draw best and
   the EVPI;
3. **estimate**: the selected schedule and the reference on a third bank, which took no part in
   the selection: the answer's value and its gain over the reference, unbiased.

Outputs in ``--out``: ``optimise.json`` (the run's identity and the spec), ``evaluations/`` (the kept
per-unit outcomes; a killed run resumes from them and gives the uninterrupted run's result),
``history.csv`` (every search trial), ``result.nc`` (CF-labelled: one row per confirmed schedule),
``REPORT.md`` and the figures (:mod:`nksim.optimise.report`). An output folder holding an
optimisation of other inputs is refused, never mixed in.
"""
from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._version import __version__
from ..errors import NksimInputError
from ..fileio import write_atomic
from .bank import BANK_NAMES, Bank, bank_seeds, stack
from .candidate import Candidate
from .problem import OUTCOMES, Clock, ModelProblem
from .search import SearchHistory, SearchSettings, run_search
from .select import cluster_mean_se, held_out, interval, near_optimal_set, paired, per_draw_best, select
from .spec import OptimiseSpec, load_spec
from .store import EvaluationCache, evaluate_cached

IDENTITY_FILE = "optimise.json"


@dataclass
class OptimiseResult:
    """What :func:`optimise` returns: the result Dataset, the search history and the output folder."""

    dataset: xr.Dataset
    history: SearchHistory
    out: Path | None
    simulated: int
    reused: int


def make_banks(spec: OptimiseSpec, params: Any) -> dict[str, Bank]:
    """The three banks of a spec: seeds spawned from its seed, parameter draws per bank."""
    from ..sweep.draws import parameter_draws

    seeds = bank_seeds(spec.seed)
    banks = {}
    for name in BANK_NAMES:
        size = spec.banks[name]
        draws = parameter_draws(params, size.draws, spec.draws_from, seeds[name], spec.source)
        if len(draws) < size.draws:  # the model's values only ({}): repeat them
            draws = [draws[0]] * size.draws
        banks[name] = Bank(name, seeds[name], tuple(draws), size.patients, size.replicates)
    return banks


def confirm(problem: Any, history: SearchHistory, reference: Candidate, banks: dict[str, Bank],
            cache: EvaluationCache, *, top: int, delta: float, alpha: float, objective: str = "pft", workers: int = 1,
            probes: Sequence[Candidate] = (), on_unit: Callable[[Any], None] | None = None) -> xr.Dataset:
    """Confirm the ``top`` schedules and the reference on the confirm bank, estimate the selected one.

    ``probes`` (tests): schedules evaluated beside the others and included in the near-optimal set's
    comparisons, never selectable (a planted optimum: is it in the set?).
    """
    cands: list[Candidate] = []
    role: list[str] = []
    search_value: list[float] = []
    for t in history.top(top):
        cands.append(t.candidate)
        role.append("search")
        search_value.append(t.value)
    keys = [c.key() for c in cands]
    if reference.key() in keys:
        role[keys.index(reference.key())] = "search+reference"
    else:
        cands.append(reference)
        role.append("reference")
        found = [t.value for t in history.distinct() if t.candidate.key() == reference.key()]
        search_value.append(found[0] if found else np.nan)
    for p in probes:
        cands.append(p)
        role.append("probe")
        search_value.append(np.nan)
    bank = banks["confirm"]
    outs = evaluate_cached(problem, cands, bank, cache, workers=workers, on_unit=on_unit)
    y = stack(outs, objective)
    selectable = [r != "probe" for r in role]
    ref_i = next(i for i, r in enumerate(role) if "reference" in r)
    sel = select(y, bank, selectable, prefer=ref_i)
    mean, se = cluster_mean_se(y, bank)
    lo, hi = interval(mean, se, bank, 1 - alpha)
    diff, dse = paired(y, bank)
    dlo, dhi = interval(diff, dse, bank, 1 - alpha)
    nos = near_optimal_set(y, bank, delta, alpha)
    pdb = per_draw_best(y, bank)
    est = evaluate_cached(problem, [cands[sel], reference], banks["estimate"], cache, workers=workers, on_unit=on_unit)
    ho = held_out(est[0][objective], est[1][objective], banks["estimate"], 1 - alpha)
    return _dataset(cands, role, search_value, outs, bank, mean, se, lo, hi, diff, dlo, dhi, ref_i, sel, nos, pdb, ho,
                    delta=delta, alpha=alpha, objective=objective)


def _dataset(cands, role, search_value, outs, bank, mean, se, lo, hi, diff, dlo, dhi, ref_i, sel, nos, pdb, ho, *,
             delta, alpha, objective) -> xr.Dataset:
    level = f"{100 * (1 - alpha):g} %"
    k = len(cands)
    cdim = ("candidate",)
    unit_obj = OUTCOMES[objective][0]
    coords = {
        "candidate": np.arange(k),
        "label": (cdim, np.array([c.label() for c in cands], dtype=object), {"long_name": "schedule"}),
        "schedule": (cdim, np.array([c.key() for c in cands], dtype=object),
                     {"long_name": "schedule as canonical JSON (nksim.optimise.Candidate fields)"}),
        "role": (cdim, np.array(role, dtype=object),
                 {"long_name": "why confirmed: search (a top schedule), reference, or probe (never selectable)"}),
        "n_infusions": (cdim, np.array([c.n_infusions for c in cands]), {"units": "1", "long_name": "infusions"}),
        "gap": (cdim, np.array([c.gap for c in cands]), {"units": "day", "long_name": "last lymphodepleting dose to "
                                                          "the first infusion"}),
        "last_infusion_day": (cdim, np.array([c.last_day for c in cands]),
                              {"units": "day", "long_name": "day of the last infusion after the first"}),
        "first_share": (cdim, np.array([c.shares[0] for c in cands]),
                        {"units": "percent", "long_name": "share of the dose in the first infusion"}),
        "donors": (cdim, np.array([c.new_donors for c in cands]), {"units": "1", "long_name": "distinct donors"}),
        "draw": np.arange(bank.n_draws),
        "other": ("other", np.arange(k), {"long_name": "index of the candidate compared with (paired_diff)"}),
    }
    name = objective
    data = {
        f"{name}_search": (cdim, np.array(search_value, dtype=float), {
            "units": unit_obj, "long_name": f"{OUTCOMES[objective][1]}: mean on the search bank (biased upward for "
                                            "the search's best; ranks proposals only)"}),
        f"{name}_mean": (cdim, mean, {"units": unit_obj, "long_name": f"{OUTCOMES[objective][1]}: mean on the "
                                                                    "confirm bank"}),
        f"{name}_se": (cdim, se, {"units": unit_obj, "long_name": "standard error of the mean (clustered by draw)"}),
        f"{name}_lo": (cdim, lo, {"units": unit_obj, "long_name": f"lower end of the {level} interval"}),
        f"{name}_hi": (cdim, hi, {"units": unit_obj, "long_name": f"upper end of the {level} interval"}),
        "gain_vs_reference": (cdim, diff[:, ref_i], {"units": unit_obj, "long_name": "paired difference from the "
                                                                                     "reference (confirm bank)"}),
        "gain_vs_reference_lo": (cdim, dlo[:, ref_i], {"units": unit_obj, "long_name": f"lower end ({level})"}),
        "gain_vs_reference_hi": (cdim, dhi[:, ref_i], {"units": unit_obj, "long_name": f"upper end ({level})"}),
        "diff_vs_selected": (cdim, diff[:, sel], {"units": unit_obj, "long_name": "paired difference from the "
                                                                                  "selected schedule (confirm bank)"}),
        "diff_vs_selected_lo": (cdim, dlo[:, sel], {"units": unit_obj, "long_name": f"lower end ({level})"}),
        "diff_vs_selected_hi": (cdim, dhi[:, sel], {"units": unit_obj, "long_name": f"upper end ({level})"}),
        "near_optimal": (cdim, nos.astype(np.int8), {
            "units": "1", "long_name": f"in the near-optimal set: not ruled out as within {delta:g} {unit_obj} of "
                                       f"the best (multiple comparisons with the best, alpha {alpha:g})"}),
        "paired_diff": (("candidate", "other"), diff, {
            "units": unit_obj, "long_name": "paired difference candidate minus other (confirm bank)"}),
        "paired_diff_lo": (("candidate", "other"), dlo, {"units": unit_obj, "long_name": f"lower end ({level})"}),
        "paired_diff_hi": (("candidate", "other"), dhi, {"units": unit_obj, "long_name": f"upper end ({level})"}),
        "selected": (cdim, (np.arange(k) == sel).astype(np.int8), {"units": "1", "long_name": "the selected "
                                                                                             "schedule"}),
        "p_best": (cdim, pdb["p_best"], {"units": "1", "long_name": "share of posterior draws in which this schedule "
                                                                 "has the largest mean (per-draw means)"}),
        f"{name}_by_draw": (("candidate", "draw"), pdb["draw_means"], {
            "units": unit_obj, "long_name": "mean over each posterior draw's patients (confirm bank)"}),
        "pfs_mean": (cdim, np.array([o["pfs"].mean() for o in outs]), {
            "units": "1", "long_name": f"{OUTCOMES['pfs'][1]}: share on the confirm bank"}),
        "cr_mean": (cdim, np.array([o["cr"].mean() for o in outs]), {
            "units": "1", "long_name": f"{OUTCOMES['cr'][1]}: share on the confirm bank"}),
    }
    attrs = {
        "title": "nksim optimise: the best schedule under posterior uncertainty",
        "Conventions": "CF-1.8", "nksim_version": __version__,
        "objective": objective, "delta": float(delta), "delta_units": unit_obj, "alpha": float(alpha),
        "confirm_units": int(bank.n_units), "confirm_draws": int(bank.n_draws),
        "selected_label": cands[sel].label(), "selected_schedule": cands[sel].key(),
        "reference_label": cands[ref_i].label(),
        "evpi_plain": float(pdb["evpi_plain"]), "evpi_cross_fitted": float(pdb["evpi_cross"]),
        "evpi_units": unit_obj,
        "evpi_comment": "expected value of perfect information about the posterior draw: plain estimate (biased "
                        "upward by patient noise in per-draw means) and cross-fitted (biased downward)",
        **{f"held_out_{k2}": float(v) for k2, v in ho.items()},
        "held_out_comment": f"selected schedule and reference on the independent estimate bank: value, gain over the "
                            f"reference, standard errors and {level} intervals ({unit_obj})",
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _identity(spec: OptimiseSpec, problem: ModelProblem, banks: dict[str, Bank]) -> dict[str, Any]:
    prob = problem.identity()
    blob = json.dumps(prob, sort_keys=True, default=str).encode()
    return {"spec": spec.digest(), "problem": hashlib.sha256(blob).hexdigest()[:16],
            "banks": {k: b.digest() for k, b in banks.items()}, "nksim_version": __version__}


def _check_identity(out: Path, ident: dict[str, Any], spec: OptimiseSpec) -> None:
    path = out / IDENTITY_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old is None:
            if any((out / "evaluations").glob("*/*.npz")):
                raise NksimInputError(f"{IDENTITY_FILE} is damaged and evaluations are kept beside it: cannot tell "
                                      "whose they are; choose another --out (or delete the folder)", source=out)
        elif old != ident:
            what = [k for k in ident if old.get(k) != ident[k]]
            raise NksimInputError(f"holds an optimisation of other inputs ({', '.join(what)} differ); choose another "
                                  "--out, or delete the folder to start again", source=out)
    record = {"identity": ident, "name": spec.name, "source": spec.source,
              "spec": json.loads(json.dumps(dict(spec.raw), default=str)),
              "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def history_csv(history: SearchHistory) -> str:
    """The search history as CSV text (one row per trial)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "batch", "source", "repeat", "value_day", "se_day", "label", "n_infusions", "gap_day",
                "days", "shares_percent", "donors", "cytokine", "schedule"])
    for t in history.trials:
        c = t.candidate
        w.writerow([t.number, t.batch, t.source, int(t.repeat), f"{t.value:.6g}", f"{t.se:.6g}", c.label(),
                    c.n_infusions, f"{c.gap:g}", "/".join(f"{d:g}" for d in c.days),
                    "/".join(f"{s:g}" for s in c.shares), "/".join(c.donors), c.cytokine, c.key()])
    return buf.getvalue()


def optimise(spec: OptimiseSpec | str | Path, out: str | Path | None, *, workers: int = 1,
             scheduler: str | None = None, overrides: Sequence[str] = (), progress: bool = False,
             figures: bool = True) -> OptimiseResult:
    """Run (or resume) an optimisation into ``out`` (module docstring); ``None``: in memory only."""
    if not isinstance(spec, OptimiseSpec):
        spec = load_spec(spec, overrides)
    if workers < 1:
        raise NksimInputError(f"workers must be >= 1, got {workers}", source="optimise", key="--workers")
    if scheduler is not None:  # before any work: a malformed address is refused now, nothing created
        from ..cluster import check_scheduler

        scheduler = check_scheduler(scheduler)
    from ..parameters import load_parameters

    base = load_parameters(spec.model_path)
    base.with_values(dict(spec.parameters), origin=f"{spec.source} [parameters]")  # validates before any work
    clock = Clock(spec.assessment_days, spec.landmark_day, spec.horizon)
    problem = ModelProblem(base, clock, spec.parameters, population=spec.population)
    banks = make_banks(spec, base)
    ident = _identity(spec, problem, banks)
    settings = SearchSettings(trials=spec.trials, batch_size=spec.batch_size, startup_trials=spec.startup_trials,
                              seed=spec.seed, objective=spec.objective, polish_rounds=spec.polish_rounds)
    if out is None:
        return _run(spec, problem, banks, settings, EvaluationCache(None, json.dumps(ident, sort_keys=True)), None,
                    workers, scheduler, progress, figures, spec.profile_levels)
    from ..io.lock import output_lock

    out = Path(out)
    with output_lock(out, "nksim optimise"):
        _check_identity(out, ident, spec)
        cache = EvaluationCache(out / "evaluations", json.dumps(ident, sort_keys=True))
        return _run(spec, problem, banks, settings, cache, out, workers, scheduler, progress, figures,
                    spec.profile_levels)


def profiles(problem: Any, space: Any, selected: Candidate, bank: Bank, cache: EvaluationCache, *, levels: int = 8,
             objective: str = "pft", alpha: float = 0.05, workers: int = 1) -> xr.Dataset:
    """One-factor profiles through the selected schedule on the search bank (paired with it, CRN).

    Each point varies one factor of the selected schedule (:meth:`DesignSpace.profile`); its value is
    the paired difference from the selected schedule on the same units, with a draw-clustered
    interval: how much each factor matters near the answer, with the patients' noise removed.
    """
    prof = space.profile(selected, levels)
    points = [(name, level, c) for name, pts in prof.items() for level, c in pts]
    cands = [selected] + [c for _, _, c in points]
    outs = evaluate_cached(problem, cands, bank, cache, workers=workers)
    y = stack(outs, objective)
    d = y[1:] - y[0]
    mean, se = cluster_mean_se(d, bank)
    lo, hi = interval(mean, se, bank, 1 - alpha)
    unit = OUTCOMES[objective][0]
    dim = ("profile_point",)
    coords = {
        "profile_factor": (dim, np.array([n for n, _, _ in points], dtype=object),
                           {"long_name": "factor varied from the selected schedule"}),
        "profile_level": (dim, np.array([lv for _, lv, _ in points], dtype=float),
                          {"units": "1", "long_name": "the factor's value (day; percent for first_share)"}),
        "profile_label": (dim, np.array([c.label() for _, _, c in points], dtype=object),
                          {"long_name": "schedule"}),
    }
    return xr.Dataset({
        "profile_diff": (dim, mean, {"units": unit, "long_name": "paired difference from the selected schedule "
                                                               "(search bank)"}),
        "profile_diff_lo": (dim, lo, {"units": unit, "long_name": f"lower end ({100 * (1 - alpha):g} %)"}),
        "profile_diff_hi": (dim, hi, {"units": unit, "long_name": f"upper end ({100 * (1 - alpha):g} %)"}),
    }, coords=coords)


def _run(spec, problem, banks, settings, cache, out, workers, scheduler, progress, figures,
         profile_levels: int = 8) -> OptimiseResult:
    from contextlib import nullcontext

    ctx: Any = nullcontext(None)
    if scheduler is not None:
        from ..cluster import dask_client

        ctx = dask_client(scheduler=scheduler, params=problem.base)
    with ctx as client:
        problem.client = client
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=settings.trials, unit="trial", desc=f"optimise {spec.name}", file=sys.stderr)

        def on_batch(h: SearchHistory) -> None:
            if out is not None:
                write_atomic(out / "history.csv", history_csv(h))
            if bar is not None:
                inc = h.incumbent()
                bar.n = min(len(h.trials), settings.trials)
                if inc is not None:
                    bar.set_postfix_str(f"incumbent {inc.value:.1f} d: {inc.candidate.label()}", refresh=False)
                bar.refresh()

        history = run_search(problem, spec.space, banks["search"], settings, cache, workers=workers, on_batch=on_batch)
        ds = confirm(problem, history, spec.reference, banks, cache, top=spec.top, delta=spec.delta,
                     alpha=spec.alpha, objective=spec.objective, workers=workers)
        if profile_levels:
            selected = Candidate.from_mapping(json.loads(ds.attrs["selected_schedule"]))
            ds = ds.merge(profiles(problem, spec.space, selected, banks["search"], cache, levels=profile_levels,
                                   objective=spec.objective, alpha=spec.alpha, workers=workers))
        if bar is not None:
            bar.close()
        problem.client = problem._scattered = None  # the client closes with this block
    from ..sweep.plan import population_text

    ds.attrs.update({"spec_name": spec.name, "spec_source": str(spec.source), "horizon": spec.horizon,
                     "landmark_day": spec.landmark_day, "seed": int(spec.seed),
                     "search_trials": len(history.trials), "search_units": banks["search"].n_units,
                     "estimate_units": banks["estimate"].n_units,
                     "population": population_text(spec.population)})
    if out is not None:
        from ..io.netcdf import write_netcdf
        from .report import write_report

        write_atomic(out / "history.csv", history_csv(history))
        write_netcdf(ds, out / "result.nc", overwrite=True)
        write_report(ds, history, spec, out, figures=figures)
    return OptimiseResult(ds, history, out, simulated=cache.simulated, reused=cache.loaded)


def sweep_grid(sweep_spec: str | Path) -> list[Candidate]:
    """The distinct schedules of a sweep spec's scenarios (its parameter draws and cohort are ignored).

    Scenarios whose cytokine course restarts at each infusion (``cytokine_course = "each"``) are left
    out: a candidate has one course (:meth:`Candidate.from_sweep_schedule`).
    """
    from ..sweep.plan import build_plan
    from ..sweep.spec import load_spec as load_sweep_spec

    plan = build_plan(load_sweep_spec(sweep_spec, ["cohort.draws=0"]))
    grid: list[Candidate] = []
    for sc in plan.content["scenarios"]:
        if sc["schedule"].get("cytokine_course", "first") != "first":
            continue
        c = Candidate.from_sweep_schedule(sc["schedule"])
        if c.key() not in {g.key() for g in grid}:
            grid.append(c)
    return grid


def grid_check(spec: OptimiseSpec, grid: Sequence[Candidate], *, workers: int = 1) -> dict[str, Any]:
    """Does the near-optimal set of a grid contain the grid's best cell? (issue 27's check on the real model).

    The grid is ranked on a bank of its own (the confirm bank's draws and size, another seed), as a
    sweep ranks its scenarios; then confirmed on the spec's confirm bank: the near-optimal set
    (spec's delta and alpha) should contain the ranking's best.
    """
    from ..parameters import load_parameters

    base = load_parameters(spec.model_path)
    problem = ModelProblem(base, Clock(spec.assessment_days, spec.landmark_day, spec.horizon), spec.parameters,
                           population=spec.population)
    banks = make_banks(spec, base)
    conf = banks["confirm"]
    rank_seed = int(np.random.SeedSequence([spec.seed, 27]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    rank_bank = Bank("grid", rank_seed, conf.draws, conf.patients, conf.replicates)
    cache = EvaluationCache(None, "grid-check")
    y_rank = stack(evaluate_cached(problem, list(grid), rank_bank, cache, workers=workers), spec.objective)
    mean_rank, _ = cluster_mean_se(y_rank, rank_bank)
    best = int(np.argmax(mean_rank))
    y_conf = stack(evaluate_cached(problem, list(grid), conf, cache, workers=workers), spec.objective)
    mean_conf, se_conf = cluster_mean_se(y_conf, conf)
    nos = near_optimal_set(y_conf, conf, spec.delta, spec.alpha)
    return {"grid": [c.label() for c in grid], "ranking_bank_mean": mean_rank.tolist(),
            "confirm_mean": mean_conf.tolist(), "confirm_se": se_conf.tolist(), "near_optimal": nos.tolist(),
            "grid_best": grid[best].label(), "grid_best_in_near_optimal_set": bool(nos[best]),
            "near_optimal_size": int(nos.sum()), "delta": spec.delta, "alpha": spec.alpha}
