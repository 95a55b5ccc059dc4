"""Sweep benchmarks: throughput with 1 and 2 Dask workers, peak memory (RSS) vs sweep size.

    python benchmarks/bench_sweep.py            # ~320 simulations at 20x20 voxels; RSS at 100/1,000/10,000
    python benchmarks/bench_sweep.py --quick    # ~128 simulations at 16x16; RSS at 100/1,000

Writes ``outputs/benchmarks/sweep_throughput.json``, ``sweep_memory.json`` and ``sweep.txt``.

* Throughput: the same sweep run in-process (no Dask), on a LocalCluster with 1 worker and
  with 2 workers (one thread each). Reported: simulated patients per second of wall time
  including cluster start-up, and steady-state (first submitted batch -> last batch written).
  The three stores must be bitwise identical (checked).
* Memory: sweeps of growing size (4 x 4 voxels, 120 days, 2 workers), each in a fresh process;
  a thread samples the RSS of the client process and of each worker process every 0.1 s
  (the client's direct children; transient fork+exec grandchildren are not counted).

Timings on a shared machine are noisy: the numbers are what was measured, at that time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spec_dict(n_scenarios: int, patients: int, replicates: int, side: int, end_day: int, batch_size: int) -> dict:
    return {
        "sweep": {"name": f"bench-{n_scenarios}x{patients}x{replicates}-s{side}", "seed": 1, "end_day": end_day,
                  "assessment_days": [28, 90] if end_day < 180 else [28, 90, 180, 270, 365],
                  "landmark_day": 90 if end_day < 270 else 270, "batch_size": batch_size},
        "cohort": {"patients": patients, "replicates": replicates},
        "parameters": {"lattice.side": side},
        "factors": {"interval": list(range(1, n_scenarios + 1)), "dose_split": [[50, 50]]},
    }


def throughput(quick: bool, tmp: Path) -> dict:
    from nksim.sweep import run_sweep, spec_from_dict, store_digest

    n_scen, patients, reps, side = (4, 16, 2, 16) if quick else (8, 20, 2, 20)
    spec = spec_from_dict(spec_dict(n_scen, patients, reps, side, 365, 8), "<bench>")
    rows = {}
    digests = {}
    for label, kw in [("in-process", {"workers": 0}), ("1 worker", {"workers": 1}), ("2 workers", {"workers": 2})]:
        out = tmp / f"{label.replace(' ', '_')}.zarr"
        t0 = os.times()
        rep = run_sweep(spec, out, **kw)
        t1 = os.times()
        digests[label] = store_digest(out)
        n = rep.simulations_run
        # CPU seconds: this process (client: scheduler + store writer, or everything in-process)
        # and its waited-for children (Dask nannies and workers)
        client_cpu = (t1.user - t0.user) + (t1.system - t0.system)
        worker_cpu = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
        rows[label] = {"simulations": n, "wall_s": round(rep.seconds, 2), "compute_s": round(rep.compute_seconds, 2),
                       "sims_per_s_wall": round(rep.simulations_per_second, 3),
                       "sims_per_s_steady": round(rep.steady_simulations_per_second, 3),
                       "client_cpu_s_per_sim": round(client_cpu / n, 4),
                       "worker_cpu_s_per_sim": round(worker_cpu / n, 4)}
        print(f"  {label:>10}: {rows[label]}", flush=True)
    s1, s2 = rows["1 worker"]["sims_per_s_steady"], rows["2 workers"]["sims_per_s_steady"]
    w = rows["2 workers"]["worker_cpu_s_per_sim"]
    c = rows["2 workers"]["client_cpu_s_per_sim"]
    return {"lattice_side": side, "end_day": 365, "simulations": n_scen * patients * reps, "batch_size": 8,
            "runs": rows, "speedup_2_vs_1_steady": round(s2 / s1, 3),
            "speedup_2_vs_1_wall": round(rows["2 workers"]["sims_per_s_wall"] / rows["1 worker"]["sims_per_s_wall"], 3),
            # on an otherwise idle 2-core machine two workers (W CPU-s per simulation each) and the
            # client (C CPU-s per simulation) share 2 cores: rate <= 2 / (W + C) vs 1 / W for one worker
            "speedup_2_vs_1_cpu_bound_estimate": round(2 * w / (w + c), 3) if w > 0 else None,
            "stores_identical": len(set(digests.values())) == 1}


def rss_child(n_sims: int, out: str) -> None:
    """Run one sweep of ``n_sims`` simulations with 2 workers; print peak RSS as JSON."""
    import psutil

    from nksim.sweep import run_sweep, spec_from_dict

    me = psutil.Process()
    peak = {"client": 0, "worker_max": 0, "total": 0}
    workers_seen: set[int] = set()  # > 2 means a worker process was (re)started during the run
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                c = me.memory_info().rss
                kids = []
                # direct children only: the worker processes (and multiprocessing's resource tracker);
                # grandchildren are transient fork+exec children of workers (e.g. `git rev-parse`
                # run by nksim.output.git_commit), whose RSS is shared copy-on-write pages
                for k in me.children(recursive=False):
                    try:
                        kids.append(k.memory_info().rss)
                        if "spawn_main" in " ".join(k.cmdline()):
                            workers_seen.add(k.pid)
                    except psutil.Error:
                        pass
                peak["client"] = max(peak["client"], c)
                peak["worker_max"] = max(peak["worker_max"], max(kids, default=0))
                peak["total"] = max(peak["total"], c + sum(kids))
            except psutil.Error:
                pass
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    patients, reps = 25, 4
    n_scen = max(1, n_sims // (patients * reps))
    spec = spec_from_dict(spec_dict(n_scen, patients, reps, 4, 120, 20), "<bench>")
    t = time.perf_counter()
    rep = run_sweep(spec, out, workers=2)
    secs = time.perf_counter() - t
    stop.set()
    th.join()
    print(json.dumps({"simulations": rep.n_simulations, "seconds": round(secs, 1),
                      "peak_rss_client_MiB": round(peak["client"] / 2**20, 1),
                      "peak_rss_worker_MiB": round(peak["worker_max"] / 2**20, 1),
                      "peak_rss_total_MiB": round(peak["total"] / 2**20, 1),
                      "worker_processes_seen": len(workers_seen)}))


def memory(quick: bool, tmp: Path) -> list[dict]:
    sizes = [100, 1000] if quick else [100, 1000, 10000]
    rows = []
    for n in sizes:
        out = tmp / f"rss{n}.zarr"
        res = subprocess.run([sys.executable, __file__, "--rss-child", str(n), str(out)], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {n:>6} simulations: {row}", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sweeps (a couple of minutes)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    ap.add_argument("--skip-memory", action="store_true", help="only the throughput part")
    ap.add_argument("--skip-throughput", action="store_true", help="only the memory part")
    ap.add_argument("--rss-child", nargs=2, metavar=("N", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(int(args.rss_child[0]), args.rss_child[1])
        return
    import psutil

    args.out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "memory_GiB": round(psutil.virtual_memory().total / 2**30, 1),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    note = "shared 2-core machine with other jobs running: timings are noisy"
    with tempfile.TemporaryDirectory(prefix="nksim-bench-") as td:
        if not args.skip_throughput:
            print("throughput (in-process, LocalCluster 1 worker, 2 workers):", flush=True)
            t = throughput(args.quick, Path(td))
            t.update(quick=args.quick, note=note,
                     machine={**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})
            (args.out / "sweep_throughput.json").write_text(json.dumps(t, indent=2))
        if not args.skip_memory:
            print("peak memory vs sweep size (2 workers):", flush=True)
            m = {"runs": memory(args.quick, Path(td)), "quick": args.quick, "note": note, "machine": machine}
            (args.out / "sweep_memory.json").write_text(json.dumps(m, indent=2))
    lines = []
    tp = args.out / "sweep_throughput.json"
    if tp.exists():
        t = json.loads(tp.read_text())
        lines += [f"throughput ({'quick' if t['quick'] else 'full'}): {t['simulations']} simulations, lattice "
                  f"{t['lattice_side']}x{t['lattice_side']}, {t['end_day']} days, batch {t['batch_size']}; "
                  f"stores identical: {t['stores_identical']}; machine {t['machine']}"]
        for k, v in t["runs"].items():
            lines.append(f"  {k:>10}: {v['sims_per_s_steady']:.2f} sims/s steady, {v['sims_per_s_wall']:.2f} sims/s "
                         f"incl. start-up ({v['wall_s']} s); CPU s/sim: client {v['client_cpu_s_per_sim']}, "
                         f"workers {v['worker_cpu_s_per_sim']}")
        lines.append(f"  speed-up 2 vs 1 workers: {t['speedup_2_vs_1_steady']}x steady, {t['speedup_2_vs_1_wall']}x "
                     f"wall; CPU-bound estimate for an idle 2-core machine {t['speedup_2_vs_1_cpu_bound_estimate']}x")
    mp = args.out / "sweep_memory.json"
    if mp.exists():
        m = json.loads(mp.read_text())
        lines.append(f"peak RSS vs sweep size ({'quick' if m['quick'] else 'full'}, 2 workers, 4x4 voxels, 120 days):")
        for row in m["runs"]:
            lines.append(f"  {row['simulations']:>6} sims: client {row['peak_rss_client_MiB']} MiB, largest worker "
                         f"{row['peak_rss_worker_MiB']} MiB, all processes {row['peak_rss_total_MiB']} MiB "
                         f"({row.get('worker_processes_seen', '?')} worker processes seen), {row['seconds']} s")
    lines.append(note)
    (args.out / "sweep.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}/sweep_throughput.json, sweep_memory.json, sweep.txt")


if __name__ == "__main__":  # required: LocalCluster starts workers with spawn
    main()
