"""Engine performance: throughput rates, the main job's wall time, compile time, lattice scaling.

Run from the repository root::

    python benchmarks/bench_engine.py            # about 3.5 min on 2 cores (45 s: start-up subprocesses)
    python benchmarks/bench_engine.py --quick    # about 1.5 min (fewer patients, sides 20/40, 1 cold compile)

Writes ``outputs/benchmarks/bench_engine.json`` (``bench_engine_quick.json`` with ``--quick``)
and prints tables. Everything runs on one core (``workers=1``) unless the line says otherwise.
Speed is *reported* (rates, ratios, targets met or not), never asserted. What each number
means: see ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import source_digest

import nksim
from nksim.engine import kernel as K
from nksim.engine import kernel_parameters, pcg64, resolution, samplers
from nksim.engine import layout as L
from nksim.patients import draw_effects
from nksim.simulate import run_one
from nksim.streams import generators

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "outputs" / "benchmarks"

TARGET_JOB_SERIAL_S = 10.0  # default `nksim run` job, serial
AIM_JOB_SERIAL_S = 3.0
TARGET_CACHED_START_S = 3.0  # import + load cached kernels + first small simulation
#: Headline statistic of repeated timings: the best (minimum) is the least disturbed by other
#: processes on a shared machine; medians and all repeats are in the JSON.
STAT = "min_s"


# ----------------------------------------------------------------------------- helpers
def machine_info() -> dict:
    import numba

    return {
        "date_utc": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "nksim": nksim.__version__,
        "engine_sources": source_digest(),
    }


def timed(fn, repeats: int) -> dict:
    """Run ``fn`` ``repeats`` times; wall times (s): median, min, all; and process CPU times.

    For a serial run CPU time ~ wall time on a quiet machine; ``wall_over_cpu`` > 1 means other
    processes took the core (timings inflated).
    """
    ts, cs = [], []
    out = None
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return summarise_times(ts, cs, out)


def summarise_times(ts, cs, out=None) -> dict:
    i = int(np.argmin(ts))
    return {"median_s": statistics.median(ts), "min_s": min(ts), "all_s": ts, "cpu_min_s": min(cs),
            "cpu_all_s": cs, "wall_over_cpu": ts[i] / cs[i] if cs[i] > 0 else None, "result": out}


def strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "result"}


def scaled_nk(protocol: nksim.Protocol, factor: float) -> nksim.Protocol:
    """The protocol with every NK infusion dose multiplied by ``factor``."""
    groups = {g: [replace(e, dose=e.dose * factor) if e.kind == "nk_infusion" else e for e in ev]
              for g, ev in protocol.groups.items()}
    events = [replace(e, dose=e.dose * factor) if e.kind == "nk_infusion" else e for e in protocol.events]
    return protocol.with_events(events, groups)


def kernel_loop(params, protocol, patients, replicates=1, seed=0):
    """Kernel-only timing: ``run_one`` over (patient, replicate); returns the raw runs."""
    return [run_one(params, protocol, p, seed, r) for p in patients for r in range(replicates)]


def agent_updates(runs, params) -> float:
    """Sum over days of donor NK agents x steps per day (agent-steps actually processed)."""
    spd = resolution(params).steps_per_day
    return float(sum(r.rec[:-1, L.R.donor_nk_agents].sum() for r in runs) * spd)


def marrow_counts(params, protocol, n_sims: int) -> tuple[float, float]:
    """(voxel updates, cell-equivalent updates) of ``n_sims`` simulations of ``protocol``."""
    res = resolution(params)
    n_steps = int(round((protocol.end_day - protocol.start_day) * res.steps_per_day))
    n_marrow = n_steps // res.marrow_every
    vox = float(n_sims) * res.n_voxels * n_marrow
    return vox, vox * res.capacity


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wait_quiet(max_wait_s: float, threshold: float = 0.5) -> float:
    """Wait (at most ``max_wait_s``) until the 1-min load average is below ``threshold``; returns seconds waited."""
    t0 = time.perf_counter()
    la = loadavg()
    while la and la[0] >= threshold and time.perf_counter() - t0 < max_wait_s:
        say(f"waiting for a quiet machine: load average {la} ...")
        time.sleep(10)
        la = loadavg()
    return time.perf_counter() - t0


def loadavg() -> list[float] | None:
    """1, 5, 15-min load averages (other processes on the machine distort timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- 1. compile time
COMPILE_SNIPPET = r"""
import json, time
t0 = time.perf_counter()
import nksim
t1 = time.perf_counter()
p = nksim.load_parameters("default").with_values({"lattice.side": 4})
nksim.simulate(p, seed=0)
t2 = time.perf_counter()
nksim.simulate(p, seed=0)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_sim_s": t2 - t1, "second_sim_s": t3 - t2, "total_s": t2 - t0}))
"""


def bench_compile(cold_repeats: int, cached_repeats: int) -> dict:
    """Import + first small simulation in a fresh interpreter, cold (empty NUMBA_CACHE_DIR) vs cached."""
    env = {}

    def once() -> dict:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=900)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"compile subprocess failed:\n{out.stderr}")
        d = json.loads(out.stdout.strip().splitlines()[-1])
        d["process_wall_s"] = wall  # includes interpreter start-up
        d["compile_or_load_s"] = d["first_sim_s"] - d["second_sim_s"]
        return d

    colds, dirs = [], []
    for i in range(cold_repeats):
        cache = tempfile.mkdtemp(prefix="nksim_numba_cache_")
        dirs.append(cache)
        env.clear()
        env.update(os.environ, NUMBA_CACHE_DIR=cache)
        say(f"compile: cold {i + 1}/{cold_repeats} (empty NUMBA_CACHE_DIR {cache}) ...")
        colds.append(once())
    n_files = sum(1 for _ in Path(cache).rglob("*.nbc"))
    say("compile: cached ...")
    cached = [once() for _ in range(cached_repeats)]
    med = {k: statistics.median(c[k] for c in cached) for k in cached[0]}
    cold = {k: statistics.median(c[k] for c in colds) for k in colds[0]}
    for d in dirs:  # the temporary caches were created here; remove them
        shutil.rmtree(d, ignore_errors=True)
    return {
        "method": "subprocess `import nksim; nksim.simulate(side=4 lattice)` with a fresh NUMBA_CACHE_DIR "
                  "(cold, median over fresh directories), then again with the last directory "
                  "(cached, median of repeats); "
                  "total_s = import + first simulate; compile_or_load_s = first - second simulate",
        "numba_cache_dirs_removed": dirs,
        "cache_files_nbc": n_files,
        "cold": cold,
        "cold_all": colds,
        "cached_median": med,
        "cached_all": cached,
        "cold_over_cached_total": cold["total_s"] / med["total_s"],
        "target_cached_total_s": TARGET_CACHED_START_S,
        "target_met": med["total_s"] < TARGET_CACHED_START_S,
    }


