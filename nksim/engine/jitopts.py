"""The numba compile options of every engine function, in one place (``docs/architecture.md``, Engine).

* ``error_model="numpy"``: a division by zero gives inf/NaN instead of raising, so numba emits no
  zero test and exception path per division, and LLVM can inline the small blood functions
  (blood right-hand side 125 -> 36 ns; ``benchmarks/README.md``, issue 25). Divisors that can be
  zero are guarded in the code; the others are positive by the parameter schema.
* ``_nrt=False`` (:data:`LEAF_JIT`) on the functions that allocate no array: no atomic reference
  count per array argument of a call that LLVM does not inline (kernel 2.8 -> 2.1 ms per
  calibration-resolution simulation). The option is numba's own but not part of its documented
  API, so it is used only where this numba declares it (:func:`nrt_option_supported`); without
  it every function still compiles, with the runtime's reference counting (slower, same numbers).

``tests/test_engine_jit.py`` checks that every ``@njit`` of the engine uses one of these sets.
"""
from __future__ import annotations


def nrt_option_supported() -> bool:
    """Whether this numba's CPU target accepts the ``_nrt`` compile option."""
    try:
        from numba.core import cpu
    except ImportError:  # pragma: no cover - numba reorganised
        return False
    return hasattr(cpu.CPUTargetOptions, "_nrt")


#: Options of the engine functions that allocate arrays (they need numba's reference-counting runtime).
ENGINE_JIT: dict[str, object] = {"cache": True, "error_model": "numpy"}


def leaf_options(nrt_supported: bool) -> dict[str, object]:
    """:data:`ENGINE_JIT` plus ``_nrt=False`` where numba supports it (for functions that allocate nothing)."""
    return {**ENGINE_JIT, **({"_nrt": False} if nrt_supported else {})}


#: Options of every other engine function: :data:`ENGINE_JIT` without the runtime where numba allows it.
LEAF_JIT: dict[str, object] = leaf_options(nrt_option_supported())
