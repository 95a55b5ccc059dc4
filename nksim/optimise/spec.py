"""``nksim optimise`` specs: reading and validating an optimisation TOML file.

An optimisation spec (``experiments/optimise/*.toml``; commented example:
``experiments/optimise/expanding_two_infusions.toml``)::

    [optimise]                    # required
    name = "best_schedule"        # letters, digits, _ . -
    description = "..."
    model = "default"             # model name in models/ or a TOML path (relative to this file)
    draws_from = "posterior"      # "posterior", "posterior:FILE.nc", "prior" or a CSV of draws
    seed = 1                      # an integer in [0, 2**63): banks and TPE batches spawn from it
    objective = "pft"             # restricted mean progression-free time to the horizon (day)
    horizon = 276                 # day since the start of lymphodepletion
    landmark_day = 276            # P(progression-free) reported at this day (<= horizon)
    assessment_days = [34, 96]    # days since the start of lymphodepletion; progression is called
                                  # from the first on
    trials = 64                   # search proposals (TPE), in synchronous batches of
    batch_size = 8
    startup_trials = 16           # random proposals before TPE models the history
    polish_rounds = 3             # local search steps from the incumbent after TPE
    top = 6                       # distinct schedules confirmed on the fresh bank
    delta = 7                     # day: margin of the near-optimal set
    alpha = 0.05                  # error rate of the near-optimal set (and 1 - level of intervals)
    profile_levels = 8            # levels per factor of the one-at-a-time profiles (0: none)
    disease = "active"            # or "remission" with baseline_blast_pct below 5 (as a sweep's [cohort])

    [optimise.space]              # what may vary (nksim.optimise.space): value, {low, high} or {choices}
    [optimise.constraints]        # last_infusion_day, min_share, share_step
    [optimise.reference]          # the schedule every answer is compared with (the trial's)
    [optimise.banks.search]       # draws, patients (per draw), replicates
    [optimise.banks.confirm]
    [optimise.banks.estimate]
    [parameters]                  # model parameters fixed for every simulation ("lattice.side" = 10)

Every value is checked here, before any simulation; errors are
:class:`~nksim.errors.NksimInputError` naming the file, the key and the allowed range.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import check_number
from ..errors import NksimInputError
from ..fileio import read_toml
from ..sweep.factors import is_parameter, unknown_factor
from ..sweep.spec import (
    apply_overrides,
    resolve_draws_from,
    spec_day,
    spec_days,
    spec_header,
    spec_int,
    spec_population,
    spec_table,
)
from .bank import BANK_NAMES
from .candidate import Candidate
from .problem import OUTCOMES
from .space import DesignSpace, parse_space

_TOP = ("optimise", "parameters")
_KEYS = {"name", "description", "model", "draws_from", "seed", "objective", "horizon", "landmark_day",
         "assessment_days", "trials", "batch_size", "startup_trials", "polish_rounds", "top", "delta", "alpha",
         "profile_levels", "disease", "baseline_blast_pct",
         "space", "constraints", "reference", "banks"}
_BANK_KEYS = {"draws", "patients", "replicates"}
_REFERENCE_KEYS = {"regimen", "nk_product", "cytokine", "cytokine_start", "cytokine_days", "gap", "days", "shares",
                   "donors",
                   "total_dose"}
#: Objectives the search may maximise (per-unit outcomes of nksim.optimise.problem).
OBJECTIVES = ("pft",)


@dataclass(frozen=True)
class BankSize:
    """Parameter draws, patients per draw, replicates per patient."""

    draws: int
    patients: int
    replicates: int = 1

    @property
    def units(self) -> int:
        """Simulations per schedule."""
        return self.draws * self.patients * self.replicates


@dataclass(frozen=True)
class OptimiseSpec:
    """A validated optimisation spec (module docstring)."""

    source: str
    raw: Mapping[str, Any] = field(repr=False)
    name: str
    description: str
    model_path: Path
    draws_from: str
    seed: int
    objective: str
    horizon: float
    landmark_day: float
    assessment_days: tuple[float, ...]
    trials: int
    batch_size: int
    startup_trials: int
    polish_rounds: int
    top: int
    delta: float
    alpha: float
    profile_levels: int
    space: DesignSpace
    reference: Candidate
    banks: Mapping[str, BankSize]
    parameters: Mapping[str, float]
    #: the virtual patients' population: ``{}`` (active disease, blasts drawn) or ``disease`` /
    #: ``baseline_blast_pct`` (:func:`nksim.protocol.population_patient`)
    population: Mapping[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 (16 hex digits) of the spec's content (file paths by name and digest)."""
        content = {k: v for k, v in self.raw.items()}
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        h = hashlib.sha256(blob.encode())
        h.update(self.model_path.read_bytes())
        if self.draws_from not in ("prior", "posterior"):
            h.update(Path(self.draws_from.removeprefix("posterior:")).read_bytes())
        return h.hexdigest()[:16]


