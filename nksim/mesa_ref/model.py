"""The Mesa reference model of one virtual patient (same rules as the numba engine).

Read this side by side with ``docs/architecture.md`` ("What one simulation is", "Step
order") and ``docs/model.md`` section 3. What is re-implemented here, for clarity rather
than speed, is the spatial/agent part: the marrow lattice (a periodic Mesa
:class:`~mesa.discrete_space.OrthogonalVonNeumannGrid` of voxels holding up to ``K`` cell
agents), donor NK agents and their interactions, and homing/egress. The rest is shared with
the engine and not re-implemented:

* the parameter vector and the unit conversions (:func:`nksim.engine.build.patient_inputs`: `kernel_parameters`),
  the protocol's event arrays (:func:`nksim.engine.build.event_arrays`) and the virtual
  patient (:func:`nksim.patients.draw_effects`, drawn from the same ``patient`` stream, so a
  given ``(seed, patient, replicate)`` is the same virtual patient in both implementations);
* the events (:func:`~nksim.engine.blood.apply_event`), PK and the blood's inputs (drug hazards,
  cytokine amounts: :func:`~nksim.engine.blood.pk_inputs`, :func:`~nksim.engine.blood.pk_advance`),
  the blood/IL-15 ODEs (host NK and T recovery, every donor's
  blood and tissue pools), NK proliferation, allo-priming, the cytokine
  effects, and the rejection rate: the kernel's own numba functions
  :func:`~nksim.engine.kernel.rk4_blood`,
  :func:`~nksim.engine.kernel.nk_division_rate`, :func:`~nksim.engine.kernel.primed_fraction`,
  :func:`~nksim.engine.kernel.cytokine_support`,
  :func:`~nksim.engine.kernel.donor_nk_rejection`;
* the output Dataset (:func:`nksim.output.build_dataset`), so variable names, units and the
  response classification are those of the engine.

Agreement with the engine is statistical: the reference draws one Bernoulli event per cell
where the kernel draws binomial counts per voxel, from other random streams. The
cross-validation lives in ``tests/test_mesa_ref.py`` (helpers in
:mod:`nksim.mesa_ref.compare`).
"""
from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import mesa
import numpy as np
import xarray as xr
from mesa.datacollection import DataCollector
from mesa.discrete_space import OrthogonalVonNeumannGrid

from .._version import __version__
from ..engine import RawRun
from ..engine.blood import (
    N_PK,
    N_U,
    PK_CY,
    PK_FLU,
    PK_IL2,
    PK_IL2DT,
    PK_N803,
    U_HC,
    U_HF,
    apply_event,
    cy_exposure,
    il15_exogenous,
    pk_advance,
    pk_inputs,
)
from ..engine.build import patient_inputs
from ..engine.kernel import (
    cytokine_support,
    donor_nk_rejection,
    nk_division_rate,
    primed_fraction,
    rk4_blood,
)
from ..engine.layout import DONOR_STRIDE, KP, N_S, N_Y, R, S, Y
from ..output import COUNTERS, TIME_VARIABLES, build_dataset
from ..parameters import ParameterSet, load_parameters
from ..patients import draw_effects
from ..protocol import Protocol, load_protocol
from ..quantities import INTEGER_SLOTS
from ..streams import STREAMS, seed_sequence
from .agents import DIRECTIONS, Blast, NKCell, NormalCell, free_places, marrow_cells

#: Order in which a voxel's daughters are placed (the kernel's fixed order).
DAUGHTER_ORDER: tuple[str, ...] = ("susceptible", "resistant", "normal")


