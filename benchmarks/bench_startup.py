"""Start-up of `nksim run`, phase by phase, in fresh interpreters (process CPU time and wall time).

    python benchmarks/bench_startup.py                 # 3 cached runs + 2 x 3 whole commands (about 2 min on 2 cores)
    python benchmarks/bench_startup.py --cold 1        # + 1 cold compile in a fresh NUMBA_CACHE_DIR (30-60 s)
    python benchmarks/bench_startup.py --repeats 5 --json outputs/benchmarks/bench_startup.json

Each run is a new interpreter that does what ``nksim run`` does (``nksim.cli.cmd_run``), with a
clock (``time.process_time`` and ``time.perf_counter``) around each phase:

* ``import``: ``import nksim`` (the package, numpy, numba, the kernel module);
* ``import_io``: the modules ``nksim run`` imports next (xarray, matplotlib via ``nksim.plot``);
* ``kernel_load``: the first call of the kernel on a 2 x 2 lattice, 3 days (cached: numba loads
  the machine code from its cache; cold: numba compiles every kernel function) minus the same
  call once more (the simulation itself);
* ``simulate``: the default job (the trial protocol, 10 patients x 1 replicate, serial unless
  ``--workers``) including the Dataset assembly;
* ``netcdf``: ``nksim.write_netcdf`` of that Dataset;
* ``figure``: ``nksim.plot.trial_figure`` + ``nksim.fileio.save_figure`` (PNG, dpi 110);
* ``summary``: ``nksim.summary.summary_table``.

Where the command freezes the imported objects for the garbage collector (``nksim.cli``,
since perf13b), the child does the same after its imports, as ``nksim run`` does.

CPU time is reported because the machine is shared: wall time under load is inflated by other
processes, CPU time much less. The load average at each start is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, source_digest

CHILD = r"""
import json, sys, time, os
pc, pt = time.perf_counter, time.process_time
out = {}
def mark(name, t0):
    out[name + "_cpu"] = pt() - t0[0]; out[name + "_wall"] = pc() - t0[1]
    return (pt(), pc())
t = (pt(), pc())
t00 = t
import nksim
t = mark("import", t)
from nksim.fileio import save_figure
from nksim.io import write_netcdf
from nksim.plot import trial_figure
from nksim.summary import summary_table
from nksim.simulate import simulate_cohort, warm_up
import nksim.cli
if hasattr(nksim.cli, "_freeze_imported_objects"):  # as the command does since perf13b
    import gc
    gc.freeze()
t = mark("import_io", t)
warm_up()
t = mark("first_small", t)
warm_up()
t = mark("second_small", t)
out["kernel_load_cpu"] = out["first_small_cpu"] - out["second_small_cpu"]
out["kernel_load_wall"] = out["first_small_wall"] - out["second_small_wall"]
ds = simulate_cohort("default", "ahmadvand2023", seed=0, workers=WORKERS)
t = mark("simulate", t)
write_netcdf(ds, os.path.join(OUTDIR, "trial.nc"))
t = mark("netcdf", t)
save_figure(trial_figure(ds), os.path.join(OUTDIR, "trial.png"), dpi=110)
t = mark("figure", t)
summary_table(ds)
t = mark("summary", t)
out["total_cpu"] = pt() - t00[0]; out["total_wall"] = pc() - t00[1]
print("RESULT " + json.dumps(out))
"""

PHASES = ("import", "import_io", "kernel_load", "simulate", "netcdf", "figure", "summary", "total")


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def run_child(cache_dir: str | None, workers: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    with tempfile.TemporaryDirectory(prefix="nksim-startup-") as outdir:
        code = CHILD.replace("WORKERS", str(workers)).replace("OUTDIR", repr(outdir))
        load = loadavg()
        t = os.times()
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=outdir)
        t2 = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    d = json.loads(line[len("RESULT "):])
    d["process_cpu"] = (t2.children_user - t.children_user) + (t2.children_system - t.children_system)
    d["process_wall"] = t2.elapsed - t.elapsed
    d["loadavg_start"] = load
    return d


def run_cli(cache_dir: str | None, workers: int) -> dict:
    """The command itself: ``python -m nksim.cli run --no-progress`` in a new process (CPU = user + sys)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    with tempfile.TemporaryDirectory(prefix="nksim-startup-") as outdir:
        load = loadavg()
        t = os.times()
        proc = subprocess.run([sys.executable, "-m", "nksim.cli", "run", "--out", outdir, "--no-progress",
                               "--workers", str(workers)], env=env, capture_output=True, text=True, cwd=outdir)
        t2 = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"nksim run failed:\n{proc.stderr}")
    return {"cli_cpu": (t2.children_user - t.children_user) + (t2.children_system - t.children_system),
            "cli_wall": t2.elapsed - t.elapsed, "loadavg_start": load}


def table(rows: list[dict], title: str) -> None:
    print(f"\n{title} ({len(rows)} run(s); load average at the starts: "
          f"{', '.join(str(r['loadavg_start'][0]) for r in rows if r['loadavg_start'])})")
    print(f"{'phase':<14}{'CPU s (median)':>16}{'CPU min':>10}{'wall s (median)':>17}{'wall min':>10}")
    for ph in PHASES + ("process",):
        cs = [r[f"{ph}_cpu"] for r in rows]
        ws = [r[f"{ph}_wall"] for r in rows]
        print(f"{ph:<14}{statistics.median(cs):>16.3f}{min(cs):>10.3f}{statistics.median(ws):>17.3f}{min(ws):>10.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="cached runs (default 3)")
    ap.add_argument("--cold", type=int, default=0, help="cold runs, each in a fresh NUMBA_CACHE_DIR (default 0)")
    ap.add_argument("--workers", type=int, default=1, help="threads for the default job (default 1)")
    ap.add_argument("--cache-dir", default=None, help="NUMBA_CACHE_DIR of the cached runs (default: numba's own)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    report = {"workers": args.workers, "engine_sources": source_digest(), "python": sys.version.split()[0]}
    if args.cold:
        cold = []
        for _ in range(args.cold):
            with tempfile.TemporaryDirectory(prefix="nksim-numba-cold-") as cache:
                cold.append(run_child(cache, args.workers))
        report["cold"] = cold
        table(cold, "cold (empty NUMBA_CACHE_DIR)")
    run_child(args.cache_dir, args.workers)  # fill the cache if needed
    cached = [run_child(args.cache_dir, args.workers) for _ in range(args.repeats)]
    report["cached"] = cached
    table(cached, "cached")
    cli = [run_cli(args.cache_dir, w) for w in (1, 2) for _ in range(args.repeats)]
    report["cli"] = cli
    for w in (1, 2):
        rows = cli[(w - 1) * args.repeats:w * args.repeats]
        cs, ws = [r["cli_cpu"] for r in rows], [r["cli_wall"] for r in rows]
        print(f"nksim run --workers {w} (whole command): CPU median {statistics.median(cs):.3f} s (min {min(cs):.3f}), "
              f"wall median {statistics.median(ws):.3f} s (min {min(ws):.3f}); load "
              f"{', '.join(str(r['loadavg_start'][0]) for r in rows if r['loadavg_start'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
