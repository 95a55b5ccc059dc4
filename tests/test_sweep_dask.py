"""Dask runner: the same seed gives bitwise-identical stores with 1 worker, 2 workers or none."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
from _sweep_util import (
    INTERRUPTIBLE,
    batches_done,
    signal_group,
    sweep_command,
    tiny,
    tiny_spec,
    wait_until,
    write_toml,
)

from nksim.sweep import SweepStore, run_sweep, store_digest


@pytest.fixture(scope="module")
def cluster2():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield cluster
    cluster.close()


def test_one_worker_two_workers_and_in_process_give_identical_stores(tmp_path, cluster2):
    spec = tiny_spec()
    inproc = run_sweep(spec, tmp_path / "inproc.zarr", workers=0)
    one = run_sweep(spec, tmp_path / "one.zarr", workers=1)  # own LocalCluster (the default path)
    two = run_sweep(spec, tmp_path / "two.zarr", scheduler=cluster2.scheduler_address)
    assert inproc.complete and one.complete and two.complete
    assert one.workers == 1 and two.workers == 2
    d = store_digest(tmp_path / "inproc.zarr")
    assert store_digest(tmp_path / "one.zarr") == d
    assert store_digest(tmp_path / "two.zarr") == d
    # resume on the cluster a store begun in-process
    part = tmp_path / "part.zarr"
    run_sweep(spec, part, workers=0, max_batches=5)
    rest = run_sweep(spec, part, scheduler=cluster2.scheduler_address)
    assert rest.batches_before == 5 and rest.batches_run == 3
    assert store_digest(part) == d


def _interrupt_setup(tmp_path, store_name):
    """A 2-worker CLI sweep to interrupt, and the uninterrupted reference store to compare with."""
    spec_file = write_toml(tmp_path / "s.toml", tiny(**INTERRUPTIBLE))
    ref = tmp_path / "ref.zarr"
    run_sweep(spec_file, ref, workers=0)
    out = tmp_path / store_name
    return spec_file, ref, out, sweep_command(spec_file, out, 2)


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_store(tmp_path):
    """Kill the CLI (SIGKILL) mid-sweep, re-run the same command: same bytes as an uninterrupted run.

    The kill waits for an observable event (3 batches in the store), however long the cluster
    takes to start on a loaded machine, and the sweep is frozen (SIGSTOP) as soon as it is seen,
    so that it cannot finish between the observation and the kill.
    """
    spec_file, ref, out, cmd = _interrupt_setup(tmp_path, "killed.zarr")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: batches_done(out) >= 3, proc, what="third batch in the store")
        signal_group(proc, signal.SIGSTOP)  # the CLI and its Dask workers
    finally:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
    st = SweepStore.open_existing(out)
    assert 3 <= st.done().sum() < st.plan.n_batches, "the sweep finished before it could be killed"
    rep = run_sweep(spec_file, out, workers=2)
    assert rep.complete
    assert store_digest(out) == store_digest(ref)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_completes(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C does): exit code 130 and a resume hint.

    The same command then completes the store identically to an uninterrupted run.
    """
    spec_file, ref, out, cmd = _interrupt_setup(tmp_path, "int.zarr")

    def default_sigint():
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: batches_done(out) >= 2, proc, what="second batch in the store")
    finally:
        signal_group(proc, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the sweep finished before it could be interrupted")
    assert proc.returncode == 130 and "run the same command again to resume" in err
    assert "Traceback" not in err  # workers do not die noisily
    rep = run_sweep(spec_file, out, workers=0)
    assert rep.complete and store_digest(out) == store_digest(ref)
