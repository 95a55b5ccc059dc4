"""``nksim score [--model M] [--roles ...] [--replicates N] [--seed S] [--workers N] [--out DIR] [--markdown]``.

Scores the trial registry (``calibration/data/trials/``) against a model
(:func:`nksim.calibration.scoring.score_registry`).
Named ``score`` rather than ``validate``: it scores calibration targets as well as held-out rows, and
"validate" already means checking inputs everywhere else in nksim.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ..argtypes import SEED_LIMIT, int_at_least, positive_int

_seed = int_at_least(0, "non-negative integer seed", below=SEED_LIMIT)

#: What ``nksim score`` writes into ``--out``.
SCORE_FILES = ("scores.nc", "scores.csv", "scores.md")


def add_score_parser(sub) -> None:
    """Add the ``score`` subcommand and its options to the ``sub`` subparsers."""
    from .registry import ROLES
    from .scoring import DEFAULT_SEED, RESOLUTIONS

    p = sub.add_parser(
        "score", help="score the trial registry against a model: every target inside its 90 %% predictive interval? "
                      "every held-out row by its declared rule (DIR/scores.nc, .csv, .md)",
        description="Simulate every protocol of the trial registry (calibration/data/trials/) once, at the "
                    "calibration resolution, and score each row: targets inside their 90 %% predictive interval, "
                    "held-out rows by the check declared before any fit (calibration/data/trials/README.md), "
                    "context rows reported only. Writes DIR/scores.nc, scores.csv and scores.md and prints the table "
                    "and a summary line. Results do not depend on --workers.")
    p.add_argument("--model", default="default", help="parameter set name in models/ or a TOML path (default: default)")
    p.add_argument("--registry", type=Path, default=None,
                   help="registry folder of trial TOML files (default: the shipped calibration/data/trials)")
    p.add_argument("--roles", nargs="+", choices=ROLES, default=["target", "held_out"],
                   help="rows to report (default: target held_out; context rows are shown, not scored)")
    p.add_argument("--replicates", type=positive_int, default=50, help="virtual trials per protocol (default 50)")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="calibration",
                   help="lattice resolution (default: calibration, 5 x 5 voxels of 3.2 mm)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="threads running simulations (default 1); results do not depend on it")
    p.add_argument("--out", type=Path, default=Path("outputs/registry_scores"),
                   help="output folder (default outputs/registry_scores)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (as written to scores.md)")
    p.add_argument("--overwrite", action="store_true", help="replace scores.nc/.csv/.md already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _stage(path: Path, text: str) -> str:
    """``text`` in a temporary file next to ``path`` (renamed into place once everything is written)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_scores(ds, out: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write scores.nc, scores.csv and scores.md into ``out``, each atomically, none until all are ready.

    The text files are staged as temporary files first, then scores.nc is written (atomically,
    :func:`nksim.io.write_netcdf`), then the text files are renamed into place: a failure or an
    interruption before that leaves the files of an earlier run as they were.
    """
    from ..io import write_netcdf
    from .scoring import scores_csv, scores_markdown, scores_summary

    paths = {name: out / name for name in SCORE_FILES}
    md = (f"# Trial registry scores\n\nModel `{ds.attrs['parameter_set']}` ({ds.attrs['parameter_status']}), "
          f"nksim {ds.attrs['nksim_version']}, {ds.attrs['replicates']} virtual trials per protocol, seed "
          f"{ds.attrs['seed']}, {ds.attrs['resolution']} resolution.\n\n{scores_summary(ds)}.\n\n"
          f"{scores_markdown(ds)}\n")
    staged: dict[str, str] = {}
    try:
        staged["scores.csv"] = _stage(paths["scores.csv"], scores_csv(ds))
        staged["scores.md"] = _stage(paths["scores.md"], md)
        write_netcdf(ds, paths["scores.nc"], overwrite=overwrite)
        for name, tmp in staged.items():
            os.replace(tmp, paths[name])
    finally:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)
    return paths


def cmd_score(args: argparse.Namespace) -> int:
    """Run ``nksim score`` for parsed ``args``; returns the exit code (0)."""
    from ..errors import NksimWriteError
    from ..fileio import check_output_folder
    from ..interrupts import interruption_keeps, raise_if_signalled
    from ..io.lock import output_lock
    from ..parameters import load_parameters
    from .registry import load_registry
    from .scoring import score_registry, scores_markdown, scores_summary, scores_text

    params = load_parameters(args.model)  # every input is checked before the lock and any simulation
    registry = load_registry(args.registry)
    out = args.out
    with output_lock(out, "nksim score"):  # one writer per --out, from the checks to the last file
        check_output_folder(out, SCORE_FILES, args.overwrite)
        unchanged = "nothing written" + (f"; the files already in {out} are unchanged"
                                         if any((out / n).exists() for n in SCORE_FILES) else "")
        with interruption_keeps(unchanged):
            ds = score_registry(params, registry, roles=tuple(args.roles), replicates=args.replicates,
                                seed=args.seed, resolution=args.resolution, workers=args.workers,
                                progress=not args.no_progress)
            raise_if_signalled()
            try:
                paths = write_scores(ds, out, overwrite=args.overwrite)
            except OSError as exc:
                raise NksimWriteError(f"cannot write the scores into {out}: {exc.strerror or exc}; "
                                      f"{unchanged}") from None
    print(f"trial registry {ds.attrs['registry']} scored against parameters {ds.attrs['parameter_set']} "
          f"({ds.attrs['parameter_status']}): {ds.attrs['replicates']} virtual trials per protocol, seed "
          f"{ds.attrs['seed']}, {ds.attrs['resolution']} resolution, {ds.attrs['wall_time_s']:.1f} s")
    print(scores_markdown(ds) if args.markdown else scores_text(ds))
    print(f"\n{scores_summary(ds)}")
    print("\n" + "\n".join(f"wrote {p}" for p in paths.values()))
    return 0
