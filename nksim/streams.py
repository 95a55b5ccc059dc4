"""Random streams.

Every simulation (patient, replicate) gets its own :class:`numpy.random.SeedSequence`,
``SeedSequence(seed, spawn_key=(patient_key, replicate))``, where ``patient_key`` is a
stable integer derived from the patient id. That sequence is split into one generator
per stochastic process (:data:`STREAMS`). Consequences:

* the same seed gives the same numbers whatever the order, batching or worker count of
  the simulations (no stream depends on another simulation);
* the same patient and replicate use the same streams under every protocol (common
  random numbers), and each process consumes only its own stream, so two schedules
  share their random numbers until their histories differ.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .checks import check_seed
from .errors import NksimInputError

#: One generator per stochastic process, in this order.
STREAMS: tuple[str, ...] = ("patient", "init", "move", "kill", "fate", "traffic", "marrow")


def patient_key(patient_id: str) -> int:
    """Stable 32-bit integer for a patient id (independent of cohort order)."""
    return int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:4], "little")


def seed_sequence(seed: int, patient_id: str, replicate: int) -> np.random.SeedSequence:
    """The seed sequence of one simulation.

    ``seed``: an integer in ``[0, 2**64)`` (Python or NumPy; :func:`nksim.checks.check_seed`);
    ``replicate``: an integer >= 0. Anything else (a bool, a float such as 1.5, a seed of
    2**64 or more) is an :class:`~nksim.errors.NksimInputError`.
    """
    seed = check_seed(seed, source="nksim.streams", key="seed")
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)) or replicate < 0:
        raise NksimInputError(f"replicate must be an integer >= 0, got {replicate!r}", source="nksim.streams",
                              key="replicate")
    return np.random.SeedSequence(seed, spawn_key=(patient_key(patient_id), int(replicate)))


def generators(seed: int, patient_id: str, replicate: int) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per process in :data:`STREAMS` (arguments as :func:`seed_sequence`)."""
    children = seed_sequence(seed, patient_id, replicate).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(c)) for name, c in zip(STREAMS, children)}
