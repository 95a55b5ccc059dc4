"""Experimental designs: the list of scenarios (factor levels) of a sweep spec.

* ``factorial``: every combination of the ``[factors]`` levels, in file order with the last
  factor varying fastest;
* ``lhs`` / ``sobol``: ``sampling.n`` points of a scrambled Latin hypercube / Sobol sequence
  (:mod:`scipy.stats.qmc`) mapped onto the factor ranges (linear or log scale; whole-number
  factors uniform over the integers of their range); the engine is seeded from the sweep seed,
  so the design is reproducible;
* ``list``: only the explicit ``[[scenarios]]``.

Explicit ``[[scenarios]]`` are appended to every design.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy.stats import qmc

from ..errors import NksimInputError
from .factors import numeric_range
from .spec import SweepSpec

#: spawn_key of the design's random stream (patient streams use 2-element keys).
DESIGN_STREAM_KEY = 2**32 + 2


def _engine(cls: type, d: int, scramble: bool, rng: np.random.Generator):
    try:  # scipy >= 1.15
        return cls(d, scramble=scramble, rng=rng)
    except TypeError:  # pragma: no cover - older scipy
        return cls(d, scramble=scramble, seed=rng)


def sample_unit(design: str, n: int, d: int, seed: int, scramble: bool = True) -> np.ndarray:
    """``n`` points in ``[0, 1)^d`` from a Latin hypercube or Sobol engine seeded by ``seed``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(DESIGN_STREAM_KEY,))))
    if design == "lhs":
        return _engine(qmc.LatinHypercube, d, scramble, rng).random(n)
    if design == "sobol":
        return _engine(qmc.Sobol, d, scramble, rng).random_base2(int(round(math.log2(n))))
    raise ValueError(design)


def _map(name: str, u: float, lo: float, hi: float, scale: str) -> float:
    integer = numeric_range(name)[2]
    if integer:
        return float(min(hi, math.floor(lo + u * (hi - lo + 1))))
    if scale == "log":
        return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    return float(lo + u * (hi - lo))


def design_levels(spec: SweepSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """The scenarios' factor levels (one dict per scenario) and the swept factor names (in order)."""
    scenarios: list[dict[str, Any]] = []
    names = list(spec.factors)
    if spec.design == "factorial" and names:
        for combo in itertools.product(*(spec.factors[k] for k in names)):
            scenarios.append(dict(zip(names, combo)))
    elif spec.design in ("lhs", "sobol"):
        u = sample_unit(spec.design, spec.sampling_n, len(names), spec.seed, spec.scramble)
        for row in u:
            scenarios.append({k: _map(k, float(row[j]), *spec.factors[k]) for j, k in enumerate(names)})
    n_design = len(scenarios)
    for extra in spec.scenarios:
        scenarios.append(dict(extra))
        for k in extra:
            if k not in names:
                names.append(k)
    if not scenarios:
        raise NksimInputError("empty sweep: no scenarios", source=spec.source, key="factors")
    if spec.design in ("factorial", "list"):
        seen: dict[tuple, int] = {}
        for i, s in enumerate(scenarios):
            key = tuple(sorted(s.items()))
            if key in seen:
                where = f"scenarios[{i - n_design}]" if i >= n_design else "factors"
                raise NksimInputError(f"scenario {i} repeats scenario {seen[key]} ({s})", source=spec.source, key=where)
            seen[key] = i
    return scenarios, names
