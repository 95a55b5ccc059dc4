"""nksim: spatial agent-based model of adoptive NK-cell therapy of AML.

Public API::

    load_parameters, ParameterSet     # models/*.toml
    load_protocol, Protocol, Event    # experiments/protocols/*.toml
    simulate, simulate_cohort         # -> xarray.Dataset
    write_netcdf, open_output         # safe netCDF I/O (nksim.io)
    classify_response, time_to_progression

Subpackages: ``nksim.sweep`` (schedule sweeps on Dask into Zarr: ``run_sweep``, ``summarize``,
``open_sweep``), ``nksim.optimise`` (the best schedule of a declared space under posterior uncertainty:
``optimise``, ``Candidate``, ``load_spec``), ``nksim.calibration`` (trial data, ABC-SMC, Morris screen,
parameter recovery, predictive checks, the trial registry and its scoring: ``run_calibration``,
``run_screen``, ``run_recovery``, ``load_registry``, ``score_registry``), ``nksim.mesa_ref``
(Mesa reference model: ``simulate_reference``), ``nksim.engine`` (the numba kernel),
``nksim.plot`` (figures: time courses, swimmer, Kaplan-Meier, heatmaps, lattice snapshots,
prior vs posterior, predictive checks, Morris screen, parameter recovery), ``nksim.io`` (file I/O:
atomic netCDF writing and safe reading, the low-level Zarr I/O of sweep stores).
"""
from . import _xarray_compat  # noqa: F401  (first: keeps xarray from importing dask.array, 0.3-0.4 s)
from ._version import __version__
from .errors import NksimInputError, NksimWarning, OutputExistsError
from .io import open_output, write_netcdf
from .observables import RESPONSE_CODES, classify_response, time_to_progression
from .parameters import ParameterSet, load_parameters
from .protocol import Event, Patient, Protocol, load_protocol
from .simulate import simulate, simulate_cohort

__all__ = [
    "__version__",
    "NksimInputError",
    "NksimWarning",
    "OutputExistsError",
    "RESPONSE_CODES",
    "classify_response",
    "time_to_progression",
    "open_output",
    "write_netcdf",
    "ParameterSet",
    "load_parameters",
    "Event",
    "Patient",
    "Protocol",
    "load_protocol",
    "simulate",
    "simulate_cohort",
]
