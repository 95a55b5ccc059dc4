"""Files that cannot lie (issue 23): one writer per output, verified checkpoints, an honest warm-up, calibration files.

* one writer per ``--out``: a second ``nksim run`` (or ``calibrate``, ``screen``) into a folder
  another command is writing is refused before any work, in one line naming the holder's
  command, pid and host; readers are not blocked; a killed holder leaves no stale lock; the lock
  file is gone when the command ends, however it ends;
* every kept simulation of ``nksim run`` (``--out/.partial/*.npz``) carries a content SHA-256
  and its arrays' types and shapes are checked: a damaged, truncated, altered or wrong-shape
  file is deleted, named in one line and recomputed, never used, and the result is bitwise that
  of an uninterrupted run; a damaged or missing ``run.json`` is repaired or named, never read as
  "another run ... seed None";
* ``nksim warmup`` names the cache folder numba really uses and refuses an unusable
  ``NUMBA_CACHE_DIR`` (a file, a path below a file, read-only, impossible) in one line;
* calibration: ``--overwrite`` discards a damaged kept ``abc.db``; a damaged ``calibration.json``
  is named; NumPy state files carry a SHA-256; a full disk after the last ABC generation says
  what is kept and that ``--resume`` writes the results.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_checkpoint import interrupt_after, kept_files, numbers, reference, run_argv, small_model  # noqa: F401

import nksim
from nksim.checkpoint import RunCheckpoint, _content_digest
from nksim.cli import main
from nksim.errors import NksimInputError, NksimWarning, NksimWriteError
from nksim.io.lock import OUTPUT_LOCK_NAME, StoreLockedError, WriterLock, output_lock
from nksim.resources import data_path

SIMULATE = sys.modules["nksim.simulate"]
ROOT = Path(__file__).resolve().parents[1]
CONFIG = data_path("calibration") / "ahmadvand2023.toml"
CHILD = "import sys; from nksim.cli import main; sys.exit(main())"


def _one_line(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


def _wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    """Poll ``condition()`` (an observable event, not a delay); fail if ``proc`` ends first or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.02)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.fixture
def count_simulations(monkeypatch) -> list[int]:
    """Count the simulations run in this process."""
    ran: list[int] = []
    real = SIMULATE.run_one
    monkeypatch.setattr(SIMULATE, "run_one", lambda *a, **k: ran.append(1) or real(*a, **k))
    return ran


def _holder(folder: Path, command: str = "nksim run") -> subprocess.Popen:
    """Another process holding ``folder``'s writer lock (it prints "locked", then sleeps)."""
    code = textwrap.dedent(f"""
        import time
        from nksim.io.lock import output_lock
        with output_lock({str(folder)!r}, {command!r}):
            print("locked", flush=True)
            time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# ================================================================================ one writer per --out
def test_second_run_into_one_out_is_refused_naming_the_first(tmp_path, small_model, reference,  # noqa: F811
                                                             capsys, count_simulations):
    """The issue's reproduction: ``nksim run --seed 5 --out d & nksim run --seed 6 --out d``."""
    out = tmp_path / "d"
    first = subprocess.Popen([sys.executable, "-c", CHILD, *run_argv(out, small_model, 5)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: f"pid {first.pid} " in _text(out / OUTPUT_LOCK_NAME), first, "the first run's lock")
        os.kill(first.pid, signal.SIGSTOP)  # keep it inside its run while the second one starts: no race with its end
        try:
            assert main(run_argv(out, small_model, 6)) == 2
        finally:
            os.kill(first.pid, signal.SIGCONT)
        err = _one_line(capsys.readouterr().err)
        assert err.startswith(f"nksim: error: {out}: is locked by another writer (nksim run, pid {first.pid} on host "
                              ), err
        assert "only one nksim command may write into" in err
        assert count_simulations == []  # refused before any work
        stdout, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, stderr
    assert f"wrote {out / 'trial.nc'}" in stdout
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)  # the first run's numbers alone
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]  # no lock file, no .partial left


