"""``nksim run`` keeps finished simulations in a checkpoint and continues from it (issue 12).

An interrupted (Ctrl-C, SIGTERM) or killed run keeps its finished (patient, replicate)
simulations in ``<out>/.partial``; the same command continues and ends with the Dataset of an
uninterrupted run, bit for bit. A checkpoint of other inputs is refused, never mixed in; a
damaged checkpoint file is recomputed, never used; the checkpoint is deleted once trial.nc is
written.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

import nksim
from nksim.checkpoint import RunCheckpoint
from nksim.cli import main

SIMULATE = sys.modules["nksim.simulate"]
SMALL_MODEL = ('[meta]\nname = "small"\nstatus = "test, uncalibrated"\nextends = "default"\n\n'
               '[lattice.side]\nvalue = {side}\nunit = "1"\ndescription = "small test lattice"\nsource = "tests"\n')
REPLICATES = 2  # 10 patients x 2 = 20 simulations


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.toml"
    p.write_text(SMALL_MODEL.format(side=4))
    return p


def run_argv(out: Path, model: Path, seed: int = 5, *extra: str) -> list[str]:
    """``nksim run`` arguments of the small test run."""
    return ["run", "--out", str(out), "--no-progress", "--model", str(model), "--seed", str(seed),
            "--replicates", str(REPLICATES), "--workers", "1", *extra]


def numbers(path: Path) -> xr.Dataset:
    """An output's data, coordinates and their attributes (the global attributes hold the creation time)."""
    ds = nksim.open_output(path)
    ds.attrs = {}
    return ds


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_model) -> xr.Dataset:
    """The uninterrupted run (seed 5)."""
    out = tmp_path_factory.mktemp("ref") / "o"
    assert main(run_argv(out, small_model)) == 0
    return numbers(out / "trial.nc")


def interrupt_after(monkeypatch, k: int, exc: type[BaseException] = KeyboardInterrupt) -> list[object]:
    """Raise ``exc`` right after the ``k``-th simulation is kept (what Ctrl-C there does)."""
    real = RunCheckpoint.save
    saved: list[object] = []

    def save(self, run):
        real(self, run)
        saved.append((run.patient, run.replicate))
        if len(saved) == k:
            raise exc

    monkeypatch.setattr(RunCheckpoint, "save", save)
    return saved


def kept_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / ".partial").glob("*.npz"))


def test_interrupted_run_continues_to_the_uninterrupted_dataset(tmp_path, small_model, reference, monkeypatch,
                                                                capsys):
    out = tmp_path / "o"
    interrupt_after(monkeypatch, 7)
    assert main(run_argv(out, small_model)) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"nksim run: interrupted; 7 of 20 simulations are kept in {out / '.partial'}: run the same "
                   "command again to continue")
    assert len(kept_files(out)) == 7 and not (out / "trial.nc").exists()
    monkeypatch.undo()
    ran = []
    real = SIMULATE.run_one
    monkeypatch.setattr(SIMULATE, "run_one", lambda *a, **k: ran.append(1) or real(*a, **k))
    assert main(run_argv(out, small_model)) == 0
    assert len(ran) == 13  # only the missing simulations
    assert "7 of 20 simulations already done" in capsys.readouterr().err
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]  # the checkpoint is deleted


def test_two_interruptions_and_threads_give_the_same_dataset(tmp_path, small_model, reference, monkeypatch):
    """Interrupted twice, continued on 2 threads: still the uninterrupted numbers."""
    out = tmp_path / "o"
    interrupt_after(monkeypatch, 3)
    assert main(run_argv(out, small_model)) == 130
    interrupt_after(monkeypatch, 5)  # 3 + 5 kept
    assert main(run_argv(out, small_model)) == 130
    assert len(kept_files(out)) == 8
    monkeypatch.undo()
    assert main(run_argv(out, small_model)[:-2] + ["--workers", "2"]) == 0
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)


