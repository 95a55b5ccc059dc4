"""Schedule sweeps: declarative specs, Dask runner, resumable Zarr store, summaries.

Modules (one job each):

* :mod:`~nksim.sweep.factors` -- schedule factors, units, allowed ranges;
* :mod:`~nksim.sweep.spec` -- reading/validating a sweep TOML file;
* :mod:`~nksim.sweep.design` -- factorial / list / Latin hypercube / Sobol scenarios;
* :mod:`~nksim.sweep.draws` -- parameter draws (model values, priors or a CSV file);
* :mod:`~nksim.sweep.scenario` -- scenario -> dated protocol events;
* :mod:`~nksim.sweep.plan` -- the resolved, hashable plan and its batches;
* :mod:`~nksim.sweep.execute` -- running one batch (the Dask task);
* :mod:`~nksim.sweep.store` -- the Zarr store (create, resume, validate, append, verify and repair,
  writer lock; low-level Zarr I/O in :mod:`nksim.io.zarr`);
* :mod:`~nksim.sweep.runner` -- Dask orchestration (``nksim sweep``);
* :mod:`~nksim.sweep.summaries` -- Kaplan-Meier and other per-scenario metrics, paired contrasts with
  confidence intervals, probability of being best, on the infusion or lymphodepletion clock
  (``nksim summarize``).

Quick use::

    from nksim.sweep import run_sweep, summarize, ranking_table
    run_sweep("experiments/two_infusion_schedules.toml", "outputs/sweep.zarr", workers=2)
    print(ranking_table(summarize("outputs/sweep.zarr")))
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_spec": "spec", "spec_from_dict": "spec", "SweepSpec": "spec",
    "build_plan": "plan", "Plan": "plan",
    "run_batch": "execute",
    "SweepStore": "store", "StoreDamagedError": "store", "store_digest": "..io.zarr",
    "run_sweep": "runner", "SweepReport": "runner", "SweepInterrupted": "runner",
    "summarize": "summaries", "ranking_table": "summaries", "open_sweep": "summaries",
    "export_netcdf": "summaries", "km_median": "summaries", "km_survival": "summaries",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: `nksim summarize` need not import dask.distributed
    if name in _EXPORTS:
        import importlib

        module = _EXPORTS[name]
        return getattr(importlib.import_module(module if module.startswith(".") else f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