# ----------------------------------------------------------------------------- 2. throughput
def throughput_row(name, proto, replicates, t) -> dict:
    n_sims = len(proto.patients) * replicates
    pdays = n_sims * (proto.end_day - proto.start_day)
    return {"protocol": name, "patients": len(proto.patients), "replicates": replicates,
            "patient_days": pdays, **strip(t), "patient_days_per_s": pdays / t[STAT],
            "patient_days_per_cpu_s": pdays / t["cpu_min_s"],
            "patient_days_per_s_median": pdays / t["median_s"], "s_per_simulation": t[STAT] / n_sims}


def bench_throughput(params, protocols: dict, replicates: int, repeats: int) -> list[dict]:
    rows = []
    for name, proto in protocols.items():
        say(f"throughput: {name} ({len(proto.patients)} patients x {replicates} replicates) ...")
        t = timed(lambda proto=proto: nksim.simulate_cohort(params, proto, replicates=replicates, workers=1), repeats)
        rows.append(throughput_row(name, proto, replicates, t))
    return rows


# ----------------------------------------------------------------------------- 3. the main job
def bench_job(params, protocol, repeats: int, cli: bool) -> tuple[dict, dict, dict]:
    """The default job serial / workers=2 / kernel-only; returns (report, serial timing, kernel-only timing).

    Repeats are interleaved so that drift in the machine's load hits all three alike.
    """
    ts = {"w1": [], "w2": [], "kern": []}
    cs = {"w1": [], "w2": [], "kern": []}
    res_k = None
    for i in range(repeats):
        say(f"job: repeat {i + 1}/{repeats}: simulate_cohort(10 patients x 1 replicate) workers=1, workers=2, "
            "kernel-only loop ...")
        for key, fn in (("w1", lambda: nksim.simulate_cohort(params, protocol, replicates=1, workers=1)),
                        ("w2", lambda: nksim.simulate_cohort(params, protocol, replicates=1, workers=2)),
                        ("kern", lambda: kernel_loop(params, protocol, protocol.patients))):
            c0 = time.process_time()
            t0 = time.perf_counter()
            r = fn()
            ts[key].append(time.perf_counter() - t0)
            cs[key].append(time.process_time() - c0)
            if key == "kern":
                res_k = r
    tt = {k: strip(summarise_times(ts[k], cs[k])) for k in ts}
    out = {"workers1": tt["w1"], "workers2": tt["w2"], "kernel_only_serial": tt["kern"], "load_avg": loadavg()}
    s, p = tt["w1"][STAT], tt["w2"][STAT]
    n = len(protocol.patients)
    out["speedup_workers2"] = s / p
    out["parallel_efficiency_workers2"] = s / p / 2.0
    # simulate_cohort runs its first simulation alone (to load the kernel) before the thread pool
    out["ideal_speedup_workers2"] = n / (1 + (n - 1) / 2)
    out["target_serial_s"] = TARGET_JOB_SERIAL_S
    out["aim_serial_s"] = AIM_JOB_SERIAL_S
    out["serial_target_met"] = s < TARGET_JOB_SERIAL_S
    out["serial_aim_met"] = s < AIM_JOB_SERIAL_S
    # Python-side overhead of simulate_cohort (effects, event arrays, build_dataset) vs kernel calls
    out["python_overhead_s"] = s - tt["kern"][STAT]
    out["python_overhead_fraction"] = (s - tt["kern"][STAT]) / s
    if cli:
        say("job: end-to-end `nksim run` (fresh interpreter, cached kernels, writes netCDF + PNG) ...")
        dest = OUT_DIR / "cli_run"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "nksim.cli", "run", "--out", str(dest), "--overwrite",
                            "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t0
        out["cli_end_to_end_s"] = wall if r.returncode == 0 else None
        out["cli_stdout_first_line"] = (r.stdout.splitlines() or [""])[0]
        if r.returncode != 0:
            out["cli_error"] = r.stderr[-2000:]
    return out, {**tt["w1"], "result": None}, {**tt["kern"], "result": res_k}


