"""An interrupted calibration keeps its ABC history and continues with ``--resume`` (issue 12).

Both tests run real (tiny) ABC-SMC calibrations: slow.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nksim.calibration.config import load_config
from nksim.resources import data_path

pyabc = pytest.importorskip("pyabc")

CONFIG = data_path("calibration") / "ahmadvand2023.toml"


def interrupt_after_generation(monkeypatch, last: int) -> None:
    """Ctrl-C right after generation ``last`` is stored (what an interruption during the next one leaves)."""
    real = pyabc.History.append_population

    def append_population(self, t, *args, **kwargs):
        out = real(self, t, *args, **kwargs)
        if t == last:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(pyabc.History, "append_population", append_population)


@pytest.mark.slow
def test_resumed_single_core_abc_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    from nksim.calibration.abc import run_abc
    from nksim.calibration.posterior import history_dataset

    smoke = load_config(CONFIG).smoke_version()
    cfg = replace(smoke, abc=replace(smoke.abc, population_size=4, max_generations=3, max_simulations=400,
                                     min_acceptance_rate=0.01))
    whole = run_abc(cfg, tmp_path / "whole.db", progress=False, rng_dir=tmp_path / "rng_whole")
    interrupt_after_generation(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        run_abc(cfg, tmp_path / "cut.db", progress=False, rng_dir=tmp_path / "rng_cut")
    monkeypatch.undo()
    resumed = run_abc(cfg, tmp_path / "cut.db", progress=False, rng_dir=tmp_path / "rng_cut", resume=True)
    a = history_dataset(whole.history, cfg, seconds=0.0, workers=1)
    b = history_dataset(resumed.history, cfg, seconds=0.0, workers=1)
    assert a.sizes["generation"] == b.sizes["generation"] >= 2
    for name, var in a.data_vars.items():
        assert np.array_equal(var.values, b[name].values, equal_nan=True), name
    assert whole.n_simulations == resumed.n_simulations


@pytest.mark.slow
def test_cli_calibrate_interrupted_then_resumed(tmp_path, monkeypatch, capsys):
    from nksim.cli import main

    out = tmp_path / "cal"
    argv = ["calibrate", str(CONFIG), "--smoke", "--out", str(out), "--no-progress"]
    interrupt_after_generation(monkeypatch, 0)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    db = out / ".partial" / "abc.db"
    assert err == (f"nksim calibrate: interrupted; 1 finished ABC generations are kept in {db}: continue with the "
                   "same command and --resume"), err
    assert sorted(p.name for p in out.iterdir()) == [".partial"]  # no result file
    assert not list(tmp_path.glob(".cal.staging-*"))
    monkeypatch.undo()
    # without --resume the kept history is neither overwritten nor ignored
    assert main(argv) == 2
    assert "continue it with --resume, or pass --overwrite" in capsys.readouterr().err
    assert db.is_file()
    # another config is never continued into it
    other = replace(load_config(CONFIG).smoke_version(), seed=1)
    from nksim.calibration.resume import AbcCheckpoint

    with pytest.raises(Exception, match="belongs to another calibration"):
        AbcCheckpoint(out, other).prepare(resume=True, overwrite=False)
    assert main(argv + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "continuing the interrupted calibration" in text and "1 finished generations" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["abc.db", "posterior.nc", "posterior_summary.csv", "ppc_posterior.nc", "ppc_prior.nc", "report.png",
         "ppc.png", "diagnostics.png"])  # the .partial folder is gone
    import xarray as xr

    post = xr.open_dataset(out / "posterior.nc", engine="h5netcdf")
    assert post.sizes["generation"] == 2
    # nothing left to resume
    assert main(argv + ["--resume", "--overwrite"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def fail_writing_generation(monkeypatch, t_fail: int) -> None:
    """SQLite's full-disk error when generation ``t_fail`` is stored (its transaction rolls back)."""
    import sqlite3

    real = pyabc.History.append_population

    def append_population(self, t, *args, **kwargs):
        if t == t_fail:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, t, *args, **kwargs)

    monkeypatch.setattr(pyabc.History, "append_population", append_population)


@pytest.mark.slow
def test_cli_calibrate_full_disk_keeps_the_history_and_resumes(tmp_path, monkeypatch, capsys):
    from nksim.cli import main

    out = tmp_path / "cal"
    argv = ["calibrate", str(CONFIG), "--smoke", "--out", str(out), "--no-progress"]
    fail_writing_generation(monkeypatch, 1)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    db = out / ".partial" / "abc.db"
    assert err.count("\n") == 0, err
    assert err.startswith("nksim: error: writing the ABC history failed (database or disk is full); 1 finished "
                          f"ABC generations are kept in {db}"), err
    assert "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == [".partial"]
    monkeypatch.undo()
    assert main(argv + ["--resume"]) == 0
    assert (out / "posterior.nc").is_file() and not (out / ".partial").exists()


def test_write_failures_are_recognised_through_wrappers():
    import errno
    import sqlite3

    from nksim.calibration.run import _is_write_failure

    assert _is_write_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert _is_write_failure(sqlite3.OperationalError("database or disk is full"))
    wrapped = RuntimeError("pyabc failed")
    wrapped.__cause__ = sqlite3.OperationalError("attempt to write a readonly database")
    assert _is_write_failure(wrapped)
    assert not _is_write_failure(ValueError("a bug, not a disk"))
    assert not _is_write_failure(sqlite3.OperationalError("no such table: populations"))
