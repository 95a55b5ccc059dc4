"""Treatment protocols: dated lymphodepletion and NK-infusion events, dose groups, patients.

A protocol file (``experiments/protocols/<name>.toml``) holds

* ``[protocol]``: name, title, source, simulated window (``start_day``,
  ``end_day``; day 0 is the first NK infusion), ``assessment_days``,
  ``snapshot_days``, ``infusions_after_lymphodepletion`` (forbid an infusion
  on or before the last lymphodepleting dose) and ``nk_product`` (the kind of NK
  product infused, one of :data:`NK_PRODUCTS`: it selects the donor-NK trafficking
  parameters, ``nk.*`` for a fresh product, ``expanded_nk.*`` for an ex vivo
  expanded one) and ``host_tolerant`` (optional, default false: the host tolerates the donor, as
  after a transplant from the same donor, so donor NK are not rejected);
* ``[[events]]``: events every patient gets (``day``, ``kind``, ``dose``, ``unit``,
  ``source``);
* ``[groups.<id>]`` with ``[[groups.<id>.events]]``: events of a dose group;
* ``[[patients]]``: ``id``, ``group``, ``evaluable`` and optional covariates
  (``body_weight``, ``body_surface_area``, ``baseline_blast_pct``, each
  ``{value = ..., unit = ...}``) that replace the population draw, and ``disease`` (one of
  :data:`DISEASE_STATES`, default ``"active"``: whether her blasts regrow with the kinetic classes of
  active disease or from remission).

Every field has a declared TOML type (:data:`FIELD_TYPES`), checked in one place
(:func:`nksim.checks.check_table`) before any value is used: a wrong type anywhere is a
one-line :class:`~nksim.errors.NksimInputError` naming the file, the key and the expected type.
``assessment_days`` lie after the first NK infusion (day 0) and no later than ``end_day``.

Event kinds and the unit their dose must be given in are in :data:`EVENT_UNITS`.
A protocol is just a list of dated events: any number of infusions is allowed, listed in
any order. For each patient (common + group events): every dose is within
:data:`MAX_DOSE` (NK cells also in total), the first NK infusion is on day 0 (the time
origin of every output), and no two events of one kind fall at the same time (two NK
infusions at the same time only from different donors).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._frozen import reduce_frozen
from .checks import check_number, check_table, number_problem
from .errors import NksimInputError
from .fileio import read_toml
from .quantities import EVENT_KINDS
from .resources import data_path
from .units import check_unit

#: Folder of the shipped protocols (``experiments/protocols/`` at the repository root; package data in a wheel).
PROTOCOLS_DIR = data_path("protocols")

#: Event kind -> unit its dose must be given in.
EVENT_UNITS: dict[str, str] = {k.name: k.dose_unit for k in EVENT_KINDS}
#: Integer codes of event kinds used by the engine.
EVENT_CODES: dict[str, int] = {k.name: code for code, k in enumerate(EVENT_KINDS)}
#: Donor label of NK infusions that name none (the trial's assumption: one donor per patient).
DEFAULT_DONOR = "donor1"
LYMPHODEPLETING = ("fludarabine", "cyclophosphamide")
#: NK product kinds a protocol may name (``protocol.nk_product``) and what each means.
NK_PRODUCTS: dict[str, str] = {
    "fresh": "unexpanded donor NK (apheresis, CD3-depleted / CD56-selected, at most overnight IL-2 activation): "
             "traffic like recirculating lymphocytes (nk.tissue_uptake_rate, nk.tissue_return_rate)",
    "expanded": "ex vivo expanded and activated NK (weeks of culture with cytokines / feeders): retained in "
                "lung, liver and spleen (expanded_nk.tissue_uptake_rate, expanded_nk.tissue_return_rate)",
    "ciml": "cytokine-induced memory-like NK (16 h IL-12/15/18 preactivation; Romee 2016): traffic like fresh NK, "
            "high-affinity IL-2 receptor, longer-lived, more cytotoxic (ciml_nk.*)",
}

#: Largest dose of one event of each kind, in :data:`EVENT_UNITS` (every dose must also be > 0), and why.
#: NK cells: the number of simulated NK agents, and so the run time and memory, grow with the dose, so
#: the cap is that of a sweep's total dose (``total_dose`` in :mod:`nksim.sweep.factors`), 1e10 kg-1,
#: about 100 times the largest clinical NK doses (~1e8 kg-1); it also bounds a patient's total over all
#: infusions. Drugs and cytokines: generous maxima, about 5-10 times the largest clinical single dose,
#: that still catch a slip of units (mg for ug, IU for MIU) without limiting what-if protocols.
MAX_DOSE: dict[str, tuple[float, str]] = {
    "fludarabine": (250.0, "clinical doses are 25-40 mg m-2 a day (the neurotoxic high-dose regimens of the "
                           "1980s up to 125)"),
    "cyclophosphamide": (300.0, "clinical doses are at most 60 mg kg-1 a day (Hi-Cy, transplant conditioning)"),
    "nk_infusion": (1e10, "larger doses make the number of simulated NK cells, and so run time and memory, "
                          "unbounded; clinical doses are below 1e8 kg-1 and sweeps cap the total dose at 1e10 kg-1"),
    "il2": (1000.0, "in million IU (MIU): s.c. doses are 1-10 MIU, high-dose i.v. bolus about 50-110 MIU"),
    "il15_agonist": (100.0, "N-803 s.c. doses are 1-20 ug kg-1 (deprecated alias of n803)"),
    "rhil15_iv": (10.0, "rhIL-15 i.v. doses are 0.25-3 ug kg-1 (Cooley 2019; Miller 2018)"),
    "rhil15_sc": (20.0, "rhIL-15 s.c. doses are at most 3 ug kg-1"),
    "n803": (100.0, "N-803 s.c. doses are 1-20 ug kg-1 (Romee 2018)"),
    "il2dt": (100.0, "denileukin diftitox doses are 9-18 ug kg-1 (Attia 2005; Bachanova 2014)"),
    "cytarabine": (10000.0, "high-dose cytarabine is 1-3 g m-2 a dose (FLAG: 2 g m-2 a day for 5 days)"),
}
assert set(MAX_DOSE) == set(EVENT_UNITS), "every event kind needs a dose range"

#: Patient covariates a protocol may fix, with their units and allowed ranges.
COVARIATES: dict[str, tuple[str, float, float]] = {
    "body_weight": ("kg", 1.0, 300.0),
    "body_surface_area": ("m2", 0.2, 3.5),
    "baseline_blast_pct": ("percent", 0.0, 100.0),
}

#: A patient's disease status (``[[patients]] disease``) and what it means for her blast kinetics
#: (:func:`nksim.patients.effects_from_normals`).
DISEASE_STATES: dict[str, str] = {
    "active": "active (refractory or relapsed) disease: net growth from the kinetic classes learnt from refractory AML "
              "(blasts.net_growth_rate, random_effects.proliferative_*)",
    "remission": "in remission (complete or molecular): residual disease regrows with the doubling time of relapse "
                 "from remission (blasts.remission_doubling_time, blasts.remission_doubling_log_sd)",
}


@dataclass(frozen=True, order=True)
class Event:
    """A dated dose: ``day`` (days from first infusion), ``kind`` and ``dose`` in ``EVENT_UNITS[kind]``."""

    day: float
    kind: str
    dose: float
    source: str = field(default="", compare=False)
    #: donor of an ``nk_infusion`` (a label; infusions with the same label share a donor, so a later
    #: one meets the host's primed response); ``""`` for other kinds
    donor: str = ""

    @property
    def unit(self) -> str:
        """The unit of ``dose`` for this event's kind (``EVENT_UNITS[kind]``)."""
        return EVENT_UNITS[self.kind]


