"""The resolved sweep plan: everything that determines a sweep's numbers and store layout.

:func:`build_plan` turns a :class:`~nksim.sweep.spec.SweepSpec` into a :class:`Plan` made of
plain JSON values only (model parameter values, drawn parameters, every scenario's dated
events and parameter overrides, the cohort, the seed, the time axis and the batch layout), and
validates every scenario protocol before anything is simulated. The plan is

* what the Dask workers receive (no file access needed on a cluster);
* identified by :attr:`Plan.digest` (SHA-256 of its canonical JSON, the model parameters'
  descriptions and sources left out): a store is resumed only by a plan with the same digest, so
  editing a comment in the spec or a parameter's source text in the model file is harmless while
  changing a level, a model value, unit or prior, the seed or the batch size is refused.

Clock: with the spec's ``clock = "lymphodepletion"`` the plan records ``"clock"`` and each
scenario's ``"clock_offset"`` (days from its first lymphodepleting dose to its first infusion),
and each scenario protocol's ``assessment_days`` are the spec's days minus that offset; with the
default ``"infusion"`` none of this is recorded, so such plans (and their digests) are unchanged.

Batches: the (scenario, draw, patient, replicate) grid is cut into chunks of
``patients_per_batch x replicates_per_batch`` simulations of one scenario and one draw; one
chunk = one Dask task = one Zarr chunk of every result array. Batch ``b`` enumerates scenario,
then draw, then patient block, then replicate block.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._version import __version__
from ..parameters import Parameter, ParameterSet, load_parameters
from ..quantities import all_variables
from .design import design_levels
from .draws import parameter_draws
from .factors import is_parameter, split_label
from .scenario import (
    assessment_days_on_clock,
    build_protocol,
    effective_schedule,
    lymphodepletion_offset,
    regimen_events,
    scenario_label,
    schedule_protocol,
)
from .spec import SweepSpec

#: Version of the plan/store layout; bump when the meaning of stored arrays changes
#: (2: per-batch chunk checksums ``batch_checksum`` and the static-file checksums).
STORE_FORMAT = 2

#: Daily variables kept per simulation (declared with ``sweep=True`` in nksim.quantities).
TIME_SERIES: tuple[str, ...] = tuple(name for name, v in all_variables().items() if v.sweep)

#: Modules whose code determines the stored numbers (hashed into the code digest).
_RESULT_MODULES = ("engine/blood.py", "engine/build.py", "engine/kernel.py", "engine/layout.py", "engine/pcg64.py",
                   "engine/samplers.py", "simulate.py", "patients.py", "streams.py", "observables.py", "output.py",
                   "protocol.py", "parameters.py", "quantities.py", "sweep/scenario.py", "sweep/execute.py",
                   "sweep/plan.py")


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (16 hex digits) of nksim's version and of the modules that determine results.

    Computed once per process.
    """
    h = hashlib.sha256(__version__.encode())
    root = Path(__file__).resolve().parents[1]
    for rel in _RESULT_MODULES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:16]


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace, finite floats only)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Plan:
    """A resolved, JSON-serialisable sweep plan (see module docstring)."""

    content: dict[str, Any] = field(repr=False)

    @cached_property
    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON of the plan's numbers (:func:`digest_content`).

        The model parameters' descriptions and sources are left out: correcting a parameter's provenance in its
        model file does not change a number, so it does not stop a store from being resumed.
        """
        return hashlib.sha256(canonical_json(digest_content(self.content)).encode()).hexdigest()[:16]

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    # --- dimensions --------------------------------------------------------------------
    @property
    def n_scenarios(self) -> int:
        """Number of scenarios."""
        return len(self.content["scenarios"])

    @property
    def clock(self) -> str:
        """Day 0 of the plan's ``assessment_days``/``landmark_day``: ``"infusion"`` or ``"lymphodepletion"``."""
        return self.content.get("clock", "infusion")

    def clock_offset(self, scenario: int) -> float:
        """Days from scenario ``scenario``'s first lymphodepleting dose to its first infusion (0: none)."""
        return lymphodepletion_offset(self.content["scenarios"][scenario]["protocol"]["events"])

    @property
    def n_draws(self) -> int:
        """Number of parameter draws per scenario."""
        return len(self.content["draws"])

    @property
    def patients(self) -> list[str]:
        """Patient ids simulated in every scenario and draw."""
        return self.content["patients"]

    @property
    def replicates(self) -> int:
        """Replicates (virtual trials) per patient."""
        return self.content["replicates"]

    @property
    def population(self) -> dict[str, Any]:
        """The cohort's population: ``{}`` (active disease, blasts drawn) or ``disease`` / ``baseline_blast_pct``."""
        return dict(self.content.get("population", {}))

    def patient(self, pid: str):
        """The :class:`~nksim.protocol.Patient` simulated as ``pid`` (group ``all``, the cohort's population)."""
        from ..protocol import population_patient

        return population_patient(pid, self.population)

    @property
    def n_time(self) -> int:
        """Number of stored daily time points."""
        return self.content["n_time"]

    @property
    def time_start(self) -> float:
        """Day of the first stored time point (days from the first infusion)."""
        return self.content["time_start"]

    @property
    def n_simulations(self) -> int:
        """Total simulations: scenarios x draws x patients x replicates."""
        return self.n_scenarios * self.n_draws * len(self.patients) * self.replicates

    # --- batches -----------------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, int]:
        """(patients, replicates) per batch."""
        pb, rb = self.content["batch"]
        return int(pb), int(rb)

    @property
    def blocks(self) -> tuple[int, int]:
        """Number of patient blocks and replicate blocks."""
        pb, rb = self.batch_shape
        return math.ceil(len(self.patients) / pb), math.ceil(self.replicates / rb)

    @property
    def batches_per_scenario(self) -> int:
        """Batches per scenario: draws x patient blocks x replicate blocks."""
        npb, nrb = self.blocks
        return self.n_draws * npb * nrb

    @property
    def n_batches(self) -> int:
        """Total number of batches in the plan."""
        return self.n_scenarios * self.batches_per_scenario

    def batch(self, b: int) -> tuple[int, int, slice, slice]:
        """(scenario, draw, patient slice, replicate slice) of batch ``b``."""
        if not 0 <= b < self.n_batches:
            raise IndexError(f"batch {b} not in [0, {self.n_batches})")
        npb, nrb = self.blocks
        pb, rb = self.batch_shape
        b, ir = divmod(b, nrb)
        b, ip = divmod(b, npb)
        s, d = divmod(b, self.n_draws)
        return (s, d, slice(ip * pb, min((ip + 1) * pb, len(self.patients))),
                slice(ir * rb, min((ir + 1) * rb, self.replicates)))

    def batch_size(self, b: int) -> int:
        """Number of simulations (patients x replicates) in batch ``b``."""
        _, _, ps, rs = self.batch(b)
        return (ps.stop - ps.start) * (rs.stop - rs.start)

    # --- reconstruction (workers) ------------------------------------------------------
    def base_parameters(self) -> ParameterSet:
        """The model parameter set the plan was built from (no file access)."""
        m = self.content["model"]
        params = {k: Parameter(k, v[0], v[1], v[2], v[3], tuple(v[4]) if v[4] is not None else None)
                  for k, v in m["parameters"].items()}
        return ParameterSet(name=m["name"], status=m["status"], origin=f"sweep '{self.content['name']}' model",
                            parameters=MappingProxyType(params))

    def parameters(self, scenario: int, draw: int, base: ParameterSet | None = None) -> ParameterSet:
        """Parameters of (scenario, draw): model values, then the draw, then fixed and swept values."""
        base = base or self.base_parameters()
        over = dict(self.content["draws"][draw])
        over.update(self.content["fixed_parameters"])
        over.update(self.content["scenarios"][scenario]["parameters"])
        return base.with_values(over, origin=f"scenario {scenario}, draw {draw}")

    def protocol(self, scenario: int):
        """The validated :class:`~nksim.protocol.Protocol` of a scenario (all plan patients)."""
        sc = self.content["scenarios"][scenario]
        return build_protocol(sc["protocol"], self.patients, f"sweep '{self.content['name']}' scenario {scenario}")

    def to_json(self) -> str:
        """The plan as canonical JSON (sorted keys, no whitespace)."""
        return canonical_json(self.content)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan stored as JSON by :meth:`to_json`."""
        return cls(json.loads(text))


def population_text(population: dict[str, Any]) -> str:
    """A plan's cohort population (:attr:`Plan.population`) in words, for store and summary attributes."""
    disease = population.get("disease", "active")
    blasts = population.get("baseline_blast_pct")
    where = "marrow blasts drawn from the population" if blasts is None else f"marrow blasts {blasts:g} percent"
    return f"{'in remission' if disease == 'remission' else 'active disease'}, {where}"


