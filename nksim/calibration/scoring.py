"""Score the trial registry: every target and held-out row against a model's simulations (``nksim score``).

Each protocol of the registry is simulated **once**: the patients of every group its rows need,
``replicates`` virtual trials, run to the last day any of its rows needs
(:func:`~nksim.calibration.registry.simulation_end_day`; assessment days kept up to that day).
Each row then gets its simulated median and 90 % predictive interval
(:func:`~nksim.calibration.registry.predictive_interval`: for a share with a published ``n``, the
interval of trials of n patients -- under posterior draws the beta-binomial that keeps the spread
between draws; else the quantiles over virtual trials) and a verdict:

* **held-out rows** by their ``check``, fixed before any fit (``calibration/data/trials/README.md``):
  ``binomial_90`` the published k/n lies in the 90 % predictive interval; ``factor`` the simulated
  median lies within the stated factor of ``value`` (of ``value_range``: in ``[lo / f, hi * f]``);
  ``range`` in ``bounds``; ``at_least`` / ``at_most`` / ``above`` / ``below`` against ``bound``;
  ``higher`` / ``lower`` the simulated median above / below that of the row ``versus`` (simulated
  too, whatever its role). A row whose simulated median is undefined (no simulated patient counts,
  e.g. no expander) **fails**, as the rules say;
* **targets** (no ``check``): the observed k/n (or value) lies in the 90 % predictive interval
  (the done-when of issue 26: every target inside its interval);
* **context rows** (and rows without a simulated counterpart): not scored.

::

    from nksim.calibration import score_registry, scores_summary
    ds = score_registry("default", replicates=50)      # an xarray Dataset, dim 'observation'
    print(scores_summary(ds)); scores_table(ds); scores_markdown(ds)

Deterministic for a seed, whatever ``workers``: protocol ``P`` is simulated with the seed
:func:`derived_seed` ``(seed, "protocol:P")`` and row ``R``'s bootstrap uses
``derived_seed(seed, "observation:R")`` (a :class:`numpy.random.SeedSequence` of the seed and a
SHA-256 of the name: independent of the order and of which other rows are scored).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_seed, show
from ..errors import NksimInputError
from .registry import ROLES, Registry, TrialObservation, load_registry, observed_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import xarray

    from ..parameters import ParameterSet

#: Lattice overrides by resolution name, over the same 16 mm marrow region. ``calibration``: the
#: calibration simulator's 5 x 5 voxels of 3.2 mm (same whole-body scale and NK agent numbers as the
#: default 40 x 40 voxels of 0.4 mm; ``benchmarks/calibration_resolution.py``); ``default``: the model's own.
RESOLUTIONS: dict[str, dict[str, float]] = {
    "calibration": {"lattice.side": 5, "lattice.voxel_side": 3200.0},
    "default": {},
}
#: The central predictive interval every row is scored with.
LEVEL = 0.90
#: Bootstrap trials per share interval (:func:`~nksim.calibration.registry.share_interval`).
DRAWS = 4000
DEFAULT_SEED = 20261130
#: Verdict texts (variable ``verdict``).
AGREES, DISAGREES, NOT_SCORED = "agrees", "disagrees", "not scored"


# ----------------------------------------------------------------------------- seeds
def derived_seed(seed: int, name: str) -> int:
    """A seed in ``[0, 2**64)`` for ``name`` (e.g. ``"protocol:bachanova2014_il2dt"``) derived from ``seed``.

    ``SeedSequence(seed, spawn_key=(the first two little-endian 32-bit words of SHA-256(name)))``:
    stable across runs, platforms and Python versions (no ``hash()``), independent of order.
    """
    words = np.frombuffer(hashlib.sha256(name.encode("utf-8")).digest()[:8], dtype="<u4")
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(int(w) for w in words))
    return int(ss.generate_state(1, np.uint64)[0])


# ----------------------------------------------------------------------------- verdicts
def observed_value(obs: TrialObservation) -> float:
    """The observed number as a float (k/n, or ``value``; NaN for a range or a direction)."""
    if obs.k is not None and obs.n is not None:
        return obs.k / obs.n
    return math.nan if obs.value is None else float(obs.value)


def target_rule(obs: TrialObservation) -> str:
    """The rule a target is scored by (targets have no ``check``): inside its 90 % predictive interval."""
    size = f" for a trial of {obs.n} patients" if obs.is_share and obs.n is not None else ""
    return (f"Observed {observed_text(obs)} inside the simulated {100 * LEVEL:.0f} % predictive interval{size} "
            "(calibration target).")


_EPS = 1e-12


def verdict(obs: TrialObservation, median: float, lo: float, hi: float, *,
            versus_median: float | None = None) -> tuple[bool | None, str]:
    """Score one row from its simulated ``median`` and predictive interval ``[lo, hi]``.

    Returns ``(agrees, note)``: ``agrees`` is True/False, or None when the row is not scored
    (context rows, rows without a simulated counterpart); ``note`` says why when it is not
    plainly the rule. Held-out rows follow their ``check`` (module docstring); targets are
    inside when the observed k/n or value (a reported range: overlapping it) lies in
    ``[lo, hi]``. An undefined (NaN) simulated median fails a check, as the declared rules say.
    """
    if not obs.has_counterpart:
        return None, "no simulated counterpart in nksim"
    if obs.role == "context":
        return None, "context row (not scored)"
    if obs.role == "target" or obs.check == "binomial_90":
        if math.isnan(lo) or math.isnan(hi):
            return False, "no simulated patient counts (undefined interval)"
        if obs.value_range is not None and obs.k is None:
            a, b = obs.value_range
            return bool(b >= lo - _EPS and a <= hi + _EPS), "reported range overlapping the interval"
        x = observed_value(obs)
        if math.isnan(x):
            return None, "no observed number to place in the interval"
        return bool(lo - _EPS <= x <= hi + _EPS), ""
    check = obs.check
    if check == "none":
        return None, "no check"
    if check in ("higher", "lower"):
        if versus_median is None or math.isnan(versus_median):
            return False, f"the simulated median of '{obs.versus}' is undefined"
    if math.isnan(median):
        return False, "no simulated patient counts (undefined median): fails by the rule"
    if check == "factor":
        f = float(obs.factor)
        a, b = obs.value_range if obs.value_range is not None else (obs.value, obs.value)
        return bool(a / f * (1 - _EPS) <= median <= b * f * (1 + _EPS)), ""
    if check == "range":
        a, b = obs.bounds
        return bool(a - _EPS <= median <= b + _EPS), ""
    if check == "at_least":
        return bool(median >= obs.bound - _EPS), ""
    if check == "at_most":
        return bool(median <= obs.bound + _EPS), ""
    if check == "above":
        return bool(median > obs.bound), ""
    if check == "below":
        return bool(median < obs.bound), ""
    if check == "higher":
        return bool(median > versus_median), f"versus {versus_median:.4g}"
    if check == "lower":
        return bool(median < versus_median), f"versus {versus_median:.4g}"
    raise AssertionError(check)  # pragma: no cover - the registry refuses any other check


#: Confidence level of the interval of a simulated median (:func:`~nksim.calibration.registry.median_interval`).
MEDIAN_LEVEL = 0.95
#: Held-out checks decided on the simulated median (over virtual trials).
MEDIAN_CHECKS = ("factor", "range", "at_least", "at_most", "above", "below", "higher", "lower")


def _rule_holds(obs: TrialObservation, value: float) -> bool:
    """The declared median-based rule of ``obs`` at a simulated median ``value`` (not ``higher``/``lower``)."""
    return bool(verdict(obs, value, value, value)[0])


def monte_carlo(obs: TrialObservation, median_lo: float, median_hi: float, *,
                versus_interval: tuple[float, float] | None = None) -> bool | None:
    """Whether a held-out row's verdict is *Monte Carlo*: it could turn with more virtual trials.

    For a check decided on the simulated median (:data:`MEDIAN_CHECKS`): the rule's verdict is not the same
    everywhere in the median's :data:`MEDIAN_LEVEL` confidence interval ``[median_lo, median_hi]`` (the rule is
    evaluated at both ends and on both sides of every bound of the rule inside the interval, so a degenerate
    interval at an inclusive bound, e.g. a share of exactly 0 against ``at_most 0``, is settled). For
    ``higher`` / ``lower``: the comparison with the ``versus`` row is not decided by the two intervals (some pair
    of values from them gives each answer). None when not assessed: targets and ``binomial_90`` rows (their Monte
    Carlo error is that of a tail probability: ``calibration/joint/tail_check.py``), other checks, an undefined
    median. The declared rule (the point median) still gives the verdict; this says how sure the simulation is of it.
    """
    if obs.role != "held_out" or obs.check not in MEDIAN_CHECKS or math.isnan(median_lo) or math.isnan(median_hi):
        return None
    lo, hi = median_lo, median_hi
    if obs.check in ("higher", "lower"):
        if versus_interval is None or any(math.isnan(v) for v in versus_interval):
            return None
        vlo, vhi = versus_interval
        if obs.check == "lower":      # x < y always (hi < vlo) or never (lo >= vhi): settled
            return not (hi < vlo or lo >= vhi)
        return not (lo > vhi or hi <= vlo)
    if obs.check == "factor":
        a, b = obs.value_range if obs.value_range is not None else (obs.value, obs.value)
        bounds = (a / float(obs.factor), b * float(obs.factor))
    elif obs.check == "range":
        bounds = tuple(obs.bounds)
    else:
        bounds = (obs.bound,)
    points = [lo, hi]
    for t in bounds:
        if lo <= t <= hi:
            points += [t] + [x for x in (math.nextafter(t, -math.inf), math.nextafter(t, math.inf)) if lo <= x <= hi]
            points += [t * (1 - 2 * _EPS), t * (1 + 2 * _EPS)]    # either side of the rule's own tolerance
    points = [x for x in points if lo <= x <= hi]
    return len({_rule_holds(obs, x) for x in points}) > 1


# ----------------------------------------------------------------------------- arguments
def _roles(roles: Any, source: str = "score_registry") -> tuple[str, ...]:
    if isinstance(roles, str) or not isinstance(roles, Sequence) or not roles:
        raise NksimInputError(f"roles must be a non-empty list of role names, got {show(roles)}; allowed: "
                              f"{', '.join(ROLES)}", source=source, key="roles")
    for r in roles:
        if r not in ROLES:
            raise NksimInputError(f"unknown role {show(r)}; allowed: {', '.join(ROLES)}", source=source,
                                  key="roles")
    return tuple(dict.fromkeys(roles))


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise NksimInputError(f"{name} must be an integer >= 1, got {show(value)}", source="score_registry", key=name)
    return int(value)


def resolution_params(params: ParameterSet | str | Path, resolution: str = "calibration",
                      lattice_overrides: Mapping[str, float] | None = None) -> ParameterSet:
    """``params`` (a set, a name in models/ or a TOML path) at ``resolution`` (:data:`RESOLUTIONS`) plus overrides."""
    from ..parameters import ParameterSet, load_parameters

    if resolution not in RESOLUTIONS:
        raise NksimInputError(f"unknown resolution {show(resolution)}; allowed: {', '.join(RESOLUTIONS)}",
                              source="score_registry", key="resolution")
    p = params if isinstance(params, ParameterSet) else load_parameters(params)
    overrides = {**RESOLUTIONS[resolution], **(lattice_overrides or {})}
    return p.with_values(overrides, origin=f"{p.origin} at the '{resolution}' resolution") if overrides else p


def _needed(registry: Registry, roles: tuple[str, ...]) -> tuple[list[TrialObservation], list[TrialObservation]]:
    """(rows to report, rows to simulate: those with a counterpart plus every ``versus`` they name)."""
    rows = [o for o in registry.observations if o.role in roles]
    sim = {o.name: o for o in rows if o.has_counterpart}
    for o in rows:
        if o.versus is not None and o.has_counterpart:
            ref = registry.observation(o.versus)
            sim.setdefault(ref.name, ref)
    order = [o for o in registry.observations if o.name in sim]  # file order
    return rows, order


def protocol_run(name: str, observations: Sequence[TrialObservation]):
    """The shipped protocol ``name`` cut to what ``observations`` need: (protocol, patient ids).

    Run to :func:`~nksim.calibration.registry.simulation_end_day` (never beyond the protocol's
    own end), assessment days kept up to that day (the end day if none is), no snapshots; the
    patients of every group the rows name (all of them if one row has no group).
    """
    from ..protocol import load_protocol
    from .registry import simulation_end_day

    proto = load_protocol(name)
    end = min(float(proto.end_day), float(simulation_end_day(observations)))
    days = tuple(d for d in proto.assessment_days if d <= end) or (end,)
    proto = replace(proto, end_day=end, assessment_days=days, snapshot_days=())
    groups = {o.group for o in observations}
    ids = [p.id for p in proto.patients if None in groups or p.group in groups]
    return proto, ids


# ----------------------------------------------------------------------------- scoring
def score_registry(params: ParameterSet | str | Path | Sequence[ParameterSet] = "default",
                   registry: Registry | str | Path | None = None, *,
                   roles: Sequence[str] = ("target", "held_out"), replicates: int = 50, seed: int = DEFAULT_SEED,
                   resolution: str = "calibration", lattice_overrides: Mapping[str, float] | None = None,
                   workers: int = 1, progress: bool = True, draws: int = DRAWS) -> xarray.Dataset:
    """Simulate every protocol the registry's rows of ``roles`` need (once each) and score the rows.

    Parameters
    ----------
    params:
        The model: a parameter set, a name in ``models/`` or a TOML path; run at ``resolution``
        (:data:`RESOLUTIONS`, default the calibration simulator's) plus ``lattice_overrides``.
        Or a sequence of parameter sets (posterior draws): virtual trial ``r`` of every protocol is
        then simulated with draw ``r mod len(params)`` (seed ``derived_seed(protocol seed,
        "replicate:r")``), so the intervals are posterior predictive ones.
    registry:
        A :class:`~nksim.calibration.registry.Registry`, a registry folder, or None (the shipped one).
    roles:
        Which rows to report: any of ``target``, ``held_out``, ``context`` (context rows are
        reported with their simulated values and not scored).
    replicates:
        Virtual trials per protocol (each: the protocol's virtual patients of the groups needed).
    seed:
        An integer in ``[0, 2**64)``; per-protocol and per-row seeds derive from it (:func:`derived_seed`).
    workers:
        Threads running simulations; the result does not depend on it.
    progress:
        A progress bar (tqdm) over protocols.
    draws:
        Bootstrap trials per share interval.

    Returns
    -------
    xarray.Dataset
        dim ``observation`` (the row names, registry file order): text variables ``trial``,
        ``arm``, ``protocol``, ``group``, ``role``, ``observable``, ``observed``, ``unit``, ``check``,
        ``rule``, ``grade``, ``verdict``, ``note``, ``versus``; ``observed_value``,
        ``simulated_median``, ``simulated_lo``, ``simulated_hi`` (in ``unit``), ``agrees`` (1/0,
        NaN = not scored), ``defined_trials``; provenance attributes. See :func:`scores_table`.
    """
    import xarray as xr

    from ..simulate import simulate_cohort
    from .registry import median_interval, predictive_interval, simulated_per_trial

    seed = check_seed(seed, source="score_registry", key="seed")
    replicates = _count(replicates, "replicates")
    workers = _count(workers, "workers")
    draws = _count(draws, "draws")
    roles = _roles(roles)
    if registry is None or isinstance(registry, (str, Path)):
        registry = load_registry(registry)
    elif not isinstance(registry, Registry):
        raise NksimInputError(f"registry must be a Registry, a folder or None, got {show(registry)}",
                              source="score_registry", key="registry")
    draws_mode = not isinstance(params, (ParameterSetType(), str, Path))
    if draws_mode:
        sets = list(params)
        if not sets or not all(isinstance(q, ParameterSetType()) for q in sets):
            raise NksimInputError("params must be a parameter set, a name, a path or a non-empty sequence of "
                                  "parameter sets (posterior draws)", source="score_registry", key="params")
        sets = [resolution_params(q, resolution, lattice_overrides) for q in sets]
        p = sets[0]
    else:
        p = resolution_params(params, resolution, lattice_overrides)
        sets = [p]
    rows, to_simulate = _needed(registry, roles)
    if not rows:
        raise NksimInputError(f"the registry has no row of role(s) {', '.join(roles)}", source=registry.directory,
                              key="roles")
    by_protocol: dict[str, list[TrialObservation]] = {}
    for o in to_simulate:
        by_protocol.setdefault(o.protocol, []).append(o)

    t0 = time.perf_counter()
    sim: dict[str, tuple[float, float, float, int, float, float]] = {}
    protocol_seeds: dict[str, int] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(by_protocol), desc="scoring the registry", unit="protocol", dynamic_ncols=True)
    try:
        for name, obs in by_protocol.items():
            if bar is not None:
                bar.set_postfix_str(name, refresh=True)
            proto, ids = protocol_run(name, obs)
            protocol_seeds[name] = derived_seed(seed, f"protocol:{name}")
            if draws_mode:
                ds = simulate_draws(sets, proto, replicates, protocol_seeds[name], ids, workers)
            else:
                ds = simulate_cohort(p, proto, replicates=replicates, seed=protocol_seeds[name], patients=ids,
                                     workers=workers)
            for o in obs:
                med, lo, hi = predictive_interval(o, ds, level=LEVEL, draws=draws,
                                                  seed=derived_seed(seed, f"observation:{o.name}"),
                                                  between_trials=draws_mode)
                per_trial = simulated_per_trial(o, ds)
                defined = int(np.sum(~np.isnan(per_trial)))
                mlo, mhi = ((math.nan, math.nan) if o.is_share and o.n is not None
                            else median_interval(per_trial, MEDIAN_LEVEL))
                sim[o.name] = (med, lo, hi, defined, mlo, mhi)
            del ds
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0

    nan6 = (math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    cols: dict[str, list] = {k: [] for k in (
        "trial", "arm", "protocol", "group", "role", "observable", "observed", "unit", "check", "rule", "grade",
        "verdict", "note", "versus", "observed_value", "simulated_median", "simulated_lo", "simulated_hi", "agrees",
        "defined_trials", "median_lo", "median_hi", "monte_carlo")}
    for o in rows:
        med, lo, hi, defined, mlo, mhi = sim.get(o.name, nan6)
        vs = sim.get(o.versus, nan6) if o.versus is not None else None
        agrees, note = verdict(o, med, lo, hi, versus_median=None if vs is None else vs[0])
        mc = (None if agrees is None else
              monte_carlo(o, mlo, mhi, versus_interval=None if vs is None else (vs[4], vs[5])))
        rule = o.rule or (target_rule(o) if o.role == "target" else "")
        unit = o.unit or _observable_unit(o)
        for k, v in (("trial", o.trial), ("arm", o.arm), ("protocol", o.protocol), ("group", o.group or ""),
                     ("role", o.role), ("observable", o.observable), ("observed", observed_text(o)), ("unit", unit),
                     ("check", o.check if o.role != "target" else "inside_90"), ("rule", rule), ("grade", o.grade),
                     ("verdict", NOT_SCORED if agrees is None else (AGREES if agrees else DISAGREES)),
                     ("note", note), ("versus", o.versus or ""), ("observed_value", observed_value(o)),
                     ("simulated_median", med), ("simulated_lo", lo), ("simulated_hi", hi),
                     ("agrees", math.nan if agrees is None else float(agrees)), ("defined_trials", defined),
                     ("median_lo", mlo), ("median_hi", mhi), ("monte_carlo", math.nan if mc is None else float(mc))):
            cols[k].append(v)

    text = {"long_name": ""}

    def s(name: str, long_name: str) -> tuple:
        return ("observation", np.array(cols[name], dtype=object), {**text, "long_name": long_name})

    value_note = "in the row's unit (variable 'unit'; UDUNITS-2: 1 for shares, uL-1, day, percent)"
    data = {
        "trial": s("trial", "trial (author year)"),
        "arm": s("arm", "trial arm (registry file stem)"),
        "protocol": s("protocol", "shipped protocol simulated (experiments/protocols/)"),
        "group": s("group", "patient group of the protocol ('' = all patients)"),
        "role": s("role", "role in calibration: target | held_out | context"),
        "observable": s("observable", "observable (nksim.calibration.registry.OBSERVABLES)"),
        "observed": s("observed", "the published number as text (k/n, value unit, range or 'direction')"),
        "unit": s("unit", "UDUNITS-2 unit of observed_value and the simulated values"),
        "check": s("check", "scoring check (held-out rows: the declared check; targets: inside_90)"),
        "rule": s("rule", "the scoring rule in words, fixed before any fit"),
        "grade": s("grade", "evidence grade of the observation (A primary .. D derived)"),
        "verdict": s("verdict", "agrees | disagrees | not scored"),
        "note": s("note", "why a row is not scored, or how it was decided"),
        "versus": s("versus", "the observation compared with (checks higher/lower)"),
        "observed_value": ("observation", np.array(cols["observed_value"], float),
                           {"long_name": f"the published number (k/n for shares; NaN for a range or a direction), "
                                         f"{value_note}"}),
        "simulated_median": ("observation", np.array(cols["simulated_median"], float),
                             {"long_name": f"simulated median of the observable (over virtual trials; shares with a "
                                           f"published n: over bootstrap trials of n patients), {value_note}"}),
        "simulated_lo": ("observation", np.array(cols["simulated_lo"], float),
                         {"long_name": f"lower end of the simulated {100 * LEVEL:.0f} % predictive interval, "
                                       f"{value_note}"}),
        "simulated_hi": ("observation", np.array(cols["simulated_hi"], float),
                         {"long_name": f"upper end of the simulated {100 * LEVEL:.0f} % predictive interval, "
                                       f"{value_note}"}),
        "agrees": ("observation", np.array(cols["agrees"], float),
                   {"units": "1", "long_name": "1 = agrees with the row's rule, 0 = disagrees, NaN = not scored"}),
        "defined_trials": ("observation", np.array(cols["defined_trials"], np.int64),
                           {"units": "1", "long_name": "virtual trials in which the observable is defined (some "
                                                       "simulated patient counts)"}),
        "median_lo": ("observation", np.array(cols["median_lo"], float),
                      {"long_name": f"lower end of the {100 * MEDIAN_LEVEL:.0f} % confidence interval of the "
                                    f"simulated median over the virtual trials (order statistics; NaN for shares "
                                    f"with a published n), {value_note}"}),
        "median_hi": ("observation", np.array(cols["median_hi"], float),
                      {"long_name": f"upper end of that confidence interval, {value_note}"}),
        "monte_carlo": ("observation", np.array(cols["monte_carlo"], float),
                        {"units": "1", "long_name": "1 = the verdict of a median-based held-out check could turn "
                                                    "with more virtual trials (monte_carlo()), 0 = settled, NaN = "
                                                    "not assessed (targets, binomial_90 rows, rows not scored)"}),
    }
    out = xr.Dataset(data, coords={"observation": ("observation", np.array([o.name for o in rows], dtype=object),
                                                   {"long_name": "registry observation name"})})
    out.attrs = {
        **registry_run_attrs(
            "nksim trial registry scored against a model",
            f"each protocol simulated once ({replicates} virtual trials, '{resolution}' resolution); targets "
            f"scored inside their {100 * LEVEL:.0f} % predictive interval, held-out rows by their declared "
            "check (calibration/data/trials/README.md)",
            p, resolution=resolution, lattice_overrides=lattice_overrides, registry=registry),
        "split_declared": registry.split_declared,
        "posterior_draws": len(sets) if draws_mode else 0,
        "roles": " ".join(roles),
        "seed": int(seed),
        "replicates": int(replicates),
        "level": float(LEVEL),
        "bootstrap_draws": int(draws),
        "protocol_seeds": json.dumps(protocol_seeds),
        "workers": int(workers),
        "wall_time_s": float(seconds),
    }
    return out


def ParameterSetType() -> type:  # noqa: N802 - a deferred import of the class
    """:class:`nksim.parameters.ParameterSet` (imported on first use)."""
    from ..parameters import ParameterSet

    return ParameterSet


def simulate_draws(sets: Sequence[ParameterSet], proto, replicates: int, seed: int, ids, workers: int):
    """Virtual trial ``r`` with ``sets[r % len(sets)]``, joined along ``replicate`` (posterior predictive)."""
    import xarray as xr

    from ..simulate import simulate_cohort

    def one(r: int):
        return simulate_cohort(sets[r % len(sets)], proto, replicates=1, seed=derived_seed(seed, f"replicate:{r}"),
                               patients=ids, workers=1)

    from ..threads import ordered_thread_map

    parts = ordered_thread_map(one, range(replicates), workers)
    ds = xr.concat(parts, dim="replicate", data_vars="minimal", coords="minimal", compat="override",
                   combine_attrs="override")
    return ds.assign_coords(replicate=np.arange(replicates))


def _observable_unit(o: TrialObservation) -> str:
    from .registry import OBSERVABLES

    return OBSERVABLES[o.observable].unit


# ----------------------------------------------------------------------------- tables
def _fmt(v: float, unit: str) -> str:
    if math.isnan(v):
        return "none"
    if math.isinf(v):
        return "not reached" if v > 0 else "-inf"
    if unit == "1":  # folds: 3 significant digits, trailing zeros kept (1.00, not 1)
        return f"{v:#.3g}" if 1e-3 <= abs(v) < 1000 else f"{v:.3g}"
    a = abs(v)
    if a == 0:
        return "0"
    if unit == "day":
        return f"{v:.0f}"
    return f"{v:.2g}" if a >= 1000 or a < 0.01 else (f"{v:.0f}" if a >= 10 else f"{v:.2g}")


def simulated_text(median: float, lo: float, hi: float, unit: str, *, share: bool = False) -> str:
    """``median (lo-hi) unit``; shares in percent."""
    if math.isnan(median):
        return "none"
    if share:
        return f"{100 * median:.0f} % ({100 * lo:.0f}-{100 * hi:.0f} %)"
    u = "" if unit in ("", "1") else f" {unit}"
    return f"{_fmt(median, unit)} ({_fmt(lo, unit)}-{_fmt(hi, unit)}){u}"


def scores_table(ds: xarray.Dataset) -> pandas.DataFrame:
    """One row per observation (the Dataset as a pandas DataFrame, plus ``simulated`` as text)."""
    from .registry import OBSERVABLES

    df = ds.to_dataframe().reset_index()
    df["simulated"] = [simulated_text(m, lo, hi, u, share=OBSERVABLES[ob].kind == "share")
                       for m, lo, hi, u, ob in zip(df["simulated_median"], df["simulated_lo"], df["simulated_hi"],
                                                   df["unit"], df["observable"])]
    return df


def scores_summary(ds: xarray.Dataset) -> str:
    """``k of n scored held-out rows agree (from T trials); targets inside their 90 % interval: k of n``."""
    role = ds["role"].values.astype(str)
    agrees = ds["agrees"].values
    parts = []
    for r, text in (("held_out", "scored held-out rows agree"), ("target", None)):
        m = (role == r) & ~np.isnan(agrees)
        if not (role == r).any():
            continue
        k, n = int(np.sum(agrees[m] == 1)), int(m.sum())
        if r == "held_out":
            trials = len(set(ds["trial"].values[m].astype(str)))
            share = f" ({100 * k / n:.0f} %)" if n else ""
            mc = int(np.nansum(ds["monte_carlo"].values[m] == 1)) if "monte_carlo" in ds else 0
            mc_text = f" ({mc} verdict{'s' if mc != 1 else ''} Monte Carlo)" if mc else ""
            parts.append(f"{k} of {n} {text}{share}, from {trials} trials{mc_text}")
        else:
            parts.append(f"targets inside their {100 * float(ds.attrs.get('level', LEVEL)):.0f} % interval: "
                         f"{k} of {n}")
    return "; ".join(parts) or "no scored row"


_HEAD = ("observation", "trial", "role", "observed", "simulated: median (90 % interval)", "check", "verdict")


def _cells(df) -> list[tuple[str, ...]]:
    mc = df["monte_carlo"].to_numpy() == 1 if "monte_carlo" in df else np.zeros(len(df), bool)
    return [(r.observation, r.trial, r.role, r.observed, r.simulated, r.check,
             r.verdict + (f" ({r.note})" if r.note and r.verdict != AGREES else "") + (" *Monte Carlo*" if m else ""))
            for r, m in zip(df.itertuples(), mc)]


def scores_text(ds: xarray.Dataset, widths: Sequence[int] = (38, 26, 8, 14, 30, 11, 60)) -> str:
    """A plain-text table of the scores (one line per row)."""
    body = _cells(scores_table(ds))
    w = [min(max(len(_HEAD[i]), *(len(b[i]) for b in body)), cap) for i, cap in enumerate(widths)]

    def line(cells):
        return " | ".join((c if len(c) <= n else c[: n - 1] + "~").ljust(n) for c, n in zip(cells, w)).rstrip()

    return "\n".join([line(_HEAD), "-+-".join("-" * n for n in w), *(line(b) for b in body)])


def scores_markdown(ds: xarray.Dataset) -> str:
    """The scores as a Markdown table (the rule of each row in its own column)."""
    df = scores_table(ds)
    lines = ["| observation | trial | role | observed | simulated: median (90 % interval) | check | verdict | rule |",
             "|---|---|---|---|---|---|---|---|"]
    for c, rule in zip(_cells(df), df["rule"]):
        cells = [f"`{c[0]}`", *c[1:], str(rule)]
        lines.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    return "\n".join(lines)


def scores_csv(ds: xarray.Dataset) -> str:
    """The scores as CSV text (the columns of :func:`scores_table`)."""
    cols = ["observation", "trial", "arm", "protocol", "group", "role", "observable", "observed", "observed_value",
            "unit", "simulated_median", "simulated_lo", "simulated_hi", "simulated", "defined_trials", "check",
            "versus", "verdict", "agrees", "note", "rule", "grade"]
    df = scores_table(ds)
    cols += [c for c in ("median_lo", "median_hi", "monte_carlo") if c in df]  # older score files lack them
    return df[cols].to_csv(index=False, lineterminator="\n")


def registry_run_attrs(title: str, comment: str, p: ParameterSet, *, resolution: str,
                       lattice_overrides: Mapping[str, float] | None, registry: Registry) -> dict[str, Any]:
    """The CF and provenance attributes every registry output carries (scores, the registry screen).

    ``comment`` is completed with the parameter set's name and status; the rest names the nksim
    version and commit, the parameter set (file, digest, values), the resolution with its lattice
    overrides and the registry folder.
    """
    from ..output import tool_attrs

    base = tool_attrs()
    return {
        "Conventions": base["Conventions"],
        "title": title,
        **{k: base[k] for k in ("institution", "source", "history", "references")},
        "comment": f"{comment}; parameter set '{p.name}': {p.status}",
        "nksim_version": base["nksim_version"],
        "git_commit": base["git_commit"],
        "parameter_set": p.name,
        "parameter_status": p.status,
        "parameter_file": p.origin,
        "parameter_digest": p.digest(),
        "parameters": p.as_json(),
        "resolution": resolution,
        "lattice_overrides": json.dumps({**RESOLUTIONS[resolution], **(lattice_overrides or {})}, sort_keys=True),
        "registry": str(registry.directory),
    }