@dataclass(frozen=True)
class Patient:
    """A trial patient: dose group, evaluability and fixed covariates (values in COVARIATES units)."""

    __reduce__ = reduce_frozen

    id: str
    group: str
    evaluable: bool = True
    covariates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""
    #: disease status, one of :data:`DISEASE_STATES`
    disease: str = "active"


def population_patient(pid: str, population: Mapping[str, Any] | None = None) -> Patient:
    """A virtual patient of group ``all`` from a cohort's population (sweeps, ``nksim optimise``).

    ``population``: ``{}`` or None (active disease, every value drawn), or ``disease`` (one of
    :data:`DISEASE_STATES`) and/or ``baseline_blast_pct`` (percent, fixed for every patient).
    """
    pop = dict(population or {})
    cov = {"baseline_blast_pct": float(pop["baseline_blast_pct"])} if "baseline_blast_pct" in pop else {}
    return Patient(pid, "all", covariates=MappingProxyType(cov), disease=pop.get("disease", "active"))


@dataclass(frozen=True)
class Protocol:
    """A validated treatment protocol."""

    __reduce__ = reduce_frozen

    name: str
    title: str
    source: str
    origin: str
    start_day: float
    end_day: float
    assessment_days: tuple[float, ...]
    snapshot_days: tuple[float, ...]
    infusions_after_lymphodepletion: bool
    #: kind of NK product infused (a key of :data:`NK_PRODUCTS`)
    nk_product: str
    events: tuple[Event, ...]
    groups: Mapping[str, tuple[Event, ...]]
    patients: tuple[Patient, ...]
    #: the host tolerates the donor (NK from the patient's own transplant donor): no allo-rejection (0.6.0)
    host_tolerant: bool = False

    def patient(self, patient_id: str) -> Patient:
        """The patient with id ``patient_id`` (KeyError if the protocol has none)."""
        for p in self.patients:
            if p.id == patient_id:
                return p
        raise KeyError(f"protocol '{self.name}' has no patient '{patient_id}'")

    def with_nk_dose_factor(self, factor: float) -> Protocol:
        """The same protocol with every NK infusion dose multiplied by ``factor`` (> 0)."""
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"NK dose factor must be a finite number > 0, got {factor!r}")

        def scale(evs: tuple[Event, ...]) -> tuple[Event, ...]:
            return tuple(replace(e, dose=e.dose * factor) if e.kind == "nk_infusion" else e for e in evs)

        new = replace(self, events=scale(self.events),
                      groups=MappingProxyType({g: scale(evs) for g, evs in self.groups.items()}),
                      title=f"{self.title} (NK doses x {factor:g})")
        _validate_schedule(new, f"{self.origin} (NK doses x {factor:g})")  # the dose caps still hold
        return new

    def events_for(self, patient: str | Patient) -> tuple[Event, ...]:
        """All events of a patient (common + its group's), sorted by day."""
        p = patient if isinstance(patient, Patient) else self.patient(patient)
        return tuple(sorted(self.events + self.groups.get(p.group, ())))

    def with_events(self, events: Sequence[Event], groups: Mapping[str, Sequence[Event]] | None = None) -> Protocol:
        """A copy with other events (e.g. a new schedule), validated like file input."""
        new = replace(
            self,
            events=tuple(sorted(events)),
            groups=MappingProxyType({g: tuple(sorted(ev))
                                     for g, ev in (groups if groups is not None else self.groups).items()}),
            origin=f"{self.origin} (modified)",
        )
        _validate_schedule(new, new.origin)
        return new


