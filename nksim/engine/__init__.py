"""The numba engine.

Kernel (``kernel``), its random-variate samplers (``samplers``), its inlined PCG64 streams
(``pcg64``), array layout (``layout``), input building (``build``), raw results (``raw``).
"""
from . import blood as _blood
from . import cache_guard as _cache_guard
from . import jitopts as _jitopts
from . import pcg64
from . import samplers as _samplers
from .build import Resolution, event_arrays, kernel_parameters, resolution
from .kernel import run_patient
from .layout import LAYOUT_DIGEST as _LAYOUT_DIGEST
from .raw import RawRun

#: The kernel's compiled code holds the layout's indices, the samplers' machine code and the compile
#: options in effect (numba links called functions into the caller's cache entry but keys it on
#: ``kernel.py`` alone; whether ``_nrt`` is used depends on the installed numba).
KERNEL_DIGEST: str = "-".join([_LAYOUT_DIGEST]
                              + [_cache_guard.file_digest(m.__file__) for m in (_samplers, pcg64, _blood, _jitopts)]
                              + ["nrt" if "_nrt" in _jitopts.LEAF_JIT else "rt"])
# the kernel and every module whose cached functions it calls and that read the layout (blood.py)
_cache_guard.check(run_patient, ("kernel", "blood"), KERNEL_DIGEST)

__all__ = ["RawRun", "Resolution", "pcg64", "event_arrays", "kernel_parameters", "resolution", "run_patient"]
