"""The sweep's Zarr (v3) store: create, validate, append batches, resume, read.

Layout (one Zarr array per variable, readable with ``xarray.open_zarr(path)``; Zarr v3
``dimension_names`` give the dims)::

    <store>/zarr.json                 group attributes: CF-1.8, nksim version, code and plan digests,
                                      the spec, the model parameters (JSON)
    scenario, draw, patient, replicate, time, assessment, batch     dimension coordinates
    label, regimen, gap, interval, dose_split, n_infusions, first_dose_pct, total_dose,
    start_day, events, <swept parameter keys>                        (scenario) coordinates
    draw_values (draw, draw_parameter)                               drawn parameter values
    donor_chimerism_nk ... il15     float32 (scenario, draw, patient, replicate, time)
    response                        int8    (scenario, draw, patient, replicate, assessment)
    time_to_progression, pd_threshold_pct, <patient effects>   float64 (scenario, draw, patient, replicate)
    batch_done                      uint8   (batch), 1 = batch written

``time`` is days since the first NK infusion, one axis for all scenarios (``time_start`` =
earliest first day of any scenario); a scenario that starts later has NaN before its start.

Safety rules:

* one batch = one chunk of every result array, so batches never share a chunk; each chunk
  file is written atomically (zarr's LocalStore writes a temporary file and renames it) and
  ``batch_done[b]`` is set only after all of batch ``b``'s chunks are written: killing the
  writer at any moment loses at most the batches not yet flagged, and re-running recomputes
  exactly those, giving the same bytes as an uninterrupted run;
* a new store is built in a temporary folder and renamed into place, so a half-created store
  never exists under the requested name;
* an existing store is resumed only if it was written by the same plan digest, store format,
  nksim version and result code; anything else (another spec, another version, a folder that is
  not an nksim sweep store, unreadable metadata) is refused before any simulation and left
  untouched.

The store holds no timestamps or paths, so the same plan gives bitwise-identical files
whatever the number of workers, the order of completion or interruptions.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .._version import __version__
from ..errors import NksimInputError, OutputExistsError
from ..io import zarr as zio
from ..observables import RESPONSE_CODES, RESPONSE_FILL
from ..patients import EFFECT_META
from ..quantities import all_variables
from .execute import SCALARS
from .plan import STORE_FORMAT, Plan, code_digest

zarr = require("zarr", "sweep", "nksim.sweep")
ZstdCodec = require("zarr.codecs", "sweep", "nksim.sweep").ZstdCodec

SIM_DIMS = ("scenario", "draw", "patient", "replicate")
_COMPRESSORS = (ZstdCodec(level=3),)
_CONFIG = {"write_empty_chunks": True}

_VARIABLES = all_variables()


def _var_meta(name: str) -> tuple[str, str]:
    if name in _VARIABLES:
        return _VARIABLES[name].units, _VARIABLES[name].long_name
    if name in EFFECT_META:
        return EFFECT_META[name]
    if name == "time_to_progression":
        return "day", ("first day, on or after the first assessment, with marrow blasts at the PD threshold "
                       "(NaN: censored at end_day)")
    if name == "pd_threshold_pct":
        return "percent", "marrow blast percentage defining progression for this patient"
    raise KeyError(name)


def _draws_text(source: str | dict) -> str:
    """The plan's draw source as text: a posterior is named with its file digest."""
    if isinstance(source, dict):
        return f"posterior {source['posterior']} (sha256 {source['sha256']})"
    return str(source)


