"""``nksim calibrate``: ABC-SMC, posterior files, predictive checks and report figures.

Output folder (default ``outputs/calibration/<config name>``)::

    abc.db                 pyabc history (SQLite): every generation, particle, distance
    posterior.nc           all generations' weighted particles (CF-1.8; nksim.calibration.posterior)
    posterior_summary.csv  per parameter: prior, weighted median and 5/25/75/95 % quantiles
    ppc_posterior.nc       posterior predictive check (one virtual trial per draw)
    ppc_prior.nc           prior predictive check (same statistics)
    report.png             prior vs posterior, and the simulated conversion days beside the trial's
    ppc.png                predictive checks vs the observed trial (with the conversion-day panel)
    diagnostics.png        epsilon, acceptance rate, ESS per generation

Everything is written into a staging folder next to the output and moved in only when the
whole calibration has finished, so an interrupted run never destroys earlier results; an
existing output folder with results is refused unless ``overwrite``. The ABC history is kept
in ``<out>/.partial`` while the ABC runs: an interrupted calibration continues with ``resume``
(``nksim calibrate ... --resume``; :mod:`nksim.calibration.resume`); so does a calibration whose
results could not be written after its last generation (a full disk): ``--resume`` then writes
them from the kept history without calibrating again. The output folder's writer lock
(:func:`nksim.io.lock.output_lock`) is held throughout: a second calibration (or ``nksim run``,
``screen``) into the same ``--out`` is refused.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .config import CalibrationConfig
from .resume import AbcCheckpoint

RESULT_FILES = ("abc.db", "posterior.nc", "posterior_summary.csv", "ppc_posterior.nc", "ppc_prior.nc",
                "report.png", "ppc.png", "diagnostics.png")


def _interruption(kept, exc: BaseException, complete: Path | None = None) -> BaseException:
    """The exception to raise for ``exc``: an :class:`~nksim.errors.Interrupted` saying what is kept, or ``exc``.

    ``complete``: the output folder, when every result file was already moved into it.
    """
    from ..errors import Interrupted
    from ..interrupts import interrupted

    if not interrupted(exc):
        return exc
    if complete is not None:
        kept.discard()
        return Interrupted(f"the calibration had finished: its results are complete in {complete}")
    n = kept.generations()
    if not n:
        kept.discard()
        return Interrupted("nothing written")
    return Interrupted(f"{n} finished ABC generations are kept in {kept.db}: continue with the same command and "
                       "--resume")


def _is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps) is a failed write: ENOSPC / EACCES / EROFS, or SQLite's."""
    import errno
    import sqlite3

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and any(
                m in str(exc).lower() for m in ("disk is full", "readonly database", "disk i/o error")):
            return True
        if "sqlalchemy" in type(exc).__module__ and any(
                m in str(exc).lower() for m in ("disk is full", "readonly database", "disk i/o error")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _write_failure(kept, exc: BaseException) -> BaseException:
    """A one-line :class:`~nksim.errors.NksimWriteError` for a failed write during the ABC, or ``exc``.

    SQLite commits each generation in a transaction, so the generations finished before the
    failure stay in the kept history: the message says how many and how to continue.
    """
    from ..errors import NksimWriteError

    if not _is_write_failure(exc):
        return exc
    try:
        n = kept.generations()
    except Exception:  # the history itself cannot be read back: say so, do not guess
        n = None
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if n:
        return NksimWriteError(f"writing the ABC history failed ({reason}); {n} finished ABC generations are kept in "
                               f"{kept.db}: free space (or fix the permissions) and continue with the same command "
                               "and --resume")
    return NksimWriteError(f"writing the ABC history failed ({reason}) before any generation finished; nothing "
                           f"to continue from ({kept.db})")


def _results_not_written(kept, exc: OSError, out: Path, moved: list[str]) -> BaseException:
    """A one-line :class:`~nksim.errors.NksimWriteError` for a failed write of the results after the ABC finished.

    The finished ABC history stays in ``kept`` (``--out/.partial``): ``--resume`` writes the
    results from it without calibrating again. ``moved``: the result files already moved into ``out``.
    """
    from ..errors import NksimWriteError

    what = f"{exc.filename}" if exc.filename else "the results"
    reason = exc.strerror or str(exc) or type(exc).__name__
    try:
        n = kept.generations()
    except Exception:  # the history itself cannot be read back: say so, do not guess
        n = None
    if not n:
        return NksimWriteError(f"cannot write {what}: {reason}; the finished ABC history could not be read back "
                               f"({kept.db}): free some space and run the calibration again")
    if moved:
        done = (f"{len(moved)} of {len(RESULT_FILES)} result files ({', '.join(moved)}) were moved into {out}: "
                "run the same command with --resume --overwrite")
    else:
        done = f"no result file was written into {out}: run the same command with --resume"
    return NksimWriteError(f"cannot write {what}: {reason}; the ABC-SMC had finished and its history ({n} "
                           f"generations) is kept in {kept.db}; {done} (after freeing some space or fixing the "
                           "permissions) to write the results without calibrating again")


def predictive_checks(model, post: xr.Dataset, *, workers: int = 1,
                      progress: bool = False) -> tuple[xr.Dataset, xr.Dataset]:
    """Posterior and prior predictive checks of a posterior Dataset (``posterior_draws`` virtual trials each).

    The posterior draws are resampled by weight from the last generation; both use the model
    config's seed (the prior check ``seed + 1``).
    """
    from .posterior import final_population
    from .ppc import posterior_thetas, predictive_check, prior_thetas

    config = model.config
    vals, w = final_population(post)
    n = config.abc.posterior_draws
    ppc_post = predictive_check(model, posterior_thetas(vals, w, n, config.seed), seed=config.seed,
                                label="posterior", workers=workers, progress=progress)
    ppc_prior = predictive_check(model, prior_thetas(model, n, config.seed), seed=config.seed + 1,
                                 label="prior", workers=workers, progress=progress)
    return ppc_post, ppc_prior


def write_checks_and_figures(folder: Path, post: xr.Dataset, ppc_post: xr.Dataset, ppc_prior: xr.Dataset, *,
                             calibration: str) -> None:
    """Write the predictive checks (``ppc_*.nc``) and the three figures of a calibration into ``folder``."""
    from ..fileio import save_figure
    from ..io import write_netcdf
    from ..output import tool_attrs
    from ..plot.calibration import abc_diagnostics, prior_posterior
    from ..plot.calibration import predictive_check as predictive_check_figure

    for ds, name in ((ppc_post, "ppc_posterior.nc"), (ppc_prior, "ppc_prior.nc")):
        ds.attrs.update(tool_attrs())
        ds.attrs["calibration"] = calibration
        write_netcdf(ds, folder / name)
    for fig, name in ((prior_posterior(post, ppc=ppc_post, ppc_prior=ppc_prior), "report.png"),
                      (predictive_check_figure(ppc_post, ppc_prior), "ppc.png"),
                      (abc_diagnostics(post), "diagnostics.png")):
        save_figure(fig, folder / name)


def print_predictive_check(ppc_post: xr.Dataset, stream) -> None:
    """Print the posterior predictive check table and the simulated conversion days to ``stream``."""
    from .ppc import check_table

    n = ppc_post.sizes["draw"]
    print(f"\nposterior predictive check ({n} virtual trials):", file=stream)
    for name, obs, lo, hi, inside in check_table(ppc_post):
        print(f"  {name:30s} observed {obs:<8.4g} 90% PI [{lo:.4g}, {hi:.4g}] {'ok' if inside else 'OUTSIDE'}",
              file=stream)
    call = ppc_post["conversion_call_day"].to_numpy()
    call = call[np.isfinite(call)]
    cross = ppc_post["conversion_cross_day"].to_numpy()
    cross = cross[np.isfinite(cross)]
    if call.size:
        print(f"  simulated conversions (SD then PD within follow-up): {call.size} in {n} virtual trials; median PD "
              f"call day {np.median(call):g}, median day the blasts met the PD criterion {np.median(cross):g} "
              f"(trial: median PD call day {ppc_post['median_conversion_day'].attrs['observed']:g})", file=stream)


@dataclass
class CalibrationResult:
    """Results of :func:`run_calibration`: output folder, posterior and predictive checks, timings (s), counts."""

    out: Path
    posterior: xr.Dataset
    ppc_posterior: xr.Dataset
    ppc_prior: xr.Dataset
    abc_seconds: float
    total_seconds: float
    n_simulations: int
    workers: int


def run_calibration(config: CalibrationConfig, out: str | Path, *, workers: int = 1, scheduler: str | None = None,
                    overwrite: bool = False, progress: bool = True, stream=None,
                    resume: bool = False, dashboard: str | None = None) -> CalibrationResult:
    """Run the whole calibration (see module docstring) and return its results.

    ``resume``: continue the ABC history an interrupted run kept in ``<out>/.partial``. Without
    it such a history is refused (``overwrite`` discards it). Interrupted (Ctrl-C, SIGTERM), the
    call raises :class:`~nksim.errors.Interrupted` saying how many generations are kept.
    ``dashboard``: ``HOST:PORT`` of the local Dask cluster's dashboard (``workers`` > 1), or with
    ``scheduler`` print that scheduler's dashboard URL; None: no dashboard. ``scheduler``: the
    address of an existing Dask scheduler, checked before any work
    (:func:`nksim.cluster.check_scheduler`); with no workers the run waits for the first one at
    most ``NKSIM_WORKER_TIMEOUT`` seconds (default 600), then fails.
    """
    from ..errors import NksimInputError

    if dashboard is not None and scheduler is None and workers <= 1:
        raise NksimInputError("a dashboard needs a Dask cluster: --workers 1 runs the single-core sampler in this "
                              "process; give --workers N (N > 1) or --scheduler", key="--dashboard")
    if scheduler is not None:  # before any work: a malformed address is refused now
        from ..cluster import check_scheduler

        scheduler = check_scheduler(scheduler)
    from ..fileio import check_output_folder
    from ..io import write_netcdf
    from ..io.lock import output_lock
    from .abc import run_abc
    from .model import CalibrationModel
    from .posterior import history_dataset, summary_rows, write_summary_csv

    stream = stream or sys.stdout
    out = Path(out)
    with output_lock(out, "nksim calibrate"):  # one writer per --out, from the checks to the last file
        check_output_folder(out, RESULT_FILES, overwrite)
        kept = AbcCheckpoint(out, config)
        done = kept.prepare(resume=resume, overwrite=overwrite)
        if kept.discarded:
            print(kept.discarded, file=stream, flush=True)
        t0 = time.perf_counter()
        model = CalibrationModel(config)
        fit = ", ".join(f"{f.key} [{f.lo:g}, {f.hi:g}]{' log' if f.scale == 'log' else ''}" for f in config.fit)
        print(f"calibrating '{config.name}'{' (smoke)' if config.is_smoke else ''}: {len(model.slots)} evaluable "
              f"patients x {config.virtual_trials} virtual trial(s) per particle; fitting {fit}", file=stream,
              flush=True)
        print(f"observed categories (progression timing '{model.timing}') "
              f"{dict(zip(model.categories, model.obs_counts.tolist()))}; targets "
              f"{[(t.name, t.value, t.unit, t.protocol or config.protocol) for t in model.targets]}",
              file=stream, flush=True)
        if done:
            print(f"continuing the interrupted calibration kept in {kept.folder}: {done} finished generations",
                  file=stream, flush=True)
        else:
            kept.start()
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        moved: list[str] = []  # result files moved into ``out``
        try:
            try:
                run = run_abc(config, kept.db, workers=workers, scheduler=scheduler, observed=model.observed,
                              progress=progress, resume=bool(done), rng_dir=kept.folder, dashboard=dashboard)
            except Exception as exc:  # a full disk or a read-only folder inside pyabc's SQLite writes
                said = _write_failure(kept, exc)
                if said is exc:
                    raise
                raise said from exc
            try:
                post = history_dataset(run.history, config, seconds=run.seconds, workers=run.workers)
                write_netcdf(post, stage / "posterior.nc")
                rows = summary_rows(post)
                write_summary_csv(rows, stage / "posterior_summary.csv")
                threads = max(1, workers if scheduler is None else 1)
                ppc_post, ppc_prior = predictive_checks(model, post, workers=threads, progress=progress)
                write_checks_and_figures(stage, post, ppc_post, ppc_prior, calibration=config.name)
                check_output_folder(out, RESULT_FILES, overwrite)  # again (nothing should have changed: locked)
                for f in RESULT_FILES:
                    if f != "abc.db":
                        shutil.move(str(stage / f), str(out / f))
                        moved.append(f)
                shutil.move(str(kept.db), str(out / "abc.db"))  # last: until here the kept history can be resumed
                moved.append("abc.db")
            except OSError as exc:  # any failed write of the results: the finished ABC history is kept
                if isinstance(exc, NksimInputError):
                    raise
                raise _results_not_written(kept, exc, out, moved) from exc
            kept.discard()
        except (KeyboardInterrupt, SystemError) as exc:  # Ctrl-C, SIGTERM: say what is kept and how to continue
            said = _interruption(kept, exc, out if len(moved) == len(RESULT_FILES) else None)
            if said is exc:
                raise
            raise said from exc
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    total = time.perf_counter() - t0
    print(f"\nABC-SMC: {post.sizes['generation']} generations, {run.n_simulations} simulations, "
          f"{run.seconds / 60:.1f} min on {run.workers} worker(s); final epsilon {float(post['epsilon'][-1]):.3g}",
          file=stream)
    print(f"{'parameter':38s} {'unit':10s} {'median':>10s} {'90% CrI':>23s}  prior", file=stream)
    for r in rows:
        print(f"{r['parameter']:38s} {r['unit']:10s} {float(r['median']):10.4g} "
              f"[{float(r['q05']):9.4g}, {float(r['q95']):9.4g}]  [{r['prior_lo']}, {r['prior_hi']}]", file=stream)
    print_predictive_check(ppc_post, stream)
    print(f"\nwrote {out}/ ({', '.join(RESULT_FILES)}) in {total / 60:.1f} min", file=stream, flush=True)
    return CalibrationResult(out, post, ppc_post, ppc_prior, run.seconds, total, run.n_simulations, run.workers)
