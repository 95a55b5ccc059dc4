"""``nksim calibrate CONFIG [--out DIR] [--workers N | --scheduler ADDRESS] [--smoke]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import add_dashboard_argument, positive_int


def add_calibrate_parser(sub) -> None:
    """Add the ``calibrate`` subcommand and its options to the ``sub`` subparsers."""
    p = sub.add_parser(
        "calibrate", help="ABC-SMC calibration against the trial; posterior, predictive checks, report figures",
        description="Calibrate the model to observed trial data (calibration config TOML, e.g. "
        "calibration/ahmadvand2023.toml) by ABC-SMC (pyabc). Shows generation, epsilon and acceptance rate as it "
        "goes; writes the posterior, predictive checks and figures into --out.")
    p.add_argument("config", help="calibration config TOML (or the name of one in calibration/)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/calibration/<name>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=positive_int, default=1,
                   help="1 (default): in-process single-core sampler, bit-reproducible for a seed; N > 1: a local "
                   "Dask cluster of N worker processes (statistically equivalent, not bit-reproducible)")
    g.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, PROTOCOL://HOST:PORT (e.g. tcp://host:8786); waits "
                   "for a first worker at most NKSIM_WORKER_TIMEOUT s (default 600)")
    add_dashboard_argument(p)
    p.add_argument("--smoke", action="store_true", help="the config's tiny [smoke] version (minutes; what CI runs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results already in --out (and discard the ABC history an interrupted run kept there)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted calibration whose ABC history is kept in --out/.partial (same "
                   "config; single-core runs continue bit for bit)")
    p.add_argument("--apply-to", type=Path, default=None, metavar="MODEL_TOML",
                   help="after calibrating, write the posterior medians (with provenance) into this model TOML")
    p.add_argument("--recovery", action="store_true",
                   help="instead of calibrating to the data: the parameter-recovery study of the config's [recovery] "
                   "table (synthetic trials from prior draws, calibrated and checked for coverage); writes "
                   "recovery.nc and recovery.png into --out")
    p.add_argument("--no-progress", action="store_true", help="hide progress lines and bars")


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Run ``nksim calibrate`` (calibration or recovery study) for parsed ``args``; returns the exit code."""
    from .._optional import require

    require("pyabc", "calibrate", "nksim calibrate")  # fail before any work
    from .config import load_config
    from .posterior import apply_to_model
    from .run import run_calibration

    config = load_config(args.config)
    if args.smoke:
        config = config.smoke_version()
    out = args.out or Path("outputs/calibration") / config.name
    if args.recovery:
        from ..errors import NksimInputError
        from .recovery import write_recovery

        for flag, value in (("--apply-to", args.apply_to), ("--scheduler", args.scheduler),
                            ("--resume", args.resume or None), ("--dashboard", args.dashboard)):
            if value is not None:
                raise NksimInputError(f"{flag} cannot be combined with --recovery (recovery runs on a local "
                                      "cluster and changes no model file)", key=flag)

        rec = config.recovery
        if args.smoke:
            rec = type(rec)(datasets=2, population_size=config.abc.population_size,
                            max_generations=config.abc.max_generations, max_simulations=config.abc.max_simulations)
        write_recovery(config, out, rec, workers=args.workers, overwrite=args.overwrite,
                       progress=not args.no_progress)
        return 0
    if args.apply_to is not None:
        _check_apply_to(args.apply_to, config)  # before the ABC run, not after it
    res = run_calibration(config, out, workers=args.workers, scheduler=args.scheduler, overwrite=args.overwrite,
                          progress=not args.no_progress, resume=args.resume, dashboard=args.dashboard)
    if args.apply_to is not None:
        changed = apply_to_model(res.out / "posterior_summary.csv", args.apply_to,
                                 provenance=f"calibrated ({config.name}, {res.out / 'posterior_summary.csv'})")
        print(f"updated {len(changed)} values in {args.apply_to}: {', '.join(changed)}")
    return 0


def _check_apply_to(path: Path, config) -> None:
    """Refuse a bad ``--apply-to`` target before calibrating (NksimInputError naming the file).

    Refused: a missing file, an invalid model file, one without a ``[key]`` table for a fitted
    parameter (the values are written into existing tables) and one in a folder that cannot be
    written.
    """
    from ..errors import NksimInputError
    from ..fileio import check_writable, read_text
    from ..parameters import load_parameters

    if not path.is_file():
        raise NksimInputError("model file to update not found (--apply-to writes into an existing model TOML)",
                              source=path, key="--apply-to")
    load_parameters(path)  # a valid parameter file (errors name the file and key)
    text = read_text(path, "model file")
    missing = [f.key for f in config.fit if f"\n[{f.key}]\n" not in text]
    if missing:
        raise NksimInputError(f"has no table for the fitted parameter(s) {', '.join(f'[{k}]' for k in missing)}; "
                              "--apply-to rewrites the value of existing tables: add them (e.g. copy them from "
                              "models/default.toml)", source=path, key="--apply-to")
    check_writable(path.parent)