def test_killed_holder_leaves_no_stale_lock_and_readers_are_not_blocked(tmp_path, small_model,  # noqa: F811
                                                                         reference, capsys):  # noqa: F811
    out = tmp_path / "d"
    out.mkdir()
    nksim.io.write_netcdf(reference, out / "trial.nc")
    holder = _holder(out)
    try:
        assert xr.load_dataset(out / "trial.nc", engine="h5netcdf").identical(reference)  # a reader takes no lock
        assert main(run_argv(out, small_model, 5, "--overwrite")) == 2
        err = _one_line(capsys.readouterr().err)
        assert f"(nksim run, pid {holder.pid} on host" in err and str(out) in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / OUTPUT_LOCK_NAME).exists()  # the killed holder's file stays, holding no lock
    assert main(run_argv(out, small_model, 5, "--overwrite")) == 0
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]


def test_lock_file_and_created_folder_go_on_every_exit(tmp_path, small_model, reference, monkeypatch,  # noqa: F811
                                                       capsys):
    out = tmp_path / "new" / "d"
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(tmp_path / "nope.toml")]) == 2  # bad input
    assert not (tmp_path / "new").exists()  # the folders the lock created are removed again
    interrupt_after(monkeypatch, 3)
    assert main(run_argv(out, small_model)) == 130
    assert sorted(p.name for p in out.iterdir()) == [".partial"]  # the kept simulations, no lock file
    monkeypatch.undo()
    assert main(run_argv(out, small_model)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["trial.nc", "trial.png"]
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)
    capsys.readouterr()


def test_out_that_is_a_file_or_below_a_file_is_one_line(tmp_path, small_model, capsys):  # noqa: F811
    (tmp_path / "f").write_text("x")
    assert main(run_argv(tmp_path / "f", small_model)) == 2
    assert "--out must be a folder" in _one_line(capsys.readouterr().err)
    assert main(run_argv(tmp_path / "f" / "d", small_model)) == 2
    assert "f is a file" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "f").read_text() == "x"


def test_a_writer_never_holds_the_lock_of_a_removed_file(tmp_path):
    """A holder removes its lock file on release: a writer that opened the old file retries on the new one."""
    path = tmp_path / OUTPUT_LOCK_NAME
    first = WriterLock(path, what=tmp_path, owner="nksim run", remove=True).acquire()
    second = WriterLock(path, what=tmp_path, remove=True)
    real_open = second._open

    def open_then_the_holder_leaves() -> int:
        fd = real_open()
        first.release()  # unlinks the file that ``fd`` is open on
        return fd

    second._open = open_then_the_holder_leaves
    second.acquire()
    assert second.held and path.exists()
    with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()} on host"):
        WriterLock(path, what=tmp_path).acquire()  # a third writer meets the second's lock: one holder only
    second.release()
    assert not path.exists()


def test_calibrate_and_screen_into_a_locked_out_are_refused(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyabc")
    pytest.importorskip("SALib")

    def boom(*args, **kwargs):
        raise AssertionError("started working although --out is locked")

    monkeypatch.setattr("nksim.calibration.screen.run_screen", boom)
    monkeypatch.setattr("nksim.calibration.abc.run_abc", boom)
    monkeypatch.setattr("nksim.calibration.recovery.run_recovery", boom)
    out = tmp_path / "d"
    with output_lock(out, "nksim run"):
        for argv in (["screen", str(CONFIG), "--smoke"], ["calibrate", str(CONFIG), "--smoke"],
                     ["calibrate", str(CONFIG), "--smoke", "--recovery"]):
            assert main([*argv, "--out", str(out), "--no-progress"]) == 2, argv
            err = _one_line(capsys.readouterr().err)
            assert f"{out}: is locked by another writer (nksim run, pid {os.getpid()} on host" in err, err
        assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOCK_NAME]  # nothing else written
    assert not out.exists()


# ================================================================================ checkpoint content digests
@pytest.fixture(scope="module")
def three_runs(small_model):  # noqa: F811
    """Parameters, protocol and three finished simulations (seed 5) of the small model."""
    params, protocol = nksim.load_parameters(small_model), nksim.load_protocol("ahmadvand2023")
    runs = [SIMULATE.run_one(params, protocol, protocol.patients[i], 5, 0) for i in range(3)]
    return params, protocol, runs


