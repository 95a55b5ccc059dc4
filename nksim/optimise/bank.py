"""Banks of virtual patients: the fixed units every candidate schedule is simulated on.

A bank is ``draws x patients x replicates`` *units*. Unit ``(d, p, r)`` is virtual patient ``p``
of parameter draw ``d`` (patient ids ``d000p000`` ...: each draw has its own patients, so the
units of one draw are independent given the draw) in stochastic replicate ``r``, with the random
streams ``nksim.streams.generators(bank.seed, patient id, r)`` whatever the candidate: **common
random numbers**. Two candidates evaluated on one bank differ only through their schedules, and
their per-unit difference is a paired, low-noise comparison.

The optimiser uses three independent banks (seeds spawned from the spec's seed with
:class:`numpy.random.SeedSequence`): ``search`` (every proposal), ``confirm`` (the top candidates,
the reference and, in tests, planted probes: the near-optimal set and the per-draw analysis) and
``estimate`` (only the selected schedule and the reference: the held-out estimate, unbiased
because this bank took no part in the selection).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The three banks, in the order their seeds are spawned.
BANK_NAMES = ("search", "confirm", "estimate")


def bank_seeds(seed: int) -> dict[str, int]:
    """Independent seeds (in [0, 2**63)) of the three banks, spawned from ``seed``."""
    children = np.random.SeedSequence(int(seed)).spawn(len(BANK_NAMES))
    return {name: int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
            for name, c in zip(BANK_NAMES, children, strict=True)}


@dataclass(frozen=True)
class Bank:
    """``draws x patients x replicates`` units with fixed random streams (module docstring)."""

    name: str
    seed: int
    draws: tuple[Mapping[str, float], ...]
    patients: int
    replicates: int = 1
    _ids: tuple[str, ...] = field(default=(), repr=False, compare=False)
    _digest: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.draws or self.patients < 1 or self.replicates < 1:
            raise ValueError(f"bank {self.name!r} needs >= 1 draw, patient and replicate")
        ids = tuple(f"d{d:03d}p{p:03d}" for d in range(len(self.draws)) for p in range(self.patients))
        object.__setattr__(self, "_ids", ids)
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_digest", hashlib.sha256(blob.encode()).hexdigest()[:16])  # read per unit: once

    @property
    def n_draws(self) -> int:
        """Number of parameter draws."""
        return len(self.draws)

    @property
    def n_units(self) -> int:
        """Number of units (simulations per candidate)."""
        return self.n_draws * self.patients * self.replicates

    @property
    def patient_ids(self) -> tuple[str, ...]:
        """Every patient id of the bank (draw-major)."""
        return self._ids

    def unit(self, u: int) -> tuple[int, str, int]:
        """``(draw index, patient id, replicate)`` of unit ``u`` (draw-major, then patient, then replicate)."""
        d, rest = divmod(int(u), self.patients * self.replicates)
        p, r = divmod(rest, self.replicates)
        return d, self._ids[d * self.patients + p], r

    @property
    def draw_of_unit(self) -> np.ndarray:
        """Draw index of every unit (int, ``n_units``)."""
        return np.repeat(np.arange(self.n_draws), self.patients * self.replicates)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (the bank's identity)."""
        return {"name": self.name, "seed": int(self.seed), "draws": [dict(d) for d in self.draws],
                "patients": int(self.patients), "replicates": int(self.replicates)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Bank:
        """The bank rebuilt from :meth:`as_dict`."""
        return cls(name=str(d["name"]), seed=int(d["seed"]), draws=tuple(dict(x) for x in d["draws"]),
                   patients=int(d["patients"]), replicates=int(d["replicates"]))

    def digest(self) -> str:
        """SHA-256 (16 hex digits) of everything that fixes the bank's units (computed when the bank is made)."""
        return self._digest


def per_draw_means(values: np.ndarray, bank: Bank) -> np.ndarray:
    """Mean over each draw's units: ``(..., n_units)`` -> ``(..., n_draws)``."""
    v = np.asarray(values, dtype=float)
    return v.reshape(*v.shape[:-1], bank.n_draws, bank.patients * bank.replicates).mean(axis=-1)


def split_draw_means(values: np.ndarray, bank: Bank) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw means over the first and the second half of each draw's patients (cross-fitting)."""
    v = np.asarray(values, dtype=float).reshape(*np.shape(values)[:-1], bank.n_draws, bank.patients, bank.replicates)
    h = bank.patients // 2
    if h < 1:
        raise ValueError("cross-fitted per-draw analysis needs >= 2 patients per draw")
    return v[..., :h, :].mean(axis=(-1, -2)), v[..., h:, :].mean(axis=(-1, -2))


def stack(outcomes: Sequence[Mapping[str, np.ndarray]], name: str) -> np.ndarray:
    """``(n_candidates, n_units)`` array of outcome ``name`` from per-candidate outcome dicts."""
    return np.stack([np.asarray(o[name], dtype=float) for o in outcomes])
