"""Issue "Ten times the simulations per core-second": each goal as a ratio against 0.4.0, measured in one run.

Every measurement runs in a child process, once with this checkout's nksim and once with an older
source tree on ``PYTHONPATH`` (by default a ``git worktree`` of the 0.4.0 commit made here), taking
turns (old, new, old, new, ...) so that both see the same machine; the best of the repeats is kept::

    python benchmarks/bench_speedup.py                       # all rows, about 15 min on 2 cores
    python benchmarks/bench_speedup.py --only calsim particle --repeats 3
    python benchmarks/bench_speedup.py --old /path/to/nksim-0.4.0-tree

Rows (CPU is the process's CPU time, all threads; wall where the goal is wall time):

* ``calsim``: one simulation of the trial protocol at the calibration resolution (5 x 5 voxels of
  1.6 mm, 2-hour steps) through ``simulate_cohort`` (10 patients x 5 replicates, the Dataset
  included), CPU per simulation;
* ``particle``: one ABC particle of each calibration stage at the posterior medians
  (``CalibrationModel.simulate``: stage B ``ahmadvand2023``, 9 patients + three analogue
  protocols; stage A ``ahmadvand2023_kinetics``, 3 x 9 patients), CPU per particle;
* ``run``: the main job, ``nksim run`` as a new process (wall and CPU), beside the bare import of
  numpy, numba, xarray and matplotlib in a new process;
* ``sweep``: a sweep of ``--sweep-sims`` simulations at the schedule study's resolution (10 x 10
  voxels of 1.6 mm, 1-hour steps) on 2 local Dask workers, wall including start-up.

Writes ``outputs/benchmarks/bench_speedup.json`` and prints a table of ratios.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "benchmarks" / "bench_speedup.json"
#: The 0.4.0 release's last commit (session of 2026-11-30), the "before" of every ratio.
V040 = "85799d7"
CAL = {"lattice.side": 5, "lattice.voxel_side": 1600.0, "numerics.dt": 2.0}
STUDY = {"lattice.side": 10, "lattice.voxel_side": 1600.0}


# ----------------------------------------------------------------------------- child measurements
def child_calsim() -> dict:
    import nksim

    params = nksim.load_parameters("default").with_values(CAL)
    nksim.simulate_cohort(params, "ahmadvand2023", replicates=1, seed=9)  # load the kernel
    t0 = time.process_time()
    ds = nksim.simulate_cohort(params, "ahmadvand2023", replicates=5, seed=1)
    n = ds.sizes["patient"] * ds.sizes["replicate"]
    return {"cpu_ms_per_simulation": (time.process_time() - t0) / n * 1e3, "nksim_file": nksim.__file__}


def child_particle() -> dict:
    from nksim.calibration.config import load_config
    from nksim.calibration.model import CalibrationModel

    out = {}
    for name in ("ahmadvand2023", "ahmadvand2023_kinetics"):
        model = CalibrationModel(load_config(name))
        theta = {f.key: model.base[f.key] for f in model.config.fit}
        model.simulate(theta, seed=1)
        t0 = time.process_time()
        for s in range(4):
            model.simulate(theta, seed=100 + s)
        out[f"{name}_cpu_ms_per_particle"] = (time.process_time() - t0) / 4 * 1e3
    import nksim

    out["nksim_file"] = nksim.__file__
    return out


def child_sweep(n_sims: int) -> dict:
    from nksim.sweep import run_sweep, spec_from_dict

    patients, reps = 50, 2  # 100 scenarios (intervals 1-100 days) for 10^4 simulations
    n_scen = max(1, n_sims // (patients * reps))
    raw = {"sweep": {"name": f"speedup-{n_scen * patients * reps}", "seed": 1, "end_day": 365,
                     "assessment_days": [28, 90, 180, 270, 365], "landmark_day": 270, "batch_size": 50},
           "cohort": {"patients": patients, "replicates": reps}, "parameters": dict(STUDY),
           "factors": {"interval": list(range(1, n_scen + 1)), "dose_split": [[50, 50]]}}
    spec = spec_from_dict(raw, "<bench_speedup>")
    with tempfile.TemporaryDirectory() as td:
        t0 = time.perf_counter()
        run_sweep(spec, Path(td) / "s.zarr", workers=2)
        wall = time.perf_counter() - t0
    import nksim

    return {"simulations": n_scen * patients * reps, "wall_s": wall, "nksim_file": nksim.__file__}


CHILDREN = {"calsim": child_calsim, "particle": child_particle}


# ----------------------------------------------------------------------------- driver
def _env(tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    else:
        env.pop("PYTHONPATH", None)
    return env


def _child(what: str, tree: Path | None, arg: str = "") -> dict:
    call = f"child_sweep({arg})" if what == "sweep" else f"CHILDREN[{what!r}]()"
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_speedup as b; "
            f"print('RESULT', json.dumps(b.{call}))")
    # from another folder: ``python -c`` puts the working folder first on sys.path, which would shadow PYTHONPATH
    proc = subprocess.run([sys.executable, "-c", code], env=_env(tree), capture_output=True, text=True, timeout=3600,
                          cwd=tempfile.gettempdir())
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    where = json.loads(line[len("RESULT "):]).get("nksim_file", "") if line else ""
    expected = str(tree) if tree is not None else str(ROOT)
    if line and not where.startswith(expected):
        raise RuntimeError(f"{what}: the child imported nksim from {where}, not from {expected}")
    if line is None:
        raise RuntimeError(f"{what} ({tree or 'this checkout'}) failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(line[len("RESULT "):])


def _run_command(tree: Path | None, out: Path) -> dict:
    """``nksim run`` in a new process (wall, CPU of the child) and the bare imports of its stack."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import sys; from nksim.cli import main; sys.exit(main())", "run",
                           "--out", str(out), "--overwrite", "--no-progress"], env=_env(tree), capture_output=True,
                          text=True, timeout=600, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy, numba, xarray, matplotlib.pyplot"], env=_env(tree),
                   check=True, timeout=600)
    imports = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "bare_imports_wall_s": imports}


