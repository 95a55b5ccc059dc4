"""``nksim twin``: condition the population on one patient's series, then compare her next infusions.

1. **Bank** (the population predictive): ``draws x patients`` virtual patients, each a posterior
   draw with its own random effects (:class:`nksim.optimise.bank.Bank`), simulated under the
   schedule given so far up to the decision day.
2. **Condition**: each virtual patient is weighted by the likelihood of the patient's measurements
   up to the decision day (:mod:`nksim.twin.likelihood`); reported: the effective sample size and a
   prior-data conflict check (the share of synthetic patients drawn from the bank whose data are
   less likely under the bank than hers: a small share flags an atypical patient); the weighted
   intervals of every drawn parameter and random effect against the bank's.
3. **Decide**: ``resample`` virtual patients are drawn by the weights (systematic resampling) and
   each is simulated under every candidate (the given schedule alone, and each day x dose x donor
   of the next infusion) to the horizon. A virtual patient keeps its random streams under every
   candidate, so its trajectory up to the decision day is the conditioned one and the candidates'
   differences are paired (common random numbers). Per candidate: the mean progression-free time
   (from the start of lymphodepletion to the horizon) with its interval, the 90 % predictive
   interval, the probability of being progression-free at the landmark, the day-28 blast change, the
   probability of being best for this patient, and the set within delta of the best (multiple
   comparisons with the best). When every candidate is in that set, the report says the data cannot
   separate them.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import quantities as Q
from .._version import __version__
from ..engine import layout as L
from ..errors import NksimInputError, NksimWarning
from ..observables import response_thresholds
from ..optimise.bank import Bank
from ..optimise.problem import Clock, ModelProblem, unit_outcome
from ..optimise.select import cluster_mean_se, interval, near_optimal_set
from ..protocol import population_patient
from ..sweep.plan import population_text
from ..sweep.scenario import build_protocol
from ..threads import ordered_thread_map
from .likelihood import (
    effective_sample_size,
    log_likelihood,
    mixture_log_likelihood,
    simulate_measurement,
    systematic_resample,
    weighted_quantiles,
)
from .smc import SmcResult, bank_particles, tempered_smc
from .spec import TwinSpec, load_spec

#: Below this prior-predictive share the patient is flagged as atypical for the population.
ATYPICAL_P = 0.01
#: Below this effective sample size the bank is too thin for the patient (say so; enlarge the bank).
MIN_ESS = 20.0


@dataclass
class TwinResult:
    """The result Dataset and the observations used."""

    dataset: xr.Dataset
    observations: list[Any]


def _observations(spec: TwinSpec) -> tuple[list[Any], list[Any]]:
    from ..calibration.data import load_series

    offset = spec.given.lymphodepletion_offset()
    pts = load_series(spec.patient_file, start_day=-offset)
    mine = [p for p in pts if p.patient == spec.patient_id]
    if not mine:
        ids = sorted({p.patient for p in pts})
        raise NksimInputError(f"no rows of patient '{spec.patient_id}'; the file has {ids[:10]}",
                              source=spec.patient_file, key="patient")
    used = [p for p in mine if p.day <= spec.decision_day]
    later = [p for p in mine if p.day > spec.decision_day]
    if not used:
        raise NksimInputError(f"no measurement on or before the decision day {spec.decision_day:g}",
                              source=spec.patient_file, key="day")
    return used, later


def _bank(spec: TwinSpec, params: Any) -> Bank:
    from ..sweep.draws import parameter_draws

    seed = int(np.random.SeedSequence([spec.seed, 1]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    draws = parameter_draws(params, spec.bank_draws, spec.draws_from, seed, spec.source)
    if len(draws) < spec.bank_draws:
        draws = [draws[0]] * spec.bank_draws
    return Bank("twin", seed, tuple(draws), spec.bank_patients, 1)


def _params(base: Any, spec: TwinSpec, bank: Bank) -> list[Any]:
    return [base.with_values({**bank.draws[d], **spec.parameters}, origin=f"twin bank draw {d}")
            for d in range(bank.n_draws)]


def _simulate_so_far(spec: TwinSpec, bank: Bank, params: list[Any], obs: list[Any], workers: int,
                     units: range | None = None) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Simulated true values at the observations (units x observations) and each unit's random effects.

    ``units``: the units to simulate (default: all of the bank).
    """
    from ..simulate import run_one

    proto = _so_far_protocol(spec, bank.patient_ids)

    def one(u: int) -> tuple[np.ndarray, dict[str, float]]:
        d, pid, r = bank.unit(u)
        run = run_one(params[d], proto, population_patient(pid, spec.population), bank.seed, r)
        vals = np.array([Q.observe(o.quantity, run.rec)[int(round(o.day - proto.start_day))] for o in obs])
        return vals, dict(run.effects.as_dict())

    rows = ordered_thread_map(one, units if units is not None else range(bank.n_units), workers)
    return np.stack([r[0] for r in rows]), [r[1] for r in rows]