def _resave(path: Path, **changes) -> None:
    """Rewrite a kept ``.npz`` with some entries changed (the others as they are)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _damage(path: Path, how: str, other: Path) -> None:
    """Damage a kept simulation file ``path`` in one of the ways a probe (or a disk) does."""
    z = _entries(path)
    if how == "altered value":  # a valid archive, the right identity, one number changed: the old digest
        rec = z["rec"].copy()
        rec[3, 0] = rec[3, 0] * 1.5 + 1.0
        _resave(path, rec=rec)
    elif how == "wrong shape":
        _resave(path, rec=z["rec"][:-1])
    elif how == "wrong shape, digest recomputed":  # as if written with a valid digest by a broken writer
        arrays = {"effects": z["effects"], "rec": z["rec"][:-1], "cnt": z["cnt"][:-1], "snaps": z["snaps"]}
        content = _content_digest(str(z["identity"]), str(z["patient"]), int(z["replicate"]), arrays)
        _resave(path, rec=arrays["rec"], cnt=arrays["cnt"], content=np.array(content))
    elif how == "wrong type, digest recomputed":
        arrays = {"effects": z["effects"], "rec": z["rec"].astype(np.float32), "cnt": z["cnt"], "snaps": z["snaps"]}
        content = _content_digest(str(z["identity"]), str(z["patient"]), int(z["replicate"]), arrays)
        _resave(path, rec=arrays["rec"], content=np.array(content))
    elif how == "no digest":  # written by an nksim without content digests
        _resave(path, content=None)
    elif how == "another run":
        _resave(path, identity=np.array("0" * 64))
    elif how == "another simulation":
        path.write_bytes(other.read_bytes())
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbled":
        data = path.read_bytes()
        path.write_bytes(data[:200] + bytes(b ^ 0x5A for b in data[200:]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not an npz":
        path.write_text("hello")
    else:  # pragma: no cover
        raise ValueError(how)


DAMAGES = {"altered value": "does not match its SHA-256", "wrong shape": "does not match its SHA-256",
           "wrong shape, digest recomputed": "array rec is float64[", "wrong type, digest recomputed":
           "array rec is float32[", "no digest": "no content digest", "another run": "of another run",
           "another simulation": "another simulation than its name says", "truncated": "unreadable",
           "garbled": "unreadable", "empty": "unreadable", "not an npz": "unreadable"}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_damaged_kept_simulation_is_named_deleted_and_never_used(tmp_path, three_runs, how):
    params, protocol, runs = three_runs
    ckpt = RunCheckpoint(tmp_path / "ck", params, protocol, 5, 1)
    for r in runs:
        ckpt.save(r)
    bad = ckpt._file(runs[0].patient, 0)
    _damage(bad, how, ckpt._file(runs[1].patient, 0))
    lines = ckpt.verify()
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"1 kept simulation file in {ckpt.folder} cannot be used and is recomputed ({bad.name}: " in lines[0]
    assert DAMAGES[how] in lines[0], lines[0]
    assert not bad.exists() and ckpt.count() == 2
    got = ckpt.load([(r.patient, 0) for r in runs])
    assert sorted(got) == sorted((r.patient, 0) for r in runs[1:])  # never the damaged one
    for r in runs[1:]:
        k = got[(r.patient, 0)]
        assert np.array_equal(k.rec, r.rec, equal_nan=True) and np.array_equal(k.cnt, r.cnt)
        assert np.array_equal(k.snaps, r.snaps) and k.effects == r.effects


def test_whole_kept_simulations_are_used_as_they_are(tmp_path, three_runs):
    params, protocol, runs = three_runs
    ckpt = RunCheckpoint(tmp_path / "ck", params, protocol, 5, 1)
    for r in runs:
        ckpt.save(r)
    assert ckpt.verify() == []
    got = ckpt.load([(r.patient, 0) for r in runs])
    for r in runs:
        k = got[(r.patient, 0)]
        assert np.array_equal(k.rec, r.rec, equal_nan=True) and k.rec.dtype == r.rec.dtype
        assert k.rec.shape == r.rec.shape and k.snaps.shape == r.snaps.shape and k.cnt.dtype == r.cnt.dtype


def test_cli_recomputes_altered_and_wrong_shape_files_to_the_uninterrupted_dataset(
        tmp_path, small_model, reference, monkeypatch, capsys):  # noqa: F811
    """The issue's checkpoints: right identity with a wrong shape (every rerun failed), or altered values (used)."""
    out = tmp_path / "o"
    interrupt_after(monkeypatch, 5)
    assert main(run_argv(out, small_model)) == 130
    monkeypatch.undo()
    names = kept_files(out)
    partial = out / ".partial"
    _damage(partial / names[0], "wrong shape, digest recomputed", partial / names[1])
    _damage(partial / names[1], "altered value", partial / names[2])
    capsys.readouterr()
    ran: list[int] = []
    real = SIMULATE.run_one
    monkeypatch.setattr(SIMULATE, "run_one", lambda *a, **k: ran.append(1) or real(*a, **k))
    assert main(run_argv(out, small_model)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"nksim run: 2 kept simulation files in {partial} cannot be used and are recomputed ("
                             ), err
    assert names[0] in err[0] and names[1] in err[0] and "SHA-256" in err[0] and "array rec" in err[0]
    assert "3 of 20 simulations already done" in err[1]
    assert len(ran) == 20 - 3
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)  # bitwise the uninterrupted run


