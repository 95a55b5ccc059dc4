"""The twin's check on synthetic patients (issue 28): coverage of parameters and predictions, regret, flags.

    python experiments/twin/run_check.py            # 100 synthetic patients, bank of 16000 (~1.5 min on 2 cores)
    python experiments/twin/run_check.py --n 200 --seed 2

Uses experiments/twin/example.toml (its observation template: the example patient's days,
quantities and detection limits) at a 4 x 4 lattice, three candidates (no further infusion, a
second infusion of 5e6 kg-1 from the same donor on day 7 or 14), and writes
``results/check.json`` beside this file (``nksim.twin.check.coverage_study``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The check's settings: the example's bank size, a small lattice, three candidates.
OVERRIDES = ["twin.bank.draws=800", "twin.bank.patients=20", "parameters.lattice.side=4",
             "twin.decision.days=[7, 14]", "twin.decision.doses=[5e6]", 'twin.decision.donors=["same"]']


def main(argv: list[str] | None = None) -> int:
    from nksim import __version__
    from nksim.twin.check import coverage_study
    from nksim.twin.spec import load_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "check.json")
    args = ap.parse_args(argv)
    spec = load_spec(HERE / "example.toml", OVERRIDES)
    t = time.time()
    r = coverage_study(spec, args.n, workers=args.workers, seed=args.seed)
    r.update({"seconds": round(time.time() - t, 1), "nksim_version": __version__, "seed": args.seed,
              "overrides": OVERRIDES})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in r.items() if k != "parameter_coverage_each"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
