"""``nksim optimise`` (argument definitions and command)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import int_at_least
from ..errors import NksimInputError, NksimWriteError

_pos_int = int_at_least(1, "positive integer")


def add_optimise_parser(sub) -> None:
    """Add the ``optimise`` subcommand to an argparse subparsers object."""
    p = sub.add_parser("optimise", help="find the best schedule of a declared space under posterior uncertainty",
                       description="Search a declared schedule space (TPE on a fixed bank of posterior draws x "
                       "virtual patients with common random numbers), confirm the top schedules and the reference "
                       "on a fresh bank (near-optimal set, per-draw best, EVPI) and estimate the selected one on a "
                       "third. Re-running the same command resumes an interrupted run.")
    p.add_argument("spec", type=Path,
                   help="optimisation spec TOML (e.g. experiments/optimise/expanding_two_infusions.toml)")
    p.add_argument("--out", type=Path, required=True, help="output folder (e.g. outputs/optimise/expanding)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=_pos_int, default=None,
                   help="simulation threads in this process (default: CPU count; the kernel releases the GIL)")
    g.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, PROTOCOL://HOST:PORT: simulate on its workers")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a spec value, e.g. --set optimise.trials=16 --set optimise.banks.search.draws=4 "
                   "(repeatable)")
    p.add_argument("--no-figures", action="store_true", help="write REPORT.md and the data only")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def cmd_optimise(args: argparse.Namespace) -> int:
    """``nksim optimise``: run (or resume) an optimisation; returns 0.

    Interrupted (Ctrl-C, SIGTERM): one line says how many evaluations are kept (the command exits
    with 130; the same command resumes); a write error names the folder and keeps what was written.
    """
    import os

    from .._optional import require
    from ..interrupts import interruption_keeps
    from .run import optimise
    from .spec import load_spec

    require("optuna", "optimise", "nksim optimise")
    spec = load_spec(args.spec, args.overrides)
    b = spec.banks
    print(f"optimise '{spec.name}': {spec.trials} trials on {b['search'].units} units, top {spec.top} + reference on "
          f"{b['confirm'].units}, estimate on {b['estimate'].units}", flush=True)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    try:
        with interruption_keeps(lambda: f"{_kept(args.out)}; run the same command again to resume"):
            res = optimise(spec, args.out, workers=workers if args.scheduler is None else 1,
                           scheduler=args.scheduler, progress=not args.no_progress, figures=not args.no_figures)
    except NksimInputError:
        raise
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise NksimWriteError(f"cannot write into {args.out}: {exc.strerror or exc}{where}; {_kept(args.out)}: free "
                              "some space (or fix the permission) and run the same command again to resume") from None
    a = res.dataset.attrs
    print(f"simulated {res.simulated} schedule-bank evaluations, reused {res.reused} kept ones")
    print(f"selected: {a['selected_label']}: {a['held_out_value']:.1f} day "
          f"({a['held_out_value_lo']:.1f} to {a['held_out_value_hi']:.1f}); gain over the reference "
          f"{a['held_out_gain']:+.1f} day ({a['held_out_gain_lo']:+.1f} to {a['held_out_gain_hi']:+.1f}), "
          "estimate bank")
    print(f"near-optimal set: {int(res.dataset['near_optimal'].sum())} of {res.dataset.sizes['candidate']} confirmed "
          f"schedules; report: {args.out / 'REPORT.md'}")
    return 0


def _kept(out: Path) -> str:
    n = len(list((Path(out) / "evaluations").glob("*/*.npz")))
    return f"{n} evaluations are kept in {out}" if n else "nothing written"
