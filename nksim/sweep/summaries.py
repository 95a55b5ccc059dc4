"""Per-scenario summaries of a sweep store, paired contrasts, the ranking table and netCDF export.

Clock (argument ``clock``; attribute ``clock`` of every summary, and named in the ``long_name``
of every time-to-progression metric): day 0 of time to progression, of the landmark and of the
day-28 blast change.

* ``"infusion"``: the first NK infusion (the store's time axis);
* ``"lymphodepletion"``: the start of lymphodepletion, i.e. the scenario's first lymphodepleting
  dose (regimen ``"none"``: the first infusion). Time to progression is the stored value plus
  the scenario's ``clock_offset`` (coordinate: days from its first lymphodepleting dose to its
  first infusion), censored at ``end_day + clock_offset``.

The default is the plan's clock (spec key ``sweep.clock``, default ``"infusion"``; attribute
``assessment_clock``), which also fixed the days on which responses were assessed: only a sweep
run with ``clock = "lymphodepletion"`` assesses every scenario on the same days after
lymphodepletion. Summarising an infusion-clock store on the lymphodepletion clock moves the time
origin but not the assessments (a scenario with a longer gap is still first assessed later after
Flu/Cy); the ``comment`` attribute says so.

Metrics (per scenario, pooled over draws x patients x replicates):

===================== ============ ===========================================================
``p_pd_first``        1            fraction with progressive disease (PD) at the first assessment
``p_cr_first``        1            share of virtual patients in complete remission (CR) at the
                                   first assessment
``pfs_landmark``      1            Kaplan-Meier probability of being progression-free at the
                                   landmark day (``landmark_day``, default 270 = 9 months)
``rmst_landmark``     day          restricted mean progression-free time up to the landmark
                                   (mean of min(time to progression, landmark))
``median_pfs``        day          Kaplan-Meier median progression-free time (inf: not reached)
``peak_chimerism_nk`` percent      median over simulations of the peak donor chimerism of blood NK
``peak_chimerism_pbmc`` percent    same, of blood lymphocytes
``donor_nk_auc``      uL-1 day     median over simulations of the area under donor NK per uL blood
                                   from day 0 to ``end_day`` (trapezoid rule, daily values)
``p_best``            1            probability of being best: share of parameter draws in which
                                   the scenario has the best ``rank_by`` metric (computed per draw
                                   over patients x replicates; ties shared equally) among the
                                   scenarios of its ``comparison_group``; sums to 1 per group
===================== ============ ===========================================================

Progression-free time is ``time_to_progression`` (first day on or after the first assessment at
the PD threshold), censored at ``end_day`` (plus the clock offset) when NaN; Kaplan-Meier
estimates come from :mod:`nksim.observables` (the arithmetic of :func:`scipy.stats.ecdf` on
:class:`scipy.stats.CensoredData`, bit for bit).

Uncertainty, for every metric but ``p_best``:

* ``<metric>_mc_se``: Monte-Carlo standard error over replicates -- the metric computed for each
  replicate (pooled over draws and patients), standard deviation / sqrt(replicates); NaN with
  one replicate or when a per-replicate value is infinite;
* ``<metric>_draw_lo`` / ``_draw_hi``: 5 % and 95 % quantiles (nearest rank) over parameter
  draws of the metric computed per draw (pooled over patients and replicates); NaN with one draw.

Paired contrasts (common random numbers): for each scenario and each outcome of
:data:`CONTRASTS`, ``<contrast>_diff`` is the mean over simulations of the paired difference
(this scenario minus its ``reference`` scenario, same draw, patient and replicate),
``<contrast>_diff_se`` its standard error (sd of the per-simulation differences / sqrt(n)) and
``<contrast>_diff_lo`` / ``_diff_hi`` the 95 % confidence interval, mean -/+ 1.96 SE (a
simulation whose difference is NaN is left out):

========================== ============ =======================================================
``pfs_landmark``           1            progression-free at the landmark (0/1)
``p_pd_first``             1            PD at the first assessment (0/1)
``p_cr_first``             1            CR at the first assessment (0/1)
``rmst_landmark``          day          min(time to progression, landmark)
``blast_change_d28``       percent      marrow blasts on day 28 (on the summary's clock) minus
                                        baseline (first simulated day), percentage points
``peak_chimerism_nk_d28``  percent      peak donor chimerism of blood NK, days 0-28 after the
                                        first infusion
``auc_chimerism_nk_d28``   percent day  area under it, days 0-28 (trapezoid rule, daily values)
``peak_chimerism_pbmc_d28`` percent     same for blood lymphocytes
``auc_chimerism_pbmc_d28`` percent day  same for blood lymphocytes
========================== ============ =======================================================

NK kills are not among them: the sweep store holds no kill counts (``plan["time_series"]``).
The standard error treats the draw x patient x replicate simulations as independent; outcomes
that do not vary between replicates of a patient (blood chimerism is deterministic given the
patient and draw) then get intervals that shrink with replicates although the information is
per patient and draw -- read them as Monte-Carlo, not population, uncertainty.
All censoring happens at ``end_day`` >= landmark, so the landmark indicator and the restricted
mean are exact and the paired difference of PFS at the landmark equals the difference of the
Kaplan-Meier estimates.

References (``reference=None``): scenarios are grouped by their swept model-parameter values
(``comparison_group``; one group when no parameter is swept); in each group the reference is the
scenario with the trial's schedule (regimen "trial", gap 7, interval 7, dose split 50/50, total
1.5e7 kg-1, expanded NK), else the one with the spec's ``[baseline]`` schedule, else the group's
best by ``rank_by``. An explicit ``reference`` is the reference of every scenario.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..observables import RESPONSE_CODES, km_median, km_survival

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan
    from .store import SweepStore  # imported where used: METRICS etc. load without zarr

#: Clocks of :func:`summarize` (day 0 of time to progression and of the landmark).
CLOCKS: tuple[str, ...] = ("lymphodepletion", "infusion")
_CLOCK_ORIGIN = {"infusion": "the first NK infusion", "lymphodepletion": "the start of lymphodepletion"}

#: metric -> (units, long_name, higher_is_better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "p_pd_first": ("1", "probability of progressive disease at the first assessment", False),
    "p_cr_first": ("1", "share of virtual patients in complete remission at the first assessment", True),
    "pfs_landmark": ("1", "Kaplan-Meier probability of being progression-free at the landmark day", True),
    "rmst_landmark": ("day", "restricted mean progression-free time up to the landmark day", True),
    "median_pfs": ("day", "Kaplan-Meier median progression-free time (inf: not reached)", True),
    "peak_chimerism_nk": ("percent", "median over simulations of peak donor chimerism of blood NK cells", True),
    "peak_chimerism_pbmc": ("percent", "median over simulations of peak donor chimerism of blood lymphocytes", True),
    "donor_nk_auc": ("uL-1 day", "median over simulations of the AUC of donor NK per uL blood, day 0 to end", True),
}
#: Metrics and contrasts that count time on the summary's clock (their long_name names it).
CLOCK_METRICS = frozenset({"pfs_landmark", "rmst_landmark", "median_pfs", "blast_change_d28"})

#: Day of the blast change (on the summary's clock) and window of the chimerism contrasts (days
#: since the first infusion).
BLAST_DAY = 28.0
CHIMERISM_WINDOW = (0.0, 28.0)


def _rmst(ttp: np.ndarray, landmark: float) -> np.ndarray:
    t = np.asarray(ttp, dtype=float)
    return np.where(np.isnan(t), landmark, np.minimum(t, landmark))


#: contrast -> (units, what is compared, per-simulation outcome from (outcomes, landmark))
CONTRASTS: dict[str, tuple[str, str, Callable[[dict[str, np.ndarray], float], np.ndarray]]] = {
    "pfs_landmark": ("1", "progression-free at the landmark day (0/1)",
                     lambda o, lm: (~(o["ttp"] <= lm)).astype(float)),  # NaN (censored at end >= landmark) -> 1
    "p_pd_first": ("1", "progressive disease at the first assessment (0/1)", lambda o, lm: o["pd_first"]),
    "p_cr_first": ("1", "complete remission at the first assessment (0/1)", lambda o, lm: o["cr_first"]),
    "rmst_landmark": ("day", "restricted mean progression-free time up to the landmark day",
                      lambda o, lm: _rmst(o["ttp"], lm)),
    "blast_change_d28": ("percent", f"change of marrow blasts from baseline to day {BLAST_DAY:g} "
                         "(percentage points)", lambda o, lm: o["blast_change"]),
    "peak_chimerism_nk_d28": ("percent", "peak donor chimerism of blood NK cells, days 0-28 after the first "
                              "infusion", lambda o, lm: o["peak_nk_28"]),
    "auc_chimerism_nk_d28": ("percent day", "area under donor chimerism of blood NK cells, days 0-28 after the "
                             "first infusion", lambda o, lm: o["auc_nk_28"]),
    "peak_chimerism_pbmc_d28": ("percent", "peak donor chimerism of blood lymphocytes, days 0-28 after the first "
                                "infusion", lambda o, lm: o["peak_pbmc_28"]),
    "auc_chimerism_pbmc_d28": ("percent day", "area under donor chimerism of blood lymphocytes, days 0-28 after "
                               "the first infusion", lambda o, lm: o["auc_pbmc_28"]),
}

#: z of the two-sided 95 % normal confidence interval of the paired differences.
Z95 = 1.96


def _clock_text(clock: str) -> str:
    return f"time since {_CLOCK_ORIGIN[clock]}"


def clock_offsets(plan: Plan, clock: str) -> np.ndarray:
    """Per scenario, what to add to a day since the first infusion to get a day on ``clock``."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {list(CLOCKS)}, got {clock!r}")
    if clock == "infusion":
        return np.zeros(plan.n_scenarios)
    return np.array([plan.clock_offset(s) for s in range(plan.n_scenarios)], dtype=float)


