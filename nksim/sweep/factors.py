"""Sweep factors: the schedule factors, their units and allowed ranges, and value checking.

A *factor* is anything a sweep may vary. Two kinds:

* **schedule factors** (:data:`SCHEDULE_FACTORS`): the shape of the treatment, turned into
  dated protocol events by :mod:`nksim.sweep.scenario`;
* **model parameters**: any dotted key of :data:`nksim.quantities.PARAMETERS` (``"nk.kill_probability"``),
  in the unit and within the range declared there.

Schedule factors (day 0 = first NK infusion):

=================  =========  ==============================================================
factor             unit       meaning
=================  =========  ==============================================================
``regimen``        --         lymphodepletion: ``"trial"`` (Ahmadvand 2023 Flu/Cy),
                              ``"hi_cy_flu"`` (Minnesota Hi-Cy/Flu) or ``"none"``
``nk_product``     --         NK product infused: ``"expanded"`` (ex vivo expanded, the trial's;
                              default) or ``"fresh"`` (unexpanded haploidentical, as in
                              Miller 2005 / Bachanova 2014); see ``nksim.protocol.NK_PRODUCTS``
``cytokine``       --         cytokine support after the infusions (:data:`CYTOKINES`): ``"none"``
                              (default), ``"il2"`` (IL-2 9 MIU s.c. every other day x6 from day 0,
                              Bachanova 2014), ``"rhil15_iv"`` (rhIL-15 0.75 ug kg-1 i.v. daily,
                              days 1-12, Cooley 2019 phase 1 at the MTD), ``"rhil15_sc"`` (rhIL-15
                              2 ug kg-1 s.c. daily, days 1-10, Cooley 2019 phase 2) or ``"n803"``
                              (N-803 10 ug kg-1 s.c. on days 0, 7, 14, Berrien-Elliott 2022); the
                              doses and days of that shipped protocol, counted from the first
                              infusion
``cytokine_course`` --        :data:`CYTOKINE_COURSES`: ``"first"`` (default: one course, from the
                              first infusion) or ``"each"`` (the course restarts at every
                              planned infusion, one of share 0 included, so ``[100, 0]`` is one
                              infusion with a second course; a day that two courses share gets
                              one dose)
``gap``            day        days from the last lymphodepleting dose to the first infusion
                              (default: the regimen's own gap, 7 for trial, 2 for Hi-Cy/Flu);
                              with ``regimen = "none"``, days simulated before the infusion
``interval``       day        days between consecutive infusions
``dose_split``     percent    share of ``total_dose`` in each infusion, e.g. ``[75, 25]``; sums
                              to 100; its length is the number of infusions; a 0 share
                              drops that infusion (``[100, 0]`` is a single infusion)
``n_infusions``    1          equal split into this many infusions (shorthand for dose_split)
``first_dose_pct`` percent    two infusions, this share first (shorthand: ``[p, 100 - p]``;
                              samplable by Latin hypercube/Sobol designs)
``total_dose``     kg-1       NK cells per kg body weight over all infusions
=================  =========  ==============================================================

``dose_split``, ``n_infusions`` and ``first_dose_pct`` describe the same thing: a scenario
sets at most one of them (a swept one replaces the baseline's).

``cytokine = "none"`` leaves a scenario exactly as before the factor existed (its schedule, and
so the plan digest, carry no ``cytokine`` key; likewise ``cytokine_course = "first"``); cytokine
doses on or after the sweep's ``end_day`` are left out (they could not act within the simulated window).
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..checks import check_number
from ..errors import NksimInputError
from ..protocol import NK_PRODUCTS
from ..quantities import PARAMETERS

#: Regimen name -> shipped protocol whose lymphodepleting events it uses (None: no lymphodepletion).
REGIMENS: dict[str, str | None] = {"trial": "ahmadvand2023", "hi_cy_flu": "hi_cy_flu", "none": None}

#: Cytokine name -> shipped protocol whose cytokine events (:data:`CYTOKINE_KINDS`) it uses, with
#: their doses and their days counted from that protocol's first NK infusion (None: no cytokine).
CYTOKINES: dict[str, str | None] = {
    "none": None,
    "il2": "bachanova2014_hi_cy_flu",
    "rhil15_iv": "cooley2019_rhil15_iv",
    "rhil15_sc": "cooley2019_rhil15_sc",
    "n803": "berrien_elliott2022_n803",
}

#: Dose group to take a cytokine's events from where its protocol's groups differ in them: Cooley 2019
#: phase 1 gave rhIL-15 i.v. at 0.3-1.0 ug kg-1 by cohort; 0.75 ug kg-1 was the maximum tolerated dose
#: (Cooley 2015 ASH abstract, Blood 126:566, source B of cooley2019_rhil15_iv.toml).
CYTOKINE_GROUPS: dict[str, str] = {"rhil15_iv": "d075"}

#: Event kinds that are cytokine support (``il2dt``, which depletes regulatory T cells, is not).
CYTOKINE_KINDS: tuple[str, ...] = ("il2", "rhil15_iv", "rhil15_sc", "n803")

#: Mutually exclusive ways to give the dose split.
SPLIT_FACTORS: tuple[str, ...] = ("dose_split", "n_infusions", "first_dose_pct")

#: Most infusions a schedule may have.
MAX_INFUSIONS = 10


@dataclass(frozen=True)
class FactorSpec:
    """A numeric schedule factor: unit, inclusive range, whole-number flag, description."""

    name: str
    unit: str
    lo: float
    hi: float
    integer: bool
    description: str


#: Numeric schedule factors (``regimen``, ``nk_product``, ``cytokine`` and ``dose_split`` are checked separately).
NUMERIC_FACTORS: dict[str, FactorSpec] = {f.name: f for f in [
    FactorSpec("gap", "day", 1, 180, True, "days from the last lymphodepleting dose to the first infusion"),
    FactorSpec("interval", "day", 0, 180, True, "days between consecutive infusions"),
    FactorSpec("n_infusions", "1", 1, MAX_INFUSIONS, True, "number of infusions (equal split)"),
    FactorSpec("first_dose_pct", "percent", 1e-9, 100, False, "share of the total dose in the first of two infusions"),
    FactorSpec("total_dose", "kg-1", 1e3, 1e10, False, "NK cells per kg over all infusions"),
]}

#: How a cytokine course relates to the infusions (schedule factor ``cytokine_course``).
CYTOKINE_COURSES: dict[str, str] = {
    "first": "one course, its days counted from the first infusion (the shipped protocols' way)",
    "each": "the course restarts at every planned infusion, one of share 0 included (days counted from each; "
            "a shared day gets one dose)",
}

#: All schedule factor names, with their units.
SCHEDULE_FACTORS: dict[str, str] = {
    "regimen": "-",
    "nk_product": "-",
    "cytokine": "-",
    "cytokine_course": "-",
    **{k: f.unit for k, f in NUMERIC_FACTORS.items()},
    "dose_split": "percent",
}


def is_parameter(name: str) -> bool:
    """Whether ``name`` is a model parameter key (as opposed to a schedule factor)."""
    return name in PARAMETERS


def unknown_factor(name: str, source: str, key: str) -> NksimInputError:
    """The error for a factor that is neither a schedule factor nor a model parameter."""
    close = difflib.get_close_matches(name, list(SCHEDULE_FACTORS) + list(PARAMETERS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return NksimInputError(
        f"unknown factor '{name}'{hint}; allowed: schedule factors {sorted(SCHEDULE_FACTORS)} or a model "
        "parameter key from nksim/quantities.py (e.g. 'nk.kill_probability')", source=source, key=key)


def numeric_range(name: str) -> tuple[float, float, bool, str]:
    """(lo, hi, integer, unit) of a numeric factor or model parameter."""
    if name in NUMERIC_FACTORS:
        f = NUMERIC_FACTORS[name]
        return f.lo, f.hi, f.integer, f.unit
    if name in PARAMETERS:
        s = PARAMETERS[name]
        return s.lo, s.hi, s.integer, s.unit
    raise KeyError(name)


def _number(value: Any, name: str, source: str, key: str) -> float:
    lo, hi, integer, unit = numeric_range(name)
    return check_number(value, source=source, key=key, lo=lo, hi=hi, unit=unit, integer=integer)


def check_dose_split(value: Any, source: str, key: str) -> tuple[float, ...]:
    """A list of percentages (>= 0, first > 0, summing to 100, 1..MAX_INFUSIONS entries)."""
    allowed = (f"a list of 1-{MAX_INFUSIONS} percentages >= 0 summing to 100 with the first > 0, "
               "e.g. [75, 25]")
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_INFUSIONS:
        raise NksimInputError(f"value {value!r} is not {allowed}", source=source, key=key)
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or float(v) < 0:
            raise NksimInputError(f"value {value!r} is not {allowed}", source=source, key=key)
        out.append(float(v))
    if out[0] <= 0 or abs(sum(out) - 100.0) > 1e-6:
        raise NksimInputError(f"value {value!r} (sum {sum(out):g}) is not {allowed}", source=source, key=key)
    return tuple(out)


def check_factor_value(name: str, value: Any, source: str, key: str) -> Any:
    """Validate one factor level; returns the normalised value (float, str or tuple of floats).

    Raises :class:`NksimInputError` naming ``source`` and ``key`` with the allowed range.
    """
    if name == "regimen":
        if not isinstance(value, str) or value not in REGIMENS:
            raise NksimInputError(f"value {value!r} is not an allowed regimen; allowed: {sorted(REGIMENS)}",
                                  source=source, key=key)
        return value
    if name == "nk_product":
        if not isinstance(value, str) or value not in NK_PRODUCTS:
            raise NksimInputError(f"value {value!r} is not an allowed NK product; allowed: {sorted(NK_PRODUCTS)}",
                                  source=source, key=key)
        return value
    if name == "cytokine":
        if not isinstance(value, str) or value not in CYTOKINES:
            raise NksimInputError(f"value {value!r} is not an allowed cytokine; allowed: {sorted(CYTOKINES)}",
                                  source=source, key=key)
        return value
    if name == "cytokine_course":
        if not isinstance(value, str) or value not in CYTOKINE_COURSES:
            raise NksimInputError(f"value {value!r} is not an allowed cytokine course; allowed: "
                                  f"{sorted(CYTOKINE_COURSES)}", source=source, key=key)
        return value
    if name == "dose_split":
        return check_dose_split(value, source, key)
    if name in NUMERIC_FACTORS or is_parameter(name):
        return _number(value, name, source, key)
    raise unknown_factor(name, source, key)


def split_label(split: Sequence[float]) -> str:
    """``(75.0, 25.0)`` -> ``"75/25"``."""
    return "/".join(f"{s:g}" for s in split)
