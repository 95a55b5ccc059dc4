"""What the optimiser evaluates: a *problem* maps (candidate schedules, bank) to per-unit outcomes.

Every problem has the same interface, so the search, the confirmation and their tests do not
know whether the numbers come from nksim or from a planted test problem
(:mod:`nksim.optimise.planted`):

* ``identity() -> dict``: plain data fixing the numbers (hashed into the store's identity);
* ``evaluate(candidates, bank, workers=1) -> list[dict[str, ndarray]]``: per candidate, the
  outcomes of every unit of the bank (:data:`OUTCOMES`), deterministic for a given bank and with
  common random numbers across candidates.

:class:`ModelProblem` simulates nksim. Time counts from the **start of lymphodepletion** (the
decision to treat), so schedules with different gaps are compared on one clock: progression can
be called from the first assessment day on, and each unit's progression-free time is restricted
to the horizon. A simulation stops at the first weekly check at which progression has happened
(``nksim.simulate.run_one(stop_days=...)``): the first crossing of the progression threshold
precedes the stop, so stopping loses no outcome. The checks are synchronisation days of the marrow
update, so a run with them is another realisation of the same model than one without (not bit for
bit the same numbers); every schedule on a bank uses the same rule, and the checks start at the first
assessment, after every infusion and cytokine dose.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import layout as L
from ..observables import pd_threshold, response_thresholds, time_to_progression
from ..parameters import ParameterSet
from ..protocol import Protocol, population_patient
from ..sweep.scenario import build_protocol
from ..threads import ordered_thread_map
from .bank import Bank
from .candidate import Candidate

#: outcome -> (units, long name); per unit of a bank.
OUTCOMES: dict[str, tuple[str, str]] = {
    "pft": ("day", "progression-free time from the start of lymphodepletion, restricted to the horizon"),
    "pfs": ("1", "progression-free at the landmark day (0/1)"),
    "cr": ("1", "complete remission at the first assessment (0/1)"),
}

#: Days between the checks at which a progressed simulation may stop early.
STOP_EVERY = 7.0


@dataclass(frozen=True)
class Clock:
    """Assessment days, landmark and horizon, in days since the start of lymphodepletion."""

    assessment_days: tuple[float, ...]
    landmark_day: float
    horizon: float

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return {"assessment_days": list(self.assessment_days), "landmark_day": self.landmark_day,
                "horizon": self.horizon}


def unit_outcome(time: np.ndarray, blast_pct: np.ndarray, th: Mapping[str, float], first_assessment: float,
                 offset: float, clock: Clock) -> tuple[float, float, float]:
    """``(pft, pfs, cr)`` of one simulation from its daily marrow blast percentages.

    ``time`` and ``first_assessment`` count from the first infusion; ``offset`` is the days from the
    start of lymphodepletion to the first infusion. Rows after an early stop are NaN.
    """
    baseline = float(blast_pct[0])
    ttp = float(time_to_progression(time, blast_pct, baseline, th, from_day=first_assessment))
    ttp_ld = ttp + offset  # NaN stays NaN: no progression before the run ended
    pft = clock.horizon if np.isnan(ttp_ld) else min(ttp_ld, clock.horizon)
    pfs = 0.0 if (not np.isnan(ttp_ld) and ttp_ld <= clock.landmark_day) else 1.0
    i = int(round(first_assessment - time[0]))
    b = blast_pct[i] if 0 <= i < len(blast_pct) else np.nan
    if np.isnan(b):  # stopped early: progression before the first assessment cannot be called, so not stopped
        cr = 0.0
    else:
        cr = float(b < th["cr_blast_pct"] and not b >= float(pd_threshold(baseline, th)))
    return float(pft), pfs, cr


class ModelProblem:
    """nksim's schedules on a bank (module docstring)."""

    def __init__(self, base: ParameterSet, clock: Clock, fixed: Mapping[str, float] | None = None,
                 client: Any = None, population: Mapping[str, Any] | None = None):
        self.base = base
        self.clock = clock
        self.fixed = dict(fixed or {})
        #: the virtual patients' population (:func:`nksim.protocol.population_patient`; ``{}``: active disease)
        self.population = dict(population or {})
        self.client = client  # a distributed.Client: evaluate on its workers instead of local threads
        self._scattered: tuple[Any, Any] | None = None  # (client, future of the payload on its workers)
        self._params: dict[str, ParameterSet] = {}

    def identity(self) -> dict[str, Any]:
        """Plain data fixing the numbers: the model, fixed values, clock and the result code's digest.

        The model as :func:`nksim.sweep.plan.model_numbers` (values, units, priors; not the parameters' descriptions
        and sources, so a corrected source text keeps an optimisation's cached evaluations).
        """
        from ..sweep.plan import code_digest, model_numbers

        out = {"problem": "nksim", "model": model_numbers(self.base), "fixed": self.fixed,
               "clock": self.clock.as_dict(), "code": code_digest()}
        if self.population:  # recorded only when set: caches of active-disease problems keep their digests
            out["population"] = self.population
        return out

    def parameters(self, bank: Bank, d: int) -> ParameterSet:
        """The ParameterSet of draw ``d`` of ``bank`` (cached; the spec's fixed values over the draw)."""
        key = f"{bank.digest()}:{d}"
        if key not in self._params:
            over = dict(bank.draws[d])
            over.update(self.fixed)
            self._params[key] = self.base.with_values(over, origin=f"bank {bank.name}, draw {d}")
        return self._params[key]

    def protocol(self, cand: Candidate, patients: Bank | Sequence[str]) -> tuple[Protocol, float, float]:
        """The candidate's protocol for a bank's patients (or these ids), offset and first assessment day."""
        offset = cand.lymphodepletion_offset()
        assess = [a - offset for a in self.clock.assessment_days]
        end = self.clock.horizon - offset
        if end <= cand.last_day:
            raise ValueError(f"horizon {self.clock.horizon:g} (lymphodepletion clock) ends before the last infusion "
                             f"of {cand.label()}")
        pdict = cand.protocol_dict(name="optimise", end_day=end, assessment_days=assess)
        ids = patients.patient_ids if isinstance(patients, Bank) else tuple(patients)
        return build_protocol(pdict, ids, f"candidate {cand.label()}"), offset, assess[0]

    def evaluate(self, candidates: Sequence[Candidate], bank: Bank, workers: int = 1,
                 on_unit: Callable[[Any], None] | None = None) -> list[dict[str, np.ndarray]]:
        """Per candidate, ``{outcome: float array (n_units)}`` (threads: the kernel releases the GIL)."""
        setups = [self.protocol(c, bank) for c in candidates]
        tasks = [(ci, u) for ci in range(len(candidates)) for u in range(bank.n_units)]
        if self.client is not None:
            flat = self._evaluate_dask(candidates, bank, on_unit)
        else:
            for d in range(bank.n_draws):  # build the ParameterSets once, before the threads share them
                self.parameters(bank, d)
            flat = ordered_thread_map(lambda t: self.unit(setups[t[0]], bank, t[1]), tasks, workers,
                                      on_result=on_unit)
        out = []
        for ci in range(len(candidates)):
            rows = np.array(flat[ci * bank.n_units:(ci + 1) * bank.n_units], dtype=float).reshape(bank.n_units, 3)
            out.append({name: rows[:, k].copy() for k, name in enumerate(OUTCOMES)})
        return out

    def unit(self, setup: tuple[Protocol, float, float], bank: Bank, u: int) -> tuple[float, float, float]:
        """``(pft, pfs, cr)`` of unit ``u`` under one candidate's ``(protocol, offset, first assessment)``."""
        from ..simulate import run_one

        proto, offset, first = setup
        d, pid, r = bank.unit(u)
        params = self.parameters(bank, d)
        stops = np.arange(first, proto.end_day + 1e-9, STOP_EVERY)
        run = run_one(params, proto, population_patient(pid, self.population), bank.seed, r, stop_days=stops)
        time = proto.start_day + np.arange(run.rec.shape[0], dtype=float)
        return unit_outcome(time, run.rec[:, L.R.marrow_blast_pct], response_thresholds(params), first, offset,
                            self.clock)

    def payload(self) -> dict[str, Any]:
        """Plain data from which a worker process rebuilds this problem (:func:`_worker_problem`)."""
        from ..sweep.plan import model_entry

        return {"model": model_entry(self.base), "fixed": self.fixed, "clock": self.clock.as_dict(),
                "population": self.population}

    def _evaluate_dask(self, candidates: Sequence[Candidate], bank: Bank,
                       on_unit: Callable[[Any], None] | None) -> list[tuple[float, float, float]]:
        """The units on the client's workers, in chunks of :data:`DASK_CHUNK` units (results in task order)."""
        from distributed import as_completed

        client = self.client
        # scattered once per client and held here: a future released between calls and scattered again under
        # the same key can be deleted under the next call's tasks ("lost dependencies"); a list, because a
        # scattered dict is scattered value by value under its keys
        if self._scattered is None or self._scattered[0] is not client:
            self._scattered = (client, client.scatter([self.payload()], broadcast=True)[0])
        payload = self._scattered[1]
        bank_d = bank.as_dict()
        jobs = [(ci, a, min(a + DASK_CHUNK, bank.n_units)) for ci in range(len(candidates))
                for a in range(0, bank.n_units, DASK_CHUNK)]
        futures = {client.submit(_worker_units, payload, candidates[ci].as_dict(), bank_d, a, b, pure=False): (ci, a)
                   for ci, a, b in jobs}
        got: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
        for fut in as_completed(futures):
            rows = fut.result()
            got[futures[fut]] = rows
            if on_unit is not None:
                for row in rows:
                    on_unit(row)
        return [row for ci, a, _ in jobs for row in got[(ci, a)]]


