"""Score Bednarski's FLAG arm under the fourth joint posterior with the model's cytarabine (issue 26).

    python calibration/flag_cytarabine/score_bednarski.py [--workers 2]

The same 50 posterior draws, seed and resolution as ``calibration/joint/run_joint.py``'s registry
scores (``nksim.calibration.joint_run``), only the rows of the ``bednarski2022_tolerant`` arm, with the
protocol's FLAG now including its cytarabine (2 g m-2 on days -22..-18) and ``blasts.cytarabine_log_kill``
at its default (``calibration/flag_cytarabine/results.json``); ``--log-kill 0`` gives the rows without it.
Writes ``bednarski_scores.csv`` beside this file.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARM = "bednarski2022_tolerant"


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from nksim.calibration.joint_spec import load_joint_spec
    from nksim.calibration.registry import load_registry
    from nksim.calibration.scoring import score_registry
    from nksim.parameters import load_parameters

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--log-kill", type=float, default=None, help="blasts.cytarabine_log_kill (default: the model's)")
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--out", type=Path, default=HERE / "bednarski_scores.csv")
    args = ap.parse_args(argv)
    spec = load_joint_spec(ROOT / "calibration" / "joint" / "joint.toml")
    theta = pd.read_csv(ROOT / "calibration" / "joint" / "results" / "posterior_draws.csv")
    base = load_parameters(spec.model)
    extra = {} if args.log_kill is None else {"blasts.cytarabine_log_kill": args.log_kill}
    sel = np.random.default_rng(args.seed + 4).choice(len(theta), min(args.draws, len(theta)), replace=False)
    sets = [base.with_values({**{k: float(theta[k].iloc[i]) for k in theta.columns}, **extra},
                             origin=f"joint posterior draw {i}") for i in sel]
    reg = load_registry()
    reg = replace(reg, arms=tuple(a for a in reg.arms if a.id == ARM),
                  observations=tuple(o for o in reg.observations if o.arm == ARM))
    sc = score_registry(sets, reg, roles=("held_out",), replicates=args.draws, seed=args.seed,
                        lattice_overrides=spec.lattice_overrides, workers=args.workers, progress=False)
    cols = ["observed", "simulated_median", "simulated_lo", "simulated_hi", "verdict"]
    table = sc[cols].to_dataframe()
    table["log_kill"] = sets[0]["blasts.cytarabine_log_kill"]
    table.to_csv(args.out)
    print(table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
