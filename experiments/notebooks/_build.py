"""Write the example notebooks of this folder (no outputs, deterministic cell ids).

    python experiments/notebooks/_build.py        # rewrites a_*.ipynb ... d_*.ipynb

Edit the cell sources here, not in the .ipynb files, then run this script; the notebooks are
executed headless by ``tests/test_notebooks.py`` (small parameters, figures to a temporary
folder). The first code cell of each notebook is its parameters cell (tag ``parameters``).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

HOW_TO_RUN = """\
**Run it** from the repository root after `python -m pip install -e ".[dev]"`:
interactively with `python -m pip install jupyterlab` and `jupyter lab {path}`, or headless
(small parameters, figures to `outputs/notebooks/ci/`) with `python -m pytest tests/test_notebooks.py`.
The first code cell holds the parameters (tag `parameters`): raise `SIDE`, `REPLICATES`, `END_DAY`
for real results. Figures are saved as PNG under `OUT` (default `outputs/notebooks/`, git-ignored).

> The default model is calibrated to the trial (ABC-SMC posterior medians for 11 parameters, the rest
> literature values; see notebook (c) and `calibration/README.md`); every output records it in its
> `parameter_status` attribute. The trial's data are nine patients: read the figures with the
> posterior's width in mind."""

SETUP = """\
import tomllib
from pathlib import Path

import numpy as np

import nksim
from nksim import plot
from nksim.protocol import protocol_from_dict, resolve_protocol_path

# the repository root (paths in the parameters are relative to it), found from the working directory
ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents]
             if (p / "pyproject.toml").is_file() and (p / "nksim").is_dir()), Path.cwd())
out = Path(OUT) if Path(OUT).is_absolute() else ROOT / OUT
out.mkdir(parents=True, exist_ok=True)


def trial_protocol(end_day):
    \"\"\"The shipped Ahmadvand 2023 protocol cut at `end_day` (later assessments and snapshots dropped).\"\"\"
    raw = tomllib.loads(resolve_protocol_path("ahmadvand2023").read_text())
    p = raw["protocol"]
    p["end_day"] = end_day
    p["assessment_days"] = [d for d in p["assessment_days"] if d <= end_day]
    p["snapshot_days"] = [d for d in p["snapshot_days"] if d <= end_day]
    return protocol_from_dict(raw, f"ahmadvand2023 (cut at day {end_day})")


def save(fig, name):
    \"\"\"Save a figure under `out` and report where.\"\"\"
    path = out / name
    fig.savefig(path, dpi=DPI)
    print("wrote", path)

print(f"nksim {nksim.__version__}; figures go to {out}")"""