def _old_tree(path: str | None) -> Path:
    if path:
        return Path(path)
    tree = Path(tempfile.gettempdir()) / f"nksim-{V040}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), V040], check=True,
                       capture_output=True)
    return tree


def main() -> None:
    """Measure the rows asked for, old and new in turns; print the ratios and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default=None, help=f"source tree of the older nksim (default: a worktree of {V040})")
    ap.add_argument("--only", nargs="*", default=["calsim", "particle", "run", "sweep"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-sims", type=int, default=10_000)
    args = ap.parse_args()
    old = _old_tree(args.old)
    trees = {"0.4.0": old, "new": None}
    # warm each tree's numba cache first (compiles are not timed)
    for tree in trees.values():
        _child("calsim", tree)
    res: dict = {"date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "old_tree": str(old),
                 "load_before": os.getloadavg()}
    for what in args.only:
        rows = {label: [] for label in trees}
        repeats = 1 if what == "sweep" else args.repeats
        for _ in range(repeats):
            for label, tree in trees.items():
                if what == "run":
                    with tempfile.TemporaryDirectory() as td:
                        rows[label].append(_run_command(tree, Path(td) / "trial"))
                elif what == "sweep":
                    rows[label].append(_child("sweep", tree, str(args.sweep_sims)))
                else:
                    rows[label].append(_child(what, tree))
        best = {label: {k: min(r[k] for r in runs) for k in runs[0] if k != "nksim_file"}
                for label, runs in rows.items()}
        res[what] = {"best": best, "all": rows}
        for k in best["new"]:
            if k == "simulations":
                continue
            ratio = best["0.4.0"][k] / best["new"][k]
            print(f"{what:>9} {k:>40}: 0.4.0 {best['0.4.0'][k]:10.3f}  new {best['new'][k]:10.3f}  ratio {ratio:5.2f}x",
                  flush=True)
    res["load_after"] = os.getloadavg()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