class Rules:
    """The rule constants, read by name from the engine's parameter vector ``kp``.

    Every kernel slot of :data:`nksim.engine.layout.KP` is an attribute with the same name
    (``rules.donor_kill_probability``, ``rules.voxel_capacity``), in the kernel's units (days,
    cells, rates in day-1; see :mod:`nksim.quantities`); whole-number slots are ints. Three
    per-step values this model needs are added: :attr:`nk_hops_per_step`,
    :attr:`nk_refractory_steps` and :attr:`nk_activation_relax_per_step`. Instances are read-only.
    """

    __slots__ = (*KP._fields, "nk_hops_per_step", "nk_refractory_steps", "nk_activation_relax_per_step")

    def __init__(self, kp: np.ndarray):
        for name, index in zip(KP._fields, KP):
            value = int(kp[index]) if name in INTEGER_SLOTS else float(kp[index])
            object.__setattr__(self, name, value)
        #: mean voxel hops per step, 4 D dt / voxel_side^2
        object.__setattr__(self, "nk_hops_per_step", float(kp[KP.nk_hop_rate] * kp[KP.dt]))
        #: refractory period in whole steps (rounded up), after the kill step
        object.__setattr__(self, "nk_refractory_steps", int(math.ceil(kp[KP.nk_refractory_days] / kp[KP.dt] - 1e-9)))
        #: how much of the cytokine activation's distance to the support remains after one step (as the engine)
        object.__setattr__(self, "nk_activation_relax_per_step",
                           math.exp(-math.log(2.0) / kp[KP.nk_activation_half_life] * kp[KP.dt]))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Rules are read-only")

    @classmethod
    def from_kernel_parameters(cls, kp: np.ndarray) -> Rules:
        """The rules of the kernel parameter vector ``kp``."""
        return cls(kp)


def _as_params(params: ParameterSet | str | Path) -> ParameterSet:
    return params if isinstance(params, ParameterSet) else load_parameters(params)


def _as_protocol(protocol: Protocol | str | Path) -> Protocol:
    return protocol if isinstance(protocol, Protocol) else load_protocol(protocol)


#: What the DataCollector records once per day: the engine's daily record variables and
#: the region counters (current cells and cumulative events), under the engine's names.
REPORTED: tuple[str, ...] = ("time", *TIME_VARIABLES, *COUNTERS)