# ----------------------------------------------------------------------------- 4. cost decomposition
def bench_decomposition(params, protocol, patients, repeats: int, stress_factor: float, t_def=None) -> dict:
    """Marrow vs NK-agent cost: kernel runs with homing 0 (no agents) vs default vs NK-stress doses.

    ``t_def``: an already measured kernel-only timing of ``patients`` under ``params`` (reused).
    """
    n = len(patients)
    no_nk = params.with_values({"nk.homing_rate": 0.0}, origin="homing 0")
    stress = scaled_nk(protocol, stress_factor)
    say(f"decomposition: kernel runs default / homing 0 / NK dose x{stress_factor:g} ...")
    if t_def is None:
        t_def = timed(lambda: kernel_loop(params, protocol, patients), repeats)
    t_nonk = timed(lambda: kernel_loop(no_nk, protocol, patients), repeats)
    t_str = timed(lambda: kernel_loop(params, stress, patients), repeats)
    vox, cells = marrow_counts(params, protocol, n)
    au_def = agent_updates(t_def["result"], params)
    au_str = agent_updates(t_str["result"], params)
    assert agent_updates(t_nonk["result"], no_nk) == 0.0
    t_agents_str = t_str["cpu_min_s"] - t_nonk["cpu_min_s"]  # CPU time: robust to other processes
    agent_rate = au_str / t_agents_str if t_agents_str > 0 else float("nan")
    t_agents_def_est = au_def / agent_rate if agent_rate == agent_rate else float("nan")
    return {
        "method": (
            "kernel-only timing (nksim.simulate.run_one, serial) of the same patients with "
            "(a) nk.homing_rate = 0: no agent ever enters the region, so the time is the marrow update "
            "plus the per-step PK/blood/IL-15 work; voxel updates per s = voxels x marrow steps / time; "
            f"(b) default; (c) every NK dose x{stress_factor:g} (many agents). Agent-updates per s = "
            "agent-steps of (c) / (CPU time(c) - CPU time(a)); the default run's agent share is its agent-steps / "
            "that rate (the direct difference default - homing 0 is below timing noise). "
            "Caveat: NK killing changes the marrow composition, so (c)-(a) also holds a small marrow-cost change."),
        "patients": [p.id for p in patients],
        "no_nk": {**strip(t_nonk), "voxel_updates": vox, "cell_equiv_updates": cells,
                  "voxel_updates_per_s": vox / t_nonk[STAT],
                  "voxel_updates_per_cpu_s": vox / t_nonk["cpu_min_s"],
                  "cell_equiv_updates_per_s": cells / t_nonk[STAT],
                  "ns_per_voxel_update": t_nonk[STAT] / vox * 1e9},
        "default": {**strip(t_def), "agent_updates": au_def,
                    "cpu_diff_vs_no_nk_s": t_def["cpu_min_s"] - t_nonk["cpu_min_s"]},
        "nk_stress": {**strip(t_str), "dose_factor": stress_factor, "agent_updates": au_str,
                      "agent_time_s": t_agents_str, "agent_updates_per_s": agent_rate,
                      "ns_per_agent_update": 1e9 / agent_rate if agent_rate == agent_rate else None,
                      "peak_agents_max": float(max(r.rec[:, L.R.donor_nk_agents].max() for r in t_str["result"]))},
        "default_agent_time_estimate_s": t_agents_def_est,
        "default_agent_fraction_estimate": t_agents_def_est / t_def["cpu_min_s"],
        "default_peak_agents_max": float(max(r.rec[:, L.R.donor_nk_agents].max() for r in t_def["result"])),
        "load_avg": loadavg(),
    }


