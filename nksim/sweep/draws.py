"""Parameter draws of a virtual cohort ("posterior draws").

There is no calibrated posterior yet, so a sweep may use

* ``draws = 0``: one draw, the model's own parameter values;
* ``draws = n, draws_from = "prior"``: ``n`` independent draws, each parameter that has a
  ``prior = [lo, hi]`` in the model file uniform on that range (whole-number parameters
  uniform over the integers of the range), from a stream seeded by the sweep seed;
* ``draws = n, draws_from = "file.csv"``: the first ``n`` rows of a CSV file whose header
  names model parameter keys (values in the schema units), e.g. a posterior sample saved by
  calibration.

Values fixed in ``[parameters]`` or swept as factors override the drawn ones. Random streams
of the simulations do not depend on the draw: the same patient and replicate see the same
random numbers under every draw and every scenario.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import NksimInputError
from ..parameters import ParameterSet
from ..quantities import PARAMETERS

#: spawn_key of the draws' random stream (patient streams use 2-element keys).
DRAW_STREAM_KEY = 2**32 + 1


def prior_draws(params: ParameterSet, n: int, seed: int, source: str = "<sweep>") -> list[dict[str, float]]:
    """``n`` draws from the uniform priors of ``params`` (keys in sorted order)."""
    priors = params.priors()
    if not priors:
        raise NksimInputError(f"model '{params.name}' declares no prior ranges to draw from", source=source,
                              key="cohort.draws_from")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(DRAW_STREAM_KEY,))))
    keys = sorted(priors)
    u = rng.random((n, len(keys)))
    out = []
    for row in u:
        d = {}
        for j, k in enumerate(keys):
            lo, hi = priors[k]
            if PARAMETERS[k].integer:
                d[k] = float(min(hi, math.floor(math.ceil(lo) + row[j] * (math.floor(hi) - math.ceil(lo) + 1))))
            else:
                d[k] = float(lo + row[j] * (hi - lo))
        out.append(d)
    for i, d in enumerate(out):
        params.with_values(d, origin=f"{source} prior draw {i}")  # validates
    return out


def file_draws(params: ParameterSet, path: str | Path, n: int) -> list[dict[str, float]]:
    """The first ``n`` rows of a CSV file of parameter values (header = parameter keys)."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise NksimInputError(f"cannot read draws file: {exc}", source=p) from None
    if not rows or not rows[0]:
        raise NksimInputError("empty draws file; expected a header of parameter keys and one row per draw", source=p)
    header = [h.strip() for h in rows[0]]
    for h in header:
        if h not in PARAMETERS:
            raise NksimInputError("unknown parameter in header; allowed keys are listed in nksim/quantities.py",
                                  source=p, key=h)
    if len(set(header)) != len(header):
        raise NksimInputError("duplicate column in header", source=p)
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if len(body) < n:
        raise NksimInputError(f"has {len(body)} draws but the sweep asks for cohort.draws = {n}", source=p)
    out = []
    for i, r in enumerate(body[:n]):
        if len(r) != len(header):
            raise NksimInputError(f"row {i + 1} has {len(r)} values, header has {len(header)}", source=p)
        d = {}
        for k, text in zip(header, r):
            try:
                d[k] = float(text)
            except ValueError:
                raise NksimInputError(f"row {i + 1}: {text!r} is not a number", source=p, key=k) from None
        params.with_values(d, origin=f"{p} row {i + 1}")  # validates range and units' meaning
        out.append(d)
    return out


def parameter_draws(params: ParameterSet, n: int, draws_from: str, seed: int, source: str) -> list[dict[str, float]]:
    """The sweep's draws: ``[{}]`` (model values) when ``n == 0``."""
    if n == 0:
        return [{}]
    if draws_from == "prior":
        return prior_draws(params, n, seed, source)
    return file_draws(params, draws_from, n)