class PatientModel(mesa.Model):
    """One virtual patient from the first lymphodepleting dose to ``protocol.end_day``.

    ``step()`` advances one time step ``dt`` (default 1 h) in the engine's step order;
    ``run()`` runs to the end. The DataCollector (``model.datacollector``) holds one row per
    day (the state *before* that day's events, day 0 = ``protocol.start_day``), with the
    engine's variable names; :meth:`to_dataset` turns it into the engine's Dataset.
    """

    def __init__(self, params: ParameterSet | str | Path = "default", protocol: Protocol | str | Path = "ahmadvand2023",
                 patient: str | None = None, *, seed: int = 0, replicate: int = 0):
        params = _as_params(params)
        protocol = _as_protocol(protocol)
        pat = protocol.patients[0] if patient is None else protocol.patient(patient)
        # The engine's streams are children 0..6 of this seed sequence; child 0 ("patient")
        # gives the same virtual patient as the engine, the extra child drives this model.
        # seed_sequence checks seed and replicate (integers; a seed of 1.5 or 2**64 is refused)
        children = seed_sequence(seed, pat.id, replicate).spawn(len(STREAMS) + 1)
        super().__init__(rng=np.random.Generator(np.random.PCG64(children[-1])))
        self.params, self.protocol, self.patient = params, protocol, pat
        self.seed, self.replicate = int(seed), int(replicate)
        patient_rng = np.random.Generator(np.random.PCG64(children[STREAMS.index("patient")]))
        self.effects = draw_effects(params, patient_rng, pat.covariates, disease=pat.disease)
        # Parameter vector and events (step, kind, amount, donor index), as the engine builds them
        # (donors numbered 0, 1, ... in order of first infusion; kp holds their number).
        self.kp, (self.ev_step, self.ev_kind, self.ev_amount, self.ev_donor) = patient_inputs(
            params, self.effects, protocol, pat)
        self.rules = rules = Rules.from_kernel_parameters(self.kp)
        self._next_event = 0
        self.snapshot_days = [int(d - protocol.start_day) for d in protocol.snapshot_days]
        self.snapshots: dict[int, np.ndarray] = {}

        # Blood compartment (shared with the engine): [host NK uL-1, host T uL-1, host Tregs uL-1,
        # IL-15 relative, then per donor d: donor NK in blood (cells), donor NK in other
        # tissues (cells)], donor d's pools at Y.donor_nk_blood / Y.donor_nk_tissue + DONOR_STRIDE * d.
        n_y = N_Y + DONOR_STRIDE * (rules.n_donors - 1)
        self.blood = np.zeros(n_y)
        self.blood[Y.host_nk] = self.kp[KP.host_nk_baseline]
        self.blood[Y.host_t] = self.kp[KP.host_t_baseline]
        self.blood[Y.host_treg] = self.kp[KP.host_treg_baseline]
        self.blood[Y.il15] = self.kp[KP.patient_il15_production]  # her steady state (as the kernel)
        self._rk4_work = tuple(np.empty(n_y) for _ in range(5))
        self._u_work = tuple(np.empty(N_U) for _ in range(3))
        # PK state (drug amounts, cytokine depots and central amounts: nksim.engine.blood.PK_*) and the
        # blood's inputs computed from it at the current step's start, middle and end (blood.U_*)
        self.pk = np.zeros(N_PK)
        self.u0, self.um, self.u1 = np.zeros(N_U), np.zeros(N_U), np.zeros(N_U)
        # Allo-priming: time (days since start) of each donor's first infusion, and the host's
        # primed fraction against each donor (evaluated at the middle of every step).
        self.first_exposure = np.full(rules.n_donors, np.inf)
        self.primed = np.zeros(rules.n_donors)
        # Exogenous cytokines: their effects on donor NK during the current step (cytokine_support at the
        # mid-step inputs, on the blood after the step).
        self.support_prolif, self.support_death, self.support = 0.0, 1.0, 0.0
        self.activation = 0.0  # cytokine activation of killing (0..1), nk.cytokine_killing_boost
        self.x_exo = 0.0  # exogenous IL-15 signal (rhIL-15, N-803) during the current step
        self.marrow_hazard = 0.0  # drug hazard integrated since the last marrow update
        self.marrow_cy_exposure = 0.0  # plasma cyclophosphamide integrated since then (mg day L-1)
        self.marrow_log_kill = 0.0  # the cytarabine doses' blast log kill since then (1)
        self.step_cy_exposure = 0.0  # the same over the current step
        self.counts = {label: 0 for label in COUNTERS}  # cumulative region events
        self.step_index = 0  # steps done

        # The marrow region: side x side voxels on a periodic von Neumann lattice; each
        # voxel has K cell places (capacity enforced by the rules: NK agents take none).
        self.grid = OrthogonalVonNeumannGrid((rules.lattice_side, rules.lattice_side), torus=True, random=self.random)
        #: voxels in the engine's flat (row-major) order; coordinate = (row, column)
        self.voxels = [self.grid[(r, c)] for r, c in product(range(rules.lattice_side), repeat=2)]
        self._seed_marrow()

        self.datacollector = DataCollector(
            model_reporters={name: (lambda m, name=name: m.observed[name]) for name in REPORTED})
        self.observed: dict[str, float] = {}
        self._record()

    # ------------------------------------------------------------------ agents
    def agents_of(self, cls: type) -> list:
        """The living agents of one class, in order of creation."""
        found = self.agents_by_type.get(cls)
        return list(found) if found is not None else []

    def _seed_marrow(self) -> None:
        """Fill the lattice with marrow cells, place by place.

        Each of the K places of a voxel holds a cell with probability ``cellularity``; a cell
        is a blast with the patient's baseline blast fraction, a blast susceptible with the
        patient's susceptible fraction (per-place version of the kernel's binomial draws).
        """
        rules, rnd = self.rules, self.random
        for voxel in self.voxels:
            for _ in range(rules.voxel_capacity):
                if rnd.random() >= rules.cellularity:
                    continue
                if rnd.random() < rules.blast_fraction0:
                    Blast(self, voxel, susceptible=rnd.random() < rules.susceptible_fraction0)
                else:
                    NormalCell(self, voxel)

    # ------------------------------------------------------------------ one step
    def step(self) -> None:
        """Advance one time step ``dt`` (Mesa counts these in ``model.steps``)."""
        self.advance()

    def advance(self) -> None:
        """One step ``dt`` in the engine's order (docs/architecture.md, "Step order")."""
        rules = self.rules
        if self.step_index >= rules.n_steps:
            self.running = False
            return
        step = self.step_index
        self._apply_events()  # 2. drug doses, NK infusions into blood, cytokines into depots
        h_step = self._pharmacokinetics()  # 3. PK, hazard integrated over the step
        self.marrow_hazard += h_step
        self.marrow_cy_exposure += self.step_cy_exposure
        self._priming(step * rules.dt + 0.5 * rules.dt)  # 3. primed fraction per donor at mid-step
        marrow_donor = len(self.agents_of(NKCell)) * rules.scale
        rk4_blood(self.kp, self.blood, rules.dt, self.u0, self.um, self.u1, marrow_donor, self.primed,  # 4. blood
                  *self._rk4_work, *self._u_work)
        self._cytokines()  # cytokine effects on the agents during the step
        self._nk_motility_and_killing(step)  # 5.
        self._nk_fate(step, h_step)  # 6.
        self._homing(step)  # 7.
        if (self.step_index + 1) % rules.marrow_every == 0:  # 8. marrow cells
            self._marrow_update(rules.marrow_every * rules.dt)
            self.marrow_hazard = 0.0
            self.marrow_cy_exposure = 0.0
            self.marrow_log_kill = 0.0
        self.step_index += 1
        if self.step_index % rules.steps_per_day == 0:  # 1. record at day boundaries
            self._record()
        if self.step_index >= rules.n_steps:
            self.running = False

    def run(self) -> PatientModel:
        """Run to ``protocol.end_day``."""
        while self.running:
            self.step()
        return self

    # ------------------------------------------------------------------ donors
    @staticmethod
    def blood_slot(donor: int) -> int:
        """Index in ``blood`` of donor ``donor``'s NK in blood (whole-body cells)."""
        return Y.donor_nk_blood + DONOR_STRIDE * donor

    @staticmethod
    def tissue_slot(donor: int) -> int:
        """Index in ``blood`` of donor ``donor``'s NK in other tissues (whole-body cells)."""
        return Y.donor_nk_tissue + DONOR_STRIDE * donor

    def _apply_events(self) -> None:
        """Apply the step's events with the engine's function (:func:`~nksim.engine.blood.apply_event`).

        Drug doses into the PK amounts, cytokines into their depots, an NK infusion into its donor's
        blood pool (the donor's first infusion starts the host's priming clock); a cytarabine dose's
        blast log kill (what the function returns) is kept for the next marrow update.
        """
        t = self.step_index * self.rules.dt
        while self._next_event < self.ev_step.shape[0] and self.ev_step[self._next_event] == self.step_index:
            i = self._next_event
            self.marrow_log_kill += apply_event(self.kp, self.ev_kind[i], self.ev_amount[i], self.ev_donor[i], t,
                                                self.pk, self.blood, self.first_exposure)
            self._next_event += 1

    def _pharmacokinetics(self) -> float:
        """The blood's inputs at the step's start, middle and end, then the PK state advanced by ``dt``.

        Returns the reference drug hazard integrated over the step (Simpson), which the marrow
        accumulates (the engine's expressions, for identical values).
        """
        kp, dt = self.kp, self.rules.dt
        pk_inputs(kp, self.pk, 0.0, self.u0)
        pk_inputs(kp, self.pk, 0.5 * dt, self.um)
        pk_inputs(kp, self.pk, dt, self.u1)
        self.step_cy_exposure = cy_exposure(kp, self.pk[PK_CY], dt)  # blasts.cy_exposure_kill acts on it
        pk_advance(kp, self.pk, dt)
        h = [u[U_HF] + u[U_HC] for u in (self.u0, self.um, self.u1)]
        return dt / 6.0 * (h[0] + 4.0 * h[1] + h[2])

    def _cytokines(self) -> None:
        """IL-2 and exogenous IL-15 (rhIL-15, N-803): their effects on donor NK agents during this step.

        From the mid-step inputs (:func:`~nksim.engine.kernel.cytokine_support`,
        :func:`~nksim.engine.blood.il15_exogenous`) and the blood after the step, as the engine; the
        activation of killing relaxes towards the support over the step (half-life ``nk.activation_half_life``).
        """
        self.support_prolif, self.support_death, self.support = cytokine_support(self.kp, self.blood, self.um)
        self.x_exo = il15_exogenous(self.kp, self.blood, self.um)
        if self.rules.nk_cytokine_killing_boost > 0.0:  # the activation of killing follows the support
            self.activation = self.support + (self.activation - self.support) * self.rules.nk_activation_relax_per_step

    def primed_at(self, t: float) -> list[float]:
        """The host's primed response to each donor at time ``t`` (days since start).

        An Erlang delay from the donor's first infusion (:func:`~nksim.engine.kernel.primed_fraction`);
        0 for a donor not yet infused.
        """
        return [primed_fraction(self.kp, t - self.first_exposure[d]) for d in range(self.rules.n_donors)]

    def _priming(self, t: float) -> None:
        """Set the primed fractions used during this step (``t``: the step's middle)."""
        self.primed[:] = self.primed_at(t)

    def rejection_rate(self, donor: int) -> float:
        """Rejection rate (day-1) of donor ``donor``'s NK now.

        An unprimed part proportional to host T plus the host's primed response to that donor,
        sped up by exogenous IL-15 (:func:`~nksim.engine.kernel.donor_nk_rejection`); 0 in a tolerant host.
        """
        return donor_nk_rejection(self.kp, self.blood[Y.host_t], self.primed[donor], self.x_exo)

    def _nk_motility_and_killing(self, step: int) -> None:
        """Each agent (in order) moves, may restore one lytic unit, then may kill a blast.

        The blast is one of the voxel the agent reached. A unit is restored with
        ``p_recover = 1 - exp(-rate (1 + boost * support) dt)`` (function recovery, faster under cytokine support).
        """
        rules = self.rules
        rate = rules.nk_function_recovery_rate * (1.0 + rules.nk_cytokine_recovery_boost * self.support)
        p_recover = -math.expm1(-rate * rules.dt)
        for nk in self.agents_of(NKCell):
            nk.move()
            nk.recover(p_recover)
            if nk.try_kill(step) is not None:
                self.counts["blasts_killed_by_nk"] += 1

    def _nk_fate(self, step: int, h_step: float) -> None:
        """Divide / die / egress, competing risks, for the agents alive at the start of the pass.

        Newborns wait a step. Division at ``proliferation + IL-15 Emax (endogenous and exogenous
        IL-15) + IL-2 extra``; death at ``death * cytokine factor + rejection(donor) + drug hazard`` (the
        rejection of each donor's cells depends on the host's priming against that donor);
        egress returns ``scale`` cells to the agent's donor pool in blood.
        """
        rules, y = self.rules, self.blood
        rate_divide = nk_division_rate(self.kp, y[Y.il15], self.x_exo, self.support_prolif)
        rate_die = [rules.nk_death_rate * self.support_death + self.rejection_rate(d) + h_step / rules.dt
                    for d in range(rules.n_donors)]
        rate_total = [rate_divide + die + rules.nk_egress_rate for die in rate_die]
        p_any = [1.0 - math.exp(-total * rules.dt) for total in rate_total]
        for nk in reversed(self.agents_of(NKCell)):
            d = nk.donor
            fate = nk.fate(p_any[d], rate_divide, rate_die[d], rate_total[d])
            if fate == "divide":  # the daughter inherits donor and competence; kill count reset
                NKCell(self, nk.cell, competent=nk.competent, ready_step=step + 1, donor=d)
                self.counts["nk_born"] += 1
            elif fate == "die":
                nk.remove()
                self.counts["nk_died"] += 1
            elif fate == "egress":
                nk.remove()
                self.counts["nk_egressed"] += 1
                y[self.blood_slot(d)] += rules.scale

    def _homing(self, step: int) -> None:
        """Blood donor NK enter the region, donor by donor.

        Donor ``d``'s blood pool holds
        ``floor(blood_NK_d / scale)`` whole region-equivalent agents, each of which homes with
        probability ``1 - exp(-homing_rate dt)`` during the step (a binomial count); each
        newcomer lands on a uniformly chosen voxel and takes ``scale`` cells from its donor's pool.
        """
        rules, y = self.rules, self.blood
        if rules.nk_homing_rate <= 0.0:
            return
        p_home = -math.expm1(-rules.nk_homing_rate * rules.dt)
        for d in range(rules.n_donors):
            slot = self.blood_slot(d)
            if y[slot] < rules.scale:
                continue
            n_in = int(self.rng.binomial(int(y[slot] / rules.scale), p_home))
            for _ in range(n_in):
                voxel = self.voxels[self.random.randrange(len(self.voxels))]
                NKCell(self, voxel, competent=self.random.random() < rules.donor_competent_fraction,
                       ready_step=step + 1, donor=d)
            y[slot] -= n_in * rules.scale
            self.counts["nk_homed"] += n_in

    def _marrow_update(self, delta: float) -> None:
        """Deaths and divisions of marrow cells over ``delta`` days.

        Pass 1, per voxel, from the cells present at the start: each cell dies and/or
        leaves a daughter independently (:class:`~nksim.mesa_ref.agents.MarrowCell`).
        Pass 2, after all deaths, voxel by voxel in row-major order and kind by kind
        (susceptible, resistant, normal): each daughter goes to a uniformly chosen
        neighbour with the spread fraction, otherwise stays; it is lost if its voxel is full.
        """
        rules, rnd, counts = self.rules, self.random, self.counts
        hazard = self.marrow_hazard
        exposure = self.marrow_cy_exposure
        log_kill = self.marrow_log_kill
        daughters: dict[object, dict[str, int]] = {}
        for voxel in self.voxels:  # pass 1
            cells = marrow_cells(voxel)
            if not cells:
                continue
            occ = len(cells) / rules.voxel_capacity
            probabilities = {kind: kind.update_probabilities(rules, occ, hazard, delta, exposure, log_kill)
                             for kind in (Blast, NormalCell)}
            born = dict.fromkeys(DAUGHTER_ORDER, 0)
            for cell in cells:
                p_die, p_divide, p_drug = probabilities[type(cell)]
                if rnd.random() < p_divide:
                    born[cell.daughter_kind()] += 1
                if rnd.random() < p_die:
                    by_drug = p_drug > 0.0 and rnd.random() < p_drug
                    counts[f"{cell.kind}_drug_deaths" if by_drug else f"{cell.kind}_deaths"] += 1
                    cell.remove()
            daughters[voxel] = born
        for voxel in self.voxels:  # pass 2
            born = daughters.get(voxel)
            if born is None:
                continue
            for kind in DAUGHTER_ORDER:
                label = "normal" if kind == "normal" else "blast"
                spread = rules.normal_spread_fraction if kind == "normal" else rules.blasts_spread_fraction
                for _ in range(born[kind]):
                    counts[f"{label}_births"] += 1
                    target = voxel
                    if spread > 0.0 and rnd.random() < spread:
                        target = voxel.connections[rnd.choice(DIRECTIONS)]
                    if free_places(target, rules.voxel_capacity) <= 0:
                        counts[f"{label}_daughters_lost"] += 1
                    elif kind == "normal":
                        NormalCell(self, target)
                    else:
                        Blast(self, target, susceptible=(kind == "susceptible"))

    # ------------------------------------------------------------------ observing
    def lattice_counts(self) -> np.ndarray:
        """Per-voxel counts, shape (4, side, side).

        Layers: susceptible blasts, resistant blasts, normal cells, NK agents (the engine's snapshot layers).
        """
        out = np.zeros((N_S, self.rules.lattice_side, self.rules.lattice_side), dtype=np.int32)
        for voxel in self.voxels:
            r, c = voxel.coordinate
            for a in voxel.agents:
                if isinstance(a, Blast):
                    out[S.lattice_susceptible_blasts if a.susceptible else S.lattice_resistant_blasts, r, c] += 1
                elif isinstance(a, NormalCell):
                    out[S.lattice_normal, r, c] += 1
                elif isinstance(a, NKCell):
                    out[S.lattice_nk, r, c] += 1
        return out

    def observe(self) -> dict[str, float]:
        """The engine's daily record and region counters for the current state."""
        rules, y, kp = self.rules, self.blood, self.kp
        blasts = self.agents_of(Blast)
        n_sus = sum(1 for b in blasts if b.susceptible)
        n_blast = len(blasts)
        n_normal = len(self.agents_of(NormalCell))
        nks = self.agents_of(NKCell)
        competent = [a for a in nks if a.competent]
        n_exhausted = sum(1 for a in competent if a.exhausted)
        donors = range(rules.n_donors)
        u_now = np.zeros(N_U)
        pk_inputs(kp, self.pk, 0.0, u_now)  # the blood's inputs now (day boundary)
        blood = sum(y[self.blood_slot(d)] for d in donors)  # all donors together
        tissue = sum(y[self.tissue_slot(d)] for d in donors)
        obs: dict[str, float] = {
            "time": rules.start_day + self.step_index // rules.steps_per_day,
            "donor_nk_blood": blood / rules.blood_volume_ul,
            "host_nk_blood": y[Y.host_nk],
            "host_t_blood": y[Y.host_t],
            "host_treg_blood": y[Y.host_treg],
            "il15": y[Y.il15],
            "flu_conc": self.pk[PK_FLU] / kp[KP.drugs_flu_volume],
            "cy_conc": self.pk[PK_CY] / kp[KP.drugs_cy_volume],
            "donor_nk_marrow": len(nks) * rules.scale,
            "donor_nk_tissue": tissue,
            "donor_nk_agents": len(nks),
            "marrow_blast_pct": 100.0 * n_blast / (n_blast + n_normal) if n_blast + n_normal > 0 else 0.0,
            "blasts_total": n_blast * rules.scale,
            "normal_total": n_normal * rules.scale,
            "blast_susceptible_fraction": n_sus / n_blast if n_blast > 0 else math.nan,
            "nk_kills": self.counts["blasts_killed_by_nk"] * rules.scale,
            "nk_exhausted_fraction": n_exhausted / len(competent) if competent else math.nan,
            "drug_kill_hazard": u_now[U_HF] + u_now[U_HC],
            "donor_nk_total": blood + tissue + len(nks) * rules.scale,
            # priming now, at the day boundary (largest over the donors)
            "allo_priming": float(max(0.0, *self.primed_at(self.step_index * rules.dt))),
            "il2_central": self.pk[PK_IL2],
            "il15_exogenous": il15_exogenous(kp, y, u_now),
            "n803_central": self.pk[PK_N803],
            "il2dt_amount": self.pk[PK_IL2DT],
            "cytokine_support": cytokine_support(kp, y, u_now)[2],  # at the day boundary
        }
        missing = set(TIME_VARIABLES) - set(obs)
        if missing:  # every record variable of nksim.quantities.RECORD must be observed
            raise RuntimeError(f"observe() lacks record variables {sorted(missing)}")
        self.counts.update(susceptible_blasts=n_sus, resistant_blasts=n_blast - n_sus, normal_cells=n_normal,
                           nk_agents=len(nks))
        obs.update(self.counts)
        return obs

    def _record(self) -> None:
        self.observed = self.observe()
        self.datacollector.collect(self)
        day = self.step_index // self.rules.steps_per_day
        if day in self.snapshot_days:
            self.snapshots[day] = self.lattice_counts()

    # ------------------------------------------------------------------ outputs
    def raw_run(self) -> RawRun:
        """The run in the engine's raw layout (daily record, counters, snapshots)."""
        if self.step_index < self.rules.n_steps:
            raise RuntimeError(f"the model has run {self.step_index} of {self.rules.n_steps} steps; call run() first")
        df = self.datacollector.get_model_vars_dataframe()
        rec = np.full((len(df), len(R)), np.nan)
        for name, (index, _, _) in TIME_VARIABLES.items():
            rec[:, index] = df[name].to_numpy(dtype=float)
        cnt = np.stack([df[label].to_numpy(dtype=np.int64) for label in COUNTERS], axis=1)
        side = self.rules.lattice_side
        snaps = np.zeros((len(self.snapshot_days), N_S, side, side), dtype=np.int32)
        for k, day in enumerate(self.snapshot_days):
            if day in self.snapshots:
                snaps[k] = self.snapshots[day]
        return RawRun(self.patient.id, self.replicate, self.effects, rec, cnt, snaps)

    def to_dataset(self) -> xr.Dataset:
        """The run as the engine's output Dataset (``nksim.simulate`` schema)."""
        ds = build_dataset([self.raw_run()], self.params, self.protocol, [self.patient.id], 1, self.seed,
                           replicate_ids=[self.replicate])
        ds.attrs["source"] = f"nksim {__version__} Mesa {mesa.__version__} reference model (nksim.mesa_ref)"
        ds.attrs["implementation"] = "mesa_ref"
        return ds.isel(patient=0, replicate=0)


def simulate_reference(params: ParameterSet | str | Path = "default", protocol: Protocol | str | Path = "ahmadvand2023",
                       patient: str | None = None, *, seed: int = 0, replicate: int = 0) -> xr.Dataset:
    """Like :func:`nksim.simulate` but with the Mesa reference model (slow: small lattices only)."""
    return PatientModel(params, protocol, patient, seed=seed, replicate=replicate).run().to_dataset()


def run_reference(params: ParameterSet, protocol: Protocol, patient: str | None = None, *, seed: int = 0,
                  replicate: int = 0) -> RawRun:
    """Like :func:`nksim.simulate.run_one`: the raw arrays of one reference run."""
    return PatientModel(params, protocol, patient, seed=seed, replicate=replicate).run().raw_run()
