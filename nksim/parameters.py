"""Model parameter sets: loading, validation and the immutable parameter object.

A parameter set is a TOML file (``models/<name>.toml``) with one table per
parameter::

    [nk.speed]
    value = 5.0
    unit = "um min-1"
    description = "NK cell crawling speed in marrow"
    source = "Ichise 2022 (mouse, in vivo)"
    prior = [2.0, 10.0]          # only for calibrated parameters

and a ``[meta]`` table (``name``, ``status``, ``description``, optional
``extends = "default"`` to inherit every parameter of another set and override
some). Keys, units and allowed ranges are declared in :mod:`nksim.quantities`.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ._frozen import reduce_frozen
from .checks import check_number, check_table
from .errors import DeprecatedKeyWarning, NksimInputError, OutsidePriorWarning
from .fileio import check_keys, read_toml
from .quantities import PARAMETER_ALIASES, PARAMETERS, RETIRED_PARAMETERS, SECTIONS, ParamSpec
from .resources import data_path
from .units import check_unit

#: Folder of the shipped parameter sets (``models/`` at the repository root; package data in a wheel).
MODELS_DIR = data_path("models")

#: The declared TOML type of every field of a parameter's table and of ``[meta]`` (checked by
#: :func:`nksim.checks.check_table`: a wrong type is an error naming the file, the key and the type).
PARAM_FIELD_TYPES = {"value": "number", "unit": "string", "description": "string", "source": "string",
                     "prior": "array of numbers"}
META_FIELD_TYPES = {"name": "string", "status": "string", "description": "string", "extends": "string",
                    "provenance": "string"}
_PARAM_FIELDS = set(PARAM_FIELD_TYPES)
_META_FIELDS = set(META_FIELD_TYPES)


@dataclass(frozen=True)
class Parameter:
    """One parameter value with its unit, description, source and optional prior."""

    key: str
    value: float
    unit: str
    description: str
    source: str
    prior: tuple[float, float] | None = None


@dataclass(frozen=True)
class ParameterSet:
    """An immutable, validated set of model parameters.

    Index it with dotted keys: ``params["nk.speed"]`` gives the value in the
    unit declared in :data:`nksim.quantities.PARAMETERS` (``params.unit("nk.speed")``).
    """

    __reduce__ = reduce_frozen

    name: str
    status: str
    origin: str
    parameters: Mapping[str, Parameter] = field(repr=False)

    def __getitem__(self, key: str) -> float:
        try:
            return self.parameters[key].value
        except KeyError:
            raise KeyError(f"unknown parameter '{key}'") from None

    def __contains__(self, key: object) -> bool:
        return key in self.parameters

    def keys(self):
        """The parameter keys (``section.name``)."""
        return self.parameters.keys()

    def unit(self, key: str) -> str:
        """The unit of parameter ``key`` (e.g. ``"day-1"``)."""
        return self.parameters[key].unit

    def values(self) -> dict[str, float]:
        """All values as a plain ``{key: value}`` dict."""
        return {k: p.value for k, p in self.parameters.items()}

    def priors(self) -> dict[str, tuple[float, float]]:
        """Prior ranges of the calibrated parameters."""
        return {k: p.prior for k, p in self.parameters.items() if p.prior is not None}

    def with_values(self, overrides: Mapping[str, float], *, origin: str = "<override>",
                    warn_prior: bool = False) -> ParameterSet:
        """A new set with some values replaced (validated like file input).

        ``warn_prior``: warn (:class:`~nksim.errors.OutsidePriorWarning`) for a value outside its
        parameter's prior range (user-given values, e.g. a sweep spec's; off for the values that
        calibration and sampling generate).
        """
        params = dict(self.parameters)
        for key, value in resolve_aliases(overrides, origin).items():
            if key not in PARAMETERS:
                raise NksimInputError(_unknown_msg(key), source=origin, key=key)
            spec = PARAMETERS[key]
            params[key] = replace(params[key], value=_check_value(value, spec, origin, key))
            if warn_prior:
                warn_outside_prior(params[key], origin)
        return replace(self, parameters=MappingProxyType(params), origin=f"{self.origin} + {origin}")

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the values: identifies the parameter set (:func:`values_digest`)."""
        return values_digest(self.values())

    def as_json(self) -> str:
        """Values with units as a JSON string (stored in output attributes)."""
        return json.dumps(
            {k: {"value": p.value, "unit": p.unit} for k, p in self.parameters.items()}, sort_keys=True
        )


