"""Fault injection (issue 12): kills at random points, signals in every command, write errors.

* *(slow)* SIGKILL at random points of a small sweep, several trials with a seeded
  ``random.Random`` (reproducible choice of the kill point): ``nksim summarize`` on the killed
  store reports it incomplete or names the damage (never the ranking of a complete store), and
  the same command completes it to the bytes of an uninterrupted run;
* *(slow)* SIGINT and SIGTERM in ``nksim run``, ``sweep``, ``screen`` and ``calibrate`` run as
  real processes: exit 130, one line saying what was kept, no output or temporary file
  (``summarize`` is covered in-process, tests/test_cli_failures.py: it ends in under a second);
* a full disk (ENOSPC) or a missing permission (EACCES) while ``nksim run`` keeps a simulation
  or ``nksim sweep`` writes a batch: one line naming the file and what was kept, exit 1, the
  earlier results untouched, and the same command then completes the run.
"""
from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from _process_util import message_lines, sigint_as_in_a_terminal, stderr_reader
from _sweep_util import INTERRUPTIBLE, batches_done, signal_group, sweep_command, tiny, wait_until, write_toml
from test_checkpoint import REPLICATES, SMALL_MODEL, kept_files, numbers, run_argv
from test_checkpoint import reference as run_reference  # noqa: F401  (the uninterrupted small run, a fixture)
from test_store_integrity import reference  # noqa: F401  (the tiny sweep's undamaged store, a fixture)

from nksim.cli import main
from nksim.sweep import SweepStore, run_sweep, store_digest

SIMULATE = sys.modules["nksim.simulate"]


