"""Sweep specifications: parsing and validating a sweep TOML file.

A sweep spec (``experiments/*.toml``) has these tables (see
``experiments/two_infusion_schedules.toml`` for a commented example)::

    [sweep]                       # required
    name = "my_sweep"             # letters, digits, _ . -
    description = "..."
    model = "default"             # model name in models/ or a TOML path (relative to this file)
    seed = 1                      # an integer in [0, 2**63): same seed -> bitwise-identical store
    design = "factorial"          # "factorial" | "list" | "lhs" | "sobol"
    end_day = 365                 # last simulated day (days since first infusion)
    assessment_days = [28, 90, 180, 270, 365]
    landmark_day = 270            # day of P(progression-free) in summaries ("9 months")
    clock = "infusion"            # day 0 of assessment_days and landmark_day: "infusion" (first NK
                                  # infusion; default) or "lymphodepletion" (start of lymphodepletion:
                                  # every scenario assessed on the same days after Flu/Cy)
    batch_size = 8                # simulations per Dask task (and per Zarr chunk)

    [cohort]                      # the virtual cohort: patients x replicates x draws
    patients = 20                 # number of virtual patients (ids vp0000, ...) or a list of ids
    replicates = 2                # stochastic replicates per patient
    draws = 0                     # parameter draws; 0 = the model's own values only
    draws_from = "posterior"      # "posterior" (calibrated; default), "posterior:FILE.nc", "prior" or a CSV path
    disease = "active"            # or "remission" (nksim.protocol.DISEASE_STATES: blasts regrow from remission)
    baseline_blast_pct = 2.0      # percent; fixes every patient's marrow blasts (default: the population draw;
                                  # required in remission, below the CR threshold of 5 %)

    [baseline]                    # schedule of every scenario unless a factor changes it
    regimen = "trial"
    nk_product = "expanded"       # or "fresh" (see nksim.protocol.NK_PRODUCTS)
    cytokine = "none"             # or "il2", "rhil15_iv", "rhil15_sc", "n803" (nksim.sweep.factors.CYTOKINES)
    interval = 7
    dose_split = [50, 50]
    total_dose = 1.5e7

    [parameters]                  # model parameters fixed for the whole sweep
    "lattice.side" = 40

    [factors]                     # factorial: a list of levels per factor;
    interval = [0, 7, 14]         # lhs/sobol: {min = .., max = .., scale = "linear"|"log"}

    [sampling]                    # lhs/sobol only
    n = 64                        # sobol: a power of 2
    scramble = true

    [[scenarios]]                 # explicit scenarios ("list" design; appended to any design)
    n_infusions = 3

Factors are the schedule factors of :mod:`nksim.sweep.factors` or model parameter keys.
Every value is checked here, before any simulation; errors are
:class:`~nksim.errors.NksimInputError` naming the file, the key and the allowed range.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import check_number, check_seed
from ..errors import NksimInputError
from ..fileio import check_depth, read_toml
from ..parameters import resolve_model_path
from .factors import SCHEDULE_FACTORS, SPLIT_FACTORS, check_factor_value, is_parameter, numeric_range, unknown_factor

DESIGNS = ("factorial", "list", "lhs", "sobol")
_TOP = {"sweep", "cohort", "baseline", "parameters", "factors", "sampling", "scenarios"}
_SWEEP_KEYS = {"name", "description", "model", "seed", "design", "end_day", "assessment_days", "landmark_day",
               "batch_size", "clock"}
#: Clocks of ``sweep.clock``: what day 0 of ``assessment_days`` and ``landmark_day`` is.
CLOCKS = ("infusion", "lymphodepletion")
_COHORT_KEYS = {"patients", "replicates", "draws", "draws_from", "disease", "baseline_blast_pct"}
#: Marrow blasts (percent) below which a cohort counts as in remission (morphological CR, ELN: < 5 %).
REMISSION_MAX_BLAST_PCT = 5.0
_SAMPLING_KEYS = {"n", "scramble"}
_RANGE_KEYS = {"min", "max", "scale"}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_PATIENT = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
#: Largest cohort dimensions accepted (guards against typos like patients = 1e6).
MAX_PATIENTS, MAX_REPLICATES, MAX_DRAWS, MAX_SCENARIOS = 100_000, 10_000, 10_000, 1_000_000


@dataclass(frozen=True)
class Cohort:
    """Virtual cohort: patient ids, replicates per patient, parameter draws."""

    patients: tuple[str, ...]
    replicates: int
    draws: int
    draws_from: str  # "posterior", "posterior:<resolved path>", "prior" or a CSV path (resolved)
    #: the patients' population (:func:`spec_population`): ``{}`` (active disease, blasts drawn) or
    #: ``disease`` / ``baseline_blast_pct``
    population: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep specification (values as in the file, normalised)."""

    source: str
    raw: Mapping[str, Any] = field(repr=False)
    name: str
    description: str
    model_path: Path
    seed: int
    design: str
    end_day: float
    assessment_days: tuple[float, ...]
    landmark_day: float
    batch_size: int
    cohort: Cohort
    baseline: Mapping[str, Any]
    parameters: Mapping[str, float]
    factors: Mapping[str, Any]  # factorial: tuple of levels; lhs/sobol: (lo, hi, scale)
    sampling_n: int
    scramble: bool
    scenarios: tuple[Mapping[str, Any], ...]
    clock: str = "infusion"  # one of CLOCKS