def bench_marrow_update(params, protocol, n_calls: int) -> dict:
    """Time ``kernel.marrow_update`` alone on an evolved default lattice (and its pass-2 share)."""
    pat = protocol.patients[5]
    rngs = generators(0, pat.id, 0)
    eff = draw_effects(params, rngs["patient"], pat.covariates)
    kp = kernel_parameters(params, eff, protocol.start_day, protocol.end_day, nk_product=protocol.nk_product)
    res = resolution(params)
    nv = res.n_voxels
    z = lambda: np.zeros(nv, dtype=np.int32)  # noqa: E731
    sus, rs, nor, b1, b2, b3 = z(), z(), z(), z(), z(), z()
    halt = np.zeros(1, dtype=np.int64)  # never set: the kernel's halt flag
    K.init_lattice(kp, pcg64.pack(rngs["init"]), sus, rs, nor, halt)
    cnt = np.zeros(L.N_C, dtype=np.int64)
    rng = pcg64.pack(rngs["marrow"])  # the kernel's form of a stream: the PCG64 state words
    delta = res.marrow_every / res.steps_per_day
    for _ in range(60):  # evolve towards the near-full steady state of the trial
        K.marrow_update(kp, rng, sus, rs, nor, b1, b2, b3, 0.0, cnt, delta, halt)

    def run(kpx, hz, state=None):
        s, r_, n_ = (x.copy() for x in (state or (sus, rs, nor)))
        c = cnt.copy()
        t0 = time.thread_time()  # CPU time of this thread: robust to other processes
        for _ in range(n_calls):
            K.marrow_update(kpx, rng, s, r_, n_, b1, b2, b3, hz, c, delta, halt)
        return (time.thread_time() - t0) / n_calls

    kp0 = kp.copy()
    kp0[L.KP.blasts_spread_fraction] = 0.0
    kp0[L.KP.normal_spread_fraction] = 0.0
    t_full = min(run(kp, 0.0) for _ in range(3))
    t_nospread = min(run(kp0, 0.0) for _ in range(3))
    t_drug = min(run(kp, 0.05) for _ in range(3))
    occ = (sus + rs + nor).mean() / res.capacity
    # a late-trial state: the same voxels nearly full (95 %), 90 % blasts (the trial's day-365 mean)
    tot = np.minimum(np.rint((sus + rs + nor) * 0.95 * res.capacity / max((sus + rs + nor).mean(), 1)),
                     res.capacity).astype(np.int32)
    late_b = np.rint(0.9 * tot).astype(np.int32)
    late = (late_b // 2, late_b - late_b // 2, tot - late_b)
    t_late = min(run(kp, 0.0, late) for _ in range(3))
    return {
        "method": "kernel.marrow_update called directly on a default lattice evolved 60 marrow steps "
                  f"(patient {pat.id}); thread CPU time, best of 3 x {n_calls} calls",
        "side": res.side, "capacity": res.capacity, "mean_occupancy": float(occ),
        "blast_fraction": float((sus + rs).sum() / max((sus + rs + nor).sum(), 1)),
        "ms_per_call": t_full * 1e3,
        "ns_per_voxel": t_full / nv * 1e9,
        "voxel_updates_per_s": nv / t_full,
        "cell_equiv_updates_per_s": nv * res.capacity / t_full,
        "ns_per_voxel_no_spread": t_nospread / nv * 1e9,
        "pass2_neighbour_fraction": 1.0 - t_nospread / t_full,
        "ns_per_voxel_with_drug_hazard": t_drug / nv * 1e9,
        "late_occupancy": float(tot.mean() / res.capacity),
        "late_blast_fraction": float(late_b.sum() / max(tot.sum(), 1)),
        "ns_per_voxel_late": t_late / nv * 1e9,
        "marrow_calls_per_patient": (int(round((protocol.end_day - protocol.start_day) * res.steps_per_day))
                                     // res.marrow_every),
    }


def bench_rng() -> dict:
    """Cost (ns) of single draws: numba's Generator methods and the kernel's own (inlined PCG64, samplers)."""
    from numba import njit

    @njit(cache=False)
    def binos(rng, n, p, m):
        s = 0
        for _ in range(m):
            s += rng.binomial(n, p)
        return s

    @njit(cache=False)
    def unif(rng, m):
        s = 0.0
        for _ in range(m):
            s += rng.random()
        return s

    @njit(cache=False)
    def unif_inline(st, m):
        s = 0.0
        for _ in range(m):
            s += pcg64.uniform(st)
        return s

    @njit(cache=False)
    def binos_kernel(st, n, p, m):
        s = 0
        for _ in range(m):
            s += samplers.binomial(st, np.int64(n), p)
        return s

    @njit(cache=False)
    def pois(rng, lam, m):
        s = 0
        for _ in range(m):
            s += rng.poisson(lam)
        return s

    g = np.random.default_rng(1)
    binos(g, 10, 0.1, 10), unif(g, 10), pois(g, 0.1, 10)
    m = 500_000
    out = {}
    clock = time.thread_time
    for n, p in ((1600, 0.04), (1600, 0.002), (60, 0.05), (5, 0.25)):
        t0 = clock()
        binos(g, n, p, m)
        out[f"binomial(n={n}, p={p})"] = (clock() - t0) / m * 1e9
    t0 = clock()
    unif(g, m)
    out["random()"] = (clock() - t0) / m * 1e9
    st = pcg64.pack(g)
    unif_inline(st, 10), binos_kernel(st, 10, 0.1, 10)
    t0 = clock()
    unif_inline(st, m)
    out["kernel uniform (inlined PCG64)"] = (clock() - t0) / m * 1e9
    for n, p in ((1600, 0.04), (184, 0.08), (617, 0.18), (60, 0.05)):
        t0 = clock()
        binos_kernel(st, n, p, m)
        out[f"kernel binomial(n={n}, p={p})"] = (clock() - t0) / m * 1e9
    t0 = clock()
    pois(g, 0.0375, m)
    out["poisson(0.0375)"] = (clock() - t0) / m * 1e9
    return out


# ----------------------------------------------------------------------------- 5. lattice scaling
def bench_scaling(params, protocol, patients, configs) -> list[dict]:
    rows = []
    for series, side, vs in configs:
        p = params.with_values({"lattice.side": side, "lattice.voxel_side": vs}, origin=f"side {side}")
        res = resolution(p)
        say(f"scaling: {series}: side {side}, voxel {vs:g} um ({len(patients)} patients) ...")
        kernel_loop(p, protocol, patients[:1])  # same compiled code; warms caches
        t = timed(lambda p=p: kernel_loop(p, protocol, patients), 1)
        vox, cells = marrow_counts(p, protocol, len(patients))
        days = len(patients) * (protocol.end_day - protocol.start_day)
        rows.append({
            "series": series, "side": side, "voxel_side_um": vs, "n_voxels": res.n_voxels,
            "capacity": res.capacity, "region_mm": side * vs / 1000.0, **strip(t),
            "s_per_simulation": t[STAT] / len(patients),
            "patient_days_per_s": days / t[STAT],
            "voxel_updates_per_s": vox / t[STAT],
            "cell_equiv_updates_per_s": cells / t[STAT],
            "ns_per_voxel_update": t[STAT] / vox * 1e9,
            "ns_per_voxel_update_cpu": t["cpu_min_s"] / vox * 1e9,
            "peak_agents_mean": float(np.mean([r.rec[:, L.R.donor_nk_agents].max() for r in t["result"]])),
        })
    base = next((r for r in rows if r["side"] == 40 and r["voxel_side_um"] == 400.0), None)
    for r in rows:
        r["cost_vs_side40"] = r[STAT] / base[STAT] if base else None
        r["cpu_cost_vs_side40"] = r["cpu_min_s"] / base["cpu_min_s"] if base else None
        r["voxels_vs_side40"] = r["n_voxels"] / base["n_voxels"] if base else None
    return rows


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller run (about 1.5 min)")
    ap.add_argument("--skip-compile", action="store_true", help="skip the cold/cached compile subprocesses")
    ap.add_argument("--marrow-only", action="store_true",
                    help="only the marrow update (ns per voxel-day), the draw costs and 3 kernel-only simulations "
                         "(about 30 s; writes bench_engine_marrow.json)")
    ap.add_argument("--out", type=Path, default=None, help="JSON report path")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="first wait up to S seconds for the 1-min load average to drop below 0.5")
    args = ap.parse_args(argv)
    q = args.quick
    repeats = 1 if q else 2
    out_path = args.out or OUT_DIR / ("bench_engine_quick.json" if q else "bench_engine.json")

    params = nksim.load_parameters("default")
    ahm = nksim.load_protocol("ahmadvand2023")
    hcf = nksim.load_protocol("hi_cy_flu")
    if args.marrow_only:
        return main_marrow_only(params, ahm, args.out or OUT_DIR / "bench_engine_marrow.json")
    report = {"machine": machine_info(), "quick": q, "model": "default", "workers": 1,
              "note": "serial (workers=1, one core) unless stated; wall-clock seconds after compilation"}

    if args.wait_quiet > 0:
        report["waited_for_quiet_s"] = wait_quiet(args.wait_quiet)
    report["load_avg_start"] = loadavg()
    if not args.skip_compile:
        report["compile"] = bench_compile(cold_repeats=1 if q else 2, cached_repeats=2 if q else 3)

    say("warm-up (load cached kernels in this process) ...")
    t0 = time.perf_counter()
    nksim.simulate(params, ahm, seed=0)
    report["in_process_first_simulate_s"] = time.perf_counter() - t0

    job, t_job_serial, t_kern = bench_job(params, ahm, repeats=2 if q else 3, cli=not q)
    report["job"] = job
    report["throughput"] = [throughput_row("ahmadvand2023", ahm, 1, t_job_serial)]
    report["throughput"] += bench_throughput(params, {"hi_cy_flu": hcf}, replicates=1, repeats=1 if q else 2)
    if q:
        dec_patients, t_def = list(ahm.patients[::3]), None
    else:
        dec_patients, t_def = list(ahm.patients), t_kern
    report["decomposition"] = bench_decomposition(params, ahm, dec_patients, repeats, stress_factor=100.0,
                                                  t_def=t_def)
    report["marrow_update"] = bench_marrow_update(params, ahm, n_calls=100 if q else 300)
    report["rng_ns"] = bench_rng()
    sc_patients = list(ahm.patients[::5]) if q else list(ahm.patients[::2])
    configs = ([("fixed region 16 mm", 20, 800.0), ("fixed region 16 mm", 40, 400.0)] if q else
               [("fixed region 16 mm", 20, 800.0), ("fixed region 16 mm", 40, 400.0),
                ("fixed region 16 mm", 80, 200.0),
                ("fixed voxel 400 um", 20, 400.0), ("fixed voxel 400 um", 80, 400.0)])
    report["scaling"] = bench_scaling(params, ahm, sc_patients, configs)
    report["scaling_patients"] = [p.id for p in sc_patients]
    report["load_avg_end"] = loadavg()

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=float))
    print_report(report)
    print(f"\nwrote {out_path}")
    return 0