def grow_bank(spec: TwinSpec, base: Any, bank: Bank, params: list[Any], obs: list[Any], truth: np.ndarray,
              effects: list[dict[str, float]], ll: np.ndarray, workers: int
              ) -> tuple[Bank, list[Any], np.ndarray, list[dict[str, float]], np.ndarray]:
    """Add posterior draws (doubling, at most ``spec.bank_max_draws``) while the effective sample size is thin.

    New draws come from their own seed and get new patient ids; the bank's earlier units keep their
    ids, streams and simulations. Every unit is still a sample of the population predictive with
    equal prior weight, so the weights stay the likelihoods. Returns the grown bank and its arrays.
    """
    from ..sweep.draws import parameter_draws

    k = 0
    while effective_sample_size(ll - ll.max()) < MIN_ESS and bank.n_draws < spec.bank_max_draws:
        k += 1
        add = min(bank.n_draws, spec.bank_max_draws - bank.n_draws)
        seed = int(np.random.SeedSequence([spec.seed, 10 + k]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        new = parameter_draws(base, add, spec.draws_from, seed, spec.source)
        if len(new) < add:  # the model's values only: a larger bank only adds patients of the same draw
            new = [new[0]] * add
        old_units = bank.n_units
        bank = Bank(bank.name, bank.seed, bank.draws + tuple(new), bank.patients, bank.replicates)
        params = params + _params(base, spec, Bank("new", 0, tuple(new), 1, 1))
        t_new, e_new = _simulate_so_far(spec, bank, params, obs, workers, range(old_units, bank.n_units))
        truth = np.concatenate([truth, t_new])
        effects = effects + e_new
        ll = np.concatenate([ll, _loglik(obs, t_new, spec)])
    return bank, params, truth, effects, ll


def _loglik(obs: list[Any], truth: np.ndarray, spec: TwinSpec) -> np.ndarray:
    ll = np.zeros(truth.shape[0])
    for j, o in enumerate(obs):
        ll += log_likelihood(o.quantity, o.value, o.below_lod, o.lod, truth[:, j], spec.assay)
    return ll


def conflict_share(obs: list[Any], truth: np.ndarray, spec: TwinSpec, ll_obs: float, rng: np.random.Generator,
                   n: int = 200, groups: np.ndarray | None = None) -> float:
    """A prior-predictive p-value of the patient's data (small: the patient is atypical).

    The share of synthetic patients (bank units with simulated measurements) whose data are at most
    as likely under the bank as the patient's. A synthetic patient's own unit, and with ``groups``
    (the posterior draw of each unit) every unit of its draw, is left out of its mixture: the
    patient's true state and parameters are not in the bank either, and counting the units that
    share them would make every synthetic patient look more typical than she can.
    """
    picks = rng.choice(truth.shape[0], size=min(n, truth.shape[0]), replace=False)
    mix = []
    for v in picks:
        synth = []
        for j, o in enumerate(obs):
            val, below = simulate_measurement(o.quantity, truth[v:v + 1, j], o.lod, spec.assay, rng)
            synth.append((o.quantity, float(val[0]), bool(below[0]), o.lod))
        ll = np.zeros(truth.shape[0])
        for j, (q, val, below, lod) in enumerate(synth):
            ll += log_likelihood(q, val, below, lod, truth[:, j], spec.assay)
        keep = np.ones(ll.shape[0], dtype=bool) if groups is None else groups != groups[v]
        keep[v] = False
        mix.append(mixture_log_likelihood(ll[keep]))
    return float(np.mean(np.array(mix) <= ll_obs))


@dataclass
class Conditioned:
    """The virtual patients conditioned on her series: the weighted bank, or the ABC-SMC's particles.

    Unit ``i`` is posterior draw ``draw[i]`` simulated with the streams ``ident[i]`` (``(seed,
    patient id, replicate)``) and, when ``z`` is given, the random effects of its deviates
    ``z[i]`` (:func:`nksim.patients.effects_from_normals`) instead of those its stream draws.
    """

    method: str  # "bank" (importance weights) or "abc-smc"
    draw: np.ndarray  # int (n,)
    ident: list[tuple[int, str, int]]
    z: np.ndarray | None  # (n, k) or None
    effects: list[dict[str, float]]
    truth: np.ndarray  # (n, observations): simulated true values at the measurements
    log_w: np.ndarray  # (n,): log weights (0 for the particles)
    population: Mapping[str, Any] = field(default_factory=dict)  # the patients' (TwinSpec.population)

    @classmethod
    def from_bank(cls, bank: Bank, truth: np.ndarray, effects: list[dict[str, float]], log_w: np.ndarray,
                  population: Mapping[str, Any] | None = None) -> Conditioned:
        """The bank with its importance weights."""
        return cls("bank", bank.draw_of_unit, _identities(bank), None, effects, truth, log_w, dict(population or {}))

    def run(self, i: int, params: list[Any], proto: Any) -> Any:
        """:func:`nksim.simulate.run_one` of unit ``i`` under ``proto``."""
        from ..simulate import run_one

        d = int(self.draw[i])
        seed, pid, r = self.ident[i]
        eff = None if self.z is None else _effects(params[d], self.z[i], self.population)
        return run_one(params[d], proto, population_patient(pid, self.population), seed, r, effects=eff)


def _effects(params: Any, z: np.ndarray, population: Mapping[str, Any]) -> Any:
    """The random effects of deviates ``z`` for a patient of ``population`` (her fixed covariates and status)."""
    from ..patients import effects_from_normals

    pat = population_patient("", population)
    return effects_from_normals(params, z, pat.covariates, disease=pat.disease)


def _identities(bank: Bank) -> list[tuple[int, str, int]]:
    """``(seed, patient id, replicate)`` of every unit: what fixes its streams."""
    return [(bank.seed, *bank.unit(u)[1:]) for u in range(bank.n_units)]


def _so_far_protocol(spec: TwinSpec, patient_ids: Any) -> Any:
    pdict = spec.given.protocol_dict(name="twin-so-far", end_day=spec.decision_day,
                                     assessment_days=[spec.decision_day])
    return build_protocol(pdict, patient_ids, f"{spec.source} [twin.given]")


def smc_seed(spec: TwinSpec) -> int:
    """Seed of the ABC-SMC particles' simulation streams (in [0, 2**63)), spawned from the spec's."""
    return int(np.random.SeedSequence([spec.seed, 5]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def patient_smc(spec: TwinSpec, bank: Bank, params: list[Any], obs: list[Any], truth: np.ndarray, ll: np.ndarray,
                workers: int) -> tuple[Conditioned, SmcResult]:
    """The patient-level ABC-SMC (:mod:`nksim.twin.smc`) started from the bank, its prior sample.

    The pool of posterior draws is the bank's; a particle's streams are the bank unit's until it
    first moves, then ``(smc_seed(spec), "smc<key>", 0)``; its random effects are those of its
    deviates. Proposals come from ``SeedSequence([spec.seed, 3])``: the result does not depend on
    ``workers``.
    """
    from ..patients import N_EFFECT_NORMALS
    from ..simulate import run_one
    from ..streams import stream_generator

    seed = smc_seed(spec)
    proto = _so_far_protocol(spec, ("smc",))
    days = [int(round(o.day - proto.start_day)) for o in obs]

    def z_of(idx: np.ndarray) -> np.ndarray:
        return np.array([stream_generator(bank.seed, *bank.unit(int(u))[1:], "patient").standard_normal(
            N_EFFECT_NORMALS) for u in idx])

    def simulate(d: np.ndarray, z: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        def one(i: int) -> np.ndarray:
            run = run_one(params[int(d[i])], proto, population_patient(f"smc{int(keys[i]):08d}", spec.population),
                          seed, 0, effects=_effects(params[int(d[i])], z[i], spec.population))
            return np.array([Q.observe(o.quantity, run.rec)[day] for o, day in zip(obs, days, strict=True)])

        vals = np.stack(ordered_thread_map(one, range(len(keys)), workers))
        return _loglik(obs, vals, spec), vals, [(seed, f"smc{int(k):08d}", 0) for k in keys]

    start = bank_particles(bank.draw_of_unit, z_of, _identities(bank), ll, truth)
    res = tempered_smc(start, bank.n_draws, simulate, spec.smc, np.random.default_rng(
        np.random.SeedSequence([spec.seed, 3])))
    part = res.particles
    effects = [_effects(params[int(d)], z, spec.population).as_dict() for d, z in zip(part.draw, part.z, strict=True)]
    cond = Conditioned("abc-smc", part.draw, part.ident, part.z, effects, part.values, np.zeros(len(part.draw)),
                       dict(spec.population))
    return cond, res


def _decide(spec: TwinSpec, cond: Conditioned, params: list[Any], picks: np.ndarray, workers: int, *,
            candidates: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Outcomes (candidates x resampled units) under every candidate, each unique unit simulated once.

    ``candidates``: indices into ``spec.candidates()`` (default: all).
    """
    clock = Clock(spec.assessment_days, spec.landmark_day, spec.horizon)
    cands = spec.candidates()
    if candidates is not None:
        cands = [cands[c] for c in candidates]
    uniq, inverse = np.unique(picks, return_inverse=True)
    # the optimiser's recipe for a candidate's protocol on the lymphodepletion clock (protocol, offset, first day)
    ids = tuple(sorted({cond.ident[int(u)][1] for u in uniq}))
    setups = [ModelProblem(params[0], clock).protocol(c, ids) for c in cands]

    def one(task: tuple[int, int]) -> tuple[float, float, float, float]:
        ci, u = task
        proto, offset, first = setups[ci]
        d = int(cond.draw[int(u)])
        run = cond.run(int(u), params, proto)
        time = proto.start_day + np.arange(run.rec.shape[0], dtype=float)
        blasts = run.rec[:, L.R.marrow_blast_pct]
        pft, pfs, cr = unit_outcome(time, blasts, response_thresholds(params[d]), first, offset, clock)
        i28 = int(round(28.0 - proto.start_day))
        return pft, pfs, cr, float(blasts[i28] - blasts[0])

    tasks = [(ci, u) for ci in range(len(cands)) for u in uniq]
    flat = np.array(ordered_thread_map(one, tasks, workers), dtype=float).reshape(len(cands), len(uniq), 4)
    full = flat[:, inverse, :]
    return {"pft": full[..., 0], "pfs": full[..., 1], "cr": full[..., 2], "blast_change_d28": full[..., 3]}


def twin(spec: TwinSpec | str | Path, out: str | Path | None = None, *, workers: int = 1,
         overrides: tuple[str, ...] = (), figures: bool = True) -> TwinResult:
    """Condition on the patient and compare the candidates (module docstring); write into ``out`` if given."""
    from ..parameters import load_parameters

    if not isinstance(spec, TwinSpec):
        spec = load_spec(spec, overrides)
    obs, later = _observations(spec)
    if later:
        warnings.warn(f"{spec.patient_file}: {len(later)} measurement(s) after the decision day "
                      f"{spec.decision_day:g} are not used (not known when deciding)", NksimWarning, stacklevel=2)
    base = load_parameters(spec.model_path)
    bank = _bank(spec, base)
    params = _params(base, spec, bank)
    truth, effects = _simulate_so_far(spec, bank, params, obs, workers)
    ll = _loglik(obs, truth, spec)
    first_units = bank.n_units
    bank, params, truth, effects, ll = grow_bank(spec, base, bank, params, obs, truth, effects, ll, workers)
    log_w = ll - np.max(ll)
    ess = effective_sample_size(log_w)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 2]))
    p_conflict = conflict_share(obs, truth, spec, mixture_log_likelihood(ll), rng, groups=bank.draw_of_unit)
    cond = Conditioned.from_bank(bank, truth, effects, log_w, spec.population)
    smc = None
    if spec.smc_mode == "always" or (spec.smc_mode == "auto" and ess < MIN_ESS):
        cond, smc = patient_smc(spec, bank, params, obs, truth, ll, workers)
        if not smc.converged:
            warnings.warn(f"{spec.source}: the patient-level ABC-SMC stopped at temperature {smc.betas[-1]:.3g} < 1 "
                          f"after [twin.smc] max_stages = {spec.smc.max_stages}: its particles are not yet her "
                          "posterior (raise max_stages)", NksimWarning, stacklevel=2)
    picks = systematic_resample(cond.log_w, spec.resample, rng)
    outcomes = _decide(spec, cond, params, picks, workers)
    ds = _dataset(spec, bank, obs, truth, effects, cond, ess, p_conflict, picks, outcomes, smc)
    ds.attrs["bank_units_first"] = first_units
    if out is not None:
        from ..io.lock import output_lock
        from ..io.netcdf import write_netcdf
        from .report import write_report

        out = Path(out)
        with output_lock(out, "nksim twin"):
            write_netcdf(ds, out / "twin.nc", overwrite=True)
            write_report(ds, spec, out, figures=figures)
    return TwinResult(ds, obs)


def _dataset(spec, bank, obs, truth, effects, cond, ess, p_conflict, picks, outcomes, smc) -> xr.Dataset:
    cands = spec.candidates()
    n = len(picks)
    # resampled virtual patients are iid draws from the conditioned population: one "draw" each
    rs_bank = Bank("resampled", 0, tuple({} for _ in range(n)), 1, 1)
    y = outcomes["pft"]
    mean, se = cluster_mean_se(y, rs_bank)
    lo, hi = interval(mean, se, rs_bank, 1 - spec.alpha)
    best = int(np.argmax(mean))
    d = y - y[best]
    dm, dse = cluster_mean_se(d, rs_bank)
    dlo, dhi = interval(dm, dse, rs_bank, 1 - spec.alpha)
    within = near_optimal_set(y, rs_bank, spec.delta, spec.alpha)
    top = y >= y.max(axis=0, keepdims=True) - 1e-9
    p_best = (top / top.sum(axis=0, keepdims=True)).mean(axis=1)
    pred = np.quantile(y, [0.05, 0.95], axis=1)
    # parameters: prior (bank) vs conditioned intervals of every drawn value and random effect
    names = sorted({k for dr in bank.draws for k in dr})

    def values(draw: np.ndarray, eff: list[dict[str, float]]) -> dict[str, np.ndarray]:
        out = {k: np.array([bank.draws[int(d)].get(k, np.nan) for d in draw]) for k in names}
        out.update({f"effect:{k}": np.array([e[k] for e in eff]) for k in eff[0]})
        return out

    per_unit = values(bank.draw_of_unit, effects)
    conditioned = values(cond.draw, cond.effects)
    pnames = [k for k, v in per_unit.items() if np.isfinite(v).all() and np.ptp(v) > 0]
    prior_q = np.array([np.quantile(per_unit[k], [0.05, 0.5, 0.95]) for k in pnames]).reshape(-1, 3)
    post_q = np.array([weighted_quantiles(conditioned[k], cond.log_w, [0.05, 0.5, 0.95])
                       for k in pnames]).reshape(-1, 3)
    obs_pred = np.array([[*weighted_quantiles(cond.truth[:, j], cond.log_w, [0.05, 0.5, 0.95])]
                         for j in range(len(obs))])
    obs_prior = np.quantile(truth, [0.05, 0.5, 0.95], axis=0).T
    c = ("candidate",)
    level = f"{100 * (1 - spec.alpha):g} %"
    coords = {
        "candidate": np.arange(len(cands)),
        "label": (c, np.array(spec.candidate_labels(), dtype=object), {"long_name": "candidate next infusion"}),
        "schedule": (c, np.array([x.key() for x in cands], dtype=object), {"long_name": "schedule (JSON)"}),
        "second_day": (c, np.array([x.days[1] if x.n_infusions > 1 else np.nan for x in cands]),
                       {"units": "day", "long_name": "day of the next infusion after the first"}),
        "second_dose": (c, np.array([x.total_dose * x.shares[1] / 100 if x.n_infusions > 1 else 0.0 for x in cands]),
                        {"units": "kg-1", "long_name": "NK cells per kg in the next infusion"}),
        "parameter": np.array(pnames, dtype=object),
        "observation": np.arange(len(obs)),
        "obs_quantity": (("observation",), np.array([o.quantity for o in obs], dtype=object),
                         {"long_name": "measured quantity"}),
        "obs_day": (("observation",), np.array([o.day for o in obs]), {"units": "day",
                                                                       "long_name": "day since the first infusion"}),
        "q": ("q", np.array([0.05, 0.5, 0.95]), {"units": "1", "long_name": "quantile"}),
    }
    data = {
        "pft_mean": (c, mean, {"units": "day", "long_name": "mean progression-free time from the start of "
                                                          "lymphodepletion to the horizon, this patient"}),
        "pft_lo": (c, lo, {"units": "day", "long_name": f"lower end of the mean's {level} interval"}),
        "pft_hi": (c, hi, {"units": "day", "long_name": f"upper end of the mean's {level} interval"}),
        "pft_pred_lo": (c, pred[0], {"units": "day", "long_name": "5 % predictive quantile"}),
        "pft_pred_hi": (c, pred[1], {"units": "day", "long_name": "95 % predictive quantile"}),
        "diff_vs_best": (c, dm, {"units": "day", "long_name": "paired difference from the best candidate"}),
        "diff_vs_best_lo": (c, dlo, {"units": "day", "long_name": f"lower end ({level})"}),
        "diff_vs_best_hi": (c, dhi, {"units": "day", "long_name": f"upper end ({level})"}),
        "within_delta": (c, within.astype(np.int8), {"units": "1", "long_name": f"not ruled out as within "
                                                     f"{spec.delta:g} day of the best (multiple comparisons)"}),
        "p_best": (c, p_best, {"units": "1", "long_name": "probability of being best for this patient"}),
        "pfs_landmark": (c, outcomes["pfs"].mean(axis=1), {"units": "1", "long_name": "probability of being "
                                                           f"progression-free at day {spec.landmark_day:g}"}),
        "cr_first": (c, outcomes["cr"].mean(axis=1), {"units": "1", "long_name": "probability of CR at the first "
                                                       "assessment"}),
        "blast_change_d28": (c, outcomes["blast_change_d28"].mean(axis=1), {
            "units": "percent", "long_name": "mean change of marrow blasts from baseline to day 28 after the first "
                                             "infusion (percentage points)"}),
        "param_prior": (("parameter", "q"), prior_q, {"units": "1", "long_name": "population predictive quantiles "
                                                      "(bank; each parameter in its model unit)"}),
        "param_conditioned": (("parameter", "q"), post_q, {"units": "1", "long_name": "quantiles conditioned on "
                                                           "the patient (each parameter in its model unit)"}),
        "obs_value": (("observation",), np.array([o.value for o in obs]), {"units": "1", "long_name":
                      "measured value (NaN below detection; unit of the quantity)"}),
        "obs_prior": (("observation", "q"), obs_prior, {"units": "1", "long_name": "simulated true value, bank"}),
        "obs_conditioned": (("observation", "q"), obs_pred, {"units": "1", "long_name": "simulated true value, "
                                                             "conditioned"}),
    }
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({
        "title": "nksim twin: one patient's series, her next infusion", "Conventions": "CF-1.8",
        "nksim_version": __version__, "patient_id": spec.patient_id, "decision_day": spec.decision_day,
        "horizon": spec.horizon, "landmark_day": spec.landmark_day, "delta": spec.delta, "alpha": spec.alpha,
        "bank_units": bank.n_units, "resampled": len(picks), "distinct_resampled": int(len(np.unique(picks))),
        "effective_sample_size": ess, "prior_predictive_share": p_conflict,
        "atypical": int(p_conflict < ATYPICAL_P), "thin_bank": int(ess < MIN_ESS),
        "best_label": str(coords["label"][1][best]), "separable": int(not bool(within.all())),
        "assay": json.dumps(spec.assay.as_dict()), "spec": spec.name,
        "conditioning": cond.method, "population": population_text(spec.population),
    })
    if smc is not None:
        ds.attrs.update({
            "smc_particles": len(cond.draw), "smc_pool": bank.n_draws, "smc_stages": len(smc.betas),
            "smc_converged": int(smc.converged),
            "smc_final_temperature": smc.betas[-1], "smc_simulations": smc.simulations,
            "smc_acceptance_last": smc.final_acceptance, "smc_moves": json.dumps(smc.moves),
            "smc_temperatures": json.dumps([round(b, 6) for b in smc.betas]),
            "smc_log_evidence": smc.log_evidence, "smc_distinct": len(set(cond.ident)),
            "smc_settings": json.dumps(spec.smc.as_dict()),
        })
    return ds
