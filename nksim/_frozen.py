"""Pickling support for frozen dataclasses that hold read-only ``MappingProxyType`` fields.

``MappingProxyType`` cannot be pickled, yet ParameterSet / Protocol / Patient must travel to
Dask workers (calibration). ``__reduce__ = reduce_frozen`` turns proxy fields into plain dicts
on the way out and back into proxies on the way in; nothing else changes.
"""
from __future__ import annotations

from dataclasses import fields
from types import MappingProxyType
from typing import Any


def _rebuild(cls: type, values: dict[str, Any], proxied: tuple[str, ...]) -> Any:
    for name in proxied:
        values[name] = MappingProxyType(values[name])
    return cls(**values)


def reduce_frozen(obj: Any) -> tuple:
    """``__reduce__`` for a frozen dataclass whose mapping fields are ``MappingProxyType``."""
    values: dict[str, Any] = {}
    proxied = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, MappingProxyType):
            v = dict(v)
            proxied.append(f.name)
        values[f.name] = v
    return (_rebuild, (type(obj), values, tuple(proxied)))
