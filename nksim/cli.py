"""Command line interface: ``nksim run`` and the other subcommands.

Subcommands: ``run``, ``warmup``, ``sweep``, ``summarize``, ``optimise``, ``twin``, ``calibrate``, ``screen``,
``score``.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from pathlib import Path

from ._optional import MissingOptionalDependency
from .argtypes import SEED_LIMIT, int_at_least, positive_int
from .errors import Interrupted, NksimInputError, NksimWriteError
from .interrupts import interrupted, interruption_keeps, interruption_line, raise_if_signalled, sigterm_as_interrupt

_seed = int_at_least(0, "non-negative integer seed", below=SEED_LIMIT)

#: True while :func:`main` runs as the ``nksim`` command (``argv`` from the command line), i.e. in
#: a process that ends when it returns; calls with an explicit ``argv`` (tests, scripts) are left alone.
_COMMAND_PROCESS = False


def _freeze_imported_objects() -> None:
    """Move every object alive now out of the garbage collector's sight (``gc.freeze``), in a command process only.

    The modules, functions and classes that the imports created live until the process ends,
    but each full collection traverses them again: 0.5-0.9 s of CPU in ``nksim run`` (five full
    collections during the run and one at exit, over the objects of numpy, xarray, pandas,
    numba and matplotlib; ``benchmarks/README.md``). Frozen objects are still freed by reference counting; only cyclic
    garbage among them is kept, until the process ends.
    """
    if _COMMAND_PROCESS:
        gc.freeze()


def build_parser() -> argparse.ArgumentParser:
    """The ``nksim`` argument parser with its subcommands (run, warmup, sweep, summarize, calibrate, screen, score)."""
    parser = argparse.ArgumentParser(prog="nksim", description="Spatial agent-based model of NK-cell therapy of AML.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"nksim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a protocol's cohort; write DIR/trial.nc and DIR/trial.png")
    run.add_argument("--model", default="default",
                     help="parameter set name in models/ or a TOML path (default: default)")
    run.add_argument("--protocol", default="ahmadvand2023",
                     help="protocol name in experiments/protocols/ or a TOML path (default: ahmadvand2023)")
    run.add_argument("--replicates", type=positive_int, default=1, help="virtual trials per patient (default 1)")
    run.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    run.add_argument("--out", type=Path, default=Path("outputs/trial"), help="output folder (default outputs/trial)")
    run.add_argument("--workers", type=positive_int, default=None,
                     help=f"threads running simulations (default: the available cores, {available_cores()} here); "
                          "results do not depend on it")
    run.add_argument("--overwrite", action="store_true",
                     help="replace trial.nc/trial.png already in --out (and discard the kept simulations of another "
                     "run in --out/.partial)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--yes", action="store_true",
                     help="start a large run: one estimated above 24 CPU-hours or half the available memory is "
                          "refused without it (a run that cannot fit in memory is refused anyway)")
    sub.add_parser("warmup", help="compile the simulation kernel into numba's cache now (once per environment: "
                                  "for container images and cluster nodes), or report that it is cached",
                   description="Compile the simulation kernel into numba's cache (NUMBA_CACHE_DIR if set, else "
                               "__pycache__ beside nksim), so that the first simulation of every later process "
                               "loads it instead of compiling for about 10 s.")
    from .sweep.cli import add_summarize_parser, add_sweep_parser

    add_sweep_parser(sub)
    add_summarize_parser(sub)
    from .calibration.cli import add_calibrate_parser

    add_calibrate_parser(sub)
    from .calibration.cli_screen import add_screen_parser

    add_screen_parser(sub)
    from .optimise.cli import add_optimise_parser

    add_optimise_parser(sub)
    from .twin.cli import add_twin_parser

    add_twin_parser(sub)
    from .calibration.cli_score import add_score_parser

    add_score_parser(sub)
    return parser


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def cmd_run(args: argparse.Namespace) -> int:
    """``nksim run``: simulate the protocol's cohort, write trial.nc and trial.png, print a summary; returns 0.

    Everything that can be checked is checked before simulating (model, protocol, seed, the
    estimated memory and time (:mod:`nksim.sizing`; ``--yes`` for a large run), that ``--out``
    can be created and written). Finished simulations are kept in ``--out/.partial``
    (:mod:`nksim.checkpoint`) until trial.nc is written: an interrupted or killed run continues
    with the same command, bit for bit. A failure to write afterwards (disk full, no
    permission) raises :class:`NksimWriteError`, after keeping the simulated dataset in a
    temporary folder when possible; an existing trial.nc/trial.png is never half-replaced.
    """
    from .fileio import check_output_folder, save_figure
    from .io import write_netcdf
    from .parameters import load_parameters
    from .plot import trial_figure
    from .protocol import load_protocol
    from .sizing import check_size, estimate_cohort
    from .summary import summary_table
    from .trial_reference import reference_table, trial_reference

    _freeze_imported_objects()
    params = load_parameters(args.model)
    protocol = load_protocol(args.protocol)
    workers = args.workers if args.workers is not None else available_cores()
    check_size(estimate_cohort(params, protocol, len(protocol.patients) * args.replicates, workers), "nksim run",
               yes=args.yes)  # before any file is created
    nc, png = args.out / "trial.nc", args.out / "trial.png"
    check_output_folder(args.out, (nc.name, png.name), args.overwrite)
    ckpt = _checkpoint(args, params, protocol)
    on_disk = _OnDisk(nc, png, ckpt)
    t0 = time.perf_counter()
    try:  # from here an interruption says what is on disk: kept simulations, trial.nc, trial.png
        ds = _simulate_kept(ckpt, params, protocol, replicates=args.replicates, seed=args.seed, workers=workers,
                            progress=not args.no_progress)
        elapsed = time.perf_counter() - t0
        n_sims = ds.sizes["patient"] * ds.sizes["replicate"]
        raise_if_signalled()  # a Ctrl-C or SIGTERM whose exception was swallowed (e.g. in a weakref callback)
        try:
            write_netcdf(ds, nc, overwrite=args.overwrite)
        except OSError as exc:
            rescued, where = _rescue(ds, nc.name, n_sims)
            if rescued:
                ckpt.discard()  # the results are in the rescue file
            elif ckpt.count():
                where += f"; they also stay in {ckpt.folder}: run the same command again once {args.out} has space"
            raise NksimWriteError(f"cannot write {nc}: {exc.strerror or exc}; {where}") from None
        raise_if_signalled()  # e.g. swallowed while h5py closed the file
        reference = trial_reference(ds, params, protocol)  # the observed trial beside the run, where one is shipped
        try:
            ckpt.discard()  # the results are in trial.nc
            save_figure(trial_figure(ds, reference=reference), png, dpi=110)
        except OSError as exc:
            raise NksimWriteError(f"cannot write {png}: {exc.strerror or exc}; the results are complete in {nc} "
                                  f"({_LATER})") from None
        print(f"protocol {protocol.name}, parameters {params.name} ({params.status}), seed {args.seed}: "
              f"{n_sims} simulations in {elapsed:.1f} s")
        print(summary_table(ds))
        if reference is not None:
            print(f"\n{reference_table(reference)}")
        print(f"\nwrote {nc}\nwrote {png}")
        raise_if_signalled()
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(on_disk.describe()) from exc
    return 0


_LATER = "draw the figure later with nksim.plot.trial_figure(nksim.open_output(...))"


class _OnDisk:
    """What ``nksim run`` has on disk at any moment, for the line that reports an interruption.

    Compares trial.nc and trial.png with what they were when the run started (both are
    written atomically: a file whose identity changed was written whole by this run).
    """

    def __init__(self, nc: Path, png: Path, ckpt):
        self.nc, self.png, self.ckpt = nc, png, ckpt
        self.before = {nc: self._identity(nc), png: self._identity(png)}

    @staticmethod
    def _identity(path: Path) -> tuple[int, int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size

    def _written(self, path: Path) -> bool:
        now = self._identity(path)
        return now is not None and now != self.before[path]

    def describe(self) -> str:
        """``the results are complete in ...`` or what the checkpoint keeps (:func:`_kept`)."""
        if not self._written(self.nc):
            return _kept(self.ckpt, "run the same command again to continue")
        if self._written(self.png):
            return f"the results are complete in {self.nc} and {self.png}"
        return f"the results are complete in {self.nc}, {self.png} was not written ({_LATER})"


def cmd_warmup(args: argparse.Namespace) -> int:
    """``nksim warmup``: load the kernel, compiling it into numba's cache if it is not there; returns 0.

    Prints whether it compiled, how long it took and the cache folder numba really uses. An
    unusable ``NUMBA_CACHE_DIR`` (a file, read-only, impossible) is refused before compiling
    (numba would silently fall back to another folder); a kernel that could not be saved in
    the cache is a write error.
    """
    from .engine import run_patient
    from .engine.cache_guard import cache_location, kernel_in_cache_files
    from .simulate import announce_compile, warm_up

    if not hasattr(run_patient, "signatures"):
        print("numba's JIT is off (NUMBA_DISABLE_JIT): there is no kernel to compile")
        return 0
    folder, problem = cache_location(run_patient)
    if problem is not None:
        from numba.core import config

        fallback = f"falls back to {folder}" if folder else "caches nothing"
        raise NksimInputError(f"cannot hold numba's cache ({problem}), so numba {fallback}: make it a writable "
                              "folder, or unset NUMBA_CACHE_DIR to use the default cache; nothing was compiled",
                              source=f"NUMBA_CACHE_DIR={config.CACHE_DIR}")
    t0 = time.perf_counter()
    compiles = announce_compile()  # the compile line on stderr, when the cache holds no kernel
    warm_up()
    took = time.perf_counter() - t0
    if folder is None or kernel_in_cache_files(run_patient) is False:
        where = f"numba could not save it in {folder}" if folder else "numba caching is off for it"
        raise NksimWriteError(f"the kernel {'compiled' if compiles else 'loaded'} in {took:.1f} s but is not in "
                              f"numba's cache ({where}): every process will compile it again")
    print(f"kernel {'compiled into' if compiles else 'loaded from'} {folder} in {took:.1f} s")
    return 0


#: Folder of ``--out`` where ``nksim run`` keeps finished simulations until trial.nc is written.
CHECKPOINT_FOLDER = ".partial"


def _checkpoint(args: argparse.Namespace, params, protocol):
    """The run's checkpoint in ``--out`` (refused if it holds another run's simulations, unless ``--overwrite``).

    Says on stderr how many simulations it already holds.
    """
    from .checkpoint import RunCheckpoint

    ckpt = RunCheckpoint(args.out / CHECKPOINT_FOLDER, params, protocol, args.seed, args.replicates)
    for note in ckpt.check(discard_other=args.overwrite) + ckpt.verify():  # a damaged kept file: recomputed
        print(f"nksim run: {note}", file=sys.stderr, flush=True)
    n = ckpt.count()
    if n:
        print(f"nksim run: continuing an interrupted run: {n} of {ckpt.total} simulations already done in "
              f"{ckpt.folder}", file=sys.stderr, flush=True)
    return ckpt


def _simulate_kept(ckpt, params, protocol, **kwargs):
    """``simulate_cohort`` with checkpoint ``ckpt``.

    On an interruption or a failure to keep a simulation, the exception says what was kept.
    """
    from .simulate import simulate_cohort

    try:
        with interruption_keeps(lambda: _kept(ckpt, "run the same command again to continue")):
            return simulate_cohort(params, protocol, checkpoint=ckpt, check_memory=False, **kwargs)  # checked before
    except OSError as exc:  # the checkpoint could not be written (disk full, no permission)
        where = exc.filename or ckpt.folder
        advice = "free some space (or fix the permission) and run the same command again to continue"
        raise NksimWriteError(f"cannot keep a finished simulation in {where}: {exc.strerror or exc}; "
                              f"{_kept(ckpt, advice)}") from None


def _kept(ckpt, advice: str) -> str:
    """What a checkpoint holds, for a one-line message."""
    n = ckpt.count()
    if not n:
        return "nothing written"
    return f"{n} of {ckpt.total} simulations are kept in {ckpt.folder}: {advice}"


def _rescue(ds, name: str, n_sims: int) -> tuple[bool, str]:
    """Keep a computed dataset in a new folder of the system's temporary folder: (kept, where or why not)."""
    import shutil
    import tempfile

    from .io import write_netcdf

    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="nksim-unsaved-"))
        kept = write_netcdf(ds, folder / name)
    except OSError as exc:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return False, (f"the {n_sims} simulations could not be kept elsewhere either ({exc.strerror or exc}; set "
                       "TMPDIR to a folder with space to keep them next time)")
    return True, f"the {n_sims} simulations were kept in {kept}: move it where you want it"


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand of parsed ``args``; returns its exit status."""
    if args.command == "run":
        from .io.lock import output_lock

        with output_lock(args.out, "nksim run"):  # one writer per --out, from the checks to the last file
            return cmd_run(args)
    if args.command == "warmup":
        return cmd_warmup(args)
    if args.command == "sweep":
        from .sweep.cli import cmd_sweep

        return cmd_sweep(args)
    if args.command == "summarize":
        from .sweep.cli import cmd_summarize

        return cmd_summarize(args)
    if args.command == "calibrate":
        from .calibration.cli import cmd_calibrate

        return cmd_calibrate(args)
    if args.command == "screen":
        from .calibration.cli_screen import cmd_screen

        return cmd_screen(args)
    if args.command == "twin":
        from .twin.cli import cmd_twin

        return cmd_twin(args)
    if args.command == "optimise":
        from .optimise.cli import cmd_optimise

        return cmd_optimise(args)
    if args.command == "score":
        from .calibration.cli_score import cmd_score

        return cmd_score(args)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nksim`` command; returns the exit status.

    0 success, 1 a write failure or other I/O error, 2 input errors and missing extras, 130
    interrupted (Ctrl-C or SIGTERM; one line on stderr says what was kept).
    """
    global _COMMAND_PROCESS
    _COMMAND_PROCESS = argv is None
    try:
        _freeze_imported_objects()  # nksim, numpy, numba, xarray: imported with this module
        return _main(argv)
    finally:
        _freeze_imported_objects()  # the process ends now: no full collection at exit over everything


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    received: list[int] = []
    finished = False
    try:
        with sigterm_as_interrupt() as received:
            rc = _dispatch(args)
            finished = True
            raise_if_signalled()  # a signal whose exception was swallowed after the command's last check
        return rc
    except NksimInputError as exc:
        print(f"nksim: error: {exc}", file=sys.stderr)
        return 2
    except MissingOptionalDependency as exc:  # an extra is not installed: one line, no traceback
        print(f"nksim: error: {exc}", file=sys.stderr)
        return 2
    except NksimWriteError as exc:  # computed, but an output could not be written: says what was kept
        print(f"nksim: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # any other I/O failure (disk full, permissions): one line naming the file
        print(f"nksim: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemError) as exc:  # Ctrl-C, SIGTERM: commands write their files atomically
        if not interrupted(exc):
            raise
        name = "SIGTERM" if received and received[0] == signal.SIGTERM else None
        if finished:  # the signal came after the command's work: nothing was cut short
            exc = Interrupted("the command had already finished (its outputs are complete)")
        print(f"\n{interruption_line(args.command, exc, name)}", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
