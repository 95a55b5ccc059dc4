"""Run the joint calibration across trials from the bank: ``python calibration/joint/run_joint.py``.

Reads ``calibration/joint/joint.toml`` and the bank in ``outputs/joint/bank/`` (made by
``run_bank.py``; a bank still being built is used as far as its finished parts go), and writes
the posterior, the posterior predictive check, the recovery study and ``REPORT.md`` into
``calibration/joint/results/`` (nksim.calibration.joint_run).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nksim.calibration.joint_run import run_joint
from nksim.calibration.joint_spec import load_joint_spec

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--bank", default=str(HERE.parents[1] / "outputs" / "joint" / "bank"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--ppc-draws", type=int, default=40)
    ap.add_argument("--recovery-datasets", type=int, default=30)
    ap.add_argument("--score-draws", type=int, default=50,
                    help="posterior draws (one virtual trial each) to score every registry row with; 0: skip")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    run_joint(load_joint_spec(args.spec), args.bank, args.out, ppc_draws=args.ppc_draws,
              recovery_datasets=args.recovery_datasets, score_draws=args.score_draws, workers=args.workers)


if __name__ == "__main__":
    main()
