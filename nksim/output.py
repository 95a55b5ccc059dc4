"""xarray outputs: building the CF-annotated Dataset (writing/reading it: :mod:`nksim.io.netcdf`).

Schema (see docs/architecture.md): dims ``patient``, ``replicate``, ``time`` (whole days
since the first NK infusion), ``assessment`` (assessment day), ``snapshot_time``, ``y``,
``x`` (voxel centres in um) and ``counter``. Every variable has ``units`` (UDUNITS-2) and
``long_name``; the Dataset has ``Conventions = "CF-1.8"`` and provenance attributes.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from . import quantities as Q
from ._version import __version__
from .engine import RawRun, resolution
from .engine import layout as L
from .observables import RESPONSE_CODES, classify_response, pd_threshold, response_thresholds, time_to_progression
from .parameters import ParameterSet
from .patients import EFFECT_META
from .protocol import Protocol

#: Daily record variables: name -> (record index, units, long_name), from :data:`nksim.quantities.RECORD`.
TIME_VARIABLES: dict[str, tuple[int, str, str]] = {
    v.name: (getattr(L.R, v.name), v.units, v.long_name) for v in Q.RECORD}

#: Region event counter labels, in layout order (:data:`nksim.quantities.COUNTERS`).
COUNTERS: tuple[str, ...] = L.C._fields

RESPONSE_ATTRS = {
    "units": "1",
    "long_name": "response at assessment (ELN-style, from marrow blasts vs baseline)",
    "flag_values": np.array(list(RESPONSE_CODES.values()), dtype=np.int8),
    "flag_meanings": " ".join(RESPONSE_CODES),
}


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The git commit of the nksim source tree, or ``"unknown"`` (looked up once per process).

    Only a checkout of nksim itself counts: the package folder's parent must be the top level
    of the git work tree that holds it. An installed wheel (site-packages), even inside some
    other project's repository or virtual environment, reports ``"unknown"`` rather than that
    repository's commit.
    """
    return _source_commit(Path(__file__).resolve().parent)


