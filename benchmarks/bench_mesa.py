"""Speed ratio: the numba engine vs the Mesa reference model (``nksim.mesa_ref``).

Run from the repository root::

    python benchmarks/bench_mesa.py              # K = 4 at sides 50, 200, 500; K = 16, 64 at 50, 200: ~3 min
    python benchmarks/bench_mesa.py --quick      # K = 4 at sides 20, 50, 100: ~10 s

Both implementations simulate the same patient (same parameters, protocol, seed, hence
the same virtual patient), in the same process, one after the other, on one core:

* same lattice (``side`` x ``side`` voxels), same voxel capacity ``K`` = 4, 16 or 64 (voxel_side
  20, 40 or 80 um, cell_diameter 10 um; the engine's default is K = 1600, but the reference
  keeps one agent per cell, so K is kept small, which favours the reference: the engine's
  cost per voxel grows slowly with K, the reference's in proportion), same rules and time steps
  (dt 1 h, marrow step 24 h), same horizon: day -1 to day 1 (48 steps,
  2 marrow updates) with Flu 25 mg m-2 and Cy 30 mg kg-1 on day -1 and 1e7 NK kg-1 on day 0;
* timed: one whole simulation from the parameter set to the raw daily arrays
  (``nksim.simulate.run_one`` vs ``nksim.mesa_ref.run_reference``), lattice set-up included;
  the engine's numba kernel is compiled (cached) before timing. The engine is timed several
  times (minimum reported); the reference once at sides >= 200.

Writes ``outputs/benchmarks/bench_mesa.json`` (``bench_mesa_quick.json``) and prints a
table. Speed is reported, never asserted; the machine is shared, so timings are noisy.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path

import mesa
import numpy as np

import nksim
from nksim.mesa_ref import PatientModel
from nksim.protocol import EVENT_UNITS, protocol_from_dict
from nksim.simulate import run_one

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "outputs" / "benchmarks"
TARGET_RATIO = 500.0  # issue 13, goal 5: engine >= 500x faster than the reference at side 200 for every K
# (an earlier issue asked for >= 300x at side >= 200)
SEED = 1


def scenario(side: int, edge: int):
    """Parameters (``edge`` cells per voxel edge, K = edge^2) and the benchmark protocol."""
    params = nksim.load_parameters("default").with_values(
        {"lattice.side": side, "lattice.voxel_side": 10.0 * edge, "lattice.cell_diameter": 10.0},
        origin="<bench_mesa>")

    def ev(day, kind, dose):
        return {"day": day, "kind": kind, "dose": dose, "unit": EVENT_UNITS[kind]}

    protocol = protocol_from_dict({
        "protocol": {"name": "bench_mesa", "start_day": -1, "end_day": 1, "assessment_days": [1],
                     "infusions_after_lymphodepletion": False, "nk_product": "expanded"},
        "events": [ev(-1, "fludarabine", 25.0), ev(-1, "cyclophosphamide", 30.0), ev(0, "nk_infusion", 1e7)],
        "patients": [{"id": "bench", "group": "a"}],
    }, "<bench_mesa>")
    return params, protocol


def time_engine(params, protocol, repeats: int) -> dict:
    pat = protocol.patients[0]
    run_one(params, protocol, pat, SEED, 0)  # load / compile the kernel
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        raw = run_one(params, protocol, pat, SEED, 0)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"min_s": min(walls), "median_s": float(np.median(walls)), "all_s": walls, "cpu_s": cpus,
            "nk_agents_final": int(raw.cnt[-1, nksim.engine.layout.C.nk_agents]),
            "cells_final": int(raw.cnt[-1, :3].sum())}


def time_mesa(params, protocol, repeats: int) -> dict:
    walls, inits, cpus = [], [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        model = PatientModel(params, protocol, seed=SEED)
        t1 = time.perf_counter()
        model.run()
        raw = model.raw_run()
        walls.append(time.perf_counter() - t0)
        inits.append(t1 - t0)
        cpus.append(time.process_time() - c0)
        n_agents = len(model.agents)
        del model
    return {"min_s": min(walls), "median_s": float(np.median(walls)), "all_s": walls, "init_s": inits, "cpu_s": cpus,
            "agents_final": n_agents, "nk_agents_final": int(raw.cnt[-1, nksim.engine.layout.C.nk_agents]),
            "cells_final": int(raw.cnt[-1, :3].sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K = 4 at sides 20, 50, 100")
    ap.add_argument("--sides", type=int, nargs="*", help="lattice sides, K = 4 (default: see module docstring)")
    args = ap.parse_args(argv)
    if args.sides:
        cases = [(s, 2) for s in args.sides]
    elif args.quick:
        cases = [(20, 2), (50, 2), (100, 2)]
    else:
        cases = [(50, 2), (200, 2), (500, 2), (50, 4), (200, 4), (50, 8), (200, 8)]
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(),
        "python": platform.python_version(), "numpy": np.__version__, "mesa": mesa.__version__,
        "nksim": nksim.__version__, "numba": __import__("numba").__version__,
        "held_equal": "lattice side, K, dt 1 h, marrow step 24 h, rules and parameters (models/default.toml), "
                      "protocol day -1..1 (Flu/Cy day -1, 1e7 NK/kg day 0), seed; one core, same process",
    }
    rows = []
    for side, edge in cases:
        params, protocol = scenario(side, edge)
        eng = time_engine(params, protocol, repeats=10 if side <= 100 else 5)
        ref = time_mesa(params, protocol, repeats=3 if side <= 100 else 1)
        ratio = ref["min_s"] / eng["min_s"]
        rows.append({"side": side, "voxels": side * side, "K": edge * edge, "engine": eng, "mesa": ref, "ratio": ratio,
                     "ratio_cpu": min(ref["cpu_s"]) / max(min(eng["cpu_s"]), 1e-9),
                     # the reference's stepping alone (its set-up excluded) over the whole engine run:
                     # what the ratio tends to over a longer horizon, where set-up is a small share
                     "ratio_steps_only": (ref["min_s"] - min(ref["init_s"])) / eng["min_s"],
                     "target_met": (ratio >= TARGET_RATIO) if side >= 200 else None})
        print(f"side {side:4d}, K {edge * edge:3d}: engine {eng['min_s'] * 1e3:9.2f} ms   Mesa {ref['min_s']:8.2f} s "
              f"(set-up {min(ref['init_s']):6.2f} s, {ref['agents_final']} agents)   ratio {ratio:9.0f}x", flush=True)
    info["load_avg_end"] = os.getloadavg()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / ("bench_mesa_quick.json" if args.quick else "bench_mesa.json")
    out.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print()
    print("| side | K | cell places | engine (ms) | Mesa reference (s) | of which set-up (s) | ratio | "
          "ratio, CPU | ratio, stepping only |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['side']} | {r['K']} | {r['voxels'] * r['K']:,} | {r['engine']['min_s'] * 1e3:.2f} | "
              f"{r['mesa']['min_s']:.2f} | {min(r['mesa']['init_s']):.2f} | {r['ratio']:,.0f}x | "
              f"{r['ratio_cpu']:,.0f}x | {r['ratio_steps_only']:,.0f}x |")
    print(f"\nload average {info['load_avg_start']} -> {info['load_avg_end']}; written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
