"""What if held-out rows were targets? An exploratory fit with some held-out rows fitted (not a validation).

``python calibration/joint/whatif_split.py ROW [ROW ...] --bank-from outputs/joint/bank --out DIR``

The declared split (``calibration/data/trials/``, 2026-12-05) keeps every row that shows donor NK lost within two
weeks without cytokine out of the fit, and the joint posterior misses them (``docs/validation.md``, "What the
held-out criterion needs"). This script asks the model-adequacy question a different split would: with those rows
fitted beside the 16 targets, does one posterior put every fitted row inside its 90 % predictive interval, and
where does it move? It is **not** a held-out validation: the promoted rows were chosen after they were seen to
disagree, and the agreement of the remaining held-out rows under such a posterior tests another claim than the one
declared.

Steps (the library's own, nothing re-implemented): the registry is loaded and the named held-out rows get the
role ``target`` in memory (the files are untouched); the bank of ``--bank-from`` is copied to ``--bank`` with hard
links (its parts are never rewritten) and completed by :func:`nksim.calibration.bank.run_bank`, which simulates
only the promoted rows' protocols, at the same points and seeds, into a row supplement; then
:func:`nksim.calibration.joint_run.run_joint` fits, checks and scores exactly as ``run_joint.py`` does, into
``--out`` (refused if it already holds a fit, unless ``--overwrite``), which also gets ``whatif.json`` (the
promoted rows and the commands); ``REPORT.md`` gets a banner saying what it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import shutil
import sys
from pathlib import Path

from nksim.calibration.bank import run_bank
from nksim.calibration.joint_run import run_joint
from nksim.calibration.joint_spec import load_joint_spec
from nksim.calibration.registry import Registry, load_registry
from nksim.errors import NksimInputError
from nksim.fileio import check_output_folder, shown_path, write_atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULTS = {k: p.default for k, p in inspect.signature(run_joint).parameters.items()}
#: Files of a fit in ``--out`` that are never replaced without ``--overwrite``.
FIT_FILES = ("posterior.nc", "ppc.csv", "scores.nc", "summary.json", "REPORT.md", "whatif.json")


def promoted_registry(registry: Registry, rows: list[str]) -> Registry:
    """``registry`` with the held-out ``rows`` given the role ``target`` (in memory; refused for other rows)."""
    by_name = {o.name: o for o in registry.observations}
    bad = [r for r in rows if r not in by_name or by_name[r].role != "held_out" or not by_name[r].has_counterpart]
    if bad or not rows:
        raise NksimInputError(f"not simulated held-out rows of the registry: {', '.join(bad) or '(none given)'}",
                              source="whatif_split", key="rows")
    obs = tuple(dataclasses.replace(o, role="target") if o.name in rows else o for o in registry.observations)
    return dataclasses.replace(registry, observations=obs)


BANNER = ("> **Exploratory what-if, not a validation** (`calibration/joint/whatif_split.py`): the held-out rows {rows} "
          "are fitted here as targets, chosen after they were seen to disagree; the held-out agreement below is over "
          "the other rows and tests another claim than the declared split's (`docs/validation.md`).\n")


def mark_report(path: Path, rows: list[str]) -> None:
    """Put :data:`BANNER` under the title of the generated ``REPORT.md`` (once)."""
    text = path.read_text(encoding="utf-8")
    banner = BANNER.format(rows=", ".join(f"`{r}`" for r in rows))
    if banner in text:
        return
    head, sep, rest = text.partition("\n")
    write_atomic(path, f"{head}{sep}\n{banner}{rest}")


def copy_bank(src: Path, dest: Path) -> None:
    """Copy ``src``'s bank into ``dest`` with hard links (a copy where links are not possible).

    An existing ``dest`` is kept as it is (a resumed run).
    """
    if dest.exists():
        return
    if not (src / "bank.json").is_file():
        raise NksimInputError("holds no bank (bank.json missing)", source=src, key="bank-from")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=link)
    tmp.rename(dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help="held-out rows to fit as targets")
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--bank-from", default=str(ROOT / "outputs" / "joint" / "bank"))
    ap.add_argument("--bank", default=None, help="the completed bank (default: <bank-from>_whatif)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--upto", type=int, default=2048, help="bank points to use (default 2048, as the ninth fit)")
    ap.add_argument("--ppc-draws", type=int, default=DEFAULTS["ppc_draws"])
    ap.add_argument("--recovery-datasets", type=int, default=DEFAULTS["recovery_datasets"])
    ap.add_argument("--score-draws", type=int, default=DEFAULTS["score_draws"])
    ap.add_argument("--table", action="store_true", help="also simulate stage A's outcome table (slow)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    spec = load_joint_spec(args.spec)
    rows = list(dict.fromkeys(args.rows))
    registry = promoted_registry(load_registry(), rows)
    out = Path(args.out)
    check_output_folder(out, FIT_FILES, args.overwrite)
    src = Path(args.bank_from)
    bank = Path(args.bank) if args.bank else src.with_name(src.name + "_whatif")
    copy_bank(src, bank)
    run_bank(bank, spec.model, registry, parameters=spec.parameters, points=spec.points,
             replicates=spec.replicates, seed=spec.seed, chunk=spec.chunk, workers=args.workers,
             lattice_overrides=spec.lattice_overrides, roles=spec.roles, upto=args.upto)
    table = ((str(HERE.parent / "ahmadvand2023.toml"), str(HERE.parent / "posterior" / "posterior.nc"))
             if args.table else None)
    run_joint(spec, bank, out, registry=registry, ppc_draws=args.ppc_draws,
              recovery_datasets=args.recovery_datasets, score_draws=args.score_draws, workers=args.workers,
              outcome_table=table)
    mark_report(out / "REPORT.md", rows)
    record = {"promoted_rows": rows, "spec": shown_path(args.spec, ROOT),
              "bank_from": shown_path(src, ROOT), "bank": shown_path(bank, ROOT), "upto": args.upto,
              "argv": sys.argv[1:] if argv is None else list(argv),
              "note": "exploratory: held-out rows fitted as targets after they were seen to disagree; not a "
                      "held-out validation (docs/validation.md)"}
    write_atomic(out / "whatif.json", json.dumps(record, indent=1) + "\n")
    print(f"wrote {shown_path(out, ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
