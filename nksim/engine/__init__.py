"""The numba engine.

Kernel (``kernel``), array layout (``layout``), input building (``build``), raw results (``raw``).
"""
from . import cache_guard as _cache_guard
from .build import Resolution, event_arrays, kernel_parameters, resolution
from .kernel import run_patient
from .layout import LAYOUT_DIGEST as _LAYOUT_DIGEST
from .raw import RawRun

_cache_guard.check(run_patient, "kernel", _LAYOUT_DIGEST)

__all__ = ["RawRun", "Resolution", "event_arrays", "kernel_parameters", "resolution", "run_patient"]
