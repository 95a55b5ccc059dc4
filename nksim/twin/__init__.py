"""A twin for one patient: ``nksim twin`` (condition on her series, compare her next infusions).

Modules: :mod:`~nksim.twin.spec` (the TOML spec), :mod:`~nksim.twin.likelihood` (assay error model,
importance weights, resampling), :mod:`~nksim.twin.run` (bank, conditioning, decision, result
Dataset), :mod:`~nksim.twin.report` (REPORT.md, figure), :mod:`~nksim.twin.cli`.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {"twin": "run", "TwinResult": "run", "load_spec": "spec", "TwinSpec": "spec", "AssayModel": "likelihood"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