def max_offset(space: DesignSpace) -> float:
    """Most days from the start of lymphodepletion to the first infusion over the space's regimens and gaps."""
    from ..sweep.scenario import regimen_events

    reg = space.dims["regimen"]
    regimens = [reg.value] if reg.fixed else list(reg.choices or ())
    gap = space.dims["gap"]
    gap_max = float(gap.value if gap.fixed else gap.high)
    span = max((-min((float(r) for r, _, _ in regimen_events(x)), default=0.0) for x in regimens), default=0.0)
    return gap_max + span


def _err(msg: str, src: str, key: str) -> NksimInputError:
    return NksimInputError(msg, source=src, key=key)


def _reference(table: Mapping[str, Any], space: DesignSpace, src: str) -> Candidate:
    """The reference schedule; fields it omits take the space's fixed values (or its defaults)."""
    def fixed(name: str) -> Any:
        d = space.dims[name]
        if not d.fixed:
            raise _err(f"the space varies {name}: give the reference's {name}", src, f"optimise.reference.{name}")
        return d.value

    days = table.get("days", [0])
    if not isinstance(days, list) or not days:
        raise _err("must be a non-empty list of infusion days (the first is 0)", src, "optimise.reference.days")
    n = len(days)
    shares = table.get("shares", [100.0 / n] * n)
    donors = table.get("donors", ["donor1"] * n)
    fields = {
        "regimen": table.get("regimen") if "regimen" in table else fixed("regimen"),
        "nk_product": table.get("nk_product") if "nk_product" in table else fixed("nk_product"),
        "cytokine": table.get("cytokine") if "cytokine" in table else fixed("cytokine"),
        "cytokine_start": table.get("cytokine_start", 0),
        "cytokine_days": table.get("cytokine_days", 0),
        "gap": table.get("gap") if "gap" in table else fixed("gap"),
        "days": days, "shares": shares, "donors": donors,
        "total_dose": table.get("total_dose") if "total_dose" in table else fixed("total_dose"),
    }
    for k in ("days", "shares", "donors"):
        if not isinstance(fields[k], list) or len(fields[k]) != n:
            raise _err(f"must be a list with one entry per infusion ({n}, as days)", src, f"optimise.reference.{k}")
    return Candidate.from_mapping(fields, src, "optimise.reference")  # every value's type and range checked


