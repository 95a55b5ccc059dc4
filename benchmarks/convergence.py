"""Resolution convergence study: whether trial outcomes depend on the numerical resolution.

Run from the repository root::

    python benchmarks/convergence.py                  # 6 replicates per setting, about 3 min on 2 cores
    python benchmarks/convergence.py --quick          # 2 replicates, about 1 min
    python benchmarks/convergence.py --replicates 20  # the study reported in benchmarks/README.md (~10 min)

Each setting changes one numerical choice of the default model and runs the ahmadvand2023
cohort (10 patients x R replicates, seed fixed, workers=2):

* lattice resolution at a fixed 16 mm x 16 mm region (side x voxel_side constant, so the region's
  cell places, whole-body scale and agent numbers are unchanged): 20 x 800 um, 40 x 400 um
  (default), 80 x 200 um;
* numerics.dt (agents, blood, PK): 0.5, 1 (default), 2 h;
* numerics.marrow_step (marrow division/death): 12, 24 (default), 48 h.

Summaries, each with its Monte-Carlo standard error (SE):

* P(PD at day 28) among evaluable simulations (binomial SE, with (x+1)/(n+2) so 0 or 1 does not give SE 0);
* P(progressed by day 270) among evaluable simulations (same SE);
* median peak donor chimerism (% of blood NK), bootstrap SE;
* mean peak donor NK agents in the region, SE = SD/sqrt(n);
* mean marrow blast % on the last day (365), SE = SD/sqrt(n);
* mean blasts killed by NK by day 28 (whole-marrow estimate, 1e6 cells), SE = SD/sqrt(n): not an
  outcome, but the process the spatial and temporal resolution acts on most directly.

A setting is flagged when |summary - reference| > 3 x sqrt(SE_setting^2 + SE_ref^2) (the combined,
unpaired test). Because every setting uses the same seed, the patient random effects
(patient stream) are identical across settings (common random numbers), so the script also
reports a paired test: the SE of the per-simulation differences (bootstrap for the median), which
is much more sensitive; a paired flag alone means a small but systematic resolution effect.

Writes ``outputs/benchmarks/convergence.json``, ``convergence.png`` (summaries vs resolution) and
``convergence_paired.png`` (paired differences) -- ``convergence_quick*`` with ``--quick`` -- and
prints a table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _common import source_digest

import nksim
from nksim.engine import resolution

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "outputs" / "benchmarks"

#: (label, family, x value for the figure, parameter overrides); the first is the reference.
SETTINGS: list[tuple[str, str, float, dict]] = [
    ("reference (default)", "reference", 0.0, {}),
    ("lattice 20 x 800 um", "lattice", 800.0, {"lattice.side": 20, "lattice.voxel_side": 800.0}),
    ("lattice 80 x 200 um", "lattice", 200.0, {"lattice.side": 80, "lattice.voxel_side": 200.0}),
    ("dt 0.5 h", "dt", 0.5, {"numerics.dt": 0.5}),
    ("dt 2 h", "dt", 2.0, {"numerics.dt": 2.0}),
    ("marrow step 12 h", "marrow_step", 12.0, {"numerics.marrow_step": 12.0}),
    ("marrow step 48 h", "marrow_step", 48.0, {"numerics.marrow_step": 48.0}),
]
REF_X = {"lattice": 400.0, "dt": 1.0, "marrow_step": 24.0}
FAMILY_AXIS = {
    "lattice": "voxel side (µm)  [lattice side = 16 mm / voxel side]",
    "dt": "time step dt (h)",
    "marrow_step": "marrow step (h)",
}
FAMILY_TITLE = {"lattice": "(a) lattice resolution, fixed 16 mm region", "dt": "(b) time step",
                "marrow_step": "(c) marrow update step"}

#: summary key -> (label, unit)
SUMMARIES: dict[str, tuple[str, str]] = {
    "p_pd_day28": ("P(PD at day 28), evaluable", "1"),
    "p_progressed_by_270": ("P(progressed by day 270), evaluable", "1"),
    "median_peak_chimerism_nk": ("median peak donor chimerism", "% of blood NK"),
    "mean_peak_agents": ("mean peak donor NK agents in region", "agents"),
    "mean_final_blast_pct": ("mean marrow blasts on day 365", "% of nucleated"),
    "mean_nk_kills_d28": ("mean blasts killed by NK by day 28", "1e6 cells, whole marrow"),
}
PD = nksim.RESPONSE_CODES["PD"]
N_BOOT = 2000
Z_FLAG = 3.0


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def per_simulation(ds) -> dict[str, np.ndarray]:
    """Per-simulation observables, flattened over (patient, replicate); ``evaluable`` mask."""
    ev = np.broadcast_to(ds.evaluable.values[:, None].astype(bool), (ds.sizes["patient"], ds.sizes["replicate"]))
    ttp = ds.time_to_progression.values
    return {
        "evaluable": ev.ravel().copy(),
        "pd_day28": (ds.response.sel(assessment=28.0).values == PD).ravel().astype(float),
        "progressed_by_270": (np.isfinite(ttp) & (ttp <= 270.0)).ravel().astype(float),
        "peak_chimerism_nk": ds.donor_chimerism_nk.max("time").values.ravel(),
        "peak_agents": ds.donor_nk_agents.max("time").values.ravel(),
        "final_blast_pct": ds.marrow_blast_pct.isel(time=-1).values.ravel(),
        "nk_kills_d28": ds.nk_kills.sel(time=28.0).values.ravel() / 1e6,
        "group": np.broadcast_to(ds.group.values[:, None],
                                 (ds.sizes["patient"], ds.sizes["replicate"])).ravel().astype(str),
    }


def _prop(x: np.ndarray) -> tuple[float, float]:
    n = x.size
    k = float(x.sum())
    pt = (k + 1.0) / (n + 2.0)
    return k / n, float(np.sqrt(pt * (1.0 - pt) / n))


def _mean(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _median_boot(x: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, x.size, size=(N_BOOT, x.size))
    return float(np.median(x)), float(np.median(x[idx], axis=1).std(ddof=1))


def summarise(sim: dict[str, np.ndarray], seed: int = 12345) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    ev = sim["evaluable"]
    out = {}
    for key, (m, se) in {
        "p_pd_day28": _prop(sim["pd_day28"][ev]),
        "p_progressed_by_270": _prop(sim["progressed_by_270"][ev]),
        "median_peak_chimerism_nk": _median_boot(sim["peak_chimerism_nk"], rng),
        "mean_peak_agents": _mean(sim["peak_agents"]),
        "mean_final_blast_pct": _mean(sim["final_blast_pct"]),
        "mean_nk_kills_d28": _mean(sim["nk_kills_d28"]),
    }.items():
        out[key] = {"value": m, "se": se}
    g1 = sim["peak_agents"][sim["group"] == "g1"]
    out["_extra"] = {"n_simulations": int(ev.size), "n_evaluable": int(ev.sum()),
                     "low_dose_g1_peak_agents_min": float(g1.min()) if g1.size else None,
                     "low_dose_g1_peak_agents_median": float(np.median(g1)) if g1.size else None,
                     "low_dose_g1_fraction_peak_ge_100": float((g1 >= 100).mean()) if g1.size else None}
    return out


def paired(sim: dict[str, np.ndarray], ref: dict[str, np.ndarray], seed: int = 54321) -> dict[str, dict]:
    """Differences setting - reference over the same (patient, replicate) simulations, with paired SEs."""
    rng = np.random.default_rng(seed)
    ev = ref["evaluable"]
    out = {}
    pairs = {
        "p_pd_day28": (sim["pd_day28"][ev], ref["pd_day28"][ev], np.mean),
        "p_progressed_by_270": (sim["progressed_by_270"][ev], ref["progressed_by_270"][ev], np.mean),
        "median_peak_chimerism_nk": (sim["peak_chimerism_nk"], ref["peak_chimerism_nk"], np.median),
        "mean_peak_agents": (sim["peak_agents"], ref["peak_agents"], np.mean),
        "mean_final_blast_pct": (sim["final_blast_pct"], ref["final_blast_pct"], np.mean),
        "mean_nk_kills_d28": (sim["nk_kills_d28"], ref["nk_kills_d28"], np.mean),
    }
    for key, (a, b, stat) in pairs.items():
        diff = float(stat(a) - stat(b))
        if stat is np.mean:
            d = a - b
            se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
        else:
            idx = rng.integers(0, a.size, size=(N_BOOT, a.size))
            se = float((np.median(a[idx], axis=1) - np.median(b[idx], axis=1)).std(ddof=1))
        out[key] = {"diff": diff, "se": se}
    return out


def run_setting(base, protocol, overrides: dict, replicates: int, seed: int, workers: int):
    params = base.with_values(overrides, origin="convergence") if overrides else base
    res = resolution(params)
    t0 = time.perf_counter()
    ds = nksim.simulate_cohort(params, protocol, replicates=replicates, seed=seed, workers=workers)
    wall = time.perf_counter() - t0
    info = {"side": res.side, "voxel_side_um": params["lattice.voxel_side"], "capacity": res.capacity,
            "dt_h": params["numerics.dt"], "marrow_step_h": params["numerics.marrow_step"],
            "region_mm": res.side * params["lattice.voxel_side"] / 1000.0, "wall_s": wall}
    return ds, info


def compare(summ: dict, ref: dict, pair: dict) -> dict:
    out = {}
    for key in SUMMARIES:
        d = summ[key]["value"] - ref[key]["value"]
        se = float(np.hypot(summ[key]["se"], ref[key]["se"]))
        z = d / se if se > 0 else (0.0 if d == 0 else float("inf"))
        pd_, pse = pair[key]["diff"], pair[key]["se"]
        pz = pd_ / pse if pse > 0 else (0.0 if pd_ == 0 else float("inf"))
        out[key] = {"diff": d, "combined_se": se, "z": z, "flag": bool(abs(z) > Z_FLAG),
                    "paired_se": pse, "paired_z": pz, "paired_flag": bool(abs(pz) > Z_FLAG)}
    return out


def _finish_figure(fig, axes, title: str, path: Path, *, ncol: int, rect: tuple) -> None:
    """One legend for all panels (unique labels), title, layout; save atomically and close."""
    import matplotlib.pyplot as plt

    handles, labels = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8.5, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def figure(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = results[0]
    fams = ["lattice", "dt", "marrow_step"]
    keys = list(SUMMARIES)
    fig, axes = plt.subplots(len(keys), len(fams), figsize=(12.5, 2.55 * len(keys) + 0.8), squeeze=False)
    for j, fam in enumerate(fams):
        rows = [r for r in results if r["family"] == fam] + [dict(ref, x=REF_X[fam])]
        rows.sort(key=lambda r: r["x"])
        xs = np.array([r["x"] for r in rows])
        for i, key in enumerate(keys):
            ax = axes[i, j]
            v = np.array([r["summary"][key]["value"] for r in rows])
            e = np.array([r["summary"][key]["se"] for r in rows])
            rv, re_ = ref["summary"][key]["value"], ref["summary"][key]["se"]
            ax.axhspan(rv - 3 * re_, rv + 3 * re_, color="0.88", zorder=0, label="reference +/- 3 SE")
            ax.axhline(rv, color="0.5", lw=0.8, zorder=1)
            ax.errorbar(xs, v, yerr=e, fmt="o-", color="C0", capsize=3, zorder=3, label="estimate +/- 1 SE")
            for r in rows:
                if r is not ref and r.get("compare", {}).get(key, {}).get("flag"):
                    ax.plot(r["x"], r["summary"][key]["value"], "s", ms=11, mfc="none", mec="C3", mew=2,
                            zorder=4, label="> 3 combined SE from reference")
            ax.plot([REF_X[fam]], [rv], "D", color="k", ms=5, zorder=5, label="reference (default)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.minorticks_off()
            lab, unit = SUMMARIES[key]
            if j == 0:
                ax.set_ylabel(f"{lab}\n({unit})", fontsize=8.5)
            if i == 0:
                ax.set_title(FAMILY_TITLE[fam], fontsize=10)
            if i == len(keys) - 1:
                ax.set_xlabel(FAMILY_AXIS[fam], fontsize=8.5)
            if key.startswith("p_"):
                lo, hi = ax.get_ylim()
                ax.set_ylim(max(lo, -0.02), min(hi, 1.02))
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    _finish_figure(fig, axes, title, path, ncol=4, rect=(0, 0.03, 1, 0.97))


def figure_paired(results: list[dict], path: Path, title: str) -> None:
    """Setting - reference over the same simulations (common random numbers), +/- 1 and 3 paired SE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(SUMMARIES)
    others = results[1:]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2), squeeze=False)
    y = np.arange(len(others))
    for ax, key in zip(axes.ravel(), keys):
        d = np.array([r["paired"][key]["diff"] for r in others])
        e = np.array([r["paired"][key]["se"] for r in others])
        ax.axvline(0.0, color="0.4", lw=0.8)
        ax.errorbar(d, y, xerr=3 * e, fmt="none", ecolor="0.7", elinewidth=5, label="+/- 3 paired SE")
        ax.errorbar(d, y, xerr=e, fmt="o", color="C0", capsize=3, label="difference +/- 1 paired SE")
        bad = [r["compare"][key]["paired_flag"] for r in others]
        if any(bad):
            ax.plot(d[bad], y[bad], "s", ms=11, mfc="none", mec="C3", mew=2, label="> 3 paired SE")
        ax.set_yticks(y)
        ax.set_yticklabels([r["label"] for r in others], fontsize=8)
        ax.invert_yaxis()
        lab, unit = SUMMARIES[key]
        ax.set_xlabel(f"setting - reference ({unit})", fontsize=8.5)
        ax.set_title(lab, fontsize=9.5)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    _finish_figure(fig, axes, title, path, ncol=3, rect=(0, 0.04, 1, 0.95))