def notebook(name: str, cells: list[tuple[str, str] | tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, spec in enumerate(cells):
        kind, source = spec[0], spec[1].strip("\n")
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = f"{name[:1]}-{i:02d}"
        if len(spec) > 2:
            cell.metadata["tags"] = list(spec[2])
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


# --- (a) the trial, simulated vs observed ----------------------------------------------------------
A = "a_trial_simulated_vs_observed"
A_CELLS = [
    ("md", f"""\
# (a) The Ahmadvand 2023 trial: simulated vs observed

The phase I trial (BMC Cancer 2023;23:1090): 10 patients with relapsed/refractory AML, Flu/Cy
lymphodepletion on days −9…−7, donor NK cells on days 0 and 7 in two dose groups. This notebook
simulates the trial (or reads `outputs/trial/trial.nc` written by `nksim run` when it matches) and
draws the blood and marrow time courses, a swimmer plot beside the observed outcomes, Kaplan–Meier
progression-free curves per dose group and the marrow lattice of one patient.

{HOW_TO_RUN.format(path=f"experiments/notebooks/{A}.ipynb")}"""),
    ("code", """\
SIDE = 10                 # lattice side in voxels (the default model: 40)
VOXEL_SIDE = 1600.0       # um; 10 x 1.6 mm = the default 40 x 0.4 mm region
REPLICATES = 2            # virtual trials (each = the 10 trial patients)
END_DAY = 180             # last simulated day (the trial protocol runs to day 365)
SEED = 1
PATIENT = "p07"           # patient of the lattice snapshots
TRIAL_NC = "outputs/trial/trial.nc"   # `nksim run` output, used if present and matching
USE_EXISTING = True
OUT = "outputs/notebooks"
DPI = 150""", ["parameters"]),
    ("code", SETUP),
    ("md", """\
## Simulate the trial (or read `nksim run`'s output)

`outputs/trial/trial.nc` is used when it exists, was written by this nksim version for the
`ahmadvand2023` protocol and `USE_EXISTING` is true; otherwise the 10 trial patients are simulated
`REPLICATES` times on a small lattice up to `END_DAY`. Each (patient, replicate) has its own
random effects and stochastic history."""),
    ("code", """\
ds = None
nc = ROOT / TRIAL_NC
if USE_EXISTING and nc.is_file():
    candidate = nksim.open_output(nc)
    if (candidate.attrs.get("protocol") == "ahmadvand2023" and candidate.attrs.get("nksim_version") == nksim.__version__
            and "lattice_nk" in candidate):
        ds = candidate
        print(f"read {nc}: {ds.sizes['patient']} patients x {ds.sizes['replicate']} replicates")
if ds is None:
    params = nksim.load_parameters("default").with_values({"lattice.side": SIDE, "lattice.voxel_side": VOXEL_SIDE})
    ds = nksim.simulate_cohort(params, trial_protocol(END_DAY), replicates=REPLICATES, seed=SEED, workers=2)
    print(f"simulated {ds.sizes['patient']} patients x {ds.sizes['replicate']} replicates to day {END_DAY}")
print(ds.attrs["parameter_status"])"""),
    ("md", """\
## Blood and marrow time courses

Median over all patients × replicates (line) with the central 50 % and 90 % bands: donor
chimerism of blood NK cells, donor NK cells per µL blood, host T cells, plasma IL-15 (fold of
baseline) and marrow blasts. Grey: Flu/Cy days; dotted: NK infusions. Chimerism and cell counts
are on a log scale."""),
    ("code", """\
fig = plot.time_course(ds, xlim=(None, 120))
save(fig, "a_time_courses.png")"""),
    ("md", """\
### By dose group

The same medians split by dose group (group 1: 1 + 5 × 10⁶ NK/kg, group 2: 5 + 10 × 10⁶ NK/kg)."""),
    ("code", """\
fig = plot.time_course(ds, ["donor_chimerism_nk", "donor_nk_blood", "marrow_blast_pct"], by="group",
                       xlim=(None, 120))
save(fig, "a_time_courses_by_group.png")"""),
    ("md", """\
## Swimmer plot: simulated vs observed

Left: one lane per patient of replicate 0, each segment coloured by the response called at the
assessment that ends it (CR/PR/SD/PD), X at progression, ▸ when censored. Right: the trial's
observed outcomes from `calibration/data/` (response at the first assessment, progression interval,
lost to follow-up, not evaluable)."""),
    ("code", """\
try:
    from nksim.calibration.data import default_observed
    observed = default_observed()
except ImportError:  # older checkout without the calibration data module
    observed = None
fig = plot.swimmer_plot(ds, observed)
save(fig, "a_swimmer_vs_observed.png")"""),
    ("md", """\
A first numerical comparison: the fraction of evaluable patients with progressive disease at the
first assessment (observed: 3 of 9) against the simulated fraction over all replicates."""),
    ("code", """\
ev = ds.where(ds.evaluable == 1, drop=True)
sim_pd = float((ev.response.isel(assessment=0) == nksim.RESPONSE_CODES["PD"]).mean())
print(f"simulated P(PD at day {ev.assessment.values[0]:g}) = {sim_pd:.2f} over {ev.sizes['patient']} evaluable "
      f"patients x {ev.sizes['replicate']} replicates")
if observed is not None:
    evaluable = [o for o in observed.outcomes if o.evaluable]
    n_pd = sum(o.first_response == "PD" for o in evaluable)
    print(f"observed  P(PD at first assessment) = {n_pd}/{len(evaluable)} = {n_pd / len(evaluable):.2f}")"""),
    ("md", """\
## Progression-free survival per dose group

Kaplan–Meier curves over the evaluable patients × replicates of each dose group (progression =
marrow blasts at the PD threshold on or after the first assessment; no progression = censored at
the end of the simulation, ticks), with the number at risk below."""),
    ("code", """\
fig = plot.km_plot(ds)
save(fig, "a_km_dose_groups.png")"""),
    ("md", """\
## The marrow lattice

Cells per voxel of NK-susceptible blasts, NK-resistant blasts and normal cells at each snapshot
day, with donor NK agents as dots (area ∝ agents per voxel) and a scale bar in mm. NK killing
selects resistant blasts: compare the two blast rows before and after the infusions."""),
    ("code", """\
fig = plot.lattice_snapshot(ds, PATIENT)
save(fig, "a_lattice.png")"""),
]

# --- (b) two-infusion schedules ----------------------------------------------------------------------
B = "b_two_infusion_schedules"
B_CELLS = [
    ("md", f"""\
# (b) Two-infusion schedules: a sweep

Which interval between the two infusions and which split of the dose would have done better than
the trial's schedule? This notebook reads the store of the committed schedule study
(`python experiments/studies/two_infusion/run_study.py` writes `outputs/studies/two_infusion/default.zarr`;
its answer is in `experiments/studies/two_infusion/REPORT.md`) if there is one, and otherwise runs a
tiny version of the flagship sweep `experiments/two_infusion_schedules.toml` in-process through the Python API
(`nksim.sweep`: spec → plan → Zarr store → summary). It then draws heatmaps of the outcomes over
interval × dose split, the paired contrasts against the trial's schedule with their confidence
intervals, Kaplan–Meier curves and time courses of the best schedules.

Every scenario is simulated for the same virtual patients with common random numbers, so
differences between schedules are paired.

{HOW_TO_RUN.format(path=f"experiments/notebooks/{B}.ipynb")}"""),
    ("code", """\
SPEC = "experiments/two_infusion_schedules.toml"
STORE = "outputs/studies/two_infusion/default.zarr"   # the study's store (run_study.py), used as it is if present
USE_EXISTING = True
PATIENTS = 4                          # tiny sweep: virtual patients
REPLICATES = 1                        # tiny sweep: replicates per patient
SIDE = 8                              # tiny sweep: lattice side (voxels)
VOXEL_SIDE = 2000.0                   # um; 8 x 2 mm = the default 16 mm region
END_DAY = 120
INTERVALS = [7, 14]                   # days between the infusions
SPLITS = [[75, 25], [50, 50], [25, 75]]   # percent of the total dose per infusion
OUT = "outputs/notebooks"
DPI = 150""", ["parameters"]),
    ("code", SETUP),
    ("md", """\
## The sweep store

A tiny sweep keeps the spec's baseline (trial Flu/Cy, gap 7 days, 1.5 × 10⁷ NK/kg in total) and
crosses `INTERVALS` × `SPLITS` plus the single-infusion control; the overrides are the same
`TABLE.KEY=VALUE` strings as `nksim sweep --set`. It runs in this process (`workers=0`) into a
Zarr store under `OUT` named after the plan digest (re-running with the same parameters reuses
it; `nksim sweep` would resume it the same way)."""),
    ("code", """\
from nksim.sweep import build_plan, open_sweep, ranking_table, run_sweep, summarize
from nksim.sweep.spec import apply_overrides, spec_from_dict
from nksim.sweep.summaries import rank_order

store_path = ROOT / STORE
summary = None
if USE_EXISTING and store_path.exists():
    summary = summarize(store_path)
    if summary.sizes["scenario"] == 0:
        summary = None
        print(f"{store_path} has no complete scenario yet: running the tiny sweep instead")
if summary is None:
    spec_path = ROOT / SPEC
    raw = tomllib.loads(spec_path.read_text())
    days = [d for d in raw["sweep"]["assessment_days"] if d <= END_DAY]
    raw = apply_overrides(raw, [
        f"cohort.patients={PATIENTS}", f"cohort.replicates={REPLICATES}", "cohort.draws=0",
        f"parameters.lattice.side={SIDE}", f"parameters.lattice.voxel_side={VOXEL_SIDE}",
        f"sweep.end_day={END_DAY}", f"sweep.assessment_days={days}", f"sweep.landmark_day={max(days)}",
        f"factors.interval={INTERVALS}", f"factors.dose_split={SPLITS}", 'factors.regimen=["trial"]',
    ], str(spec_path))
    # of the explicit scenarios keep the trial-regimen single-infusion control
    raw["scenarios"] = [s for s in raw.get("scenarios", []) if s.get("dose_split") == [100]
                        and s.get("regimen", "trial") == "trial"]
    spec = spec_from_dict(raw, str(spec_path), base_dir=spec_path.parent)
    # one store per plan: running the notebook again with the same parameters reuses (resumes) it
    store_path = out / f"b_tiny_sweep_{build_plan(spec).digest}.zarr"
    report = run_sweep(spec, store_path, workers=0)
    print(f"{report.n_simulations} simulations ({report.batches_run} batches run now, {report.seconds:.1f} s) "
          f"in {store_path}")
    summary = summarize(store_path)
sweep = open_sweep(store_path)
print(ranking_table(summary))"""),
    ("md", """\
## Outcomes over interval × dose split

Each cell is one schedule: the Kaplan–Meier probability of being progression-free at the landmark
day (± Monte-Carlo standard error over replicates), then the median peak donor chimerism of blood
NK cells. Only the two-infusion scenarios with the trial regimen, the baseline gap and total dose
are shown (`where=`); the outlined cell is the reference (best) scenario of the paired
differences."""),
    ("code", """\
WHERE = {"regimen": "trial", "gap": 7, "total_dose": 1.5e7, "n_infusions": 2, "nk_product": "expanded"}
fig = plot.heatmap(summary, "pfs_landmark", x="interval", y="dose_split", where=WHERE)
save(fig, "b_heatmap_pfs.png")"""),
    ("code", """\
fig = plot.heatmap(summary, "peak_chimerism_nk", x="interval", y="dose_split", where=WHERE)
save(fig, "b_heatmap_peak_chimerism.png")"""),
    ("md", """\
Paired contrasts against the trial's schedule (interval 7 days, 50/50): each scenario minus the
reference for the same draws, patients and replicates, with 95 % confidence intervals."""),
    ("code", """\
fig = plot.contrast_forest(summary, ["pfs_landmark", "rmst_landmark", "auc_chimerism_pbmc_d28"])
save(fig, "b_contrasts.png")"""),
    ("md", """\
## Progression-free survival of the best schedules

Kaplan–Meier curves of the four best scenarios by P(progression-free at the landmark), pooled over
parameter draws × patients × replicates, with the landmark day dashed."""),
    ("code", """\
best = [int(summary.scenario.values[i]) for i in rank_order(summary, "pfs_landmark")[:4]]
fig = plot.km_plot(sweep, select=best)
save(fig, "b_km_schedules.png")"""),
    ("md", """\
## Time courses of the same schedules

Median donor NK per µL blood, donor chimerism and marrow blasts per schedule (bands: central 50 %
and 90 % over draws × patients × replicates); dotted lines: each schedule's infusion days."""),
    ("code", """\
fig = plot.time_course(sweep, ["donor_nk_blood", "donor_chimerism_nk", "marrow_blast_pct"], by="scenario",
                       select=best, xlim=(None, min(END_DAY, 120)))
save(fig, "b_time_courses_schedules.png")"""),
    ("md", """\
## What the committed study says

This notebook's sweep is tiny; the committed study
(`experiments/studies/two_infusion/REPORT.md`, regenerated by its `run_study.py`) answers the
question at full size, with posterior draws and paired contrasts. Its answer (2026-12-07, ninth
joint fit): for the trial's expanded product **no interval, split, gap or number of infusions moves
progression or remission**; for a product that expands (fresh NK after Hi-Cy/Flu with IL-2) **no two-infusion
schedule beats one infusion of the same dose** (one IL-2 course: CR at day 28 -1.6 to 0.0 points; a course per
infusion: splits -1.6 to 0.0, one infusion with the same second course -1.2 to +0.4 -- a second IL-2 course also
expands the host Tregs that compete with donor NK for it)
-- in the joint calibration the Hi-Cy/Flu remissions are the cyclophosphamide dose's and NK potency is
not identified (`calibration/README.md`, "Ninth joint fit") -- and the cytokine matters more than the
schedule (rhIL-15 s.c. instead of IL-2: +12 points CR, a size resting on the unidentified cytokine
activation of killing and on IL-15's not expanding Tregs). Where NK do the killing (the potency corner),
splitting costs up to 4.3 points of PFS at 9 months and a second IL-2 course 0.8 to 2.3. Given as
consolidation in first remission (`[cohort] disease = "remission"`, 2 % residual blasts) the schedule moves
relapse-free time by at most 1.4 days and a second IL-2 course gains nothing;
with potent NK a split costs 0.6-13 days of relapse-free time."""),
]

# --- (d) Python API tour ------------------------------------------------------------------------------
D = "d_python_api_tour"
D_CELLS = [
    ("md", f"""\
# (d) A tour of the Python API

For a new user: parameter sets (values, units, sources, priors), validated overrides, protocols,
simulating one patient and a cohort, the output Dataset and its netCDF file, the text summary and
the figures of `nksim.plot`.

{HOW_TO_RUN.format(path=f"experiments/notebooks/{D}.ipynb")}"""),
    ("code", """\
SIDE = 10                 # lattice side in voxels (the default model: 40)
VOXEL_SIDE = 1600.0       # um
REPLICATES = 2
END_DAY = 120
SEED = 7
OUT = "outputs/notebooks"
DPI = 150""", ["parameters"]),
    ("code", SETUP),
    ("md", """\
## 1. Parameter sets

`load_parameters("default")` reads `models/default.toml`. Every value has a unit (checked
against `nksim.schema`), a description, a source and, for the parameters to be calibrated, a prior
range. Index the set with dotted keys."""),
    ("code", """\
params = nksim.load_parameters("default")
print(params.name, "|", params.status, "|", params.origin)
print(len(params.keys()), "parameters,", len(params.priors()), "with a prior")
for key in ["nk.kill_probability", "nk.speed", "blasts.cycle_time", "host.nk_recovery_rate", "lattice.voxel_side"]:
    p = params.parameters[key]
    print(f"{key:22s} {p.value:>10g} {p.unit:10s} prior {p.prior}  -- {p.description} [{p.source}]")"""),
    ("md", """\
`with_values` returns a new, validated set (the original is immutable); a value outside the allowed
range or an unknown key raises `nksim.NksimInputError` naming the key."""),
    ("code", """\
small = params.with_values({"lattice.side": SIDE, "lattice.voxel_side": VOXEL_SIDE})
print(small["lattice.side"], small.unit("lattice.voxel_side"), "| digest", small.digest())
try:
    params.with_values({"nk.kill_probability": 1.5})
except nksim.NksimInputError as err:
    print("refused:", err)"""),
    ("md", """\
## 2. Protocols

A protocol is a list of dated events (day 0 = first NK infusion): drug doses common to all patients
and NK infusions per dose group, plus the patients, assessment and snapshot days."""),
    ("code", """\
trial = nksim.load_protocol("ahmadvand2023")
print(trial.title)
for e in trial.events_for("p07"):
    print(f"  day {e.day:+5g}  {e.kind:16s} {e.dose:g} {e.unit}")
print("assessments", trial.assessment_days, "| snapshots", trial.snapshot_days)
proto = trial_protocol(END_DAY)   # the same protocol cut at END_DAY (defined in the setup cell)"""),
    ("md", """\
## 3. One patient

`simulate` runs one (patient, replicate): the result is an xarray Dataset with daily variables
(dimension `time`), the response at each assessment, the time to progression and lattice
snapshots; every variable has `units` and `long_name`. The same seed gives the same trajectory
alone or within a cohort."""),
    ("code", """\
one = nksim.simulate(small, proto, patient="p07", seed=SEED)
print(one.marrow_blast_pct.attrs)
print("response:", dict(zip(one.assessment.values.tolist(), one.response.values.tolist())),
      "| time to progression:", float(one.time_to_progression), "day")
fig = plot.time_course(one, ["donor_chimerism_nk", "donor_nk_blood", "il15", "marrow_blast_pct"], ncols=2)
save(fig, "d_one_patient.png")"""),
    ("md", """\
## 4. A cohort, netCDF and the text summary

`simulate_cohort` runs every patient `replicates` times (threads: `workers`); `write_netcdf` writes
the CF-1.8 file atomically (never overwriting unless asked) and `open_output` reads it back with a
clear error for missing or foreign files."""),
    ("code", """\
from nksim.summary import summary_table

ds = nksim.simulate_cohort(small, proto, replicates=REPLICATES, seed=SEED, workers=2)
path = nksim.write_netcdf(ds, out / "d_cohort.nc", overwrite=True)
back = nksim.open_output(path)
assert np.array_equal(back.marrow_blast_pct.values, ds.marrow_blast_pct.values)
assert np.array_equal(one.marrow_blast_pct.values, ds.marrow_blast_pct.sel(patient="p07", replicate=0).values)
print(path, "|", dict(back.sizes))
print(summary_table(back))"""),
    ("md", """\
## 5. Figures

`nksim.plot` functions take these Datasets and return matplotlib Figures (pass `ax=` to draw into
your own axes): `trial_figure` (the `nksim run` summary), `time_course`, `swimmer_plot`, `km_plot`,
`heatmap` (sweep summaries, see notebook b) and `lattice_snapshot`."""),
    ("code", """\
fig = plot.trial_figure(back)
save(fig, "d_trial_figure.png")"""),
    ("code", """\
fig = plot.lattice_snapshot(back, "p07", days=[0, 14, 28])
save(fig, "d_lattice.png")"""),
]

# --- (c) calibration diagnostics -----------------------------------------------------------------
C = "c_calibration_diagnostics"
C_CELLS = [
    ("md", f"""\
# (c) Calibration diagnostics: screen, posterior, predictive checks, recovery

How the default model was calibrated to the Ahmadvand 2023 trial (`nksim calibrate
calibration/ahmadvand2023.toml`): the Morris screen that chose the fitted parameters, the ABC-SMC
run (epsilon, acceptance, effective sample size per generation), prior vs posterior, the posterior
predictive checks against the trial's outcome table and the analogue chimerism targets, and the
parameter-recovery study on synthetic trials. It reads the committed results in
`calibration/posterior/` (or any `--out` folder of `nksim calibrate` / `nksim screen`), then
simulates a small virtual trial with the calibrated default model beside the observed outcomes.

{HOW_TO_RUN.format(path=f"experiments/notebooks/{C}.ipynb")}"""),
    ("code", """\
POSTERIOR_DIR = "calibration/posterior"   # nksim calibrate --out folder (posterior.nc, ppc_*.nc)
SCREEN_DIR = "calibration/posterior"      # nksim screen --out folder (morris.nc)
SIDE = 5                  # lattice side of the check simulation (the calibration resolution)
VOXEL_SIDE = 3200.0       # um: the same 16 mm region as the default 40 x 0.4 mm
REPLICATES = 2            # virtual trials of the check simulation
END_DAY = 270             # follow-up of the check simulation (9 months)
SEED = 1
OUT = "outputs/notebooks"  # figures (PNG) go here
DPI = 100
USE_EXISTING = True       # (kept for symmetry with the other notebooks; results are always read)""", ["parameters"]),
    ("code", SETUP),
    ("md", """\
## 1. Which parameters to fit: the Morris screen

Elementary effects (SALib) of every parameter with a prior on four outcome summaries: P(PD at
the first assessment), P(PD by 9 months | SD), log10 peak donor chimerism and the day of the peak.
Parameters with no effect on any summary (the NK killing parameters: at the trial's doses NK
killing removes a negligible share of blasts) cannot be learnt from these data and stay at their
literature values."""),
    ("code", """\
import xarray as xr
from nksim.calibration.screen import screen_table

morris = xr.open_dataset(ROOT / SCREEN_DIR / "morris.nc")
print(screen_table(morris))
save(plot.screen_figure(morris), "c_morris.png")"""),
    ("md", """\
## 2. The ABC-SMC run

`posterior.nc` holds every generation's weighted particles; `posterior_summary.csv` the weighted
posterior median and quantiles that `models/default.toml` takes its values from."""),
    ("code", """\
import pandas as pd

post = xr.open_dataset(ROOT / POSTERIOR_DIR / "posterior.nc")
print(f"{post.sizes['generation']} generations, {post.attrs['total_simulations']} simulations, "
      f"{post.attrs['wall_time_s'] / 60:.1f} min on {post.attrs['workers']} workers")
summary = pd.read_csv(ROOT / POSTERIOR_DIR / "posterior_summary.csv")
print(summary[["parameter", "unit", "prior_lo", "prior_hi", "median", "q05", "q95"]].to_string(index=False))
save(plot.abc_diagnostics(post), "c_abc_diagnostics.png")"""),
    ("code", """\
save(plot.prior_posterior(post), "c_prior_posterior.png")"""),
    ("md", """\
## 3. Posterior predictive checks

One virtual trial (the trial's nine evaluable patients, their doses and follow-up) per posterior
draw; grey: the same from the prior. The observed value should fall inside the posterior 90 %
predictive interval; where it does not, the model (or the analogue target) fails."""),
    ("code", """\
from nksim.calibration.ppc import check_table

ppc_post = xr.open_dataset(ROOT / POSTERIOR_DIR / "ppc_posterior.nc")
ppc_prior = xr.open_dataset(ROOT / POSTERIOR_DIR / "ppc_prior.nc")
for name, obs, lo, hi, inside in check_table(ppc_post):
    print(f"{name:28s} observed {obs:<8.4g} 90% predictive interval [{lo:.4g}, {hi:.4g}]"
          f" {'inside' if inside else 'OUTSIDE'}")
save(plot.predictive_check(ppc_post, ppc_prior), "c_predictive_check.png")"""),
    ("md", """\
## 4. Parameter recovery

Synthetic trials simulated from parameter values drawn from the prior, each calibrated like the
real one: the true values should fall inside the 90 % (50 %) credible intervals in about 90 %
(50 %) of cases."""),
    ("code", """\
rec_path = ROOT / POSTERIOR_DIR / "recovery.nc"
if rec_path.exists():
    rec = xr.open_dataset(rec_path)
    print(rec["coverage_90"].to_series().round(2).to_string())
    save(plot.recovery_figure(rec), "c_recovery.png")
else:
    print("no recovery.nc in", POSTERIOR_DIR, "- run: nksim calibrate CONFIG --recovery --out", POSTERIOR_DIR)"""),
    ("md", """\
## 5. The calibrated default model beside the trial

A small virtual trial with `models/default.toml` (whose fitted values are the posterior medians)
at the calibration resolution, drawn as a swimmer plot next to the observed outcomes."""),
    ("code", """\
from nksim.calibration.data import default_observed

params = nksim.load_parameters("default").with_values({"lattice.side": SIDE, "lattice.voxel_side": VOXEL_SIDE})
print("parameter status:", params.status)
ds = nksim.simulate_cohort(params, trial_protocol(END_DAY), replicates=REPLICATES, seed=SEED)
save(plot.swimmer_plot(ds, observed=default_observed()), "c_swimmer_calibrated.png")
save(plot.time_course(ds, variables=("donor_chimerism_pbmc", "marrow_blast_pct")), "c_time_courses_calibrated.png")"""),
]

# --- (e) a twin for one patient ---------------------------------------------------------------------
E = "e_twin_one_patient"
E_CELLS = [
    ("md", f"""\
# (e) A twin for one patient: from her measurements to her second infusion

A synthetic patient (`experiments/twin/example_patient.csv`, made by the model: **not trial data**)
received the trial's Flu/Cy and a first infusion of 5 × 10⁶ expanded NK/kg. We know her donor
chimerism on days 1, 3 and 7 and her marrow blasts before lymphodepletion. On day 7 we must choose
the day, dose and donor of her second infusion (or none). `nksim twin` (`docs/twin.md`) weights a
bank of virtual patients by her measurements, then continues the most likely ones under every
candidate with common random numbers.

{HOW_TO_RUN.format(path=f"experiments/notebooks/{E}.ipynb")}

Here the parameters are the bank (`BANK_DRAWS` × `BANK_PATIENTS` virtual patients), the number kept
after conditioning (`RESAMPLE`) and the lattice (`SIDE`); the defaults are small so that the notebook
runs in seconds: the command line example uses a bank of 8000 (`nksim twin experiments/twin/example.toml`)."""),
    ("code", """\
SIDE = 4                  # lattice side in voxels (the example spec: 10)
BANK_DRAWS = 40           # posterior draws in the bank (the example spec: 200)
BANK_PATIENTS = 20        # virtual patients per draw (the example spec: 40)
RESAMPLE = 60             # virtual patients kept after conditioning (the example spec: 200)
OUT = "outputs/notebooks"  # figures (PNG) go here
DPI = 100
USE_EXISTING = True       # (kept for symmetry with the other notebooks)""", ["parameters"]),
    ("code", SETUP),
    ("md", """\
## 1. Her measurements

The per-patient series schema (`calibration/data/SCHEMA.md`, section 3): one measurement per row,
`<lod` for a value below the detection limit."""),
    ("code", """\
from nksim.calibration.data import load_series
from nksim.twin import load_spec, twin

SETTINGS = [f"twin.bank.draws={BANK_DRAWS}", f"twin.bank.max_draws={4 * BANK_DRAWS}",
            f"twin.bank.patients={BANK_PATIENTS}", f"twin.resample={RESAMPLE}", f"parameters.lattice.side={SIDE}"]
spec = load_spec(ROOT / "experiments/twin/example.toml", SETTINGS)
for p in load_series(spec.patient_file, start_day=-spec.given.lymphodepletion_offset()):
    print(f"day {p.day:>4g}  {p.quantity:22s} {p.value:8.4g} {p.unit}")
print("given so far:", spec.given.label(), "| decision on day", spec.decision_day)
print(len(spec.candidates()), "candidates:", "; ".join(spec.candidate_labels()[:5]), "...")"""),
    ("md", """\
## 2. Condition the population on her, and compare the candidates

The effective sample size says how many virtual patients her data leave; the prior-data share how
typical she is (below 1 %: atypical, the population model does not expect her series)."""),
    ("code", """\
result = twin(spec, None, workers=2, figures=False)
ds = result.dataset
print(f"effective sample size {ds.attrs['effective_sample_size']:.1f} of {ds.attrs['bank_units']}; "
      f"prior-data share {100 * ds.attrs['prior_predictive_share']:.1f} %"
      + (" (ATYPICAL)" if ds.attrs["atypical"] else ""))
table = ds[["pft_mean", "pft_lo", "pft_hi", "diff_vs_best", "within_delta", "p_best", "pfs_landmark"]]
print(table.to_dataframe().set_index(ds["label"].values).sort_values("pft_mean", ascending=False).round(2))"""),
    ("md", """\
## 3. What her series says about her, and the recommendation

Left: her measurements (×), the population's band and the conditioned predictions. Right: each
candidate's paired difference from the best (green: within δ of the best is not ruled out). When
every candidate is green, the data cannot separate them: the report says so."""),
    ("code", """\
from nksim.twin.report import plot_twin, report_markdown

plot_twin(ds, out / "e_twin.png")
print("wrote", out / "e_twin.png")
print(report_markdown(ds, spec).split("## Recommendation")[1].split("|")[0].strip())"""),
    ("md", """\
## 4. When no virtual patient resembles her: the patient-level ABC-SMC

For a patient the bank cannot reach (effective sample size below 20 even after growing), `nksim twin`
samples her own posterior with an ABC-SMC whose prior is the population (`docs/twin.md`): particles
(a posterior draw, her random effects, the streams of one simulation) move from the population
(temperature 0) to her posterior (temperature 1). Her bank is not thin, so here it is forced
(`mode = "always"`) to compare the two: both target her posterior, so their intervals should agree
up to Monte Carlo error."""),
    ("code", """\
import pandas as pd

smc = twin(load_spec(ROOT / "experiments/twin/example.toml", [*SETTINGS, 'twin.smc.mode="always"']), None,
           workers=2, figures=False).dataset
print(f"ABC-SMC: {smc.attrs['smc_particles']} particles, {smc.attrs['smc_stages']} stages "
      f"(temperatures {smc.attrs['smc_temperatures']}), {smc.attrs['smc_simulations']} simulations")
effects = [p for p in ds["parameter"].values if p.startswith("effect:")]


def band(d, var):
    q = d[var].sel(parameter=effects)
    return [f"{a:.3g} to {b:.3g}" for a, b in zip(q.sel(q=0.05).values, q.sel(q=0.95).values)]


print(pd.DataFrame({"population": band(ds, "param_prior"), "bank weights": band(ds, "param_conditioned"),
                    "ABC-SMC": band(smc, "param_conditioned")}, index=[e[7:] for e in effects]))"""),
]

NOTEBOOKS = {A: A_CELLS, B: B_CELLS, C: C_CELLS, D: D_CELLS, E: E_CELLS}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        nbformat.write(notebook(name, cells), path)
        print("wrote", path)


if __name__ == "__main__":
    main()
