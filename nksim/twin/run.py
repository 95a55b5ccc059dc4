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
from dataclasses import dataclass
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
from ..protocol import Patient
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

    pdict = spec.given.protocol_dict(name="twin-so-far", end_day=spec.decision_day,
                                     assessment_days=[spec.decision_day])
    proto = build_protocol(pdict, bank.patient_ids, f"{spec.source} [twin.given]")

    def one(u: int) -> tuple[np.ndarray, dict[str, float]]:
        d, pid, r = bank.unit(u)
        run = run_one(params[d], proto, Patient(pid, "all"), bank.seed, r)
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


def _decide(spec: TwinSpec, bank: Bank, params: list[Any], picks: np.ndarray, workers: int
            ) -> dict[str, np.ndarray]:
    """Outcomes (candidates x resampled units) under every candidate, each unique unit simulated once."""
    from ..simulate import run_one

    clock = Clock(spec.assessment_days, spec.landmark_day, spec.horizon)
    cands = spec.candidates()
    uniq, inverse = np.unique(picks, return_inverse=True)
    # the optimiser's recipe for a candidate's protocol on the lymphodepletion clock (protocol, offset, first day)
    setups = [ModelProblem(params[0], clock).protocol(c, bank) for c in cands]

    def one(task: tuple[int, int]) -> tuple[float, float, float, float]:
        ci, u = task
        proto, offset, first = setups[ci]
        d, pid, r = bank.unit(int(u))
        run = run_one(params[d], proto, Patient(pid, "all"), bank.seed, r)
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
    picks = systematic_resample(log_w, spec.resample, rng)
    outcomes = _decide(spec, bank, params, picks, workers)
    ds = _dataset(spec, bank, obs, truth, effects, log_w, ess, p_conflict, picks, outcomes)
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


def _dataset(spec, bank, obs, truth, effects, log_w, ess, p_conflict, picks, outcomes) -> xr.Dataset:
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
    per_unit = {k: np.array([bank.draws[bank.unit(u)[0]].get(k, np.nan) for u in range(bank.n_units)])
                for k in names}
    per_unit.update({f"effect:{k}": np.array([e[k] for e in effects]) for k in effects[0]})
    pnames = [k for k, v in per_unit.items() if np.isfinite(v).all() and np.ptp(v) > 0]
    prior_q = np.array([np.quantile(per_unit[k], [0.05, 0.5, 0.95]) for k in pnames]).reshape(-1, 3)
    post_q = np.array([weighted_quantiles(per_unit[k], log_w, [0.05, 0.5, 0.95]) for k in pnames]).reshape(-1, 3)
    obs_pred = np.array([[*weighted_quantiles(truth[:, j], log_w, [0.05, 0.5, 0.95])] for j in range(len(obs))])
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
    })
    return ds
