"""How big a run or a sweep is, before it starts: an estimate of its memory and time.

Giant work is refused at the door, before any file, checkpoint or store is created:

* a run or sweep whose estimated memory exceeds the memory available now
  (:func:`available_memory`) is refused with :class:`TooLargeError` -- by ``nksim run`` and
  ``nksim sweep`` (one line: the estimate, what is available, what to change) and by the API
  (:func:`nksim.simulate_cohort`, :func:`nksim.sweep.run_sweep`; ``check_memory=False`` skips it);
* the command line also asks for ``--yes`` (:class:`ConfirmationNeeded`, one line naming it, no
  prompt) when the estimate exceeds :data:`CONFIRM_CPU_HOURS` of CPU time or
  :data:`CONFIRM_MEMORY_FRACTION` of the available memory, and prints the estimate on stderr
  above :data:`NOTICE_CPU_SECONDS`.

The estimates are estimates. Time: :data:`NS_PER_VOXEL_DAY` CPU nanoseconds per voxel-day
(``benchmarks/README.md`` measures 450 ns at the default resolution, everything included; the
cost per voxel grows slowly with the voxel capacity, and NK agents, few per voxel in the shipped
protocols, are not counted) plus a fixed cost per simulation and per sweep batch. Memory: the
arrays a simulation returns (daily records and lattice snapshots), twice for ``nksim run``
(the simulations and the Dataset assembled from them are alive together), the lattices of the
simulations running at once, a Dask worker process's own footprint, and a sweep's per-batch
bookkeeping in the main process (reading its ``batch_done`` and checksum chunks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import NksimInputError

#: CPU time of one voxel-day of a simulation (ns; 450 measured at the default resolution, rounded up).
NS_PER_VOXEL_DAY = 500
#: Fixed CPU time of one simulation (s): inputs, random effects, assembling its results.
SECONDS_PER_SIMULATION = 0.005
#: Fixed time of one sweep batch in the main process (s): verifying and writing its chunks.
SECONDS_PER_BATCH = 0.002
#: ``--yes`` is needed above this estimated CPU time (hours).
CONFIRM_CPU_HOURS = 24.0
#: ``--yes`` is needed above this fraction of the available memory.
CONFIRM_MEMORY_FRACTION = 0.5
#: The estimate is printed on stderr above this CPU time (s).
NOTICE_CPU_SECONDS = 600.0

#: Bytes per voxel of a running kernel: six int32 lattices (cells and daughters) and the NK grid.
_KERNEL_BYTES_PER_VOXEL = 7 * 4
#: Bytes of Python objects per simulation (the job, its RawRun, random effects, futures).
_SIMULATION_OVERHEAD = 4096
#: Bytes per batch of a sweep in the main process (zarr reads of ``batch_done`` and the checksums, measured
#: about 2.4 KiB with zarr 3.1), plus the pending list.
_BATCH_OVERHEAD = 3072
#: Bytes of one Dask worker process with nksim loaded.
_WORKER_PROCESS = 250 << 20


class TooLargeError(NksimInputError, MemoryError):
    """A run or sweep whose estimated memory exceeds the memory available (refused before it starts)."""


class ConfirmationNeeded(NksimInputError):
    """A large run or sweep asked without ``--yes`` (command line only)."""


@dataclass(frozen=True)
class Estimate:
    """Estimated size of a run or sweep: simulations, CPU seconds, peak memory of this machine (bytes)."""

    what: str
    simulations: int
    cpu_seconds: float
    memory_bytes: int
    threads: int
    change: str

    def summary(self) -> str:
        """``about 3.2 h of CPU time (1.6 h on 2 threads) and 4.1 GiB of memory``."""
        wall = self.cpu_seconds / max(1, min(self.threads, max(self.simulations, 1)))
        return (f"about {duration(self.cpu_seconds)} of CPU time ({duration(wall)} on {self.threads} "
                f"thread{'s' if self.threads != 1 else ''}) and {size(self.memory_bytes)} of memory")

    def refusal(self, available: int) -> str:
        """The one-line refusal of work that cannot fit in ``available`` bytes."""
        return (f"does not fit in memory: it needs about {size(self.memory_bytes)} (estimate for {self.what}), "
                f"{size(available)} is available; {self.change}")


def size(n: float) -> str:
    """Bytes as ``512 MiB``, ``3.2 GiB``, ``1.1e+03 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def duration(seconds: float) -> str:
    """Seconds as ``40 s``, ``12 min``, ``3.5 h``, ``4.2 days``, ``3.1e+06 years``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.2g} h"
    if seconds < 3.15e7:
        return f"{seconds / 86400:.2g} days"
    return f"{seconds / 3.15e7:.2g} years"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory left under the cgroup limit mounted at ``root`` (v2, else v1, as a container sees it); None: no limit."""
    v1 = root / "memory"
    for limit_f, usage_f, stat_f, inactive in (
            (root / "memory.max", root / "memory.current", root / "memory.stat", "inactive_file"),
            (v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes", v1 / "memory.stat", "total_inactive_file")):
        limit = _read_int(limit_f)
        if limit is None or limit >= 1 << 60:  # "max" or v1's "no limit" (a huge number)
            continue
        usage = _read_int(usage_f) or 0
        return max(0, limit - usage + _stat_value(stat_f, inactive))  # the page cache can be reclaimed
    return None


def available_memory() -> int | None:
    """Bytes of memory available to new work now, or None when the system does not say.

    Linux's ``MemAvailable`` (``/proc/meminfo``: free memory plus the reclaimable page cache),
    else the free pages (``os.sysconf``), and never more than the room under a cgroup memory
    limit (containers, batch jobs).
    """
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not on this system (macOS, Windows)
            avail = None
    room = cgroup_room()
    if room is not None:
        avail = room if avail is None else min(avail, room)
    return avail


def _simulation_bytes(days: int, snapshots: int, voxels: int) -> int:
    """Bytes of the arrays one simulation returns: daily record and counters (float64, int64), int32 snapshots."""
    from .engine.layout import N_C, N_R, N_S

    return (days + 1) * (N_R + N_C) * 8 + snapshots * N_S * voxels * 4


def _simulation_seconds(days: int, voxels: int) -> float:
    return voxels * days * NS_PER_VOXEL_DAY * 1e-9 + SECONDS_PER_SIMULATION


def estimate_cohort(params, protocol, simulations: int, workers: int) -> Estimate:
    """Estimate of :func:`nksim.simulate_cohort`: ``simulations`` (patient, replicate) pairs on ``workers`` threads."""
    from .quantities import OBSERVABLES

    side = int(params["lattice.side"])
    voxels = side * side
    days = int(round(protocol.end_day - protocol.start_day))
    raw = _simulation_bytes(days, len(protocol.snapshot_days), voxels)
    derived = (days + 1) * len(OBSERVABLES) * 8
    running = max(1, min(workers, simulations))
    memory = simulations * (2 * raw + derived + _SIMULATION_OVERHEAD) + running * voxels * _KERNEL_BYTES_PER_VOXEL
    return Estimate(
        what=f"{simulations} simulations of {side} x {side} voxels over {days} days",
        simulations=simulations, cpu_seconds=simulations * _simulation_seconds(days, voxels), memory_bytes=memory,
        threads=running,
        change="use fewer replicates or patients, a smaller lattice.side or fewer snapshot_days")


def _sides(plan) -> list[int]:
    """Every lattice side a plan's simulations use (model, fixed, swept and drawn values)."""
    key = "lattice.side"
    sides = {plan["model"]["parameters"][key][0]} if key in plan["model"]["parameters"] else set()
    for values in (plan["fixed_parameters"], *plan["draws"], *(sc["parameters"] for sc in plan["scenarios"])):
        if key in values:
            sides.add(values[key])
    return [int(s) for s in sides] or [1]


def estimate_sweep(plan, workers: int | None, scheduler: str | None = None) -> Estimate:
    """Estimate of :func:`nksim.sweep.run_sweep` of ``plan``.

    Memory of this machine: the main process and the worker processes of a local cluster (a
    ``scheduler``'s workers are elsewhere); CPU time on all workers together.
    """
    from .patients import EFFECT_META

    side = max(_sides(plan))
    voxels = side * side
    days = plan.n_time
    pb, rb = plan.batch_shape
    per_sim = 2 * _simulation_bytes(days, 0, voxels) + _SIMULATION_OVERHEAD
    n_results = len(plan["time_series"]) + 3 + len(EFFECT_META)  # + response, time to progression, PD threshold
    batch = pb * rb * (per_sim + n_results * days * 4) + voxels * _KERNEL_BYTES_PER_VOXEL
    main = plan.n_batches * (_BATCH_OVERHEAD + 8 * n_results)
    if scheduler is not None:
        local, threads = 0, max(1, os.cpu_count() or 1)  # the cluster's size is not known before connecting
    elif workers == 0:
        local, threads, main = 0, 1, main + batch
    else:
        local = threads = workers if workers is not None else (os.cpu_count() or 1)
    cpu = plan.n_simulations * _simulation_seconds(days, voxels) + plan.n_batches * SECONDS_PER_BATCH
    return Estimate(
        what=f"{plan.n_simulations} simulations in {plan.n_batches} batches, lattice side up to {side}, {days} days",
        simulations=plan.n_simulations, cpu_seconds=cpu, memory_bytes=main + local * (_WORKER_PROCESS + batch),
        threads=threads,
        change="lower cohort.patients, cohort.replicates, cohort.draws or the number of scenarios (or --workers, "
               "parameters.lattice.side; a larger sweep.batch_size means fewer batches)")


def check_memory(estimate: Estimate, source: str) -> None:
    """Raise :class:`TooLargeError` when ``estimate`` exceeds the available memory (when the system says)."""
    available = available_memory()
    if available is not None and estimate.memory_bytes > available:
        raise TooLargeError(estimate.refusal(available), source=source)


def check_size(estimate: Estimate, source: str, *, yes: bool, notice: bool = True) -> None:
    """The command line's check: refuse what cannot fit, ask for ``--yes`` above the stated size, say the estimate.

    Raises :class:`TooLargeError` or :class:`ConfirmationNeeded` (one line each); with ``notice``,
    prints the estimate on stderr when it exceeds :data:`NOTICE_CPU_SECONDS`.
    """
    import sys

    available = available_memory()
    if available is not None and estimate.memory_bytes > available:
        raise TooLargeError(estimate.refusal(available), source=source)
    large = estimate.cpu_seconds > CONFIRM_CPU_HOURS * 3600 or (
        available is not None and estimate.memory_bytes > CONFIRM_MEMORY_FRACTION * available)
    if large and not yes:
        where = f" ({size(available)} available)" if available is not None else ""
        raise ConfirmationNeeded(
            f"a large job: {estimate.summary()}{where} (estimate for {estimate.what}, at {NS_PER_VOXEL_DAY} ns per "
            f"voxel-day); pass --yes to start it (asked above {CONFIRM_CPU_HOURS:g} CPU-hours or "
            f"{CONFIRM_MEMORY_FRACTION:.0%} of the available memory)", source=source)
    if notice and (large or estimate.cpu_seconds > NOTICE_CPU_SECONDS):
        print(f"{source}: {estimate.summary()} (estimate for {estimate.what})", file=sys.stderr, flush=True)
