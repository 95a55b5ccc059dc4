"""Combine the two stages of the calibration into calibration/posterior/ (nksim 0.4.0).

    # stage B:
    nksim calibrate calibration/ahmadvand2023.toml --workers 2 --out outputs/calibration/ahmadvand2023
    # put stage B's medians into the model (stage A holds the other parameters there): the
    # apply_to_model call of calibration/README.md ("Reproduce")
    # stage A:
    nksim calibrate calibration/ahmadvand2023_kinetics.toml --workers 2 --out outputs/calibration/kinetics
    python calibration/two_stage.py outputs/calibration/kinetics outputs/calibration/ahmadvand2023 \
        --out outputs/calibration/two_stage --workers 2 --apply-to models/default.toml

Writes posterior.nc (stage A's population of the blast kinetics paired with stage B's marginal
posterior of the rest), posterior_summary.csv, the predictive checks and figures (simulated with
the stage-B config: every summary, one virtual trial per draw). See nksim.calibration.stages.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nksim.calibration.posterior import apply_to_model
from nksim.calibration.stages import write_two_stage

HERE = Path(__file__).resolve().parent
PROVENANCE = "calibrated (ahmadvand2023, two-stage, calibration/posterior/posterior_summary.csv)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage_a", type=Path, help="output folder of the stage-A calibration (blast kinetics)")
    ap.add_argument("stage_b", type=Path, help="output folder of the stage-B calibration (all parameters)")
    ap.add_argument("--config", type=Path, default=HERE / "ahmadvand2023.toml", help="stage-B config")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--apply-to", type=Path, default=None, help="model TOML to write the posterior medians into")
    args = ap.parse_args()
    write_two_stage(args.stage_a, args.stage_b, args.config, args.out, workers=args.workers,
                    overwrite=args.overwrite)
    if args.apply_to is not None:
        changed = apply_to_model(args.out / "posterior_summary.csv", args.apply_to,
                                 provenance=PROVENANCE)
        print(f"updated {len(changed)} values in {args.apply_to}")


if __name__ == "__main__":
    main()