def _batch_layout(n_patients: int, replicates: int, batch_size: int) -> list[int]:
    if replicates >= batch_size:
        return [1, batch_size]
    return [max(1, min(n_patients, batch_size // replicates)), replicates]


#: Positions, in a plan's ``model.parameters`` entries ``[value, unit, description, source, prior]``, of the
#: provenance text that :attr:`Plan.digest` leaves out.
_PROVENANCE_FIELDS = (2, 3)


def digest_content(content: dict[str, Any]) -> dict[str, Any]:
    """A plan's content without the model parameters' descriptions and sources (what :attr:`Plan.digest` hashes).

    Everything that determines a number stays: values, units, priors (draws from the prior use them), the model's
    name and status, and the rest of the plan.
    """
    model = content.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("parameters"), dict):
        return content
    params = {k: [x for i, x in enumerate(v) if i not in _PROVENANCE_FIELDS] for k, v in model["parameters"].items()}
    return {**content, "model": {**model, "parameters": params}}


def model_numbers(params: ParameterSet) -> dict[str, Any]:
    """:func:`model_entry` without the parameters' descriptions and sources: what fixes a model's numbers."""
    return digest_content({"model": model_entry(params)})["model"]


def model_entry(params: ParameterSet) -> dict[str, Any]:
    """A ParameterSet as plain JSON-able data (rebuilt by :meth:`Plan.base_parameters`)."""
    return {"name": params.name, "status": params.status,
            "parameters": {k: [p.value, p.unit, p.description, p.source, list(p.prior) if p.prior else None]
                           for k, p in params.parameters.items()}}


def _draws_source(spec: SweepSpec) -> str | dict[str, str]:
    """What the draws came from, as recorded in the plan (a posterior with its file digest)."""
    from .draws import file_digest, posterior_file

    src = spec.cohort.draws_from
    if spec.cohort.draws == 0:
        return "model"
    if src == "prior":
        return "prior"
    if src == "posterior" or src.startswith("posterior:"):
        path = posterior_file(src)
        return {"posterior": path.name, "sha256": file_digest(path)}
    return Path(src).name


def build_plan(spec: SweepSpec) -> Plan:
    """Resolve and validate a spec into a :class:`Plan` (raises NksimInputError on bad input)."""
    base = load_parameters(spec.model_path)
    src = spec.source
    base.with_values(spec.parameters, origin=f"{src} [parameters]", warn_prior=True)  # validates fixed values
    draws = parameter_draws(base, spec.cohort.draws, spec.cohort.draws_from, spec.seed, src)
    levels, swept = design_levels(spec)
    scenarios = []
    starts = []
    for i, lv in enumerate(levels):
        key = f"scenario {i}"
        sched = effective_schedule(spec.baseline, lv, src, key)
        label = scenario_label(lv, swept)
        pdict = schedule_protocol(sched, name=f"{spec.name}-{i}", title=label, end_day=spec.end_day,
                                  assessment_days=spec.assessment_days, ld_events=regimen_events(sched["regimen"]))
        offset = lymphodepletion_offset(pdict["events"])
        if spec.clock != "infusion":  # the spec's days count from the start of lymphodepletion
            pdict["protocol"]["assessment_days"] = assessment_days_on_clock(
                spec.assessment_days, offset, f"{src} [{key}: {label}]", "sweep.assessment_days")
        proto = build_protocol(pdict, spec.cohort.patients[:1], f"{src} [{key}: {label}]")  # validates the schedule
        pars = {k: float(v) for k, v in lv.items() if is_parameter(k)}
        base.with_values({**spec.parameters, **pars}, origin=f"{src} [{key}: {label}]")
        starts.append(proto.start_day)
        scenarios.append({
            "label": label,
            "schedule": {**sched, "dose_split": list(sched["dose_split"]),
                         "dose_split_label": split_label(sched["dose_split"])},
            "parameters": pars,
            "protocol": pdict,
            **({"clock_offset": offset} if spec.clock != "infusion" else {}),
        })
    for k, v in sorted({(k, v) for sc in scenarios for k, v in sc["parameters"].items()}):
        base.with_values({k: v}, origin=f"{src} [factors]", warn_prior=True)  # each swept value warned once
    t0 = min(starts)
    content = {
        "format": STORE_FORMAT,
        "name": spec.name,
        "seed": spec.seed,
        "end_day": spec.end_day,
        "assessment_days": list(spec.assessment_days),
        "landmark_day": spec.landmark_day,
        "time_start": t0,
        "n_time": int(spec.end_day - t0) + 1,
        "model": model_entry(base),
        "fixed_parameters": dict(spec.parameters),
        "draws_from": _draws_source(spec),
        "draws": draws,
        "swept": swept,
        "scenarios": scenarios,
        "patients": list(spec.cohort.patients),
        "replicates": spec.cohort.replicates,
        "batch": _batch_layout(len(spec.cohort.patients), spec.cohort.replicates, spec.batch_size),
        "time_series": list(TIME_SERIES),
    }
    if spec.clock != "infusion":  # recorded only when used: default plans keep their digest
        content["clock"] = spec.clock
    if spec.cohort.population:  # likewise: a cohort of active disease with drawn blasts records nothing
        content["population"] = dict(spec.cohort.population)
    return Plan(content)
