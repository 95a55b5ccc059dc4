"""The twin's check on synthetic patients (issue 28): coverage of parameters and predictions, regret, flags.

    python experiments/twin/run_check.py            # 100 synthetic patients, bank of 16000 (~1.5 min on 2 cores)
    python experiments/twin/run_check.py --n 200 --seed 2
    python experiments/twin/run_check.py --fallback # the ABC-SMC fallback on 40 thin-bank patients (~4 min)

Uses experiments/twin/example.toml (its observation template: the example patient's days,
quantities and detection limits) at a 4 x 4 lattice, three candidates (no further infusion, a
second infusion of 5e6 kg-1 from the same donor on day 7 or 14), and writes
``results/check.json`` beside this file (``nksim.twin.check.coverage_study``).

``--fallback``: synthetic patients whose data leave a bank of 2000 (400 draws x 5 patients) an
effective sample size below 20 are conditioned by the bank's weights and by the patient-level
ABC-SMC; coverage of both (``nksim.twin.check.fallback_study``), in ``results/fallback_check.json``.
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
#: The fallback check's bank: many draws (the ABC-SMC's pool), few patients each, so that it is often thin.
FALLBACK_OVERRIDES = [*OVERRIDES[2:], "twin.bank.draws=400", "twin.bank.max_draws=400", "twin.bank.patients=5"]


def main(argv: list[str] | None = None) -> int:
    from nksim import __version__
    from nksim.twin.check import coverage_study, fallback_study
    from nksim.twin.spec import load_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fallback", action="store_true", help="check the ABC-SMC fallback on thin-bank patients")
    ap.add_argument("--patients", type=int, default=40, help="--fallback: thin-bank patients to find")
    ap.add_argument("--out", type=Path, default=None, help="default results/check.json (fallback_check.json)")
    args = ap.parse_args(argv)
    overrides = FALLBACK_OVERRIDES if args.fallback else OVERRIDES
    spec = load_spec(HERE / "example.toml", overrides)
    t = time.time()
    if args.fallback:
        r = fallback_study(spec, screened=5 * args.patients, max_patients=args.patients, candidates=(0, 1),
                           workers=args.workers, seed=args.seed)
    else:
        r = coverage_study(spec, args.n, workers=args.workers, seed=args.seed)
    r.update({"seconds": round(time.time() - t, 1), "nksim_version": __version__, "seed": args.seed,
              "overrides": overrides})
    args.out = args.out or HERE / "results" / ("fallback_check.json" if args.fallback else "check.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in r.items() if k != "parameter_coverage_each"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