def main_marrow_only(params, protocol, out_path: Path) -> int:
    """``--marrow-only``: the marrow update alone, the draw costs, and 3 whole kernel-only simulations."""
    report = {"machine": machine_info(), "marrow_only": True, "load_avg_start": loadavg()}
    say("warm-up (load cached kernels in this process) ...")
    nksim.simulate(params, protocol, seed=0)
    say("marrow_update alone ...")
    report["marrow_update"] = bench_marrow_update(params, protocol, n_calls=200)
    report["rng_ns"] = bench_rng()
    patients = list(protocol.patients[:3])
    say("3 kernel-only simulations ...")
    kernel_loop(params, protocol, patients[:1])
    t = timed(lambda: kernel_loop(params, protocol, patients), 2)
    vox, _ = marrow_counts(params, protocol, len(patients))
    report["kernel_only"] = {**strip(t), "patients": [p.id for p in patients],
                             "s_per_simulation": t[STAT] / len(patients),
                             "cpu_s_per_simulation": t["cpu_min_s"] / len(patients),
                             "cpu_ns_per_voxel_day": t["cpu_min_s"] / vox * 1e9}
    report["load_avg_end"] = loadavg()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=float))
    mu, k = report["marrow_update"], report["kernel_only"]
    print(f"load average start {report['load_avg_start']}, end {report['load_avg_end']}")
    print(f"marrow_update alone (side {mu['side']}, K {mu['capacity']}, occupancy {mu['mean_occupancy']:.2f}, "
          f"blast fraction {mu['blast_fraction']:.2f}): {mu['ns_per_voxel']:.0f} ns per voxel-day "
          f"(no spread {mu['ns_per_voxel_no_spread']:.0f}, with a drug hazard "
          f"{mu['ns_per_voxel_with_drug_hazard']:.0f}; late state, blast fraction "
          f"{mu['late_blast_fraction']:.2f}: {mu['ns_per_voxel_late']:.0f})")
    print(f"kernel only, {len(k['patients'])} simulations: {k['s_per_simulation']:.3f} s per simulation "
          f"(CPU {k['cpu_s_per_simulation']:.3f} s; {k['cpu_ns_per_voxel_day']:.0f} CPU ns per voxel-day, "
          f"everything included; wall/CPU {k['wall_over_cpu']:.2f})")
    print("draw cost (ns): " + ", ".join(f"{k_} {v:.0f}" for k_, v in report["rng_ns"].items()))
    print(f"wrote {out_path}")
    return 0


