"""Python API: simulate one patient or a protocol's cohort; results as xarray Datasets.

Interruptions: the kernel never runs in the main thread. Called from the main thread,
:func:`run_one` runs it in a helper thread and waits, so that Ctrl-C and SIGTERM are taken at
once (a Python signal handler runs only in the main thread, between bytecodes: one that ran
while numba boxed the kernel's results would crash the process) and halt the kernel through its
flag within one step (:mod:`nksim.interrupts`). A halted simulation raises
:class:`~nksim.errors.SimulationHalted` and is never returned or kept.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from . import sizing
from .checkpoint import RunCheckpoint
from .checks import check_seed, show
from .engine import RawRun, cache_guard, pcg64, run_patient
from .engine.build import patient_inputs
from .engine.layout import KP
from .errors import NksimInputError, SimulationHalted
from .interrupts import halt_registered, signal_received
from .output import build_dataset
from .parameters import ParameterSet, load_parameters
from .patients import PatientEffects, draw_effects
from .protocol import Patient, Protocol, load_protocol, protocol_from_dict
from .streams import STREAMS, stream_entropy, stream_generator

#: The streams the kernel draws from, in ``run_patient``'s argument order.
KERNEL_STREAMS = ("init", "move", "kill", "fate", "traffic", "marrow")


def _as_params(params: ParameterSet | str | Path) -> ParameterSet:
    return params if isinstance(params, ParameterSet) else load_parameters(params)


def _as_protocol(protocol: Protocol | str | Path) -> Protocol:
    return protocol if isinstance(protocol, Protocol) else load_protocol(protocol)


def _known(protocol: Protocol) -> str:
    ids = [p.id for p in protocol.patients]
    return f"protocol '{protocol.name}' ({protocol.origin}) has patients {ids[:20]}{' ...' if len(ids) > 20 else ''}"


def _patient(protocol: Protocol, patient_id: object, where: str, key: str) -> Patient:
    """The protocol's patient ``patient_id``, or an NksimInputError naming ``where``, ``key`` and the known ids."""
    if not isinstance(patient_id, str):
        raise NksimInputError(f"a patient id must be a string, got {show(patient_id)}; {_known(protocol)}",
                              source=where, key=key)
    for p in protocol.patients:
        if p.id == patient_id:
            return p
    raise NksimInputError(f"unknown patient '{patient_id}'; {_known(protocol)}", source=where, key=key)


def _choose_patients(protocol: Protocol, patients: Sequence[str] | None,
                     where: str = "simulate_cohort") -> list[Patient]:
    """The patients a cohort simulates: all of the protocol's (``None``) or those listed, each once.

    Refused with an :class:`~nksim.errors.NksimInputError` naming ``where``, the key
    ``patients`` and the problem, before any simulation: a protocol without patients, an empty
    list, a single string instead of a list, an id that is not a string or not in the protocol,
    and an id listed twice (each patient is one row of the output; more runs of one patient are
    ``replicates``).
    """
    if not protocol.patients:
        raise NksimInputError(f"protocol '{protocol.name}' lists no patients", source=protocol.origin,
                              key="patients")
    if patients is None:
        return list(protocol.patients)
    if isinstance(patients, (str, bytes)):
        raise NksimInputError(f"expected a list of patient ids, got the string {patients!r} (write "
                              f"patients=[{patients!r}])", source=where, key="patients")
    try:
        ids = list(patients)
    except TypeError:
        raise NksimInputError(f"expected a list of patient ids, got {show(patients)}", source=where,
                              key="patients") from None
    if not ids:
        raise NksimInputError(f"the list of patients is empty: give at least one patient id (or None for all); "
                              f"{_known(protocol)}", source=where, key="patients")
    chosen = [_patient(protocol, pid, where, f"patients[{i}]") for i, pid in enumerate(ids)]
    seen: set[str] = set()
    for i, p in enumerate(chosen):
        if p.id in seen:
            raise NksimInputError(f"patient '{p.id}' is listed twice; list each patient once (more runs of a "
                                  "patient: replicates=N)", source=where, key=f"patients[{i}]")
        seen.add(p.id)
    return chosen