#: Units per Dask task.
DASK_CHUNK = 16

_WORKER_PROBLEMS: dict[str, ModelProblem] = {}


def _worker_problem(payload: Mapping[str, Any]) -> ModelProblem:
    """The problem of a payload, rebuilt once per worker process."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _WORKER_PROBLEMS:
        from ..sweep.plan import Plan

        base = Plan({"name": "optimise", "model": payload["model"]}).base_parameters()
        c = payload["clock"]
        _WORKER_PROBLEMS.clear()
        _WORKER_PROBLEMS[key] = ModelProblem(base, Clock(tuple(c["assessment_days"]), float(c["landmark_day"]),
                                                         float(c["horizon"])), payload["fixed"],
                                                   population=payload.get("population"))
    return _WORKER_PROBLEMS[key]


def _worker_units(payload: Mapping[str, Any], cand: Mapping[str, Any], bank_d: Mapping[str, Any], a: int,
                  b: int) -> list[tuple[float, float, float]]:
    """Dask task: the outcomes of units ``a:b`` of a bank under one candidate."""
    problem = _worker_problem(payload)
    bank = Bank.from_dict(bank_d)
    setup = problem.protocol(Candidate.from_mapping(cand), bank)
    return [problem.unit(setup, bank, u) for u in range(a, b)]
