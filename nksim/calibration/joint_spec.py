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
    ``key = [lo, hi]`` to replace one (inside the parameter's allowed range);
    ``[fit.observation_sd_log10]``: ``row = sd`` (>= 0, log10 units), the own error of a quantity
    row's published value; ``[fit.excluded]``: ``row = "reason"``, rows of ``roles`` left out of the
    likelihood (scored and reported all the same); ``[fit.informative_priors]``: ``key = {median,
    q05, q95, source}``, a Gaussian on the parameter's sampling scale, mean at the median and standard
    deviation (q95 - q05) / (2 x 1.645) (the 90 % range's width; a skewed range is made symmetric), cut
    to the prior box (e.g. an earlier stage's posterior).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import show
from ..errors import NksimInputError
from ..fileio import check_keys, read_toml
from .config import FitParameter

_TABLES = {"joint": ("model", "roles"), "bank": ("points", "replicates", "chunk", "seed", "cell_diameter"),
           "fit": ("parameters", "priors", "observation_sd_log10", "excluded", "informative_priors")}


@dataclass(frozen=True)
class InformativePrior:
    """A Gaussian prior on a parameter's sampling scale (median, central 90 % range) and its source."""

    key: str
    median: float
    q05: float
    q95: float
    source: str


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
    observation_sd_log10: tuple[tuple[str, float], ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()
    informative_priors: tuple[InformativePrior, ...] = ()

    @property
    def lattice_overrides(self) -> dict[str, float]:
        """The bank's lattice overrides on top of the calibration resolution."""
        return {"lattice.cell_diameter": self.cell_diameter}

    def log_prior(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """Log density on the unit cube of the informative priors (relative to uniform), or None."""
        if not self.informative_priors:
            return None
        index = {f.key: j for j, f in enumerate(self.parameters)}
        terms = []
        for ip in self.informative_priors:
            f = self.parameters[index[ip.key]]
            lo, hi = f.bounds
            mu = (f.to_unit(ip.median) - lo) / (hi - lo)
            sd = (f.to_unit(ip.q95) - f.to_unit(ip.q05)) / (2.0 * 1.6448536269514722) / (hi - lo)
            terms.append((index[ip.key], mu, sd))

        def log_prior(u: np.ndarray) -> np.ndarray:
            u = np.atleast_2d(u)
            return sum(-0.5 * ((u[:, j] - mu) / sd) ** 2 for j, mu, sd in terms)

        return log_prior




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
    sds = f.get("observation_sd_log10", {})
    if not isinstance(sds, dict):
        raise NksimInputError("must be a table of row = sd", source=src, key="fit.observation_sd_log10")
    for r, v in sds.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 2.0:
            raise NksimInputError(f"must be a number in [0, 2] (log10 units), got {show(v)}", source=src,
                                  key=f"fit.observation_sd_log10.{r}")
    exc = f.get("excluded", {})
    if not isinstance(exc, dict) or not all(isinstance(v, str) and v.strip() for v in exc.values()):
        raise NksimInputError("must be a table of row = \"reason\" (a non-empty reason for each)", source=src,
                              key="fit.excluded")
    from .registry import load_registry

    known = {o.name for o in load_registry().observations}
    for r in (*sds, *exc):
        if r not in known:
            raise NksimInputError(f"names no registry row {show(r)}", source=src,
                                  key=f"fit.{'excluded' if r in exc else 'observation_sd_log10'}.{r}")
    infos = []
    by_key = {fp.key: fp for fp in fit}
    ips = f.get("informative_priors", {})
    if not isinstance(ips, dict):
        raise NksimInputError("must be a table of key = {median, q05, q95, source}", source=src,
                              key="fit.informative_priors")
    for k, t in ips.items():
        where = f"fit.informative_priors.{k}"
        if k not in by_key:
            raise NksimInputError(f"{show(k)} is not in fit.parameters", source=src, key=where)
        if not isinstance(t, dict):
            raise NksimInputError("must be a table {median, q05, q95, source}", source=src, key=where)
        check_keys(t, ("median", "q05", "q95", "source"), source=src, prefix=where)
        vals = [t.get(x) for x in ("q05", "median", "q95")]
        fp = by_key[k]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) \
                or not vals[0] < vals[1] < vals[2] or not fp.lo <= vals[0] or not vals[2] <= fp.hi:
            raise NksimInputError(f"needs q05 < median < q95 inside the prior [{fp.lo:g}, {fp.hi:g}] {fp.unit}, "
                                  f"got {show(vals)}", source=src, key=where)
        if not isinstance(t.get("source"), str) or not t["source"].strip():
            raise NksimInputError("needs a source (where the numbers come from)", source=src, key=f"{where}.source")
        infos.append(InformativePrior(k, float(vals[1]), float(vals[0]), float(vals[2]), t["source"].strip()))
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
        observation_sd_log10=tuple((r, float(v)) for r, v in sds.items()),
        excluded=tuple((r, v.strip()) for r, v in exc.items()),
        informative_priors=tuple(infos),
    )