def resolve_protocol_path(protocol: str | Path) -> Path:
    """The TOML file of a protocol given as a path or as a name in ``experiments/protocols/``."""
    p = Path(protocol)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise NksimInputError("protocol file not found", source=p)
        return p
    candidate = PROTOCOLS_DIR / f"{protocol}.toml"
    if not candidate.is_file():
        known = sorted(q.stem for q in PROTOCOLS_DIR.glob("*.toml"))
        raise NksimInputError(f"no protocol named '{protocol}'; shipped protocols: {known}", source=candidate)
    return candidate


def _num(v: Any, source: str, key: str, lo: float = -math.inf, hi: float = math.inf, what: str = "") -> float:
    return check_number(v, source=source, key=key, lo=lo, hi=hi, unit=what)


#: The declared TOML type of every field of a protocol file, by table (``"array of tables"``:
#: ``[[...]]``; ``"number"``: an integer or a float): checked by :func:`nksim.checks.check_table`.
FIELD_TYPES: dict[str, dict[str, str]] = {
    "<top level>": {"protocol": "table", "events": "array of tables", "groups": "table",
                    "patients": "array of tables"},
    "protocol": {"name": "string", "title": "string", "source": "string", "start_day": "number",
                 "end_day": "number", "assessment_days": "array of numbers", "snapshot_days": "array of numbers",
                 "infusions_after_lymphodepletion": "boolean", "nk_product": "string", "host_tolerant": "boolean"},
    "event": {"day": "number", "kind": "string", "dose": "number", "unit": "string", "source": "string",
              "donor": "string"},
    "group": {"description": "string", "source": "string", "events": "array of tables"},
    "patient": {"id": "string", "group": "string", "evaluable": "boolean", "note": "string", "disease": "string",
                **{c: "table" for c in COVARIATES}},
    "covariate": {"value": "number", "unit": "string", "source": "string"},
}
#: Fields each table must have.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "<top level>": ("protocol",),
    "protocol": ("name", "start_day", "end_day", "assessment_days", "nk_product"),
    "event": ("day", "kind", "dose", "unit"),
    "group": ("events",),
    "patient": ("id", "group"),
    "covariate": ("value", "unit"),
}


