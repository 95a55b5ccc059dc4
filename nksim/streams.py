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


def stream_key(seed: int, patient_id: str, replicate: int) -> tuple[int, tuple[int, int]]:
    """The validated ``(seed, spawn_key)`` of a simulation's seed sequence (arguments as :func:`seed_sequence`)."""
    seed = check_seed(seed, source="nksim.streams", key="seed")
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)) or replicate < 0:
        raise NksimInputError(f"replicate must be an integer >= 0, got {replicate!r}", source="nksim.streams",
                              key="replicate")
    return seed, (patient_key(patient_id), int(replicate))


def seed_sequence(seed: int, patient_id: str, replicate: int) -> np.random.SeedSequence:
    """The seed sequence of one simulation.

    ``seed``: an integer in ``[0, 2**64)`` (Python or NumPy; :func:`nksim.checks.check_seed`);
    ``replicate``: an integer >= 0. Anything else (a bool, a float such as 1.5, a seed of
    2**64 or more) is an :class:`~nksim.errors.NksimInputError`.
    """
    seed, key = stream_key(seed, patient_id, replicate)
    return np.random.SeedSequence(seed, spawn_key=key)


def stream_generator(seed: int, patient_id: str, replicate: int, name: str) -> np.random.Generator:
    """The Generator of one process's stream, ``generators(seed, patient_id, replicate)[name]``, alone.

    Child ``i`` of a SeedSequence is ``SeedSequence(entropy, spawn_key=spawn_key + (i,))``, so
    the stream is built without spawning its siblings.
    """
    seed, key = stream_key(seed, patient_id, replicate)
    child = np.random.SeedSequence(seed, spawn_key=key + (STREAMS.index(name),))
    return np.random.Generator(np.random.PCG64(child))


def _words32(value: int) -> list[int]:
    """The 32-bit words of an integer >= 0, least significant first (0: one word), as SeedSequence reads one."""
    words = [value & 0xFFFFFFFF]
    value >>= 32
    while value:
        words.append(value & 0xFFFFFFFF)
        value >>= 32
    return words


def stream_entropy(seed: int, patient_id: str, replicate: int) -> np.ndarray:
    """The assembled entropy of :func:`seed_sequence` as 32-bit words in a uint64 array.

    SeedSequence's own assembly: the seed's words zero-padded to the pool size (4 words; a
    spawn key is present), then the words of each spawn-key element.
    :func:`nksim.engine.pcg64.spawned_states` derives the children's PCG64 states from it.
    """
    seed, key = stream_key(seed, patient_id, replicate)
    words = _words32(seed)
    words += [0] * (4 - len(words))
    for k in key:
        words += _words32(k)
    return np.array(words, dtype=np.uint64)


def generators(seed: int, patient_id: str, replicate: int) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per process in :data:`STREAMS` (arguments as :func:`seed_sequence`)."""
    children = seed_sequence(seed, patient_id, replicate).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(c)) for name, c in zip(STREAMS, children)}
