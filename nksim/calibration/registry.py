"""The trial registry: every observation of every trial arm, as data, with its role in calibration.

One TOML file per trial arm under ``calibration/data/trials/`` (format: ``calibration/data/SCHEMA.md``
section 4; the declared split: ``calibration/data/trials/README.md``). Each file has an ``[arm]``
table (trial, arm label, the shipped protocol that simulates it and, if only part of it, the
protocol's patient group, population, patients enrolled/evaluable, source, grade) and
``[[observation]]`` rows: what was observed (:data:`OBSERVABLES`, a fixed vocabulary), ``k``/``n``
for a share of patients or ``value`` + ``unit`` (UDUNITS-2: ``1``, ``percent``, ``uL-1``, ``day``) for
a quantity, the day(s), thresholds, which chimerism, what the number is a fraction of (``of``), the
**role** (``target`` | ``held_out`` | ``context``) with its ``reason``, and, for held-out rows, the
**rule** that scores it (``check`` from :data:`CHECKS` and its text ``rule``), fixed before any fit.

::

    from nksim.calibration import load_registry
    reg = load_registry()                      # the shipped calibration/data/trials/*.toml
    reg.targets(); reg.held_out(); reg.by_protocol()["bachanova2014_il2dt"]
    reg.table()                                # one row per observation (pandas DataFrame)
    ds = nksim.simulate_cohort(params, nksim.load_protocol(obs.protocol), replicates=50, seed=1)
    simulated_per_trial(obs, ds)               # the observable per virtual trial (replicate)
    predictive_interval(obs, ds)               # median and 90 % interval for a trial of the published size

Every validation error is an :class:`nksim.NksimInputError` naming the file, the key path
(``observation[i] ('name').field``) and what is allowed. Days are relative to the first NK
infusion (day 0).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_number, check_table
from ..errors import NksimInputError
from ..fileio import read_toml
from ..resources import data_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import xarray

    from ..protocol import Protocol

#: Folder of the shipped registry (``calibration/data/trials/``).
REGISTRY_DIR = data_path("calibration") / "data" / "trials"
#: The date the declared split (roles and rules) was committed, before any joint fit.
SPLIT_DECLARED = "2026-12-05"

ROLES = ("target", "held_out", "context")
#: Grades of trials_checked.md: A primary source; B secondary; C indirect; D derived here from reported
#: percentages and denominators.
GRADES = ("A", "B", "C", "D")
CHIMERISM = ("pbmc", "nk", "unseparated")
STATISTICS = ("median", "mean")
#: Day of the expansion call for the ``*_in_expanders`` observables (Bachanova 2014: > threshold at day 14).
EXPANSION_DAY = 14.0
#: Morphological relapse: marrow blasts at or above this percentage (``relapse_free_days``).
RELAPSE_BLAST_PCT = 5.0


@dataclass(frozen=True)
class Observable:
    """One entry of the observable vocabulary: unit, which keys it needs, and what it is per patient."""

    unit: str
    kind: str                  # "share" (of patients) | "quantity" | "none" (no simulated counterpart)
    needs: tuple[str, ...]     # keys required besides the common ones
    allows: tuple[str, ...]    # further optional keys
    meaning: str


#: The fixed vocabulary of observables. ``share`` observables are given as ``k``/``n`` (or a ``value`` in
#: 0..1 when only "all"/"none" is reported, or no number for a direction); ``quantity`` observables as
#: ``value`` (or ``value_range``) in ``unit``. Per simulated patient (patient x replicate):
OBSERVABLES: dict[str, Observable] = {
    "cr_share_first_assessment": Observable(
        "1", "share", (), ("day",),
        "complete remission (marrow blasts below the CR threshold) at the protocol's first assessment, among "
        "evaluable patients (`ds.response`)"),
    "response_share_first_assessment": Observable(
        "1", "share", (), ("day",),
        "CR or PR at the protocol's first assessment, among evaluable patients"),
    "expansion_share": Observable(
        "1", "share", ("day", "threshold"), (),
        "donor NK per uL blood above `threshold` (uL-1) on `day`"),
    "detectable_share": Observable(
        "1", "share", ("threshold", "chimerism"), ("day", "window"),
        "donor chimerism (`chimerism`: pbmc = donor NK / (NK + T + Tregs); nk = donor / all blood NK) at or "
        "above `threshold` (percent) on `day`, or on any day of `window`"),
    "lymphocyte_count": Observable(
        "uL-1", "quantity", ("day",), ("statistic",),
        "blood lymphocytes (host NK + host T + host Tregs + donor NK) per uL on `day`"),
    "donor_nk_blood": Observable(
        "uL-1", "quantity", ("day",), ("statistic",), "donor NK per uL blood on `day`"),
    "host_t_blood": Observable(
        "uL-1", "quantity", ("day",), ("statistic",), "host T cells per uL blood on `day`"),
    "donor_chimerism": Observable(
        "percent", "quantity", ("day", "chimerism"), ("statistic",), "donor chimerism (`chimerism`) on `day`"),
    "peak_donor_chimerism": Observable(
        "percent", "quantity", ("window", "chimerism"), ("statistic", "threshold"),
        "peak donor chimerism (`chimerism`) over `window`; with `threshold` (percent) only patients whose peak "
        "reaches it (\"where detected\")"),
    "donor_nk_in_expanders": Observable(
        "uL-1", "quantity", ("day", "threshold"), ("statistic",),
        "donor NK per uL blood on `day`, among patients with donor NK above `threshold` on day 14"),
    "peak_donor_nk_in_expanders": Observable(
        "uL-1", "quantity", ("window", "threshold"), ("statistic",),
        "peak donor NK per uL blood over `window`, among patients above `threshold` on day 14"),
    "peak_day_donor_nk": Observable(
        "day", "quantity", ("window",), ("statistic",), "day of the peak of donor NK per uL blood within `window`"),
    "peak_day_chimerism": Observable(
        "day", "quantity", ("window", "chimerism"), ("statistic",),
        "day of the peak of donor chimerism (`chimerism`) within `window`"),
    "il15_peak_fold": Observable(
        "1", "quantity", ("window",), ("statistic",), "peak plasma IL-15 over `window`, fold over pre-treatment"),
    "host_treg_fold": Observable(
        "1", "quantity", ("day", "reference_day"), ("statistic",),
        "host Tregs per uL blood on `day` over their value on `reference_day`"),
    "host_treg_share_fold": Observable(
        "1", "quantity", ("day", "reference_day"), ("statistic",),
        "host Treg share of blood T cells (Treg / (T + Treg)) on `day` over its value on `reference_day`"),
    "donor_nk_fold": Observable(
        "1", "quantity", ("day", "reference_day"), ("statistic",),
        "donor NK per uL blood on `day` over their value on `reference_day`"),
    "persistence_beyond_day": Observable(
        "day", "quantity", ("window", "threshold"), ("statistic", "chimerism"),
        "last day of `window` with donor NK per uL blood (or, with `chimerism`, donor chimerism in percent) at "
        "or above `threshold`, among patients where it is reached at all"),
    "relapse_free_days": Observable(
        "day", "quantity", (), (),
        "Kaplan-Meier median over patients of the first marrow assessment (the protocol's assessment days) with "
        "blasts >= 5 % (censored at the last assessment in the run; inf when not reached)"),
    "other": Observable(
        "", "none", (), ("day", "window", "statistic", "threshold", "chimerism", "reference_day"),
        "reported, but with no simulated counterpart in nksim (survival beyond the run, CRS, a transplant, "
        "chimerism of unseparated blood): context only"),
}

#: Scoring rules of held-out rows (the joint-fit step scores them; fixed here, before any fit):
#:
#: * ``binomial_90``: the observed k/n lies in the simulated 90 % predictive interval of the share for a
#:   trial of the published size n;
#: * ``factor``: the simulated median lies within a factor ``factor`` of ``value`` (of ``value_range``:
#:   in ``[lo / factor, hi * factor]``);
#: * ``range``: the simulated median lies in ``bounds = [lo, hi]``;
#: * ``at_least`` / ``at_most``: the simulated median is >= / <= ``bound``;
#: * ``above`` / ``below``: the simulated median is > / < ``bound``;
#: * ``higher`` / ``lower``: the simulated median is above / below that of the observation ``versus``;
#: * ``none``: not scored (targets and context rows).
CHECKS = ("binomial_90", "factor", "range", "at_least", "at_most", "above", "below", "higher", "lower", "none")

_ARM_FIELDS = {"id": "string", "trial": "string", "label": "string", "protocol": "string", "group": "string",
               "population": "string", "enrolled": "integer", "evaluable": "integer", "source": "string",
               "grade": "string", "note": "string", "outcomes": "string", "same_patients_as": "array of strings"}
_ARM_REQUIRED = ("id", "trial", "label", "protocol", "population", "source", "grade")
_OBS_FIELDS = {"name": "string", "observable": "string", "role": "string", "reason": "string", "k": "integer",
               "n": "integer", "value": "number", "value_range": "array of numbers", "bounds": "array of numbers",
               "unit": "string", "day": "number",
               "window": "array of numbers", "threshold": "number", "threshold_unit": "string",
               "chimerism": "string", "statistic": "string", "reference_day": "number", "of": "string",
               "group": "string", "check": "string", "factor": "number", "bound": "number", "versus": "string",
               "rule": "string", "grade": "string", "source": "string", "note": "string"}
_OBS_REQUIRED = ("name", "observable", "role", "reason", "of", "grade", "source")
_TOP_FIELDS = {"arm": "table", "observation": "array of tables"}


@dataclass(frozen=True)
class TrialArm:
    """One trial arm, tied to the shipped protocol that simulates it.

    ``group``: only the patients of this protocol group (None = all). ``enrolled`` / ``evaluable``:
    patients (None where not reported). ``outcomes``: a per-patient outcomes CSV under
    ``calibration/data/`` that this arm's target rows summarise (Ahmadvand 2023).
    """

    id: str
    trial: str
    label: str
    protocol: str
    group: str | None
    population: str
    enrolled: int | None
    evaluable: int | None
    source: str
    grade: str
    note: str
    file: str
    outcomes: str | None = None
    same_patients_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialObservation:
    """One observed number (or direction) of a trial arm, and its role in calibration.

    Shares: ``k`` of ``n`` patients (``value`` = k/n), or only ``value`` (0..1, e.g. "all"), or
    nothing (a direction scored by ``check``). Quantities: ``value`` in ``unit`` (``value_range`` when
    a range is reported). Scoring: ``check`` with ``factor`` / ``bound`` / ``bounds`` / ``versus``.
    Days (``day``, ``window``, ``reference_day``) in days since the first NK
    infusion; ``threshold`` in ``threshold_unit`` (``uL-1`` or ``percent``).
    """

    name: str
    arm: str
    trial: str
    protocol: str
    group: str | None
    observable: str
    role: str
    reason: str
    of: str
    grade: str
    source: str
    note: str
    file: str
    key: str
    k: int | None = None
    n: int | None = None
    value: float | None = None
    value_range: tuple[float, float] | None = None
    unit: str = ""
    day: float | None = None
    window: tuple[float, float] | None = None
    threshold: float | None = None
    threshold_unit: str | None = None
    chimerism: str | None = None
    statistic: str = "median"
    reference_day: float | None = None
    check: str = "none"
    factor: float | None = None
    bound: float | None = None
    bounds: tuple[float, float] | None = None
    versus: str | None = None
    rule: str = ""

    @property
    def is_share(self) -> bool:
        """Whether this is a share of patients (k/n)."""
        return OBSERVABLES[self.observable].kind == "share"

    @property
    def has_counterpart(self) -> bool:
        """Whether nksim simulates this observable (``other`` and unseparated-blood chimerism: no)."""
        return OBSERVABLES[self.observable].kind != "none" and self.chimerism != "unseparated"

    @property
    def last_day(self) -> float:
        """The last day a simulation must reach for this observation (NaN if none is given)."""
        days = [d for d in (self.day, self.reference_day, *(self.window or ())) if d is not None]
        if self.observable in ("donor_nk_in_expanders", "peak_donor_nk_in_expanders"):
            days.append(EXPANSION_DAY)
        return max(days) if days else math.nan


@dataclass(frozen=True)
class Registry:
    """The trial arms and their observations (:func:`load_registry`)."""

    arms: tuple[TrialArm, ...]
    observations: tuple[TrialObservation, ...]
    directory: str
    split_declared: str = SPLIT_DECLARED

    def with_role(self, role: str) -> tuple[TrialObservation, ...]:
        """The observations of ``role`` (one of :data:`ROLES`), in file order."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; allowed: {ROLES}")
        return tuple(o for o in self.observations if o.role == role)

    def targets(self) -> tuple[TrialObservation, ...]:
        """Calibration targets (what the joint fit uses)."""
        return self.with_role("target")

    def held_out(self) -> tuple[TrialObservation, ...]:
        """Held-out rows (scored after the fit by their ``check``; never used in it)."""
        return self.with_role("held_out")

    def context(self) -> tuple[TrialObservation, ...]:
        """Context rows (reported, not scored)."""
        return self.with_role("context")

    def by_protocol(self) -> dict[str, tuple[TrialObservation, ...]]:
        """``{protocol name: its observations}``, protocols in first-seen order."""
        out: dict[str, list[TrialObservation]] = {}
        for o in self.observations:
            out.setdefault(o.protocol, []).append(o)
        return {k: tuple(v) for k, v in out.items()}

    def arm(self, arm_id: str) -> TrialArm:
        """The arm ``arm_id`` (KeyError naming the known ones)."""
        for a in self.arms:
            if a.id == arm_id:
                return a
        raise KeyError(f"no arm {arm_id!r}; known: {[a.id for a in self.arms]}")

    def observation(self, name: str) -> TrialObservation:
        """The observation ``name`` (KeyError naming the known ones)."""
        for o in self.observations:
            if o.name == name:
                return o
        raise KeyError(f"no observation {name!r}; known: {sorted(o.name for o in self.observations)}")

    def trials(self) -> tuple[str, ...]:
        """The distinct trials (``arm.trial``), in file order."""
        return tuple(dict.fromkeys(a.trial for a in self.arms))

    def counts(self) -> dict[str, int]:
        """Observations per role."""
        return {r: len(self.with_role(r)) for r in ROLES}

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per observation (the columns of :meth:`table`)."""
        out = []
        for o in self.observations:
            out.append({
                "name": o.name, "arm": o.arm, "trial": o.trial, "protocol": o.protocol, "group": o.group,
                "observable": o.observable, "observed": observed_text(o), "k": o.k, "n": o.n, "value": o.value,
                "unit": o.unit, "day": o.day, "window": o.window, "of": o.of, "role": o.role, "reason": o.reason,
                "check": o.check, "rule": o.rule, "grade": o.grade, "source": o.source, "file": o.file})
        return out

    def table(self) -> pandas.DataFrame:
        """:meth:`rows` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def markdown(self) -> str:
        """The declared split as a Markdown table (the one in ``calibration/data/trials/README.md``)."""
        lines = ["| arm (protocol[, group]) | observation | observed | role | check | reason |",
                 "|---|---|---|---|---|---|"]
        for o in self.observations:
            where = f"`{o.protocol}`" + (f", `{o.group}`" if o.group else "")
            reason = o.reason + (f" **Rule:** {o.rule}" if o.rule else "")
            lines.append(f"| {o.arm} ({where}) | `{o.name}` ({o.observable}) | {observed_text(o)} ({o.grade}) | "
                         f"{o.role} | {o.check} | {reason.replace('|', '/')} |")
        return "\n".join(lines)