def _check_fields(table: Any, kind: str, source: str, key: str) -> Mapping[str, Any]:
    """Check ``table`` (a ``kind`` of :data:`FIELD_TYPES`): a table, known fields, required ones, declared types."""
    return check_table(table, FIELD_TYPES[kind], source=source, key=key, required=REQUIRED_FIELDS[kind])


def _check_dose(dose: Any, kind: str, source: str, key: str) -> float:
    """A dose in (0, MAX_DOSE[kind]] of EVENT_UNITS[kind], else an NksimInputError with the range and the reason."""
    hi, why = MAX_DOSE[kind]
    problem = number_problem(dose, lo=0.0, hi=hi, unit=EVENT_UNITS[kind], lo_open=True)
    if problem is not None:
        raise NksimInputError(f"{kind} dose: {problem} ({why})", source=source, key=key)
    return float(dose)


def _parse_event(e: Any, source: str, key: str) -> Event:
    _check_fields(e, "event", source, key)
    if e["kind"] not in EVENT_UNITS:
        raise NksimInputError(f"unknown event kind '{e['kind']}'; allowed: {sorted(EVENT_UNITS)}", source=source,
                              key=f"{key}.kind")
    check_unit(e["unit"], EVENT_UNITS[e["kind"]], source=source, key=f"{key}.unit")
    day = _num(e["day"], source, f"{key}.day", what="day")
    dose = _check_dose(e["dose"], e["kind"], source, f"{key}.dose")
    donor = ""
    if e["kind"] == "nk_infusion":
        donor = e.get("donor", DEFAULT_DONOR)
        if not donor.strip():
            raise NksimInputError(f"donor must be a non-empty label, got {donor!r}", source=source, key=f"{key}.donor")
        donor = donor.strip()
    elif "donor" in e:
        raise NksimInputError("only nk_infusion events have a donor", source=source, key=f"{key}.donor")
    return Event(day, e["kind"], dose, str(e.get("source", "")), donor)


def load_protocol(protocol: str | Path = "ahmadvand2023") -> Protocol:
    """Load and validate a protocol by name (``experiments/protocols/<name>.toml``) or path."""
    path = resolve_protocol_path(protocol)
    return protocol_from_dict(read_toml(path, "protocol file"), str(path))


