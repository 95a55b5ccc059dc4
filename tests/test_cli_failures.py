"""Failures around the compute never throw away work or print a traceback (issue 12, items 2 and 3).

* everything checkable is checked before simulating: ``--out`` can be created and written
  (a probe file), the disk is not full, the seed fits the outputs (``[0, 2**64)``), the
  ``calibrate --apply-to`` target is a valid model file;
* a write failure after the compute (disk full, no permission) is one line naming the path,
  exit status 1, no half-written or destroyed file, and the results kept in a temporary
  folder when possible; no segmentation fault on a real full-file-size error;
* Ctrl-C and SIGTERM, in every command, are one line saying what was kept and exit status 130,
  with no output or temporary file written (``nksim run`` keeps its finished simulations in
  ``--out/.partial``, tests/test_checkpoint.py).
"""
from __future__ import annotations

import errno
import importlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _process_util import sigint_as_in_a_terminal

import nksim
from nksim.cli import main
from nksim.resources import data_path

SIMULATE = sys.modules["nksim.simulate"]  # the module (``nksim.simulate`` is also a function)

SMALL_MODEL = ('[meta]\nname = "small"\nstatus = "test, uncalibrated"\nextends = "default"\n\n'
               '[lattice.side]\nvalue = {side}\nunit = "1"\ndescription = "small test lattice"\nsource = "tests"\n')


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.toml"
    p.write_text(SMALL_MODEL.format(side=4))
    return p


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if a command starts simulating."""
    def boom(*args, **kwargs):
        raise AssertionError("simulated although the command should have failed before")

    monkeypatch.setattr(SIMULATE, "simulate_cohort", boom)


# ----------------------------------------------------------------------------- checked before the compute
@pytest.mark.parametrize("seed", [str(2**64), str(2**70), "-1", "1.5"])
def test_seed_outside_uint64_refused_by_the_parser(seed, tmp_path, small_model, capsys, no_simulation):
    rc = _exit_code(["run", "--out", str(tmp_path / "o"), "--no-progress", "--model", str(small_model), "--seed", seed])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "2**64" in err, err
    assert not (tmp_path / "o").exists()


def test_api_refuses_a_seed_too_large_before_simulating():
    with pytest.raises(ValueError, match=r"2\*\*64"):
        nksim.simulate_cohort(seed=2**64)


def test_largest_seed_runs_and_is_stored(tmp_path, small_model):
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model), "--seed", str(2**64 - 1)]) == 0
    assert int(nksim.open_output(out / "trial.nc").attrs["seed"]) == 2**64 - 1


def test_unwritable_out_refused_before_simulating(tmp_path, small_model, capsys, monkeypatch, no_simulation):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("nksim.fileio.tempfile.mkstemp", denied)
    out = tmp_path / "new" / "trial"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(out) in err and "Permission denied" in err and "--out" in err
    assert not (tmp_path / "new").exists()  # nothing created


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_read_only_out_refused_before_simulating(tmp_path, small_model, capsys, no_simulation):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 2
    finally:
        out.chmod(0o700)
    assert str(out) in _one_line(capsys.readouterr().err)
    assert list(out.iterdir()) == []


def test_full_disk_refused_before_simulating(tmp_path, small_model, capsys, monkeypatch, no_simulation):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage._replace(free=4096))
    assert main(["run", "--out", str(tmp_path / "o"), "--no-progress", "--model", str(small_model)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "full" in err and str(tmp_path / "o") in err


def test_out_below_a_file_refused(tmp_path, small_model, capsys, no_simulation):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "trial"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "afile is a file" in err


def test_probe_leaves_nothing_behind(tmp_path):
    from nksim.fileio import check_writable

    check_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- failures while writing
def _fail_writes_into(folder: Path, monkeypatch, err=errno.ENOSPC):
    """Make the final rename of any netCDF written into ``folder`` fail like a full disk."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).parent == folder:
            raise OSError(err, os.strerror(err), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr("nksim.io.netcdf.os.replace", replace)


def test_disk_full_at_write_keeps_results_and_old_files(tmp_path, small_model, capsys, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    (out / "trial.nc").write_bytes(b"previous results")
    rescue_root = tmp_path / "tmp"
    rescue_root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(rescue_root))
    _fail_writes_into(out, monkeypatch)
    rc = main(["run", "--out", str(out), "--no-progress", "--model", str(small_model), "--seed", "3", "--overwrite"])
    assert rc == 1
    err = _one_line(capsys.readouterr().err)
    assert f"cannot write {out / 'trial.nc'}" in err and "No space left on device" in err, err
    kept = Path(re.search(r"kept in (\S+trial\.nc)", err).group(1))
    assert kept.parent.parent == rescue_root
    ds = nksim.open_output(kept)
    assert ds.attrs["seed"] == 3 and ds.sizes["patient"] == 10
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc"]  # no temporary file, no figure
    assert (out / "trial.nc").read_bytes() == b"previous results"


def test_nowhere_to_keep_the_results_is_said(tmp_path, small_model, capsys, monkeypatch):
    out = tmp_path / "o"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no_such_dir"))
    _fail_writes_into(out, monkeypatch, errno.EACCES)
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "Permission denied" in err and "could not be kept" in err and "TMPDIR" in err


def test_figure_write_failure_keeps_the_netcdf(tmp_path, small_model, capsys, monkeypatch):
    def fail(fig, path, dpi=120):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("nksim.fileio.save_figure", fail)
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert str(out / "trial.png") in err and str(out / "trial.nc") in err
    assert nksim.open_output(out / "trial.nc").sizes["patient"] == 10


def test_interrupt_while_drawing_the_figure_says_the_results_are_complete(tmp_path, small_model, capsys, monkeypatch):
    def interrupted(fig, path, dpi=120):
        raise KeyboardInterrupt

    monkeypatch.setattr("nksim.fileio.save_figure", interrupted)
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 130
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"nksim run: interrupted; the results are complete in {out / 'trial.nc'}, "
                          f"{out / 'trial.png'} was not written"), err
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc"]  # the checkpoint is gone, no temporary file
    assert nksim.open_output(out / "trial.nc").sizes["patient"] == 10