def observed_text(o: TrialObservation) -> str:
    """The observed number as text: ``4/42``, ``1000 uL-1``, ``[10, 50] 1`` or ``direction``."""
    if o.k is not None and o.n is not None:
        return f"{o.k}/{o.n}"
    unit = f" {o.unit}" if o.unit and o.unit != "1" else ""
    if o.value is not None:
        return f"{o.value:g}{unit}"
    if o.value_range is not None:
        return f"{o.value_range[0]:g}-{o.value_range[1]:g}{unit}"
    return "direction" if o.check not in ("none",) else "reported"


# ----------------------------------------------------------------------------- loading
def _fail(message: str, src: str, key: str) -> NksimInputError:
    return NksimInputError(message, source=src, key=key)


def _text(t: Mapping[str, Any], f: str, src: str, key: str, *, required: bool = False) -> str:
    v = t.get(f, "")
    v = v.strip() if isinstance(v, str) else v
    if required and not v:
        raise _fail("missing or empty; a non-empty string is required", src, f"{key}.{f}")
    return v


def _choice(t: Mapping[str, Any], f: str, allowed: Sequence[str], src: str, key: str, default: str | None = None
            ) -> str | None:
    if f not in t:
        return default
    v = str(t[f]).strip()
    if v not in allowed:
        raise _fail(f"'{v}' is not allowed; allowed: {', '.join(allowed)}", src, f"{key}.{f}")
    return v