def protocol_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Protocol:
    """Build a protocol from the parsed TOML structure (see module docstring).

    Every field's TOML type is checked (:data:`FIELD_TYPES`) and every value validated; any
    problem is an :class:`~nksim.errors.NksimInputError` naming ``source`` and the key.
    """
    _check_fields(data, "<top level>", source, "")
    head = _check_fields(data["protocol"], "protocol", source, "protocol")
    start = _num(head["start_day"], source, "protocol.start_day", -365, 0, "day")
    end = _num(head["end_day"], source, "protocol.end_day", 1, 3650, "day")
    if start != int(start) or end != int(end):
        raise NksimInputError("start_day and end_day must be whole days", source=source, key="protocol")

    def day_list(name: str, lo: float, allowed: str, lo_open: bool = False) -> tuple[float, ...]:
        raw = head.get(name, [])
        days = tuple(check_number(d, source=source, key=f"protocol.{name}[{i}]", lo=lo, hi=end, unit=allowed,
                                  lo_open=lo_open) for i, d in enumerate(raw))
        if any(d != int(d) for d in days):
            raise NksimInputError("days must be whole days", source=source, key=f"protocol.{name}")
        if len(set(days)) != len(days) or list(days) != sorted(days):
            raise NksimInputError("days must be strictly increasing", source=source, key=f"protocol.{name}")
        return days

    product = head["nk_product"]
    if product not in NK_PRODUCTS:
        raise NksimInputError(f"unknown NK product {product!r}; allowed: {sorted(NK_PRODUCTS)} "
                              "(fresh: unexpanded donor NK; expanded: ex vivo expanded NK; ciml: memory-like NK)",
                              source=source, key="protocol.nk_product")
    # a response is assessed after the first NK infusion (day 0, the time origin) and within the simulation
    assessment = day_list("assessment_days", 0, "day (after the first NK infusion on day 0, up to end_day)",
                          lo_open=True)
    if not assessment:
        raise NksimInputError("at least one assessment day is required", source=source, key="protocol.assessment_days")
    snapshots = day_list("snapshot_days", start, "day (within start_day..end_day)")
    events = tuple(sorted(_parse_event(e, source, f"events[{i}]") for i, e in enumerate(data.get("events", []))))
    groups: dict[str, tuple[Event, ...]] = {}
    for gid, g in data.get("groups", {}).items():
        _check_fields(g, "group", source, f"groups.{gid}")
        groups[gid] = tuple(sorted(_parse_event(e, source, f"groups.{gid}.events[{i}]")
                                   for i, e in enumerate(g["events"])))
    patients = []
    seen: set[str] = set()
    for i, p in enumerate(data.get("patients", [])):
        key = f"patients[{i}]"
        _check_fields(p, "patient", source, key)
        pid = p["id"]
        if not pid.strip():
            raise NksimInputError("a patient id must be a non-empty string", source=source, key=f"{key}.id")
        if pid in seen:
            raise NksimInputError(f"duplicate patient id '{pid}'", source=source, key=f"{key}.id")
        seen.add(pid)
        if groups and p["group"] not in groups:
            raise NksimInputError(f"unknown group '{p['group']}'; defined groups: {sorted(groups)}", source=source,
                                  key=f"{key}.group")
        cov = {}
        for c, (unit, lo, hi) in COVARIATES.items():
            if c in p:
                ck = f"{key}.{c}"
                _check_fields(p[c], "covariate", source, ck)
                check_unit(p[c]["unit"], unit, source=source, key=f"{ck}.unit")
                cov[c] = _num(p[c]["value"], source, f"{ck}.value", lo, hi, unit)
        disease = p.get("disease", "active")
        if disease not in DISEASE_STATES:
            raise NksimInputError(f"unknown disease status {disease!r}; allowed: {', '.join(DISEASE_STATES)}",
                                  source=source, key=f"{key}.disease")
        patients.append(Patient(pid, p["group"], p.get("evaluable", True), MappingProxyType(cov), p.get("note", ""),
                                disease))
    proto = Protocol(
        name=head["name"],
        title=head.get("title", ""),
        source=head.get("source", ""),
        origin=source,
        start_day=start,
        end_day=end,
        assessment_days=assessment,
        snapshot_days=snapshots,
        infusions_after_lymphodepletion=head.get("infusions_after_lymphodepletion", True),
        nk_product=product,
        events=events,
        groups=MappingProxyType(groups),
        patients=tuple(patients),
        host_tolerant=head.get("host_tolerant", False),
    )
    _validate_schedule(proto, source)
    if not patients:  # after the schedule: its errors come first
        raise NksimInputError("no [[patients]]: a protocol needs at least one patient (id = \"...\", group = "
                              "\"...\")", source=source, key="patients")
    return proto