def _one_line(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


# ----------------------------------------------------------------------------- SIGKILL at random points
@pytest.fixture(scope="module")
def interruptible(tmp_path_factory):
    """The 24-batch sweep spec and the digest of its uninterrupted store."""
    d = tmp_path_factory.mktemp("faults")
    spec = write_toml(d / "s.toml", tiny(**INTERRUPTIBLE))
    run_sweep(spec, d / "ref.zarr", workers=0)
    return spec, store_digest(d / "ref.zarr"), SweepStore.open_existing(d / "ref.zarr").plan


def _check_summary_of_killed_store(out: Path, n_batches: int, n_scenarios: int, capsys) -> None:
    """``nksim summarize`` of a killed store: incomplete said, or the damage named; never a complete ranking."""
    done = batches_done(out)
    rc = main(["summarize", str(out)])
    cap = capsys.readouterr()
    if rc == 2:  # no store yet, or damage named: one line, no table
        assert cap.out == "" and str(out) in _one_line(cap.err)
        return
    assert rc == 0, cap.err
    if done == n_batches:
        assert f"{n_scenarios}/{n_scenarios} scenarios complete" in cap.out
    else:
        assert f"{n_scenarios}/{n_scenarios} scenarios complete" not in cap.out
        assert "not finished and are left out" in cap.out or "no complete scenario yet" in cap.out, cap.out


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_store(tmp_path, interruptible, capsys):
    spec, digest, plan = interruptible
    rng = random.Random(20261130)
    outcomes = []
    for trial in range(5):
        workers = rng.choice([0, 2])
        after = rng.randint(0, plan.n_batches // 2)  # batches in the store before the kill...
        delay = rng.uniform(0.0, 0.5)  # ...then this much more (s): any point, mid-write included
        out = tmp_path / f"trial{trial}.zarr"
        proc = subprocess.Popen(sweep_command(spec, out, workers), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda n=after, o=out: n == 0 or batches_done(o) >= n, proc, what=f"batch {after}")
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
        finally:
            signal_group(proc, signal.SIGKILL)  # the CLI and its Dask workers
            proc.wait()
        outcomes.append((workers, after, round(delay, 2), batches_done(out)))
        _check_summary_of_killed_store(out, plan.n_batches, plan.n_scenarios, capsys)
        rep = run_sweep(spec, out, workers=0)
        assert rep.complete, outcomes
        assert store_digest(out) == digest, outcomes
    assert any(0 < kept < plan.n_batches for *_, kept in outcomes), outcomes  # at least one kill mid-sweep


# ----------------------------------------------------------------------------- signals in every command
def _model(tmp_path: Path) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(SMALL_MODEL.format(side=12))
    return p





COMMANDS = {  # command -> (arguments after the command, file whose appearance means "computing", kept message)
    "run": (lambda tmp, out: ["--out", str(out), "--model", str(_model(tmp)), "--replicates", "30"],
            lambda out: out / ".partial" / "run.json",
            r"(\d+) of 300 simulations are kept in {partial}: run the same command again to continue"),
    "sweep": (lambda tmp, out: [str(write_toml(tmp / "s.toml", tiny(**INTERRUPTIBLE))), "--out", str(out),
                                "--workers", "0"],
              lambda out: out / "batch_done" / "c" / "0",
              r"(\d+) of 24 batches are safely in {out}; run the same command again to resume"),
    "screen": (lambda tmp, out: ["ahmadvand2023", "--smoke", "--out", str(out)],
               None,
               r"nothing written"),
    "calibrate": (lambda tmp, out: ["ahmadvand2023", "--smoke", "--out", str(out)],
                  lambda out: out / ".partial" / "calibration.json",
                  r"nothing written"),
}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_signal_in_every_command_is_one_line_and_130(command, sig, tmp_path):
    if command in ("screen", "calibrate"):
        pytest.importorskip("SALib" if command == "screen" else "pyabc")
    SIMULATE.warm_up()  # compile here if needed, so that the child only loads the kernel
    args, started, kept = COMMANDS[command]
    out = tmp_path / "out"
    code = "import sys; from nksim.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, command, *args(tmp_path, out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=sigint_as_in_a_terminal)
    chunks = stderr_reader(proc)
    try:
        if started is not None:
            wait_until(lambda: started(out).exists(), proc, what=f"{started(out).name} in --out")
        else:  # the screen's progress bar: design points are being simulated
            wait_until(lambda: b"Morris screen" in b"".join(chunks), proc, what="the progress bar")
        proc.send_signal(sig)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = b"".join(chunks).decode(errors="replace")
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = message_lines(err)
    by = " by SIGTERM" if sig == signal.SIGTERM else ""
    expected = rf"nksim {command}: interrupted{by}; " + kept.format(partial=re.escape(str(out / ".partial")),
                                                                    out=re.escape(str(out)))
    match = re.fullmatch(expected, lines[0]) if len(lines) == 1 else None
    assert match, lines
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert leftovers == [], leftovers  # no staging or temporary folder next to --out
    if command == "run":  # only the kept simulations, each whole
        assert sorted(p.name for p in out.iterdir()) == [".partial"]
        assert sorted(p.name for p in (out / ".partial").iterdir()) == sorted(["run.json"] + kept_files(out))
        assert len(kept_files(out)) == int(match.group(1)) >= 1
    elif command == "sweep":  # the store holds exactly the batches it says
        assert batches_done(out) == int(match.group(1)) >= 1
    else:  # nothing written: no result file, no kept history
        assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


# ----------------------------------------------------------------------------- write errors
ERRORS = [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.toml"
    p.write_text(SMALL_MODEL.format(side=4))
    return p


@pytest.mark.parametrize(("err", "text"), ERRORS, ids=["ENOSPC", "EACCES"])
def test_run_write_error_while_keeping_a_simulation(err, text, tmp_path, small_model, run_reference, capsys,  # noqa: F811
                                                    monkeypatch):
    """The 6th simulation cannot be kept: one line, exit 1; the 5 kept ones and an older trial.nc survive."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "trial.nc").write_bytes(b"previous results")
    real = os.replace
    renamed: list[str] = []

    def replace(src, dst, *a, **k):  # the rename that makes a kept simulation visible
        if str(dst).endswith(".npz"):
            if len(renamed) == 5:
                raise OSError(err, os.strerror(err), str(dst))
            renamed.append(str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr("nksim.checkpoint.os.replace", replace)
    assert main(run_argv(out, small_model, 5, "--overwrite")) == 1
    msg = _one_line(capsys.readouterr().err)
    partial = out / ".partial"
    assert msg.startswith(f"nksim: error: cannot keep a finished simulation in {partial}/") and text in msg, msg
    assert f"5 of {10 * REPLICATES} simulations are kept in {partial}: free some space" in msg, msg
    assert (out / "trial.nc").read_bytes() == b"previous results"
    assert len(kept_files(out)) == 5 and not [p for p in partial.iterdir() if p.suffix == ".tmp"]
    monkeypatch.undo()
    assert main(run_argv(out, small_model, 5, "--overwrite")) == 0
    xr.testing.assert_identical(numbers(out / "trial.nc"), run_reference)


@pytest.mark.parametrize(("err", "text"), ERRORS, ids=["ENOSPC", "EACCES"])
def test_sweep_write_error_keeps_the_finished_batches(err, text, reference, tmp_path, capsys, monkeypatch):  # noqa: F811
    """The 4th batch is half written when the disk fills: one line, exit 1, 3 batches kept; the rerun completes."""
    spec, _, digest, _ = reference
    out = tmp_path / "s.zarr"
    real = SweepStore.write_batch
    calls: list[int] = []

    def write_batch(self, result):
        calls.append(result["batch"])
        if len(calls) == 4:  # the first array reaches the disk, then the disk is full
            name, data = next(iter(result["arrays"].items()))
            s, d, ps, rs = self.plan.batch(result["batch"])
            self.array(name)[s, d, ps, rs] = data
            raise OSError(err, os.strerror(err), str(self.chunk_file(name, result["batch"])))
        return real(self, result)

    monkeypatch.setattr(SweepStore, "write_batch", write_batch)
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]) == 1
    msg = _one_line(capsys.readouterr().err)
    assert msg.startswith(f"nksim: error: cannot write into the sweep store {out}: {text} ({out}/"), msg
    assert f"3 of 8 batches are safely in {out}: free some space" in msg and "resume" in msg, msg
    monkeypatch.undo()
    assert batches_done(out) == 3
    assert main(["summarize", str(out)]) == 0  # verified: the half-written batch is pending, not damage
    assert "not finished and are left out" in capsys.readouterr().out
    rep = run_sweep(spec, out, workers=0)
    assert rep.complete and rep.batches_run == 5
    assert store_digest(out) == digest
