"""nksim optimise on the real model: outputs, determinism, resume after a kill, damaged files, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("optuna")

from nksim.cli import main  # noqa: E402
from nksim.errors import NksimInputError, NksimWarning  # noqa: E402
from nksim.optimise import problem as problem_mod  # noqa: E402
from nksim.optimise.run import optimise  # noqa: E402
from nksim.optimise.spec import load_spec  # noqa: E402

TINY = """
[optimise]
name = "tiny"
seed = 7
draws_from = "prior"
horizon = 70
assessment_days = [30, 70]
trials = 8
batch_size = 4
startup_trials = 4
polish_rounds = 1
top = 2
delta = 3

[optimise.space]
regimen = "trial"
nk_product = "expanded"
total_dose = 1.5e7
n_infusions = {low = 1, high = 2}
gap = {low = 2, high = 10}
interval = {low = 3, high = 14}
donor = {choices = ["same", "new"]}

[optimise.constraints]
last_infusion_day = 14

[optimise.reference]
gap = 7
days = [0, 7]

[optimise.banks.search]
draws = 2
patients = 2

[optimise.banks.confirm]
draws = 2
patients = 2

[optimise.banks.estimate]
draws = 2
patients = 2

[parameters]
"lattice.side" = 4
"""


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    xr.testing.assert_identical(a, b)


def test_cli_writes_labelled_outputs_and_resumes_without_simulating(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([ "optimise", str(tiny), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    first = capsys.readouterr().out
    for name in ("result.nc", "REPORT.md", "history.csv", "optimise.json", "search_history.png", "near_optimal.png",
                 "factors.png", "per_draw_best.png", "profiles.png"):
        assert (out / name).is_file(), name
    with xr.open_dataset(out / "result.nc") as ds:
        ds.load()
    for v in ds.data_vars:
        assert "units" in ds[v].attrs and "long_name" in ds[v].attrs, v
    assert ds["selected"].sum() == 1
    sel = json.loads(ds.attrs["selected_schedule"])
    own = (ds["profile_factor"] == "gap") & (ds["profile_level"] == sel["gap"])
    assert int(own.sum()) == 1 and ds["profile_diff"].where(own, drop=True).item() == 0.0  # the selected itself
    assert (ds["role"].values == "reference").any() or any("reference" in r for r in ds["role"].values)
    assert ds.attrs["held_out_value_lo"] <= ds.attrs["held_out_value"] <= ds.attrs["held_out_value_hi"]
    assert np.all((ds["pfs_mean"] >= 0) & (ds["pfs_mean"] <= 1))
    assert np.all((ds["pft_mean"] > 0) & (ds["pft_mean"] <= 70))
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) - 1 >= 8
    assert "simulated" in first and "reused 0" in first
    assert main(["optimise", str(tiny), "--out", str(out), "--workers", "1", "--no-progress", "--no-figures"]) == 0
    second = capsys.readouterr().out
    assert "simulated 0 " in second
    with xr.open_dataset(out / "result.nc") as again:
        _same(ds, again.load())


def test_workers_do_not_change_the_result(tiny):
    spec = load_spec(tiny)
    a = optimise(spec, None, workers=1, figures=False)
    b = optimise(spec, None, workers=2, figures=False)
    assert [t.candidate.key() for t in a.history.trials] == [t.candidate.key() for t in b.history.trials]
    _same(a.dataset, b.dataset)


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny, tmp_path, monkeypatch):
    spec = load_spec(tiny)
    whole = optimise(spec, tmp_path / "whole", workers=1, figures=False)
    calls = {"n": 0}
    real = problem_mod.ModelProblem.evaluate

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(problem_mod.ModelProblem, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        optimise(spec, tmp_path / "cut", workers=1, figures=False)
    kept = list((tmp_path / "cut" / "evaluations").glob("*/*.npz"))
    assert kept and not (tmp_path / "cut" / "result.nc").exists()
    monkeypatch.setattr(problem_mod.ModelProblem, "evaluate", real)
    resumed = optimise(spec, tmp_path / "cut", workers=2, figures=False)
    assert resumed.reused == len(kept)
    _same(whole.dataset, resumed.dataset)


def test_damaged_evaluation_is_recomputed_and_foreign_folder_refused(tiny, tmp_path):
    spec = load_spec(tiny)
    out = tmp_path / "o"
    ref = optimise(spec, out, workers=1, figures=False)
    files = sorted((out / "evaluations").glob("*/*.npz"))
    files[0].write_bytes(files[0].read_bytes()[:50])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = optimise(spec, out, workers=1, figures=False)
    assert any(issubclass(x.category, NksimWarning) and "damaged" in str(x.message) for x in w)
    assert again.simulated == 1
    _same(ref.dataset, again.dataset)
    before = (out / "result.nc").read_bytes()
    other = load_spec(tiny, ["optimise.seed=8"])
    with pytest.raises(NksimInputError, match="other inputs"):
        optimise(other, out, workers=1, figures=False)
    assert (out / "result.nc").read_bytes() == before  # nothing already written is destroyed


def test_bad_spec_is_one_line_exit_2(tiny, tmp_path, capsys):
    tiny.write_text(TINY.replace("trials = 8", "trials = -8"))
    assert main(["optimise", str(tiny), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimise.trials" in err[0] and str(tiny) in err[0]
    assert not (tmp_path / "x").exists()


def test_malformed_scheduler_is_one_line_before_any_work(tiny, tmp_path, capsys):
    assert main(["optimise", str(tiny), "--out", str(tmp_path / "x"), "--scheduler", "not a url"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scheduler" in err[0]
    assert not (tmp_path / "x").exists()


def test_outcome_of_one_unit_follows_the_progression_rule():
    """The outcome of one unit follows the progression rule.

    pft = first day on or after the first assessment with blasts at the PD threshold (lymphodepletion clock),
    restricted to the horizon; pfs at the landmark; CR at the first assessment.
    """
    clock = problem_mod.Clock((20.0, 40.0), 40.0, 50.0)
    th = {"cr_blast_pct": 5.0, "pr_blast_pct": 5.0, "pr_min_fall": 50.0, "pd_relative_rise": 50.0,
          "pd_absolute_rise": 10.0, "pd_absolute_below": 20.0}
    time_ = np.arange(-5.0, 41.0)
    blasts = np.full(time_.shape, 40.0)
    blasts[time_ >= 10] = 2.0   # CR at the first assessment (day 10 after the infusion = day 20 on the clock)
    blasts[time_ >= 25] = 70.0  # progression on day 25 after the infusion = day 35 on the clock
    assert problem_mod.unit_outcome(time_, blasts, th, 10.0, 10.0, clock) == (35.0, 0.0, 1.0)
    blasts[time_ >= 25] = 2.0   # no progression: restricted to the horizon
    assert problem_mod.unit_outcome(time_, blasts, th, 10.0, 10.0, clock) == (50.0, 1.0, 1.0)
    blasts[time_ < 10] = 80.0   # above threshold only before the first assessment: not progression
    assert problem_mod.unit_outcome(time_, blasts, th, 10.0, 10.0, clock)[0] == 50.0


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(tiny, tmp_path):
    """A SIGKILL mid-run, then the same command: the uninterrupted run's result.

    A real kill (SIGKILL: no clean-up at all) of `nksim optimise`, then the same command: the result equals
    an uninterrupted run's.
    """
    text = TINY.replace("trials = 8", "trials = 24").replace("patients = 2", "patients = 4")
    tiny.write_text(text)
    spec = load_spec(tiny)
    whole = optimise(spec, tmp_path / "whole", workers=1, figures=False)
    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "nksim", "optimise", str(tiny), "--out", str(out), "--workers", "1", "--no-progress",
           "--no-figures"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "evaluations").glob("*/*.npz"))) < 6:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_kept = len(list((out / "evaluations").glob("*/*.npz")))
    assert n_kept >= 6
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with xr.open_dataset(out / "result.nc") as ds:
        xr.testing.assert_identical(ds.load(), whole.dataset)
    meta = json.loads((out / "optimise.json").read_text())
    assert meta["name"] == "tiny"


@pytest.mark.slow
def test_dask_scheduler_gives_the_threads_result(tiny):
    """--scheduler: the units go to an existing Dask cluster's worker processes, in chunks; same result."""
    from distributed import LocalCluster

    spec = load_spec(tiny)
    local = optimise(spec, None, workers=2, figures=False)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    try:
        remote = optimise(spec, None, scheduler=cluster.scheduler_address, figures=False)
    finally:
        cluster.close()
    _same(local.dataset, remote.dataset)