def _protocol(name: str, src: str, key: str) -> Protocol:
    from ..protocol import PROTOCOLS_DIR, load_protocol

    shipped = sorted(q.stem for q in PROTOCOLS_DIR.glob("*.toml"))
    if name not in shipped:
        raise _fail(f"protocol '{name}' is not shipped; allowed: a protocol of experiments/protocols/: "
                    f"{', '.join(shipped)}", src, key)
    return load_protocol(name)


def _groups(proto: Protocol) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.group for p in proto.patients))


def _load_arm(t: Any, src: str, stem: str) -> tuple[TrialArm, Protocol]:
    check_table(t, _ARM_FIELDS, source=src, key="arm", required=_ARM_REQUIRED)
    aid = _text(t, "id", src, "arm", required=True)
    if aid != stem:
        raise _fail(f"arm id '{aid}' must equal the file name without '.toml' ('{stem}')", src, "arm.id")
    pname = _text(t, "protocol", src, "arm", required=True)
    proto = _protocol(pname, src, "arm.protocol")
    group = _text(t, "group", src, "arm") or None
    if group is not None and group not in _groups(proto):
        raise _fail(f"group '{group}' is not a group of protocol '{pname}'; allowed: {', '.join(_groups(proto))}",
                    src, "arm.group")
    counts = {}
    for f in ("enrolled", "evaluable"):
        counts[f] = None if f not in t else int(check_number(t[f], source=src, key=f"arm.{f}", lo=1, integer=True,
                                                             unit="patients", types=(int,)))
    if counts["enrolled"] is not None and counts["evaluable"] is not None and counts["evaluable"] > counts["enrolled"]:
        raise _fail(f"evaluable ({counts['evaluable']}) > enrolled ({counts['enrolled']}); allowed: evaluable <= "
                    "enrolled", src, "arm.evaluable")
    grade = _choice(t, "grade", GRADES, src, "arm")
    outcomes = _text(t, "outcomes", src, "arm") or None
    if outcomes is not None and not (Path(src).parent.parent / outcomes).is_file():
        raise _fail(f"outcomes file '{outcomes}' not found next to the registry folder (calibration/data/)", src,
                    "arm.outcomes")
    return TrialArm(
        id=aid, trial=_text(t, "trial", src, "arm", required=True), label=_text(t, "label", src, "arm", required=True),
        protocol=pname, group=group, population=_text(t, "population", src, "arm", required=True),
        enrolled=counts["enrolled"], evaluable=counts["evaluable"],
        source=_text(t, "source", src, "arm", required=True),
        grade=str(grade), note=_text(t, "note", src, "arm"), file=src, outcomes=outcomes,
        same_patients_as=tuple(t.get("same_patients_as", ()))), proto


