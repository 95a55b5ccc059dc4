"""Cost of a simulation when donor NK cells expand: the trial's expanded product vs a fresh product.

    python benchmarks/bench_expansion.py            # about 1-2 min on 2 cores
    python benchmarks/bench_expansion.py --quick    # fewer replicates

Since 0.3.0 a fresh product after Hi-Cy/Flu + IL-2 can expand in vivo (Bachanova 2014), which
multiplies the donor NK agents in the marrow region; the agent loop then costs in proportion.
This benchmark simulates, at the default resolution (40 x 40 voxels, 1 h steps) and on one
thread, the trial's protocol (expanded product, no cytokine) and the Bachanova 2014 protocol
(fresh product, IL-2), each to day 28 after the first infusion, and reports per simulation:
wall and CPU time, the peak number of donor NK agents in the region, the agent-steps processed
and the agent-step rate (agent-steps over the simulation's CPU time: an upper bound on the agent
loop's cost share). Written to ``outputs/benchmarks/bench_expansion.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, source_digest  # noqa: E402

import nksim  # noqa: E402
from nksim.engine import layout as L  # noqa: E402
from nksim.engine.build import resolution  # noqa: E402
from nksim.simulate import run_one, warm_up  # noqa: E402


def bench(params, protocol, replicates: int) -> dict:
    runs, walls, cpus = [], [], []
    for p in protocol.patients:
        for r in range(replicates):
            w0, c0 = time.perf_counter(), time.process_time()
            runs.append(run_one(params, protocol, p, 0, r))
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    spd = resolution(params).steps_per_day
    agents = np.array([r.rec[:, L.R.donor_nk_agents].max() for r in runs])
    steps = np.array([r.rec[:-1, L.R.donor_nk_agents].sum() * spd for r in runs])
    cpu = np.array(cpus)
    return {"protocol": protocol.name, "nk_product": protocol.nk_product, "simulations": len(runs),
            "wall_s_median": float(np.median(walls)), "cpu_s_median": float(np.median(cpu)),
            "cpu_s_max": float(cpu.max()),
            "peak_agents_median": float(np.median(agents)), "peak_agents_max": float(agents.max()),
            "agent_steps_median": float(np.median(steps)), "agent_steps_max": float(steps.max()),
            "agent_steps_per_cpu_s_of_largest": float(steps[np.argmax(steps)] / cpu[np.argmax(steps)])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "bench_expansion.json")
    a = ap.parse_args(argv)
    params = nksim.load_parameters("default")
    reps = 1 if a.quick else 3
    warm_up(params)  # compile or load the kernel before timing
    rows = []
    for name in ("ahmadvand2023", "bachanova2014_hi_cy_flu"):
        proto = nksim.load_protocol(name)
        proto = replace(proto, end_day=28.0, snapshot_days=(), assessment_days=(28.0,))
        rows.append(bench(params, proto, reps))
        print(json.dumps(rows[-1]), file=sys.stderr)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg": os.getloadavg(),
              "cores": os.cpu_count(), "nksim_version": nksim.__version__, "sources": source_digest(), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