def test_pairwise_differences_are_antisymmetric_and_match_the_columns(tiny):
    ds = optimise(load_spec(tiny), None, workers=2, figures=False).dataset
    d = ds["paired_diff"].values
    np.testing.assert_allclose(d, -d.T, atol=1e-12)
    assert np.all(np.diag(d) == 0)
    ref = int(np.flatnonzero(["reference" in r for r in ds["role"].values])[0])
    np.testing.assert_allclose(ds["gain_vs_reference"].values, d[:, ref])
    assert np.all(ds["paired_diff_lo"].values <= d + 1e-12) and np.all(d <= ds["paired_diff_hi"].values + 1e-12)


def test_population_in_remission_reaches_every_simulated_unit(tiny, monkeypatch):
    """``disease``/``baseline_blast_pct`` are checked, recorded only when set, and simulated for every unit."""
    import importlib

    from nksim.parameters import load_parameters

    sim = importlib.import_module("nksim.simulate")  # the module (nksim.simulate is also a function's name)

    with pytest.raises(NksimInputError, match="residual marrow blasts") as info:
        load_spec(tiny, ["optimise.disease=remission"])
    assert info.value.key == "optimise.baseline_blast_pct"
    active = load_spec(tiny)
    spec = load_spec(tiny, ["optimise.disease=remission", "optimise.baseline_blast_pct=2.0"])
    assert active.population == {} and spec.population == {"disease": "remission", "baseline_blast_pct": 2.0}
    seen = set()
    orig = sim.run_one

    def spy(params, proto, patient, *a, **k):
        seen.add((patient.disease, tuple(sorted(patient.covariates.items()))))
        return orig(params, proto, patient, *a, **k)

    monkeypatch.setattr(sim, "run_one", spy)
    res = optimise(spec, None, workers=1, figures=False)
    assert seen == {("remission", (("baseline_blast_pct", 2.0),))}
    assert res.dataset.attrs["population"] == "in remission, marrow blasts 2 percent"
    # the evaluation cache's identity names the population only when one is set
    clock = problem_mod.Clock((30.0, 70.0), 70.0, 70.0)
    base = load_parameters()
    assert "population" not in problem_mod.ModelProblem(base, clock).identity()
    assert problem_mod.ModelProblem(base, clock, population=spec.population).identity()["population"] == \
        spec.population
    # a corrected source text keeps the identity (and the cached evaluations); a changed value does not
    from dataclasses import replace as _replace
    from types import MappingProxyType

    key = next(iter(base.parameters))
    reworded = _replace(base, parameters=MappingProxyType(
        {**base.parameters, key: _replace(base.parameters[key], source="corrected source", description="reworded")}))
    ident = problem_mod.ModelProblem(base, clock).identity()
    assert problem_mod.ModelProblem(reworded, clock).identity() == ident
    moved = base.with_values({key: base.parameters[key].value * 1.5 + 1.0})
    assert problem_mod.ModelProblem(moved, clock).identity() != ident