def _pair(v: Any, src: str, key: str, lo: float, hi: float, unit: str) -> tuple[float, float]:
    if len(v) != 2:
        raise _fail(f"must be [lo, hi], got {v!r}", src, key)
    a = check_number(v[0], source=src, key=f"{key}[0]", lo=lo, hi=hi, unit=unit)
    b = check_number(v[1], source=src, key=f"{key}[1]", lo=a, hi=hi, unit=f"{unit} (>= {key.rsplit('.', 1)[-1]}[0])")
    return a, b


def _day(v: Any, proto: Protocol, src: str, key: str) -> float:
    return check_number(v, source=src, key=key, lo=proto.start_day, hi=proto.end_day,
                        unit=f"day (within protocol '{proto.name}': start_day .. end_day)")


def _load_observation(t: Any, i: int, arm: TrialArm, proto: Protocol, src: str) -> TrialObservation:
    key = f"observation[{i}]"
    check_table(t, _OBS_FIELDS, source=src, key=key, required=_OBS_REQUIRED)
    name = _text(t, "name", src, key, required=True)
    key = f"observation[{i}] ('{name}')"
    oname = _text(t, "observable", src, key, required=True)
    if oname not in OBSERVABLES:
        raise _fail(f"unknown observable '{oname}'; allowed: {', '.join(OBSERVABLES)}", src, f"{key}.observable")
    spec = OBSERVABLES[oname]
    for f in spec.needs:
        if f not in t and not (f in ("day", "window") and oname == "detectable_share"):
            raise _fail(f"missing key '{f}' (required for observable '{oname}')", src, f"{key}.{f}")
    specific = {"day", "window", "threshold", "chimerism", "statistic", "reference_day", "threshold_unit"}
    for f in specific & set(t):
        if f == "threshold_unit" and "threshold" in t:
            continue
        if f not in spec.needs and f not in spec.allows:
            raise _fail(f"key '{f}' is not used by observable '{oname}'; its keys: "
                        f"{', '.join((*spec.needs, *spec.allows)) or 'none'}", src, f"{key}.{f}")
    role = _choice(t, "role", ROLES, src, key)
    grade = _choice(t, "grade", GRADES, src, key)
    group = _text(t, "group", src, key) or arm.group
    if group is not None and group not in _groups(proto):
        raise _fail(f"group '{group}' is not a group of protocol '{proto.name}'; allowed: "
                    f"{', '.join(_groups(proto))}", src, f"{key}.group")
    if arm.group is not None and group != arm.group:
        raise _fail(f"group '{group}' differs from the arm's group '{arm.group}'", src, f"{key}.group")
    # days
    day = None if "day" not in t else _day(t["day"], proto, src, f"{key}.day")
    window = None
    if "window" in t:
        w = t["window"]
        if len(w) != 2:
            raise _fail(f"window must be [first_day, last_day], got {w!r}", src, f"{key}.window")
        w0 = _day(w[0], proto, src, f"{key}.window[0]")
        w1 = _day(w[1], proto, src, f"{key}.window[1]")
        if w1 < w0:
            raise _fail(f"window [{w0:g}, {w1:g}]: last day before first; allowed: window[0] <= window[1]", src,
                        f"{key}.window")
        window = (w0, w1)
    if oname == "detectable_share" and (day is None) == (window is None):
        raise _fail("give exactly one of 'day' (detectable on that day) or 'window' (on any day of it)", src,
                    f"{key}.day")
    if oname in ("cr_share_first_assessment", "response_share_first_assessment") and day is not None:
        first = float(proto.assessment_days[0])
        if day != first:
            raise _fail(f"day {day:g} is not the first assessment of protocol '{proto.name}'; allowed: {first:g} "
                        "(or leave 'day' out)", src, f"{key}.day")
    ref = None if "reference_day" not in t else _day(t["reference_day"], proto, src, f"{key}.reference_day")
    # thresholds, chimerism, statistic
    chim = _choice(t, "chimerism", CHIMERISM, src, key)
    threshold = threshold_unit = None
    if "threshold" in t:
        threshold_unit = str(t.get("threshold_unit", "percent" if chim else "uL-1"))
        allowed_unit = "percent" if chim else "uL-1"
        if threshold_unit != allowed_unit:
            raise _fail(f"unit '{threshold_unit}' is wrong for this threshold; allowed: '{allowed_unit}' "
                        f"({'a chimerism' if chim else 'donor NK per uL blood'}; values are never rescaled)",
                        src, f"{key}.threshold_unit")
        threshold = check_number(t["threshold"], source=src, key=f"{key}.threshold", lo=0.0,
                                 hi=100.0 if chim else math.inf, lo_open=True, unit=threshold_unit)
    elif "threshold_unit" in t:
        raise _fail("'threshold_unit' without 'threshold'", src, f"{key}.threshold_unit")
    statistic = _choice(t, "statistic", STATISTICS, src, key, default="median")
    # the observed number
    k = n = None
    value = None
    value_range = bounds = None
    unit = _text(t, "unit", src, key)
    if "k" in t or "n" in t:
        if spec.kind not in ("share", "none"):
            raise _fail(f"k/n are for shares of patients; observable '{oname}' is a quantity: give 'value' and "
                        f"'unit' ('{spec.unit}')", src, f"{key}.k")
        if "k" not in t or "n" not in t:
            raise _fail("give both 'k' and 'n' (k of n patients)", src, f"{key}.{'n' if 'k' in t else 'k'}")
        n = int(check_number(t["n"], source=src, key=f"{key}.n", lo=1, integer=True, types=(int,),
                             unit="patients"))
        k = int(check_number(t["k"], source=src, key=f"{key}.k", lo=0, hi=n, integer=True, types=(int,),
                             unit=f"patients (0 <= k <= n = {n})"))
        if "value" in t:
            raise _fail("give either k/n or 'value', not both (value = k/n)", src, f"{key}.value")
        value = k / n
        if unit and unit != "1":
            raise _fail(f"unit '{unit}' is wrong for a share; allowed: '1'", src, f"{key}.unit")
        unit = "1"
    elif "value" in t or "value_range" in t:
        if "value" in t and "value_range" in t:
            raise _fail("give either 'value' or 'value_range', not both", src, f"{key}.value_range")
        want = spec.unit
        if spec.kind != "none" and unit != want:
            raise _fail(f"unit '{unit}' does not match observable '{oname}'; allowed unit: '{want}' (UDUNITS-2; "
                        "values are never rescaled)", src, f"{key}.unit")
        if spec.kind == "none" and not unit:
            raise _fail("missing 'unit' (UDUNITS-2, e.g. '1', 'percent', 'uL-1', 'day')", src, f"{key}.unit")
        hi = 1.0 if unit == "1" and spec.kind == "share" else (100.0 if unit == "percent" else math.inf)
        if "value" in t:
            value = check_number(t["value"], source=src, key=f"{key}.value", lo=0.0, hi=hi, unit=unit)
        else:
            value_range = _pair(t["value_range"], src, f"{key}.value_range", 0.0, hi, unit)
    elif unit:
        raise _fail("'unit' without 'value' or 'value_range'", src, f"{key}.unit")
    if oname in ("peak_day_donor_nk", "peak_day_chimerism", "persistence_beyond_day") and value is not None:
        _day(value, proto, src, f"{key}.value")
    # the check
    check = _choice(t, "check", CHECKS, src, key, default="none")
    rule = _text(t, "rule", src, key)
    if role == "held_out":
        if check == "none":
            raise _fail(f"a held-out row needs a 'check' (fixed before any fit); allowed: "
                        f"{', '.join(c for c in CHECKS if c != 'none')}", src, f"{key}.check")
        if not rule:
            raise _fail("a held-out row needs a 'rule': the scoring rule in words, fixed before any fit", src,
                        f"{key}.rule")
    if role == "context" and check != "none":
        raise _fail("a context row is not scored; allowed check: none (or leave it out)", src, f"{key}.check")
    if role != "context" and spec.kind == "none":
        raise _fail(f"observable '{oname}' has no simulated counterpart; allowed role: context", src, f"{key}.role")
    if role != "context" and chim == "unseparated":
        raise _fail("chimerism of unseparated blood has no simulated counterpart (the model has no neutrophils or "
                    "monocytes); allowed role: context", src, f"{key}.role")
    factor = bound = None
    versus = _text(t, "versus", src, key) or None
    if check == "binomial_90" and (k is None or n is None):
        raise _fail("check 'binomial_90' needs 'k' and 'n'", src, f"{key}.check")
    if check == "factor":
        if value is None and value_range is None:
            raise _fail("check 'factor' needs 'value' or 'value_range'", src, f"{key}.check")
        if "factor" not in t:
            raise _fail("check 'factor' needs 'factor' (> 1)", src, f"{key}.factor")
        factor = check_number(t["factor"], source=src, key=f"{key}.factor", lo=1.0, lo_open=True)
    elif "factor" in t:
        raise _fail("'factor' is only used by check 'factor'", src, f"{key}.factor")
    if check == "range":
        if "bounds" not in t:
            raise _fail("check 'range' needs 'bounds' = [lo, hi]", src, f"{key}.bounds")
        bounds = _pair(t["bounds"], src, f"{key}.bounds", -math.inf, math.inf, unit or OBSERVABLES[oname].unit)
    elif "bounds" in t:
        raise _fail("'bounds' is only used by check 'range'", src, f"{key}.bounds")
    if check in ("at_least", "at_most", "above", "below"):
        if "bound" not in t:
            raise _fail(f"check '{check}' needs 'bound'", src, f"{key}.bound")
        bound = check_number(t["bound"], source=src, key=f"{key}.bound")
    elif "bound" in t:
        raise _fail("'bound' is only used by checks at_least, at_most, above, below", src, f"{key}.bound")
    if check in ("higher", "lower") and versus is None:
        raise _fail(f"check '{check}' needs 'versus' (the name of the observation compared with)", src,
                    f"{key}.versus")
    if versus is not None and check not in ("higher", "lower"):
        raise _fail("'versus' is only used by checks higher, lower", src, f"{key}.versus")
    return TrialObservation(
        name=name, arm=arm.id, trial=arm.trial, protocol=proto.name, group=group, observable=oname, role=str(role),
        reason=_text(t, "reason", src, key, required=True), of=_text(t, "of", src, key, required=True),
        grade=str(grade), source=_text(t, "source", src, key, required=True), note=_text(t, "note", src, key),
        file=src, key=key, k=k, n=n, value=value, value_range=value_range, bounds=bounds, unit=unit, day=day,
        window=window,
        threshold=threshold, threshold_unit=threshold_unit, chimerism=chim, statistic=str(statistic),
        reference_day=ref, check=str(check), factor=factor, bound=bound, versus=versus, rule=rule)


