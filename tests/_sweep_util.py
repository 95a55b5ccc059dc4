"""Helpers for the sweep tests: tiny specs (6x6 lattice, 120 days) built in memory."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "sweep": {"name": "tiny", "seed": 11, "end_day": 120, "assessment_days": [28, 90], "landmark_day": 90,
              "batch_size": 4},
    "cohort": {"patients": 3, "replicates": 2},
    "parameters": {"lattice.side": 6},
    "factors": {"interval": [7, 14], "dose_split": [[100, 0], [50, 50]]},
}


def tiny(**changes: Any) -> dict[str, Any]:
    """A copy of TINY with tables updated (``factors`` replaced): tiny(cohort={"patients": 5})."""
    d = copy.deepcopy(TINY)
    for table, values in changes.items():
        if values is None:
            d.pop(table, None)
        elif isinstance(values, dict) and isinstance(d.get(table), dict) and table != "factors":
            d[table].update(values)
        else:
            d[table] = values
    return d


def tiny_spec(**changes: Any):
    from nksim.sweep import spec_from_dict

    return spec_from_dict(tiny(**changes), "<tiny>")


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Minimal TOML writer for the test specs (tables of scalars/lists, arrays of tables)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + "}"
        return repr(v)

    lines = []
    for table, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{table}]]")
                lines += [f'"{k}" = {val(v)}' for k, v in item.items()]
        else:
            lines.append(f"[{table}]")
            lines += [f'"{k}" = {val(v)}' for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


#: A sweep large enough to be interrupted part-way (4 scenarios x 6 patients x 2 replicates in 24 batches).
INTERRUPTIBLE = {"cohort": {"patients": 6, "replicates": 2}, "sweep": {"batch_size": 2}}


def sweep_command(spec_file: Path, out: Path, workers: int) -> list[str]:
    """``nksim sweep`` of ``spec_file`` into ``out`` as a subprocess command (no progress bar)."""
    import sys

    return [sys.executable, "-c", "import sys; from nksim.cli import main; sys.exit(main(sys.argv[1:]))",
            "sweep", str(spec_file), "--out", str(out), "--workers", str(workers), "--no-progress"]


def batches_done(out: Path) -> int:
    """Batches flagged as done in the store ``out`` (0 while it does not exist yet or cannot be read)."""
    from nksim.sweep import SweepStore

    try:
        return int(SweepStore.open_existing(out).done().sum())
    except Exception:  # not created yet, or being created
        return 0


def wait_until(condition, proc, *, timeout: float = 600.0, what: str = "the awaited event") -> None:
    """Poll ``condition()`` until it holds: an observable event, never a fixed delay.

    Fails (AssertionError) if the subprocess ``proc`` ends first or ``timeout`` seconds pass (a
    generous bound for a loaded machine, not a timing assumption).
    """
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.02)


def signal_group(proc, sig) -> None:
    """Send ``sig`` to the process group of ``proc`` (started with ``start_new_session``), if it still exists."""
    import os

    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def constructed_store(path, spec, fill):
    """A store of ``spec``'s plan whose batches hold ``fill(plan, s, d, ps, rs) -> {name: array}``.

    Arrays not returned by ``fill`` are neutral: blasts 10 %, chimerism 0, response SD, no
    progression (NaN), PD threshold 20 %.
    """
    import numpy as np

    from nksim.observables import RESPONSE_CODES
    from nksim.sweep import build_plan
    from nksim.sweep.execute import SCALARS
    from nksim.sweep.plan import code_digest
    from nksim.sweep.store import SweepStore

    plan = build_plan(spec)
    store = SweepStore.create(path, plan, dict(spec.raw))
    try:
        for b in range(plan.n_batches):
            s, d, ps, rs = plan.batch(b)
            shape = (ps.stop - ps.start, rs.stop - rs.start)
            arrays = {name: np.zeros(shape + (plan.n_time,), np.float32) for name in plan["time_series"]}
            arrays["marrow_blast_pct"][:] = 10.0
            arrays["response"] = np.full(shape + (len(plan["assessment_days"]),), RESPONSE_CODES["SD"], np.int8)
            arrays.update({name: np.zeros(shape) for name in SCALARS})
            arrays["time_to_progression"] = np.full(shape, np.nan)
            arrays["pd_threshold_pct"] = np.full(shape, 20.0)
            for name, value in fill(plan, s, d, ps, rs).items():
                arrays[name] = np.broadcast_to(value, arrays[name].shape).astype(arrays[name].dtype)
            store.write_batch({"batch": b, "plan": plan.digest, "code": code_digest(), "arrays": arrays})
    finally:
        store.unlock()
    return path