def test_write_netcdf_failure_leaves_no_partial_file_and_keeps_the_old(tmp_path, monkeypatch):
    path = tmp_path / "x.nc"
    path.write_bytes(b"old")
    ds = xr.Dataset({"a": ("t", np.arange(3.0))})
    _fail_writes_into(tmp_path, monkeypatch)
    with pytest.raises(OSError) as info:
        nksim.write_netcdf(ds, path, overwrite=True)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.nc"] and path.read_bytes() == b"old"


def _limit_file_size():  # in the child: files may not grow beyond 100 kB; EFBIG instead of SIGXFSZ
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_real_file_size_limit_is_an_error_not_a_crash(tmp_path, small_model):
    """A real I/O error during the write (EFBIG, like ENOSPC): HDF5 used to crash (exit 139) on it."""
    SIMULATE.warm_up()  # compile here if needed: the child must not write numba's cache under the limit
    out = tmp_path / "o"
    out.mkdir()
    (out / "trial.nc").write_bytes(b"previous results")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = "import sys; from nksim.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "run", "--out", str(out), "--no-progress", "--model",
                           str(small_model), "--overwrite"], capture_output=True, text=True, env=env, timeout=600,
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    err = _one_line(proc.stderr)
    assert str(out / "trial.nc") in err and "too large" in err.lower(), err
    # nowhere to rescue them (the limit holds everywhere): the finished simulations stay in the checkpoint
    assert f"they also stay in {out / '.partial'}: run the same command again" in err, err
    assert sorted(p.name for p in out.iterdir()) == [".partial", "trial.nc"]
    assert len(list((out / ".partial").glob("*.npz"))) == 10 and not list((out / ".partial").glob("*.tmp"))
    assert (out / "trial.nc").read_bytes() == b"previous results"
    assert not list(tmp_path.glob("nksim-unsaved-*/*.tmp"))
    rerun = subprocess.run([sys.executable, "-c", code, "run", "--out", str(out), "--no-progress", "--model",
                            str(small_model), "--overwrite"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "10 of 10 simulations already done" in rerun.stderr, rerun.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]  # checkpoint deleted


# ----------------------------------------------------------------------------- Ctrl-C
def test_interrupt_inside_the_kernel_is_one_line(tmp_path, small_model, capsys, monkeypatch):
    def interrupted(*args, **kwargs):  # what numba reports when Ctrl-C arrives during run_patient
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(<function run_patient>) returned a result with an exception set") from exc

    monkeypatch.setattr(SIMULATE, "simulate_cohort", interrupted)
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 130
    assert "interrupted; nothing written" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_other_system_errors_are_not_hidden(tmp_path, small_model, monkeypatch):
    def broken(*args, **kwargs):
        raise SystemError("a real bug")

    monkeypatch.setattr(SIMULATE, "simulate_cohort", broken)
    with pytest.raises(SystemError, match="a real bug"):
        main(["run", "--out", str(tmp_path / "o"), "--no-progress", "--model", str(small_model)])


def test_screen_interrupt_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("SALib")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("nksim.calibration.screen.run_screen", interrupted)
    out = tmp_path / "screen"
    assert main(["screen", "ahmadvand2023", "--smoke", "--out", str(out), "--no-progress"]) == 130
    assert "screen: interrupted" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_calibrate_interrupt_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pyabc")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("nksim.calibration.run.run_calibration", interrupted)
    assert main(["calibrate", "ahmadvand2023", "--smoke", "--out", str(tmp_path / "c"), "--no-progress"]) == 130
    assert "calibrate: interrupted" in _one_line(capsys.readouterr().err)



@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_during_nksim_run(tmp_path, sig):
    """SIGINT or SIGTERM to a real ``nksim run`` after its first finished simulation.

    One line naming what was kept, exit 130, no output or temporary file: only the checkpoint.
    """
    SIMULATE.warm_up()  # compile here if needed, so that the child only loads the kernel
    model = tmp_path / "m.toml"
    model.write_text(SMALL_MODEL.format(side=12))
    out = tmp_path / "o"
    code = "import sys; from nksim.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--out", str(out), "--model", str(model),
                             "--replicates", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_as_in_a_terminal)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()  # joined below: every byte of stderr is read before the assertions
    deadline = time.monotonic() + 300  # generous: the first run of a fresh checkout compiles the kernel
    try:
        while not re.search(rb"\| *[1-9]\d*/300 ", b"".join(chunks)):
            assert proc.poll() is None, b"".join(chunks).decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "no progress line"
            time.sleep(0.05)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    err = b"".join(chunks).decode(errors="replace")
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err and "SystemError" not in err, err[-3000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines()
             if ln.strip() and "simulating" not in ln and not ln.startswith("nksim: compiling")]
    by = " by SIGTERM" if sig == signal.SIGTERM else ""
    ckpt = out / ".partial"
    assert len(lines) == 1, err[-3000:]
    kept = re.fullmatch(rf"nksim run: interrupted{by}; (\d+) of 300 simulations are kept in {re.escape(str(ckpt))}: "
                        r"run the same command again to continue", lines[0])
    assert kept, lines
    # no output file, no temporary file: only the finished simulations, each one whole
    assert [p.name for p in out.iterdir()] == [".partial"]
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == sorted(["run.json"] + [p.name for p in ckpt.glob("*.npz")]), files
    assert len(files) - 1 == int(kept.group(1)) >= 1


