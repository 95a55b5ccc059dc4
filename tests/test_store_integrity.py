"""Sweep store integrity and locking (issue 12).

Damaged chunks are named, never read as results; --repair recomputes exactly the damaged
batches; one writer at a time; exports are atomic.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
from _sweep_util import tiny, write_toml

from nksim.cli import main
from nksim.errors import NksimInputError
from nksim.io.lock import StoreLockedError
from nksim.sweep import SweepStore, build_plan, export_netcdf, load_spec, run_sweep, store_digest, summarize
from nksim.sweep import runner as runner_mod
from nksim.sweep.store import StoreDamagedError

# batch 6 = scenario 3, patients p1-p2; batch 1 = scenario 0, patient p3 alone (never progresses in
# this sweep: its time_to_progression chunk is all NaN = censored, i.e. equal to the fill value)
DAMAGED = [(6, 3), (1, 0)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undamaged tiny sweep: spec file, store, digest, summary."""
    d = tmp_path_factory.mktemp("integrity")
    spec = write_toml(d / "tiny.toml", tiny())
    out = d / "ref.zarr"
    rep = run_sweep(spec, out, workers=0)
    assert rep.complete and rep.n_batches == 8
    return spec, out, store_digest(out), summarize(out)


def damage(store, variable: str, batch: int, how: str):
    """Delete, garble or truncate batch ``batch``'s chunk file of ``variable``; returns its path."""
    f = SweepStore.open_existing(store).chunk_file(variable, batch)
    data = f.read_bytes()
    if how == "delete":
        f.unlink()
    elif how == "garble":
        f.write_bytes(data[:8] + bytes(b ^ 0x5A for b in data[8:]))
    elif how == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:  # pragma: no cover
        raise ValueError(how)
    return f


def copy(reference, tmp_path, name="s.zarr"):
    out = tmp_path / name
    shutil.copytree(reference[1], out)
    return out


def test_the_all_censored_chunk_is_written(reference):
    """A chunk equal to the fill value (all NaN: all censored) exists as a file, so its loss can be seen."""
    st = SweepStore.open_existing(reference[1])
    assert np.isnan(st.read("time_to_progression", 0)[0, 2]).all()
    assert st.chunk_file("time_to_progression", 1).is_file()


@pytest.mark.parametrize("how", ["delete", "garble", "truncate"])
@pytest.mark.parametrize("variable", ["time_to_progression", "donor_nk_blood", "response"])
@pytest.mark.parametrize(("batch", "scenario"), DAMAGED)
def test_damaged_chunk_gives_a_named_error_never_a_result(reference, tmp_path, how, variable, batch, scenario):
    out = copy(reference, tmp_path)
    damage(out, variable, batch, how)
    before = store_digest(out)
    expected = (rf"{out}: damaged sweep store.*variable '{variable}' of scenario {scenario} \(batch {batch}\).*"
                r"nksim sweep .*--repair")
    with pytest.raises(StoreDamagedError, match=expected) as e:
        summarize(out)
    assert e.value.batches == [batch]
    with pytest.raises(StoreDamagedError, match=expected):
        export_netcdf(out, tmp_path / "all.nc", what="all")
    with pytest.raises(StoreDamagedError, match=expected):
        run_sweep(reference[0], out, workers=0)  # resume refuses too: never "already complete"
    assert not (tmp_path / "all.nc").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temporary file anywhere
    assert store_digest(out) == before  # nothing was changed