def load_arm_file(path: str | Path) -> tuple[TrialArm, tuple[TrialObservation, ...]]:
    """Load and validate one registry file (``[arm]`` + ``[[observation]]``)."""
    path = Path(path)
    src = str(path)
    data = read_toml(path, "trial registry file")
    check_table(data, _TOP_FIELDS, source=src, required=("arm", "observation"), what="top-level key")
    arm, proto = _load_arm(data["arm"], src, path.stem)
    if not data["observation"]:
        raise _fail("at least one [[observation]] table is required", src, "observation")
    obs = tuple(_load_observation(t, i, arm, proto, src) for i, t in enumerate(data["observation"]))
    return arm, obs


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate every ``*.toml`` of a registry folder (default: the shipped ``calibration/data/trials``).

    Across files: arm ids and observation names are unique; every ``versus`` names an observation
    of the same observable; every ``same_patients_as`` names an arm. Errors are
    :class:`nksim.NksimInputError` naming the file, the key and what is allowed.
    """
    folder = Path(REGISTRY_DIR if path is None else path)
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise NksimInputError("no trial registry files (*.toml) in this folder", source=folder)
    arms: list[TrialArm] = []
    observations: list[TrialObservation] = []
    by_name: dict[str, TrialObservation] = {}
    for f in files:
        arm, obs = load_arm_file(f)
        arms.append(arm)
        for o in obs:
            if o.name in by_name:
                raise _fail(f"duplicate observation name '{o.name}' (first in {by_name[o.name].file}, "
                            f"{by_name[o.name].key})", o.file, f"{o.key}.name")
            by_name[o.name] = o
        observations.extend(obs)
    ids = [a.id for a in arms]
    for a in arms:
        for other in a.same_patients_as:
            if other not in ids:
                raise _fail(f"'{other}' is not an arm of the registry; allowed: {', '.join(ids)}", a.file,
                            "arm.same_patients_as")
    for o in observations:
        if o.versus is None:
            continue
        other = by_name.get(o.versus)
        if other is None or other.name == o.name:
            raise _fail(f"'{o.versus}' is not another observation of the registry", o.file, f"{o.key}.versus")
        if other.observable != o.observable:
            raise _fail(f"'{o.versus}' is a '{other.observable}' observation; allowed: one of the same observable "
                        f"('{o.observable}')", o.file, f"{o.key}.versus")
    return Registry(tuple(arms), tuple(observations), str(folder))


# ----------------------------------------------------------------------------- simulated counterparts
def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a share k/n."""
    from scipy.stats import beta

    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return lo, hi


