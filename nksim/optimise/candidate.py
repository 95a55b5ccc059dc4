"""One schedule a clinician could give: :class:`Candidate`, and its dated protocol.

A candidate is the whole treatment after the decision to treat (day 0 = first NK infusion):

=================  =========  ==============================================================
field              unit       meaning
=================  =========  ==============================================================
``regimen``        --         lymphodepletion (:data:`nksim.sweep.factors.REGIMENS`)
``nk_product``     --         product of every infusion (:data:`nksim.protocol.NK_PRODUCTS`)
``cytokine``       --         cytokine course (:data:`nksim.sweep.factors.CYTOKINES`), ``"none"``
``cytokine_start`` day        days after the first infusion by which the shipped course is
                              shifted (0: as in its trial)
``cytokine_days``  day        length of the course from its first dose: doses given later are
                              left out (0: the whole shipped course; a course is never extended)
``gap``            day        last lymphodepleting dose to the first infusion
``days``           day        infusion days since the first (``days[0] == 0``, increasing)
``shares``         percent    share of ``total_dose`` in each infusion (sum 100)
``donors``         --         donor label of each infusion (``"donor1"``, ``"donor2"``, ...):
                              a later infusion from the first donor meets a host primed
                              against it; a new donor starts its own priming
``total_dose``     kg-1       NK cells per kg over all infusions
=================  =========  ==============================================================

:meth:`Candidate.key` is canonical JSON of these fields: two proposals that give the same
schedule have the same key, so the optimiser simulates each schedule once per bank.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import NksimInputError
from ..protocol import NK_PRODUCTS
from ..sweep.factors import CYTOKINES, REGIMENS, split_label
from ..sweep.scenario import cytokine_events, regimen_events

#: Fields of a candidate, in :meth:`Candidate.key` order.
FIELDS = ("regimen", "nk_product", "cytokine", "cytokine_start", "gap", "days", "shares", "donors", "total_dose",
          "cytokine_days")
#: Fields that may be left out of a mapping (their default: the whole cytokine course).
OPTIONAL = {"cytokine_days": 0.0}


@dataclass(frozen=True)
class Candidate:
    """One schedule (module docstring for the fields and units)."""

    regimen: str
    nk_product: str
    cytokine: str
    cytokine_start: float
    gap: float
    days: tuple[float, ...]
    shares: tuple[float, ...]
    donors: tuple[str, ...]
    total_dose: float
    cytokine_days: float = 0.0

    def __post_init__(self) -> None:
        for f in ("days", "shares", "donors"):  # lists (from JSON or as_dict) become tuples: one representation
            object.__setattr__(self, f, tuple(getattr(self, f)))
        check_candidate(self, "<candidate>", "candidate")

    # ------------------------------------------------------------------ identity and labels
    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (tuples as lists)."""
        d = asdict(self)
        for k in ("days", "shares", "donors"):
            d[k] = list(d[k])
        for k, default in OPTIONAL.items():  # left out at its default: keys of schedules without it never change
            if d[k] == default:
                del d[k]
        return d

    def key(self) -> str:
        """Canonical JSON of the schedule: equal keys, equal schedules."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def n_infusions(self) -> int:
        """Number of infusions (1)."""
        return len(self.days)

    @property
    def last_day(self) -> float:
        """Day of the last infusion (day since the first)."""
        return float(self.days[-1])

    @property
    def intervals(self) -> tuple[float, ...]:
        """Days between consecutive infusions."""
        return tuple(b - a for a, b in zip(self.days[:-1], self.days[1:], strict=True))

    @property
    def new_donors(self) -> int:
        """Number of distinct donors (1)."""
        return len(set(self.donors))

    def label(self) -> str:
        """A short readable label, e.g. ``"2 inf d0/14 (50/50, donors 1,2) gap 2 il2"``."""
        days = "/".join(f"{d:g}" for d in self.days)
        donors = ",".join(d.removeprefix("donor") for d in self.donors)
        text = f"{self.n_infusions} inf d{days}"
        if self.n_infusions > 1:
            text += f" ({split_label(self.shares)}, donors {donors})"
        text += f" gap {self.gap:g}"
        if self.cytokine != "none":
            text += f" {self.cytokine}" + (f"@{self.cytokine_start:+g}" if self.cytokine_start else "")
            text += f" x{self.cytokine_days:g}d" if self.cytokine_days else ""
        return text

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], source: str = "<dict>", key: str = "candidate") -> Candidate:
        """A candidate from its plain fields (:meth:`as_dict`), every value checked (errors name ``key``)."""
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise NksimInputError(f"unknown field(s) {unknown}; allowed: {list(FIELDS)}", source=source, key=key)
        d = {**OPTIONAL, **d}
        missing = [f for f in FIELDS if f not in d]
        if missing:
            raise NksimInputError(f"missing field(s) {missing}", source=source, key=key)
        def number(v: Any, k: str) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise NksimInputError(f"must be a number, got {v!r}", source=source, key=k)
            return float(v)

        def text(v: Any, k: str) -> str:
            if not isinstance(v, str):
                raise NksimInputError(f"must be a string, got {v!r}", source=source, key=k)
            return v

        values: dict[str, Any] = {}
        for f in FIELDS:
            v, k = d[f], f"{key}.{f}"
            if f in ("days", "shares", "donors"):
                if not isinstance(v, (list, tuple)):
                    raise NksimInputError(f"must be a list (one entry per infusion), got {v!r}", source=source, key=k)
                conv = text if f == "donors" else number
                values[f] = tuple(conv(x, f"{k}[{i}]") for i, x in enumerate(v))
            elif f in ("cytokine_start", "gap", "total_dose", "cytokine_days"):
                values[f] = number(v, k)
            else:
                values[f] = text(v, k)
        cand = object.__new__(cls)
        for f, v in values.items():
            object.__setattr__(cand, f, v)
        check_candidate(cand, source, key)
        return cand

    @classmethod
    def from_sweep_schedule(cls, sched: Mapping[str, Any]) -> Candidate:
        """The candidate of a sweep scenario's schedule (``nksim.sweep.scenario.effective_schedule``).

        Infusions ``interval`` days apart with the scenario's shares (0 shares dropped; interval 0:
        one infusion of the whole dose), all from one donor, as a sweep gives them. A cytokine course
        restarted at each infusion (``cytokine_course = "each"``) is not a candidate's (one course).
        """
        if sched.get("cytokine_course", "first") != "first":
            raise NksimInputError(f"a sweep schedule with cytokine_course = {sched['cytokine_course']!r} has no "
                                  "nksim optimise candidate (its cytokine is one course from cytokine_start)",
                                  source="<sweep schedule>", key="cytokine_course")
        shares = [float(s) for s in sched["dose_split"]]
        interval = float(sched["interval"])
        days, kept = [], []
        for i, s in enumerate(shares):
            if s > 0:
                days.append(i * interval)
                kept.append(s)
        if interval == 0:
            days, kept = [0.0], [100.0]
        first = days[0]
        return cls(regimen=str(sched["regimen"]), nk_product=str(sched["nk_product"]),
                   cytokine=str(sched.get("cytokine", "none")), cytokine_start=0.0, gap=float(sched["gap"]) + first,
                   days=tuple(d - first for d in days), shares=tuple(100.0 * s / sum(kept) for s in kept),
                   donors=("donor1",) * len(days), total_dose=float(sched["total_dose"]) * sum(kept) / 100.0)

    # ------------------------------------------------------------------ protocol
    def protocol_dict(self, *, name: str, end_day: float, assessment_days: Sequence[float]) -> dict[str, Any]:
        """The protocol dictionary (``nksim.protocol.protocol_from_dict`` format, without patients).

        Days count from the first infusion; ``assessment_days`` too. Cytokine doses on or after
        ``end_day`` are left out (they could not act within the simulated window).
        """
        events: list[dict[str, Any]] = [
            {"day": -self.gap + float(rel), "kind": str(kind), "dose": float(dose),
             "unit": "mg m-2" if kind == "fludarabine" else "mg kg-1"}
            for rel, kind, dose in regimen_events(self.regimen)]
        for day, share, donor in zip(self.days, self.shares, self.donors, strict=True):
            events.append({"day": float(day), "kind": "nk_infusion", "dose": self.total_dose * share / 100.0,
                           "unit": "kg-1", "donor": donor})
        course = cytokine_events(self.cytokine)
        first_dose = min((float(rel) for rel, *_ in course), default=0.0)
        for rel, kind, dose, unit in course:
            if self.cytokine_days and float(rel) - first_dose >= self.cytokine_days:
                continue  # after the course's chosen length
            day = float(rel) + self.cytokine_start
            if day < float(end_day):
                events.append({"day": day, "kind": str(kind), "dose": float(dose), "unit": str(unit)})
        start = min(e["day"] for e in events)
        return {
            "protocol": {
                "name": name, "title": self.label(), "start_day": float(min(start, -self.gap)),
                "end_day": float(end_day), "assessment_days": [float(d) for d in assessment_days],
                "snapshot_days": [], "infusions_after_lymphodepletion": True, "nk_product": self.nk_product,
            },
            "events": events,
        }

    def lymphodepletion_offset(self) -> float:
        """Days from the start of lymphodepletion to the first infusion (0 without lymphodepletion)."""
        ld = regimen_events(self.regimen)
        if not ld:
            return 0.0
        return self.gap - min(float(rel) for rel, _, _ in ld)


def check_candidate(c: Candidate, source: str, key: str) -> None:
    """Raise :class:`NksimInputError` (naming ``source`` and ``key``) unless ``c`` is a valid schedule."""
    def bad(field: str, msg: str) -> NksimInputError:
        return NksimInputError(msg, source=source, key=f"{key}.{field}")

    if c.regimen not in REGIMENS:
        raise bad("regimen", f"unknown regimen {c.regimen!r}; allowed: {sorted(REGIMENS)}")
    if c.nk_product not in NK_PRODUCTS:
        raise bad("nk_product", f"unknown product {c.nk_product!r}; allowed: {sorted(NK_PRODUCTS)}")
    if c.cytokine not in CYTOKINES:
        raise bad("cytokine", f"unknown cytokine {c.cytokine!r}; allowed: {sorted(CYTOKINES)}")
    if not (math.isfinite(c.cytokine_start) and 0 <= c.cytokine_start <= 180):
        raise bad("cytokine_start", f"must be in [0, 180] day, got {c.cytokine_start!r}")
    if not (math.isfinite(c.cytokine_days) and 0 <= c.cytokine_days <= 180):
        raise bad("cytokine_days", f"must be in [0, 180] day (0: the whole course), got {c.cytokine_days!r}")
    if not (math.isfinite(c.gap) and 1 <= c.gap <= 180):
        raise bad("gap", f"must be in [1, 180] day, got {c.gap!r}")
    n = len(c.days)
    if n < 1 or len(c.shares) != n or len(c.donors) != n:
        raise bad("days", f"days, shares and donors need one entry per infusion (>= 1), got {n}, {len(c.shares)}, "
                          f"{len(c.donors)}")
    if c.days[0] != 0.0:
        raise bad("days", f"the first infusion is day 0, got {c.days[0]!r}")
    if any(not math.isfinite(d) or d < 0 or d > 365 for d in c.days) or any(
            b <= a for a, b in zip(c.days[:-1], c.days[1:], strict=True)):
        raise bad("days", f"infusion days must increase strictly within [0, 365] day, got {list(c.days)}")
    if any(not math.isfinite(s) or s <= 0 or s > 100 for s in c.shares) or abs(sum(c.shares) - 100.0) > 1e-6:
        raise bad("shares", f"shares must be in (0, 100] percent and sum to 100, got {list(c.shares)}")
    if any(not d.strip() for d in c.donors):
        raise bad("donors", f"donor labels must be non-empty, got {list(c.donors)}")
    if not (math.isfinite(c.total_dose) and 1e3 <= c.total_dose <= 1e10):
        raise bad("total_dose", f"must be in [1e3, 1e10] kg-1, got {c.total_dose!r}")
