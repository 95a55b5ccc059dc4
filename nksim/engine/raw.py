"""The raw result of one simulation: the kernel's arrays before they become a Dataset."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..patients import PatientEffects


@dataclass(frozen=True)
class RawRun:
    """Kernel output of one (patient, replicate) simulation.

    ``rec[day, R.*]`` (daily record), ``cnt[day, C.*]`` (region counters) and
    ``snaps[snapshot, S.*, y, x]`` (lattice layers), indexed as in :mod:`nksim.engine.layout`.
    """

    patient: str
    replicate: int
    effects: PatientEffects
    rec: np.ndarray
    cnt: np.ndarray
    snaps: np.ndarray