def _validate_schedule(proto: Protocol, source: str) -> None:
    group_ids = list(proto.groups) or [""]
    for gid in group_ids:
        evs = sorted(proto.events + proto.groups.get(gid, ()))
        where = f"groups.{gid}.events" if gid else "events"
        for e in evs:
            if not proto.start_day <= e.day < proto.end_day:
                raise NksimInputError(
                    f"{e.kind} on day {e.day:g} is outside the simulated window "
                    f"[{proto.start_day:g}, {proto.end_day:g})",
                    source=source, key=where)
        infusions = [e for e in evs if e.kind == "nk_infusion"]
        if not infusions:
            raise NksimInputError("no nk_infusion event", source=source, key=where)
        if proto.infusions_after_lymphodepletion:
            ld = [e.day for e in evs if e.kind in LYMPHODEPLETING]
            if ld and infusions[0].day <= max(ld):
                raise NksimInputError(
                    f"infusion on day {infusions[0].day:g} is not after the last lymphodepleting dose "
                    f"(day {max(ld):g}); allowed: infusion days > {max(ld):g}, or set "
                    "protocol.infusions_after_lymphodepletion = false",
                    source=source, key=where)
        if infusions[0].day != 0:
            raise NksimInputError(
                f"the first nk_infusion is on day {infusions[0].day:g}; it must be on day 0, because every day "
                "of a protocol counts from the first NK infusion (the time axis of the outputs is 'days since the "
                f"first NK infusion'): add {-infusions[0].day:g} to every day of the protocol (events, "
                "start_day, end_day, assessment_days, snapshot_days)",
                source=source, key=where)
        _check_doses_and_duplicates(evs, source, where)


def _check_doses_and_duplicates(evs: Sequence[Event], source: str, where: str) -> None:
    """One patient's events: doses in range, a bounded NK total, no two events of a kind at the same time.

    Two NK infusions at the same time are allowed only from different donors (two products); two
    events of the same drug or cytokine at the same time are refused (give the day's total once).
    Events may be listed in any order.
    """
    seen: dict[tuple[float, str, str], Event] = {}
    for e in evs:
        _check_dose(e.dose, e.kind, source, where)
        slot = (e.day, e.kind, e.donor)
        if slot in seen:
            if e.kind == "nk_infusion":
                raise NksimInputError(
                    f"two nk_infusion events of donor '{e.donor}' on day {e.day:g} (doses {seen[slot].dose:g} and "
                    f"{e.dose:g} kg-1); give one infusion with the summed dose ({seen[slot].dose + e.dose:g} kg-1)",
                    source=source, key=where)
            raise NksimInputError(
                f"two {e.kind} events on day {e.day:g} (doses {seen[slot].dose:g} and {e.dose:g} {e.unit}); a "
                "duplicate is refused: give one event with the intended dose", source=source, key=where)
        seen[slot] = e
    total = sum(e.dose for e in evs if e.kind == "nk_infusion")
    hi, why = MAX_DOSE["nk_infusion"]
    if total > hi:
        raise NksimInputError(f"total NK dose over all infusions {total:g} kg-1 is above the allowed {hi:g} kg-1 "
                              f"({why})", source=source, key=where)
