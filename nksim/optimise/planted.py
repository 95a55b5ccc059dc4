"""Planted test problems: a synthetic simulator with nksim's interface and a known optimum.

Used to prove that the optimiser finds optima (``tests/test_optimise_planted.py``): the true
value of every schedule is known, so the tests can say whether the selected schedule is within
delta of the best and whether the near-optimal set holds the planted optimum.

Outcome of unit ``u`` (draw ``d``) under schedule ``c`` (days; the ``pft`` outcome)::

    y = f(c) + tau * theta_d * h(c) + unit_u + eps(u, c)

* ``f(c)``: the planted truth (:data:`SHAPES`): an interior optimum, an optimum on a boundary of
  the space, or a flat ridge of optima;
* ``theta_d ~ N(0, 1)`` per posterior draw and ``h(c) = (gap - 5) / 5``: the best schedule moves
  between draws (mean zero: ``f`` stays the population value), which the per-draw analysis sees;
* ``unit_u ~ N(0, sigma_unit)``: the patient, common to every schedule (**common random numbers**:
  it cancels in paired differences, as in nksim, where a patient's progression-free time varies
  by ~120 days between patients and by 0-3 days between schedules);
* ``eps ~ N(0, sigma_eps)``: schedule-specific noise, a deterministic function of (bank seed,
  unit, schedule), so a schedule evaluated twice on one bank gives the same numbers.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bank import Bank
from .candidate import Candidate


def _interior(c: Candidate) -> float:
    second = c.donors[1] != c.donors[0] if c.n_infusions > 1 else False
    iv = c.intervals[0] if c.n_infusions > 1 else 0.0
    return (200.0 - 0.5 * (c.gap - 5.0) ** 2 - 0.15 * (iv - 10.0) ** 2 - 0.01 * (c.shares[0] - 70.0) ** 2
            + 8.0 * second - 15.0 * abs(c.n_infusions - 2))


def _boundary(c: Candidate) -> float:
    iv = c.intervals[0] if c.n_infusions > 1 else 0.0
    return 200.0 - 2.0 * (c.gap - 1.0) + 0.5 * iv - 15.0 * abs(c.n_infusions - 2) - 0.01 * (c.shares[0] - 50.0) ** 2


def _ridge(c: Candidate) -> float:
    iv = c.intervals[0] if c.n_infusions > 1 else 0.0
    return 200.0 - 0.3 * (c.gap + iv - 20.0) ** 2 - 15.0 * abs(c.n_infusions - 2)


#: shape -> (truth f, one optimum as (n_infusions, gap, interval, first share, donor of the 2nd), best value)
SHAPES: dict[str, tuple[Callable[[Candidate], float], tuple[int, int, int, float, str], float]] = {
    "interior": (_interior, (2, 5, 10, 70.0, "new"), 208.0),
    "boundary": (_boundary, (2, 1, 28, 50.0, "same"), 214.0),
    "ridge": (_ridge, (2, 8, 12, 50.0, "same"), 200.0),
}


def _gauss(*keys: Any) -> np.ndarray:
    """Deterministic standard normals from a key (SHA-256 -> SeedSequence)."""
    h = hashlib.sha256(repr(keys).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(list(np.frombuffer(h[:16], dtype=np.uint32))))


@dataclass
class PlantedProblem:
    """A planted problem (module docstring); ``shape`` one of :data:`SHAPES`."""

    shape: str = "interior"
    sigma_unit: float = 100.0
    sigma_eps: float = 10.0
    tau: float = 5.0
    evaluations: int = 0

    def identity(self) -> dict[str, Any]:
        """Plain data fixing the numbers."""
        return {"problem": "planted", "shape": self.shape, "sigma_unit": self.sigma_unit,
                "sigma_eps": self.sigma_eps, "tau": self.tau}

    def truth(self, c: Candidate) -> float:
        """The population value ``f(c)`` (days)."""
        return SHAPES[self.shape][0](c)

    @property
    def best_value(self) -> float:
        """The planted optimum's value (day)."""
        return SHAPES[self.shape][2]

    def optimum(self, template: Candidate) -> Candidate:
        """The planted optimum, with the other fields of ``template`` (regimen, product, dose, ...)."""
        n, gap, iv, share, donor = SHAPES[self.shape][1]
        return Candidate(regimen=template.regimen, nk_product=template.nk_product, cytokine=template.cytokine,
                         cytokine_start=template.cytokine_start, cytokine_days=template.cytokine_days,
                         gap=float(gap), days=(0.0, float(iv)),
                         shares=(share, 100.0 - share), donors=("donor1", "donor2" if donor == "new" else "donor1"),
                         total_dose=template.total_dose)

    def evaluate(self, candidates: Sequence[Candidate], bank: Bank, workers: int = 1,
                 on_unit: Any = None) -> list[dict[str, np.ndarray]]:
        """Per candidate, the outcomes of every unit (module docstring)."""
        theta = _gauss("theta", bank.seed).standard_normal(bank.n_draws)[bank.draw_of_unit]
        unit = self.sigma_unit * _gauss("unit", bank.seed).standard_normal(bank.n_units)
        out = []
        for c in candidates:
            self.evaluations += 1
            eps = self.sigma_eps * _gauss("eps", bank.seed, c.key()).standard_normal(bank.n_units)
            y = self.truth(c) + self.tau * theta * (c.gap - 5.0) / 5.0 + unit + eps
            out.append({"pft": y, "pfs": (y > 150.0).astype(float), "cr": (y > 250.0).astype(float)})
        return out