# --- per-simulation outcomes -----------------------------------------------------------------
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # noqa: NPY201  numpy < 2 (still supported) has only trapz


def per_simulation(store: SweepStore, s: int, offset: float = 0.0) -> dict[str, np.ndarray]:
    """Outcomes of every simulation of scenario ``s``, arrays of shape (draw, patient, replicate).

    ``offset``: days added to the time since the first infusion to count on the summary's clock
    (:func:`clock_offsets`); it shifts ``ttp`` and the day of ``blast_change``.
    """
    time = store.coord("time")
    resp = store.read("response", s)
    out = {
        "pd_first": (resp[..., 0] == RESPONSE_CODES["PD"]).astype(float),
        "cr_first": (resp[..., 0] == RESPONSE_CODES["CR"]).astype(float),
        "ttp": store.read("time_to_progression", s) + float(offset),
    }
    window = (time >= CHIMERISM_WINDOW[0]) & (time <= CHIMERISM_WINDOW[1])
    with np.errstate(all="ignore"):
        for key, var in (("nk", "donor_chimerism_nk"), ("pbmc", "donor_chimerism_pbmc")):
            c = store.read(var, s).astype(float)
            out[f"peak_{key}"] = np.nanmax(c, axis=-1)
            out[f"peak_{key}_28"] = np.nanmax(c[..., window], axis=-1)
            out[f"auc_{key}_28"] = _trapezoid(c[..., window], time[window], axis=-1)
    after = time >= 0
    nk = store.read("donor_nk_blood", s)[..., after].astype(float)
    out["auc"] = _trapezoid(nk, time[after], axis=-1)
    start = float(store.plan["scenarios"][s]["protocol"]["protocol"]["start_day"])
    i0, i28 = np.searchsorted(time, [start, BLAST_DAY - float(offset)])
    shape = out["ttp"].shape
    if time[i0] == start and i28 < time.size and time[i28] == BLAST_DAY - float(offset) and i28 >= i0:
        blast = store.read("marrow_blast_pct", s)
        out["blast_change"] = blast[..., i28].astype(float) - blast[..., i0].astype(float)
    else:  # day 28 on this clock is outside the simulated window
        out["blast_change"] = np.full(shape, np.nan)
    return out


