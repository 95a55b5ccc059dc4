"""Find the best schedule under uncertainty: ``nksim optimise``.

Modules (one job each):

* :mod:`~nksim.optimise.candidate` -- one schedule (:class:`Candidate`) and its dated protocol;
* :mod:`~nksim.optimise.space` -- the declared design space, constraints, proposal -> feasible schedule;
* :mod:`~nksim.optimise.spec` -- reading/validating an optimisation TOML file;
* :mod:`~nksim.optimise.bank` -- banks of units (posterior draw x patient x replicate), common random numbers;
* :mod:`~nksim.optimise.problem` -- what is evaluated: nksim (:class:`ModelProblem`), per-unit outcomes;
* :mod:`~nksim.optimise.planted` -- planted test problems with a known optimum (:class:`PlantedProblem`);
* :mod:`~nksim.optimise.store` -- checksummed evaluations on disk (resume);
* :mod:`~nksim.optimise.search` -- Optuna TPE in synchronous batches, then a local polish;
* :mod:`~nksim.optimise.select` -- paired comparisons, near-optimal set, per-draw best, EVPI, held-out estimate;
* :mod:`~nksim.optimise.run` -- the three stages, the result Dataset, resumable output folder;
* :mod:`~nksim.optimise.report` -- ``REPORT.md`` and figures;
* :mod:`~nksim.optimise.cli` -- ``nksim optimise``.

Quick use::

    from nksim.optimise import optimise
    result = optimise("experiments/optimise/expanding_two_infusions.toml", "outputs/optimise/expanding")
    print(result.dataset.attrs["selected_label"], result.dataset.attrs["held_out_gain"])
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Candidate": "candidate", "DesignSpace": "space", "parse_space": "space",
    "OptimiseSpec": "spec", "load_spec": "spec", "spec_from_dict": "spec",
    "Bank": "bank", "ModelProblem": "problem", "Clock": "problem", "PlantedProblem": "planted",
    "EvaluationCache": "store", "SearchSettings": "search", "run_search": "search",
    "near_optimal_set": "select", "held_out": "select", "per_draw_best": "select",
    "optimise": "run", "confirm": "run", "OptimiseResult": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: importing nksim.optimise does not import optuna
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
