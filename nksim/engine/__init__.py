"""The numba engine: kernel (``kernel``), array layout (``layout``), input building (``build``)."""
from .build import Resolution, event_arrays, kernel_parameters, resolution
from .kernel import run_patient

__all__ = ["Resolution", "event_arrays", "kernel_parameters", "resolution", "run_patient"]
