"""Interrupts that reach the kernel, no signal swallowed or misreported, giant work refused before it starts (issue 23).

* the kernel polls a halt flag: set from another thread, it returns within one step and the
  simulation raises ``SimulationHalted`` -- never returned, never kept; Ctrl-C and SIGTERM in
  ``nksim run`` (1 and 2 threads), ``nksim sweep --workers 0`` and the API end a run on a large
  lattice (side 400, and 4096) at once, with one line saying what is on disk -- no segmentation
  fault (numba boxing the kernel's results while a signal handler raised, 0.4.0);
* a signal whose exception Python swallows (a handler raising inside a weakref callback or
  ``__del__``, e.g. while h5py closes the netCDF file) still ends the command, with exit 130
  and a line saying what is on disk; a signal after the last simulation or after the files
  are written says so (never "nothing written");
* a run or sweep that cannot fit in memory is refused before any file or store is created (CLI
  and API); above 24 CPU-hours or half the available memory the CLI asks for ``--yes``.
"""
from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _process_util import message_lines, sigint_as_in_a_terminal, stderr_reader
from _sweep_util import batches_done, tiny, wait_until, write_toml
from test_checkpoint import REPLICATES, SMALL_MODEL, kept_files, numbers, run_argv
from test_checkpoint import reference as run_reference  # noqa: F401  (the uninterrupted small run, a fixture)

import nksim
from nksim import interrupts, sizing
from nksim.checkpoint import RunCheckpoint
from nksim.cli import main
from nksim.errors import NksimInputError, SimulationHalted
from nksim.interrupts import sigterm_as_interrupt
from nksim.sweep import SweepStore, run_sweep

SIMULATE = sys.modules["nksim.simulate"]  # the module (``nksim.simulate`` is also a function)
CLI = sys.modules["nksim.cli"]

#: One patient, 60 days, no lattice snapshot: a single long simulation on a large lattice.
ONE_PATIENT = """\
[protocol]
name = "one"
start_day = -1
end_day = 60
assessment_days = [28]
nk_product = "expanded"

[[events]]
day = 0
kind = "nk_infusion"
dose = 1e6
unit = "kg-1"

[[patients]]
id = "p1"
group = "all"
"""


