"""The agents of the Mesa reference model: one class per cell kind.

* :class:`Blast` and :class:`NormalCell` are the marrow cells. Each occupies one of the
  ``K`` cell places of its voxel (a grid cell of the Mesa lattice); where the numba engine
  keeps three counts per voxel, the reference keeps one agent per cell. Blasts carry the
  heritable trait ``susceptible`` (NK cells can lyse them or not).
* :class:`NKCell` is a donor NK agent from one of the patient's donors: it walks on the
  lattice, engages and kills blasts, becomes refractory after a kill and exhausted when it
  has used all ``max_kills`` lytic units, restores used units one at a time (function
  recovery), and divides, dies (at its donor's rejection rate) or leaves to its donor's
  pool in blood.

The rates are those of ``docs/architecture.md`` ("What one simulation is") and of
``nksim/engine/kernel.py``; every per-cell probability here is the per-capita version of
the kernel's binomial draws, so the two implementations agree in distribution (not draw
for draw). Rule constants come from :class:`nksim.mesa_ref.model.Rules` (``model.rules``).
"""
from __future__ import annotations

import math

from mesa.discrete_space import CellAgent

from ..engine.blood import treg_kill_factor

#: Von Neumann moves in the kernel's direction order (``kernel.neighbour``): up, down,
#: left, right as (row, column) offsets; the grid is periodic (a torus).
DIRECTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))


# --------------------------------------------------------------------------- marrow cells
class MarrowCell(CellAgent):
    """A cell that takes one of the ``K`` places of its voxel (base of Blast and NormalCell).

    Per marrow update of length ``delta`` days, with voxel occupancy ``occ = cells / K``
    counted before the update, a cell independently

    * dies with ``p_die = 1 - exp(-(d(occ) delta + h))`` (``h``: integrated drug hazard
      times the kind's drug sensitivity), and
    * leaves a daughter with ``p_div = exp(-(d(occ) delta + h)) (exp(b delta) - 1)``,

    so that the expected number after the update is exactly ``n exp((b - d) delta - h)``.
    A dying cell's death is attributed to the drug with probability ``h / (d delta + h)``
    (competing hazards; this only feeds the event counters).
    """

    #: label of the kind in the event counters ("blast" or "normal")
    kind = "marrow"

    def __init__(self, model, voxel):
        super().__init__(model)
        self.cell = voxel

    # Per-kind rules, overridden below -------------------------------------------------
    @staticmethod
    def division_rate(rules) -> float:  # pragma: no cover - abstract
        """Division rate (day-1) of a cell of this kind."""
        raise NotImplementedError

    @staticmethod
    def death_rate(rules, occ: float) -> float:  # pragma: no cover - abstract
        """Death rate (day-1) of a cell of this kind in a voxel at occupancy ``occ`` (drug apart)."""
        raise NotImplementedError

    @staticmethod
    def drug_sensitivity(rules) -> float:  # pragma: no cover - abstract
        """Drug kill hazard on this kind relative to the lymphocyte hazard."""
        raise NotImplementedError

    @staticmethod
    def cy_exposure_kill(rules) -> float:
        """Drug kill hazard per unit of cyclophosphamide exposure (L mg-1 day-1) on top of the reference hazard."""
        return 0.0

    @staticmethod
    def takes_cytarabine_kill() -> bool:
        """Whether the cytarabine log kill (``blasts.cytarabine_log_kill``) acts on this kind."""
        return False

    @classmethod
    def update_probabilities(cls, rules, occ: float, hazard_integral: float,
                             delta: float, cy_exposure: float = 0.0, log_kill: float = 0.0
                             ) -> tuple[float, float, float]:
        """``(p_die, p_divide, p_drug | death)`` for a cell of this kind in a voxel at occupancy ``occ``.

        ``cy_exposure``: the plasma cyclophosphamide integrated over the update (mg day L-1);
        ``log_kill``: the cytarabine doses' log kill since the last update (blasts only).
        """
        d = cls.death_rate(rules, occ)
        h = cls.drug_sensitivity(rules) * hazard_integral + cls.cy_exposure_kill(rules) * cy_exposure
        if cls.takes_cytarabine_kill():
            h += log_kill
        survive = math.exp(-(d * delta + h))
        p_die = 1.0 - survive
        p_divide = min(survive * (math.exp(cls.division_rate(rules) * delta) - 1.0), 1.0)
        p_drug = h / (d * delta + h) if h > 0.0 else 0.0
        return p_die, p_divide, p_drug

    def daughter_kind(self) -> str:  # pragma: no cover - abstract
        """Kind of a daughter: ``"susceptible"``, ``"resistant"`` or ``"normal"``."""
        raise NotImplementedError


