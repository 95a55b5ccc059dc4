"""Is the twin calibrated? Synthetic patients with known parameters (issue 28, "Check it").

:func:`coverage_study` draws ``n`` synthetic patients from the same population as the twin's bank
(posterior draws with their own random effects, another seed), simulates each under the schedule
given so far, measures them with the assay model (the spec's patient file gives the days,
quantities and detection limits), conditions the bank on each, and asks:

* **parameters**: does the conditioned 90 % interval of each drawn parameter and random effect
  cover the patient's true value? Coverage is computed from the randomised probability integral
  transform (PIT; Czado, Gneiting & Held 2009) of the true value under the weighted bank, so that
  atoms (posterior draws are a finite set of rows; several patients share a draw) count exactly:
  a calibrated twin gives 90 % in expectation;
* **predictions**: does the conditioned 90 % predictive interval of the progression-free time under
  each candidate cover the patient's own (simulated with her streams)? Same randomised PIT (the
  progression-free time has atoms: at the first assessment, at the horizon);
* **regret**: the patient's own progression-free time under her oracle candidate (the best for her,
  known only in simulation) minus under the recommended one (largest conditioned mean);
* **atypical patients**: a patient whose series was altered (chimerism far above anything the model
  makes) must be flagged; ordinary synthetic patients rarely are.

Every candidate is simulated for every bank unit once (not only the resampled ones), so the study
costs (bank + n) x (1 + candidates) simulations.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..optimise.bank import Bank
from ..optimise.problem import Clock, ModelProblem
from .likelihood import effective_sample_size, log_likelihood, mixture_log_likelihood, simulate_measurement
from .run import (
    ATYPICAL_P,
    MIN_ESS,
    Conditioned,
    _bank,
    _decide,
    _observations,
    _params,
    _simulate_so_far,
    conflict_share,
    patient_smc,
)
from .spec import TwinSpec


def randomised_pit(values: np.ndarray, log_w: np.ndarray, truth: float, rng: np.random.Generator) -> float:
    """Randomised PIT of ``truth`` under the weighted sample ``values``: F(y-) + V (F(y) - F(y-)), V ~ U(0, 1)."""
    w = np.exp(log_w - np.max(log_w))
    w /= w.sum()
    below = float(w[values < truth].sum())
    at = float(w[values == truth].sum())
    return below + rng.random() * at


def _outcomes_under(spec: TwinSpec, base: Any, bank: Bank, workers: int) -> np.ndarray:
    """Progression-free time of every unit of ``bank`` under every candidate: (candidates, units).

    :meth:`nksim.optimise.problem.ModelProblem.evaluate`: each unit's parameters are its draw with the
    spec's fixed values over it, as :func:`nksim.twin.run._params` builds them.
    """
    problem = ModelProblem(base, Clock(spec.assessment_days, spec.landmark_day, spec.horizon), spec.parameters,
                           population=spec.population)
    return np.stack([o["pft"] for o in problem.evaluate(spec.candidates(), bank, workers=workers)])


def _setup(spec: TwinSpec, n: int, seed: int, tag: int, label: str, workers: int) -> tuple[Any, ...]:
    """The bank and ``n`` synthetic patients (their own bank, seed from ``(spec.seed, seed, tag)``), simulated so far.

    Returns ``(base, observations, bank, its params, its true values, its effects, truth bank, its params,
    its true values, its effects)``.
    """
    from ..parameters import load_parameters
    from ..sweep.draws import parameter_draws

    base = load_parameters(spec.model_path)
    obs, _ = _observations(spec)
    bank = _bank(spec, base)
    params = _params(base, spec, bank)
    truth_b, eff_b = _simulate_so_far(spec, bank, params, obs, workers)
    tseed = int(np.random.SeedSequence([spec.seed, seed, tag]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    tdraws = parameter_draws(base, n, spec.draws_from, tseed, label)
    if len(tdraws) < n:
        tdraws = [tdraws[0]] * n
    tbank = Bank("truth", tseed, tuple(tdraws), 1, 1)
    tparams = _params(base, spec, tbank)
    truth_t, eff_t = _simulate_so_far(spec, tbank, tparams, obs, workers)
    return base, obs, bank, params, truth_b, eff_b, tbank, tparams, truth_t, eff_t


def coverage_study(spec: TwinSpec, n: int = 100, *, workers: int = 1, seed: int = 1) -> dict[str, Any]:
    """Coverage, regret and flags over ``n`` synthetic patients (module docstring)."""
    base, obs, bank, params, truth_b, eff_b, tbank, tparams, truth_t, eff_t = _setup(
        spec, n, seed, 3, "twin coverage", workers)
    y_bank = _outcomes_under(spec, base, bank, workers)
    y_true = _outcomes_under(spec, base, tbank, workers)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, seed, 4]))

    def per_unit(b: Bank, effects: list[dict[str, float]], k: str) -> np.ndarray:
        if k.startswith("effect:"):
            return np.array([e[k[7:]] for e in effects])
        return np.array([b.draws[b.unit(u)[0]].get(k, np.nan) for u in range(b.n_units)])

    names = [k for k in sorted({k for dr in bank.draws for k in dr})] + [f"effect:{k}" for k in eff_b[0]]
    names = [k for k in names if np.ptp(per_unit(bank, eff_b, k)) > 0]
    bank_vals = {k: per_unit(bank, eff_b, k) for k in names}
    true_vals = {k: per_unit(tbank, eff_t, k) for k in names}
    pit_par: dict[str, list[float]] = {k: [] for k in names}
    pit_pred: list[float] = []
    ess, flags, regret = [], [], []
    for j in range(n):
        ll = np.zeros(bank.n_units)
        for i, o in enumerate(obs):
            v, below = simulate_measurement(o.quantity, truth_t[j:j + 1, i], o.lod, spec.assay, rng)
            ll += log_likelihood(o.quantity, float(v[0]), bool(below[0]), o.lod, truth_b[:, i], spec.assay)
        log_w = ll - ll.max()
        ess.append(effective_sample_size(log_w))
        flags.append(conflict_share(obs, truth_b, spec, mixture_log_likelihood(ll), rng, n=100,
                                    groups=bank.draw_of_unit) < ATYPICAL_P)
        for k in names:
            pit_par[k].append(randomised_pit(bank_vals[k], log_w, true_vals[k][j], rng))
        for c in range(y_bank.shape[0]):
            pit_pred.append(randomised_pit(y_bank[c], log_w, y_true[c, j], rng))
        w = np.exp(log_w)
        w /= w.sum()
        recommended = int(np.argmax(y_bank @ w))
        regret.append(float(y_true[:, j].max() - y_true[recommended, j]))

    def cover(p: list[float]) -> float:
        a = np.asarray(p)
        return float(np.mean((a >= 0.05) & (a <= 0.95)))

    pooled = [p for v in pit_par.values() for p in v]
    return {"n": n, "bank_units": bank.n_units, "candidates": len(spec.candidate_labels()),
            "parameter_coverage": cover(pooled), "prediction_coverage": cover(pit_pred),
            "parameter_coverage_each": {k: cover(v) for k, v in pit_par.items()},
            "ess_median": float(np.median(ess)), "ess_min": float(np.min(ess)),
            "flagged_share": float(np.mean(flags)), "regret_mean": float(np.mean(regret)),
            "regret_max": float(np.max(regret)), "regret_zero_share": float(np.mean(np.array(regret) == 0))}



def fallback_study(spec: TwinSpec, screened: int = 200, max_patients: int = 25, *, candidates: tuple[int, ...] = (0,),
                   workers: int = 1, seed: int = 1) -> dict[str, Any]:
    """Does the patient-level ABC-SMC repair the intervals where the bank is thin? (issue 28, "fall back").

    Synthetic patients are drawn from the population as in :func:`coverage_study` and measured; those
    whose data leave the bank an effective sample size below :data:`~nksim.twin.run.MIN_ESS` (the
    fallback's trigger; a selection on the data alone, so a calibrated posterior stays calibrated on
    them) are conditioned twice -- the bank's importance weights, and the ABC-SMC -- until
    ``max_patients`` are found among at most ``screened``. Reported for both: the randomised-PIT
    coverage of the 90 % intervals of every drawn parameter and random effect, and of the predicted
    progression-free time under the ``candidates`` (indices into ``spec.candidates()``; 0: no
    further infusion). The ABC-SMC's particles are continued under each candidate with their own
    streams, as ``nksim twin`` does.
    """
    base, obs, bank, params, truth_b, eff_b, tbank, tparams, truth_t, eff_t = _setup(
        spec, screened, seed, 6, "twin fallback check", workers)
    cands = [spec.candidates()[c] for c in candidates]
    problem = ModelProblem(base, Clock(spec.assessment_days, spec.landmark_day, spec.horizon), spec.parameters,
                           population=spec.population)
    y_bank = np.stack([o["pft"] for o in problem.evaluate(cands, bank, workers=workers)])
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, seed, 7]))
    names = sorted({k for dr in bank.draws for k in dr}) + [f"effect:{k}" for k in eff_b[0]]

    def values(draw: np.ndarray, effects: list[dict[str, float]], draws: Any, k: str) -> np.ndarray:
        if k.startswith("effect:"):
            return np.array([e[k[7:]] for e in effects])
        return np.array([draws[int(d)].get(k, np.nan) for d in draw])

    bank_vals = {k: values(bank.draw_of_unit, eff_b, bank.draws, k) for k in names}
    names = [k for k in names if np.ptp(bank_vals[k]) > 0]
    pit: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names} for m in ("bank", "smc")}
    pit_pred: dict[str, list[float]] = {"bank": [], "smc": []}
    ess_bank, stages, sims, ess_smc = [], [], [], []
    n_seen = 0
    for j in range(screened):
        n_seen = j + 1
        mine = []
        for i, o in enumerate(obs):
            v, below = simulate_measurement(o.quantity, truth_t[j:j + 1, i], o.lod, spec.assay, rng)
            mine.append(replace(o, value=float(v[0]), below_lod=bool(below[0])))
        ll = np.zeros(bank.n_units)
        for i, o in enumerate(mine):
            ll += log_likelihood(o.quantity, o.value, o.below_lod, o.lod, truth_b[:, i], spec.assay)
        log_w = ll - ll.max()
        if effective_sample_size(log_w) >= MIN_ESS:
            continue
        ess_bank.append(effective_sample_size(log_w))
        cond, res = patient_smc(spec, bank, params, mine, truth_b, ll, workers)
        stages.append(len(res.betas))
        sims.append(res.simulations)
        ess_smc.append(len(set(cond.ident)))
        y_true = _truth_outcomes(spec, tbank, tparams, j, candidates)
        y_smc = _decide(spec, cond, params, np.arange(len(cond.draw)), workers, candidates=candidates)["pft"]
        for k in names:
            truth_k = values(np.array([j]), eff_t[j:j + 1], tbank.draws, k)[0]
            pit["bank"][k].append(randomised_pit(bank_vals[k], log_w, truth_k, rng))
            pit["smc"][k].append(randomised_pit(values(cond.draw, cond.effects, bank.draws, k), cond.log_w, truth_k,
                                                rng))
        for c in range(len(candidates)):
            pit_pred["bank"].append(randomised_pit(y_bank[c], log_w, y_true[c], rng))
            pit_pred["smc"].append(randomised_pit(y_smc[c], cond.log_w, y_true[c], rng))
        if len(ess_bank) >= max_patients:
            break

    def cover(p: list[float]) -> float:
        a = np.asarray(p)
        return float(np.mean((a >= 0.05) & (a <= 0.95))) if a.size else float("nan")

    out: dict[str, Any] = {"screened": n_seen, "thin": len(ess_bank), "bank_units": bank.n_units,
                           "candidates": [spec.candidate_labels()[c] for c in candidates],
                           "ess_bank_median": float(np.median(ess_bank)) if ess_bank else float("nan"),
                           "smc_stages_median": float(np.median(stages)) if stages else float("nan"),
                           "smc_simulations_mean": float(np.mean(sims)) if sims else float("nan"),
                           "smc_distinct_median": float(np.median(ess_smc)) if ess_smc else float("nan")}
    for m in ("bank", "smc"):
        out[f"{m}_parameter_coverage"] = cover([p for v in pit[m].values() for p in v])
        out[f"{m}_prediction_coverage"] = cover(pit_pred[m])
        out[f"{m}_parameter_coverage_each"] = {k: cover(v) for k, v in pit[m].items()}
    return out


def _truth_outcomes(spec: TwinSpec, tbank: Bank, tparams: list[Any], j: int, candidates: tuple[int, ...]
                    ) -> np.ndarray:
    """Progression-free time of synthetic patient ``j`` (unit ``j`` of ``tbank``) under the candidates."""
    cond = Conditioned.from_bank(tbank, np.zeros((tbank.n_units, 0)), [{}] * tbank.n_units, np.zeros(tbank.n_units),
                                 spec.population)
    return _decide(spec, cond, tparams, np.array([j]), 1, candidates=candidates)["pft"][:, 0]
