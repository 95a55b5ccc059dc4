"""Command line interface: ``nksim run``, ``sweep``, ``summarize``, ``calibrate``, ``screen``."""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

from ._optional import MissingOptionalDependency
from .argtypes import SEED_LIMIT, int_at_least, positive_int
from .errors import NksimInputError, NksimWriteError

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
    """The ``nksim`` argument parser with its subcommands (run, sweep, summarize, calibrate, screen)."""
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
    run.add_argument("--overwrite", action="store_true", help="replace trial.nc/trial.png already in --out")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from .sweep.cli import add_summarize_parser, add_sweep_parser

    add_sweep_parser(sub)
    add_summarize_parser(sub)
    from .calibration.cli import add_calibrate_parser

    add_calibrate_parser(sub)
    from .calibration.cli_screen import add_screen_parser

    add_screen_parser(sub)
    return parser


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def cmd_run(args: argparse.Namespace) -> int:
    """``nksim run``: simulate the protocol's cohort, write trial.nc and trial.png, print a summary; returns 0.

    Everything that can be checked is checked before simulating (model, protocol, seed, that
    ``--out`` can be created and written). A failure to write afterwards (disk full, no
    permission) raises :class:`NksimWriteError`, after keeping the simulated dataset in a
    temporary folder when possible; an existing trial.nc/trial.png is never half-replaced.
    """
    from .fileio import check_output_folder, save_figure
    from .io import write_netcdf
    from .parameters import load_parameters
    from .plot import trial_figure
    from .protocol import load_protocol
    from .simulate import simulate_cohort
    from .summary import summary_table

    _freeze_imported_objects()
    params = load_parameters(args.model)
    protocol = load_protocol(args.protocol)
    nc, png = args.out / "trial.nc", args.out / "trial.png"
    check_output_folder(args.out, (nc.name, png.name), args.overwrite)
    t0 = time.perf_counter()
    workers = args.workers if args.workers is not None else available_cores()
    ds = simulate_cohort(params, protocol, replicates=args.replicates, seed=args.seed, workers=workers,
                         progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    n_sims = ds.sizes["patient"] * ds.sizes["replicate"]
    try:
        write_netcdf(ds, nc, overwrite=args.overwrite)
    except OSError as exc:
        raise NksimWriteError(f"cannot write {nc}: {exc.strerror or exc}; {_rescue(ds, nc.name, n_sims)}") from None
    try:
        save_figure(trial_figure(ds), png, dpi=110)
    except OSError as exc:
        raise NksimWriteError(f"cannot write {png}: {exc.strerror or exc}; the results are complete in {nc} "
                              "(draw the figure later with nksim.plot.trial_figure(nksim.open_output(...)))") from None
    print(f"protocol {protocol.name}, parameters {params.name} ({params.status}), seed {args.seed}: "
          f"{n_sims} simulations in {elapsed:.1f} s")
    print(summary_table(ds))
    print(f"\nwrote {nc}\nwrote {png}")
    return 0


def _rescue(ds, name: str, n_sims: int) -> str:
    """Keep a computed dataset in a new folder of the system's temporary folder; says where (or that it could not)."""
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
        return (f"the {n_sims} simulations could not be kept elsewhere either ({exc.strerror or exc}; set TMPDIR "
                "to a folder with space to keep them next time)")
    return f"the {n_sims} simulations were kept in {kept}: move it where you want it"


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) Ctrl-C: numba kernels report it as a SystemError on return."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nksim`` command; returns the exit status (2 for input errors and missing extras)."""
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
    try:
        if args.command == "run":
            return cmd_run(args)
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
    except (KeyboardInterrupt, SystemError) as exc:  # Ctrl-C: commands write their files atomically at the end
        if not _interrupted(exc):
            raise
        print(f"\nnksim {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