class Blast(MarrowCell):
    """An AML blast.

    Divides at ``b``, dies at ``max(b - r (1 - occ), 0)`` (+ drug):
    net growth ``r (1 - occ)``, logistic in the voxel occupancy.
    """

    kind = "blast"

    def __init__(self, model, voxel, susceptible: bool):
        super().__init__(model, voxel)
        self.susceptible = bool(susceptible)

    @staticmethod
    def division_rate(rules) -> float:
        """``b``: ``blasts.birth_rate``."""
        return rules.blast_birth_rate

    @staticmethod
    def death_rate(rules, occ: float) -> float:
        """``max(b - r (1 - occ), 0)``."""
        return max(rules.blast_birth_rate - rules.blast_net_growth_rate * (1.0 - occ), 0.0)

    @staticmethod
    def drug_sensitivity(rules) -> float:
        """``blasts.drug_sensitivity``."""
        return rules.blasts_drug_sensitivity

    @staticmethod
    def cy_exposure_kill(rules) -> float:
        """``blasts.cy_exposure_kill``: a log kill proportional to the cyclophosphamide exposure."""
        return rules.blasts_cy_exposure_kill

    @staticmethod
    def takes_cytarabine_kill() -> bool:
        """Blasts take the cytarabine log kill."""
        return True

    def daughter_kind(self) -> str:
        """A daughter inherits susceptibility, switching class with ``switch_probability``."""
        p = self.model.rules.blasts_switch_probability
        switch = p > 0.0 and self.model.random.random() < p
        return "susceptible" if self.susceptible != switch else "resistant"


class NormalCell(MarrowCell):
    """A normal haematopoietic cell.

    Divides at ``b_n``, dies at ``max(b_n - r_n (1 - occ/c), 0)``
    (+ drug): regrowth ``r_n (1 - occ/c)`` toward the target occupancy ``c``, so blasts
    above ``c`` crowd normal cells out.
    """

    kind = "normal"

    @staticmethod
    def division_rate(rules) -> float:
        """``b_n``: ``normal.birth_rate``."""
        return rules.normal_birth_rate

    @staticmethod
    def death_rate(rules, occ: float) -> float:
        """``max(b_n - r_n (1 - occ / c), 0)``."""
        return max(rules.normal_birth_rate - rules.normal_recovery_rate * (1.0 - occ / rules.normal_target), 0.0)

    @staticmethod
    def drug_sensitivity(rules) -> float:
        """``normal.drug_sensitivity``."""
        return rules.normal_drug_sensitivity

    def daughter_kind(self) -> str:
        """Always ``"normal"``."""
        return "normal"


def marrow_cells(voxel) -> list[MarrowCell]:
    """The marrow cells (blasts and normal cells) in a voxel; NK agents take no place."""
    return [a for a in voxel.agents if isinstance(a, MarrowCell)]


def free_places(voxel, capacity: int) -> int:
    """Cell places left in a voxel of capacity ``K``."""
    return capacity - sum(1 for a in voxel.agents if isinstance(a, MarrowCell))