def share_interval(flags: np.ndarray, n: int, *, rng: np.random.Generator, draws: int = 4000,
                   level: float = 0.90) -> tuple[float, float, float]:
    """Median and central ``level`` interval of the share in trials of ``n`` patients drawn from ``flags``.

    ``flags``: simulated patients' 0/1 outcomes (any shape; NaN = not applicable, dropped), pooled
    over virtual trials. Returns NaNs when there is no simulated patient.
    """
    f = np.asarray(flags, float).ravel()
    f = f[np.isfinite(f)]
    if f.size == 0:
        return math.nan, math.nan, math.nan
    shares = rng.choice(f, size=(draws, n), replace=True).mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(shares, [a, 1.0 - a])
    return float(np.median(shares)), float(lo), float(hi)


def share_predictive_between_trials(flags: np.ndarray, n: int) -> Any:
    """Predictive distribution of the count in a trial of ``n`` patients, when virtual trials differ.

    ``flags``: (patient, virtual trial) 0/1 outcomes (NaN = not applicable), each virtual trial
    simulated with its own parameter draw (a posterior predictive). Pooling the patients of every
    trial (:func:`share_interval`) would keep only the binomial noise around the mean share and
    drop the spread between draws; mixing binomials of ``n`` at each trial's own share would count
    the binomial noise twice (once in the simulated share, once in the trial of ``n``). Here the
    per-trial shares' variance, less its expected binomial part (method of moments, each trial's own
    number of patients), is the between-draw variance of the patient probability; the trial of ``n``
    is then beta-binomial with that mean and variance (binomial when the estimate is not positive).

    Returns a frozen :mod:`scipy.stats` distribution of the count (0..``n``), or None when there is no
    simulated patient.
    """
    from scipy.stats import betabinom, binom

    f = np.asarray(flags, float)
    f = f.reshape(f.shape[0], -1) if f.ndim > 1 else f[:, None]
    m = np.sum(np.isfinite(f), axis=0)
    k = np.nansum(f, axis=0)
    use = m > 0
    if not use.any():
        return None
    m, k = m[use], k[use]
    p = float(k.sum() / m.sum())
    between = 0.0
    if use.sum() > 1 and 0.0 < p < 1.0:
        ph = k / m
        between = float(np.var(ph, ddof=1) - np.mean(ph * (1.0 - ph) / np.maximum(m - 1, 1)))
    if between <= 0.0 or not 0.0 < p < 1.0:
        return binom(n, p)
    between = min(between, 0.999 * p * (1.0 - p))
    s = p * (1.0 - p) / between - 1.0      # alpha + beta of the beta distribution of the probability
    return betabinom(n, p * s, (1.0 - p) * s)


def share_interval_between_trials(flags: np.ndarray, n: int, *, level: float = 0.90) -> tuple[float, float, float]:
    """Median and central ``level`` interval of the share in a trial of ``n`` patients, when virtual trials differ.

    The quantiles of :func:`share_predictive_between_trials` over ``n`` (the beta-binomial that keeps the
    spread between parameter draws). Returns NaNs when there is no simulated patient.
    """
    dist = share_predictive_between_trials(flags, n)
    if dist is None:
        return math.nan, math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, med, hi = dist.ppf((a, 0.5, 1.0 - a)) / n
    return float(med), float(lo), float(hi)