def _err(msg: str, src: str, key: str) -> NksimInputError:
    return NksimInputError(msg, source=src, key=key)


def spec_population(co: Mapping[str, Any], src: str, table: str = "cohort") -> dict[str, Any]:
    """The population of a spec table (``table``: its dotted name for errors), checked.

    ``{}`` for the default (active disease, blasts drawn), else ``disease`` (when not ``"active"``) and/or
    ``baseline_blast_pct`` (:func:`nksim.protocol.population_patient` reads it).
    """
    from ..protocol import DISEASE_STATES

    disease = co.get("disease", "active")
    if not isinstance(disease, str) or disease not in DISEASE_STATES:
        raise _err(f"disease {disease!r} must be one of {list(DISEASE_STATES)}", src, f"{table}.disease")
    pct = co.get("baseline_blast_pct")
    if pct is not None:
        hi = REMISSION_MAX_BLAST_PCT if disease == "remission" else 100.0
        pct = check_number(pct, source=src, key=f"{table}.baseline_blast_pct", lo=0.0, hi=hi, unit="percent")
        if disease == "remission" and pct >= REMISSION_MAX_BLAST_PCT:
            raise _err(f"a cohort in remission has marrow blasts below {REMISSION_MAX_BLAST_PCT:g} percent, got "
                       f"{pct:g}", src, f"{table}.baseline_blast_pct")
    elif disease == "remission":
        raise _err(f"a cohort in remission needs its residual marrow blasts: baseline_blast_pct in [0, "
                   f"{REMISSION_MAX_BLAST_PCT:g}) percent (the population draw is that of active disease)",
                   src, f"{table}.baseline_blast_pct")
    return {**({"disease": disease} if disease != "active" else {}),
            **({"baseline_blast_pct": pct} if pct is not None else {})}


# --- checks shared by the spec readers (sweep, nksim.optimise.spec, nksim.twin.spec) ---------------------
def spec_table(data: Mapping[str, Any], name: str, src: str, key: str | None = None,
               allowed: set[str] | None = None, required: bool = False) -> dict[str, Any]:
    """Table ``name`` of ``data`` (``key``: its dotted path, default ``name``): a mapping with only ``allowed`` keys.

    A missing table is ``{}`` unless ``required``.
    """
    key = key or name
    if name not in data:
        if required:
            raise _err("missing table", src, key)
        return {}
    t = data[name]
    if not isinstance(t, Mapping):
        raise _err("must be a table", src, key)
    if allowed is not None:
        for k in t:
            if k not in allowed:
                raise _err(f"unknown key '{k}'; allowed: {sorted(allowed)}", src, f"{key}.{k}")
    return dict(t)


def spec_int(v: Any, src: str, key: str, lo: int, hi: int) -> int:
    """A whole number (TOML integer) in ``[lo, hi]`` (one range check: :func:`nksim.checks.check_number`)."""
    check_number(v, source=src, key=key, lo=lo, hi=hi, integer=True, types=(int,))
    return int(v)


def spec_day(v: Any, src: str, key: str, lo: float, hi: float) -> float:
    """A whole day in ``[lo, hi]``."""
    return check_number(v, source=src, key=key, lo=lo, hi=hi, unit="day", integer=True)


def spec_days(raw: Any, src: str, key: str, lo: float, hi: float) -> tuple[float, ...]:
    """A non-empty, strictly increasing list of whole days in ``[lo, hi]``."""
    if not isinstance(raw, list) or not raw:
        raise _err("must be a non-empty list of days", src, key)
    days = tuple(spec_day(d, src, f"{key}[{i}]", lo, hi) for i, d in enumerate(raw))
    if list(days) != sorted(set(days)):
        raise _err("days must be strictly increasing", src, key)
    return days