def test_api_checkpoint_with_threads_keeps_the_running_simulations(tmp_path, small_model, monkeypatch):
    """On 2 threads an interruption cancels the queued simulations and halts the running ones; the finished are kept."""
    params, protocol = nksim.load_parameters(small_model), nksim.load_protocol("ahmadvand2023")
    ckpt = RunCheckpoint(tmp_path / "ck", params, protocol, 5, REPLICATES)
    interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        nksim.simulate_cohort(params, protocol, replicates=REPLICATES, seed=5, workers=2, checkpoint=ckpt)
    assert 4 <= ckpt.count() < 20
    monkeypatch.undo()
    ds = nksim.simulate_cohort(params, protocol, replicates=REPLICATES, seed=5, workers=2, checkpoint=ckpt)
    ref = nksim.simulate_cohort(params, protocol, replicates=REPLICATES, seed=5, workers=1)
    ds.attrs, ref.attrs = {}, {}  # the creation time
    xr.testing.assert_identical(ds, ref)


def test_checkpoint_of_another_seed_is_refused_and_never_used(tmp_path, small_model, monkeypatch, capsys):
    out = tmp_path / "o"
    interrupt_after(monkeypatch, 6)
    assert main(run_argv(out, small_model, seed=1)) == 130
    monkeypatch.undo()
    before = {p.name: p.read_bytes() for p in (out / ".partial").iterdir()}
    capsys.readouterr()
    assert main(run_argv(out, small_model, seed=2)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out / ".partial") in err and "6 finished simulations of another run" in err
    assert "seed 1 (now 2)" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in (out / ".partial").iterdir()} == before  # untouched
    # another replicate count or model is another run too
    assert main(run_argv(out, small_model, 1)[:-4] + ["--replicates", "3", "--workers", "1"]) == 2
    assert "replicates 2 (now 3)" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text(SMALL_MODEL.format(side=5))
    assert main(run_argv(out, other, seed=1)) == 2
    assert "parameter values (lattice.side)" in capsys.readouterr().err
    # --overwrite discards it: the result is the seed-2 run's alone
    ran = []
    real = SIMULATE.run_one
    monkeypatch.setattr(SIMULATE, "run_one", lambda *a, **k: ran.append(1) or real(*a, **k))
    assert main(run_argv(out, small_model, 2, "--overwrite")) == 0
    assert len(ran) == 20
    ref2 = tmp_path / "ref2"
    assert main(run_argv(ref2, small_model, seed=2)) == 0
    xr.testing.assert_identical(numbers(out / "trial.nc"), numbers(ref2 / "trial.nc"))


def test_foreign_or_damaged_checkpoint_files_are_recomputed(tmp_path, small_model, reference, monkeypatch):
    """A kept file of another run (same name) or a damaged one is recomputed, never read as a result."""
    out, other = tmp_path / "o", tmp_path / "other"
    interrupt_after(monkeypatch, 4)
    assert main(run_argv(out, small_model)) == 130
    interrupt_after(monkeypatch, 4)
    assert main(run_argv(other, small_model, seed=9)) == 130  # the same (patient, replicate) files
    monkeypatch.undo()
    names = kept_files(out)
    assert names == kept_files(other)
    (out / ".partial" / names[0]).write_bytes((other / ".partial" / names[0]).read_bytes())  # another run's
    data = (out / ".partial" / names[1]).read_bytes()
    (out / ".partial" / names[1]).write_bytes(data[:200] + bytes(b ^ 0x5A for b in data[200:]))  # garbled
    (out / ".partial" / names[2]).write_bytes(data[: len(data) // 2])  # truncated
    ran = []
    real = SIMULATE.run_one
    monkeypatch.setattr(SIMULATE, "run_one", lambda *a, **k: ran.append(1) or real(*a, **k))
    assert main(run_argv(out, small_model)) == 0
    assert len(ran) == 16 + 3
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)


def test_sigkill_then_rerun_gives_the_uninterrupted_dataset(tmp_path, small_model, reference):
    """SIGKILL a real ``nksim run`` once it has kept some simulations; the same command completes it."""
    SIMULATE.warm_up()  # compile here if needed, so that the child only loads the kernel
    out = tmp_path / "o"
    code = "import sys; from nksim.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, *run_argv(out, small_model)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while len(kept_files(out)) < 3:  # an observable event, not a fixed delay
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no simulation kept"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    kept = len(kept_files(out))
    if kept == 20:
        pytest.skip("the run finished its simulations before it could be killed")
    assert not (out / "trial.nc").exists()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{kept} of 20 simulations already done" in proc.stderr
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)