def test_api_checkpoint_with_a_damaged_file_warns_and_recomputes(tmp_path, three_runs):
    params, protocol, runs = three_runs
    ckpt = RunCheckpoint(tmp_path / "ck", params, protocol, 5, 1, [r.patient for r in runs])
    for r in runs:
        ckpt.save(r)
    _damage(ckpt._file(runs[2].patient, 0), "altered value", ckpt._file(runs[0].patient, 0))
    with pytest.warns(NksimWarning, match=r"1 kept simulation file in .* cannot be used and is recomputed"):
        ds = nksim.simulate_cohort(params, protocol, seed=5, patients=[r.patient for r in runs], checkpoint=ckpt)
    ref = nksim.simulate_cohort(params, protocol, seed=5, patients=[r.patient for r in runs])
    ds.attrs, ref.attrs = {}, {}
    xr.testing.assert_identical(ds, ref)


# ================================================================================ a damaged or missing run.json
def _spoil(meta: Path, how: str) -> None:
    if how == "missing":
        meta.unlink()
    elif how == "garbage":
        meta.write_bytes(b"\x00\xff not json")
    elif how == "truncated":
        meta.write_text(meta.read_text()[:40])
    elif how == "a list":
        meta.write_text("[1, 2]")
    elif how == "no digest":
        meta.write_text(json.dumps({"identity": {}}))


RECORD_DAMAGES = ["missing", "garbage", "truncated", "a list", "no digest"]


@pytest.mark.parametrize("how", RECORD_DAMAGES)
def test_damaged_run_json_with_this_runs_files_is_rewritten_and_continued(tmp_path, small_model,  # noqa: F811
                                                                          reference, monkeypatch, capsys,  # noqa: F811
                                                                          how):
    out = tmp_path / "o"
    interrupt_after(monkeypatch, 4)
    assert main(run_argv(out, small_model)) == 130
    monkeypatch.undo()
    _spoil(out / ".partial" / "run.json", how)
    capsys.readouterr()
    assert main(run_argv(out, small_model)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"nksim run: {out / '.partial' / 'run.json'} was not usable (it is "), err
    assert "rewritten for this run" in err[0] and "seed None" not in err[0]
    assert "4 of 20 simulations already done" in err[1]
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)


@pytest.mark.parametrize("how", ["garbage", "missing"])
def test_damaged_run_json_with_another_runs_files_is_named_not_seed_none(tmp_path, small_model, reference,  # noqa: F811
                                                                         monkeypatch, capsys, how):
    out = tmp_path / "o"
    interrupt_after(monkeypatch, 4)
    assert main(run_argv(out, small_model, seed=9)) == 130
    monkeypatch.undo()
    meta = out / ".partial" / "run.json"
    _spoil(meta, how)
    before = {p.name: p.read_bytes() for p in (out / ".partial").iterdir()}
    capsys.readouterr()
    assert main(run_argv(out, small_model)) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"its record {meta} cannot be used (it is {'missing' if how == 'missing' else 'damaged or unreadable'}" \
        in err, err
    assert "4 of its 4 kept simulations belong to another run" in err and "--overwrite" in err
    assert "seed None" not in err
    assert {p.name: p.read_bytes() for p in (out / ".partial").iterdir()} == before  # untouched
    assert main(run_argv(out, small_model, 5, "--overwrite")) == 0
    xr.testing.assert_identical(numbers(out / "trial.nc"), reference)


# ================================================================================ nksim warmup: where the cache is
def _warmup(cache_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "nksim.cli", "warmup"], env=env, capture_output=True, text=True,
                          timeout=600)


