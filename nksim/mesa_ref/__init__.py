"""Mesa reference model: the engine's rules, one agent per cell, written to be read.

A second, independent implementation of the spatial/agent rules of the numba engine
(``nksim.engine.kernel``) with Mesa 3: every marrow cell is an agent (:class:`Blast`
with a ``susceptible`` trait, :class:`NormalCell`) in a voxel of a periodic
:class:`mesa.discrete_space.OrthogonalVonNeumannGrid` holding at most ``K`` cells, donor
NK cells are :class:`NKCell` agents on the same grid, and a Mesa ``DataCollector``
records the engine's daily variables. Blood, PK, IL-15, parameters and outputs are shared
with the engine. It is a reference for cross-validation (``tests/test_mesa_ref.py``), not
a second engine: it is about two orders of magnitude slower (``benchmarks/bench_mesa.py``).

    from nksim.mesa_ref import PatientModel, simulate_reference
    ds = simulate_reference(params, protocol, seed=1)       # same schema as nksim.simulate

The interactive browser view (``pip install -e .[viz]``) is :mod:`nksim.mesa_ref.viz`.
"""
from .._optional import require

require("mesa.discrete_space", "mesa", "nksim.mesa_ref", package="mesa>=3.2")

from .agents import Blast, MarrowCell, NKCell, NormalCell  # noqa: E402
from .model import PatientModel, Rules, run_reference, simulate_reference  # noqa: E402

__all__ = ["Blast", "MarrowCell", "NKCell", "NormalCell", "PatientModel", "Rules", "run_reference",
           "simulate_reference"]
