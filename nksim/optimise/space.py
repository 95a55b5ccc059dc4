"""The declared design space of ``nksim optimise``: dimensions, constraints, and proposal -> schedule.

``[optimise.space]`` names what may vary; each entry is a fixed value, an inclusive range
``{low = .., high = ..}`` (whole days for day-valued dimensions; ``scale = "log"`` for the dose) or
a choice ``{choices = [..]}``:

==================  =========  =====================================================================
dimension           unit       meaning
==================  =========  =====================================================================
``regimen``         --         lymphodepletion (:data:`nksim.sweep.factors.REGIMENS`)
``nk_product``      --         product (:data:`nksim.protocol.NK_PRODUCTS`)
``cytokine``        --         cytokine course (:data:`nksim.sweep.factors.CYTOKINES`)
``cytokine_start``  day        shift of the course after the first infusion
``cytokine_days``   day        length of the course from its first dose (0: the whole course)
``gap``             day        last lymphodepleting dose to the first infusion
``n_infusions``     1          number of infusions (1-4)
``interval``        day        range of EACH interval between consecutive infusions
``donor``           --         donor of each later infusion: ``"same"`` (the first infusion's
                               donor: a primed host) or ``"new"`` (a donor not used before)
``total_dose``      kg-1       NK cells per kg over all infusions
==================  =========  =====================================================================

``[optimise.constraints]``: ``last_infusion_day`` (day since the first infusion; default 180),
``min_share`` (percent of the total dose in every infusion; default 10) and ``share_step``
(percent; shares are multiples of it; default 5).

How a proposal becomes a schedule (:meth:`DesignSpace.candidate`): Optuna suggests
``n_infusions``, one ``interval_k`` per interval, one weight ``share_k`` in [0, 1] per infusion
and one ``donor_k`` per later infusion (conditional parameters: only those the number of
infusions needs). Shares are ``min_share`` plus the rest split in proportion to the weights and
rounded to ``share_step`` (largest remainders), so every proposal meets the share constraints by
construction; intervals whose sum passes ``last_infusion_day`` are scaled down to fit (each kept
at or above the interval's low end), so every proposal is feasible. Different proposals may give
the same schedule: the optimiser simulates each schedule once per bank.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NksimInputError
from ..protocol import NK_PRODUCTS
from ..sweep.factors import CYTOKINES, REGIMENS
from ..sweep.scenario import native_gap
from .candidate import FIELDS, Candidate

#: Most infusions the optimiser proposes.
MAX_INFUSIONS = 4

#: dimension -> (kind, unit, allowed low, allowed high or the allowed choices)
DIMENSIONS: dict[str, tuple[str, str, Any, Any]] = {
    "regimen": ("choice", "-", tuple(REGIMENS), None),
    "nk_product": ("choice", "-", tuple(NK_PRODUCTS), None),
    "cytokine": ("choice", "-", tuple(CYTOKINES), None),
    "donor": ("choice", "-", ("same", "new"), None),
    "cytokine_start": ("int", "day", 0, 60),
    "cytokine_days": ("int", "day", 0, 60),
    "gap": ("int", "day", 1, 60),
    "n_infusions": ("int", "1", 1, MAX_INFUSIONS),
    "interval": ("int", "day", 1, 120),
    "total_dose": ("float", "kg-1", 1e3, 1e10),
}

#: constraint -> (unit, low, high, default)
CONSTRAINTS: dict[str, tuple[str, float, float, float]] = {
    "last_infusion_day": ("day", 0, 365, 180),
    "min_share": ("percent", 0, 100, 10),
    "share_step": ("percent", 0.5, 100, 5),
}


@dataclass(frozen=True)
class Dimension:
    """One dimension: fixed (``value``), a range (``low``, ``high``, ``log``) or a choice (``choices``)."""

    name: str
    value: Any = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def fixed(self) -> bool:
        """Whether the dimension has one value."""
        return self.value is not None

    def describe(self) -> str:
        """One line saying what the dimension allows."""
        if self.fixed:
            return f"{self.name} = {self.value!r}"
        if self.choices is not None:
            return f"{self.name} in {list(self.choices)}"
        unit = DIMENSIONS[self.name][1]
        unit = "" if unit == "1" else f" {unit}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]{unit}" + (" (log)" if self.log else "")


def parse_dimension(name: str, raw: Any, source: str, key: str) -> Dimension:
    """A :class:`Dimension` from its TOML value (errors name ``source``, ``key`` and what is allowed)."""
    if name not in DIMENSIONS:
        raise NksimInputError(f"unknown dimension {name!r}; allowed: {sorted(DIMENSIONS)}", source=source, key=key)
    kind, unit, lo, hi = DIMENSIONS[name]

    def check_value(v: Any, k: str) -> Any:
        if kind == "choice":
            if not isinstance(v, str) or v not in lo:
                raise NksimInputError(f"must be one of {list(lo)}, got {v!r}", source=source, key=k)
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise NksimInputError(f"must be a number in [{lo:g}, {hi:g}] {unit}, got {v!r}", source=source, key=k)
        if kind == "int":
            if float(v) != int(v):
                raise NksimInputError(f"must be a whole number of {unit}, got {v!r}", source=source, key=k)
            return int(v)
        return float(v)

    if isinstance(raw, Mapping):
        allowed = {"choices"} if kind == "choice" else {"low", "high"} | ({"scale"} if kind == "float" else set())
        unknown = sorted(set(raw) - allowed)
        if unknown or not raw:
            raise NksimInputError(f"unknown or missing entries {unknown or '(none)'}; a {kind} dimension takes "
                                  f"{sorted(allowed)} (or a fixed value)", source=source, key=key)
        if kind == "choice":
            ch = raw["choices"]
            if not isinstance(ch, list) or not ch:
                raise NksimInputError(f"choices must be a non-empty list of {list(lo)}", source=source,
                                      key=f"{key}.choices")
            vals = tuple(check_value(v, f"{key}.choices") for v in ch)
            if len(set(vals)) != len(vals):
                raise NksimInputError(f"choices repeat a value: {list(vals)}", source=source, key=f"{key}.choices")
            return Dimension(name, value=vals[0]) if len(vals) == 1 else Dimension(name, choices=vals)
        if "low" not in raw or "high" not in raw:
            raise NksimInputError("a range needs both low and high", source=source, key=key)
        a, b = check_value(raw["low"], f"{key}.low"), check_value(raw["high"], f"{key}.high")
        if a > b:
            raise NksimInputError(f"low {a!r} is above high {b!r}", source=source, key=key)
        scale = raw.get("scale", "linear")
        if scale not in ("linear", "log"):
            raise NksimInputError(f"scale must be 'linear' or 'log', got {scale!r}", source=source, key=f"{key}.scale")
        if a == b:
            return Dimension(name, value=a)
        return Dimension(name, low=a, high=b, log=scale == "log")
    if name == "donor":
        raise NksimInputError("donor is a choice per later infusion: {choices = [\"same\", \"new\"]} or one of "
                              "them fixed as {choices = [\"same\"]}", source=source, key=key)
    return Dimension(name, value=check_value(raw, key))


@dataclass(frozen=True)
class DesignSpace:
    """The declared space (module docstring) with its constraints."""

    dims: Mapping[str, Dimension]
    last_infusion_day: float
    min_share: float
    share_step: float

    def dim(self, name: str) -> Dimension:
        """The dimension called ``name``."""
        return self.dims[name]

    @property
    def free(self) -> list[str]:
        """Names of the dimensions that vary."""
        return [k for k, d in self.dims.items() if not d.fixed]

    def describe(self) -> list[str]:
        """One line per dimension and constraint."""
        return [d.describe() for d in self.dims.values()] + [
            f"last infusion on or before day {self.last_infusion_day:g}",
            f"every infusion >= {self.min_share:g} % of the dose, shares in steps of {self.share_step:g} %"]

    # ------------------------------------------------------------------ proposal -> schedule
    def _suggest(self, trial: Any, name: str, dim: Dimension, label: str | None = None) -> Any:
        label = label or name
        if dim.fixed:
            return dim.value
        if dim.choices is not None:
            return trial.suggest_categorical(label, list(dim.choices))
        if DIMENSIONS[name][0] == "int":
            return trial.suggest_int(label, int(dim.low), int(dim.high))
        return trial.suggest_float(label, float(dim.low), float(dim.high), log=dim.log)

    def candidate(self, trial: Any) -> Candidate:
        """The schedule of an Optuna trial (its ``suggest_*`` calls define the search parameters)."""
        g = {n: self._suggest(trial, n, self.dims[n]) for n in
             ("regimen", "nk_product", "cytokine", "cytokine_start", "cytokine_days", "gap", "total_dose",
              "n_infusions")}
        n = int(g["n_infusions"])
        intervals = [int(self._suggest(trial, "interval", self.dims["interval"], f"interval_{k}")) for k in range(1, n)]
        weights = [float(trial.suggest_float(f"share_{k}", 0.0, 1.0)) for k in range(1, n + 1)] if n > 1 else [1.0]
        donor_moves = [self._suggest(trial, "donor", self.dims["donor"], f"donor_{k}") for k in range(2, n + 1)]
        return self.build(g, intervals, weights, donor_moves)

    def build(self, g: Mapping[str, Any], intervals: list[int], weights: list[float],
              donor_moves: list[str]) -> Candidate:
        """A feasible schedule from suggested values (repairs the last day; shares by construction)."""
        n = len(weights)
        intervals = self.fit_intervals(intervals)
        days = [0.0]
        for iv in intervals:
            days.append(days[-1] + iv)
        donors = ["donor1"]
        for move in donor_moves:
            donors.append(donors[-1] if move == "same" else f"donor{len(set(donors)) + 1}")
        return Candidate(regimen=str(g["regimen"]), nk_product=str(g["nk_product"]), cytokine=str(g["cytokine"]),
                         cytokine_start=float(g["cytokine_start"]), cytokine_days=float(g["cytokine_days"]),
                         gap=float(g["gap"]), days=tuple(days),
                         shares=self.shares(weights) if n > 1 else (100.0,), donors=tuple(donors),
                         total_dose=float(g["total_dose"]))

    def neighbours(self, c: Candidate) -> list[Candidate]:
        """Schedules one step from ``c`` inside the space (the polish stage's moves).

        The moves: the gap or one interval +-1 day, a share step moved between two infusions, the
        donor of one later infusion changed.
        """
        out: dict[str, Candidate] = {}

        def add(**changes: Any) -> None:
            fields = {f: getattr(c, f) for f in FIELDS}
            fields.update(changes)
            try:
                n = Candidate(**fields)
            except NksimInputError:
                return
            if n.key() != c.key() and self.contains(n):
                out.setdefault(n.key(), n)

        for name in ("gap", "cytokine_start", "cytokine_days"):
            if not self.dims[name].fixed:
                for step in (-1, 1):
                    add(**{name: getattr(c, name) + step})
        if not self.dims["interval"].fixed:
            for k in range(1, c.n_infusions):
                for step in (-1, 1):
                    days = list(c.days)
                    for j in range(k, len(days)):
                        days[j] += step
                    add(days=tuple(days))
        for i in range(c.n_infusions):
            for j in range(c.n_infusions):
                if i != j:
                    sh = list(c.shares)
                    sh[i] += self.share_step
                    sh[j] -= self.share_step
                    add(shares=tuple(sh))
        if not self.dims["donor"].fixed:
            for k in range(1, c.n_infusions):
                moves = ["same" if c.donors[j] in c.donors[:j] else "new" for j in range(1, c.n_infusions)]
                moves[k - 1] = "new" if moves[k - 1] == "same" else "same"
                donors = ["donor1"]
                for m in moves:
                    donors.append(donors[-1] if m == "same" else f"donor{len(set(donors)) + 1}")
                add(donors=tuple(donors))
        return list(out.values())

    def profile(self, c: Candidate, levels: int = 8) -> dict[str, list[tuple[float, Candidate]]]:
        """Schedules that vary one factor of ``c`` over its range, the others fixed (a profile through ``c``).

        Factors: each free numeric dimension (gap, cytokine start and length), the first interval
        (later infusions move with it) and the first infusion's share (taken from or given to the
        second); up to ``levels`` evenly spaced whole values, ``c``'s own value included; only
        schedules inside the space.
        """
        out: dict[str, list[tuple[float, Candidate]]] = {}
        fields = {f: getattr(c, f) for f in FIELDS}

        def grid(lo: float, hi: float, own: float, step: float = 1.0) -> list[float]:
            n = int(round((hi - lo) / step))
            vals = {lo + step * round(k * n / max(levels - 1, 1)) for k in range(levels)} if n > 0 else {lo}
            return sorted(vals | {own})

        def keep(name: str, level: float, **changes: Any) -> None:
            try:
                cand = Candidate(**{**fields, **changes})
            except NksimInputError:
                return
            if self.contains(cand):
                out.setdefault(name, []).append((float(level), cand))

        for name in ("gap", "cytokine_start", "cytokine_days"):
            d = self.dims[name]
            if not d.fixed:
                for v in grid(float(d.low), float(d.high), float(getattr(c, name))):
                    keep(name, v, **{name: v})
        if c.n_infusions > 1 and not self.dims["interval"].fixed:
            d = self.dims["interval"]
            for v in grid(float(d.low), float(d.high), c.intervals[0]):
                shift = v - c.intervals[0]
                keep("interval", v, days=(0.0, *(x + shift for x in c.days[1:])))
        if c.n_infusions > 1:
            m = math.ceil(self.min_share / self.share_step - 1e-9) * self.share_step
            pair = c.shares[0] + c.shares[1]
            for v in grid(m, pair - m, c.shares[0], self.share_step):
                keep("first_share", v, shares=(v, pair - v, *c.shares[2:]))
        return out

    def contains(self, c: Candidate) -> bool:
        """Whether ``c`` lies in the space and meets its constraints."""
        def ok(name: str, v: Any) -> bool:
            d = self.dims[name]
            if d.fixed:
                return v == d.value
            if d.choices is not None:
                return v in d.choices
            return d.low - 1e-9 <= v <= d.high + 1e-9

        moves = ["same" if c.donors[j] in c.donors[:j] else "new" for j in range(1, c.n_infusions)]
        m = math.ceil(self.min_share / self.share_step - 1e-9) * self.share_step
        return (ok("regimen", c.regimen) and ok("nk_product", c.nk_product) and ok("cytokine", c.cytokine)
                and ok("cytokine_start", c.cytokine_start) and ok("cytokine_days", c.cytokine_days)
                and ok("gap", c.gap) and ok("total_dose", c.total_dose)
                and ok("n_infusions", c.n_infusions) and all(ok("interval", iv) for iv in c.intervals)
                and all(ok("donor", mv) for mv in moves) and c.last_day <= self.last_infusion_day + 1e-9
                and all(s >= m - 1e-9 and abs(s / self.share_step - round(s / self.share_step)) < 1e-9
                        for s in c.shares))

    def fit_intervals(self, intervals: list[int]) -> list[int]:
        """Intervals scaled down (whole days, each >= the interval's low end) to end by ``last_infusion_day``."""
        total = sum(intervals)
        limit = self.last_infusion_day
        if total <= limit or not intervals:
            return list(intervals)
        lo = int(self.dims["interval"].low if not self.dims["interval"].fixed else self.dims["interval"].value)
        out = [max(lo, int(math.floor(iv * limit / total))) for iv in intervals]
        while sum(out) > limit:  # rounding up to the low end may still overshoot: shorten the longest
            i = max(range(len(out)), key=lambda j: (out[j], -j))
            if out[i] <= lo:
                break  # cannot happen for a validated space ((n - 1) * low <= last_infusion_day)
            out[i] -= 1
        return out

    def shares(self, weights: list[float]) -> tuple[float, ...]:
        """Percent shares: ``min_share`` each plus the rest by ``weights``, in steps of ``share_step``."""
        n = len(weights)
        step = self.share_step
        units = int(round(100.0 / step))
        m = int(math.ceil(self.min_share / step - 1e-9))
        free = units - n * m
        total = sum(weights)
        raw = [free * (w / total if total > 0 else 1.0 / n) for w in weights]
        base = [int(math.floor(r)) for r in raw]
        rest = free - sum(base)
        order = sorted(range(n), key=lambda i: (-(raw[i] - base[i]), i))
        for i in order[:rest]:
            base[i] += 1
        return tuple((m + b) * step for b in base)


def parse_space(space: Mapping[str, Any], constraints: Mapping[str, Any], source: str) -> DesignSpace:
    """The :class:`DesignSpace` of ``[optimise.space]`` and ``[optimise.constraints]`` (every value checked)."""
    dims: dict[str, Dimension] = {}
    for name, raw in space.items():
        dims[name] = parse_dimension(name, raw, source, f"optimise.space.{name}")
    need = ("regimen", "nk_product", "total_dose")
    missing = [k for k in need if k not in dims]
    if missing:
        raise NksimInputError(f"missing {missing}: give each a value or a range", source=source, key="optimise.space")
    dims.setdefault("cytokine", Dimension("cytokine", value="none"))
    dims.setdefault("cytokine_start", Dimension("cytokine_start", value=0))
    dims.setdefault("cytokine_days", Dimension("cytokine_days", value=0))
    dims.setdefault("n_infusions", Dimension("n_infusions", value=2))
    dims.setdefault("interval", Dimension("interval", value=7))
    dims.setdefault("donor", Dimension("donor", value="same"))
    if "gap" not in dims:
        reg = dims["regimen"]
        if not reg.fixed:
            raise NksimInputError("with a regimen choice, give gap too (each regimen has its own native gap)",
                                  source=source, key="optimise.space.gap")
        dims["gap"] = Dimension("gap", value=int(native_gap(str(reg.value))))
    vals: dict[str, float] = {}
    for k, raw in constraints.items():
        if k not in CONSTRAINTS:
            raise NksimInputError(f"unknown constraint {k!r}; allowed: {sorted(CONSTRAINTS)}", source=source,
                                  key=f"optimise.constraints.{k}")
        unit, lo, hi, _ = CONSTRAINTS[k]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not lo <= raw <= hi:
            raise NksimInputError(f"must be a number in [{lo:g}, {hi:g}] {unit}, got {raw!r}", source=source,
                                  key=f"optimise.constraints.{k}")
        vals[k] = float(raw)
    for k, (_, _, _, default) in CONSTRAINTS.items():
        vals.setdefault(k, default)
    step = vals["share_step"]
    if abs(100.0 / step - round(100.0 / step)) > 1e-9:
        raise NksimInputError(f"must divide 100 percent (e.g. 1, 5, 10, 12.5), got {step:g}", source=source,
                              key="optimise.constraints.share_step")
    n_dim = dims["n_infusions"]
    n_max = int(n_dim.value if n_dim.fixed else n_dim.high)
    m = math.ceil(vals["min_share"] / step - 1e-9)
    if n_max * m * step > 100.0 + 1e-9:
        raise NksimInputError(f"{n_max} infusions of at least {vals['min_share']:g} % (in steps of {step:g} %) "
                              "exceed 100 %: lower min_share or the number of infusions", source=source,
                              key="optimise.constraints.min_share")
    iv = dims["interval"]
    iv_lo = float(iv.value if iv.fixed else iv.low)
    if (n_max - 1) * iv_lo > vals["last_infusion_day"]:
        raise NksimInputError(f"{n_max} infusions at least {iv_lo:g} days apart cannot end by day "
                              f"{vals['last_infusion_day']:g}: raise last_infusion_day or lower the interval's low end",
                              source=source, key="optimise.constraints.last_infusion_day")
    return DesignSpace(dims=dims, last_infusion_day=vals["last_infusion_day"], min_share=vals["min_share"],
                       share_step=step)