def _terminate_self(*args, **kwargs):
    """What a command's compute sees when ``kill PID`` arrives: SIGTERM to this process."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # interrupted by the handler at once
    raise AssertionError("SIGTERM did not interrupt")


@pytest.fixture
def tiny_sweep_store(tmp_path_factory):
    """A finished tiny sweep store and its spec file (for summarize and sweep)."""
    from _sweep_util import tiny, write_toml

    from nksim.sweep import run_sweep

    d = tmp_path_factory.mktemp("sweep")
    spec = write_toml(d / "tiny.toml", tiny(cohort={"patients": 1, "replicates": 1}, factors={"interval": [7]}))
    run_sweep(spec, d / "s.zarr", workers=0)
    return spec, d / "s.zarr"


SIGTERM_TARGETS = {  # command -> (function SIGTERM interrupts, its extra)
    "run": ("nksim.simulate.simulate_cohort", None),
    "sweep": ("nksim.sweep.runner.run_sweep", None),
    "summarize": ("nksim.sweep.summaries.summarize", None),
    "calibrate": ("nksim.calibration.run.run_calibration", "pyabc"),
    "screen": ("nksim.calibration.screen.run_screen", "SALib"),
    "score": ("nksim.calibration.scoring.score_registry", None),
}


@pytest.mark.parametrize("command", list(SIGTERM_TARGETS))
def test_sigterm_in_every_command_is_one_line_and_130(command, tmp_path, small_model, tiny_sweep_store, capsys,
                                                      monkeypatch):
    target, extra = SIGTERM_TARGETS[command]
    if extra:
        pytest.importorskip(extra)
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, _terminate_self)
    spec, store = tiny_sweep_store
    out = tmp_path / "o"
    argv = {"run": ["run", "--out", str(out), "--no-progress", "--model", str(small_model)],
            "sweep": ["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"],
            "summarize": ["summarize", str(store), "--netcdf", str(out / "summary.nc")],
            "calibrate": ["calibrate", "ahmadvand2023", "--smoke", "--out", str(out), "--no-progress"],
            "screen": ["screen", "ahmadvand2023", "--smoke", "--out", str(out), "--no-progress"],
            "score": ["score", "--out", str(out), "--no-progress", "--replicates", "1"]}[command]
    def unhandled(signum, frame):  # what the test sees if the command does not handle SIGTERM
        raise AssertionError("SIGTERM reached the previous handler")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main(argv) == 130
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the previous handler is back
    finally:
        signal.signal(signal.SIGTERM, before)
    err = _one_line(capsys.readouterr().err)
    kept = "nothing written; run the same command again to resume" if command == "sweep" else "nothing written"
    assert err.startswith(f"nksim {command}: interrupted by SIGTERM; {kept}"), err
    assert not out.exists() or list(out.iterdir()) == []


# ----------------------------------------------------------------------------- calibrate --apply-to
@pytest.mark.parametrize("case", ["missing", "invalid", "no_table", "below_a_file"])
def test_calibrate_apply_to_checked_before_calibrating(case, tmp_path, capsys, monkeypatch):
    pytest.importorskip("pyabc")

    def boom(*args, **kwargs):
        raise AssertionError("calibrated although --apply-to is bad")

    monkeypatch.setattr("nksim.calibration.run.run_calibration", boom)
    target = tmp_path / "model.toml"
    if case == "invalid":
        target.write_text("[meta\n")
    elif case == "no_table":
        target.write_text('[meta]\nname = "m"\nstatus = "test"\nextends = "default"\n')
    elif case == "below_a_file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "model.toml"
    rc = main(["calibrate", "ahmadvand2023", "--smoke", "--out", str(tmp_path / "c"), "--no-progress",
               "--apply-to", str(target)])
    assert rc == 2
    err = _one_line(capsys.readouterr().err)
    assert str(target) in err, err
    if case == "no_table":
        assert "blasts.net_growth_rate" in err and "--apply-to" in err
    assert not (tmp_path / "c").exists()


def test_calibrate_apply_to_valid_model_passes_the_check(tmp_path, monkeypatch):
    pytest.importorskip("pyabc")
    called = []
    monkeypatch.setattr("nksim.calibration.run.run_calibration", lambda *a, **k: called.append(1) or 1 / 0)
    target = tmp_path / "model.toml"
    target.write_bytes((data_path("models") / "default.toml").read_bytes())
    with pytest.raises(ZeroDivisionError):
        main(["calibrate", "ahmadvand2023", "--smoke", "--out", str(tmp_path / "c"), "--no-progress",
              "--apply-to", str(target)])
    assert called == [1]
