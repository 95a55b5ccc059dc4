"""Regenerate the two-infusion schedule study: every run, summaries, figures and tables.

    python experiments/studies/two_infusion/run_study.py                 # every run (see REPORT.md)
    python experiments/studies/two_infusion/run_study.py --only default high_potency   # the 0.4.0 study
    python experiments/studies/two_infusion/run_study.py --only joint expanding_joint expanding_nk_potent
        # under the joint posterior (calibration/joint/results/posterior_draws.csv; other file:
        # --joint-draws PATH) and its sensitivity analysis with the drugs' blast kill of stage A
    python experiments/studies/two_infusion/run_study.py --quick         # a smoke run (minutes)
    python experiments/studies/two_infusion/run_study.py --scheduler tcp://host:8786   # on a Dask cluster

The runs (:data:`RUNS`, ``name -> (spec file beside this file, overrides, description)``):

* ``default``: ``schedules.toml`` with the calibrated model (NK killing at its literature values)
  and draws from the ABC posterior;
* ``high_potency``: the same with ``models/high_potency.toml`` (the killing parameters at the
  potent end of their priors) -- with ``default``, the **potency axis**;
* ``joint``: ``schedules.toml`` with draws from the joint calibration across trials (its
  posterior draws file) at the resolution of its simulation bank (40 um cell places);
* ``expanding_joint``: ``expanding.toml`` (a fresh haploidentical product after Hi-Cy/Flu with
  IL-2: two-infusion schedules against one infusion, Bachanova 2014) with the joint draws;
* ``expanding_nk_potent``: the same with the draws of the joint fit that holds the drugs' blast
  kill at stage A's (``calibration/joint/results_drug_at_stage_a/``): NK potency at the top of its
  priors, the sensitivity analysis for a product whose NK do the killing;
* ``consolidation_joint`` / ``consolidation_nk_potent``: ``expanding.toml``'s product and schedules given
  as consolidation in first CR (``[cohort] disease = "remission"``, 2 % residual blasts as in
  ``experiments/protocols/fehniger2018_cndo109.toml``; regrowth from remission, ``docs/model.md``
  section 9.11; progression = relapse at >= 5 % blasts), under the same two posteriors;
* ``joint_persistence`` / ``expanding_persistence`` / ``consolidation_persistence``: ``joint``,
  ``expanding_joint`` and ``consolidation_joint`` with the draws of the exploratory what-if posterior that
  also fits two held-out rows of donor cells lost without cytokine (``calibration/joint/whatif_split.py``,
  ``calibration/joint/results_whatif_persistence/``): the sensitivity analysis for donor-NK survival.

The joint runs are skipped, with a message, while their posterior draws file does not exist.
Stores go to ``--out`` (default ``outputs/studies/two_infusion/``; resumable: a second run only
finishes what is missing); the figures and tables that ``REPORT.md`` shows are written to
``--report`` (default: the ``results/`` folder beside this file, which is committed).

Outputs per run ``<r>``: ``<r>.zarr`` (the sweep store), ``<r>_summary.nc`` (``nksim.sweep.summarize``
on the study's lymphodepletion clock, with paired contrasts against the run's reference: the
trial's schedule, or for ``expanding.toml`` its one-infusion baseline), and in ``--report``:
``contrasts_<r>.csv`` (one row per scenario), ``forest_<r>.png``, ``heatmap_<r>.png`` (paired
differences over interval x split of the two-infusion schedules with the reference's regimen,
product, gap and cytokine) and ``km_<r>.png``, plus ``contrasts.md`` (the table of REPORT.md) and
``study.json`` (run time, sizes, versions, digests). ``contrasts.md`` and ``study.json`` hold every
run that has results: runs not re-run by this call keep the rows of their ``contrasts_<r>.csv`` and
their earlier ``study.json`` record.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
#: The joint calibration's posterior draws (relative to the repository root; a sweep draws file).
JOINT_DRAWS = Path("calibration/joint/results/posterior_draws.csv")
#: The joint posterior conditional on the drugs' blast kill of stage A (NK potency at the top of its priors;
#: calibration/README.md, "Second joint fit"): the sensitivity analysis of a product whose NK do the killing.
DRUG_AT_STAGE_A_DRAWS = Path("calibration/joint/results_drug_at_stage_a/posterior_draws.csv")
#: The exploratory posterior that also fits two held-out rows of donor cells lost without cytokine
#: (``calibration/joint/whatif_split.py``; docs/validation.md, "What the held-out criterion needs"): the
#: sensitivity analysis for donor-NK survival (faster intrinsic death of donor NK than the joint fit's).
PERSISTENCE_DRAWS = Path("calibration/joint/results_whatif_persistence/posterior_draws.csv")
#: Placeholder in a run's overrides for the joint posterior's draws file (an absolute path when run).
DRAWS = "{joint_draws}"
#: Placeholder for DRUG_AT_STAGE_A_DRAWS.
POTENT_DRAWS = "{drug_at_stage_a_draws}"
#: Placeholder for PERSISTENCE_DRAWS.
PERSIST_DRAWS = "{persistence_draws}"
#: run name -> (spec file beside this file, overrides ``TABLE.KEY=VALUE``, description)
RUNS: dict[str, tuple[str, list[str], str]] = {
    "default": ("schedules.toml", ['sweep.model="default"'],
                "the trial's expanded product; calibrated model, ABC posterior draws"),
    "high_potency": ("schedules.toml", ['sweep.model="high_potency"'],
                     "the trial's expanded product; NK killing at the potent end of its priors, ABC posterior draws"),
    "joint": ("schedules.toml", ['sweep.model="default"', f'cohort.draws_from="{DRAWS}"',
                                 "parameters.lattice.cell_diameter=40.0"],
              "the trial's expanded product; joint posterior draws, 40 um cell places (the bank's)"),
    "expanding_joint": ("expanding.toml", [f'cohort.draws_from="{DRAWS}"'],
                        "fresh product after Hi-Cy/Flu with IL-2; joint posterior draws, 40 um cell places"),
    "expanding_nk_potent": ("expanding.toml", [f'cohort.draws_from="{POTENT_DRAWS}"'],
                            "fresh product after Hi-Cy/Flu with IL-2; joint posterior with the drugs' blast kill "
                            "held at stage A's (NK potency at the top of its priors), 40 um cell places"),
    "consolidation_joint": ("expanding.toml", [f'cohort.draws_from="{DRAWS}"', 'cohort.disease="remission"',
                                               "cohort.baseline_blast_pct=2.0"],
                            "the same product and schedules as consolidation in first CR (2 % residual blasts, "
                            "regrowth from remission); joint posterior draws, 40 um cell places"),
    "consolidation_nk_potent": ("expanding.toml", [f'cohort.draws_from="{POTENT_DRAWS}"',
                                                   'cohort.disease="remission"', "cohort.baseline_blast_pct=2.0"],
                                "consolidation in first CR; joint posterior with the drugs' blast kill held at "
                                "stage A's (NK potency at the top of its priors), 40 um cell places"),
    "joint_persistence": ("schedules.toml", ['sweep.model="default"', f'cohort.draws_from="{PERSIST_DRAWS}"',
                                             "parameters.lattice.cell_diameter=40.0"],
                          "the trial's expanded product; the what-if posterior that also fits donor cells lost "
                          "without cytokine (Fehniger, Björklund): donor-NK survival sensitivity, 40 um cell places"),
    "expanding_persistence": ("expanding.toml", [f'cohort.draws_from="{PERSIST_DRAWS}"'],
                              "fresh product after Hi-Cy/Flu with IL-2; the what-if posterior that also fits donor "
                              "cells lost without cytokine: donor-NK survival sensitivity, 40 um cell places"),
    "consolidation_persistence": ("expanding.toml", [f'cohort.draws_from="{PERSIST_DRAWS}"',
                                                     'cohort.disease="remission"', "cohort.baseline_blast_pct=2.0"],
                                  "consolidation in first CR; the what-if posterior that also fits donor cells "
                                  "lost without cytokine: donor-NK survival sensitivity, 40 um cell places"),
}
#: Per spec: what its reference is, and which contrasts the forest plot and heatmap show.
VIEWS: dict[str, dict] = {
    "schedules.toml": {
        "reference": "the trial's schedule (Flu/Cy, interval 7 d, 50/50)",
        "forest": ["pfs_landmark", "rmst_landmark", "blast_change_d28"],
        "heatmap": [("rmst_landmark_diff", "Δ RMST to 9 months (days)"),
                    ("auc_chimerism_pbmc_d28_diff", "Δ chimerism AUC, days 0-28 (% day)")],
        "heatmap_title": "Two infusions of the trial's total dose vs the trial's schedule",
    },
    "expanding.toml": {
        "reference": "one infusion with IL-2 after Hi-Cy/Flu (Bachanova 2014)",
        "forest": ["pfs_landmark", "rmst_landmark", "p_cr_first", "blast_change_d28"],
        "heatmap": [("rmst_landmark_diff", "Δ RMST to 9 months (days)"),
                    ("p_cr_first_diff", "Δ P(CR at day 28)"),
                    ("auc_chimerism_pbmc_d28_diff", "Δ chimerism AUC, days 0-28 (% day)")],
        "heatmap_title": "Two infusions of a fresh product with IL-2 vs one infusion (Bachanova 2014)",
    },
}
#: contrasts reported in the table (name, label, scale factor for display, unit text)
TABLE_CONTRASTS = [
    ("pfs_landmark", "PFS at 9 months", 100.0, "points"),
    ("rmst_landmark", "RMST to 9 months", 1.0, "days"),
    ("p_cr_first", "CR at day 28", 100.0, "points"),
    ("blast_change_d28", "blast change day 28", 1.0, "points"),
    ("auc_chimerism_pbmc_d28", "chimerism AUC days 0-28", 1.0, "% day"),
]
#: per-scenario values of a row besides the contrasts
ROW_METRICS = ("pfs_landmark", "rmst_landmark", "p_cr_first")


def _contrast_rows(summary) -> list[dict]:
    rows = []
    for s in summary.scenario.values:
        r = summary.sel(scenario=s)
        row = {"scenario": int(s), "label": str(r.label.values), "reference": int(r.reference.values),
               "p_best": float(r.p_best.values) if "p_best" in summary else float("nan")}
        row |= {m: float(r[m].values) for m in ROW_METRICS}
        for name, _, _, _ in TABLE_CONTRASTS:
            for suffix in ("_diff", "_diff_lo", "_diff_hi"):
                row[name + suffix] = float(r[name + suffix].values)
        rows.append(row)
    return rows


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``contrasts_<r>.csv`` written earlier (numbers as floats; missing columns stay missing)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict = {}
            for k, v in raw.items():
                if k == "label":
                    row[k] = v
                elif k in ("scenario", "reference"):
                    row[k] = int(v)
                else:
                    row[k] = float(v) if v not in (None, "") else float("nan")
            rows.append(row)
    return rows


def _fmt_ci(row: dict, name: str, scale: float) -> str:
    if f"{name}_diff" not in row:  # a run written before the contrast existed
        return "n/a"
    d, lo, hi = (row[f"{name}{s}"] * scale for s in ("_diff", "_diff_lo", "_diff_hi"))
    if math.isnan(d):
        return "n/a"
    star = " *" if lo > 0 or hi < 0 else ""
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]{star}"


def _landmark_note(spec_file: str) -> str:
    sw = tomllib.loads((HERE / spec_file).read_text(encoding="utf-8"))["sweep"]
    return (f"landmark day {sw['landmark_day']:g} since the start of lymphodepletion, first assessment day "
            f"{sw['assessment_days'][0]:g}")


def markdown_table(rows_by_run: dict[str, list[dict]]) -> str:
    """The contrast table of REPORT.md: one row per scenario and run."""
    deltas = " | ".join(f"Δ {lab} ({unit})" for _, lab, _, unit in TABLE_CONTRASTS)
    head = f"| run | scenario | PFS 9 mo | {deltas} | P(best) |"
    lines = [head, "|" + "---|" * (4 + len(TABLE_CONTRASTS))]
    for run, rows in rows_by_run.items():
        for row in sorted(rows, key=lambda r: -r["pfs_landmark_diff"]):
            ref = " (reference)" if row["scenario"] == row["reference"] else ""
            cells = [run, row["label"] + ref, f"{100 * row['pfs_landmark']:.0f} %"]
            cells += [_fmt_ci(row, name, scale) for name, _, scale, _ in TABLE_CONTRASTS]
            cells.append(f"{row['p_best']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Δ: scenario minus the run's reference, paired over parameter draws x patients x replicates "
                 "(common random numbers); [95 % CI]; * the CI excludes 0; n/a: not in that run's results. "
                 "PFS, RMST and the day-28 assessment on the lymphodepletion clock (every scenario of a run is "
                 "assessed on the same days after the start of lymphodepletion; landmark = 270 days and first "
                 "assessment = 28 days after the reference's first infusion). CR at day 28: complete remission "
                 "at the first assessment.")
    lines.append("")
    for run in rows_by_run:
        spec_file, _, description = RUNS[run]
        lines.append(f"- **{run}**: `{spec_file}`, {description}; reference {VIEWS[spec_file]['reference']}; "
                     f"{_landmark_note(spec_file)}.")
    return "\n".join(lines) + "\n"


def _heatmap_where(summary) -> dict:
    """The two-infusion schedules that share the reference's regimen, product, gap and cytokine.

    For ``schedules.toml``: regimen "trial", gap 7, expanded product (the 0.4.0 study's filter); for
    ``expanding.toml``: Hi-Cy/Flu, gap 2, fresh product, IL-2.
    """
    r = summary.sel(scenario=int(summary.attrs["reference_scenario"]))
    where: dict = {k: str(r[k].values) for k in ("regimen", "nk_product", "cytokine", "cytokine_course")
                   if k in summary.coords}
    return where | {"gap": float(r["gap"].values), "n_infusions": 2}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _rel(path: Path) -> str:
    from nksim.fileio import shown_path

    return shown_path(path, ROOT)


def run(out: Path, report: Path, *, quick: bool = False, workers: int | None = None,
        scheduler: str | None = None, only: list[str] | None = None, joint_draws: Path | None = None) -> dict:
    """Run the runs named in ``only`` (default: all) and write summaries, figures and tables; returns the record.

    ``joint_draws``: the joint posterior's draws file (default :data:`JOINT_DRAWS` in the
    repository); runs that use it are skipped while it does not exist.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import nksim
    from nksim.plot import contrast_forest, heatmap, km_plot
    from nksim.sweep import open_sweep, run_sweep, summarize

    names = list(RUNS) if not only else list(only)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; the runs are {list(RUNS)}")
    draws_file = (joint_draws if joint_draws is not None else ROOT / JOINT_DRAWS).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (report / "study.json").is_file():  # keep the records of runs not re-run now, and timings a resume skips
        old = json.loads((report / "study.json").read_text(encoding="utf-8"))
        previous = old.get("runs", old.get("potency", {}))  # "potency": before the runs table
    record: dict = {"nksim_version": nksim.__version__, "quick": quick, "runs": {}}
    rows_by_run: dict[str, list[dict]] = {}
    t_all = time.perf_counter()
    for name in RUNS:
        spec_file, run_overrides, description = RUNS[name]
        spec = HERE / spec_file
        if name not in names:
            continue
        files = {DRAWS: draws_file, POTENT_DRAWS: (ROOT / DRUG_AT_STAGE_A_DRAWS).resolve(),
                 PERSIST_DRAWS: (ROOT / PERSISTENCE_DRAWS).resolve()}
        missing = [f for ph, f in files.items() if any(ph in o for o in run_overrides) and not f.is_file()]
        if missing:
            print(f"run '{name}' skipped: the posterior draws file {_rel(missing[0])} does not exist "
                  "(run calibration/joint/run_joint.py first, or pass --joint-draws PATH)", file=sys.stderr)
            continue
        view = VIEWS[spec_file]
        overrides, shown = list(run_overrides), list(run_overrides)
        for ph, f in files.items():
            overrides = [o.replace(ph, str(f)) for o in overrides]
            shown = [o.replace(ph, _rel(f)) for o in shown]  # study.json: no machine's absolute path
        if quick:
            small = ["cohort.patients=4", "cohort.draws=2", "cohort.replicates=1", "parameters.lattice.side=8",
                     "parameters.lattice.voxel_side=2000.0"]
            overrides, shown = overrides + small, shown + small
        store = out / f"{name}.zarr"
        t0 = time.perf_counter()
        rep = run_sweep(spec, store, workers=workers, scheduler=scheduler, overrides=overrides, progress=True)
        wall = time.perf_counter() - t0
        summary = summarize(store)
        summary.to_netcdf(out / f"{name}_summary.nc")
        rows = _contrast_rows(summary)
        rows_by_run[name] = rows
        with open(report / f"contrasts_{name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        fig = contrast_forest(summary, view["forest"])
        fig.suptitle(f"Paired contrasts vs {view['reference']} ({name})", fontsize=10)
        fig.savefig(report / f"forest_{name}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        two = _heatmap_where(summary)
        # one heatmap per cytokine course (the reference's first; "each": the course restarted per infusion)
        has = "cytokine_course" in summary.coords and "each" in set(map(str, summary["cytokine_course"].values))
        courses = ["first", "each"] if has else [None]
        for course in courses:
            where = two if course is None else two | {"cytokine_course": course}
            suffix = "" if course in (None, "first") else f"_{course}"
            try:
                panels = view["heatmap"]
                fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), layout="constrained")
                for ax, (outcome, title) in zip(axes, panels, strict=True):
                    heatmap(summary, outcome, "interval", "dose_split", where=where, ax=ax)
                    ax.set_title(title, fontsize=9)
                what = "" if course is None else f"; cytokine course: {course}"
                fig.suptitle(f"{view['heatmap_title']} ({name}; paired differences{what})", fontsize=9)
                fig.savefig(report / f"heatmap_{name}{suffix}.png", dpi=120, bbox_inches="tight")
                plt.close(fig)
            except ValueError as exc:  # a quick run may not hold the full grid
                plt.close("all")
                print(f"heatmap skipped: {exc}", file=sys.stderr)
        ds = open_sweep(store)
        best = sorted(rows, key=lambda r: -r["pfs_landmark_diff"])[:3]
        select = sorted({r["scenario"] for r in best} | {rows[0]["reference"]})
        fig = km_plot(ds, select=select)
        fig.axes[0].set_title(f"Progression-free survival, leading schedules and {view['reference']} ({name})",
                              fontsize=9)
        fig.savefig(report / f"km_{name}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        timing = {"wall_time_s": round(wall, 1), "workers": rep.workers, "batches_run": rep.batches_run}
        if rep.batches_run == 0 and name in previous:  # nothing computed now: the earlier run's timing stands
            timing = {k: previous[name].get(k) for k in timing}
        entry = {
            "spec": _rel(spec), "overrides": shown, "description": description, "quick": quick,
            "model": ds.attrs.get("parameter_set"), "store": str(store), "simulations": int(rep.n_simulations),
            **timing, "scenarios": int(summary.sizes["scenario"]),
            "plan_digest": ds.attrs.get("plan_digest"), "draws_from": ds.attrs.get("draws_from"),
            "clock": summary.attrs.get("clock")}
        used = [f for ph, f in files.items() if any(ph in o for o in run_overrides)]
        if used:
            entry["draws_file"] = {"path": _rel(used[0]), "sha256": _digest(used[0])}
        record["runs"][name] = entry
    # every run with results: this call's, then the earlier ones' (their CSVs and records), in RUNS order
    all_rows: dict[str, list[dict]] = {}
    runs: dict[str, dict] = {}
    for name in RUNS:
        if name in rows_by_run:
            all_rows[name], runs[name] = rows_by_run[name], record["runs"][name]
        elif (report / f"contrasts_{name}.csv").is_file():
            all_rows[name] = read_rows(report / f"contrasts_{name}.csv")
            if name in previous:
                runs[name] = previous[name]
    record["runs"] = runs
    record["wall_time_s"] = round(sum(float(v.get("wall_time_s") or 0.0) for v in runs.values()), 1)
    record["this_call_s"] = round(time.perf_counter() - t_all, 1)
    record["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    if all_rows:
        (report / "contrasts.md").write_text(markdown_table(all_rows), encoding="utf-8")
    (report / "study.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/studies/two_infusion"), help="sweep stores")
    ap.add_argument("--report", type=Path, default=HERE / "results", help="figures and tables of REPORT.md")
    ap.add_argument("--quick", action="store_true", help="a tiny cohort on a tiny lattice (smoke run)")
    ap.add_argument("--workers", type=int, default=None, help="local Dask workers (default: all cores)")
    ap.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    ap.add_argument("--only", nargs="+", choices=list(RUNS), metavar="NAME", default=None,
                    help=f"run only these runs (default: all of {', '.join(RUNS)})")
    ap.add_argument("--joint-draws", type=Path, default=ROOT / JOINT_DRAWS,
                    help=f"the joint posterior's draws file (default: {JOINT_DRAWS} in the repository)")
    a = ap.parse_args(argv)
    rec = run(a.out, a.report, quick=a.quick, workers=a.workers, scheduler=a.scheduler, only=a.only,
              joint_draws=a.joint_draws)
    print(json.dumps(rec, indent=2, default=str))
    return 0


if __name__ == "__main__":  # Dask's LocalCluster spawns processes: keep the guard
    sys.exit(main())