def _check_count(value: object, name: str, lo: int, where: str) -> int:
    """``value`` as an int if it is an integer >= ``lo`` (not a bool), else an NksimInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise NksimInputError(f"{name} must be an integer >= {lo}, got {show(value)}", source=where, key=name)
    return int(value)


#: Printed to stderr before the first simulation when the numba cache holds no compiled kernel.
COMPILE_MESSAGE = ("nksim: compiling the simulation kernel (first run on this machine only, about 10-20 s); "
                   "later runs load it from numba's cache")


def announce_compile(stream=None) -> bool:
    """Print :data:`COMPILE_MESSAGE` (one line, default stderr) if the next simulation will compile the kernel.

    The check (:func:`nksim.engine.cache_guard.kernel_cached`) reads numba's cache index only.
    Returns True when the line was printed. Called by ``simulate_cohort(progress=True)`` (the
    CLI) and ``warm_up(announce=True)``; library calls without a progress bar stay silent.
    """
    if cache_guard.kernel_cached(run_patient) is not False:
        return False
    print(COMPILE_MESSAGE, file=stream if stream is not None else sys.stderr, flush=True)
    return True


def new_halt_flag() -> np.ndarray:
    """A halt flag for :func:`run_one`: a one-element int64 array, 0; set it to 1 to halt the kernels using it."""
    return np.zeros(1, dtype=np.int64)


def run_one(params: ParameterSet, protocol: Protocol, patient: Patient, seed: int, replicate: int, *,
            stop_days: Sequence[float] | None = None, halt: np.ndarray | None = None,
            effects: PatientEffects | None = None) -> RawRun:
    """Simulate one (patient, replicate) and return the raw kernel arrays.

    ``stop_days`` (days since the first infusion, e.g. the assessment days): end the run
    after the first of these days at which marrow blasts reach the patient's PD threshold
    (early stopping of progressed patients, used by calibration). Later rows of ``rec`` are
    NaN. Up to the stop day the rows equal those of a run *with the same stop days* that never
    stops; stop days are also marrow sync days (the marrow is made current at their end), so a run
    with other stop days, or none, is the same model on another random path, not the same numbers.

    ``halt`` (:func:`new_halt_flag`, may be shared by several simulations): once it is set, the
    kernel returns within one step and this raises :class:`~nksim.errors.SimulationHalted`.
    From the main thread the kernel runs in a helper thread (module docstring); Ctrl-C there
    halts it, waits for it to return (within one step) and raises the KeyboardInterrupt.

    ``effects``: the patient's individual values, given (e.g. from
    :func:`nksim.patients.effects_from_normals`) instead of drawn from her ``patient`` stream; the
    kernel's streams are the same either way, so given the values her stream draws, the run is
    identical to the one without ``effects``.
    """
    if signal_received() is not None:  # the command is being interrupted (the exception may have been swallowed)
        raise SimulationHalted("not started: the command was interrupted")
    eff = effects if effects is not None else draw_effects(
        params, stream_generator(seed, patient.id, replicate, "patient"), patient.covariates, disease=patient.disease)
    kp, ev = patient_inputs(params, eff, protocol, patient)
    snap = np.array([int(d - protocol.start_day) for d in protocol.snapshot_days], dtype=np.int64)
    if stop_days is None:
        stop = np.zeros(0, dtype=np.int64)
    else:
        kp[KP.stop_enabled] = 1.0
        stop = np.array(sorted(int(round(d - protocol.start_day)) for d in stop_days), dtype=np.int64)
    # days at whose end the marrow must be current (a merged quiet-day marrow update never spans them)
    sync = np.array(sorted({int(round(d - protocol.start_day)) for d in protocol.assessment_days}
                           | set(snap.tolist()) | set(stop.tolist())), dtype=np.int64)
    states = kernel_states(seed, patient.id, replicate)  # the kernel advances these PCG64 states itself
    flag = halt if halt is not None else new_halt_flag()
    rec, cnt, snaps, halted = _call_kernel((kp, *ev, snap, stop, sync, *states, flag), flag)
    if halted:
        raise SimulationHalted(f"simulation of patient {patient.id}, replicate {replicate} halted")
    return RawRun(patient.id, replicate, eff, rec, cnt, snaps)


def kernel_states(seed: int, patient_id: str, replicate: int) -> list[np.ndarray]:
    """The PCG64 states (:func:`nksim.engine.pcg64.pack` layout) of the kernel's streams, :data:`KERNEL_STREAMS` order.

    The states of ``generators(seed, patient_id, replicate)[name]`` for each name, computed from
    the seed sequence's entropy (:func:`nksim.engine.pcg64.spawned_states`) without building a
    SeedSequence, PCG64 and Generator per stream (about 60 us of the 80 us ``generators`` takes).
    """
    first = STREAMS.index(KERNEL_STREAMS[0])
    if KERNEL_STREAMS != STREAMS[first:first + len(KERNEL_STREAMS)]:  # consecutive children, as spawned_states gives
        raise AssertionError("KERNEL_STREAMS must be consecutive streams of STREAMS")
    return list(pcg64.spawned_states(stream_entropy(seed, patient_id, replicate), first, len(KERNEL_STREAMS)))


class _KernelThread:
    """One daemon thread that runs kernels for the main thread, reused call after call.

    Starting a thread per simulation cost about 0.3 ms, a tenth of a calibration-resolution
    simulation; a job queue costs a few microseconds. Recreated after a fork (a new pid).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._pid = -1
        #: jobs submitted and not finished (0: the thread is idle)
        self.pending = 0

    def submit(self, job) -> None:
        """Run ``job()`` on the thread (started on first use, and again in a forked child)."""
        with self._lock:
            if self._queue is None or self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(target=self._serve, args=(self._queue,), name="nksim-kernel", daemon=True).start()
            self.pending += 1
            self._queue.put(job)

    def _serve(self, jobs: queue.SimpleQueue) -> None:
        while True:
            job = jobs.get()
            try:
                job()
            finally:
                with self._lock:
                    self.pending -= 1


