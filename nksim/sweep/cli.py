"""``nksim sweep`` and ``nksim summarize`` (argument definitions and commands)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import add_dashboard_argument, int_at_least
from ..errors import NksimInputError, NksimWriteError

_nonneg_int = int_at_least(0, "non-negative integer")


def add_sweep_parser(sub) -> None:
    """Add the ``sweep`` subcommand to an argparse subparsers object."""
    p = sub.add_parser("sweep", help="run (or resume) a schedule sweep into a Zarr store",
                       description="Run the scenarios of a sweep spec (TOML) on Dask and stream the results into a "
                       "resumable Zarr store. Re-running the same command resumes an interrupted sweep.")
    p.add_argument("spec", type=Path, help="sweep spec TOML (e.g. experiments/two_infusion_schedules.toml)")
    p.add_argument("--out", type=Path, required=True, help="Zarr store directory (e.g. outputs/sweep.zarr)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=_nonneg_int, default=None,
                   help="worker processes of a local Dask cluster (default: CPU count; 0 = in this process, no Dask)")
    g.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, PROTOCOL://HOST:PORT (e.g. tcp://10.0.0.1:8786; see "
                   "README: dask-jobqueue); waits for a first worker at most NKSIM_WORKER_TIMEOUT s (default 600)")
    add_dashboard_argument(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a spec value, e.g. --set cohort.patients=4 --set parameters.lattice.side=8 "
                   "(repeatable; the store records the effective spec)")
    p.add_argument("--max-batches", type=_nonneg_int, default=None,
                   help="stop after this many batches (resume later with the same command)")
    p.add_argument("--repair", action="store_true",
                   help="recompute the batches of --out that fail verification (missing, changed or unreadable "
                   "chunk files) instead of refusing the store")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--yes", action="store_true",
                   help="start a large sweep: one estimated above 24 CPU-hours or half the available memory is "
                        "refused without it (a sweep that cannot fit in memory is refused anyway)")


def add_summarize_parser(sub) -> None:
    """Add the ``summarize`` subcommand to an argparse subparsers object."""
    from .summaries import CLOCKS, METRICS

    p = sub.add_parser("summarize", help="rank the scenarios of a sweep store; export to netCDF",
                       description="Per-scenario summaries (P(PD) at first assessment, Kaplan-Meier PFS at the "
                       "landmark, restricted mean and median, peak chimerism, donor NK AUC) with uncertainty, paired "
                       "contrasts with 95% confidence intervals and the probability of being best; prints the "
                       "ranking.")
    p.add_argument("store", type=Path, help="Zarr store written by `nksim sweep`")
    p.add_argument("--rank-by", choices=list(METRICS), default="pfs_landmark", help="ranking metric")
    p.add_argument("--reference", type=_nonneg_int, default=None,
                   help="scenario index for the paired contrasts of every scenario (default: the trial's schedule, "
                   "else the spec's baseline, else the best-ranked; per group of swept model-parameter values)")
    p.add_argument("--clock", choices=list(CLOCKS), default=None,
                   help="day 0 of time to progression and of the landmark: the start of lymphodepletion or the first "
                   "infusion (default: the sweep's clock, spec key sweep.clock, default 'infusion')")
    p.add_argument("--top", type=_nonneg_int, default=None, help="print only the best N scenarios")
    p.add_argument("--netcdf", type=Path, default=None, help="write the per-scenario summary to this netCDF file")
    p.add_argument("--export", type=Path, default=None,
                   help="write the whole store (every simulation's stored series) to this netCDF file")
    p.add_argument("--overwrite", action="store_true", help="replace existing --netcdf/--export files")


def cmd_sweep(args: argparse.Namespace) -> int:
    """``nksim sweep``: run (or resume) a sweep spec into a Zarr store; returns 0.

    Interrupted (Ctrl-C, SIGTERM): raises :class:`~nksim.errors.Interrupted` saying how many batches
    the store holds (the command line prints it on one line and exits with 130); a write error
    (disk full, no permission) raises :class:`~nksim.errors.NksimWriteError` saying the same.
    """
    from ..interrupts import interruption_keeps
    from ..sizing import check_size, estimate_sweep
    from .plan import build_plan
    from .runner import run_sweep
    from .spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    plan = build_plan(spec)
    print(f"sweep '{spec.name}' (plan {plan.digest}): {plan.n_scenarios} scenarios x {plan.n_draws} draws x "
          f"{len(plan.patients)} patients x {plan.replicates} replicates = {plan.n_simulations} simulations "
          f"in {plan.n_batches} batches", flush=True)
    check_size(estimate_sweep(plan, args.workers, args.scheduler), "nksim sweep", yes=args.yes)  # before the store
    try:
        with interruption_keeps(lambda: f"{_batches_kept(args.out, plan.n_batches)}; run the same command again "
                                        "to resume"):
            rep = run_sweep(spec, args.out, workers=args.workers, scheduler=args.scheduler,
                            progress=not args.no_progress, max_batches=args.max_batches, repair=args.repair,
                            dashboard=args.dashboard, check_memory=False)
    except NksimInputError:
        raise
    except OSError as exc:  # disk full, no permission while writing a batch: the finished batches are kept
        where = f" ({exc.filename})" if exc.filename else ""
        raise NksimWriteError(f"cannot write into the sweep store {args.out}: {exc.strerror or exc}{where}; "
                              f"{_batches_kept(args.out, plan.n_batches)}: free some space (or fix the permission) "
                              "and run the same command again to resume") from None
    if rep.batches_repaired:
        print(f"repair: {rep.batches_repaired} damaged batches flagged as not done, recomputed with the pending ones")
    elif args.repair:
        print(f"repair: {args.out} verified, no damaged batch")
    if rep.batches_run == 0 and rep.complete:
        print(f"{args.out} is already complete ({rep.n_batches} batches); nothing to do")
    else:
        how = "in this process" if rep.workers == 0 else f"on {rep.workers} Dask worker threads"
        print(f"ran {rep.batches_run} batches {how} in {rep.seconds:.1f} s "
              f"({rep.simulations_per_second:.2f} simulations/s); "
              f"{rep.batches_before + rep.batches_run}/{rep.n_batches} batches done"
              + ("" if rep.complete else " -- run the same command again to continue"))
    print(f"store: {args.out}  (summarize with: nksim summarize {args.out})")
    return 0


def _batches_kept(out: Path, n_batches: int) -> str:
    """How many batches a store holds, for a one-line message (the store may not exist yet)."""
    from .store import SweepStore

    try:
        done = int(SweepStore.open_existing(out).done().sum())
    except Exception:  # no store yet, or unreadable: nothing to count on
        return "nothing written"
    return f"{done} of {n_batches} batches are safely in {out}"


def cmd_summarize(args: argparse.Namespace) -> int:
    """``nksim summarize``: print the scenario ranking of a sweep store; returns 0.

    ``--netcdf`` also writes the per-scenario summary, ``--export`` the whole store, as netCDF.
    """
    from ..io import write_netcdf
    from .store import SweepStore
    from .summaries import export_netcdf, ranking_table, summarize

    for target in (args.netcdf, args.export):
        if target is not None and target.exists() and not args.overwrite:
            raise NksimInputError("already exists; pass --overwrite to replace it", source=target)
    store = SweepStore.open_existing(args.store)
    try:
        ds = summarize(store, reference=args.reference, rank_by=args.rank_by, clock=args.clock)
    except NksimInputError:  # a damaged store (StoreDamagedError) names itself
        raise
    except ValueError as exc:
        raise NksimInputError(str(exc), source=args.store, key="--reference") from None
    print(ranking_table(ds, rank_by=args.rank_by, top=args.top))
    if args.netcdf is not None:
        write_netcdf(ds, args.netcdf, overwrite=args.overwrite)
        print(f"\nwrote {args.netcdf}")
    if args.export is not None:
        export_netcdf(args.store, args.export, what="all", overwrite=args.overwrite)
        print(f"wrote {args.export}")
    return 0