def share_tail_between_trials(flags: np.ndarray, k: int, n: int) -> float:
    """``min(P(X <= k), P(X >= k))`` for the count ``X`` of :func:`share_predictive_between_trials`.

    The observed ``k`` of ``n`` lies inside the central 90 % interval of :func:`share_interval_between_trials`
    exactly when ``P(X <= k) >= 5 %`` and ``P(X >= k) > 5 %`` (the quantiles of a discrete distribution), so a
    tail above 5 % means inside. NaN without simulated patients.
    """
    dist = share_predictive_between_trials(flags, n)
    if dist is None:
        return math.nan
    return float(min(dist.cdf(k), dist.sf(k - 1)))


def first_assessment_cr(ds: xarray.Dataset) -> np.ndarray:
    """CR at the first assessment, (patient, replicate) of 0/1; NaN for patients not evaluable."""
    from ..observables import RESPONSE_CODES

    cr = (ds["response"].isel(assessment=0).values == RESPONSE_CODES["CR"]).astype(float)
    return np.where(_evaluable(ds)[:, None], cr, np.nan)


def _evaluable(ds: xarray.Dataset) -> np.ndarray:
    return ds["evaluable"].values == 1 if "evaluable" in ds.coords else np.ones(ds.sizes["patient"], bool)


def _at(ds: xarray.Dataset, arr: np.ndarray, day: float) -> np.ndarray:
    t = ds["time"].values
    i = np.nonzero(t == day)[0]
    if not i.size:
        raise ValueError(f"day {day:g} is not in the simulation's record (days {t[0]:g}..{t[-1]:g}); simulate "
                         "the protocol at least to the observation's last day")
    return arr[..., i[0]]


def _in(ds: xarray.Dataset, arr: np.ndarray, window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    t = ds["time"].values
    m = (t >= window[0]) & (t <= window[1])
    if not m.any() or t[-1] < window[1]:
        raise ValueError(f"window [{window[0]:g}, {window[1]:g}] is not covered by the simulation's record "
                         f"(days {t[0]:g}..{t[-1]:g})")
    return arr[..., m], t[m]


def _assessment_days(ds: xarray.Dataset) -> np.ndarray:
    """The protocol's assessment days that lie in the record (marrow is sampled on them)."""
    t = ds["time"].values
    days = np.asarray([d for d in ds["assessment"].values if d in t], float)
    if not days.size:
        raise ValueError("no assessment day of the protocol lies in the simulation's record")
    return days


def _chimerism(ds: xarray.Dataset, which: str) -> np.ndarray:
    return ds[f"donor_chimerism_{which}"].values


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / b, np.nan)


def _expanded(ds: xarray.Dataset, threshold: float) -> np.ndarray:
    return _at(ds, ds["donor_nk_blood"].values, EXPANSION_DAY) > threshold


def _patients(obs: TrialObservation, ds: xarray.Dataset) -> np.ndarray:
    if ds.attrs.get("protocol") not in (None, obs.protocol):
        raise ValueError(f"observation '{obs.name}' is of protocol '{obs.protocol}', the dataset of "
                         f"'{ds.attrs.get('protocol')}'")
    keep = np.ones(ds.sizes["patient"], bool)
    if obs.group is not None:
        keep &= ds["group"].values == obs.group
    if not keep.any():
        raise ValueError(f"the dataset has no patient of group '{obs.group}' (observation '{obs.name}')")
    return keep


def simulated_per_patient(obs: TrialObservation, ds: xarray.Dataset) -> np.ndarray:
    """The observable for each simulated patient of the observation's group: array (patient, replicate).

    Shares give 0/1 flags; quantities their value in ``obs.unit``. NaN where the patient does
    not count (not evaluable for a response; not an expander for ``*_in_expanders``; never
    detected for ``persistence_beyond_day``). ``relapse_free_days`` gives each patient's first
    assessment day with marrow blasts >= 5 % (NaN = not by the last assessment of the run). ``ds``: a
    :func:`nksim.simulate_cohort` Dataset of ``obs.protocol`` run at least to :attr:`TrialObservation.last_day`.
    """
    if not obs.has_counterpart:
        raise ValueError(f"observation '{obs.name}' ({obs.observable}) has no simulated counterpart")
    keep = _patients(obs, ds)
    o = obs.observable
    dnk = ds["donor_nk_blood"].values
    if o == "cr_share_first_assessment":
        out = first_assessment_cr(ds)
    elif o == "response_share_first_assessment":
        from ..observables import RESPONSE_CODES

        r = ds["response"].isel(assessment=0).values
        out = np.isin(r, (RESPONSE_CODES["CR"], RESPONSE_CODES["PR"])).astype(float)
        out = np.where(_evaluable(ds)[:, None], out, np.nan)
    elif o == "expansion_share":
        out = (_at(ds, dnk, obs.day) > obs.threshold).astype(float)
    elif o == "detectable_share":
        c = _chimerism(ds, obs.chimerism)
        if obs.day is not None:
            out = (_at(ds, c, obs.day) >= obs.threshold).astype(float)
        else:
            out = (_in(ds, c, obs.window)[0] >= obs.threshold).any(axis=-1).astype(float)
    elif o == "lymphocyte_count":
        total = (ds["host_nk_blood"].values + ds["host_t_blood"].values + ds["host_treg_blood"].values + dnk)
        out = _at(ds, total, obs.day)
    elif o == "donor_nk_blood":
        out = _at(ds, dnk, obs.day)
    elif o == "host_t_blood":
        out = _at(ds, ds["host_t_blood"].values, obs.day)
    elif o == "donor_chimerism":
        out = _at(ds, _chimerism(ds, obs.chimerism), obs.day)
    elif o == "peak_donor_chimerism":
        out = np.nanmax(_in(ds, _chimerism(ds, obs.chimerism), obs.window)[0], axis=-1)
        if obs.threshold is not None:
            out = np.where(out >= obs.threshold, out, np.nan)
    elif o == "donor_nk_in_expanders":
        out = np.where(_expanded(ds, obs.threshold), _at(ds, dnk, obs.day), np.nan)
    elif o == "peak_donor_nk_in_expanders":
        out = np.where(_expanded(ds, obs.threshold), np.nanmax(_in(ds, dnk, obs.window)[0], axis=-1), np.nan)
    elif o in ("peak_day_donor_nk", "peak_day_chimerism"):
        arr, tw = _in(ds, dnk if o == "peak_day_donor_nk" else _chimerism(ds, obs.chimerism), obs.window)
        out = tw[np.argmax(np.where(np.isfinite(arr), arr, -np.inf), axis=-1)].astype(float)
    elif o == "il15_peak_fold":
        out = np.nanmax(_in(ds, ds["il15"].values, obs.window)[0], axis=-1)
    elif o == "host_treg_fold":
        tr = ds["host_treg_blood"].values
        out = _ratio(_at(ds, tr, obs.day), _at(ds, tr, obs.reference_day))
    elif o == "host_treg_share_fold":
        share = _ratio(ds["host_treg_blood"].values, ds["host_treg_blood"].values + ds["host_t_blood"].values)
        out = _ratio(_at(ds, share, obs.day), _at(ds, share, obs.reference_day))
    elif o == "donor_nk_fold":
        out = _ratio(_at(ds, dnk, obs.day), _at(ds, dnk, obs.reference_day))
    elif o == "persistence_beyond_day":
        src = dnk if obs.chimerism is None else _chimerism(ds, obs.chimerism)
        arr, tw = _in(ds, src, obs.window)
        hit = arr >= obs.threshold
        last = tw[arr.shape[-1] - 1 - np.argmax(hit[..., ::-1], axis=-1)].astype(float)
        out = np.where(hit.any(axis=-1), last, np.nan)
    elif o == "relapse_free_days":
        days = _assessment_days(ds)
        blasts = np.stack([_at(ds, ds["marrow_blast_pct"].values, d) for d in days], axis=-1)
        hit = blasts >= RELAPSE_BLAST_PCT
        out = np.where(hit.any(axis=-1), days[np.argmax(hit, axis=-1)], np.nan).astype(float)
    else:  # pragma: no cover - every observable with a counterpart is handled above
        raise AssertionError(o)
    return np.asarray(out, float)[keep]