def fmt(key: str, v: float) -> str:
    return f"{v:.3f}" if key.startswith("p_") else f"{v:.3g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 replicates per setting (about 1 min)")
    ap.add_argument("--replicates", type=int, default=None, help="replicates per patient and setting (default 6)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default=None, help="output file stem in outputs/benchmarks (default convergence)")
    ap.add_argument("--model", default="default", help="parameter set name or TOML path (default: default)")
    ap.add_argument("--protocol", default="ahmadvand2023", help="protocol name or TOML path")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter in every setting, e.g. --set nk.kill_probability=0.7 (repeatable)")
    args = ap.parse_args(argv)
    reps = args.replicates or (2 if args.quick else 6)
    name = args.name or ("convergence_quick" if args.quick else "convergence")

    base = nksim.load_parameters(args.model)
    if args.set:
        over = {}
        for item in args.set:
            key, _, val = item.partition("=")
            over[key.strip()] = float(val)
        base = base.with_values(over, origin="--set")
    protocol = nksim.load_protocol(args.protocol)
    say("warm-up (load cached kernels) ...")
    nksim.simulate(base, protocol, seed=0)

    t_start = time.perf_counter()
    results, sims = [], []
    for label, fam, x, over in SETTINGS:
        say(f"{label}: {len(protocol.patients)} patients x {reps} replicates, workers={args.workers} ...")
        ds, info = run_setting(base, protocol, over, reps, args.seed, args.workers)
        sim = per_simulation(ds)
        sims.append(sim)
        summ = summarise(sim)
        extra = summ.pop("_extra")
        results.append({"label": label, "family": fam, "x": x, "overrides": over, "resolution": info,
                        "summary": summ, **extra})
        say(f"   {info['wall_s']:.1f} s")
    ref = results[0]
    for r, sim in zip(results[1:], sims[1:]):
        r["paired"] = paired(sim, sims[0])
        r["compare"] = compare(r["summary"], ref["summary"], r["paired"])
    flagged = [r["label"] for r in results[1:] if any(c["flag"] for c in r["compare"].values())]
    pflagged = [r["label"] for r in results[1:] if any(c["paired_flag"] for c in r["compare"].values())]

    report = {
        "date_utc": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "nksim": nksim.__version__, "engine_sources": source_digest()},
        "model": base.name, "parameter_status": base.status, "parameter_overrides": args.set,
        "protocol": protocol.name,
        "replicates": reps, "seed": args.seed, "workers": args.workers,
        "total_wall_s": time.perf_counter() - t_start,
        "flag_rule": f"|setting - reference| > {Z_FLAG:g} x sqrt(SE_setting^2 + SE_reference^2) (combined, unpaired); "
                     f"paired_flag: |mean or median paired difference| > {Z_FLAG:g} x its paired SE",
        "se_methods": {"p_*": "binomial, sqrt(p~(1-p~)/n) with p~ = (x+1)/(n+2), evaluable simulations",
                       "median_peak_chimerism_nk": f"bootstrap ({N_BOOT} resamples of simulations)",
                       "mean_*": "SD/sqrt(n) over simulations (all 10 patients x replicates)"},
        "flagged_combined": flagged,
        "flagged_paired": pflagged,
        "settings": results,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    jpath, ppath = OUT_DIR / f"{name}.json", OUT_DIR / f"{name}.png"
    ppath2 = OUT_DIR / f"{name}_paired.png"
    jpath.write_text(json.dumps(report, indent=2, default=float))
    figure(results, ppath, f"nksim resolution convergence: {protocol.name}, model '{base.name}' "
                           f"({base.status}), {len(protocol.patients)} patients x {reps} replicates per setting, "
                           f"seed {args.seed}")
    figure_paired(results, ppath2, f"Paired differences from the reference (same seed, patients and replicates; "
                                   f"{len(protocol.patients)} patients x {reps} replicates)")
    print_report(report)
    print(f"\nwrote {jpath}\nwrote {ppath}\nwrote {ppath2}")
    return 0


def print_report(r: dict) -> None:
    extra = f" with {', '.join(r['parameter_overrides'])}" if r.get("parameter_overrides") else ""
    print(f"resolution convergence: {r['protocol']} x model '{r['model']}'{extra}, "
          f"{r['replicates']} replicates/patient, "
          f"seed {r['seed']}, workers {r['workers']} ({r['date_utc']}, {r['total_wall_s']:.0f} s)")
    print(f"flag: {r['flag_rule']}")
    print("reference (default) = 40 x 40 voxels of 400 um, dt 1 h, marrow step 24 h; summaries +/- 1 SE\n")
    keys = list(SUMMARIES)
    short = {"p_pd_day28": "P(PD d28)", "p_progressed_by_270": "P(prog<=270)",
             "median_peak_chimerism_nk": "med peak chim %", "mean_peak_agents": "mean peak agents",
             "mean_final_blast_pct": "mean blast% d365", "mean_nk_kills_d28": "NK kills d28 (1e6)"}
    head = f"{'setting':21} {'n':>4} {'wall s':>6} " + " ".join(f"{short[k]:>22}" for k in keys)
    print(head)
    for res in r["settings"]:
        cells = []
        for k in keys:
            s = res["summary"][k]
            mark = ""
            if "compare" in res:
                c = res["compare"][k]
                mark = " *" if c["flag"] else (" p" if c["paired_flag"] else "  ")
            else:
                mark = "  "
            cells.append(f"{fmt(k, s['value']):>9} +/- {fmt(k, s['se']):<8}{mark}")
        print(f"{res['label'][:21]:21} {res['n_simulations']:4d} {res['resolution']['wall_s']:6.1f} " + " ".join(cells))
    print("\nz = (setting - reference) / combined SE   [paired z over the same simulations]")
    print(f"{'setting':21} " + " ".join(f"{short[k]:>22}" for k in keys))
    for res in r["settings"][1:]:
        print(f"{res['label'][:21]:21} " + " ".join(
            f"{res['compare'][k]['z']:+9.2f} [{res['compare'][k]['paired_z']:+7.2f}]    " for k in keys))
    print("\n* = more than 3 combined SE from the reference; p = only the paired test exceeds 3 SE")
    print("low-dose group g1, peak agents in region (docs/model.md: >= ~100): " + "; ".join(
        f"{res['label'].split(' (')[0]}: min {res['low_dose_g1_peak_agents_min']:.0f}, "
        f"median {res['low_dose_g1_peak_agents_median']:.0f}" for res in r["settings"]))
    print("\nverdict: " + ("no setting differs from the reference beyond 3 combined SE"
                           if not r["flagged_combined"]
                           else "differ beyond 3 combined SE: " + ", ".join(r["flagged_combined"])))
    print("paired (common random numbers) test: " + ("no setting flagged" if not r["flagged_paired"]
                                                    else "flagged: " + ", ".join(r["flagged_paired"])))


if __name__ == "__main__":
    sys.exit(main())