def spec_from_dict(raw: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> OptimiseSpec:
    """Validate a parsed optimisation spec (module docstring); paths are relative to ``base_dir``."""
    src = source
    base_dir = base_dir or Path.cwd()
    for k in raw:
        if k not in _TOP:
            raise _err(f"unknown table '{k}'; allowed: {list(_TOP)}", src, k)
    if "optimise" not in raw:
        raise _err("missing table", src, "optimise")
    op = spec_table(raw, "optimise", src, "optimise", _KEYS)
    name, description, seed, model_path = spec_header(op, src, "optimise", base_dir)
    if "horizon" not in op:
        raise _err("missing key", src, "optimise.horizon")
    objective = op.get("objective", "pft")
    if objective not in OBJECTIVES:
        raise _err(f"objective {objective!r} must be one of {list(OBJECTIVES)} ({OUTCOMES['pft'][1]}, day)", src,
                   "optimise.objective")
    horizon = spec_day(op["horizon"], src, "optimise.horizon", 14, 3650)
    landmark = spec_day(op.get("landmark_day", horizon), src, "optimise.landmark_day", 1, horizon)
    days = spec_days(op.get("assessment_days", [horizon]), src, "optimise.assessment_days", 1, horizon)
    trials = spec_int(op.get("trials", 64), src, "optimise.trials", 1, 100_000)
    batch = spec_int(op.get("batch_size", 8), src, "optimise.batch_size", 1, 1000)
    startup = spec_int(op.get("startup_trials", min(16, trials)), src, "optimise.startup_trials", 0, 100_000)
    polish = spec_int(op.get("polish_rounds", 3), src, "optimise.polish_rounds", 0, 100)
    top = spec_int(op.get("top", 6), src, "optimise.top", 1, 100)
    delta = check_number(op.get("delta", 7), source=src, key="optimise.delta", lo=0, hi=horizon, unit="day")
    alpha = check_number(op.get("alpha", 0.05), source=src, key="optimise.alpha", lo=0, hi=0.5, lo_open=True)
    profile_levels = spec_int(op.get("profile_levels", 8), src, "optimise.profile_levels", 0, 50)
    population = spec_population(op, src, "optimise")

    space = parse_space(spec_table(op, "space", src, "optimise.space"), spec_table(op, "constraints", src,
                                                                            "optimise.constraints"), src)
    latest = max_offset(space) + space.last_infusion_day
    if latest >= horizon:
        raise _err(f"a schedule of this space may give its last infusion on day {latest:g} after the start of "
                   f"lymphodepletion (largest gap and regimen, last_infusion_day), not before the horizon "
                   f"{horizon:g}: raise the horizon or narrow the space", src, "optimise.horizon")
    reference = _reference(spec_table(op, "reference", src, "optimise.reference", _REFERENCE_KEYS), space, src)

    bk = spec_table(op, "banks", src, "optimise.banks", set(BANK_NAMES))
    banks: dict[str, BankSize] = {}
    defaults = {"search": (8, 8), "confirm": (16, 16), "estimate": (16, 16)}
    for bname in BANK_NAMES:
        t = spec_table(bk, bname, src, f"optimise.banks.{bname}", _BANK_KEYS)
        d0, p0 = defaults[bname]
        banks[bname] = BankSize(spec_int(t.get("draws", d0), src, f"optimise.banks.{bname}.draws", 1, 10_000),
                                spec_int(t.get("patients", p0), src, f"optimise.banks.{bname}.patients", 1, 100_000),
                                spec_int(t.get("replicates", 1), src, f"optimise.banks.{bname}.replicates", 1, 1000))
    if banks["confirm"].patients < 2:
        raise _err("the per-draw analysis splits each draw's patients in two: give >= 2", src,
                   "optimise.banks.confirm.patients")
    draws_needed = max(b.draws for b in banks.values())
    draws_from = resolve_draws_from(op.get("draws_from", "posterior"), draws_needed, base_dir, src,
                                    "optimise.draws_from", "optimise.banks")

    pa = spec_table(raw, "parameters", src, "parameters")
    parameters: dict[str, float] = {}
    for k, v in pa.items():
        if not is_parameter(k):
            raise unknown_factor(k, src, f"parameters.{k}")
        parameters[k] = check_number(v, source=src, key=f"parameters.{k}")

    return OptimiseSpec(source=src, raw=raw, name=name, description=description, model_path=model_path,
                        draws_from=draws_from, seed=seed, objective=objective, horizon=horizon, landmark_day=landmark,
                        assessment_days=days, trials=trials, batch_size=batch, startup_trials=startup,
                        polish_rounds=polish, top=top, delta=delta, alpha=alpha, profile_levels=profile_levels,
                        space=space, reference=reference,
                        banks=banks, parameters=parameters, population=population)


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> OptimiseSpec:
    """Read and validate an optimisation spec TOML file (``overrides``: ``TABLE.KEY=VALUE`` strings)."""
    p = Path(path)
    raw = read_toml(p, "optimisation spec file")
    raw = apply_overrides(raw, overrides, str(p), tables=_TOP, nested=("optimise",),
                          example="optimise.trials=16")
    return spec_from_dict(raw, str(p), base_dir=p.resolve().parent)
