"""Calibration configuration (TOML): what to fit, to which data, at which resolution, how hard.

A config file (see ``calibration/ahmadvand2023.toml``) has these tables; every key is
checked, unknown keys are errors naming the file and the allowed keys::

    [calibration]  name, description, model, protocol, seed
    [data]         outcomes, targets, series          (paths relative to the config file)
    [simulator]    parameter overrides that set the calibration resolution
                   (e.g. "lattice.side", "lattice.voxel_side"), end_day, early_stop
    [fit]          parameters = [...]; [fit.prior] {key = [lo, hi]}; [fit.scale] {key = "log"|"linear"}
    [distance]     virtual_trials, chimerism_weight, progression_timing ("interval" | "any":
                   progression after SD binned by the assessment interval of the PD call, or
                   merged into one category -- nksim.calibration.summaries)
    [abc]          population_size, max_generations, min_epsilon, max_simulations,
                   min_acceptance_rate, epsilon_quantile, posterior_draws
    [recovery]     datasets, population_size, max_generations, max_simulations (``--recovery``)
    [smoke]        any of the [simulator]/[distance]/[abc] keys: the tiny ``--smoke`` version
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..checks import check_number, check_seed, check_table, check_type
from ..errors import NksimInputError
from ..fileio import check_keys, read_toml
from ..parameters import ParameterSet, load_parameters
from ..protocol import resolve_protocol_path
from ..quantities import PARAMETER_ALIASES, PARAMETERS
from ..resources import data_path

#: Folder of the shipped calibration configs, data and results (``calibration/`` at the repository
#: root; package data in a wheel).
CALIBRATION_DIR = data_path("calibration")

#: The declared TOML type of every fixed key of a config, by table (checked by
#: :func:`nksim.checks.check_table` before any value is used). ``[simulator]`` and ``[smoke]`` also
#: take model parameter keys (numbers), ``[fit.prior]`` and ``[fit.scale]`` one entry per fitted key.
FIELD_TYPES: dict[str, dict[str, str]] = {
    "calibration": {"name": "string", "description": "string", "model": "string", "protocol": "string",
                    "seed": "integer"},
    "data": {"outcomes": "string", "targets": "string", "series": "string"},
    "simulator": {"end_day": "number", "early_stop": "boolean"},
    "fit": {"parameters": "array of strings", "prior": "table", "scale": "table"},
    "distance": {"virtual_trials": "integer", "chimerism_weight": "number", "progression_timing": "string"},
    "abc": {"population_size": "integer", "max_generations": "integer", "min_epsilon": "number",
            "max_simulations": "integer", "min_acceptance_rate": "number", "epsilon_quantile": "number",
            "posterior_draws": "integer", "transition_scaling": "number"},
    "recovery": {"datasets": "integer", "population_size": "integer", "max_generations": "integer",
                 "max_simulations": "integer"},
    "smoke": {},  # checked against simulator/distance/abc keys
}
_TABLES = {name: set(fields) for name, fields in FIELD_TYPES.items()}


@dataclass(frozen=True)
class FitParameter:
    """A calibrated parameter: prior ``U(lo, hi)`` on the ``scale`` (log: uniform in log10)."""

    key: str
    lo: float
    hi: float
    scale: str  # "linear" or "log"
    unit: str
    integer: bool = False

    @property
    def safe_name(self) -> str:
        """Name without dots (pyabc parameter / database column)."""
        return self.key.replace(".", "__")

    def to_unit(self, value: float) -> float:
        """Model value -> position on the prior's sampling scale."""
        return math.log10(value) if self.scale == "log" else value

    def from_unit(self, u: float) -> float:
        """Sampling-scale position -> model value (rounded for integer parameters)."""
        v = 10.0 ** u if self.scale == "log" else u
        return float(round(v)) if self.integer else v

    @property
    def bounds(self) -> tuple[float, float]:
        """Prior bounds on the sampling scale."""
        return (self.to_unit(self.lo), self.to_unit(self.hi))


