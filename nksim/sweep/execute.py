"""Running one batch of a sweep (the Dask task), in any process.

:func:`run_batch` simulates the (patient, replicate) block of one scenario and draw with
:func:`nksim.simulate.run_one`, assembles it with :func:`nksim.output.build_dataset` (so every
derived quantity -- chimerism, response, time to progression -- is computed exactly as in
``nksim run``), and returns plain NumPy arrays placed on the sweep's common time axis:

* daily variables (:data:`~nksim.sweep.plan.TIME_SERIES`): ``float32 (patients, replicates, time)``,
  ``time`` = days since the first infusion from ``plan.time_start`` to ``end_day``; days
  before this scenario's first simulated day are NaN;
* ``response``: ``int8 (patients, replicates, assessment)``, codes of
  :data:`nksim.observables.RESPONSE_CODES`;
* ``time_to_progression`` (day, NaN = censored at ``end_day``), ``pd_threshold_pct`` and the
  patient effects: ``float64 (patients, replicates)``.

Random streams are ``generators(seed, patient, replicate)`` whatever the scenario, the draw,
the batch or the worker: common random numbers across scenarios, and identical results for any
number of workers.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ..output import build_dataset
from ..parameters import ParameterSet
from ..patients import EFFECT_META
from ..protocol import Protocol
from ..simulate import run_one
from .plan import Plan, code_digest

#: Per-simulation scalar variables stored besides the time series.
SCALARS: tuple[str, ...] = ("time_to_progression", "pd_threshold_pct", *EFFECT_META)


class PlanRuntime:
    """Per-process cache of the ParameterSets and Protocols of a plan."""

    def __init__(self, plan: Plan, cache: int = 32):
        self.plan = plan
        self.base = plan.base_parameters()
        self._params: OrderedDict[tuple[int, int], ParameterSet] = OrderedDict()
        self._protocols: OrderedDict[int, Protocol] = OrderedDict()
        self._cache = cache
        self.code_digest = code_digest()

    def parameters(self, s: int, d: int) -> ParameterSet:
        """The ParameterSet of scenario ``s``, draw ``d`` (cached, least recently built dropped first)."""
        key = (s, d)
        if key not in self._params:
            self._params[key] = self.plan.parameters(s, d, self.base)
            if len(self._params) > self._cache:
                self._params.popitem(last=False)
        return self._params[key]

    def protocol(self, s: int) -> Protocol:
        """The Protocol of scenario ``s`` (cached, least recently built dropped first)."""
        if s not in self._protocols:
            self._protocols[s] = self.plan.protocol(s)
            if len(self._protocols) > self._cache:
                self._protocols.popitem(last=False)
        return self._protocols[s]


_RUNTIMES: OrderedDict[str, PlanRuntime] = OrderedDict()


def runtime(plan: Plan) -> PlanRuntime:
    """The cached runtime of ``plan`` in this process (keeps the last two plans)."""
    rt = _RUNTIMES.get(plan.digest)
    if rt is None:
        rt = _RUNTIMES[plan.digest] = PlanRuntime(plan)
        while len(_RUNTIMES) > 2:
            _RUNTIMES.popitem(last=False)
    return rt


def run_batch(plan: Plan, b: int) -> dict[str, Any]:
    """Simulate batch ``b`` of ``plan``; returns ``{"batch", "plan", "code", "arrays"}``."""
    rt = runtime(plan)
    s, d, ps, rs = plan.batch(b)
    params = rt.parameters(s, d)
    protocol = rt.protocol(s)
    pids = plan.patients[ps]
    reps = list(range(rs.start, rs.stop))
    seed = int(plan["seed"])
    runs = [run_one(params, protocol, plan.patient(pid), seed, r) for pid in pids for r in reps]
    ds = build_dataset(runs, params, protocol, pids, len(reps), seed, replicate_ids=reps)
    offset = int(round(protocol.start_day - plan.time_start))
    n_t = ds.sizes["time"]
    if offset < 0 or offset + n_t != plan.n_time:
        raise RuntimeError(f"scenario {s}: time axis [{protocol.start_day}, {protocol.end_day}] does not fit the "
                           f"sweep axis starting at {plan.time_start} with {plan.n_time} days")
    arrays: dict[str, np.ndarray] = {}
    for name in plan["time_series"]:
        a = np.full((len(pids), len(reps), plan.n_time), np.nan, dtype=np.float32)
        a[:, :, offset:] = ds[name].values
        arrays[name] = a
    arrays["response"] = np.ascontiguousarray(ds["response"].values, dtype=np.int8)
    for name in SCALARS:
        arrays[name] = np.ascontiguousarray(ds[name].values, dtype=np.float64)
    return {"batch": int(b), "plan": plan.digest, "code": rt.code_digest, "arrays": arrays}


def warm_up(model: dict[str, Any] | None = None) -> None:
    """Load (or compile) the numba kernel for a plan's ``"model"`` entry (no file access; None: default)."""
    from ..simulate import warm_up as _warm_up

    _warm_up(Plan({"name": "warm-up", "model": model}).base_parameters() if model is not None else None)