def _metric_functions(end_day: float, landmark: float) -> dict[str, Callable[[dict[str, np.ndarray]], float]]:
    return {
        "p_pd_first": lambda o: float(np.mean(o["pd_first"])),
        "p_cr_first": lambda o: float(np.mean(o["cr_first"])),
        "pfs_landmark": lambda o: km_survival(o["ttp"], end_day, landmark),
        "rmst_landmark": lambda o: float(np.mean(_rmst(o["ttp"], landmark))),
        "median_pfs": lambda o: km_median(o["ttp"], end_day),
        "peak_chimerism_nk": lambda o: float(np.median(o["peak_nk"])),
        "peak_chimerism_pbmc": lambda o: float(np.median(o["peak_pbmc"])),
        "donor_nk_auc": lambda o: float(np.median(o["auc"])),
    }


def _subset(o: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in o.items()}


def scenario_metrics(o: dict[str, np.ndarray], end_day: float, landmark: float) -> dict[str, float]:
    """Every metric with its Monte-Carlo SE and draw interval for one scenario's outcomes.

    ``end_day``: the censoring day of NaN ``o["ttp"]`` on the same clock as ``ttp``.
    """
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


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, standard error and 95 % CI (mean -/+ 1.96 SE) of the paired differences ``a - b``.

    ``a`` and ``b`` hold one value per simulation (same draw, patient and replicate at the same
    position); pairs with a NaN difference are left out. SE = sd(differences, ddof=1) / sqrt(n),
    NaN with fewer than two pairs; identical inputs give exactly 0 with a zero-width interval.
    """
    diff = (np.asarray(a, float) - np.asarray(b, float)).ravel()
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return (float("nan"),) * 4
    mean = float(np.mean(diff))
    se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return mean, se, mean - Z95 * se, mean + Z95 * se


def probability_best(per_draw: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Share of draws (columns) in which each scenario (row) has the best value; ties shared equally.

    NaN is never best; draws where every value is NaN are left out. Rows sum to 1 (if any draw
    counts).
    """
    v = np.asarray(per_draw, dtype=float)
    v = v if higher_is_better else -v
    wins = np.zeros(v.shape[0])
    counted = 0
    for col in v.T:
        ok = ~np.isnan(col)
        if not ok.any():
            continue
        best = col == np.max(col[ok])
        wins[best] += 1.0 / best.sum()
        counted += 1
    return wins / counted if counted else np.full(v.shape[0], np.nan)