class SweepStore:
    """An open nksim sweep store (use :meth:`open_for_run` or :meth:`open_existing`)."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group
        self.attrs = dict(group.attrs)
        self.plan = Plan.from_json(self.attrs["plan"])
        self._arrays: dict[str, Any] = {}

    # --- opening ------------------------------------------------------------------------
    @staticmethod
    def _read_group(path: Path, mode: str) -> zarr.Group:
        node = zio.open_group(path, mode, what="nksim sweep store")
        attrs = dict(node.attrs)
        if "nksim_sweep_format" not in attrs or "plan" not in attrs:
            raise NksimInputError("is a Zarr store but not an nksim sweep store (no 'nksim_sweep_format' attribute); "
                                  "refusing to touch it", source=path)
        if attrs["nksim_sweep_format"] != STORE_FORMAT:
            raise NksimInputError(f"sweep store format {attrs['nksim_sweep_format']!r} is not the format "
                                  f"{STORE_FORMAT} of nksim {__version__}", source=path)
        return node

    @classmethod
    def open_existing(cls, path: str | Path, *, writable: bool = False) -> SweepStore:
        """Open an existing sweep store (read-only by default) after checking it is one."""
        path = Path(path)
        if not path.exists():
            raise NksimInputError("no such sweep store", source=path)
        group = cls._read_group(path, "r+" if writable else "r")
        store = cls(path, group)
        missing = [n for n in store.result_names() + ["batch_done"] if n not in group]
        if missing:
            raise NksimInputError(f"sweep store is incomplete or corrupt: arrays {missing} are missing", source=path)
        return store

    @classmethod
    def open_for_run(cls, path: str | Path, plan: Plan, spec_raw: dict[str, Any] | None = None) -> SweepStore:
        """Create the store for ``plan``, or reopen it to resume if it was written by the same plan.

        Refuses (NksimInputError / OutputExistsError), without modifying anything, a path that
        holds anything else. ``spec_raw`` (the parsed spec file) is recorded in a new store.
        """
        path = Path(path)
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            store = cls.open_existing(path, writable=True)
            store.check_compatible(plan)
            return store
        return cls.create(path, plan, spec_raw)

    def check_compatible(self, plan: Plan) -> None:
        """Refuse to resume with another nksim version, other result code or another plan."""
        a = self.attrs
        if a.get("nksim_version") != __version__:
            raise OutputExistsError(
                f"this sweep store was written by nksim {a.get('nksim_version')}, this is nksim {__version__}; "
                "results of different versions are never mixed: use another --out (the store is left as it is)",
                source=self.path)
        if a.get("code_digest") != code_digest():
            raise OutputExistsError(
                f"this sweep store was written by different nksim result code (code digest {a.get('code_digest')}, "
                f"now {code_digest()}); results are never mixed: use another --out (the store is left as it is)",
                source=self.path)
        if a.get("plan_digest") != plan.digest:
            raise OutputExistsError(
                f"this sweep store belongs to another sweep (spec '{a.get('sweep_name')}', plan digest "
                f"{a.get('plan_digest')}); this spec ('{plan['name']}') resolves to plan digest {plan.digest}. "
                "Results of different specs are never mixed: use another --out (the store is left as it is)",
                source=self.path)

    @classmethod
    def create(cls, path: Path, plan: Plan, spec_raw: dict[str, Any] | None = None) -> SweepStore:
        """Create a new, empty store for ``plan`` (built aside, then renamed into place)."""
        path = zio.build_aside(path, lambda tmp: _initialise(tmp, plan, spec_raw))
        return cls(path, zio.open_group(path, "r+", what="nksim sweep store"))

    # --- contents -----------------------------------------------------------------------
    def result_names(self) -> list[str]:
        """Names of the result arrays: the stored time series, ``response`` and the per-simulation scalars."""
        return list(self.plan["time_series"]) + ["response", *SCALARS]

    def array(self, name: str):
        """The Zarr array ``name`` of the store (opened once, then cached)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def done(self) -> np.ndarray:
        """Boolean mask over batches: True where the batch is written."""
        return self.array("batch_done")[:].astype(bool)

    def pending(self) -> np.ndarray:
        """Indices of the batches still to run, in order."""
        return np.flatnonzero(~self.done())

    def scenarios_complete(self) -> np.ndarray:
        """Boolean mask over scenarios: True where every batch of the scenario is written."""
        return self.done().reshape(self.plan.n_scenarios, self.plan.batches_per_scenario).all(axis=1)

    def write_batch(self, result: dict[str, Any]) -> None:
        """Write a :func:`~nksim.sweep.execute.run_batch` result, then flag the batch as done."""
        if result["plan"] != self.plan.digest:
            raise RuntimeError(f"batch result for plan {result['plan']} cannot go into store of plan "
                               f"{self.plan.digest}")
        if result["code"] != self.attrs["code_digest"]:
            raise RuntimeError(
                f"a worker runs different nksim code (code digest {result['code']}, "
                f"store {self.attrs['code_digest']}); install the same nksim version on every worker")
        b = result["batch"]
        s, d, ps, rs = self.plan.batch(b)
        for name, data in result["arrays"].items():
            self.array(name)[s, d, ps, rs] = data
        self.array("batch_done")[b] = 1

    def read(self, name: str, scenario: int | slice = slice(None)) -> np.ndarray:
        """Raw values of a result array for one scenario (or a slice of scenarios)."""
        return self.array(name)[scenario]

    def coord(self, name: str) -> np.ndarray:
        """All values of the coordinate array ``name``."""
        return self.array(name)[:]


