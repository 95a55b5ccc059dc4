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

#: One generator per stochastic process, in this order.
STREAMS: tuple[str, ...] = ("patient", "init", "move", "kill", "fate", "traffic", "marrow")


def patient_key(patient_id: str) -> int:
    """Stable 32-bit integer for a patient id (independent of cohort order)."""
    return int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:4], "little")


def seed_sequence(seed: int, patient_id: str, replicate: int) -> np.random.SeedSequence:
    """The seed sequence of one simulation."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if replicate < 0:
        raise ValueError(f"replicate must be >= 0, got {replicate!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(patient_key(patient_id), int(replicate)))


def generators(seed: int, patient_id: str, replicate: int) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per process in :data:`STREAMS`."""
    children = seed_sequence(seed, patient_id, replicate).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(c)) for name, c in zip(STREAMS, children)}