def _source_commit(package_dir: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package_dir, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return "unknown"
    top, commit = lines
    try:
        ours = Path(top).resolve() == package_dir.parent.resolve()
    except OSError:
        return "unknown"
    return commit if ours else "unknown"


def build_dataset(runs: Sequence[RawRun], params: ParameterSet, protocol: Protocol, patient_ids: Sequence[str],
                  replicates: int, seed: int, replicate_ids: Sequence[int] | None = None) -> xr.Dataset:
    """Assemble kernel outputs of a (patient x replicate) grid into the output Dataset.

    ``runs`` must fill the grid exactly: one run for every (patient, replicate) of
    ``patient_ids`` x ``replicate_ids`` (default ``range(replicates)``), each id listed once.
    Anything else (a duplicate id, a missing, repeated or foreign run) is a ``ValueError``:
    a slot that no run filled is never returned.
    """
    reps = list(replicate_ids) if replicate_ids is not None else list(range(replicates))
    n_p, n_r = len(patient_ids), len(reps)
    _check_grid(runs, patient_ids, reps)
    first = runs[0]
    n_t = first.rec.shape[0]
    time = protocol.start_day + np.arange(n_t, dtype=float)
    rec = np.empty((n_p, n_r, n_t, L.N_R))
    cnt = np.empty((n_p, n_r, n_t, L.N_C), dtype=np.int64)
    snaps = np.empty((n_p, n_r) + first.snaps.shape, dtype=np.int32)
    effects = {k: np.empty((n_p, n_r)) for k in EFFECT_META}
    index = {(p, r): (i, j) for i, p in enumerate(patient_ids) for j, r in enumerate(reps)}
    filled = np.zeros((n_p, n_r), dtype=bool)
    for run in runs:
        i, j = index[(run.patient, run.replicate)]
        rec[i, j] = run.rec
        cnt[i, j] = run.cnt
        snaps[i, j] = run.snaps
        for k, v in run.effects.as_dict().items():
            effects[k][i, j] = v
        filled[i, j] = True
    if not filled.all():  # _check_grid makes this impossible; never return uninitialised memory
        raise AssertionError(f"{int((~filled).sum())} (patient, replicate) slots were not filled")

    dims3 = ("patient", "replicate", "time")
    data: dict[str, xr.Variable] = {}
    for name, (idx, units, long_name) in TIME_VARIABLES.items():
        data[name] = _variable(rec[..., idx], dims=dims3, attrs={"units": units, "long_name": long_name})
    for obs in Q.OBSERVABLES:
        v = obs.variable
        data[v.name] = _variable(Q.observe(v.name, rec), dims=dims3,
                                    attrs={"units": v.units, "long_name": v.long_name})

    th = response_thresholds(params)
    blast = rec[..., L.R.marrow_blast_pct]
    baseline = blast[..., 0]
    a_idx = np.array([int(d - protocol.start_day) for d in protocol.assessment_days], dtype=np.intp)
    resp = classify_response(blast[..., a_idx], baseline[..., None], th)
    data["response"] = _variable(resp, dims=("patient", "replicate", "assessment"), attrs=dict(RESPONSE_ATTRS))
    data["time_to_progression"] = _variable(
        time_to_progression(time, blast, baseline, th, from_day=protocol.assessment_days[0]),
        dims=("patient", "replicate"),
        attrs={"units": "day", "long_name": "first day, on or after the first response assessment, with marrow "
               "blasts at the PD threshold (NaN: no progression within follow-up, censored at end of simulation)",
               "comment": "blast percentages during post-chemotherapy aplasia (before the first assessment) are not "
               "used to call progression, as in clinical response assessment"})
    data["pd_threshold_pct"] = _variable(
        pd_threshold(baseline, th),
        dims=("patient", "replicate"),
        attrs={"units": "percent", "long_name": "marrow blast percentage defining progression for this patient"})
    for k, (units, long_name) in EFFECT_META.items():
        data[k] = _variable(effects[k], dims=("patient", "replicate"),
                               attrs={"units": units, "long_name": long_name})
    data["region_counts"] = _variable(
        cnt, dims=("patient", "replicate", "time", "counter"),
        attrs={"units": "1", "long_name": "cell counts and cumulative event counts in the simulated marrow region"})
    sdims = ("patient", "replicate", "snapshot_time", "y", "x")
    for layer, v in enumerate(Q.SNAPSHOT_LAYERS):
        data[v.name] = _variable(snaps[:, :, :, layer], dims=sdims,
                                    attrs={"units": v.units, "long_name": v.long_name})

    res = resolution(params)
    centres = (np.arange(res.side) + 0.5) * params["lattice.voxel_side"]
    group = [protocol.patient(p).group for p in patient_ids]
    evaluable = [int(protocol.patient(p).evaluable) for p in patient_ids]
    coords = {
        "patient": ("patient", np.array(patient_ids, dtype=object), {"long_name": "patient id"}),
        "replicate": ("replicate", np.array(reps, dtype=np.int64),
                      {"long_name": "replicate (independent virtual trial)", "units": "1"}),
        "time": ("time", time, {"units": "day", "long_name": "time since the first NK infusion"}),
        "assessment": ("assessment", np.array(protocol.assessment_days, dtype=float),
                       {"units": "day", "long_name": "response assessment day (since first NK infusion)"}),
        "snapshot_time": ("snapshot_time", np.array(protocol.snapshot_days, dtype=float),
                          {"units": "day", "long_name": "lattice snapshot day (since first NK infusion)"}),
        "y": ("y", centres, {"units": "um", "long_name": "voxel centre, lattice row"}),
        "x": ("x", centres, {"units": "um", "long_name": "voxel centre, lattice column"}),
        "counter": ("counter", np.array(COUNTERS, dtype=object), {"long_name": "region counter"}),
        "group": ("patient", np.array(group, dtype=object), {"long_name": "dose group"}),
        "evaluable": ("patient", np.array(evaluable, dtype=np.int8),
                      {"units": "1", "long_name": "patient evaluable in the trial",
                       "flag_values": np.array([0, 1], dtype=np.int8), "flag_meanings": "not_evaluable evaluable"}),
    }
    # each dimension's coordinate goes in just before the first variable that uses it: the variables' order of a
    # Dataset built from DataArrays (the order to_netcdf writes them in)
    index_coords = {k: xr.Variable(v[0], v[1], v[2]) for k, v in coords.items() if k == v[0]}
    ordered: dict[str, xr.Variable] = {}
    for name, var in data.items():
        for dim in var.dims:
            if dim not in ordered:
                ordered[dim] = index_coords[dim]
        ordered[name] = var
    ds = xr.Dataset(ordered, coords={k: xr.Variable(v[0], v[1], v[2]) for k, v in coords.items() if k not in ordered})
    ds.attrs.update(provenance_attrs(params, protocol, seed, replicates))
    return ds


def _variable(data, dims: tuple[str, ...], attrs: dict) -> xr.Variable:
    """A Dataset variable without coordinates of its own.

    :func:`build_dataset` passes its ~45 variables to ``xr.Dataset`` as ``xr.Variable``: the same
    Dataset as from ``xr.DataArray``, without aligning every array's (absent) coordinates (about
    4 ms of a cohort's Dataset).
    """
    return xr.Variable(dims, data, attrs)


def _check_grid(runs: Sequence[RawRun], patient_ids: Sequence[str], reps: Sequence[int]) -> None:
    """Refuse (ValueError) runs that do not fill the (patient x replicate) grid exactly once each."""
    for what, ids in (("patient", list(patient_ids)), ("replicate", list(reps))):
        if not ids:
            raise ValueError(f"no {what} ids: the grid of simulations is empty")
        dup = sorted(str(x) for x, n in Counter(ids).items() if n > 1)
        if dup:
            raise ValueError(f"{what} ids listed more than once: {dup} (each id is one row of the output)")
    want = {(p, r) for p in patient_ids for r in reps}
    got: set[tuple[str, int]] = set()
    for run in runs:
        slot = (run.patient, run.replicate)
        if slot not in want:
            raise ValueError(f"a run of patient '{run.patient}', replicate {run.replicate} is not in the grid")
        if slot in got:
            raise ValueError(f"two runs of patient '{run.patient}', replicate {run.replicate}")
        got.add(slot)
    if len(got) != len(want):
        missing = sorted(want - got)
        raise ValueError(f"{len(missing)} of {len(want)} (patient, replicate) simulations are missing, e.g. "
                         f"{missing[:3]}")


def tool_attrs() -> dict[str, object]:
    """Global attributes every nksim file carries: CF conventions, tool version, git commit, time."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {
        "Conventions": "CF-1.8",
        "institution": "nksim",
        "source": f"nksim {__version__} (numba spatial agent-based model)",
        "history": f"{now} created by nksim {__version__}",
        "references": "Ahmadvand et al., BMC Cancer 2023;23:1090, doi:10.1186/s12885-023-11610-x",
        "nksim_version": __version__,
        "git_commit": git_commit(),
    }


def provenance_attrs(params: ParameterSet, protocol: Protocol, seed: int, replicates: int) -> dict[str, object]:
    """Global attributes: CF conventions and everything needed to reproduce the run."""
    groups = {g: [[e.day, e.kind, e.dose, e.unit] for e in protocol.events + evs] for g, evs in protocol.groups.items()}
    status = params.status
    base = tool_attrs()
    return {
        "Conventions": base["Conventions"],
        "title": f"nksim simulation of protocol '{protocol.name}'",
        **{k: base[k] for k in ("institution", "source", "history", "references")},
        "comment": f"parameter set '{params.name}': {status}",
        "nksim_version": base["nksim_version"],
        "git_commit": base["git_commit"],
        "parameter_set": params.name,
        "parameter_status": status,
        "parameter_file": params.origin,
        "parameter_digest": params.digest(),
        "parameters": params.as_json(),
        "protocol": protocol.name,
        "protocol_file": protocol.origin,
        "protocol_events": json.dumps(groups),
        "seed": int(seed),
        "replicates": int(replicates),
    }