def values_digest(values: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of ``{key: value}`` as sorted JSON: :meth:`ParameterSet.digest` of those values."""
    return hashlib.sha256(json.dumps(dict(values), sort_keys=True).encode()).hexdigest()[:16]


def resolve_aliases(values: Mapping[str, Any], source: str | Path) -> dict[str, Any]:
    """``values`` with deprecated keys replaced by the keys they set and retired keys dropped (each warned once).

    A deprecated key (:data:`nksim.quantities.PARAMETER_ALIASES`) gives its value to every key it
    stands for, unless ``values`` also has that key itself (an error: two values for one key).
    A retired key (:data:`nksim.quantities.RETIRED_PARAMETERS`) is ignored. Both warn
    (:class:`~nksim.errors.DeprecatedKeyWarning`).
    """
    out = {k: v for k, v in values.items() if k not in PARAMETER_ALIASES and k not in RETIRED_PARAMETERS}
    for key, value in values.items():
        if key in RETIRED_PARAMETERS:
            warnings.warn(f"{source}: key '{key}' is retired and ignored ({RETIRED_PARAMETERS[key]})",
                          DeprecatedKeyWarning, stacklevel=3)
        elif key in PARAMETER_ALIASES:
            new = PARAMETER_ALIASES[key]
            both = [k for k in new if k in values]
            if both:
                raise NksimInputError(f"deprecated key '{key}' sets {list(new)}, which are also given ({both}): "
                                      "give the new keys only", source=source, key=key)
            warnings.warn(f"{source}: key '{key}' is deprecated: its value sets {', '.join(new)} (give those "
                          "instead)", DeprecatedKeyWarning, stacklevel=3)
            out.update(dict.fromkeys(new, value))
    return out


#: Sections of deprecated and retired keys only (a model file of an earlier release may still have them).
_OLD_SECTIONS = frozenset(k.split(".")[0] for k in (*PARAMETER_ALIASES, *RETIRED_PARAMETERS)) - set(SECTIONS)


def _unknown_msg(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, PARAMETERS.keys(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown parameter{hint}; allowed keys are listed in nksim/quantities.py"


def warn_outside_prior(param: Parameter, source: str | Path, prior: tuple[float, float] | None = None) -> bool:
    """Warn (:class:`~nksim.errors.OutsidePriorWarning`) if ``param``'s value lies outside its prior range.

    ``prior`` defaults to the parameter's own. Returns whether it warned. Not an error: only the
    hard ranges of :mod:`nksim.quantities` are errors.
    """
    prior = prior if prior is not None else param.prior
    if prior is None or prior[0] <= param.value <= prior[1]:
        return False
    warnings.warn(f"{source}: key '{param.key}': value {param.value:g} {param.unit} is outside its prior range "
                  f"[{prior[0]:g}, {prior[1]:g}] (allowed, but calibration never explored it; the hard limits are "
                  "in nksim/quantities.py)", OutsidePriorWarning, stacklevel=3)
    return True


def _check_value(value: Any, spec: ParamSpec, source: str, key: str) -> float:
    return check_number(value, source=source, key=key, lo=spec.lo, hi=spec.hi, unit=spec.unit,
                        integer=spec.integer, types=(int, float, np.integer, np.floating))


def resolve_model_path(model: str | Path) -> Path:
    """Turn a model name (``"default"``) or a path into an existing TOML path."""
    p = Path(model)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise NksimInputError("parameter file not found", source=p)
        return p
    candidate = MODELS_DIR / f"{model}.toml"
    if not candidate.is_file():
        known = sorted(q.stem for q in MODELS_DIR.glob("*.toml"))
        raise NksimInputError(f"no model named '{model}'; shipped models: {known}", source=candidate)
    return candidate


def load_parameters(model: str | Path = "default") -> ParameterSet:
    """Load and validate a parameter set by name (``models/<name>.toml``) or path."""
    path = resolve_model_path(model)
    return _load(path, seen=())


def _load(path: Path, seen: tuple[Path, ...]) -> ParameterSet:
    path = path.resolve()
    if path in seen:
        raise NksimInputError("circular 'extends' chain", source=path, key="meta.extends")
    data = read_toml(path, "parameter file")
    meta = data.pop("meta", {})
    if not isinstance(meta, dict):
        raise NksimInputError("[meta] must be a table", source=path, key="meta")
    check_keys(meta, _META_FIELDS, source=path, prefix="meta")
    check_table(meta, META_FIELD_TYPES, source=path, key="meta")
    base: dict[str, Parameter] = {}
    if "extends" in meta:
        ext = meta["extends"]
        if not ext.strip():
            raise NksimInputError("must name a model or a .toml path", source=path, key="meta.extends")
        try:
            parent = (path.parent / ext) if ext.endswith(".toml") else resolve_model_path(ext)
        except NksimInputError as exc:
            raise NksimInputError(f"cannot resolve {ext!r}: {exc}", source=path, key="meta.extends") from None
        if not parent.is_file():
            raise NksimInputError(f"parent parameter file {parent} not found", source=path, key="meta.extends")
        base = dict(_load(parent, seen + (path,)).parameters)

    params: dict[str, Parameter] = dict(base)
    for section, table in data.items():
        if section not in SECTIONS and section not in _OLD_SECTIONS:
            raise NksimInputError(f"unknown section; allowed sections: {list(SECTIONS)}", source=path, key=section)
        if not isinstance(table, dict):
            raise NksimInputError("must be a table of parameters", source=path, key=section)
        for name, entry in table.items():
            key = f"{section}.{name}"
            if key in RETIRED_PARAMETERS:
                warnings.warn(f"{path}: key '{key}' is retired and ignored ({RETIRED_PARAMETERS[key]})",
                              DeprecatedKeyWarning, stacklevel=3)
                continue
            targets = PARAMETER_ALIASES.get(key, (key,))
            if key not in PARAMETERS and key not in PARAMETER_ALIASES:
                raise NksimInputError(_unknown_msg(key), source=path, key=key)
            if key in PARAMETER_ALIASES:
                both = [k for k in targets if k.split(".", 1)[1] in data.get(k.split(".")[0], {})]
                if both:
                    raise NksimInputError(f"deprecated key '{key}' sets {list(targets)}, which the file also "
                                          f"gives ({both}): give the new keys only", source=path, key=key)
                warnings.warn(f"{path}: key '{key}' is deprecated: its value sets {', '.join(targets)} (give those "
                              "instead)", DeprecatedKeyWarning, stacklevel=3)
            for target in targets:
                entry_t = entry
                if key in PARAMETER_ALIASES and isinstance(entry, dict) and "description" in entry:
                    entry_t = {**entry, "description": f"{entry['description']} (from deprecated key {key})"}
                params[target] = _parse_entry(entry_t, PARAMETERS[target], path, key)
                params[target] = replace(params[target], key=target)
                inherited = base[target].prior if target in base else None
                warn_outside_prior(params[target], path, params[target].prior or inherited)

    missing = [k for k in PARAMETERS if k not in params]
    if missing:
        raise NksimInputError(
            f"missing parameters (every parameter must be declared, or use [meta] extends): {missing}",
            source=path,
        )
    return ParameterSet(
        name=meta.get("name", path.stem),
        status=meta.get("status", "unspecified"),
        origin=str(path),
        parameters=MappingProxyType({k: params[k] for k in PARAMETERS}),
    )


def _parse_entry(entry: Any, spec: ParamSpec, path: Path, key: str) -> Parameter:
    if not isinstance(entry, dict):
        raise NksimInputError(
            "must be a table with value, unit, description and source", source=path, key=key
        )
    for f in entry:
        if f not in _PARAM_FIELDS:
            raise NksimInputError(f"unknown field '{f}'; allowed: {sorted(_PARAM_FIELDS)}", source=path, key=key)
    for f in ("value", "unit", "description", "source"):
        if f not in entry:
            raise NksimInputError(f"missing field '{f}'", source=path, key=key)
    check_unit(entry["unit"], spec.unit, source=str(path), key=f"{key}.unit")  # names the unit expected
    value = _check_value(entry["value"], spec, str(path), f"{key}.value")  # names the range
    check_table(entry, PARAM_FIELD_TYPES, source=path, key=key)  # every other field's type
    for f in ("description", "source"):
        if not isinstance(entry[f], str) or not entry[f].strip():
            raise NksimInputError(f"field '{f}' must be a non-empty string", source=path, key=key)
    prior = None
    if "prior" in entry:
        pr = entry["prior"]
        if not (isinstance(pr, list) and len(pr) == 2):
            raise NksimInputError("prior must be a list [lo, hi]", source=path, key=f"{key}.prior")
        lo = _check_value(pr[0], spec, str(path), f"{key}.prior[0]")
        hi = _check_value(pr[1], spec, str(path), f"{key}.prior[1]")
        if not lo < hi:
            raise NksimInputError(f"prior [{lo:g}, {hi:g}] must have lo < hi", source=path, key=f"{key}.prior")
        prior = (lo, hi)
    return Parameter(key, value, spec.unit, entry["description"].strip(), entry["source"].strip(), prior)
