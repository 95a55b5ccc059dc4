"""Regenerate the two-infusion schedule study: both potency scenarios, summaries, figures and tables.

    python experiments/studies/two_infusion/run_study.py                 # the study (see REPORT.md)
    python experiments/studies/two_infusion/run_study.py --quick         # a smoke run (minutes)
    python experiments/studies/two_infusion/run_study.py --scheduler tcp://host:8786   # on a Dask cluster

The spec is ``schedules.toml`` beside this file. It is run once per **potency scenario** (the
NK-killing parameters that the trial cannot identify): ``default`` (the calibrated model, killing
at its literature values) and ``high_potency`` (``models/high_potency.toml``: the same with the
killing parameters at the potent end of their priors). Stores go to ``--out`` (default
``outputs/studies/two_infusion/``; resumable: a second run only finishes what is missing); the
figures and tables that ``REPORT.md`` shows are written to ``--report`` (default: the ``results/``
folder beside this file, which is committed).

Outputs per potency scenario ``<p>``: ``<p>.zarr`` (the sweep store), ``<p>_summary.nc``
(``nksim.sweep.summarize`` on the study's lymphodepletion clock, with paired contrasts against
the trial's schedule), and in ``--report``: ``contrasts_<p>.csv`` (one row per scenario),
``forest_<p>.png``, ``heatmap_<p>.png`` (difference in progression-free survival at the
landmark over interval x split) and ``km_<p>.png``, plus ``contrasts.md`` (both scenarios, the
table of REPORT.md) and ``study.json`` (run time, sizes, versions, digests).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "schedules.toml"
POTENCY = {"default": "default", "high_potency": "high_potency"}
#: contrasts reported in the table (name, label, scale factor for display, unit text)
TABLE_CONTRASTS = [
    ("pfs_landmark", "PFS at 9 months", 100.0, "points"),
    ("rmst_landmark", "RMST to 9 months", 1.0, "days"),
    ("blast_change_d28", "blast change day 28", 1.0, "points"),
    ("auc_chimerism_pbmc_d28", "chimerism AUC days 0-28", 1.0, "% day"),
]


def _contrast_rows(summary) -> list[dict]:
    rows = []
    for s in summary.scenario.values:
        r = summary.sel(scenario=s)
        row = {"scenario": int(s), "label": str(r.label.values), "reference": int(r.reference.values),
               "p_best": float(r.p_best.values) if "p_best" in summary else float("nan"),
               "pfs_landmark": float(r.pfs_landmark.values), "rmst_landmark": float(r.rmst_landmark.values)}
        for name, _, _, _ in TABLE_CONTRASTS:
            for suffix in ("_diff", "_diff_lo", "_diff_hi"):
                row[name + suffix] = float(r[name + suffix].values)
        rows.append(row)
    return rows


def _fmt_ci(row: dict, name: str, scale: float) -> str:
    d, lo, hi = (row[f"{name}{s}"] * scale for s in ("_diff", "_diff_lo", "_diff_hi"))
    star = " *" if lo > 0 or hi < 0 else ""
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]{star}"


def markdown_table(rows_by_potency: dict[str, list[dict]]) -> str:
    """The contrast table of REPORT.md: one row per scenario and potency scenario."""
    deltas = " | ".join(f"Δ {lab} ({unit})" for _, lab, _, unit in TABLE_CONTRASTS)
    head = f"| potency | scenario | PFS 9 mo | {deltas} | P(best) |"
    lines = [head, "|" + "---|" * (4 + len(TABLE_CONTRASTS))]
    for potency, rows in rows_by_potency.items():
        for row in sorted(rows, key=lambda r: -r["pfs_landmark_diff"]):
            ref = " (reference)" if row["scenario"] == row["reference"] else ""
            cells = [potency, row["label"] + ref, f"{100 * row['pfs_landmark']:.0f} %"]
            cells += [_fmt_ci(row, name, scale) for name, _, scale, _ in TABLE_CONTRASTS]
            cells.append(f"{row['p_best']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Δ: scenario minus the trial's schedule (interval 7 d, 50/50), paired over posterior draws x "
                 "patients x replicates (common random numbers); [95 % CI]; * the CI excludes 0. PFS and RMST "
                 "on the lymphodepletion clock (landmark day 279 = 270 days after the trial's first infusion).")
    return "\n".join(lines) + "\n"


def run(out: Path, report: Path, *, quick: bool = False, workers: int | None = None,
        scheduler: str | None = None) -> dict:
    """Run both potency scenarios and write summaries, figures and tables; returns the run record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import nksim
    from nksim.plot import contrast_forest, heatmap, km_plot
    from nksim.sweep import open_sweep, run_sweep, summarize

    out.mkdir(parents=True, exist_ok=True)
    report.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (report / "study.json").is_file():  # keep the timing of a run that computed what a resume skips
        previous = json.loads((report / "study.json").read_text(encoding="utf-8")).get("potency", {})
    record: dict = {"nksim_version": nksim.__version__, "spec": str(SPEC.relative_to(HERE.parents[2])),
                    "quick": quick, "potency": {}}
    rows_by_potency: dict[str, list[dict]] = {}
    t_all = time.perf_counter()
    for potency, model in POTENCY.items():
        overrides = [f'sweep.model="{model}"']
        if quick:
            overrides += ["cohort.patients=4", "cohort.draws=2", "cohort.replicates=1", "parameters.lattice.side=8",
                          "parameters.lattice.voxel_side=2000.0"]
        store = out / f"{potency}.zarr"
        t0 = time.perf_counter()
        rep = run_sweep(SPEC, store, workers=workers, scheduler=scheduler, overrides=overrides, progress=True)
        wall = time.perf_counter() - t0
        summary = summarize(store)
        summary.to_netcdf(out / f"{potency}_summary.nc")
        rows = _contrast_rows(summary)
        rows_by_potency[potency] = rows
        with open(report / f"contrasts_{potency}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        fig = contrast_forest(summary, ["pfs_landmark", "rmst_landmark", "blast_change_d28"])
        fig.suptitle(f"Paired contrasts vs the trial's schedule ({potency} potency)", fontsize=10)
        fig.savefig(report / f"forest_{potency}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        two = {"regimen": "trial", "gap": float(summary.gap.values[0]) if quick else 7.0, "n_infusions": 2,
               "nk_product": "expanded"}
        try:
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
            for ax, outcome, title in zip(axes, ["rmst_landmark_diff", "auc_chimerism_pbmc_d28_diff"],
                                          ["Δ RMST to 9 months (days)", "Δ chimerism AUC, days 0-28 (% day)"],
                                          strict=True):
                heatmap(summary, outcome, "interval", "dose_split", where=two, ax=ax)
                ax.set_title(title, fontsize=9)
            fig.suptitle(f"Two infusions of the trial's total dose vs the trial's schedule ({potency} potency; "
                         "paired differences)", fontsize=9)
            fig.savefig(report / f"heatmap_{potency}.png", dpi=120, bbox_inches="tight")
            plt.close(fig)
        except ValueError as exc:  # a quick run may not hold the full grid
            print(f"heatmap skipped: {exc}", file=sys.stderr)
        ds = open_sweep(store)
        best = sorted(rows, key=lambda r: -r["pfs_landmark_diff"])[:3]
        select = sorted({r["scenario"] for r in best} | {rows[0]["reference"]})
        fig = km_plot(ds, select=select)
        fig.axes[0].set_title(f"Progression-free survival, leading schedules and the trial's ({potency} potency)",
                              fontsize=9)
        fig.savefig(report / f"km_{potency}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        timing = {"wall_time_s": round(wall, 1), "workers": rep.workers, "batches_run": rep.batches_run}
        if rep.batches_run == 0 and potency in previous:  # nothing computed now: the earlier run's timing stands
            timing = {k: previous[potency].get(k) for k in timing}
        record["potency"][potency] = {
            "model": model, "store": str(store), "simulations": int(rep.n_simulations), **timing,
            "scenarios": int(summary.sizes["scenario"]),
            "plan_digest": ds.attrs.get("plan_digest"), "draws_from": ds.attrs.get("draws_from"),
            "clock": summary.attrs.get("clock")}
    record["wall_time_s"] = round(sum(float(v["wall_time_s"] or 0.0) for v in record["potency"].values()), 1)
    record["this_call_s"] = round(time.perf_counter() - t_all, 1)
    record["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    (report / "contrasts.md").write_text(markdown_table(rows_by_potency), encoding="utf-8")
    (report / "study.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/studies/two_infusion"), help="sweep stores")
    ap.add_argument("--report", type=Path, default=HERE / "results", help="figures and tables of REPORT.md")
    ap.add_argument("--quick", action="store_true", help="a tiny cohort on a tiny lattice (smoke run)")
    ap.add_argument("--workers", type=int, default=None, help="local Dask workers (default: all cores)")
    ap.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    a = ap.parse_args(argv)
    rec = run(a.out, a.report, quick=a.quick, workers=a.workers, scheduler=a.scheduler)
    print(json.dumps(rec, indent=2, default=str))
    return 0


if __name__ == "__main__":  # Dask's LocalCluster spawns processes: keep the guard
    sys.exit(main())