# --- references ------------------------------------------------------------------------------
def trial_schedule() -> dict[str, Any]:
    """The trial's schedule (Ahmadvand 2023 group 2) as :func:`~nksim.sweep.scenario.effective_schedule` gives it."""
    from .scenario import effective_schedule

    return effective_schedule({}, {}, "<trial schedule>", "")


def _same_schedule(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if any(str(a[k]) != str(b[k]) for k in ("regimen", "nk_product")):
        return False
    if str(a.get("cytokine", "none")) != str(b.get("cytokine", "none")):
        return False
    if str(a.get("cytokine_course", "first")) != str(b.get("cytokine_course", "first")):
        return False
    if any(not np.isclose(float(a[k]), float(b[k]), rtol=1e-9, atol=0.0) for k in ("gap", "interval", "total_dose")):
        return False
    sa, sb = [float(x) for x in a["dose_split"]], [float(x) for x in b["dose_split"]]
    return len(sa) == len(sb) and np.allclose(sa, sb, rtol=0.0, atol=1e-9)


def _baseline_schedule(store: SweepStore) -> dict[str, Any] | None:
    """The schedule of the spec's ``[baseline]`` (from the spec recorded in the store), or None."""
    from ..errors import NksimInputError
    from .scenario import effective_schedule

    try:
        raw = json.loads(store.attrs.get("spec", "{}") or "{}")
        return effective_schedule(dict(raw.get("baseline", {}) or {}), {}, "<baseline>", "")
    except (NksimInputError, KeyError, TypeError, ValueError, AttributeError):
        return None


def comparison_groups(plan: Plan, scenarios: np.ndarray) -> np.ndarray:
    """Group number of each of ``scenarios``: scenarios with the same swept model-parameter values share one."""
    keys: dict[str, int] = {}
    out = []
    for s in scenarios:
        key = json.dumps(sorted(plan["scenarios"][int(s)]["parameters"].items()))
        out.append(keys.setdefault(key, len(keys)))
    return np.array(out, dtype=np.int64)


def default_references(store: SweepStore, ds: xr.Dataset, groups: np.ndarray,
                       rank_by: str) -> tuple[np.ndarray, list[str]]:
    """Reference scenario of each scenario of ``ds`` (see module docstring) and, per group, why."""
    plan = store.plan
    scen = ds["scenario"].values.astype(int)
    targets = [("the trial's schedule", trial_schedule()), ("the spec's baseline schedule", _baseline_schedule(store))]
    refs = np.empty(scen.size, dtype=np.int64)
    why: list[str] = []
    for g in np.unique(groups):
        pos = np.flatnonzero(groups == g)
        ref, reason = None, ""
        for what, target in targets:
            if target is None:
                continue
            hits = [int(scen[p]) for p in pos if _same_schedule(plan["scenarios"][int(scen[p])]["schedule"], target)]
            if hits:
                ref, reason = hits[0], what
                break
        if ref is None:
            ref = int(scen[pos[rank_order(ds.isel(scenario=pos), rank_by)[0]]])
            reason = f"best by {rank_by}"
        refs[pos] = ref
        why.append(f"#{ref}: {reason}")
    return refs, why


# --- the summary -----------------------------------------------------------------------------
def summarize(store: SweepStore | str | Path, reference: int | None = None,
              rank_by: str = "pfs_landmark", clock: str | None = None) -> xr.Dataset:
    """Per-scenario metrics and paired contrasts of a store (complete scenarios only) as an xarray Dataset.

    ``reference``: scenario index for the paired contrasts of every scenario (default: per
    comparison group, the trial's schedule, else the spec's baseline, else the best by
    ``rank_by``; see the module docstring). ``clock``: ``"lymphodepletion"`` or ``"infusion"``
    (default: the plan's clock). Scenarios whose batches are not all written are left out (see
    ``attrs['scenarios_incomplete']``). The store is verified first (:meth:`SweepStore.check`):
    a damaged store raises :class:`~nksim.sweep.store.StoreDamagedError` rather than give numbers.
    """
    from .plan import population_text
    from .store import SweepStore

    if not isinstance(store, SweepStore):
        store = SweepStore.open_existing(store)
    if rank_by not in METRICS:
        raise ValueError(f"rank_by must be one of {list(METRICS)}, got {rank_by!r}")
    plan = store.plan
    clock = plan.clock if clock is None else clock
    offsets = clock_offsets(plan, clock)
    end_day, landmark = float(plan["end_day"]), float(plan["landmark_day"])
    done = store.check()  # verified; batches finished later by a running writer are left for the next call
    complete = np.flatnonzero(done.reshape(plan.n_scenarios, plan.batches_per_scenario).all(axis=1))
    if reference is not None and int(reference) not in set(complete.tolist()):
        raise ValueError(f"reference scenario {reference} is not a complete scenario of the store")
    rows: dict[str, list[float]] = {}
    outcomes: dict[int, dict[str, np.ndarray]] = {}
    per_draw_rank: list[np.ndarray] = []
    for s in complete:
        s = int(s)
        o = per_simulation(store, s, offsets[s])
        end_s = end_day + offsets[s]  # censoring day on the clock
        for k, v in scenario_metrics(o, end_s, landmark).items():
            rows.setdefault(k, []).append(v)
        f = _metric_functions(end_s, landmark)[rank_by]
        per_draw_rank.append(np.array([f(_subset(o, d)) for d in range(o["ttp"].shape[0])]))
        outcomes[s] = {name: np.asarray(fn(o, landmark), dtype=float) for name, (_, _, fn) in CONTRASTS.items()}
    ds = xr.Dataset(coords={"scenario": ("scenario", complete.astype(np.int64), {"long_name": "scenario index"})})
    cytokine = ["cytokine"] if any("cytokine" in sc["schedule"] for sc in plan["scenarios"]) else []
    cytokine += ["cytokine_course"] if any("cytokine_course" in sc["schedule"] for sc in plan["scenarios"]) else []
    for name in ["label", "regimen", "nk_product", *cytokine, "gap", "interval", "dose_split", "n_infusions",
                 "first_dose_pct", "total_dose", "start_day", *[k for k in plan["swept"] if "." in k]]:
        arr = store.array(name)
        values = np.asarray(store.coord(name))[complete]
        if values.dtype.kind in "TU":  # numpy StringDType from zarr -> object strings (netCDF char arrays)
            values = values.astype(object)
        ds.coords[name] = ("scenario", values, dict(arr.attrs))
    ds.coords["clock_offset"] = ("scenario", np.array([plan.clock_offset(int(s)) for s in complete], dtype=float),
                                 {"units": "day", "long_name": "days from the start of lymphodepletion (first "
                                  "lymphodepleting dose) to the first infusion (0: no lymphodepletion)"})
    groups = comparison_groups(plan, complete)
    ds.coords["comparison_group"] = ("scenario", groups, {
        "units": "1", "long_name": "scenarios with the same swept model-parameter values (references and "
        "probabilities of being best are within a group)"})
    when = f"; {_clock_text(clock)}"
    for name, (units, long_name, _) in METRICS.items():
        if name in CLOCK_METRICS:
            long_name += when
        ds[name] = ("scenario", np.array(rows.get(name, []), dtype=float), {"units": units, "long_name": long_name})
        for suffix, what in [("_mc_se", "Monte-Carlo standard error over replicates"),
                             ("_draw_lo", "5% quantile over parameter draws"),
                             ("_draw_hi", "95% quantile over parameter draws")]:
            ds[name + suffix] = ("scenario", np.array(rows.get(name + suffix, []), dtype=float),
                                 {"units": units, "long_name": f"{long_name}: {what}"})
    why: list[str] = []
    if complete.size:
        p_best = np.full(complete.size, np.nan)
        higher = METRICS[rank_by][2]
        for g in np.unique(groups):
            pos = np.flatnonzero(groups == g)
            p_best[pos] = probability_best(np.array([per_draw_rank[p] for p in pos]), higher)
        ds["p_best"] = ("scenario", p_best, {
            "units": "1", "long_name": f"probability of being best by {rank_by}: share of parameter draws in which "
            "the scenario has the best value (per draw over patients x replicates; ties shared) in its "
            "comparison group" + (when if rank_by in CLOCK_METRICS else "")})
        if reference is None:
            refs, why = default_references(store, ds, groups, rank_by)
        else:
            refs, why = np.full(complete.size, int(reference), dtype=np.int64), [f"#{int(reference)}: given"]
        ds["reference"] = ("scenario", refs, {"units": "1", "long_name": "reference scenario of the paired contrasts"})
        for name, (units, what, _) in CONTRASTS.items():
            stats = np.array([paired_difference(outcomes[int(s)][name], outcomes[int(r)][name])
                              for s, r in zip(complete, refs)]).reshape(-1, 4)
            desc = what + (when if name in CLOCK_METRICS else "")
            ds[f"{name}_diff"] = ("scenario", stats[:, 0], {
                "units": units, "long_name": f"paired difference (this scenario minus its reference, same draw, "
                f"patient and replicate: common random numbers), mean over simulations, of: {desc}"})
            ds[f"{name}_diff_se"] = ("scenario", stats[:, 1], {
                "units": units, "long_name": f"standard error of the paired difference of: {desc}"})
            ds[f"{name}_diff_lo"] = ("scenario", stats[:, 2], {
                "units": units, "long_name": f"lower bound of the 95% confidence interval (mean - 1.96 SE) of the "
                f"paired difference of: {desc}"})
            ds[f"{name}_diff_hi"] = ("scenario", stats[:, 3], {
                "units": units, "long_name": f"upper bound of the 95% confidence interval (mean + 1.96 SE) of the "
                f"paired difference of: {desc}"})
    refs_used = sorted({int(r) for r in ds["reference"].values}) if "reference" in ds else []
    comment = f"time to progression, landmark and day-{BLAST_DAY:g} blast change count from {_CLOCK_ORIGIN[clock]}"
    if clock != plan.clock:
        comment += (f"; responses were assessed on days since {_CLOCK_ORIGIN[plan.clock]} (the sweep's clock), "
                    "so scenarios with different gaps were not assessed on the same days after "
                    + ("lymphodepletion" if plan.clock == "infusion" else "the first infusion"))
    ds.attrs.update({
        "Conventions": "CF-1.8",
        "title": f"summary of nksim sweep '{plan['name']}'",
        "comment": comment,
        "sweep_name": plan["name"],
        "nksim_version": store.attrs["nksim_version"],
        "plan_digest": plan.digest,
        "parameter_set": store.attrs.get("parameter_set", ""),
        "parameter_status": store.attrs.get("parameter_status", ""),
        "population": population_text(plan.population),
        "clock": clock,
        "assessment_clock": plan.clock,
        "landmark_day": landmark,
        "end_day": end_day,
        "rank_by": rank_by,
        "reference_scenario": refs_used[0] if refs_used else -1,
        "reference_scenarios": refs_used or [-1],
        "reference_rule": "; ".join(why),
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
    """The scenarios ranked by ``rank_by`` (best first), with uncertainty and contrasts, as text."""
    if rank_by not in METRICS:
        raise ValueError(f"rank_by must be one of {list(METRICS)}, got {rank_by!r}")
    a = ds.attrs
    clock = a.get("clock", "infusion")
    lines = [f"sweep '{a['sweep_name']}' "
             f"(plan {a['plan_digest']}, parameters '{a['parameter_set']}': {a['parameter_status']})",
             *([f"cohort: {a['population']}"] if "population" in a else []),
             f"{a['scenarios_total'] - a['scenarios_incomplete']}/{a['scenarios_total']} scenarios complete; "
             f"{a['simulations_per_scenario']} simulations each ({a['draws']} draws x {a['patients']} patients x "
             f"{a['replicates']} replicates); landmark day {a['landmark_day']:g} since {_CLOCK_ORIGIN[clock]} "
             f"(clock '{clock}', assessments on clock '{a.get('assessment_clock', 'infusion')}'); ranked by "
             f"{rank_by} (ties: {', '.join(k for k in TIE_BREAK if k != rank_by)}, then scenario index)"]
    if a["scenarios_incomplete"]:
        lines.append(f"note: {a['scenarios_incomplete']} scenarios are not finished and are left out; "
                     "re-run `nksim sweep` to complete them")
    if ds.sizes.get("scenario", 0) == 0:
        lines.append("no complete scenario yet")
        return "\n".join(lines)
    lines.append(f"paired contrasts vs reference {a.get('reference_rule', '#' + str(a['reference_scenario']))}; "
                 f"P(best) by {a.get('rank_by', 'pfs_landmark')} over parameter draws")
    order = rank_order(ds, rank_by)
    if top is not None:
        order = order[:top]
    lm = int(a["landmark_day"])
    refs = a.get("reference_scenarios", [a["reference_scenario"]])
    vs = f"#{refs[0]}" if len(refs) == 1 else "ref"
    header = (f"{'rank':>4} {'#':>4}  {'P(PD@1st) ±se':>14} {'PFS@d' + str(lm) + ' ±se':>14} {'[draws 5-95%]':>13} "
              f"{'ΔPFS vs ' + vs + ' [95% CI]':>22} {'ΔRMST d [95% CI]':>20} {'P(best)':>7} {'medPFS':>7} "
              f"{'peakNK%':>8} {'AUC':>8}  scenario")
    lines += ["", header]
    ref_of = ds["reference"].values if "reference" in ds else np.full(ds.sizes["scenario"], a["reference_scenario"])
    for rank, i in enumerate(order, 1):
        r = ds.isel(scenario=int(i))
        pd = f"{_fmt(float(r.p_pd_first), True)} ±{_fmt(float(r.p_pd_first_mc_se), True)}"
        pfs = f"{_fmt(float(r.pfs_landmark), True)} ±{_fmt(float(r.pfs_landmark_mc_se), True)}"
        dr = f"[{_fmt(float(r.pfs_landmark_draw_lo), True)}-{_fmt(float(r.pfs_landmark_draw_hi), True)}]"
        if int(r.scenario) == int(ref_of[int(i)]):
            diff = rmst = "reference"
        else:
            diff = (f"{100 * float(r.pfs_landmark_diff):+.0f}% [{100 * float(r.pfs_landmark_diff_lo):+.0f}, "
                    f"{100 * float(r.pfs_landmark_diff_hi):+.0f}]")
            rmst = (f"{float(r.rmst_landmark_diff):+.0f} [{float(r.rmst_landmark_diff_lo):+.0f}, "
                    f"{float(r.rmst_landmark_diff_hi):+.0f}]")
            if len(refs) > 1:
                diff = f"#{int(ref_of[int(i)])}: {diff}"
        pb = _fmt(float(r.p_best), True) if "p_best" in r else "n/a"
        lines.append(f"{rank:>4} {int(r.scenario):>4}  {pd:>14} {pfs:>14} {dr:>13} {diff:>22} {rmst:>20} {pb:>7} "
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
                  rank_by: str = "pfs_landmark", clock: str | None = None) -> Path:
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
        return write_netcdf(summarize(path, rank_by=rank_by, clock=clock), out, overwrite=overwrite)
    ds = zio.netcdf_ready(open_sweep(path).drop_vars(CHECKSUMS, errors="ignore"))
    try:
        return write_netcdf(ds, out, overwrite=overwrite)  # removes its temporary file on any failure
    except (RuntimeError, ValueError) as exc:  # e.g. a chunk that cannot be decoded (Zstd: RuntimeError)
        if isinstance(exc, NksimInputError):
            raise
        raise StoreDamagedError(f"export to {out} failed while reading the store ({type(exc).__name__}: {exc}); "
                                f"{out} was not written or changed", source=path) from None
