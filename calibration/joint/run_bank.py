"""Simulate (or complete) the joint calibration's bank: ``python calibration/joint/run_bank.py [--workers 2]``.

Reads ``calibration/joint/joint.toml`` and writes parts into ``outputs/joint/bank/`` (git-ignored;
an interrupted run keeps its finished parts and the same command continues it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nksim.calibration.bank import run_bank
from nksim.calibration.joint_spec import load_joint_spec

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--out", default=str(HERE.parents[1] / "outputs" / "joint" / "bank"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--upto", type=int, default=None,
                    help="simulate only the parts of the first UPTO points now (the same command completes the rest)")
    args = ap.parse_args()
    spec = load_joint_spec(args.spec)
    run_bank(args.out, spec.model, parameters=spec.parameters, points=spec.points, replicates=spec.replicates,
             seed=spec.seed, chunk=spec.chunk, workers=args.workers, lattice_overrides=spec.lattice_overrides,
             roles=spec.roles, upto=args.upto)


if __name__ == "__main__":
    main()
