"""Turn a ParameterSet, a protocol schedule and a patient's effects into kernel inputs.

All unit conversions happen here, once: the kernel works in days, um and cells.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NksimInputError
from ..parameters import ParameterSet
from ..patients import PatientEffects
from ..protocol import EVENT_CODES, Event, Patient, Protocol
from ..quantities import DERIVED_INPUTS, EVENT_KINDS, HOURS_PER_DAY, PARAMETERS, KernelContext
from . import layout as L


@dataclass(frozen=True)
class Resolution:
    """Numerical resolution derived from the parameters."""

    side: int
    capacity: int  # cells per voxel
    steps_per_day: int
    marrow_every: int  # steps per marrow update

    @property
    def n_voxels(self) -> int:
        """Number of voxels in the lattice (``side`` x ``side``)."""
        return self.side * self.side


def resolution(params: ParameterSet) -> Resolution:
    """Lattice side, voxel capacity and step counts; errors name the offending key."""
    src = params.origin
    side = int(params["lattice.side"])
    k = (params["lattice.voxel_side"] / params["lattice.cell_diameter"]) ** 2
    capacity = int(round(k))
    if capacity < 1 or capacity > 2**30:
        raise NksimInputError(
            f"voxel capacity (voxel_side / cell_diameter)^2 = {k:g} must be in [1, 2^30]",
            source=src, key="lattice.voxel_side")
    spd = HOURS_PER_DAY / params["numerics.dt"]
    if abs(spd - round(spd)) > 1e-9:
        raise NksimInputError(
            f"dt = {params['numerics.dt']:g} h must divide 24 h (e.g. 0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 24)",
            source=src, key="numerics.dt")
    every = params["numerics.marrow_step"] / params["numerics.dt"]
    if abs(every - round(every)) > 1e-9 or round(every) < 1:
        raise NksimInputError(
            f"marrow_step = {params['numerics.marrow_step']:g} h must be a positive multiple of "
            f"dt = {params['numerics.dt']:g} h",
            source=src, key="numerics.marrow_step")
    return Resolution(side, capacity, int(round(spd)), int(round(every)))


def kernel_parameters(params: ParameterSet, eff: PatientEffects, start_day: float, end_day: float, *,
                      nk_product: str, host_tolerant: bool = False) -> np.ndarray:
    """The kernel parameter vector ``kp``, one slot per name of :data:`~nksim.engine.layout.KP`.

    Slots come from :mod:`nksim.quantities`: derived inputs are computed by their declared
    ``derive`` function; ``kernel=True`` parameters are copied unchanged. ``nk_product`` (a key of
    :data:`nksim.protocol.NK_PRODUCTS`) selects the product's donor-NK parameters; ``host_tolerant``
    switches allo-rejection off (``kp[KP.allo_rejection_enabled]`` = 0).
    """
    ctx = KernelContext(params, eff, resolution(params), start_day, end_day, nk_product, host_tolerant)
    kp = np.zeros(L.N_P)
    for slot, d in zip(_DERIVED_SLOTS, DERIVED_INPUTS):
        kp[slot] = d.derive(ctx)
    kp[_COPIED_SLOTS] = _copied_values(params)
    return kp


#: The kernel slots of :data:`~nksim.quantities.DERIVED_INPUTS`, in their order.
_DERIVED_SLOTS: tuple[int, ...] = tuple(getattr(L.KP, d.slot) for d in DERIVED_INPUTS)
#: The ``kernel=True`` parameters (copied unchanged into ``kp``): their keys and their slots.
_COPIED_KEYS: tuple[str, ...] = tuple(spec.key for spec in PARAMETERS.values() if spec.kernel)
_COPIED_SLOTS = np.array([getattr(L.KP, PARAMETERS[k].slot) for k in _COPIED_KEYS], dtype=np.int64)
#: ``(params, values)`` of the last :func:`_copied_values` call: a cohort or a calibration particle builds the
#: parameter vectors of all its simulations from one ParameterSet (immutable), so its copied values are read once.
_copied_last: tuple[ParameterSet | None, np.ndarray] = (None, np.zeros(0))


def _copied_values(params: ParameterSet) -> np.ndarray:
    """The values of the ``kernel=True`` parameters of ``params`` (float64, in :data:`_COPIED_KEYS` order)."""
    global _copied_last
    last = _copied_last  # one read: another thread may replace it meanwhile
    if last[0] is params:
        return last[1]
    values = np.array([params[k] for k in _COPIED_KEYS], dtype=np.float64)
    _copied_last = (params, values)
    return values


def event_arrays(events: tuple[Event, ...], eff: PatientEffects, start_day: float, steps_per_day: int,
                 source: str = "<protocol>") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events as (step index, kind code, amount, donor index) arrays, sorted by step.

    Amounts are in the kind's ``amount_unit`` (:data:`nksim.quantities.EVENT_KINDS`): the dose
    times the body surface area or weight where the dose is per m2 or per kg. Donor indices
    number the donors of NK infusions in order of first infusion (0, 1, ...); other kinds get 0.
    """
    steps, kinds, amounts, donors = [], [], [], []
    donor_index: dict[str, int] = {}
    for e in sorted(events):
        s = (e.day - start_day) * steps_per_day
        if abs(s - round(s)) > 1e-6:
            raise NksimInputError(
                f"{e.kind} on day {e.day:g} does not fall on a time step (dt = {24 / steps_per_day:g} h)",
                source=source, key="events")
        kind = EVENT_KINDS[EVENT_CODES[e.kind]]
        per = {"m2": eff.body_surface_area, "kg": eff.body_weight, "": 1.0}[kind.per]
        steps.append(int(round(s)))
        kinds.append(EVENT_CODES[e.kind])
        amounts.append(e.dose * per if kind.per else e.dose)
        donors.append(donor_index.setdefault(e.donor, len(donor_index)) if e.kind == "nk_infusion" else 0)
    return (np.array(steps, dtype=np.int64), np.array(kinds, dtype=np.int64), np.array(amounts, dtype=np.float64),
            np.array(donors, dtype=np.int64))


def patient_inputs(params: ParameterSet, eff: PatientEffects, protocol: Protocol,
                   patient: Patient) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The kernel parameter vector and event arrays of one patient of ``protocol``.

    ``kp[KP.n_donors]`` is set from the events (donors numbered 0, 1, ... in order of first
    infusion; at least one), which :func:`kernel_parameters` alone cannot know.
    """
    kp = kernel_parameters(params, eff, protocol.start_day, protocol.end_day, nk_product=protocol.nk_product,
                           host_tolerant=protocol.host_tolerant)
    ev = event_arrays(protocol.events_for(patient), eff, protocol.start_day, int(kp[L.KP.steps_per_day]),
                      protocol.origin)
    kp[L.KP.n_donors] = max(int(ev[3].max(initial=0)) + 1, 1)
    return kp, ev