# --------------------------------------------------------------------------- NK cells
class NKCell(CellAgent):
    """A donor NK cell in the marrow region.

    Attributes: ``donor`` (index of the donor it came from, 0, 1, ... in order of first
    infusion; daughters inherit it), ``competent`` (can kill at all), ``kills`` (lytic units
    used and not yet restored: +1 per kill, -1 per recovery; exhausted at ``max_kills``),
    ``ready_step`` (first time step at which it may kill: the step after it appears, or
    ``refractory_steps`` steps after the step following a kill).
    """

    def __init__(self, model, voxel, competent: bool, ready_step: int, donor: int = 0):
        super().__init__(model)
        self.cell = voxel
        self.donor = int(donor)
        self.competent = bool(competent)
        self.kills = 0
        self.ready_step = ready_step

    @property
    def exhausted(self) -> bool:
        """All ``max_kills`` lytic units are in use: the agent cannot kill until one is restored."""
        return self.kills >= self.model.rules.nk_max_kills

    def move(self) -> None:
        """Random walk: a Poisson number of hops to uniformly chosen von Neumann neighbours.

        The mean number of hops per step is ``4 D dt / voxel_side^2``.
        """
        rules = self.model.rules
        if rules.nk_hops_per_step <= 0.0:
            return
        hops = int(self.model.rng.poisson(rules.nk_hops_per_step))
        voxel = self.cell
        for _ in range(hops):
            voxel = voxel.connections[self.model.random.choice(DIRECTIONS)]
        if voxel is not self.cell:
            self.move_to(voxel)

    def recover(self, p_recover: float) -> bool:
        """Function recovery: restore one used lytic unit with probability ``p_recover``.

        Only an agent with used units can restore one (granule stores refill); returns whether
        it did.
        """
        if self.kills > 0 and p_recover > 0.0 and self.model.random.random() < p_recover:
            self.kills -= 1
            return True
        return False

    def can_kill(self, step: int) -> bool:
        """Competent, not exhausted and not refractory at time step ``step``."""
        return self.competent and not self.exhausted and step >= self.ready_step

    def try_kill(self, step: int) -> Blast | None:
        """Contact killing during time step ``step``; returns the blast killed, if any.

        The agent engages a blast of its voxel with probability ``1 - exp(-contact (b/K) dt)``
        (``b`` blasts in the voxel; ``contact`` faster by ``1 + nk.cytokine_killing_boost * activation`` under
        IL-2 / IL-15 and slower by host Tregs, :func:`~nksim.engine.blood.treg_kill_factor`); the blast engaged is
        a uniformly chosen one, and dies with ``kill_probability`` if it is susceptible. After a kill the agent is
        refractory for ``refractory_time`` rounded up to whole steps, counted from the next step. At most one kill
        per step.
        """
        if not self.can_kill(step):
            return None
        rules = self.model.rules
        rnd = self.model.random
        blasts = [a for a in self.cell.agents if isinstance(a, Blast)]
        if not blasts:
            return None
        contact = (rules.nk_contact_rate * (1.0 + rules.nk_cytokine_killing_boost * self.model.activation)
                   * treg_kill_factor(self.model.kp, self.model.blood))  # host Tregs (the engine's function)
        if rnd.random() >= 1.0 - math.exp(-contact * (len(blasts) / rules.voxel_capacity) * rules.dt):
            return None
        target = rnd.choice(blasts)
        if not (target.susceptible and rnd.random() < rules.donor_kill_probability):
            return None
        target.remove()
        self.kills += 1
        self.ready_step = step + 1 + rules.nk_refractory_steps
        return target

    def fate(self, p_any: float, rate_divide: float, rate_die: float, rate_total: float) -> str | None:
        """Competing risks over one step: ``"divide"``, ``"die"``, ``"egress"`` or None.

        Something happens with ``p_any = 1 - exp(-rate_total dt)``; which event, in
        proportion to its rate.
        """
        u = self.model.random.random()
        if u >= p_any:
            return None
        w = u / p_any * rate_total
        if w < rate_divide:
            return "divide"
        return "die" if w < rate_divide + rate_die else "egress"
