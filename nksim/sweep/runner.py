"""Running a sweep on Dask and streaming the batches into the Zarr store.

``run_sweep(spec, out)``:

1. reads and validates the spec and resolves the plan (all input errors happen here);
2. creates the store, or reopens it to resume (refusing a store of another spec/version), and
   holds its writer lock until the call ends (a second writer is refused, naming the holder);
   a reopened store is verified first: damaged batches raise StoreDamagedError, or with
   ``repair=True`` are flagged as not done and recomputed with the other pending batches;
3. warms the numba cache in this process (the first run compiles and writes the on-disk cache,
   so workers only load it), then starts a ``distributed.LocalCluster`` of ``workers``
   single-threaded processes -- or attaches to an existing scheduler -- and registers a worker
   plugin that warms every worker (also ones that join later) once;
4. submits the pending batches with a bounded window (2 tasks per worker thread) and writes
   each result into the store as soon as it arrives (this process is the only writer); memory
   therefore stays flat whatever the sweep size;
5. shows a progress bar (simulations done/total, rate, ETA).

Interrupting (Ctrl-C, SIGKILL, a lost worker -- Dask reruns its tasks) loses at most the batches
in flight; running the same command again resumes. ``workers=0`` runs the batches in this
process without Dask (debugging, tests).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import sizing
from ..errors import NksimInputError
from ..interrupts import raise_if_signalled
from .execute import run_batch, warm_up
from .plan import Plan, build_plan
from .spec import SweepSpec, load_spec
from .store import SweepStore


@dataclass
class SweepReport:
    """What a call to :func:`run_sweep` did."""

    store: Path
    plan_digest: str
    n_batches: int
    n_simulations: int
    batches_before: int  # already done when the call started
    batches_run: int  # written by this call
    seconds: float  # wall time of the call, cluster start-up and warm-up included
    workers: int  # worker threads used (0: in-process)
    compute_seconds: float = float("nan")  # from the first submitted batch to the last written one
    batches_repaired: int = 0  # damaged batches flagged as not done by repair=True (then recomputed)

    @property
    def complete(self) -> bool:
        """Whether every batch of the plan is now in the store."""
        return self.batches_before + self.batches_run == self.n_batches

    @property
    def simulations_run(self) -> float:
        """Simulations written by this call (batches run x mean simulations per batch)."""
        return self.batches_run * (self.n_simulations / max(self.n_batches, 1))

    @property
    def simulations_per_second(self) -> float:
        """Simulations per second of wall time, start-up included."""
        return self.simulations_run / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_simulations_per_second(self) -> float:
        """Simulations per second once workers are up (start-up excluded)."""
        return self.simulations_run / self.compute_seconds if self.compute_seconds > 0 else float("nan")


class SweepInterrupted(KeyboardInterrupt):
    """Raised on Ctrl-C after the finished batches are safely written."""

    def __init__(self, written: int):
        super().__init__(f"interrupted after writing {written} batches in this run")
        self.written = written


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="sim", desc=desc, smoothing=0.1, dynamic_ncols=True)


def run_sweep(spec: SweepSpec | str | Path, out: str | Path, *, workers: int | None = None,
              scheduler: str | None = None, overrides: Sequence[str] = (), progress: bool = False,
              max_batches: int | None = None, repair: bool = False, dashboard: str | None = None,
              check_memory: bool = True) -> SweepReport:
    """Run (or resume) a sweep into the Zarr store ``out``; see the module docstring.

    Parameters
    ----------
    spec:
        A :class:`SweepSpec` or the path of a sweep TOML file (``overrides`` = ``TABLE.KEY=VALUE``).
    workers:
        Worker processes of the local cluster (default: CPU count); 0 runs in this process.
    scheduler:
        Address of an existing Dask scheduler (e.g. ``tcp://host:8786``, or a dask-jobqueue
        cluster's ``scheduler_address``); excludes ``workers``. Checked before any work
        (:func:`nksim.cluster.check_scheduler`); with no workers the run waits for the first one
        at most ``NKSIM_WORKER_TIMEOUT`` seconds (default 600), then fails.
    max_batches:
        Stop after submitting this many pending batches (tests, benchmarks); resume later.
    repair:
        Recompute the batches of a store that fail verification (missing, changed or undecodable
        chunk files) instead of refusing it; the result equals an undamaged run bit for bit.
    dashboard:
        ``HOST:PORT`` where the local cluster serves the Dask dashboard (its URL is printed);
        None (default): no dashboard, nothing listens beyond loopback. With ``scheduler``, any
        value prints that scheduler's dashboard URL. Needs a cluster (not ``workers=0``).
    check_memory:
        Refuse, before the store is created, a sweep whose estimated memory on this machine
        exceeds the memory available now: :class:`nksim.sizing.TooLargeError` (a
        :class:`MemoryError`); see :mod:`nksim.sizing`.
    """
    if scheduler is not None and workers is not None:
        raise NksimInputError("give either workers or scheduler, not both", source="sweep", key="--scheduler")
    if workers is not None and workers < 0:
        raise NksimInputError(f"workers must be >= 0, got {workers}", source="sweep", key="--workers")
    if dashboard is not None and workers == 0:
        raise NksimInputError("a dashboard needs a Dask cluster: --workers 0 runs in this process without one",
                              source="sweep", key="--dashboard")
    if scheduler is not None:  # before any work: a malformed address is refused now, not after the store exists
        from ..cluster import check_scheduler

        scheduler = check_scheduler(scheduler)
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, overrides)
    elif overrides:
        raise ValueError("overrides apply to a spec file; apply them before building a SweepSpec")
    plan = build_plan(spec)
    if check_memory:
        sizing.check_memory(sizing.estimate_sweep(plan, workers, scheduler), "run_sweep")
    store = SweepStore.open_for_run(out, plan, dict(spec.raw))  # holds the writer lock
    try:
        return _run_locked(spec, plan, store, Path(out), workers, scheduler, progress, max_batches, repair, dashboard)
    finally:
        store.unlock()


def _run_locked(spec: SweepSpec, plan: Plan, store: SweepStore, out: Path, workers: int | None,
                scheduler: str | None, progress: bool, max_batches: int | None, repair: bool,
                dashboard: str | None) -> SweepReport:
    t0 = time.perf_counter()
    _, damage = store.verify()
    repaired = 0
    if damage:
        err = store.damage_error(damage)
        if not repair or not err.batches or any(d.batch is None for d in damage):
            raise err
        store.mark_pending(err.batches)
        repaired = len(err.batches)
    done_before = int(store.done().sum())
    pending = [int(b) for b in store.pending()]
    if max_batches is not None:
        pending = pending[:max_batches]
    total_sims = plan.n_simulations
    sims_done = sum(plan.batch_size(int(b)) for b in np.flatnonzero(store.done()))
    if not pending:
        return SweepReport(out, plan.digest, plan.n_batches, total_sims, done_before, 0, 0.0, 0,
                           batches_repaired=repaired)
    warm_up(plan["model"])
    bar = _progress(total_sims, sims_done, progress, spec.name)
    written = 0
    t_compute = time.perf_counter()
    try:
        if workers == 0:
            try:
                for b in pending:
                    store.write_batch(run_batch(plan, b))
                    written += 1
                    if bar is not None:
                        bar.update(plan.batch_size(b))
                    raise_if_signalled()  # a Ctrl-C or SIGTERM whose exception was swallowed
            except KeyboardInterrupt:
                raise SweepInterrupted(written) from None
            n_threads = 0
            t_end = time.perf_counter()
        else:
            written, n_threads, t_compute, t_end = _run_dask(plan, store, pending, workers, scheduler, bar,
                                                              dashboard)
    finally:
        if bar is not None:
            bar.close()
    return SweepReport(out, plan.digest, plan.n_batches, total_sims, done_before, written,
                       time.perf_counter() - t0, n_threads, t_end - t_compute, batches_repaired=repaired)


def _run_dask(plan: Plan, store: SweepStore, pending: list[int], workers: int | None, scheduler: str | None,
              bar, dashboard: str | None) -> tuple[int, int, float, float]:
    from distributed import as_completed

    from ..cluster import dask_client  # first: a missing dask.distributed gives the message naming the extra

    written = 0
    with dask_client(workers=workers, scheduler=scheduler, params=plan.base_parameters(),
                     dashboard=dashboard) as client:
        plan_f = client.scatter(plan, broadcast=True, hash=False)
        todo = iter(pending)
        ac = as_completed()
        in_flight = 0
        n_threads = 1
        t_submit = time.perf_counter()

        def top_up() -> None:
            # keep 2 tasks per worker thread in flight (re-read: workers may join or leave)
            nonlocal in_flight, n_threads
            n_threads = max(1, sum(client.nthreads().values()))
            while in_flight < 2 * n_threads:
                b = next(todo, None)
                if b is None:
                    return
                ac.add(client.submit(run_batch, plan_f, b, key=f"nksim-{plan.digest}-{b}", pure=False))
                in_flight += 1

        top_up()
        try:
            for fut in ac:
                result = fut.result()
                fut.release()
                in_flight -= 1
                store.write_batch(result)
                written += 1
                if bar is not None:
                    bar.update(plan.batch_size(result["batch"]))
                raise_if_signalled()  # a Ctrl-C or SIGTERM whose exception was swallowed
                top_up()
        except KeyboardInterrupt:
            raise SweepInterrupted(written) from None
        return written, n_threads, t_submit, time.perf_counter()