@pytest.mark.parametrize("how", ["delete", "garble", "truncate"])
def test_cli_names_the_damage_in_one_line_and_prints_no_ranking(reference, tmp_path, capsys, how):
    out = copy(reference, tmp_path)
    damage(out, "time_to_progression", 6, how)
    assert main(["summarize", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""  # no ranking, no "6/6 scenarios complete"
    err = cap.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(out) in err and "'time_to_progression'" in err and "scenario 3" in err and "batch 6" in err
    assert main(["sweep", str(reference[0]), "--out", str(out), "--workers", "0", "--no-progress"]) == 2
    cap = capsys.readouterr()
    assert "already complete" not in cap.out and "--repair" in cap.err and "Traceback" not in cap.err


@pytest.mark.parametrize("how", ["delete", "garble", "truncate"])
def test_repair_recomputes_exactly_the_damaged_batch(reference, tmp_path, monkeypatch, how):
    spec, _, digest, summary = reference
    out = copy(reference, tmp_path)
    damage(out, "time_to_progression", 6, how)
    damage(out, "donor_nk_blood", 6, how)
    damage(out, "response", 1, how)
    ran = []
    real = runner_mod.run_batch
    monkeypatch.setattr(runner_mod, "run_batch", lambda plan, b: ran.append(b) or real(plan, b))
    rep = run_sweep(spec, out, workers=0, repair=True)
    assert ran == [1, 6] and rep.batches_repaired == 2 and rep.batches_run == 2 and rep.complete
    assert store_digest(out) == digest  # bitwise identical to the undamaged run
    xr.testing.assert_identical(summarize(out), summary)
    ran.clear()
    assert run_sweep(spec, out, workers=0, repair=True).batches_run == 0 and ran == []


def test_cli_repair(reference, tmp_path, capsys):
    spec, _, digest, _ = reference
    out = copy(reference, tmp_path)
    damage(out, "pd_threshold_pct", 3, "delete")
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress", "--repair"]) == 0
    assert "1 damaged batches flagged as not done" in capsys.readouterr().out
    assert store_digest(out) == digest


@pytest.mark.parametrize("what", ["batch_done", "batch_checksum"])
def test_damaged_flags_or_checksums_are_named_and_repaired(reference, tmp_path, what):
    spec, _, digest, _ = reference
    out = copy(reference, tmp_path)
    st = SweepStore.open_existing(out)
    coords = (5,) if what == "batch_done" else (5, 0)
    from nksim.io.zarr import chunk_file

    f = chunk_file(st.array(what), out, coords)
    if what == "batch_done":
        f.write_bytes(b"\x00garbage")  # cannot be decoded
    else:
        f.unlink()  # reads as 0 = no checksum recorded
    with pytest.raises(StoreDamagedError, match=rf"variable '{'batch_done' if what == 'batch_done' else ''}.*"
                       r"batch 5\b.*--repair"):
        summarize(out)
    rep = run_sweep(spec, out, workers=0, repair=True)
    assert rep.batches_repaired == 1 and rep.batches_run == 1
    assert store_digest(out) == digest


def test_damaged_coordinates_cannot_be_repaired_in_place(reference, tmp_path):
    out = copy(reference, tmp_path)
    (out / "time" / "c" / "0").write_bytes(b"garbage")
    before = store_digest(out)
    with pytest.raises(StoreDamagedError, match=r"variable 'time'.*new --out"):
        summarize(out)
    with pytest.raises(StoreDamagedError, match=r"variable 'time'.*new --out"):
        run_sweep(reference[0], out, workers=0, repair=True)
    assert store_digest(out) == before


def test_unverified_reads_of_a_garbled_chunk_are_named(reference, tmp_path):
    """Even a read that skips verification gives the named error, not a codec traceback."""
    out = copy(reference, tmp_path)
    damage(out, "donor_chimerism_nk", 6, "garble")
    with pytest.raises(StoreDamagedError, match=r"variable 'donor_chimerism_nk' of scenario 3 cannot be read"):
        SweepStore.open_existing(out).read("donor_chimerism_nk", 3)


# --- the writer lock ---------------------------------------------------------------------------
def test_second_writer_is_refused_and_readers_are_not(reference, tmp_path):
    spec, _, digest, summary = reference
    out = tmp_path / "s.zarr"
    run_sweep(spec, out, workers=0, max_batches=3)
    holder = SweepStore.open_for_run(out, build_plan(load_spec(spec)))  # a writer in the middle of a sweep
    try:
        with pytest.raises(StoreLockedError, match=rf"{out}: is locked by another writer \(pid {os.getpid()} on "
                           r"host .*only one `nksim sweep`"):
            run_sweep(spec, out, workers=0)
        with pytest.raises(StoreLockedError):
            run_sweep(spec, out, workers=0, repair=True)
        ds = summarize(out)  # a reader needs no lock: the finished scenario only
        assert ds.attrs["scenarios_incomplete"] == 3
        assert list(SweepStore.open_existing(out).pending()) == [3, 4, 5, 6, 7]  # the refused writer ran nothing
    finally:
        holder.unlock()
    rep = run_sweep(spec, out, workers=0)
    assert rep.batches_run == 5 and store_digest(out) == digest


def test_lock_names_another_process_and_dies_with_it(reference, tmp_path, capsys):
    spec = reference[0]
    out = tmp_path / "s.zarr"
    code = textwrap.dedent(f"""
        import sys, time
        from nksim.sweep import SweepStore, build_plan, load_spec
        spec = load_spec({str(spec)!r})
        st = SweepStore.open_for_run({str(out)!r}, build_plan(spec), dict(spec.raw))
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid} on host" in err and str(out) in err and "Traceback" not in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the kernel dropped the killed holder's lock: no stale lock
    rep = run_sweep(spec, out, workers=0)
    assert rep.complete and rep.batches_run == 8 and store_digest(out) == reference[2]


# --- export --------------------------------------------------------------------------------------
def test_failed_export_keeps_the_existing_file_and_leaves_no_tmp(reference, tmp_path, monkeypatch, capsys):
    ref = reference[1]
    folder = tmp_path / "exports"
    target = export_netcdf(ref, folder / "all.nc", what="all")
    old = target.read_bytes()
    # damaged store: refused before anything is written
    out = copy(reference, tmp_path)
    damage(out, "response", 6, "truncate")
    with pytest.raises(StoreDamagedError):
        export_netcdf(out, target, what="all", overwrite=True)
    assert main(["summarize", str(out), "--export", str(target), "--overwrite"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert target.read_bytes() == old and sorted(p.name for p in folder.iterdir()) == ["all.nc"]

    # a failure while writing (disk full): the partial temporary file is removed, the old export is kept
    def full_disk(self, path=None, *args, **kwargs):
        if path is not None:
            with open(path, "wb") as fh:
                fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full_disk)
    with pytest.raises((OSError, NksimInputError), match="No space left"):
        export_netcdf(ref, target, what="all", overwrite=True)
    with pytest.raises((OSError, NksimInputError)):
        export_netcdf(ref, target, what="summary", overwrite=True)
    assert target.read_bytes() == old and sorted(p.name for p in folder.iterdir()) == ["all.nc"]
