"""Command line interface: ``nksim run``, ``sweep``, ``summarize``, ``calibrate``, ``screen``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._optional import MissingOptionalDependency
from .argtypes import int_at_least, positive_int
from .errors import NksimInputError

_seed = int_at_least(0, "non-negative integer seed")


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
    run.add_argument("--workers", type=positive_int, default=1, help="threads running simulations (default 1)")
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


def cmd_run(args: argparse.Namespace) -> int:
    """``nksim run``: simulate the protocol's cohort, write trial.nc and trial.png, print a summary; returns 0."""
    from .fileio import check_output_folder
    from .io import write_netcdf
    from .parameters import load_parameters
    from .protocol import load_protocol
    from .simulate import simulate_cohort
    from .summary import summary_table

    params = load_parameters(args.model)
    protocol = load_protocol(args.protocol)
    nc, png = args.out / "trial.nc", args.out / "trial.png"
    check_output_folder(args.out, (nc.name, png.name), args.overwrite)
    t0 = time.perf_counter()
    ds = simulate_cohort(params, protocol, replicates=args.replicates, seed=args.seed, workers=args.workers,
                         progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    write_netcdf(ds, nc, overwrite=args.overwrite)
    from .fileio import save_figure
    from .plot import trial_figure

    save_figure(trial_figure(ds), png, dpi=110)
    print(f"protocol {protocol.name}, parameters {params.name} ({params.status}), seed {args.seed}: "
          f"{ds.sizes['patient'] * ds.sizes['replicate']} simulations in {elapsed:.1f} s")
    print(summary_table(ds))
    print(f"\nwrote {nc}\nwrote {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nksim`` command; returns the exit status (2 for input errors and missing extras)."""
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
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