def _unusable(tmp_path: Path, case: str) -> Path:
    if case == "a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file"
    if case == "below a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "cache"
    if case == "impossible":
        return tmp_path / ("x" * 300)  # longer than any file system allows a name to be
    if case == "read-only":
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            (ro / "probe").mkdir()
        except PermissionError:
            return ro
        pytest.skip("this user ignores folder permissions (root): the path-below-a-file case covers it")
    raise ValueError(case)  # pragma: no cover


@pytest.mark.parametrize("case", ["a file", "below a file", "impossible", "read-only"])
def test_warmup_refuses_an_unusable_numba_cache_dir(tmp_path, case):
    cache_dir = _unusable(tmp_path, case)
    proc = _warmup(str(cache_dir))
    assert proc.returncode == 2, proc.stderr
    err = _one_line(proc.stderr)
    assert err.startswith(f"nksim: error: NUMBA_CACHE_DIR={cache_dir}: cannot hold numba's cache ("), err
    assert "so numba falls back to " in err and "nothing was compiled" in err
    assert proc.stdout == ""  # no "compiled into <that dir>"


def test_warmup_names_a_new_numba_cache_dir_it_creates(tmp_path):
    """A NUMBA_CACHE_DIR that does not exist yet is created and named (with numba's subfolder), not __pycache__.

    The kernel's cache files of this process are copied there first, so that the child loads
    instead of compiling (the compile itself: tests/test_cold_start.py, slow).
    """
    from nksim.engine import run_patient
    from nksim.engine.cache_guard import STAMP, cache_location, kernel_in_cache_files

    SIMULATE.warm_up()
    here, problem = cache_location(run_patient)
    if problem is not None or here is None or not kernel_in_cache_files(run_patient):
        pytest.skip("this process has no usable kernel cache to copy")
    from numba.core.caching import UserProvidedCacheLocator

    cache_dir = tmp_path / "new" / "numba"
    sub = cache_dir / UserProvidedCacheLocator.get_suitable_cache_subpath(run_patient.py_func.__code__.co_filename)
    sub.mkdir(parents=True)
    for f in Path(here).glob("kernel.*"):
        (sub / f.name).write_bytes(f.read_bytes())
    (sub / STAMP).write_bytes((Path(here) / STAMP).read_bytes())
    proc = _warmup(str(cache_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"kernel loaded from {sub} in "), proc.stdout
    fresh = tmp_path / "fresh"  # does not exist: numba creates it; only its folder is checked here (no compile)
    code = ("from nksim.engine import run_patient; from nksim.engine.cache_guard import cache_location; "
            "print(cache_location(run_patient))")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(fresh))
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert got.stdout.strip() == repr((str(fresh / sub.name), None)), got.stderr


def test_warmup_reports_the_folder_numba_uses(capsys):
    from nksim.engine import run_patient

    SIMULATE.warm_up()
    assert main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kernel loaded from {run_patient._cache._cache_path} in "), out