def _one_line(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and "Exception ignored" not in err and err.count("\n") == 0, err
    return err


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.toml"
    p.write_text(SMALL_MODEL.format(side=4))
    return p


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Model files of side 400 (about 20-40 s per simulation of the trial) and 4096, and the one-patient protocol."""
    d = tmp_path_factory.mktemp("large")
    models = {}
    for side in (400, 4096):
        models[side] = d / f"side{side}.toml"
        models[side].write_text(SMALL_MODEL.format(side=side))
    proto = d / "one.toml"
    proto.write_text(ONE_PATIENT)
    return models, proto


def _no_kernel_left() -> None:
    """No kernel is running and no halt flag is registered (the one reusable kernel thread, if any, is idle)."""
    alive = [t.name for t in threading.enumerate() if t.name == "nksim-kernel"]
    assert len(alive) <= 1 and SIMULATE._KERNEL_THREAD.pending == 0, (alive, SIMULATE._KERNEL_THREAD.pending)
    assert interrupts._HALT_FLAGS == {}, interrupts._HALT_FLAGS


@pytest.fixture
def kernel_results(monkeypatch) -> list[bool]:
    """The ``halted`` status of every kernel call (True: stopped by its flag before the end)."""
    real = SIMULATE.run_patient
    halted: list[bool] = []

    def run_patient(*args):
        out = real(*args)
        halted.append(bool(out[3]))
        return out

    monkeypatch.setattr(SIMULATE, "run_patient", run_patient)
    return halted


def _halted_from_the_signal_on(results: list[bool]) -> bool:
    """Some kernel was halted, and every kernel that returned after the first halted one was halted too."""
    return True in results and all(results[results.index(True):])


def _when_a_kernel_runs(action) -> threading.Thread:
    """Call ``action()`` from another thread as soon as a kernel has registered its halt flag."""
    def wait_and_act():
        deadline = time.monotonic() + 120
        while not interrupts._HALT_FLAGS and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)  # let it run a little
        action()

    t = threading.Thread(target=wait_and_act, daemon=True)
    t.start()
    return t


# ----------------------------------------------------------------------------- 1. the kernel halts
def test_a_set_halt_flag_stops_the_kernel_before_it_starts(large):
    """Side 4096 (minutes of work): with its flag already set the kernel returns at once, halted; nothing returned."""
    models, proto = large
    params, protocol = nksim.load_parameters(models[4096]), nksim.load_protocol(proto)
    flag = SIMULATE.new_halt_flag()
    flag[0] = 1
    with pytest.raises(SimulationHalted):
        SIMULATE.run_one(params, protocol, protocol.patients[0], 0, 0, halt=flag)
    _no_kernel_left()


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_a_running_kernel_halts_when_its_flag_is_set(thread, large, kernel_results):
    """Set from another thread while the kernel runs (side 400): it returns halted; run_one raises, returns nothing."""
    models, proto = large
    params = nksim.load_parameters(models[400])
    protocol = nksim.load_protocol("ahmadvand2023")
    flag = SIMULATE.new_halt_flag()
    setter = _when_a_kernel_runs(lambda: flag.__setitem__(0, 1))

    def one():
        return SIMULATE.run_one(params, protocol, protocol.patients[0], 0, 0, halt=flag)

    with pytest.raises(SimulationHalted):
        if thread == "main":
            one()
        else:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(one).result()
    setter.join()
    assert kernel_results == [True]  # stopped by its flag, not finished
    _no_kernel_left()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_halted_simulation_is_never_kept_nor_returned(workers, tmp_path, small_model, run_reference,  # noqa: F811
                                                         monkeypatch):
    """The 5th kernel call is halted: simulate_cohort raises; the checkpoint holds only whole simulations of the run."""
    params, protocol = nksim.load_parameters(small_model), nksim.load_protocol("ahmadvand2023")
    ckpt = RunCheckpoint(tmp_path / "o" / ".partial", params, protocol, 5, REPLICATES)
    real = SIMULATE.run_patient
    calls: list[bool] = []
    started = itertools.count()

    def run_patient(*args):
        if next(started) == 4:
            args[-1][0] = 1  # its halt flag (the cohort's): set before it starts
        out = real(*args)
        calls.append(bool(out[3]))
        return out

    monkeypatch.setattr(SIMULATE, "run_patient", run_patient)
    with pytest.raises(SimulationHalted):
        nksim.simulate_cohort(params, protocol, replicates=REPLICATES, seed=5, workers=workers, checkpoint=ckpt)
    finished = calls.count(False) - (1 if workers > 1 else 0)  # 2 threads: a 2 x 2 warm-up first, never kept
    assert any(calls) and finished <= 5  # halted from the 5th call on (a simulation running beside it may end)
    assert ckpt.count() == finished  # every finished simulation is kept, no halted one
    monkeypatch.undo()
    assert main(run_argv(tmp_path / "o", small_model)) == 0  # continues from the kept ones
    xr.testing.assert_identical(numbers(tmp_path / "o" / "trial.nc"), run_reference)


def _sigint_default():
    """Python's own SIGINT handler for the block (a test run in the background has SIGINT ignored)."""
    return signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.parametrize("call", ["simulate", "cohort-1", "cohort-2"])
def test_ctrl_c_in_the_api_halts_the_kernel(call, large, kernel_results):
    """Ctrl-C (SIGINT to this process) in ``simulate``/``simulate_cohort`` on side 400: KeyboardInterrupt at once."""
    models, _ = large
    params = nksim.load_parameters(models[400])
    before = _sigint_default()
    try:
        sender = _when_a_kernel_runs(lambda: os.kill(os.getpid(), signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            if call == "simulate":
                nksim.simulate(params, "ahmadvand2023")
            else:
                nksim.simulate_cohort(params, "ahmadvand2023", workers=int(call[-1]))
        sender.join()
    finally:
        signal.signal(signal.SIGINT, before)
    assert _halted_from_the_signal_on(kernel_results)  # every running kernel was halted, none waited for
    _no_kernel_left()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_the_command_line_handler_halts_every_kernel(workers, large, kernel_results):
    models, _ = large
    params = nksim.load_parameters(models[400])
    with sigterm_as_interrupt() as received:
        sender = _when_a_kernel_runs(lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(KeyboardInterrupt):
            nksim.simulate_cohort(params, "ahmadvand2023", workers=workers)
        sender.join()
    assert received == [signal.SIGTERM]
    assert _halted_from_the_signal_on(kernel_results)
    _no_kernel_left()


def test_a_failing_thread_pool_halts_the_running_kernels():
    """The calibration's thread pools (Morris screen, predictive check): an error or Ctrl-C halts the kernels."""
    flag = SIMULATE.new_halt_flag()
    with interrupts.halt_registered(flag), pytest.raises(KeyboardInterrupt), interrupts.halt_kernels_on_error():
        raise KeyboardInterrupt
    assert flag[0] == 1
    other = SIMULATE.new_halt_flag()
    with interrupts.halt_registered(other), interrupts.halt_kernels_on_error():
        pass
    assert other[0] == 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")





def _interrupt_while_computing(argv: list[str], sig: int, ready) -> tuple[int, str]:
    """Run ``nksim ARGV``; once ``ready(stderr so far)`` holds and it computed one more CPU-second, send ``sig``.

    Returns (exit status, stderr). The process must end within 120 s of the signal: far less
    than one simulation of the lattices used here takes (minutes to an hour).
    """
    code = "import sys; from nksim.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=sigint_as_in_a_terminal)
    chunks = stderr_reader(proc)
    try:
        wait_until(lambda: ready(b"".join(chunks)), proc, what="the start of the computation")
        cpu = _cpu_seconds(proc.pid)
        wait_until(lambda: _cpu_seconds(proc.pid) > cpu + 1.0, proc, what="one CPU-second of simulating")
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.1)  # the reader's last chunk
    return rc, b"".join(chunks).decode(errors="replace")


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")


@needs_proc
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_large_lattice_run_is_one_line_and_130(sig, workers, large, tmp_path):
    """The 0.4.0 segmentation fault: ``nksim run`` on side 400, the signal while the kernel runs."""
    SIMULATE.warm_up()  # compile here if needed, so that the child only loads the kernel
    models, _ = large
    out = tmp_path / "o"
    rc, err = _interrupt_while_computing(["run", "--model", str(models[400]), "--out", str(out), "--workers",
                                          str(workers)], sig, lambda err: b"simulating" in err)
    assert rc == 130, err[-3000:]  # not -11 (SIGSEGV)
    assert "Traceback" not in err and "Segmentation" not in err and "Exception ignored" not in err, err[-3000:]
    lines = message_lines(err)
    by = " by SIGTERM" if sig == signal.SIGTERM else ""
    m = re.fullmatch(rf"nksim run: interrupted{by}; (nothing written|(\d+) of 10 simulations are kept in "
                     rf"{re.escape(str(out / '.partial'))}: run the same command again to continue)", lines[-1])
    assert m and len(lines) == 1, lines
    kept = int(m.group(2) or 0)
    assert len(kept_files(out) if (out / ".partial").exists() else []) == kept
    assert not (out / "trial.nc").exists()


@needs_proc
@pytest.mark.parametrize(("workers", "sig"), [(1, signal.SIGTERM), (2, signal.SIGINT)], ids=["1-SIGTERM", "2-SIGINT"])
def test_signal_on_the_largest_lattice_ends_the_run(workers, sig, large, tmp_path):
    """Side 4096 (the largest allowed; one simulation of 60 days is about 10 CPU-minutes): ended by the signal."""
    SIMULATE.warm_up()
    models, proto = large
    out = tmp_path / "o"
    rc, err = _interrupt_while_computing(["run", "--model", str(models[4096]), "--protocol", str(proto), "--out",
                                          str(out), "--workers", str(workers)], sig, lambda err: b"simulating" in err)
    assert rc == 130, err[-3000:]
    by = " by SIGTERM" if sig == signal.SIGTERM else ""
    assert message_lines(err) == [f"nksim run: interrupted{by}; nothing written"], err[-3000:]


@needs_proc
def test_sigterm_during_an_in_process_sweep_on_a_large_lattice(tmp_path):
    SIMULATE.warm_up()
    spec = write_toml(tmp_path / "s.toml", tiny(parameters={"lattice.side": 400}, cohort={"patients": 2,
                                                                                          "replicates": 1}))
    out = tmp_path / "s.zarr"
    rc, err = _interrupt_while_computing(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"],
                                         signal.SIGTERM, lambda err: (out / "batch_done").exists())
    assert rc == 130, err[-3000:]
    lines = message_lines(err)
    assert lines[-1] == f"nksim sweep: interrupted by SIGTERM; 0 of 4 batches are safely in {out}; run the same " \
                        "command again to resume", lines
    assert batches_done(out) == 0


# ----------------------------------------------------------------------------- 2. no signal swallowed or misreported
class _SwallowedSignal:
    """Dropping it sends ``signum`` to this process inside ``__del__``: the handler's exception is swallowed there."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        time.sleep(0.01)  # the handler runs here, in __del__: Python cannot raise its exception


def _swallow(signum: int) -> None:
    _SwallowedSignal(signum)  # created and dropped at once


def _write_then_swallow(signum: int):
    real = nksim.io.write_netcdf

    def write_netcdf(ds, path, **kw):
        out = real(ds, path, **kw)
        _swallow(signum)  # as when h5py's weakref callbacks run while the file closes
        return out

    return write_netcdf


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_swallowed_while_the_netcdf_file_closes_is_reported(sig, tmp_path, small_model,
                                                                     run_reference, capsys, monkeypatch):  # noqa: F811
    """0.4.0 printed "Exception ignored ... Terminated" and exited 0: now exit 130 and the truth about the files."""
    monkeypatch.setattr("nksim.io.write_netcdf", _write_then_swallow(sig))
    before = _sigint_default()
    try:
        out = tmp_path / "o"
        assert main(run_argv(out, small_model)) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    err = _one_line(capsys.readouterr().err)
    by = " by SIGTERM" if sig == signal.SIGTERM else ""
    assert err.startswith(f"nksim run: interrupted{by}; the results are complete in {out / 'trial.nc'}, "
                          f"{out / 'trial.png'} was not written"), err
    xr.testing.assert_identical(numbers(out / "trial.nc"), run_reference)
    assert not (out / "trial.png").exists()


def test_sigterm_inside_the_real_netcdf_close_says_what_is_on_disk(tmp_path, small_model, run_reference,  # noqa: F811
                                                                   capsys, monkeypatch):
    """SIGTERM sent from h5netcdf's close: raised there or swallowed in a callback, the line matches the disk."""
    import h5netcdf

    real = h5netcdf.File.close
    sent: list[int] = []

    def close(self):
        if not sent:  # once: a file left open is closed again later, by its manager's __del__
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(h5netcdf.File, "close", close)
    out = tmp_path / "o"
    assert main(run_argv(out, small_model)) == 130
    monkeypatch.undo()
    err = _one_line(capsys.readouterr().err)
    partial = out / ".partial"
    kept = f"nksim run: interrupted by SIGTERM; 20 of 20 simulations are kept in {partial}: run the same command " \
           "again to continue"
    if err == kept:
        assert not (out / "trial.nc").exists() and len(kept_files(out)) == 20
        assert main(run_argv(out, small_model)) == 0
    else:
        assert err.startswith(f"nksim run: interrupted by SIGTERM; the results are complete in {out / 'trial.nc'}, "
                              f"{out / 'trial.png'} was not written"), err
    xr.testing.assert_identical(numbers(out / "trial.nc"), run_reference)


def test_sigterm_after_the_last_simulation_says_they_are_all_kept(tmp_path, small_model, run_reference,  # noqa: F811
                                                                  capsys, monkeypatch):
    """0.4.0 said "nothing written" with every simulation kept: now it says so, and the rerun only writes."""
    def write_netcdf(ds, path, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr("nksim.io.write_netcdf", write_netcdf)
    out = tmp_path / "o"
    assert main(run_argv(out, small_model)) == 130
    monkeypatch.undo()
    assert _one_line(capsys.readouterr().err) == (
        f"nksim run: interrupted by SIGTERM; 20 of 20 simulations are kept in {out / '.partial'}: run the same "
        "command again to continue")
    ran = []
    real = SIMULATE.run_one
    monkeypatch.setattr(SIMULATE, "run_one", lambda *a, **k: ran.append(1) or real(*a, **k))
    assert main(run_argv(out, small_model)) == 0
    assert ran == []
    xr.testing.assert_identical(numbers(out / "trial.nc"), run_reference)


def test_sigterm_after_the_files_are_written_says_they_are_complete(tmp_path, small_model, run_reference,  # noqa: F811
                                                                    capsys, monkeypatch):
    def summary_table(ds):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr("nksim.summary.summary_table", summary_table)
    out = tmp_path / "o"
    assert main(run_argv(out, small_model)) == 130
    assert _one_line(capsys.readouterr().err) == (
        f"nksim run: interrupted by SIGTERM; the results are complete in {out / 'trial.nc'} and {out / 'trial.png'}")
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]
    xr.testing.assert_identical(numbers(out / "trial.nc"), run_reference)


def test_a_signal_swallowed_after_the_command_finished_is_reported(tmp_path, small_model, capsys, monkeypatch):
    real = CLI._dispatch

    def dispatch(args):
        rc = real(args)
        _swallow(signal.SIGTERM)
        return rc

    monkeypatch.setattr(CLI, "_dispatch", dispatch)
    out = tmp_path / "o"
    assert main(run_argv(out, small_model)) == 130
    assert _one_line(capsys.readouterr().err) == ("nksim run: interrupted by SIGTERM; the command had already "
                                                  "finished (its outputs are complete)")
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]


def test_a_signal_swallowed_between_simulations_stops_the_run(tmp_path, small_model, capsys, monkeypatch):
    """Swallowed after the 3rd kept simulation: no further simulation starts; 3 are kept and said so."""
    real = RunCheckpoint.save
    saved: list[int] = []

    def save(self, run):
        real(self, run)
        saved.append(1)
        if len(saved) == 3:
            _swallow(signal.SIGTERM)

    monkeypatch.setattr(RunCheckpoint, "save", save)
    out = tmp_path / "o"
    assert main(run_argv(out, small_model)) == 130
    assert _one_line(capsys.readouterr().err) == (
        f"nksim run: interrupted by SIGTERM; 3 of 20 simulations are kept in {out / '.partial'}: run the same "
        "command again to continue")
    assert len(saved) == 3 and len(kept_files(out)) == 3


def test_a_signal_swallowed_between_sweep_batches_stops_the_sweep(tmp_path, capsys, monkeypatch):
    spec = write_toml(tmp_path / "s.toml", tiny())
    out = tmp_path / "s.zarr"
    real = SweepStore.write_batch

    def write_batch(self, result):
        real(self, result)
        _swallow(signal.SIGTERM)

    monkeypatch.setattr(SweepStore, "write_batch", write_batch)
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"nksim sweep: interrupted by SIGTERM; 1 of 8 batches are safely in {out}; run the same command " \
                  "again to resume"
    assert batches_done(out) == 1


def test_the_handlers_and_the_unraisable_hook_are_restored(tmp_path, small_model):
    hook = sys.unraisablehook
    before = _sigint_default()
    try:
        assert main(run_argv(tmp_path / "o", small_model)) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert sys.unraisablehook is hook and interrupts._ACTIVE == []
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_ignored_sigint_stays_ignored(tmp_path, small_model):
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


# ----------------------------------------------------------------------------- 3. giant work refused before it starts
@pytest.fixture
def no_simulation(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("simulated although the command should have failed before")

    monkeypatch.setattr(SIMULATE, "run_one", boom)
    monkeypatch.setattr("nksim.sweep.execute.run_one", boom)


def test_a_run_that_cannot_fit_in_memory_is_refused_before_any_file(tmp_path, capsys, no_simulation):
    """``nksim run --replicates 100000000`` (0.4.0: a MemoryError traceback)."""
    out = tmp_path / "o"
    assert main(["run", "--replicates", "100000000", "--out", str(out), "--no-progress"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("nksim: error: nksim run: does not fit in memory: it needs about ") and "TiB" in err, err
    assert "1000000000 simulations of 40 x 40 voxels" in err and "available" in err and "fewer replicates" in err
    assert not out.exists()
    assert main(["run", "--replicates", "100000000", "--out", str(out), "--yes"]) == 2  # --yes does not help
    assert "does not fit in memory" in capsys.readouterr().err and not out.exists()


def test_a_run_larger_than_the_memory_of_this_machine_is_refused(tmp_path, small_model, capsys, monkeypatch,
                                                                  no_simulation):
    monkeypatch.setattr(sizing, "available_memory", lambda: 1 << 20)  # 1 MiB
    out = tmp_path / "o"
    assert main(run_argv(out, small_model)) == 2
    err = _one_line(capsys.readouterr().err)
    assert "does not fit in memory" in err and "1 MiB is available" in err, err
    assert not out.exists()


def test_a_large_run_needs_yes(tmp_path, capsys, monkeypatch):
    """300 000 simulations of the default model: about 25 CPU-hours, above the 24 that need --yes (no prompt)."""
    monkeypatch.setattr(sizing, "available_memory", lambda: 1 << 40)
    started = []

    def simulate_cohort(*args, **kwargs):
        started.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(SIMULATE, "simulate_cohort", simulate_cohort)
    out = tmp_path / "o"
    argv = ["run", "--replicates", "30000", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("nksim: error: nksim run: a large job: about ") and "pass --yes to start it" in err, err
    assert "300000 simulations" in err and "24 CPU-hours" in err, err
    assert not out.exists() and started == []
    assert main([*argv, "--yes"]) == 130  # past the check: it starts
    assert len(started) == 1


def test_the_estimate_is_printed_for_a_long_run(tmp_path, small_model, capsys, monkeypatch):
    monkeypatch.setattr(sizing, "NOTICE_CPU_SECONDS", 0.0)
    assert main(run_argv(tmp_path / "o", small_model)) == 0
    err = capsys.readouterr().err
    assert "nksim run: about " in err and "(estimate for 20 simulations of 4 x 4 voxels over 374 days)" in err, err


def test_a_sweep_that_cannot_fit_in_memory_is_refused_before_its_store(tmp_path, capsys, no_simulation):
    """2 x 10^13 simulations (0.4.0: the store was created, then a MemoryError traceback)."""
    spec = write_toml(tmp_path / "s.toml", tiny(cohort={"patients": 100_000, "replicates": 10_000, "draws": 1000,
                                                        "draws_from": "prior"},
                                                factors={"interval": list(range(1, 21))}, sweep={"batch_size": 8}))
    out = tmp_path / "s.zarr"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]) == 2
    cap = capsys.readouterr()
    assert "20000000000000 simulations" in cap.out
    err = _one_line(cap.err)
    assert err.startswith("nksim: error: nksim sweep: does not fit in memory: it needs about ") and "TiB" in err, err
    assert "cohort.patients" in err, err
    assert not out.exists()
    with pytest.raises(sizing.TooLargeError) as info:  # the API too
        run_sweep(spec, out, workers=0)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, NksimInputError)
    assert not out.exists()


def test_a_large_sweep_needs_yes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sizing, "available_memory", lambda: 1 << 40)
    started = []

    def run_sweep(*args, **kwargs):
        started.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr("nksim.sweep.runner.run_sweep", run_sweep)
    spec = write_toml(tmp_path / "s.toml", tiny(cohort={"patients": 1000, "replicates": 1000},
                                                parameters={"lattice.side": 40}))
    out = tmp_path / "s.zarr"
    argv = ["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("nksim: error: nksim sweep: a large job: ") and "pass --yes to start it" in err, err
    assert not out.exists() and started == []
    assert main([*argv, "--yes"]) == 130
    assert len(started) == 1 and started[0]["check_memory"] is False


def test_the_api_refuses_a_cohort_that_cannot_fit_in_memory(no_simulation, monkeypatch):
    with pytest.raises(sizing.TooLargeError, match="does not fit in memory") as info:
        nksim.simulate_cohort(replicates=100_000_000)
    assert isinstance(info.value, MemoryError)
    monkeypatch.undo()
    monkeypatch.setattr(sizing, "available_memory", lambda: 1 << 10)  # 1 KiB
    with pytest.raises(MemoryError):
        nksim.simulate_cohort(nksim.load_parameters("default").with_values({"lattice.side": 4}), patients=["p01"])
    ds = nksim.simulate_cohort(nksim.load_parameters("default").with_values({"lattice.side": 4}), patients=["p01"],
                               check_memory=False)
    assert ds.sizes["patient"] == 1


def test_the_memory_estimate_covers_the_arrays_of_a_run(small_model):
    params, protocol = nksim.load_parameters(small_model), nksim.load_protocol("ahmadvand2023")
    ds = nksim.simulate_cohort(params, protocol, replicates=2)
    est = sizing.estimate_cohort(params, protocol, 20, 1)
    assert ds.nbytes <= est.memory_bytes <= 3 * ds.nbytes + (1 << 20)  # the output and more, the same order
    assert est.cpu_seconds == pytest.approx(20 * (16 * 374 * sizing.NS_PER_VOXEL_DAY * 1e-9
                                                  + sizing.SECONDS_PER_SIMULATION))


def test_available_memory_is_read_from_the_system():
    avail = sizing.available_memory()
    if sys.platform.startswith("linux"):
        assert isinstance(avail, int) and 0 < avail <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize(("files", "room"), [
    ({"memory.max": "max\n", "memory.current": "100\n"}, None),
    ({"memory.max": "1000\n", "memory.current": "600\n", "memory.stat": "anon 500\ninactive_file 50\n"}, 450),
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "10\n"}, None),
    ({"memory/memory.limit_in_bytes": "2000\n", "memory/memory.usage_in_bytes": "2500\n"}, 0),
    ({"memory/memory.limit_in_bytes": "2000\n", "memory/memory.usage_in_bytes": "500\n",
      "memory/memory.stat": "total_inactive_file 100\n"}, 1600),
    ({}, None),
], ids=["v2-unlimited", "v2-limit", "v1-unlimited", "v1-over", "v1-limit", "none"])
def test_a_cgroup_memory_limit_bounds_the_available_memory(files, room, tmp_path):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert sizing.cgroup_room(tmp_path) == room


def test_size_and_duration_are_readable():
    assert sizing.size(512) == "512 B" and sizing.size(3 << 30) == "3 GiB" and sizing.size(5 << 40) == "5 TiB"
    assert sizing.duration(40) == "40 s" and sizing.duration(720) == "12 min" and sizing.duration(3 * 3600) == "3 h"
    assert sizing.duration(4 * 86400) == "4 days" and np.isfinite(float(sizing.duration(1e12).split()[0]))
