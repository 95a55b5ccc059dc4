"""Sweep benchmarks: throughput with 1 and 2 Dask workers, peak memory (RSS) vs sweep size.

    python benchmarks/bench_sweep.py            # ~320 simulations at 20x20 voxels; RSS at 100/1,000/10,000
    python benchmarks/bench_sweep.py --quick    # ~128 simulations at 16x16; RSS at 100/1,000
    python benchmarks/bench_sweep.py --large 10000 --skip-throughput --skip-memory
        # issue 13, goal 6: 10,000 simulations at the calibration resolution (5 x 5 voxels of 1.6 mm,
        # dt 2 h, day -9..365), once on 1 and once on 2 Dask workers, start-up included (minutes)
    python benchmarks/bench_sweep.py --flagship 96 --skip-throughput --skip-memory
        # the first 96 batches of the flagship study (experiments/studies/two_infusion), 1 and 2 workers

Writes ``outputs/benchmarks/sweep_throughput.json``, ``sweep_memory.json`` and ``sweep.txt``
(``--large``: ``sweep_large.json``; ``--flagship``: ``sweep_flagship.json``).

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


def _timed_run(spec, out: Path, workers: int, **kw) -> dict:
    """One ``run_sweep`` call, timed: wall (the call: cluster start-up, warm-up and the sweep) and CPU time.

    CPU: this process (client: scheduler + the single Zarr writer) and its waited-for children
    (the Dask nannies and workers, counted once the cluster is closed, i.e. at the end of the call;
    their start-up, imports and kernel load included). The store writer's own time is taken by
    wrapping ``SweepStore.write_batch`` for the call (thread CPU time and wall time).
    """
    from nksim.sweep import run_sweep
    from nksim.sweep.store import SweepStore

    writer = {"cpu": 0.0, "wall": 0.0}
    original = SweepStore.write_batch

    def timed_write(self, result):
        c, w = time.thread_time(), time.perf_counter()
        try:
            return original(self, result)
        finally:
            writer["cpu"] += time.thread_time() - c
            writer["wall"] += time.perf_counter() - w

    load0 = os.getloadavg()
    SweepStore.write_batch = timed_write
    try:
        t0, w0 = os.times(), time.perf_counter()
        rep = run_sweep(spec, out, workers=workers, **kw)
        wall = time.perf_counter() - w0
        t1 = os.times()
    finally:
        SweepStore.write_batch = original
    n = rep.simulations_run
    client_cpu = (t1.user - t0.user) + (t1.system - t0.system)
    worker_cpu = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
    return {"workers": workers, "simulations": n, "batches": rep.batches_run,
            "wall_s_call": round(wall, 2), "wall_s_report": round(rep.seconds, 2),
            "compute_s": round(rep.compute_seconds, 2), "startup_s": round(rep.seconds - rep.compute_seconds, 2),
            "sims_per_s_incl_startup": round(n / wall, 2),
            "sims_per_s_steady": round(rep.steady_simulations_per_second, 2),
            "client_cpu_s": round(client_cpu, 2), "worker_cpu_s": round(worker_cpu, 2),
            "client_cpu_ms_per_sim": round(1e3 * client_cpu / n, 3),
            "worker_cpu_ms_per_sim": round(1e3 * worker_cpu / n, 3),
            "writer_cpu_ms_per_sim": round(1e3 * writer["cpu"] / n, 3),
            "writer_wall_ms_per_sim": round(1e3 * writer["wall"] / n, 3),
            "load_average_start": [round(x, 2) for x in load0],
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def _compare(rows: dict) -> dict:
    r1, r2 = rows["1 worker"], rows["2 workers"]
    return {"speedup_incl_startup": round(r2["sims_per_s_incl_startup"] / r1["sims_per_s_incl_startup"], 3),
            "speedup_steady": round(r2["sims_per_s_steady"] / r1["sims_per_s_steady"], 3),
            # the client's share: the single writer's CPU per simulation over a worker's
            "client_over_worker_cpu": round(r2["client_cpu_ms_per_sim"] / r2["worker_cpu_ms_per_sim"], 4),
            "writer_over_worker_cpu": round(r2["writer_cpu_ms_per_sim"] / r2["worker_cpu_ms_per_sim"], 4)}


LARGE_SPEC = {"lattice.side": 5, "lattice.voxel_side": 1600.0, "numerics.dt": 2.0}


def large(n_sims: int, tmp: Path, batch_size: int) -> dict:
    """Goal 6: ``n_sims`` simulations at the calibration resolution, 1 worker then 2 workers."""
    from nksim.sweep import spec_from_dict, store_digest

    patients = min(20, n_sims)
    reps = max(1, min(20, n_sims // patients))
    n_scen = max(1, round(n_sims / (patients * reps)))
    raw = spec_dict(n_scen, patients, reps, 5, 365, batch_size)
    raw["parameters"] = dict(LARGE_SPEC)
    raw["sweep"]["name"] = f"bench-large-{n_scen * patients * reps}"
    spec = spec_from_dict(raw, "<bench --large>")
    rows, digests = {}, {}
    for label, w in [("1 worker", 1), ("2 workers", 2)]:
        out = tmp / f"large_{w}.zarr"
        rows[label] = _timed_run(spec, out, w)
        digests[label] = store_digest(out)
        print(f"  {label:>10}: {rows[label]}", flush=True)
    return {"simulations": n_scen * patients * reps, "scenarios": n_scen, "patients": patients, "replicates": reps,
            "parameters": LARGE_SPEC, "end_day": 365, "batch_size": batch_size, "runs": rows, **_compare(rows),
            "stores_identical": len(set(digests.values())) == 1}


def flagship(n_batches: int, tmp: Path) -> dict:
    """The first ``n_batches`` batches of the flagship study's spec (default potency), 1 then 2 workers."""
    from nksim.sweep import load_spec
    from nksim.sweep.plan import build_plan

    path = ROOT / "experiments" / "studies" / "two_infusion" / "schedules.toml"
    spec = load_spec(path)
    plan = build_plan(spec)
    rows = {}
    for label, w in [("1 worker", 1), ("2 workers", 2)]:
        rows[label] = _timed_run(spec, tmp / f"flagship_{w}.zarr", w, max_batches=n_batches)
        print(f"  {label:>10}: {rows[label]}", flush=True)
    return {"spec": str(path.relative_to(ROOT)), "plan_simulations": int(plan.n_simulations),
            "plan_batches": int(plan.n_batches), "batches_run": n_batches, "runs": rows, **_compare(rows)}


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
    ap.add_argument("--large", type=int, metavar="N",
                    help="also a sweep of N simulations (5 x 5 voxels of 1.6 mm, dt 2 h) on 1 and 2 workers")
    ap.add_argument("--large-batch", type=int, default=50, help="batch size of --large (default 50)")
    ap.add_argument("--flagship", type=int, metavar="B",
                    help="also the first B batches of the flagship study's sweep on 1 and 2 workers")
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
        if args.large:
            print(f"large sweep ({args.large} simulations, 1 and 2 workers):", flush=True)
            g = large(args.large, Path(td), args.large_batch)
            g.update(machine={**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})
            (args.out / "sweep_large.json").write_text(json.dumps(g, indent=2))
            print(json.dumps({k: v for k, v in g.items() if k != "runs"}), flush=True)
        if args.flagship:
            print(f"flagship study, first {args.flagship} batches (1 and 2 workers):", flush=True)
            f = flagship(args.flagship, Path(td))
            f.update(machine={**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})
            (args.out / "sweep_flagship.json").write_text(json.dumps(f, indent=2))
            print(json.dumps({k: v for k, v in f.items() if k != "runs"}), flush=True)
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