def yesno(b: bool) -> str:
    return "met" if b else "NOT met"


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"nksim {m['nksim']} engine benchmark  ({m['date_utc']}, {m['cpu_count']} CPUs, {m['platform']}, "
          f"python {m['python']}, numba {m['numba']}){'  [--quick]' if r['quick'] else ''}")
    print("serial = workers=1 (one core); times are wall-clock, best of the repeats (medians in the JSON), "
          f"after compilation; load average (1, 5, 15 min) at start {r.get('load_avg_start')}, "
          f"end {r.get('load_avg_end')}")
    ratios = [t["wall_over_cpu"] for t in r["throughput"]] + [x["wall_over_cpu"] for x in r["scaling"]]
    worst = max((x for x in ratios if x), default=1.0)
    print(f"WARNING: serial wall/CPU time up to {worst:.2f}: other processes shared the cores, wall-clock rates are "
          "inflated; rerun on a quiet machine (--wait-quiet)\n" if worst > 1.15 else
          f"serial wall/CPU time <= {worst:.2f}: the machine was quiet enough\n")

    if "compile" in r:
        c = r["compile"]
        cold, ca = c["cold"], c["cached_median"]
        print("1. start-up: fresh interpreter, import nksim + first small simulation")
        print(f"   {'':10} {'import':>8} {'1st sim':>8} {'2nd sim':>8} {'import+1st':>11} {'process':>8}")
        for lab, d in (("cold", cold), ("cached", ca)):
            print(f"   {lab:10} {d['import_s']:8.2f} {d['first_sim_s']:8.2f} {d['second_sim_s']:8.3f} "
                  f"{d['total_s']:11.2f} {d['process_wall_s']:8.2f}   s")
        print(f"   compile (cold 1st - 2nd sim): {cold['compile_or_load_s']:.1f} s; cache load: "
              f"{ca['compile_or_load_s']:.2f} s; cold/cached start-up ratio {c['cold_over_cached_total']:.1f}x")
        print(f"   target cached import+compile < {c['target_cached_total_s']:g} s: {yesno(c['target_met'])} "
              f"({ca['total_s']:.2f} s)\n")

    print("2. throughput (simulate_cohort, serial, default model)")
    print(f"   {'protocol':14} {'sims':>5} {'patient-days':>13} {'time s':>7} {'patient-days/s':>15} {'s/sim':>7} "
          f"{'wall/CPU':>8} {'patient-days/CPU-s':>18}")
    for t in r["throughput"]:
        print(f"   {t['protocol']:14} {t['patients'] * t['replicates']:5d} {t['patient_days']:13.0f} "
              f"{t[STAT]:7.2f} {t['patient_days_per_s']:15.0f} {t['s_per_simulation']:7.3f} {t['wall_over_cpu']:8.2f} "
              f"{t['patient_days_per_cpu_s']:18.0f}")

    j = r["job"]
    print("\n3. default `nksim run` job: 10 patients x 1 replicate, day -9..365 (simulate_cohort)")
    print(f"   serial (workers=1):  {j['workers1'][STAT]:.2f} s (median {j['workers1']['median_s']:.2f} s, "
          f"wall/CPU {j['workers1']['wall_over_cpu']:.2f}) "
          f"(target < {j['target_serial_s']:g} s: {yesno(j['serial_target_met'])}; "
          f"aim < {j['aim_serial_s']:g} s: {yesno(j['serial_aim_met'])})")
    print(f"   threads (workers=2): {j['workers2'][STAT]:.2f} s (median {j['workers2']['median_s']:.2f} s) "
          f"-> speed-up {j['speedup_workers2']:.2f}x, "
          f"parallel efficiency {100 * j['parallel_efficiency_workers2']:.0f} % "
          f"(ideal {j['ideal_speedup_workers2']:.2f}x: "
          "simulate_cohort runs 1 simulation alone before the pool)")
    print(f"   kernel calls only:   {j['kernel_only_serial'][STAT]:.2f} s -> Python overhead "
          f"(effects, events, build_dataset) {j['python_overhead_s']:.2f} s = "
          f"{100 * j['python_overhead_fraction']:.0f} %")
    if j.get("cli_end_to_end_s"):
        print(f"   end-to-end `nksim run` (new process: import, cache load, simulate, netCDF, PNG): "
              f"{j['cli_end_to_end_s']:.2f} s")

    d = r["decomposition"]
    print(f"\n4. where the time goes (kernel only, serial, {len(d['patients'])} patients)")
    print("   " + d["method"])
    nn, st = d["no_nk"], d["nk_stress"]
    print(f"   homing 0 (marrow + blood, no agents): {nn[STAT]:.2f} s (CPU {nn['cpu_min_s']:.2f} s -> "
          f"{nn['voxel_updates_per_cpu_s'] / 1e6:.2f} M voxel updates per CPU-s) -> "
          f"{nn['voxel_updates_per_s'] / 1e6:.2f} M "
          f"voxel updates/s = {nn['cell_equiv_updates_per_s'] / 1e9:.2f} G cell-equivalent updates/s "
          f"({nn['ns_per_voxel_update']:.0f} ns/voxel update)")
    print(f"   default:            {d['default'][STAT]:.2f} s, "
          f"{d['default']['agent_updates'] / 1e6:.2f} M agent-steps "
          f"(CPU time default - homing 0 = {d['default']['cpu_diff_vs_no_nk_s']:+.3f} s, noise level)")
    print(f"   NK dose x{st['dose_factor']:g}:        {st[STAT]:.2f} s, {st['agent_updates'] / 1e6:.1f} M agent-steps "
          f"(peak {st['peak_agents_max']:.0f} agents) -> {st['agent_updates_per_s'] / 1e6:.1f} M agent-updates/s "
          f"({st['ns_per_agent_update']:.0f} ns each)")
    print(f"   => agents cost ~{100 * d['default_agent_fraction_estimate']:.2f} % of a default run "
          f"(peak {d['default_peak_agents_max']:.0f} agents); the marrow update is the rest")
    mu = r["marrow_update"]
    print(f"   marrow_update alone (side {mu['side']}, K {mu['capacity']}, occupancy {mu['mean_occupancy']:.2f}): "
          f"{mu['ms_per_call']:.2f} ms/call = {mu['ns_per_voxel']:.0f} ns/voxel "
          f"({mu['voxel_updates_per_s'] / 1e6:.2f} M voxel updates/s); "
          f"x{mu['marrow_calls_per_patient']} calls/patient = "
          f"{mu['ms_per_call'] * mu['marrow_calls_per_patient'] / 1e3:.2f} s/patient")
    print(f"     pass 2 (daughter placement / neighbour split) = {100 * mu['pass2_neighbour_fraction']:.0f} % of it; "
          f"with a drug hazard {mu['ns_per_voxel_with_drug_hazard']:.0f} ns/voxel")
    print("   draw cost (ns): " + ", ".join(f"{k} {v:.0f}" for k, v in r["rng_ns"].items()))

    print(f"\n5. lattice scaling (kernel only, serial, patients {', '.join(r['scaling_patients'])}; "
          "cost/40 (CPU time), vox/40: relative to the default 40 x 40 voxels of 400 um)")
    print(f"   {'series':20} {'side':>4} {'voxel um':>8} {'K':>5} {'voxels':>6} {'s/sim':>6} {'pat-d/s':>7} "
          f"{'Mvox/s':>7} {'ns/vox':>6} {'cost/40':>7} {'vox/40':>6} {'peak agents':>11} {'wall/CPU':>8} "
          f"{'CPU ns/vox':>10}")
    for s in r["scaling"]:
        print(f"   {s['series']:20} {s['side']:4d} {s['voxel_side_um']:8.0f} {s['capacity']:5d} {s['n_voxels']:6d} "
              f"{s['s_per_simulation']:6.3f} {s['patient_days_per_s']:7.0f} {s['voxel_updates_per_s'] / 1e6:7.2f} "
              f"{s['ns_per_voxel_update']:6.0f} {s['cpu_cost_vs_side40']:7.2f} {s['voxels_vs_side40']:6.2f} "
              f"{s['peak_agents_mean']:11.0f} {s['wall_over_cpu']:8.2f} {s['ns_per_voxel_update_cpu']:10.0f}")


if __name__ == "__main__":
    sys.exit(main())
