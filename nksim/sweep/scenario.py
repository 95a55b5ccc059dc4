"""Scenario -> treatment protocol: dated events from schedule factor values.

A scenario's *schedule* (see :mod:`nksim.sweep.factors`) becomes a protocol dictionary in the
format of :func:`nksim.protocol.protocol_from_dict` (so it is validated exactly like a
protocol file):

* infusion ``i`` (0-based) on day ``i * interval`` with dose ``total_dose * dose_split[i] / 100``
  NK cells per kg (infusions with a 0 share are left out; day 0 is always the first infusion);
* the regimen's lymphodepleting doses (from the shipped protocol named in
  :data:`~nksim.sweep.factors.REGIMENS`), shifted so that the last one falls on day ``-gap``;
* the cytokine's doses (``cytokine`` other than ``"none"``: from the shipped protocol named in
  :data:`~nksim.sweep.factors.CYTOKINES`, see :func:`cytokine_events`) as many days after day 0 as
  they come after that protocol's first infusion, with the same doses and units; doses on or after
  ``end_day`` are left out;
* the simulation starts on the first lymphodepleting day (``-gap`` without lymphodepletion)
  and ends on the sweep's ``end_day``; no lattice snapshots are taken.

Different gaps or regimens thus give different start days; the sweep store puts every
scenario on a common time axis (days since the first infusion) and pads with NaN.

Clocks: protocol days count from the first infusion. With the sweep's ``clock =
"lymphodepletion"`` the spec's assessment days count from the start of lymphodepletion instead,
and :func:`assessment_days_on_clock` turns them into each scenario's protocol days (calendar day
minus :func:`lymphodepletion_offset`), so that every scenario is assessed on the same days after
Flu/Cy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from ..errors import NksimInputError
from ..protocol import LYMPHODEPLETING, Protocol, load_protocol, protocol_from_dict
from .factors import (
    CYTOKINE_GROUPS,
    CYTOKINE_KINDS,
    CYTOKINES,
    REGIMENS,
    SPLIT_FACTORS,
    is_parameter,
    split_label,
)

#: Schedule values used when neither the baseline nor the scenario gives them.
DEFAULT_SCHEDULE: dict[str, Any] = {
    "regimen": "trial",
    "nk_product": "expanded",
    "cytokine": "none",
    "cytokine_course": "first",
    "interval": 7.0,
    "dose_split": (50.0, 50.0),
    "total_dose": 1.5e7,
}


@cache
def regimen_events(regimen: str) -> tuple[tuple[float, str, float], ...]:
    """Lymphodepleting doses of a regimen as ``(day relative to the last dose, kind, dose)``.

    Doses are in :data:`nksim.protocol.EVENT_UNITS` (Flu mg m-2, Cy mg kg-1). ``"none"`` has none.
    """
    name = REGIMENS[regimen]
    if name is None:
        return ()
    proto: Protocol = load_protocol(name)
    ld = [e for e in proto.events if e.kind in LYMPHODEPLETING]
    last = max(e.day for e in ld)
    return tuple(sorted((e.day - last, e.kind, e.dose) for e in ld))


@cache
def cytokine_events(cytokine: str) -> tuple[tuple[float, str, float, str], ...]:
    """Cytokine doses of a ``cytokine`` level as ``(day relative to the first NK infusion, kind, dose, unit)``.

    Taken from the shipped protocol named in :data:`~nksim.sweep.factors.CYTOKINES`: the events
    of the kinds :data:`~nksim.sweep.factors.CYTOKINE_KINDS` (common or of a dose group) that its
    patients get, with their days counted from each patient's first NK infusion, their doses and
    their units (:data:`nksim.protocol.EVENT_UNITS`: IL-2 in ``1e6`` IU, i.e. MIU; IL-15 agonists
    in ``ug kg-1``). Where the protocol's groups differ, the patients of the group named in
    :data:`~nksim.sweep.factors.CYTOKINE_GROUPS`; they must all share one schedule. ``"none"``
    has none.
    """
    name = CYTOKINES[cytokine]
    if name is None:
        return ()
    proto: Protocol = load_protocol(name)
    group = CYTOKINE_GROUPS.get(cytokine)
    schedules = set()
    for p in proto.patients:
        if group is not None and p.group != group:
            continue
        evs = proto.events_for(p)
        first = min(e.day for e in evs if e.kind == "nk_infusion")
        schedules.add(tuple(sorted((e.day - first, e.kind, e.dose, e.unit) for e in evs if e.kind in CYTOKINE_KINDS)))
    where = f" (group '{group}')" if group is not None else ""
    if len(schedules) != 1 or not next(iter(schedules)):
        raise NksimInputError(
            f"cytokine '{cytokine}': the patients of protocol '{name}'{where} do not share one non-empty schedule of "
            f"{list(CYTOKINE_KINDS)} events ({len(schedules)} different schedules); name a dose group in "
            "nksim.sweep.factors.CYTOKINE_GROUPS", source=proto.origin, key="events")
    return schedules.pop()


def course_per_infusion(course: Sequence[Sequence[Any]], infusion_days: Sequence[float]
                        ) -> tuple[tuple[float, str, float, str], ...]:
    """A cytokine course restarted at every infusion: ``(day, kind, dose, unit)`` rows, sorted.

    ``course``: the course counted from the first infusion (day 0), as :func:`cytokine_events` gives
    it; ``infusion_days``: the days of the infusions (the first is 0). Each infusion gets the course
    shifted to its day; where two shifted courses give the same kind on the same day, that day gets
    one dose (the larger, were they to differ), not two: the course is extended, not doubled.
    """
    rows: dict[tuple[float, str], tuple[float, str]] = {}
    for start in infusion_days:
        for rel, kind, dose, unit in course:
            k = (float(rel) + float(start), str(kind))
            if k not in rows or float(dose) > rows[k][0]:
                rows[k] = (float(dose), str(unit))
    return tuple(sorted((day, kind, dose, unit) for (day, kind), (dose, unit) in rows.items()))


def native_gap(regimen: str) -> float:
    """Days from the regimen's last lymphodepleting dose to the first infusion in its own protocol.

    7 for the trial, 2 for Hi-Cy/Flu; 1 for ``"none"``.
    """
    name = REGIMENS[regimen]
    if name is None:
        return 1.0
    proto = load_protocol(name)
    last = max(e.day for e in proto.events if e.kind in LYMPHODEPLETING)
    first_infusion = min(e.day for p in proto.patients for e in proto.events_for(p) if e.kind == "nk_infusion")
    return float(first_infusion - last)


def effective_schedule(baseline: Mapping[str, Any], levels: Mapping[str, Any], source: str, key: str) -> dict[str, Any]:
    """Merge a scenario's schedule levels over the baseline (and the defaults).

    The three dose-split factors are one group: a scenario that sets any of them replaces the
    baseline's. Returns ``regimen``, ``nk_product``, ``gap``, ``interval``, ``dose_split`` (tuple of
    percent), ``total_dose``, plus the derived ``n_infusions`` (infusions actually given) and
    ``first_dose_pct``; and ``cytokine`` only where it is not ``"none"`` (so that the schedules, and
    the plan digests, of sweeps without cytokine are those of before the factor existed), with
    ``cytokine_course`` only where it is not ``"first"``.
    """
    merged: dict[str, Any] = dict(DEFAULT_SCHEDULE)
    base = {k: v for k, v in baseline.items() if not is_parameter(k)}
    if any(k in base for k in SPLIT_FACTORS):
        for k in SPLIT_FACTORS:
            merged.pop(k, None)
    merged.update(base)
    sched = {k: v for k, v in levels.items() if not is_parameter(k)}
    if any(k in sched for k in SPLIT_FACTORS):
        for k in SPLIT_FACTORS:
            merged.pop(k, None)
    merged.update(sched)
    given = [k for k in SPLIT_FACTORS if k in merged]
    if len(given) > 1:
        raise NksimInputError(f"sets {given}: give the dose split one way only (one of {list(SPLIT_FACTORS)})",
                              source=source, key=key)
    if "n_infusions" in merged:
        n = int(merged.pop("n_infusions"))
        split: tuple[float, ...] = tuple(100.0 / n for _ in range(n))
    elif "first_dose_pct" in merged:
        p = float(merged.pop("first_dose_pct"))
        split = (p, 100.0 - p)
    else:
        split = tuple(float(s) for s in merged.pop("dose_split"))
    regimen = str(merged["regimen"])
    out = {
        "regimen": regimen,
        "nk_product": str(merged["nk_product"]),
        "gap": float(merged["gap"]) if "gap" in merged else native_gap(regimen),
        "interval": float(merged["interval"]),
        "dose_split": split,
        "total_dose": float(merged["total_dose"]),
    }
    # infusions actually given: an interval of 0 puts them all on day 0, given as one (schedule_protocol)
    out["n_infusions"] = sum(1 for s in split if s > 0) if out["interval"] > 0 else 1
    out["first_dose_pct"] = split[0]
    if str(merged["cytokine"]) != "none":  # recorded only when given: schedules without one are unchanged
        out["cytokine"] = str(merged["cytokine"])
        if str(merged["cytokine_course"]) != "first":  # likewise: a course from the first infusion is the default
            out["cytokine_course"] = str(merged["cytokine_course"])
    return out


def schedule_protocol(schedule: Mapping[str, Any], *, name: str, title: str, end_day: float,
                      assessment_days: Sequence[float], ld_events: Sequence[Sequence[Any]],
                      cyto_events: Sequence[Sequence[Any]] | None = None) -> dict[str, Any]:
    """The protocol dictionary (``protocol_from_dict`` format, without patients) of a schedule.

    ``ld_events`` are the regimen's ``(relative day, kind, dose)`` from :func:`regimen_events`;
    ``cyto_events`` the cytokine's ``(day after the first infusion, kind, dose, unit)`` (default:
    :func:`cytokine_events` of ``schedule["cytokine"]``, none without that key). With
    ``schedule["cytokine_course"] == "each"`` the course restarts at every planned infusion, one of
    share 0 included (:func:`course_per_infusion`; ``dose_split = [100, 0]`` is then one infusion with a
    second course ``interval`` days later). Cytokine doses on or after ``end_day`` are left out (they could not
    act within the simulated window).
    """
    gap = float(schedule["gap"])
    events = [{"day": -gap + float(rel), "kind": str(kind), "dose": float(dose),
               "unit": "mg m-2" if kind == "fludarabine" else "mg kg-1"} for rel, kind, dose in ld_events]
    # the planned infusion days, one per entry of the split (a 0 share included: it still plans a day)
    planned = [i * float(schedule["interval"]) for i in range(len(schedule["dose_split"]))]
    doses: dict[float, float] = {}
    for day, share in zip(planned, schedule["dose_split"]):
        if share > 0:
            doses[day] = doses.get(day, 0.0) + float(schedule["total_dose"]) * float(share) / 100.0
    # interval 0: the infusions of one day are one infusion of their summed dose (a protocol refuses two)
    events += [{"day": day, "kind": "nk_infusion", "dose": dose, "unit": "kg-1"} for day, dose in doses.items()]
    start = min([e["day"] for e in events if e["kind"] != "nk_infusion"], default=-gap)
    if cyto_events is None:
        cyto_events = cytokine_events(str(schedule.get("cytokine", "none")))
    if schedule.get("cytokine_course", "first") == "each":
        # every planned day, a 0 share included: [100, 0] with "each" is one infusion with a second course
        # `interval` days later -- the control that separates a second course from a second infusion
        cyto_events = course_per_infusion(cyto_events, sorted(set(planned)))
    cyto = [{"day": float(rel), "kind": str(kind), "dose": float(dose), "unit": str(unit)}
            for rel, kind, dose, unit in cyto_events if float(rel) < float(end_day)]  # day 0 = the first infusion
    events += cyto
    start = min([start, *(e["day"] for e in cyto)])
    return {
        "protocol": {
            "name": name,
            "title": title,
            "start_day": float(start),
            "end_day": float(end_day),
            "assessment_days": [float(d) for d in assessment_days],
            "snapshot_days": [],
            "infusions_after_lymphodepletion": True,
            "nk_product": str(schedule.get("nk_product", DEFAULT_SCHEDULE["nk_product"])),
        },
        "events": events,
    }


def lymphodepletion_offset(events: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]) -> float:
    """Days from the start of lymphodepletion (first lymphodepleting dose) to the first infusion (day 0).

    ``events``: a protocol dictionary's events (``{"day", "kind", ...}``) or ``[day, kind, ...]``
    rows (the store's ``events`` JSON). 0 without lymphodepletion (regimen ``"none"``: the clock
    starts at the first infusion).
    """
    days = [float(e["day"] if isinstance(e, Mapping) else e[0]) for e in events
            if (e["kind"] if isinstance(e, Mapping) else e[1]) in LYMPHODEPLETING]
    return -min(days) if days else 0.0


def assessment_days_on_clock(calendar_days: Sequence[float], offset: float, source: str,
                             key: str) -> list[float]:
    """Protocol assessment days (since the first infusion) of days since the start of lymphodepletion.

    Raises NksimInputError when a day would not come after the scenario's first infusion.
    """
    days = [float(d) - float(offset) for d in calendar_days]
    if days[0] <= 0:
        raise NksimInputError(
            f"with clock = 'lymphodepletion' the first assessment day {float(calendar_days[0]):g} (days since the "
            f"start of lymphodepletion) is day {days[0]:g} of this scenario, whose lymphodepletion starts "
            f"{float(offset):g} days before its first infusion; assessments must come after the first infusion: "
            f"make the first assessment day at least {float(offset) + 1:g}", source=source, key=key)
    return days


def build_protocol(protocol_dict: Mapping[str, Any], patients: Sequence[str], source: str) -> Protocol:
    """A validated :class:`~nksim.protocol.Protocol` from a scenario's protocol dictionary."""
    data = dict(protocol_dict)
    data["patients"] = [{"id": p, "group": "all"} for p in patients]
    return protocol_from_dict(data, source)


def scenario_label(levels: Mapping[str, Any], swept: Sequence[str]) -> str:
    """Short label from the swept factors' values, e.g. ``"interval=7 dose_split=75/25"``."""
    parts = []
    for k in swept:
        if k not in levels:
            continue
        v = levels[k]
        if k == "dose_split":
            parts.append(f"{k}={split_label(v)}")
        elif isinstance(v, str):
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={float(v):.4g}")
    return " ".join(parts) if parts else "baseline"