def _initialise(path: Path, plan: Plan, spec_raw: dict[str, Any] | None = None) -> None:
    """Write metadata and coordinates of an empty store at ``path``."""
    c = plan.content
    S, D, P, R, T = plan.n_scenarios, plan.n_draws, len(plan.patients), plan.replicates, plan.n_time
    A = len(c["assessment_days"])
    pb, rb = plan.batch_shape
    swept_params = [k for k in c["swept"] if "." in k]
    g = zio.create_group(path)
    scen_coords = ["label", "regimen", "gap", "interval", "dose_split", "n_infusions", "first_dose_pct",
                   "total_dose", "start_day", *swept_params]
    g.attrs.update({
        "Conventions": "CF-1.8",
        "title": f"nksim schedule sweep '{c['name']}'",
        "source": f"nksim {__version__} (numba spatial agent-based model)",
        "comment": (f"parameter set '{c['model']['name']}': {c['model']['status']}. time is days since the first NK "
                    "infusion on one axis for all scenarios; values before a scenario's first simulated day are NaN"),
        "nksim_sweep_format": STORE_FORMAT,
        "nksim_version": __version__,
        "code_digest": code_digest(),
        "plan_digest": plan.digest,
        "sweep_name": c["name"],
        "seed": c["seed"],
        "parameter_set": c["model"]["name"],
        "parameter_status": c["model"]["status"],
        "draws_from": _draws_text(c["draws_from"]),
        "landmark_day": c["landmark_day"],
        "spec": json.dumps(spec_raw if spec_raw is not None else {}, sort_keys=True, default=str),
        "plan": plan.to_json(),
    })

    def arr(name, shape, dtype, dims, chunks=None, fill=None, attrs=None, values=None):
        return zio.create_array(g, name, shape, dtype, dims, chunks=chunks, fill=fill, attrs=attrs, values=values,
                                compressors=_COMPRESSORS, config=_CONFIG)

    sched = [sc["schedule"] for sc in c["scenarios"]]
    arr("scenario", (S,), "int64", ("scenario",), values=np.arange(S), attrs={"long_name": "scenario index"})
    arr("draw", (D,), "int64", ("draw",), values=np.arange(D),
        attrs={"long_name": f"parameter draw ({_draws_text(c['draws_from'])})"})
    arr("patient", (P,), str, ("patient",), values=np.array(plan.patients), attrs={"long_name": "virtual patient id"})
    arr("replicate", (R,), "int64", ("replicate",), values=np.arange(R),
        attrs={"long_name": "replicate (independent stochastic history)", "units": "1"})
    arr("time", (T,), "float64", ("time",), values=plan.time_start + np.arange(T, dtype=float),
        attrs={"units": "day", "long_name": "time since the first NK infusion (common axis, NaN before a "
               "scenario's first simulated day)"})
    arr("assessment", (A,), "float64", ("assessment",), values=np.array(c["assessment_days"], dtype=float),
        attrs={"units": "day", "long_name": "response assessment day (since first NK infusion)"})
    arr("label", (S,), str, ("scenario",), values=np.array([sc["label"] for sc in c["scenarios"]]),
        attrs={"long_name": "scenario label (swept factor values)"})
    arr("regimen", (S,), str, ("scenario",), values=np.array([s["regimen"] for s in sched]),
        attrs={"long_name": "lymphodepleting regimen"})
    arr("dose_split", (S,), str, ("scenario",), values=np.array([s["dose_split_label"] for s in sched]),
        attrs={"units": "percent", "long_name": "share of the total dose per infusion"})
    for name, units, long_name in [
        ("gap", "day", "days from the last lymphodepleting dose to the first infusion"),
        ("interval", "day", "days between consecutive infusions"),
        ("first_dose_pct", "percent", "share of the total dose in the first infusion"),
        ("total_dose", "kg-1", "NK cells per kg body weight over all infusions"),
    ]:
        arr(name, (S,), "float64", ("scenario",), values=np.array([s[name] for s in sched], dtype=float),
            attrs={"units": units, "long_name": long_name})
    arr("n_infusions", (S,), "int64", ("scenario",), values=np.array([s["n_infusions"] for s in sched]),
        attrs={"units": "1", "long_name": "number of infusions given"})
    arr("start_day", (S,), "float64", ("scenario",),
        values=np.array([sc["protocol"]["protocol"]["start_day"] for sc in c["scenarios"]], dtype=float),
        attrs={"units": "day", "long_name": "first simulated day (first lymphodepleting dose)"})
    arr("events", (S,), str, ("scenario",),
        values=np.array([json.dumps([[e["day"], e["kind"], e["dose"], e["unit"]] for e in sc["protocol"]["events"]])
                         for sc in c["scenarios"]]),
        attrs={"long_name": "dated events of the scenario, JSON [day, kind, dose, unit]"})
    for k in swept_params:
        unit = c["model"]["parameters"][k][1]
        arr(k, (S,), "float64", ("scenario",), fill=np.nan,
            values=np.array([sc["parameters"].get(k, np.nan) for sc in c["scenarios"]], dtype=float),
            attrs={"units": unit, "long_name": f"swept model parameter {k} (NaN: model/draw value)"})
    draw_keys = sorted({k for d in c["draws"] for k in d})
    if draw_keys:
        arr("draw_parameter", (len(draw_keys),), str, ("draw_parameter",), values=np.array(draw_keys),
            attrs={"long_name": "drawn model parameter"})
        arr("draw_values", (D, len(draw_keys)), "float64", ("draw", "draw_parameter"), fill=np.nan,
            values=np.array([[d.get(k, np.nan) for k in draw_keys] for d in c["draws"]], dtype=float),
            attrs={"long_name": "parameter values of each draw (schema units)"})
    coords = " ".join(scen_coords)
    for name in plan["time_series"]:
        units, long_name = _var_meta(name)
        arr(name, (S, D, P, R, T), "float32", (*SIM_DIMS, "time"), chunks=(1, 1, pb, rb, T), fill=np.nan,
            attrs={"units": units, "long_name": long_name, "coordinates": coords})
    arr("response", (S, D, P, R, A), "int8", (*SIM_DIMS, "assessment"), chunks=(1, 1, pb, rb, A), fill=RESPONSE_FILL,
        attrs={"units": "1", "long_name": "response at assessment (from marrow blasts vs baseline)",
               "flag_values": list(RESPONSE_CODES.values()), "flag_meanings": " ".join(RESPONSE_CODES),
               "comment": "-1: not assessed / batch not run", "coordinates": coords})
    for name in SCALARS:
        units, long_name = _var_meta(name)
        arr(name, (S, D, P, R), "float64", SIM_DIMS, chunks=(1, 1, pb, rb), fill=np.nan,
            attrs={"units": units, "long_name": long_name, "coordinates": coords})
    arr("batch_done", (plan.n_batches,), "uint8", ("batch",), chunks=(1,), fill=0,
        attrs={"long_name": "1 when every result chunk of the batch is written", "units": "1"})