_KERNEL_THREAD = _KernelThread()


def _call_kernel(args: tuple, flag: np.ndarray) -> tuple:
    """``run_patient(*args)`` (``flag``, its halt flag, last), never in the main thread (module docstring)."""
    with halt_registered(flag):
        if threading.current_thread() is not threading.main_thread():
            return run_patient(*args)
        if getattr(run_patient, "signatures", None) == []:  # load or compile it here, where Ctrl-C is taken at once
            run_patient.compile(tuple(run_patient.typeof_pyval(a) for a in args))
        box: dict[str, object] = {}
        done = threading.Event()  # not Thread.join: Python 3.11 marks a thread stopped when Ctrl-C interrupts a join

        def job() -> None:
            try:
                box["value"] = run_patient(*args)
            except BaseException as exc:  # handed to the main thread
                box["error"] = exc
            finally:
                done.set()

        submitted = False
        try:
            _KERNEL_THREAD.submit(job)
            submitted = True
            while not done.wait(0.5):  # a timeout: a signal delivered to another thread is still taken within 0.5 s
                pass
        except BaseException:  # Ctrl-C, SIGTERM: halt the kernel and wait for it (one step)
            flag[0] = 1
            if submitted:
                done.wait()
            raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def simulate_cohort(
    params: ParameterSet | str | Path = "default",
    protocol: Protocol | str | Path = "ahmadvand2023",
    *,
    replicates: int = 1,
    seed: int = 0,
    patients: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = False,
    checkpoint: RunCheckpoint | None = None,
    check_memory: bool = True,
) -> xr.Dataset:
    """Simulate every patient of a protocol (or ``patients``) ``replicates`` times.

    Parameters
    ----------
    params, protocol:
        A loaded object, a shipped name (``"default"``, ``"ahmadvand2023"``) or a TOML path.
    replicates:
        Independent virtual trials: each (patient, replicate) draws its own random effects
        and stochastic history from ``SeedSequence(seed, spawn_key=(patient, replicate))``.
    seed:
        An integer in ``[0, 2**64)`` (Python or NumPy; outputs store it as an unsigned 64-bit
        integer). A bool, a float (also ``1.5``) or an integer out of range is refused.
    patients:
        Patient ids of the protocol to simulate, each once (default: all); an empty list, a
        duplicate or an unknown id is refused.
    workers:
        Threads running simulations concurrently (the kernel releases the GIL). Results do
        not depend on it.
    progress:
        Show a progress bar (tqdm) over simulations, and one line on stderr before it when the
        kernel must be compiled first (a cold numba cache, :func:`announce_compile`).
    checkpoint:
        A :class:`nksim.checkpoint.RunCheckpoint` of these same inputs: the simulations it
        holds are read back instead of recomputed, and every newly finished one is saved in it
        (so an interrupted or killed run loses only the simulations in progress: on Ctrl-C or
        SIGTERM the running ones are halted within one step and never kept). The result is
        bitwise identical to a run without it. The caller discards it once the output is written.
    check_memory:
        Refuse, before simulating, a cohort whose estimated memory exceeds the memory available
        now: :class:`nksim.sizing.TooLargeError` (a :class:`MemoryError`); see :mod:`nksim.sizing`.

    Returns
    -------
    xarray.Dataset with dims ``patient``, ``replicate``, ``time`` (days since first
    infusion), ``assessment``, ``snapshot_time``, ``y``, ``x`` (see docs/architecture.md).
    """
    # every argument is checked before simulating (outputs store the seed as an unsigned 64-bit integer)
    seed = check_seed(seed, source="simulate_cohort")
    replicates = _check_count(replicates, "replicates", 1, "simulate_cohort")
    workers = _check_count(workers, "workers", 1, "simulate_cohort")
    params = _as_params(params)
    protocol = _as_protocol(protocol)
    chosen = _choose_patients(protocol, patients, "simulate_cohort")
    if check_memory:
        sizing.check_memory(sizing.estimate_cohort(params, protocol, len(chosen) * int(replicates), workers),
                            "simulate_cohort")
    jobs = [(p, r) for p in chosen for r in range(replicates)]
    kept: dict[tuple[str, int], RawRun] = {}
    if checkpoint is not None:
        if checkpoint.digest != RunCheckpoint(checkpoint.folder, params, protocol, seed, replicates,
                                              [p.id for p in chosen]).digest:
            raise ValueError(f"the checkpoint {checkpoint.folder} belongs to other inputs than this run")
        kept = checkpoint.load((p.id, r) for p, r in jobs)
        jobs = [(p, r) for p, r in jobs if (p.id, r) not in kept]
    bar = None
    if progress:
        if jobs:
            announce_compile()
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs) + len(kept), initial=len(kept), desc="simulating", unit="patient")

    halt = new_halt_flag()  # set on an interruption: every running or later simulation of the cohort halts

    def work(job: tuple[Patient, int]) -> RawRun:
        out = run_one(params, protocol, job[0], seed, job[1], halt=halt)
        if checkpoint is not None:
            checkpoint.save(out)
        if bar is not None:
            bar.update(1)
        return out

    try:
        if workers > 1 and len(jobs) > 1:
            # load/compile the kernel once (a 2 x 2 lattice costs milliseconds) before threads race
            run_one(params.with_values({"lattice.side": 2}), protocol, jobs[0][0], seed, jobs[0][1])
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                runs = list(pool.map(work, jobs))
            except BaseException:  # e.g. Ctrl-C: drop the queued simulations, halt the running ones (never kept)
                halt[0] = 1
                _stop(pool)
                raise
            pool.shutdown()
        else:
            runs = [work(j) for j in jobs]
    finally:
        if bar is not None:
            bar.close()
    return build_dataset(list(kept.values()) + runs, params, protocol, [p.id for p in chosen], replicates, seed)