@dataclass(frozen=True)
class AbcSettings:
    """ABC-SMC settings of a calibration config (the ``[abc]`` table): population, stopping rules, draws."""

    population_size: int = 200
    max_generations: int = 8
    min_epsilon: float = 0.0
    max_simulations: int = 20000
    min_acceptance_rate: float = 0.01
    epsilon_quantile: float = 0.5
    posterior_draws: int = 200
    #: factor on the covariance of pyabc's multivariate-normal proposal (Silverman bandwidth). With
    #: 11 parameters the default (1) gives importance weights so uneven that the effective sample
    #: size falls to 2-20 % of the population; 2 keeps it near 50 % at the same acceptance rate
    #: (measured: benchmarks/README.md, Calibration).
    transition_scaling: float = 2.0


@dataclass(frozen=True)
class RecoverySettings:
    """Sizes of the parameter-recovery study (``[recovery]``)."""

    datasets: int = 10
    population_size: int = 100
    max_generations: int = 5
    max_simulations: int = 3000


@dataclass(frozen=True)
class CalibrationConfig:
    """A validated calibration configuration."""

    name: str
    description: str
    origin: str
    model: str
    protocol: str
    seed: int
    outcomes: Path
    targets: Path | None
    series: Path | None
    simulator_overrides: Mapping[str, float]
    end_day: float
    early_stop: bool
    fit: tuple[FitParameter, ...]
    virtual_trials: int
    chimerism_weight: float
    abc: AbcSettings
    smoke: Mapping[str, Any] = field(default_factory=dict)
    is_smoke: bool = False
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    #: "interval": progression after SD binned by the assessment interval of the PD call (the time to
    #: conversion, interval-censored); "any": one progression category (nksim.calibration.summaries)
    progression_timing: str = "interval"

    def base_parameters(self) -> ParameterSet:
        """The model at the calibration resolution (before fitted values are applied)."""
        p = load_parameters(self.model)
        return p.with_values(dict(self.simulator_overrides), origin=f"{self.origin} [simulator]")

    def smoke_version(self) -> CalibrationConfig:
        """The tiny ``--smoke`` configuration (the [smoke] table applied)."""
        sim = dict(self.simulator_overrides)
        abc = {}
        top: dict[str, Any] = {}
        for k, v in self.smoke.items():
            if k in _TABLES["abc"]:
                abc[k] = v
            elif k in _TABLES["distance"] or k in ("end_day", "early_stop"):
                top[k] = v
            else:
                sim[k] = v
        return replace(self, simulator_overrides=sim, abc=replace(self.abc, **abc), is_smoke=True,
                       name=f"{self.name}-smoke", **top)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description (stored in outputs)."""
        return {
            "name": self.name, "origin": self.origin, "model": self.model, "protocol": self.protocol,
            "seed": self.seed, "outcomes": str(self.outcomes), "targets": str(self.targets) if self.targets else None,
            "series": str(self.series) if self.series else None, "simulator": dict(self.simulator_overrides),
            "end_day": self.end_day, "early_stop": self.early_stop,
            "fit": [{"key": f.key, "prior": [f.lo, f.hi], "scale": f.scale, "unit": f.unit} for f in self.fit],
            "virtual_trials": self.virtual_trials, "chimerism_weight": self.chimerism_weight,
            "progression_timing": self.progression_timing, "abc": self.abc.__dict__, "smoke": self.is_smoke,
        }


def _err(msg: str, src: str, key: str) -> NksimInputError:
    return NksimInputError(msg, source=src, key=key)


def _check_keys(table: Mapping[str, Any], allowed: set[str], src: str, name: str) -> None:
    check_keys(table, allowed, source=src, prefix=name, what=f"keys in [{name}]")


def _int(v: Any, src: str, key: str, lo: int, hi: int) -> int:
    check_number(v, source=src, key=key, lo=lo, hi=hi, integer=True, types=(int,))
    return int(v)  # the original int: exact even beyond float precision (seeds)


def _float(v: Any, src: str, key: str, lo: float, hi: float) -> float:
    return check_number(v, source=src, key=key, lo=lo, hi=hi)


def _abc_value(k: str, v: Any, src: str, key: str) -> Any:
    if k in ("population_size", "posterior_draws"):
        return _int(v, src, key, 2, 1_000_000)
    if k == "max_generations":
        return _int(v, src, key, 1, 1000)
    if k == "max_simulations":
        return _int(v, src, key, 1, 10**9)
    if k == "min_epsilon":
        return _float(v, src, key, 0.0, 1e12)
    if k == "min_acceptance_rate":
        return _float(v, src, key, 0.0, 1.0)
    if k == "epsilon_quantile":
        return _float(v, src, key, 0.01, 1.0)
    if k == "transition_scaling":
        return _float(v, src, key, 0.01, 100.0)
    raise AssertionError(k)


def _timing(v: Any, src: str, key: str) -> str:
    from .summaries import TIMING_MODES

    if not isinstance(v, str) or v not in TIMING_MODES:
        raise _err(f"must be one of {', '.join(repr(m) for m in TIMING_MODES)} (progression after SD binned by the "
                   f"assessment interval of the PD call, or one category), got {v!r}", src, key)
    return str(v)


def _path(v: Any, base: Path, src: str, key: str, required: bool) -> Path | None:
    if v is None or v == "":
        if required:
            raise _err("a data file is required", src, key)
        return None
    if not isinstance(v, str):
        raise _err(f"must be a path string, got {v!r}", src, key)
    p = Path(v)
    p = p if p.is_absolute() else (base / p)
    if not p.is_file():
        raise _err(f"file not found: {p}", src, key)
    return p


def _simulator(table: Mapping[str, Any], src: str, section: str) -> tuple[dict[str, float], dict[str, Any]]:
    over: dict[str, float] = {}
    other: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{section}.{k}"
        if k == "end_day":
            other[k] = _float(v, src, key, 1.0, 10_000.0)
        elif k == "early_stop":
            if not isinstance(v, bool):
                raise _err(f"must be true or false, got {v!r}", src, key)
            other[k] = v
        elif k in PARAMETERS or k in PARAMETER_ALIASES:  # a deprecated key sets the keys it stands for (warned)
            spec = PARAMETERS[PARAMETER_ALIASES.get(k, (k,))[0]]
            over[k] = _float(v, src, key, spec.lo, spec.hi)
        else:
            raise _err("unknown key: [simulator] takes end_day, early_stop and model parameter keys "
                       "(nksim/quantities.py), e.g. \"lattice.side\"", src, key)
    return over, other


def load_config(path: str | Path) -> CalibrationConfig:
    """Read and validate a calibration config; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        # shipped configs by name: calibration/<name>.toml
        cand = CALIBRATION_DIR / f"{path}.toml"
        if path.suffix != ".toml" and cand.is_file():
            path = cand
        else:
            raise NksimInputError("calibration config not found", source=path)
    src = str(path)
    raw = read_toml(path, "calibration config")
    _check_keys(raw, set(_TABLES), src, "<top level>")
    for name in raw:
        if not isinstance(raw[name], dict):
            raise _err("must be a table", src, name)
    for name, fields in FIELD_TYPES.items():  # the declared type of every fixed key, before any value is used
        if name in raw and name not in ("simulator", "smoke"):  # those two: key by key in _simulator
            _check_keys(raw[name], _TABLES[name], src, name)
            check_table(raw[name], fields, source=src, key=name, what="key")
    cal = raw.get("calibration", {})
    model = cal.get("model", "default")
    protocol = cal.get("protocol", "ahmadvand2023")
    try:
        base = load_parameters(model)
    except NksimInputError as exc:
        raise _err(f"cannot load model {model!r}: {exc}", src, "calibration.model") from None
    try:
        resolve_protocol_path(protocol)
    except NksimInputError as exc:
        raise _err(f"cannot find protocol {protocol!r}: {exc}", src, "calibration.protocol") from None
    # pyabc and the simulation seeds derived from it take a 63-bit seed
    seed = check_seed(cal.get("seed", 0), source=src, key="calibration.seed", limit=2**63)

    data = raw.get("data", {})
    _check_keys(data, _TABLES["data"], src, "data")
    outcomes = _path(data.get("outcomes"), path.parent, src, "data.outcomes", True)
    targets = _path(data.get("targets"), path.parent, src, "data.targets", False)
    series = _path(data.get("series"), path.parent, src, "data.series", False)

    over, other = _simulator(raw.get("simulator", {}), src, "simulator")
    base.with_values(over, origin=f"{src} [simulator]")  # validates the overrides together

    fit_t = raw.get("fit", {})
    _check_keys(fit_t, _TABLES["fit"], src, "fit")
    names = fit_t.get("parameters")
    if not isinstance(names, list) or not names:
        raise _err("must be a non-empty list of parameter keys", src, "fit.parameters")
    if len(set(names)) != len(names):
        raise _err("lists a parameter twice", src, "fit.parameters")
    prior_t = fit_t.get("prior", {})
    scale_t = fit_t.get("scale", {})
    for tname, t in (("fit.prior", prior_t), ("fit.scale", scale_t)):
        if not isinstance(t, dict):
            raise _err("must be a table", src, tname)
        for k in t:
            if k not in names:
                raise _err(f"is not in fit.parameters {names}", src, f"{tname}.{k}")
    model_priors = base.priors()
    fit: list[FitParameter] = []
    for n in names:
        if n in PARAMETER_ALIASES:
            raise _err(f"'{n}' is deprecated (it sets {list(PARAMETER_ALIASES[n])}): fit one of those instead", src,
                       "fit.parameters")
        if n not in PARAMETERS:
            raise _err(f"unknown parameter '{n}' (see nksim/quantities.py)", src, "fit.parameters")
        spec = PARAMETERS[n]
        if n in prior_t:
            pr = check_type(prior_t[n], "array of numbers", source=src, key=f"fit.prior.{n}")
            if len(pr) != 2:
                raise _err(f"must be [lo, hi] (two numbers), got {len(pr)} numbers", src, f"fit.prior.{n}")
            lo, hi = float(pr[0]), float(pr[1])
        elif n in model_priors:
            lo, hi = model_priors[n]
        else:
            raise _err(f"'{n}' has no prior in model '{model}'; give one in [fit.prior]", src, "fit.parameters")
        if not (spec.lo <= lo < hi <= spec.hi):
            raise _err(f"prior [{lo:g}, {hi:g}] must satisfy {spec.lo:g} <= lo < hi <= {spec.hi:g} {spec.unit}",
                       src, f"fit.prior.{n}")
        scale = scale_t.get(n, "linear")
        if scale not in ("linear", "log"):
            raise _err(f"must be 'linear' or 'log', got {scale!r}", src, f"fit.scale.{n}")
        if scale == "log" and lo <= 0:
            raise _err(f"a log-scale prior needs lo > 0, got {lo:g}", src, f"fit.prior.{n}")
        fit.append(FitParameter(n, lo, hi, scale, spec.unit, spec.integer))

    dist = raw.get("distance", {})
    _check_keys(dist, _TABLES["distance"], src, "distance")
    vt = _int(dist.get("virtual_trials", 1), src, "distance.virtual_trials", 1, 1000)
    cw = _float(dist.get("chimerism_weight", 1.0), src, "distance.chimerism_weight", 0.0, 1e6)
    timing = _timing(dist.get("progression_timing", "interval"), src, "distance.progression_timing")

    abc_t = raw.get("abc", {})
    _check_keys(abc_t, _TABLES["abc"], src, "abc")
    abc = AbcSettings(**{k: _abc_value(k, v, src, f"abc.{k}") for k, v in abc_t.items()})

    rec_t = raw.get("recovery", {})
    _check_keys(rec_t, _TABLES["recovery"], src, "recovery")
    rec = RecoverySettings(**{k: _int(v, src, f"recovery.{k}", 2 if k == "population_size" else 1, 10**9)
                              for k, v in rec_t.items()})

    smoke_t = raw.get("smoke", {})
    smoke: dict[str, Any] = {}
    for k, v in smoke_t.items():
        key = f"smoke.{k}"
        if k in _TABLES["abc"]:
            smoke[k] = _abc_value(k, v, src, key)
        elif k == "virtual_trials":
            smoke[k] = _int(v, src, key, 1, 1000)
        elif k == "chimerism_weight":
            smoke[k] = _float(v, src, key, 0.0, 1e6)
        elif k == "progression_timing":
            smoke[k] = _timing(v, src, key)
        else:
            o, x = _simulator({k: v}, src, "smoke")
            smoke.update(o)
            smoke.update(x)
    return CalibrationConfig(
        name=cal.get("name", path.stem), description=cal.get("description", ""), origin=src,
        model=model, protocol=protocol, seed=seed, outcomes=outcomes, targets=targets, series=series,
        simulator_overrides=over, end_day=float(other.get("end_day", 270.0)),
        early_stop=bool(other.get("early_stop", True)), fit=tuple(fit), virtual_trials=vt, chimerism_weight=cw,
        abc=abc, smoke=smoke, recovery=rec, progression_timing=timing)