def spec_header(table: Mapping[str, Any], src: str, prefix: str, base_dir: Path) -> tuple[str, str, int, Path]:
    """``(name, description, seed, model file)`` of a spec's main table ``prefix`` (name and seed required)."""
    for k in ("name", "seed"):
        if k not in table:
            raise _err("missing key", src, f"{prefix}.{k}")
    name = table["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise _err(f"name {name!r} must be 1-64 letters, digits, '_', '.' or '-'", src, f"{prefix}.name")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise _err("must be a string", src, f"{prefix}.description")
    seed = check_seed(table["seed"], source=src, key=f"{prefix}.seed", limit=2**63)
    return name, description, seed, resolve_spec_model(table.get("model", "default"), base_dir, src, f"{prefix}.model")


def _table(data: Mapping[str, Any], name: str, allowed: set[str] | None, src: str,
           required: bool = False) -> dict[str, Any]:
    return spec_table(data, name, src, allowed=allowed, required=required)


_int = spec_int
_day = spec_day


def resolve_spec_model(model: Any, base_dir: Path, src: str, key: str) -> Path:
    """The model file a spec names: a name in ``models/`` or a TOML path relative to ``base_dir``."""
    if not isinstance(model, str) or not model.strip():
        raise _err("must be a model name or a TOML path", src, key)
    model_arg: str | Path = (base_dir / model) if model.endswith(".toml") else model
    try:
        return resolve_model_path(model_arg).resolve()
    except NksimInputError as exc:
        raise _err(f"cannot resolve model {model!r}: {exc}", src, key) from None


def resolve_draws_from(draws_from: Any, draws: int, base_dir: Path, src: str, key: str, draws_key: str) -> str:
    """Where parameter draws come from: ``"posterior"``, ``"posterior:<path>"``, ``"prior"`` or a CSV path.

    Files are resolved against ``base_dir`` and checked to exist; a file needs ``draws >= 1``.
    """
    if not isinstance(draws_from, str) or not draws_from.strip():
        raise _err("must be 'posterior', 'posterior:FILE.nc', 'prior' or a CSV file path", src, key)
    if draws_from.startswith("posterior:"):
        nc = (base_dir / draws_from.split(":", 1)[1]).resolve()
        if not nc.is_file():
            raise _err(f"posterior file '{nc}' does not exist", src, key)
        return f"posterior:{nc}"
    if draws_from in ("prior", "posterior"):
        return draws_from
    csv = (base_dir / draws_from).resolve()
    if csv.suffix.lower() != ".csv" or not csv.is_file():
        raise _err(f"'{draws_from}' is neither 'prior' nor an existing .csv file", src, key)
    if draws < 1:
        raise _err("draws_from a file needs draws >= 1 (how many rows to use)", src, draws_key)
    return str(csv)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], src: str, tables: Sequence[str] | None = None,
                    nested: Sequence[str] = (), example: str = "cohort.patients=4") -> dict[str, Any]:
    """Apply ``TABLE.KEY=VALUE`` overrides (CLI ``--set``) to a parsed spec.

    ``VALUE`` is read as a TOML value (``8``, ``[0, 7]``, ``"hi_cy_flu"``; a bare word is a
    string). The key after the table name may contain dots (``parameters.lattice.side=8``); in the
    ``nested`` tables the dots descend into sub-tables instead (``optimise.banks.search.draws=4``).
    ``tables``: the tables an override may name (default: a sweep spec's, less ``scenarios``).
    """
    allowed = sorted(tables if tables is not None else _TOP - {"scenarios"})
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise _err(f"override {item!r} must look like TABLE.KEY=VALUE (e.g. {example})", "--set", item)
        path, text = item.split("=", 1)
        table, key = path.strip().split(".", 1)
        if table not in allowed:
            raise _err(f"unknown table '{table}'; allowed: {allowed}", "--set", item)
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        except RecursionError:
            raise _err("the value is nested hundreds of levels deep", "--set", path.strip()) from None
        check_depth(value, "--set", path.strip())
        sect = out.setdefault(table, {})
        if not isinstance(sect, dict):
            raise _err("must be a table", src, table)
        parts = key.strip().split(".") if table in nested else [key.strip()]
        where = table
        for part in parts[:-1]:
            where = f"{where}.{part}"
            inner = sect.get(part, {})
            if not isinstance(inner, Mapping):
                raise _err("must be a table", src, where)
            sect[part] = sect = dict(inner)
        sect[parts[-1].strip('"')] = value
    return out


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and validate a sweep spec TOML file (``overrides``: ``TABLE.KEY=VALUE`` strings)."""
    p = Path(path)
    raw = read_toml(p, "sweep spec file")
    raw = apply_overrides(raw, overrides, str(p))
    return spec_from_dict(raw, str(p), base_dir=p.resolve().parent)


def _levels(name: str, values: Any, src: str, key: str) -> tuple[Any, ...]:
    if name not in SCHEDULE_FACTORS and not is_parameter(name):
        raise unknown_factor(name, src, key)
    if not isinstance(values, list):
        raise _err("factorial levels must be a non-empty list", src, key)
    if not values:
        raise _err("empty list of levels: the sweep would be empty", src, key)
    out = tuple(check_factor_value(name, v, src, f"{key}[{i}]") for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise _err(f"duplicate levels in {values!r}", src, key)
    return out


def _range(name: str, value: Any, src: str, key: str) -> tuple[float, float, str]:
    if name in ("regimen", "nk_product", "cytokine", "dose_split"):
        raise _err(f"'{name}' is categorical and cannot be sampled; sample first_dose_pct, or use a factorial "
                   "or list design", src, key)
    if not is_parameter(name) and name not in SCHEDULE_FACTORS:
        raise unknown_factor(name, src, key)
    if not isinstance(value, Mapping):
        raise _err("lhs/sobol factors need a range table {min = .., max = .., scale = 'linear'|'log'}", src, key)
    for k in value:
        if k not in _RANGE_KEYS:
            raise _err(f"unknown key '{k}'; allowed: {sorted(_RANGE_KEYS)}", src, f"{key}.{k}")
    for k in ("min", "max"):
        if k not in value:
            raise _err(f"missing '{k}'", src, key)
    lo = float(check_factor_value(name, value["min"], src, f"{key}.min"))
    hi = float(check_factor_value(name, value["max"], src, f"{key}.max"))
    if not lo < hi:
        raise _err(f"min {lo:g} must be below max {hi:g}", src, key)
    scale = value.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise _err(f"scale {scale!r} must be 'linear' or 'log'", src, f"{key}.scale")
    if scale == "log" and lo <= 0:
        raise _err("scale 'log' needs min > 0", src, f"{key}.min")
    if numeric_range(name)[2] and scale == "log":
        raise _err("whole-number factors are sampled on a linear scale", src, f"{key}.scale")
    return lo, hi, scale


def _scenario_levels(table: Any, src: str, key: str) -> dict[str, Any]:
    if not isinstance(table, Mapping) or not table:
        raise _err("each [[scenarios]] entry must be a non-empty table of factor = value", src, key)
    out = {name: check_factor_value(name, v, src, f"{key}.{name}") for name, v in table.items()}
    given = [k for k in SPLIT_FACTORS if k in out]
    if len(given) > 1:
        raise _err(f"sets {given}: give the dose split one way only", src, key)
    return out


def spec_from_dict(raw: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> SweepSpec:
    """Validate a parsed sweep spec (see module docstring). Paths are relative to ``base_dir``."""
    src = source
    base_dir = base_dir or Path.cwd()
    for k in raw:
        if k not in _TOP:
            raise _err(f"unknown table '{k}'; allowed: {sorted(_TOP)}", src, k)
    sw = _table(raw, "sweep", _SWEEP_KEYS, src, required=True)
    name, description, seed, model_path = spec_header(sw, src, "sweep", base_dir)
    design = sw.get("design", "factorial")
    if design not in DESIGNS:
        raise _err(f"design {design!r} is not one of {list(DESIGNS)}", src, "sweep.design")
    end_day = _day(sw.get("end_day", 365), src, "sweep.end_day", 1, 3650)
    days = spec_days(sw.get("assessment_days", [28, 90, 180, 270, 365]), src, "sweep.assessment_days", 1, end_day)
    landmark = _day(sw.get("landmark_day", min(270.0, end_day)), src, "sweep.landmark_day", 1, end_day)
    batch_size = _int(sw.get("batch_size", 8), src, "sweep.batch_size", 1, 100_000)
    clock = sw.get("clock", "infusion")
    if clock not in CLOCKS:
        raise _err(f"clock {clock!r} must be one of {list(CLOCKS)} (day 0 of assessment_days and landmark_day: "
                   "the first NK infusion, or the start of lymphodepletion)", src, "sweep.clock")

    co = _table(raw, "cohort", _COHORT_KEYS, src, required=True)
    if "patients" not in co:
        raise _err("missing key", src, "cohort.patients")
    pts = co["patients"]
    if isinstance(pts, list):
        if not pts:
            raise _err("empty patient list: the sweep would be empty", src, "cohort.patients")
        for i, pid in enumerate(pts):
            if not isinstance(pid, str) or not _PATIENT.match(pid):
                raise _err(f"patient id {pid!r} must be 1-32 letters, digits, '_', '.' or '-'", src,
                           f"cohort.patients[{i}]")
        first: dict[str, int] = {}
        for i, pid in enumerate(pts):
            if pid in first:
                raise _err(f"patient id '{pid}' is listed twice (also cohort.patients[{first[pid]}]); list each "
                           "patient once (more runs of a patient: cohort.replicates)", src, f"cohort.patients[{i}]")
            first[pid] = i
        patients = tuple(pts)
    else:
        n = _int(pts, src, "cohort.patients", 1, MAX_PATIENTS)
        patients = tuple(f"vp{i:04d}" for i in range(n))
    replicates = _int(co.get("replicates", 1), src, "cohort.replicates", 1, MAX_REPLICATES)
    draws = _int(co.get("draws", 0), src, "cohort.draws", 0, MAX_DRAWS)
    draws_from = resolve_draws_from(co.get("draws_from", "posterior"), draws, base_dir, src, "cohort.draws_from",
                                    "cohort.draws")
    population = spec_population(co, src)

    bl = _table(raw, "baseline", None, src)
    baseline: dict[str, Any] = {}
    for k, v in bl.items():
        if is_parameter(k):
            raise _err("model parameters go in [parameters], not [baseline]", src, f"baseline.{k}")
        baseline[k] = check_factor_value(k, v, src, f"baseline.{k}")
    if sum(k in baseline for k in SPLIT_FACTORS) > 1:
        raise _err(f"give the dose split one way only (one of {list(SPLIT_FACTORS)})", src, "baseline")

    pa = _table(raw, "parameters", None, src)
    parameters: dict[str, float] = {}
    for k, v in pa.items():
        if not is_parameter(k):
            raise unknown_factor(k, src, f"parameters.{k}")
        parameters[k] = float(check_factor_value(k, v, src, f"parameters.{k}"))

    fa = _table(raw, "factors", None, src)
    sa = _table(raw, "sampling", _SAMPLING_KEYS, src)
    sc = raw.get("scenarios", [])
    if not isinstance(sc, list):
        raise _err("must be an array of tables ([[scenarios]])", src, "scenarios")
    scenarios = tuple(_scenario_levels(t, src, f"scenarios[{i}]") for i, t in enumerate(sc))
    factors: dict[str, Any] = {}
    n_samples = 0
    scramble = True
    if design == "factorial":
        if sa:
            raise _err("[sampling] is only for lhs/sobol designs", src, "sampling")
        for k, v in fa.items():
            factors[k] = _levels(k, v, src, f"factors.{k}")
        if sum(k in factors for k in SPLIT_FACTORS) > 1:
            raise _err(f"a factorial may sweep only one of {list(SPLIT_FACTORS)}; put other split variants in "
                       "[[scenarios]]", src, "factors")
        if not factors and not scenarios:
            raise _err("empty sweep: no [factors] and no [[scenarios]]", src, "factors")
    elif design == "list":
        if fa or sa:
            raise _err("the list design takes only [[scenarios]]", src, "factors" if fa else "sampling")
        if not scenarios:
            raise _err("empty sweep: the list design needs at least one [[scenarios]] entry", src, "scenarios")
    else:
        if not fa:
            raise _err(f"empty sweep: design '{design}' needs [factors] with ranges", src, "factors")
        for k, v in fa.items():
            factors[k] = _range(k, v, src, f"factors.{k}")
        if sum(k in factors for k in SPLIT_FACTORS) > 1:
            raise _err(f"sample only one of {list(SPLIT_FACTORS)}", src, "factors")
        if "n" not in sa:
            raise _err("missing key", src, "sampling.n")
        n_samples = _int(sa["n"], src, "sampling.n", 1, MAX_SCENARIOS)
        if design == "sobol" and n_samples & (n_samples - 1):
            raise _err(f"sobol needs a power of 2 samples (balance properties), got {n_samples}", src, "sampling.n")
        scramble = sa.get("scramble", True)
        if not isinstance(scramble, bool):
            raise _err("must be true or false", src, "sampling.scramble")
    for k in factors:
        if k in parameters:
            raise _err(f"'{k}' is both fixed in [parameters] and swept in [factors]", src, f"factors.{k}")
    return SweepSpec(
        source=src, raw=raw, name=name, description=description, model_path=model_path, seed=seed, design=design,
        end_day=end_day, assessment_days=days, landmark_day=landmark, batch_size=batch_size,
        cohort=Cohort(patients, replicates, draws, draws_from, population), baseline=baseline,
        parameters=parameters, factors=factors, sampling_n=n_samples, scramble=scramble, scenarios=scenarios,
        clock=clock)
