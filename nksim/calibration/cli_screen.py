"""``nksim screen CONFIG [--out DIR] [--trajectories N] [--levels L] [--virtual-trials V] [--workers N] [--smoke]``.

``nksim screen --registry [DIR] [--roles R ...] [--model M] [--parameters KEY ...] [--replicates V]``: the same
Morris screen on the trial registry's rows (:func:`nksim.calibration.registry_screen.run_registry_screen`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..argtypes import SEED_LIMIT, int_at_least, positive_int

_at_least_two = int_at_least(2, "integer >= 2")
_seed = int_at_least(0, "non-negative integer seed", below=SEED_LIMIT)
#: What ``nksim screen --registry`` writes into ``--out``.
REGISTRY_FILES = ("morris.nc", "morris.csv", "morris.png")


def add_screen_parser(sub) -> None:
    """Add the ``screen`` subcommand and its options to the ``sub`` subparsers."""
    p = sub.add_parser(
        "screen", help="Morris sensitivity screen of the prior ranges on the outcome summaries (DIR/morris.nc, .png)",
        description="Morris elementary-effects screen (SALib) of every prior-carrying model parameter (plus the "
        "config's fit parameters) over its prior range, on P(PD at first assessment), P(PD by the end of follow-up "
        "| SD), log10 median peak donor chimerism and its day; common random numbers across design points. Writes "
        "DIR/morris.nc and DIR/morris.png and prints mu* per output with the selection (mu*/max >= 0.1 for any "
        "output).")
    from .registry import ROLES
    from .scoring import DEFAULT_SEED

    p.add_argument("config", nargs="?", default=None,
                   help="calibration config TOML (or the name of one in calibration/); not with --registry")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/screen/<name>)")
    p.add_argument("--trajectories", type=_at_least_two, default=10, help="Morris trajectories (default 10)")
    p.add_argument("--levels", type=_at_least_two, default=4, help="Morris grid levels, even (default 4)")
    p.add_argument("--virtual-trials", "--replicates", dest="virtual_trials", type=positive_int, default=None,
                   help="virtual trials per design point (default 4; with --registry: per protocol, default 2)")
    p.add_argument("--workers", type=positive_int, default=1, help="threads evaluating design points (default 1)")
    p.add_argument("--dose-factor", type=float, default=1.0,
                   help="multiply every NK dose of the trial protocol by this factor (default 1)")
    p.add_argument("--smoke", action="store_true", help="the config's [smoke] version with 2 trajectories")
    p.add_argument("--overwrite", action="store_true", help="replace morris.nc/morris.png already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    r = p.add_argument_group("registry mode", "screen the trial registry's rows instead of a calibration config's "
                             "summaries: one output per row (share; median, log10 for counts and chimerism), each "
                             "protocol simulated with the seed nksim score uses at every design point; writes "
                             "DIR/morris.nc, morris.csv and morris.png (default DIR outputs/screen/registry)")
    r.add_argument("--registry", nargs="?", const="", default=None, metavar="DIR",
                   help="screen the registry rows (DIR: a registry folder; default the shipped "
                        "calibration/data/trials)")
    r.add_argument("--roles", nargs="+", choices=ROLES, default=None,
                   help="registry rows that are outputs (default: target)")
    r.add_argument("--model", default=None, help="parameter set name in models/ or a TOML path (default: default)")
    r.add_argument("--parameters", nargs="+", default=None, metavar="KEY",
                   help="screen only these parameters (default: every parameter with a prior)")
    r.add_argument("--seed", type=_seed, default=None, help=f"design and simulation seed (default {DEFAULT_SEED})")


def cmd_screen(args: argparse.Namespace) -> int:
    """Run ``nksim screen`` (Morris screen, writes morris.nc/.png) for parsed ``args``; returns the exit code."""
    from .._optional import require

    require("SALib", "calibrate", "nksim screen")  # fail before any work
    from ..errors import NksimInputError
    from ..fileio import check_output_folder, save_figure
    from ..io import write_netcdf
    from ..io.lock import output_lock
    from ..plot.calibration import screen_figure
    from .config import load_config
    from .screen import run_screen, screen_table

    if args.registry is not None:
        return _cmd_registry_screen(args)
    for opt, value in (("--roles", args.roles), ("--model", args.model), ("--parameters", args.parameters),
                       ("--seed", args.seed)):
        if value is not None:
            raise NksimInputError(f"{opt} needs --registry", key=opt)
    if args.config is None:
        raise NksimInputError("give a calibration config, or --registry to screen the trial registry", key="config")
    virtual_trials = 4 if args.virtual_trials is None else args.virtual_trials
    if not (args.dose_factor > 0 and args.dose_factor < 1e4):
        raise NksimInputError(f"--dose-factor must be in (0, 10000), got {args.dose_factor:g}", key="--dose-factor")
    if args.levels % 2:
        raise NksimInputError(f"--levels must be even, got {args.levels}", key="--levels")
    config = load_config(args.config)
    trajectories = args.trajectories
    if args.smoke:
        config = config.smoke_version()
        trajectories = 2
    out = args.out or Path("outputs/screen") / config.name
    with output_lock(out, "nksim screen"):  # one writer per --out, from the checks to the last file
        nc, png = out / "morris.nc", out / "morris.png"
        check_output_folder(out, (nc.name, png.name), args.overwrite)
        ds = run_screen(config, trajectories=trajectories, levels=args.levels, virtual_trials=virtual_trials,
                        workers=args.workers, progress=not args.no_progress, dose_factor=args.dose_factor)
        write_netcdf(ds, nc, overwrite=args.overwrite)
        save_figure(screen_figure(ds), png)
    print(f"Morris screen of {config.name}: {ds.sizes['parameter']} parameters, {ds.sizes['point']} design points "
          f"x {virtual_trials} virtual trials in {ds.attrs['wall_time_s']:.1f} s")
    print("mu* per output (output units per prior range of the parameter on its sampling scale):")
    print(screen_table(ds))
    print(f"\nselected: {', '.join(str(k) for k in ds['parameter'].to_numpy()[ds['selected'].to_numpy() == 1])}")
    print(f"\nwrote {nc}\nwrote {png}")
    return 0


def _cmd_registry_screen(args: argparse.Namespace) -> int:
    """``nksim screen --registry``: Morris screen on the registry rows; writes morris.nc/.csv/.png atomically."""
    from ..errors import NksimInputError, NksimWriteError
    from ..fileio import check_output_folder, save_figure
    from ..interrupts import interruption_keeps, raise_if_signalled
    from ..io import write_netcdf
    from ..io.lock import output_lock
    from ..parameters import load_parameters
    from ..plot.calibration import screen_figure
    from .cli_score import _stage
    from .registry import load_registry
    from .registry_screen import registry_screen_csv, run_registry_screen, top_parameters
    from .scoring import DEFAULT_SEED
    from .screen import screen_table

    if args.config is not None:
        raise NksimInputError(f"--registry screens the trial registry: give no calibration config (got "
                              f"{args.config!r})", key="config")
    if args.smoke or args.dose_factor != 1.0:
        raise NksimInputError("--smoke and --dose-factor apply to a calibration config, not to --registry",
                              key="--smoke" if args.smoke else "--dose-factor")
    if args.levels % 2:
        raise NksimInputError(f"--levels must be even, got {args.levels}", key="--levels")
    params = load_parameters(args.model or "default")  # every input is checked before the lock and any simulation
    registry = load_registry(args.registry or None)
    roles = tuple(args.roles or ("target",))
    replicates = 2 if args.virtual_trials is None else args.virtual_trials
    seed = DEFAULT_SEED if args.seed is None else args.seed
    out = args.out or Path("outputs/screen/registry")
    with output_lock(out, "nksim screen"):  # one writer per --out, from the checks to the last file
        check_output_folder(out, REGISTRY_FILES, args.overwrite)
        unchanged = "nothing written" + (f"; the files already in {out} are unchanged"
                                         if any((out / n).exists() for n in REGISTRY_FILES) else "")
        staged: str | None = None
        with interruption_keeps(unchanged):
            ds = run_registry_screen(params, registry, roles=roles, parameters=args.parameters,
                                     trajectories=args.trajectories, levels=args.levels, replicates=replicates,
                                     seed=seed, workers=args.workers, progress=not args.no_progress)
            raise_if_signalled()
            try:
                staged = _stage(out / "morris.csv", registry_screen_csv(ds))
                write_netcdf(ds, out / "morris.nc", overwrite=args.overwrite)
                os.replace(staged, out / "morris.csv")
                staged = None
                save_figure(screen_figure(ds), out / "morris.png")
            except OSError as exc:
                raise NksimWriteError(f"cannot write the screen into {out}: {exc.strerror or exc}; "
                                      f"{unchanged}") from None
            finally:
                if staged is not None:
                    Path(staged).unlink(missing_ok=True)
    print(f"Morris screen of the trial registry ({', '.join(roles)} rows) with parameters {ds.attrs['parameter_set']}: "
          f"{ds.sizes['parameter']} parameters, {ds.sizes['point']} design points x {replicates} virtual trials per "
          f"protocol in {ds.attrs['wall_time_s']:.1f} s")
    print("mu* per output (output units per prior range of the parameter on its sampling scale):")
    print(screen_table(ds))
    print("\nlargest effects per row (mu*, signed mu):")
    print(top_parameters(ds))
    print("\n" + "\n".join(f"wrote {out / n}" for n in REGISTRY_FILES))
    return 0