def _stop(pool: ThreadPoolExecutor) -> None:
    """Cancel the queued simulations of ``pool`` and wait for the running ones (halted: one step each).

    A second Ctrl-C while waiting stops waiting (the halted simulations then end unobserved).
    """
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        pass


def simulate(
    params: ParameterSet | str | Path = "default",
    protocol: Protocol | str | Path = "ahmadvand2023",
    patient: str | None = None,
    *,
    seed: int = 0,
    replicate: int = 0,
) -> xr.Dataset:
    """Simulate one patient (default: the protocol's first) and return its Dataset.

    The result equals ``simulate_cohort(...).sel(patient=patient, replicate=replicate)``:
    the same seed gives the same trajectory whether run alone or in a cohort. ``seed``: an
    integer in ``[0, 2**64)`` (as :func:`simulate_cohort`); ``replicate``: an integer >= 0;
    ``patient``: an id of the protocol. Anything else is an
    :class:`~nksim.errors.NksimInputError`, raised before simulating.
    """
    seed = check_seed(seed, source="simulate")
    replicate = _check_count(replicate, "replicate", 0, "simulate")
    params = _as_params(params)
    protocol = _as_protocol(protocol)
    if not protocol.patients:
        raise NksimInputError(f"protocol '{protocol.name}' lists no patients", source=protocol.origin,
                              key="patients")
    pat = protocol.patients[0] if patient is None else _patient(protocol, patient, "simulate", "patient")
    run = run_one(params, protocol, pat, seed, replicate)
    ds = build_dataset([run], params, protocol, [pat.id], 1, seed, replicate_ids=[replicate])
    return ds.isel(patient=0, replicate=0)


def warm_up(params: ParameterSet | None = None, *, announce: bool = False) -> None:
    """Load (or compile, the first time) the numba kernel with a one-voxel, three-day simulation.

    ``params`` defaults to the shipped default model. Used by Dask workers before their first task.
    ``announce``: print one line on stderr first when this compiles (:func:`announce_compile`).
    """
    if announce:
        announce_compile()
    base = params if params is not None else load_parameters("default")
    small = base.with_values({"lattice.side": 2}, origin="warm-up")
    proto = protocol_from_dict({
        "protocol": {"name": "warm-up", "start_day": -1, "end_day": 2, "assessment_days": [1],
                     "nk_product": "expanded"},
        "events": [{"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}],
        "patients": [{"id": "warm", "group": "all"}],
    }, "<warm-up>")
    run_one(small, proto, proto.patients[0], 0, 0)