def test_warmup_says_when_the_kernel_is_not_saved(monkeypatch, capsys):
    monkeypatch.setattr("nksim.engine.cache_guard.kernel_in_cache_files", lambda d: False)
    assert main(["warmup"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "is not in numba's cache (numba could not save it in " in err and "compile it again" in err


# ================================================================================ calibration files
@pytest.fixture
def smoke():
    pytest.importorskip("pyabc")
    from nksim.calibration.config import load_config

    return load_config(CONFIG).smoke_version()


def _history(db: Path, generations: int) -> None:
    """A stand-in pyabc history: a ``populations`` table with ``generations`` finished generations."""
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE populations (t INTEGER)")
    con.executemany("INSERT INTO populations VALUES (?)", [(t,) for t in range(-1, generations)])
    con.commit()
    con.close()


def test_overwrite_discards_a_damaged_kept_history(tmp_path, smoke):
    from nksim.calibration.resume import AbcCheckpoint

    out = tmp_path / "cal"
    kept = AbcCheckpoint(out, smoke)
    kept.folder.mkdir(parents=True)
    kept.db.write_bytes(b"this is not an SQLite database" * 10)
    for resume in (False, True):
        with pytest.raises(NksimInputError, match=r"abc\.db: cannot read the kept ABC history \(file is not a "
                           r"database\); delete the folder or pass --overwrite"):
            kept.prepare(resume=resume, overwrite=False)
    assert kept.db.exists()  # refused, untouched
    assert kept.prepare(resume=False, overwrite=True) == 0
    assert not kept.folder.exists()
    assert kept.discarded == (f"discarded the damaged ABC history kept in {kept.folder} (--overwrite): abc.db: file "
                              "is not a database")


def test_cli_overwrite_clears_a_damaged_kept_history(tmp_path, smoke, monkeypatch, capsys):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # stop right after the checks: the ABC itself is not what is tested

    monkeypatch.setattr("nksim.calibration.abc.run_abc", stop)
    out = tmp_path / "cal"
    (out / ".partial").mkdir(parents=True)
    (out / ".partial" / "abc.db").write_bytes(b"garbage" * 100)
    argv = ["calibrate", str(CONFIG), "--smoke", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    assert "cannot read the kept ABC history" in _one_line(capsys.readouterr().err)
    assert main(argv + ["--overwrite"]) == 130
    cap = capsys.readouterr()
    assert f"discarded the damaged ABC history kept in {out / '.partial'} (--overwrite)" in cap.out
    assert _one_line(cap.err) == "nksim calibrate: interrupted; nothing written"
    assert list(out.iterdir()) == []  # the damaged history is gone, no lock file is left


@pytest.mark.parametrize("how", RECORD_DAMAGES)
def test_damaged_calibration_record_is_named(tmp_path, smoke, how):
    from nksim.calibration.resume import AbcCheckpoint

    kept = AbcCheckpoint(tmp_path / "cal", smoke)
    kept.start()
    _history(kept.db, 2)
    meta = kept.folder / "calibration.json"
    _spoil(meta, how)
    why = "missing" if how == "missing" else "damaged"
    for resume in (True, False):
        with pytest.raises(NksimInputError) as exc:
            kept.prepare(resume=resume, overwrite=False)
        msg = str(exc.value)
        assert f"(2 finished generations), but its record calibration.json ({meta}) cannot be used (it is {why}" in msg
        assert "pass --overwrite (without --resume)" in msg and "another" not in msg, msg
    assert kept.prepare(resume=False, overwrite=True) == 0 and not kept.folder.exists()


def _rng_damage(path: Path, how: str) -> None:
    from nksim.calibration.abc import _rng_digest

    z = _entries(path)
    if how == "altered":
        keys = z["keys"].copy()
        keys[7] ^= 1
        _resave(path, keys=keys)
    elif how == "wrong shape, digest recomputed":
        keys = z["keys"][:100]
        d = _rng_digest(str(z["name"]), keys, int(z["pos"]), int(z["has_gauss"]), float(z["gauss"]))
        _resave(path, keys=keys, digest=np.array(d))
    elif how == "no digest":
        _resave(path, digest=None)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "garbled":
        data = path.read_bytes()
        path.write_bytes(data[:100] + bytes(b ^ 0x33 for b in data[100:]))
    elif how == "not an npz":
        path.write_text("x")


@pytest.mark.parametrize("how", ["altered", "wrong shape, digest recomputed", "no digest", "truncated", "garbled",
                                 "not an npz"])
def test_damaged_random_state_file_is_named_and_never_used(tmp_path, how, caplog):
    from nksim.calibration.abc import _rng_file, load_rng_state, save_rng_state

    state = np.random.RandomState(11).get_state()
    np.random.set_state(state)  # noqa: NPY002  (what pyabc draws from)
    save_rng_state(tmp_path, 3)
    got = load_rng_state(tmp_path, 3)
    assert got[0] == state[0] and np.array_equal(got[1], state[1]) and got[2:] == state[2:]
    assert load_rng_state(tmp_path, 4) is None and not caplog.records  # not kept: no warning here
    _rng_damage(_rng_file(tmp_path, 3), how)
    with caplog.at_level("WARNING", logger="nksim.calibrate"):
        assert load_rng_state(tmp_path, 3) is None
    [rec] = caplog.records
    msg = rec.getMessage()
    assert msg.startswith(f"{_rng_file(tmp_path, 3)}: the random state kept after ABC generation 3 is not used (")
    assert "statistically equivalent" in msg and "\n" not in msg


def _fast_abc(monkeypatch) -> list[int]:
    """Replace the ABC's simulations by an instant stand-in (the predictive checks still simulate); count calls."""
    from nksim.calibration.model import CalibrationModel

    calls: list[int] = []

    def simulate(self, theta, seed=None):
        calls.append(1)
        out = self.observed_summary()
        k = int(sum(float(v) for v in theta.values()) * 1000) % len(out["counts"])
        out["counts"] = out["counts"] + (np.arange(len(out["counts"])) == k)
        return out

    monkeypatch.setattr(CalibrationModel, "simulate", simulate)
    return calls


def _no_space_for(name: str, monkeypatch) -> None:
    """A full disk when the figure ``name`` is saved (after the last generation, the checks written)."""
    import nksim.fileio

    real = nksim.fileio.save_figure

    def save_figure(fig, path, dpi=120):
        if Path(path).name == name:
            import matplotlib.pyplot as plt

            plt.close(fig)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(fig, path, dpi=dpi)

    monkeypatch.setattr(nksim.fileio, "save_figure", save_figure)


def test_full_disk_after_the_last_generation_says_what_is_kept_and_resume_writes_it(tmp_path, smoke, monkeypatch,
                                                                                    capsys):
    from nksim.calibration.run import RESULT_FILES, run_calibration

    cfg = replace(smoke, abc=replace(smoke.abc, posterior_draws=2))
    calls = _fast_abc(monkeypatch)
    out = tmp_path / "cal"
    _no_space_for("ppc.png", monkeypatch)
    with pytest.raises(NksimWriteError) as exc:
        run_calibration(cfg, out, progress=False, stream=sys.stderr)
    msg = str(exc.value)
    db = out / ".partial" / "abc.db"
    assert msg.startswith("cannot write ") and "ppc.png: No space left on device;" in msg, msg
    assert f"the ABC-SMC had finished and its history (1 generations) is kept in {db}; no result file was " \
           f"written into {out}: run the same command with --resume" in msg, msg
    assert sorted(p.name for p in out.iterdir()) == [".partial"] and not list(tmp_path.glob(".cal.staging-*"))
    n = len(calls)
    monkeypatch.undo()
    calls = _fast_abc(monkeypatch)
    res = run_calibration(cfg, out, progress=False, stream=sys.stderr, resume=True)
    assert calls == []  # the results are written from the kept history: no ABC simulation again
    assert res.posterior.sizes["generation"] == 1 and n > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    capsys.readouterr()


def test_cli_full_disk_after_the_last_generation_is_one_line_with_resume(tmp_path, smoke, monkeypatch, capsys):
    from nksim.calibration.config import CalibrationConfig

    real = CalibrationConfig.smoke_version
    monkeypatch.setattr(CalibrationConfig, "smoke_version",
                        lambda self: replace(real(self), abc=replace(real(self).abc, posterior_draws=2)))
    _fast_abc(monkeypatch)
    _no_space_for("diagnostics.png", monkeypatch)
    out = tmp_path / "cal"
    assert main(["calibrate", str(CONFIG), "--smoke", "--out", str(out), "--no-progress"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("nksim: error: cannot write ") and "diagnostics.png: No space left on device" in err
    assert f"is kept in {out / '.partial' / 'abc.db'}" in err and "--resume" in err


def test_results_moved_then_interrupted_says_they_are_complete(tmp_path, smoke):
    from nksim.calibration.resume import AbcCheckpoint
    from nksim.calibration.run import _interruption

    kept = AbcCheckpoint(tmp_path / "cal", smoke)
    kept.start()
    said = _interruption(kept, KeyboardInterrupt(), tmp_path / "cal")
    assert said.kept == f"the calibration had finished: its results are complete in {tmp_path / 'cal'}"
    assert not kept.folder.exists()


def test_shown_path_is_relative_below_its_root_and_as_given_elsewhere(tmp_path, monkeypatch):
    """Records name files relative to their repository; a path outside it keeps its given form."""
    from nksim.fileio import shown_path

    (tmp_path / "repo" / "a").mkdir(parents=True)
    inside = tmp_path / "repo" / "a" / "f.json"
    assert shown_path(inside, tmp_path / "repo") == str(Path("a") / "f.json")
    assert shown_path(tmp_path / "repo" / "a" / ".." / "a" / "f.json", tmp_path / "repo") == str(Path("a/f.json"))
    outside = tmp_path / "elsewhere.json"
    assert shown_path(outside, tmp_path / "repo") == str(outside)
    monkeypatch.chdir(tmp_path / "repo")
    assert shown_path(inside) == str(Path("a") / "f.json") and shown_path("a/f.json") == str(Path("a/f.json"))
