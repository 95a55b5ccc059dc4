"""Whether the joint fit's bank resolution (40 um cell places) reproduces the calibration resolution (10 um).

Run from the repository root::

    python benchmarks/bank_resolution.py                    # default and high-potency models, 10 virtual trials
    python benchmarks/bank_resolution.py --trials 4 --models high_potency
    python benchmarks/bank_resolution.py --trials 20 --models default \
        --draws calibration/joint/results/posterior_draws.csv   # the joint posterior, trial t at draw t

The bank of the joint calibration (``calibration/joint/joint.toml``, ``[bank] cell_diameter``) runs the
calibration resolution's 16 mm x 16 mm marrow region (5 x 5 voxels of 3.2 mm) with cell places of
40 um instead of 10 um: 16 x fewer cell places, so 16 x fewer donor-NK agents each standing for 16 x
more cells (``scale``), at the same whole-body numbers. Every calibration target row is simulated at
both resolutions with the same seeds (same patients and random effects) and the script reports, per
row, the statistic pooled over the virtual trials at each resolution, their difference with its
binomial standard error (shares), and the CPU time per joint virtual trial at each resolution.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import pandas as pd
from _common import source_digest

from nksim.calibration.bank import row_statistic
from nksim.calibration.registry import load_registry, simulated_per_patient
from nksim.calibration.scoring import derived_seed, protocol_run, resolution_params
from nksim.simulate import simulate_cohort


def run(model: str, cell_diameter: float, trials: int, rows, draws: pd.DataFrame | None = None) -> dict:
    """Every row's statistic over ``trials`` virtual trials at ``cell_diameter``.

    With ``draws``, trial ``t`` is simulated with the parameters of draw ``t`` (a posterior predictive), else
    every trial with ``model``.
    """
    p = resolution_params(model, "calibration", {"lattice.cell_diameter": cell_diameter})
    by_protocol: dict[str, list] = {}
    for o in rows:
        by_protocol.setdefault(o.protocol, []).append(o)
    out = {"stat": {}, "n": {}, "cpu_s": 0.0}
    for name, obs in by_protocol.items():
        proto, ids = protocol_run(name, obs)
        t0 = time.process_time()
        if draws is None:
            runs = [simulate_cohort(p, proto, replicates=trials, seed=derived_seed(7, f"protocol:{name}"),
                                    patients=ids, workers=1)]
        else:
            runs = [simulate_cohort(p.with_values({k: float(v) for k, v in draws.iloc[t].items()},
                                                  origin=f"posterior draw {t}"),
                                    proto, replicates=1, seed=derived_seed(7 + t, f"protocol:{name}"), patients=ids,
                                    workers=1)
                    for t in range(trials)]
        out["cpu_s"] += time.process_time() - t0
        for o in obs:
            x = np.concatenate([simulated_per_patient(o, ds).ravel() for ds in runs])
            out["stat"][o.name] = row_statistic(o, x)
            out["n"][o.name] = int(sum(1 for v in x if v == v))
    out["cpu_s_per_trial"] = out["cpu_s"] / trials
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["default", "high_potency"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--draws", type=Path, default=None,
                    help="posterior draws (a CSV such as calibration/joint/results/posterior_draws.csv): virtual trial "
                         "t uses draw t, on top of each --models parameter set")
    args = ap.parse_args()
    rows = [o for o in load_registry().targets() if o.has_counterpart]
    draws = None if args.draws is None else pd.read_csv(args.draws).iloc[:args.trials]
    if draws is not None and len(draws) < args.trials:
        raise SystemExit(f"{args.draws}: {len(draws)} draws, fewer than --trials {args.trials}")
    result = {"trials": args.trials, "engine": source_digest(), "draws": str(args.draws or ""), "models": {}}
    for model in args.models:
        fine = run(model, 10.0, args.trials, rows, draws)
        coarse = run(model, 40.0, args.trials, rows, draws)
        print(f"\n{model}: CPU per joint virtual trial {fine['cpu_s_per_trial']:.2f} s (10 um) vs "
              f"{coarse['cpu_s_per_trial']:.2f} s (40 um) = {fine['cpu_s_per_trial'] / coarse['cpu_s_per_trial']:.1f}x")
        print(f"{'row':32s} {'10 um':>9s} {'40 um':>9s} {'diff':>8s} {'SE':>7s}")
        table = []
        for o in rows:
            a, b = fine["stat"][o.name], coarse["stat"][o.name]
            if o.is_share:
                na, nb = fine["n"][o.name], coarse["n"][o.name]
                se = math.sqrt(a * (1 - a) / max(na, 1) + b * (1 - b) / max(nb, 1))
                diff = b - a
            else:  # quantities: log10 ratio
                se = math.nan
                diff = math.log10(b / a) if a > 0 and b > 0 else math.nan
            table.append({"row": o.name, "fine": a, "coarse": b, "diff": diff, "se": se,
                          "scale": "share" if o.is_share else "log10 ratio"})
            print(f"{o.name:32s} {a:9.3g} {b:9.3g} {diff:8.3f} {se:7.3f}")
        result["models"][model] = {"cpu_s_per_trial_10um": fine["cpu_s_per_trial"],
                                   "cpu_s_per_trial_40um": coarse["cpu_s_per_trial"], "rows": table}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