def simulated_per_trial(obs: TrialObservation, ds: xarray.Dataset) -> np.ndarray:
    """The observable per virtual trial (replicate): array (replicate,).

    Shares: the share among the trial's simulated patients that count; quantities: the
    ``statistic`` (median or mean) over them; ``relapse_free_days``: the Kaplan-Meier median
    (``inf`` when not reached). NaN where no patient counts (e.g. no expander).
    """
    x = simulated_per_patient(obs, ds)
    if obs.observable == "relapse_free_days":
        from ..observables import km_median

        end = float(_assessment_days(ds)[-1])
        return np.array([km_median(x[:, r], end) for r in range(x.shape[1])])
    out = np.full(x.shape[1], np.nan)
    for r in range(x.shape[1]):
        col = x[:, r][np.isfinite(x[:, r])]
        if col.size:
            out[r] = col.mean() if obs.is_share or obs.statistic == "mean" else np.median(col)
    return out


def median_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free ``level`` confidence interval of the median of the samples ``x`` (NaN dropped).

    Order statistics ``x_(k)`` and ``x_(n + 1 - k)`` (1-based), ``k`` the ``(1 - level) / 2`` quantile of
    Binomial(n, 1/2) (at least 1): the interval holds the population median with probability at least about
    ``level`` (Conover, Practical Nonparametric Statistics, 3rd ed., section 3.2). NaNs when no sample is left.
    """
    from scipy.stats import binom

    v = np.sort(np.asarray(x, float)[~np.isnan(np.asarray(x, float))])
    n = v.size
    if n == 0:
        return math.nan, math.nan
    k = max(int(binom.ppf((1.0 - level) / 2.0, n, 0.5)), 1)
    return float(v[k - 1]), float(v[n - k])


def predictive_interval(obs: TrialObservation, ds: xarray.Dataset, *, level: float = 0.90, draws: int = 4000,
                        seed: int = 0, between_trials: bool = False) -> tuple[float, float, float]:
    """Median and central ``level`` predictive interval of the observable.

    Shares with a published ``n``: trials of ``n`` patients drawn from all simulated patients
    (:func:`share_interval`, as the day-28 remission table of ``experiments/validation``); with
    ``between_trials`` (virtual trials simulated with different parameter draws) the beta-binomial
    of :func:`share_interval_between_trials`, which keeps the spread between draws.
    Otherwise: quantiles of :func:`simulated_per_trial` over the virtual trials (NaNs dropped).
    """
    if obs.is_share and obs.n is not None and between_trials:
        return share_interval_between_trials(simulated_per_patient(obs, ds), obs.n, level=level)
    if obs.is_share and obs.n is not None:
        return share_interval(simulated_per_patient(obs, ds), obs.n, rng=np.random.default_rng(seed), draws=draws,
                              level=level)
    x = simulated_per_trial(obs, ds)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    a = (1.0 - level) / 2.0
    # a Kaplan-Meier median not reached is inf: quantiles without interpolation then
    method = "linear" if np.isfinite(x).all() else "inverted_cdf"
    lo, hi = np.quantile(x, [a, 1.0 - a], method=method)
    return float(np.quantile(x, 0.5, method=method)), float(lo), float(hi)


def group_by_protocol(rows: Sequence[TrialObservation]) -> dict[str, list[TrialObservation]]:
    """Rows grouped by the protocol that simulates them (first-seen order of protocols and rows)."""
    out: dict[str, list[TrialObservation]] = {}
    for o in rows:
        out.setdefault(o.protocol, []).append(o)
    return out


def simulation_end_day(observations: Sequence[TrialObservation]) -> float:
    """The last day a simulation must reach for all ``observations`` (CR rows: the first assessment)."""
    from ..protocol import load_protocol

    days = []
    for o in observations:
        if o.observable in ("cr_share_first_assessment", "response_share_first_assessment"):
            days.append(float(load_protocol(o.protocol).assessment_days[0]))
        elif o.observable == "relapse_free_days":
            days.append(float(load_protocol(o.protocol).end_day))
        elif not math.isnan(o.last_day):
            days.append(o.last_day)
    return max(days) if days else math.nan
