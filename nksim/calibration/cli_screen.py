"""``nksim screen CONFIG [--out DIR] [--trajectories N] [--levels L] [--virtual-trials V] [--workers N] [--smoke]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import int_at_least, positive_int

_at_least_two = int_at_least(2, "integer >= 2")


def add_screen_parser(sub) -> None:
    """Add the ``screen`` subcommand and its options to the ``sub`` subparsers."""
    p = sub.add_parser(
        "screen", help="Morris sensitivity screen of the prior ranges on the outcome summaries (DIR/morris.nc, .png)",
        description="Morris elementary-effects screen (SALib) of every prior-carrying model parameter (plus the "
        "config's fit parameters) over its prior range, on P(PD at first assessment), P(PD by the end of follow-up "
        "| SD), log10 median peak donor chimerism and its day; common random numbers across design points. Writes "
        "DIR/morris.nc and DIR/morris.png and prints mu* per output with the selection (mu*/max >= 0.1 for any "
        "output).")
    p.add_argument("config", help="calibration config TOML (or the name of one in calibration/)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/screen/<name>)")
    p.add_argument("--trajectories", type=_at_least_two, default=10, help="Morris trajectories (default 10)")
    p.add_argument("--levels", type=_at_least_two, default=4, help="Morris grid levels, even (default 4)")
    p.add_argument("--virtual-trials", type=positive_int, default=4,
                   help="virtual trials per design point (default 4)")
    p.add_argument("--workers", type=positive_int, default=1, help="threads evaluating design points (default 1)")
    p.add_argument("--dose-factor", type=float, default=1.0,
                   help="multiply every NK dose of the trial protocol by this factor (default 1)")
    p.add_argument("--smoke", action="store_true", help="the config's [smoke] version with 2 trajectories")
    p.add_argument("--overwrite", action="store_true", help="replace morris.nc/morris.png already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


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
        ds = run_screen(config, trajectories=trajectories, levels=args.levels, virtual_trials=args.virtual_trials,
                        workers=args.workers, progress=not args.no_progress, dose_factor=args.dose_factor)
        write_netcdf(ds, nc, overwrite=args.overwrite)
        save_figure(screen_figure(ds), png)
    print(f"Morris screen of {config.name}: {ds.sizes['parameter']} parameters, {ds.sizes['point']} design points "
          f"x {args.virtual_trials} virtual trials in {ds.attrs['wall_time_s']:.1f} s")
    print("mu* per output (output units per prior range of the parameter on its sampling scale):")
    print(screen_table(ds))
    print(f"\nselected: {', '.join(str(k) for k in ds['parameter'].to_numpy()[ds['selected'].to_numpy() == 1])}")
    print(f"\nwrote {nc}\nwrote {png}")
    return 0
