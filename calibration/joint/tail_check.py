"""Where does an observed share fall in its posterior predictive distribution? A precise check of one target row.

``python calibration/joint/tail_check.py bachanova_il2dt_cr [--draws 1000] [--workers 2]``

The predictive check of ``run_joint.py`` simulates 200 posterior draws, one virtual trial of the row's
published size each, and calls the row inside when the observed count lies between the 5th and 95th
percentiles of those 200 counts. For a row at the edge of its interval that verdict is Monte Carlo: the
95th percentile of 200 counts moves by a patient from one set of draws to the next. This script simulates
``--draws`` posterior draws (fresh ones, other seeds: ``derived_seed(seed, "tail:<row>:<i>")``), one virtual
trial of the published size each, exactly as the predictive check does, and reports the upper and lower
tail probabilities P(X >= k) and P(X <= k) of the observed count k with exact (Clopper-Pearson) 95 %
intervals: the row lies inside the central 90 % predictive interval when both exceed 5 %
(``verdict_monte_carlo``: the smaller one's interval still contains 5 %, so more draws are needed). Writes
``tail_<row>.json`` into ``--out`` (default ``calibration/joint/results``; an existing one is refused before any
simulation unless ``--overwrite``, and the file is written atomically) and prints it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nksim.calibration.joint_run import predictive_tails, simulate_predictive
from nksim.calibration.joint_spec import load_joint_spec
from nksim.calibration.registry import clopper_pearson, load_registry
from nksim.calibration.scoring import derived_seed
from nksim.errors import NksimInputError
from nksim.fileio import check_output_folder, shown_path, write_atomic
from nksim.io import open_output

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("row", help="a share row of the registry that the spec fits or reports (e.g. bachanova_il2dt_cr)")
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--posterior", default=None, help="posterior.nc (default: <out>/posterior.nc)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--draws", type=int, default=1000, help="posterior draws, one virtual trial each (default 1000)")
    ap.add_argument("--seed", type=int, default=None, help="default: the spec's seed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true",
                    help="replace tail_<row>.json already in --out (refused otherwise)")
    args = ap.parse_args(argv)
    spec = load_joint_spec(args.spec)
    try:
        row = load_registry().observation(args.row)
    except KeyError as e:
        raise NksimInputError(str(e.args[0]), source="tail_check", key="row") from None
    if not row.is_share or not row.has_counterpart:
        raise NksimInputError(f"not a simulated share row of the registry: {args.row!r}", source="tail_check",
                              key="row")
    out = Path(args.out)
    post_path = Path(args.posterior) if args.posterior else out / "posterior.nc"
    theta = open_output(post_path)["theta"].values
    if args.draws < 1 or args.draws > theta.shape[0]:
        raise NksimInputError(f"--draws must be in [1, {theta.shape[0]}] (the posterior's draws), got {args.draws}",
                              source="tail_check", key="draws")
    check_output_folder(out, (f"tail_{row.name}.json",), args.overwrite)  # before any simulation
    seed = spec.seed if args.seed is None else args.seed
    idx = np.random.default_rng(derived_seed(seed, f"tail:{row.name}")).choice(theta.shape[0], args.draws,
                                                                                replace=False)
    sims = simulate_predictive(spec, [row], theta[idx], seed=seed, workers=args.workers, tag=f"tail:{row.name}")
    k_sim = np.asarray([s[row.name][0] for s in sims], dtype=int)
    n = args.draws
    upper, lower = int((k_sim >= row.k).sum()), int((k_sim <= row.k).sum())
    tails = predictive_tails(k_sim, row.k)  # the predictive check's verdict and whether these draws settle it
    q05, q50, q95 = (int(v) for v in np.quantile(k_sim, [0.05, 0.5, 0.95], method="inverted_cdf"))

    def shown(path: str | Path) -> str:  # relative to the repository when inside it
        return shown_path(path, HERE.parents[1])

    res = {
        "row": row.name, "observed": f"{row.k}/{row.n}", "spec": shown(args.spec), "posterior": shown(post_path),
        "draws": n, "seed": seed,
        "p_at_least_observed": upper / n, "p_at_least_observed_95ci": clopper_pearson(upper, n),
        "p_at_most_observed": lower / n, "p_at_most_observed_95ci": clopper_pearson(lower, n),
        "simulated_count_q05_q50_q95": [q05, q50, q95],
        "counts": np.bincount(k_sim, minlength=row.n + 1).tolist(),
        "inside_90": bool(tails["tail"] > 0.05),
        "verdict_monte_carlo": tails["monte_carlo"],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"tail_{row.name}.json", json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
