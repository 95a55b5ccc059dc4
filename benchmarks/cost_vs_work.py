"""Cost versus work: how the CPU time of one simulation grows with voxels, simulated days and NK agents.

    python benchmarks/cost_vs_work.py            # about 2-3 min on one core of a quiet machine
    python benchmarks/cost_vs_work.py --quick    # seconds (smoke test; numbers meaningless)

Kernel-only (``nksim.simulate.run_one``, one thread, the numba kernel loaded first), process CPU
time and wall time of each simulation, best of ``--repeats``; three series, each varying one kind
of work while holding the others:

* **voxels**: ``ahmadvand2023`` (expanded product), day -9..365, voxels of 400 um (K = 1600) at
  lattice sides 10, 20, 40, 80, 160 (the region grows with the side, and with it the agents in the
  region, which stay negligible at trial doses);
* **days**: the default 40 x 40 lattice, ``ahmadvand2023`` to end day 7, 28, 90, 180, 365 (start day -9);
* **agents**: the default lattice, ``bachanova2014_hi_cy_flu`` (fresh product, IL-2; expands in a
  minority of patients) and ``ahmadvand2023``, both to day 28, every NK dose x 1, 3, 10, 30, 100:
  more live donor NK agents in the marrow region at the same marrow work.

Fits (least squares, CPU s per simulation): *voxels* and *days* series: cost = a + b x voxel-days
(voxel-days = side^2 x simulated days x 24 h / marrow_step), b = ns per voxel-day; *agents* series:
cost = a + c x agent-steps (sum over steps of live donor NK agents in the region), c = ns per
agent-step, with the marrow work constant within each protocol (one intercept per protocol).

Writes ``outputs/benchmarks/cost_vs_work.json`` and ``benchmarks/figures/cost_vs_work.png``.
Speed is reported, never asserted; the load average is recorded with every series.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
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


def scaled_nk(protocol, factor: float):
    """The protocol with every NK infusion dose multiplied by ``factor`` (as in bench_engine.py)."""
    groups = {g: [replace(e, dose=e.dose * factor) if e.kind == "nk_infusion" else e for e in ev]
              for g, ev in protocol.groups.items()}
    events = [replace(e, dose=e.dose * factor) if e.kind == "nk_infusion" else e for e in protocol.events]
    return protocol.with_events(events, groups)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(params, protocol, n_patients: int, repeats: int) -> dict:
    """CPU and wall seconds per simulation (mean over patients of the best of ``repeats``), and the work done."""
    res = resolution(params)
    side = int(params["lattice.side"])
    days = protocol.end_day - protocol.start_day
    cpus, walls, steps, peaks = [], [], [], []
    for p in protocol.patients[:n_patients]:
        best_c = best_w = float("inf")
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            raw = run_one(params, protocol, p, 0, 0)
            best_w = min(best_w, time.perf_counter() - w0)
            best_c = min(best_c, time.process_time() - c0)
        cpus.append(best_c)
        walls.append(best_w)
        agents = raw.rec[:, L.R.donor_nk_agents]
        steps.append(float(agents[:-1].sum()) * res.steps_per_day)
        peaks.append(float(agents.max()))
    marrow_per_day = 24.0 / float(params["numerics.marrow_step"])
    return {"side": side, "voxel_side_um": float(params["lattice.voxel_side"]), "voxels": side * side,
            "days": float(days), "voxel_days": side * side * float(days) * marrow_per_day,
            "protocol": protocol.name, "patients": n_patients,
            "cpu_s": float(np.mean(cpus)), "wall_s": float(np.mean(walls)), "cpu_s_each": cpus,
            "agent_steps": float(np.mean(steps)), "agent_steps_each": steps, "peak_agents_max": max(peaks),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def fit(x, y) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; returns (a, b)."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 patient, 1 repeat (smoke test)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--patients", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "cost_vs_work.json")
    ap.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "figures" / "cost_vs_work.png")
    a = ap.parse_args(argv)
    if a.quick:
        sides, ends, factors, npat, reps = [5, 10], [7.0, 28.0], [1.0, 3.0], 1, 1
    else:
        sides, ends, factors, npat, reps = [10, 20, 40, 80, 160], [7.0, 28.0, 90.0, 180.0, 365.0], \
            [1.0, 3.0, 10.0, 30.0, 100.0], a.patients, a.repeats
    base = nksim.load_parameters("default")
    warm_up(base)
    ahm = nksim.load_protocol("ahmadvand2023")
    info = {"date_utc": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(), "uptime_start": uptime(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": __import__("numba").__version__, "nksim": nksim.__version__, "sources": source_digest(),
            "quick": a.quick, "timing": f"kernel only (run_one), one thread, best of {reps} per patient, "
                                        f"mean over {npat} patients"}
    series: dict[str, list[dict]] = {"voxels": [], "days": [], "agents": []}
    for side in sides:
        p = base.with_values({"lattice.side": side, "lattice.voxel_side": 400.0}, origin="<cost_vs_work>")
        series["voxels"].append(measure(p, ahm, npat, reps))
        print("voxels", {k: series["voxels"][-1][k] for k in ("side", "cpu_s", "wall_s", "load_average")}, flush=True)
    for end in ends:
        pr = replace(ahm, end_day=end, snapshot_days=(), assessment_days=tuple(d for d in ahm.assessment_days
                                                                                if d <= end) or (end,))
        series["days"].append(measure(base, pr, npat, reps))
        print("days", {k: series["days"][-1][k] for k in ("days", "cpu_s", "wall_s", "load_average")}, flush=True)
    for name in ("bachanova2014_hi_cy_flu", "ahmadvand2023"):
        pr0 = nksim.load_protocol(name)
        pr0 = replace(pr0, end_day=28.0, snapshot_days=(), assessment_days=(28.0,))
        for f in factors:
            row = measure(base, scaled_nk(pr0, f), npat, reps)
            row["dose_factor"] = f
            row["nk_product"] = pr0.nk_product
            series["agents"].append(row)
            print("agents", name, f, {k: row[k] for k in ("agent_steps", "peak_agents_max", "cpu_s", "load_average")},
                  flush=True)
    info["uptime_end"] = uptime()

    # fits
    fits = {}
    for s in ("voxels", "days"):
        a0, b = fit([r["voxel_days"] for r in series[s]], [r["cpu_s"] for r in series[s]])
        fits[s] = {"intercept_s": a0, "ns_per_voxel_day": b * 1e9}
    # agents: one intercept per protocol (its marrow work), one common slope
    rows = series["agents"]
    protos = sorted({r["protocol"] for r in rows})
    X = np.array([[r["agent_steps"]] + [1.0 if r["protocol"] == q else 0.0 for q in protos] for r in rows])
    y = np.array([r["cpu_s"] for r in rows])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    fits["agents"] = {"ns_per_agent_step": float(coef[0]) * 1e9,
                      "intercept_s": {q: float(c) for q, c in zip(protos, coef[1:], strict=True)}}
    for q in protos:
        rq = [r for r in rows if r["protocol"] == q]
        a0, b = fit([r["agent_steps"] for r in rq], [r["cpu_s"] for r in rq])
        fits["agents"][f"ns_per_agent_step_{q}"] = b * 1e9
    report = {"machine": info, "series": series, "fits": fits}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(fits, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
    ax = axes[0]
    r = series["voxels"]
    x = np.array([q["voxels"] for q in r], float)
    ax.loglog(x, [q["cpu_s"] for q in r], "o", label="CPU")
    ax.loglog(x, [q["wall_s"] for q in r], "x", color="0.5", label="wall")
    xx = np.geomspace(x.min(), x.max(), 50)
    f = fits["voxels"]
    ax.loglog(xx, f["intercept_s"] + f["ns_per_voxel_day"] * 1e-9 * xx * r[0]["days"], "-", color="C0", lw=1,
              label=f"fit: {f['ns_per_voxel_day']:.0f} ns / voxel-day")
    ax.set_xlabel("voxels (400 µm, K = 1600)")
    ax.set_ylabel("s per simulation (374 days)")
    ax.set_title("lattice voxels", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    r = series["days"]
    x = np.array([q["days"] for q in r], float)
    ax.plot(x, [q["cpu_s"] for q in r], "o", label="CPU")
    ax.plot(x, [q["wall_s"] for q in r], "x", color="0.5", label="wall")
    f = fits["days"]
    ax.plot(x, f["intercept_s"] + f["ns_per_voxel_day"] * 1e-9 * x * r[0]["voxels"], "-", color="C0", lw=1,
            label=f"fit: {f['ns_per_voxel_day']:.0f} ns / voxel-day")
    ax.set_xlabel("simulated days (40 × 40 voxels)")
    ax.set_ylabel("s per simulation")
    ax.set_title("simulated days", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    fa = fits["agents"]
    for i, q in enumerate(protos):
        rq = [r for r in rows if r["protocol"] == q]
        x = np.array([r["agent_steps"] for r in rq], float)
        ax.loglog(x, [r["cpu_s"] for r in rq], "os"[i], color=f"C{i}", label=f"{q} (dose × 1…{factors[-1]:g})")
        xx = np.geomspace(max(x.min(), 1.0), x.max(), 50)
        ax.loglog(xx, fa["intercept_s"][q] + fa["ns_per_agent_step"] * 1e-9 * xx, "-", color=f"C{i}", lw=1)
    ax.set_xlabel("NK agent-steps per simulation (to day 28)")
    ax.set_ylabel("CPU s per simulation")
    ax.set_title(f"NK agents: fit {fa['ns_per_agent_step']:.0f} ns / agent-step", fontsize=9)
    ax.legend(fontsize=6)
    fig.suptitle(f"nksim {nksim.__version__}: cost vs work (kernel only, one thread; {info['date_utc'][:16]} UTC, "
                 f"load {info['uptime_start'].split('load average:')[-1].strip()})", fontsize=9)
    a.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png, dpi=80)
    print(f"wrote {a.out} and {a.png} ({a.png.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
