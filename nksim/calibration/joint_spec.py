"""The joint-calibration spec (``calibration/joint/joint.toml``): what is fitted, from which bank.

Tables and keys (unknown ones are errors naming the file and key):

``[joint]``
    ``model`` (a name in ``models/`` or a TOML path; the values of every parameter not fitted),
    ``roles`` (registry roles fitted; default ``["target"]``).
``[bank]``
    ``points`` (>= 1), ``replicates`` (>= 1), ``chunk`` (>= 1), ``seed`` (``[0, 2**64)``),
    ``cell_diameter`` (um, in ``[10, 50]``: the bank's ``lattice.cell_diameter``).
``[fit]``
    ``parameters``: keys of parameters with a prior in the model; ``[fit.priors]`` may give
    ``key = [lo, hi]`` to replace one (inside the parameter's allowed range).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import show
from ..errors import NksimInputError
from ..fileio import check_keys, read_toml
from .config import FitParameter

_TABLES = {"joint": ("model", "roles"), "bank": ("points", "replicates", "chunk", "seed", "cell_diameter"),
           "fit": ("parameters", "priors")}


@dataclass(frozen=True)
class JointSpec:
    """A validated joint-calibration spec (see module docstring)."""

    source: str
    model: str
    roles: tuple[str, ...]
    parameters: tuple[FitParameter, ...]
    points: int
    replicates: int
    chunk: int
    seed: int
    cell_diameter: float

    @property
    def lattice_overrides(self) -> dict[str, float]:
        """The bank's lattice overrides on top of the calibration resolution."""
        return {"lattice.cell_diameter": self.cell_diameter}


def _int(t: dict[str, Any], key: str, src: str, table: str, lo: int, hi: int, default: int) -> int:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v < hi:
        raise NksimInputError(f"must be an integer in [{lo}, {hi}), got {show(v)}", source=src, key=f"{table}.{key}")
    return int(v)


def load_joint_spec(path: str | Path) -> JointSpec:
    """Read and validate a joint-calibration spec; errors name the file, the key and the allowed values."""
    from ..parameters import load_parameters
    from ..quantities import PARAMETERS
    from .scoring import _roles
    from .screen import prior_parameter

    src = str(path)
    doc = read_toml(path, "joint-calibration spec")
    check_keys(doc, _TABLES, source=src, what="tables")
    for table, keys in _TABLES.items():
        t = doc.get(table, {})
        if not isinstance(t, dict):
            raise NksimInputError("must be a table", source=src, key=table)
        check_keys(t, keys, source=src, prefix=table)
    j, b, f = doc.get("joint", {}), doc.get("bank", {}), doc.get("fit", {})
    model = j.get("model", "default")
    if not isinstance(model, str) or not model:
        raise NksimInputError(f"must be a model name or path, got {show(model)}", source=src, key="joint.model")
    base = Path(path).parent
    model_ref = str(base / model) if model.endswith(".toml") and not Path(model).is_absolute() else model
    params = load_parameters(model_ref)
    roles = _roles(j.get("roles", ["target"]), source=src)
    keys = f.get("parameters")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise NksimInputError("must be a non-empty list of parameter keys", source=src, key="fit.parameters")
    if len(set(keys)) != len(keys):
        raise NksimInputError("lists a parameter twice", source=src, key="fit.parameters")
    priors = params.priors()
    over = f.get("priors", {})
    if not isinstance(over, dict):
        raise NksimInputError("must be a table of key = [lo, hi]", source=src, key="fit.priors")
    for k in over:
        if k not in keys:
            raise NksimInputError(f"gives a prior for {show(k)}, which fit.parameters does not list", source=src,
                                  key=f"fit.priors.{k}")
    fit = []
    for k in keys:
        if k not in PARAMETERS:
            raise NksimInputError(f"unknown parameter {show(k)}", source=src, key="fit.parameters")
        if k in over:
            v = over[k]
            numbers = isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            if not numbers or not v[0] < v[1]:
                raise NksimInputError(f"must be [lo, hi] with lo < hi, got {show(v)}", source=src,
                                      key=f"fit.priors.{k}")
            spec = PARAMETERS[k]
            if v[0] < spec.lo or v[1] > spec.hi:
                raise NksimInputError(f"must lie in the parameter's allowed range [{spec.lo:g}, {spec.hi:g}] "
                                      f"{spec.unit}, got {show(v)}", source=src, key=f"fit.priors.{k}")
            lo, hi = float(v[0]), float(v[1])
        elif k in priors:
            lo, hi = priors[k]
        else:
            raise NksimInputError(f"{k} has no prior in {params.origin}; give one in [fit.priors]", source=src,
                                  key="fit.parameters")
        fit.append(prior_parameter(k, lo, hi))
    cd = b.get("cell_diameter", 40.0)
    if isinstance(cd, bool) or not isinstance(cd, (int, float)) or not math.isfinite(cd) or not 10.0 <= cd <= 50.0:
        raise NksimInputError(f"must be a number of um in [10, 50], got {show(cd)}", source=src,
                              key="bank.cell_diameter")
    return JointSpec(
        source=src, model=model_ref, roles=roles, parameters=tuple(fit),
        points=_int(b, "points", src, "bank", 1, 2**24, 4096),
        replicates=_int(b, "replicates", src, "bank", 1, 1000, 1),
        chunk=_int(b, "chunk", src, "bank", 1, 2**20, 64),
        seed=_int(b, "seed", src, "bank", 0, 2**63, 20261206),
        cell_diameter=float(cd),
    )
