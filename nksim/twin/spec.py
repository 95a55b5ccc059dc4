"""``nksim twin`` specs: one patient's observations, the schedule given so far, the decision to make.

A twin spec (``experiments/twin/example.toml`` is a commented example)::

    [twin]
    name = "example"
    model = "default"               # model name or TOML path (relative to this file)
    draws_from = "posterior"        # "posterior", "posterior:FILE.nc", "prior" or a CSV of draws
    seed = 1
    disease = "active"              # or "remission" with baseline_blast_pct (percent, below 5): a patient
                                    # treated in remission (as a sweep's [cohort])
    patient = "example_patient.csv" # the patient's series (calibration/data/SCHEMA.md section 3)
    patient_id = "twin01"           # the rows of that patient
    decision_day = 7                # day since the first infusion: what is measured up to it is known
    horizon = 279                   # days since the start of lymphodepletion (objective, as nksim optimise)
    landmark_day = 279
    assessment_days = [37, 99]      # since the start of lymphodepletion; progression is called from the first
    resample = 200                  # virtual patients kept after conditioning
    delta = 7                       # day: candidates within delta of the best are "as good"
    alpha = 0.05

    [twin.given]                    # the schedule given so far: lymphodepletion and the first infusion
    regimen = "trial"; nk_product = "expanded"; cytokine = "none"; gap = 7; dose = 5e6   # kg-1

    [twin.decision]                 # candidates for the next infusion (every combination)
    days = [7, 10, 14, 21]          # day of the second infusion (>= decision_day)
    doses = [5e6, 1e7]              # kg-1
    donors = ["same", "new"]        # optional; default ["same"]

    [twin.assay]                    # nksim.twin.likelihood.AssayModel
    log_sd = 0.3; floor = 1e-4; marrow_cells = 200

    [twin.bank]                     # the population predictive: draws x virtual patients per draw
    draws = 50; patients = 20
    max_draws = 200                 # while the effective sample size is below 20, double the draws up to this
                                    # (default: draws, no growth)

    [twin.smc]                      # patient-level ABC-SMC (nksim.twin.smc), the fallback for a patient the
    mode = "auto"                   # bank cannot reach: "auto" (when the effective sample size stays below 20),
                                    # "always" or "never"
    particles = 200                 # default: resample
    ess_fraction = 0.5; max_moves = 10; max_stages = 40; jump = 0.2

    [parameters]                    # model parameters fixed for every simulation

Every value is checked before any simulation; errors name the file, the key and the range.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import check_number
from ..errors import NksimInputError
from ..fileio import read_toml
from ..optimise.candidate import Candidate
from ..sweep.factors import is_parameter, unknown_factor
from ..sweep.spec import apply_overrides, resolve_draws_from, spec_days, spec_header, spec_population, spec_table
from .likelihood import AssayModel
from .smc import SmcSettings

_TOP = ("twin", "parameters")
_KEYS = {"name", "description", "model", "draws_from", "seed", "patient", "patient_id", "decision_day", "horizon",
         "landmark_day", "assessment_days", "resample", "delta", "alpha", "given", "decision", "assay", "bank",
         "smc", "disease", "baseline_blast_pct"}
_GIVEN = {"regimen", "nk_product", "cytokine", "gap", "dose"}
_DECISION = {"days", "doses", "donors"}
_ASSAY = {"log_sd", "floor", "marrow_cells"}
_BANK = {"draws", "patients", "max_draws"}
_SMC = {"mode", "particles", "ess_fraction", "max_moves", "max_stages", "jump"}
#: When the patient-level ABC-SMC runs: when the bank is thin for her (auto), always, never.
SMC_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class TwinSpec:
    """A validated twin spec (module docstring)."""

    source: str
    raw: Mapping[str, Any] = field(repr=False)
    name: str
    description: str
    model_path: Path
    draws_from: str
    seed: int
    patient_file: Path
    patient_id: str
    decision_day: float
    horizon: float
    landmark_day: float
    assessment_days: tuple[float, ...]
    resample: int
    delta: float
    alpha: float
    given: Candidate
    candidate_days: tuple[float, ...]
    candidate_doses: tuple[float, ...]
    candidate_donors: tuple[str, ...]
    assay: AssayModel
    bank_draws: int
    bank_patients: int
    bank_max_draws: int
    parameters: Mapping[str, float]
    smc_mode: str = "auto"
    smc: SmcSettings = field(default_factory=SmcSettings)
    #: her population: ``{}`` (active disease, every value drawn) or ``disease`` / ``baseline_blast_pct``
    #: (:func:`nksim.protocol.population_patient`): every virtual patient of the bank and the ABC-SMC has it
    population: Mapping[str, Any] = field(default_factory=dict)

    def candidate_labels(self) -> list[str]:
        """Readable labels of :meth:`candidates`, in their order."""
        out = ["no further infusion"]
        for day in self.candidate_days:
            for dose in self.candidate_doses:
                for donor in self.candidate_donors:
                    out.append(f"day {day:g}: {dose:.3g} kg-1, {donor} donor")
        return out

    def candidates(self) -> list[Candidate]:
        """The given schedule alone (no further infusion) and every (day, dose, donor) of the decision."""
        out = [self.given]
        d1 = self.given.total_dose
        for day in self.candidate_days:
            for dose in self.candidate_doses:
                for donor in self.candidate_donors:
                    total = d1 + dose
                    out.append(Candidate(**{**{f: getattr(self.given, f) for f in ("regimen", "nk_product",
                                                                                   "cytokine", "gap")},
                                            "cytokine_start": 0.0, "days": (0.0, float(day)),
                                            "shares": (100.0 * d1 / total, 100.0 * dose / total),
                                            "donors": ("donor1", "donor1" if donor == "same" else "donor2"),
                                            "total_dose": total}))
        return out


def _err(msg: str, src: str, key: str) -> NksimInputError:
    return NksimInputError(msg, source=src, key=key)




def _num(v: Any, src: str, key: str, lo: float, hi: float, unit: str = "", integer: bool = False) -> float:
    return check_number(v, source=src, key=key, lo=lo, hi=hi, unit=unit, integer=integer)


def _list(v: Any, src: str, key: str) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise _err("must be a non-empty list", src, key)
    return v


def spec_from_dict(raw: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> TwinSpec:
    """Validate a parsed twin spec (module docstring); paths are relative to ``base_dir``."""
    src = source
    base_dir = base_dir or Path.cwd()
    for k in raw:
        if k not in _TOP:
            raise _err(f"unknown table '{k}'; allowed: {list(_TOP)}", src, k)
    if "twin" not in raw:
        raise _err("missing table", src, "twin")
    tw = spec_table(raw, "twin", src, "twin", _KEYS)
    name, description, seed, model_path = spec_header(tw, src, "twin", base_dir)
    for k in ("patient", "patient_id", "decision_day", "horizon"):
        if k not in tw:
            raise _err("missing key", src, f"twin.{k}")
    if not isinstance(tw["patient"], str) or not tw["patient"].strip():
        raise _err("must be the path of the patient's series CSV", src, "twin.patient")
    patient_file = (base_dir / tw["patient"]).resolve()
    if not patient_file.is_file():
        raise _err(f"'{patient_file}' does not exist", src, "twin.patient")
    pid = tw["patient_id"]
    if not isinstance(pid, str) or not pid.strip():
        raise _err("must be the patient's id in the series file", src, "twin.patient_id")
    decision_day = _num(tw["decision_day"], src, "twin.decision_day", 1, 180, "day", integer=True)
    horizon = _num(tw["horizon"], src, "twin.horizon", 28, 3650, "day", integer=True)
    landmark = _num(tw.get("landmark_day", horizon), src, "twin.landmark_day", 1, horizon, "day", integer=True)
    days = spec_days(tw.get("assessment_days", [horizon]), src, "twin.assessment_days", 1, horizon)
    resample = int(_num(tw.get("resample", 200), src, "twin.resample", 10, 100_000, integer=True))
    population = spec_population(tw, src, "twin")
    delta = _num(tw.get("delta", 7), src, "twin.delta", 0, horizon, "day")
    alpha = check_number(tw.get("alpha", 0.05), source=src, key="twin.alpha", lo=0, hi=0.5, lo_open=True)

    gv = spec_table(tw, "given", src, "twin.given", _GIVEN)
    for k in ("regimen", "nk_product", "dose"):
        if k not in gv:
            raise _err("missing key", src, f"twin.given.{k}")
    given = Candidate.from_mapping({"regimen": gv["regimen"], "nk_product": gv["nk_product"],
                                    "cytokine": gv.get("cytokine", "none"), "cytokine_start": 0,
                                    "gap": gv.get("gap", 7), "days": [0], "shares": [100], "donors": ["donor1"],
                                    "total_dose": gv["dose"]}, src, "twin.given")
    dc = spec_table(tw, "decision", src, "twin.decision", _DECISION)
    if "days" not in dc or "doses" not in dc:
        raise _err("give days and doses of the candidate next infusions", src, "twin.decision")
    cdays = tuple(_num(d, src, f"twin.decision.days[{i}]", decision_day, 180, "day", integer=True)
                  for i, d in enumerate(_list(dc["days"], src, "twin.decision.days")))
    cdoses = tuple(_num(d, src, f"twin.decision.doses[{i}]", 1e3, 1e10, "kg-1")
                   for i, d in enumerate(_list(dc["doses"], src, "twin.decision.doses")))
    donors = _list(dc.get("donors", ["same"]), src, "twin.decision.donors")
    for i, d in enumerate(donors):
        if d not in ("same", "new"):
            raise _err(f"must be 'same' or 'new', got {d!r}", src, f"twin.decision.donors[{i}]")
    if len(set(cdays)) != len(cdays) or len(set(cdoses)) != len(cdoses) or len(set(donors)) != len(donors):
        raise _err("list each day, dose and donor once", src, "twin.decision")
    offset = given.lymphodepletion_offset()
    if max(cdays) + offset >= horizon:
        raise _err(f"the latest candidate infusion (day {max(cdays):g}, {max(cdays) + offset:g} after the start of "
                   f"lymphodepletion) is not before the horizon {horizon:g}", src, "twin.horizon")
    at = spec_table(tw, "assay", src, "twin.assay", _ASSAY)
    assay = AssayModel(log_sd=_num(at.get("log_sd", 0.3), src, "twin.assay.log_sd", 0.01, 3),
                       floor=_num(at.get("floor", 1e-4), src, "twin.assay.floor", 1e-9, 1),
                       marrow_cells=int(_num(at.get("marrow_cells", 200), src, "twin.assay.marrow_cells", 10, 1e6,
                                             integer=True)))
    bk = spec_table(tw, "bank", src, "twin.bank", _BANK)
    bank_draws = int(_num(bk.get("draws", 50), src, "twin.bank.draws", 1, 10_000, integer=True))
    bank_patients = int(_num(bk.get("patients", 20), src, "twin.bank.patients", 1, 100_000, integer=True))
    bank_max_draws = int(_num(bk.get("max_draws", bank_draws), src, "twin.bank.max_draws", bank_draws, 100_000,
                              integer=True))
    draws_from = resolve_draws_from(tw.get("draws_from", "posterior"), bank_draws, base_dir, src, "twin.draws_from",
                                    "twin.bank.draws")
    sm = spec_table(tw, "smc", src, "twin.smc", _SMC)
    smc_mode = sm.get("mode", "auto")
    if smc_mode not in SMC_MODES:
        raise _err(f"must be one of {list(SMC_MODES)}, got {smc_mode!r}", src, "twin.smc.mode")
    smc = SmcSettings(
        particles=int(_num(sm.get("particles", resample), src, "twin.smc.particles", 10, 100_000, integer=True)),
        ess_fraction=check_number(sm.get("ess_fraction", 0.5), source=src, key="twin.smc.ess_fraction", lo=0.05,
                                  hi=0.95),
        max_moves=int(_num(sm.get("max_moves", 10), src, "twin.smc.max_moves", 1, 1000, integer=True)),
        max_stages=int(_num(sm.get("max_stages", 40), src, "twin.smc.max_stages", 1, 1000, integer=True)),
        jump=check_number(sm.get("jump", 0.2), source=src, key="twin.smc.jump", lo=0, hi=1))
    pa = spec_table(raw, "parameters", src, "parameters")
    params: dict[str, float] = {}
    for k, v in pa.items():
        if not is_parameter(k):
            raise unknown_factor(k, src, f"parameters.{k}")
        params[k] = check_number(v, source=src, key=f"parameters.{k}")
    return TwinSpec(source=src, raw=raw, name=name, description=description, model_path=model_path,
                    draws_from=draws_from, seed=seed, patient_file=patient_file, patient_id=pid.strip(),
                    decision_day=decision_day, horizon=horizon, landmark_day=landmark, assessment_days=days,
                    resample=resample, delta=delta, alpha=alpha, given=given, candidate_days=cdays,
                    candidate_doses=cdoses, candidate_donors=tuple(donors), assay=assay, bank_draws=bank_draws,
                    bank_patients=bank_patients, bank_max_draws=bank_max_draws, parameters=params,
                    smc_mode=smc_mode, smc=smc, population=population)


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> TwinSpec:
    """Read and validate a twin spec TOML file (``overrides``: ``TABLE.KEY=VALUE`` strings)."""
    p = Path(path)
    raw = apply_overrides(read_toml(p, "twin spec file"), overrides, str(p), tables=_TOP, nested=("twin",),
                          example="twin.resample=100")
    return spec_from_dict(raw, str(p), base_dir=p.resolve().parent)
