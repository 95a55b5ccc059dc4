"""Run the joint calibration across trials from the bank: ``python calibration/joint/run_joint.py``.

Reads ``calibration/joint/joint.toml`` and the bank in ``outputs/joint/bank/`` (made by
``run_bank.py``; a bank still being built is used as far as its finished parts go), and writes
the posterior, the posterior predictive check, the trial's outcome table under the joint
posterior (with stage A's draws), the recovery study and ``REPORT.md`` into
``calibration/joint/results/`` (nksim.calibration.joint_run).
"""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from nksim.calibration.joint_run import run_joint
from nksim.calibration.joint_spec import load_joint_spec

HERE = Path(__file__).resolve().parent
#: run_joint's own defaults (the draw and dataset counts): the options below take them, not copies of them.
DEFAULTS = {k: p.default for k, p in inspect.signature(run_joint).parameters.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--bank", default=str(HERE.parents[1] / "outputs" / "joint" / "bank"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--ppc-draws", type=int, default=DEFAULTS["ppc_draws"],
                    help="posterior draws (one virtual trial of each target's published size each) for the "
                         "predictive check; 200 (40 until the seventh fit, whose 90 %% intervals were the 2nd and "
                         "39th of 40 values)")
    ap.add_argument("--recovery-datasets", type=int, default=DEFAULTS["recovery_datasets"])
    ap.add_argument("--score-draws", type=int, default=DEFAULTS["score_draws"],
                    help="posterior draws (one virtual trial each) to score every registry row with; 0: skip. 200 "
                         "(50 until the seventh fit, whose verdicts at the held-out threshold moved with the seed)")
    ap.add_argument("--table-config", default=str(HERE.parent / "ahmadvand2023.toml"),
                    help="stage A's calibration config: its outcome table is simulated at the joint posterior "
                         "draws ('none': skip)")
    ap.add_argument("--table-posterior", default=str(HERE.parent / "posterior" / "posterior.nc"),
                    help="stage A's posterior (its draws fill the parameters the joint fit does not fit)")
    ap.add_argument("--table-draws", type=int, default=DEFAULTS["table_draws"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    table = None if args.table_config == "none" else (args.table_config, args.table_posterior)
    run_joint(load_joint_spec(args.spec), args.bank, args.out, ppc_draws=args.ppc_draws,
              recovery_datasets=args.recovery_datasets, score_draws=args.score_draws, workers=args.workers,
              outcome_table=table, table_draws=args.table_draws)


if __name__ == "__main__":
    main()
