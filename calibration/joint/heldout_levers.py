"""Why does a held-out row disagree? How much of the posterior meets its rule, and which parameters would move it.

``python calibration/joint/heldout_levers.py [ROW ...] [--draws 500] [--workers 2]``

For each held-out row (default: every held-out row that disagrees in ``<out>/scores.nc``) the script simulates
``--draws`` posterior draws of the joint fit, one virtual trial each, with the scorer's own machinery
(:func:`nksim.calibration.scoring.simulate_draws`: virtual trial ``r`` of every protocol uses draw ``r``, so rows of
different protocols are paired by draw; seeds ``derived_seed(seed, "levers:protocol:<P>")``, not the scorer's) and
reports

* ``verdict``, ``median_over_draws``, ``median_lo``/``median_hi``, ``monte_carlo``: the scorer's verdict on these
  draws, the simulated median with its 95 % interval and whether the verdict is still Monte Carlo
  (:func:`nksim.calibration.scoring.monte_carlo`). A row that ``run_joint.py``'s 200-draw scores mark Monte Carlo is
  settled by this script with ``--draws 1000`` (``docs/validation.md``, "Definitions and agreement rules");

* ``p_rule``: the share of draws whose own virtual trial meets the row's declared rule (the score applies the rule
  to the median over draws): the statistic within the factor or range, at least/most the bound, above/below it;
  for ``higher``/``lower`` the paired comparison with the ``versus`` row at the same draw. For a ``binomial_90``
  row (a share of ``n`` patients) ``p_rule`` is the smaller predictive tail of the observed count,
  ``min(P(X <= k), P(X >= k))`` with ``X`` the scorer's beta-binomial count of a trial of ``n``
  (:func:`nksim.calibration.registry.share_tail_between_trials`: the row agrees exactly when it exceeds 5 %; a
  mixture of binomials of ``n`` at each draw's simulated share, this script's first version, counted the patients'
  binomial noise twice);
* for each fitted parameter, ``rho``: the partial rank correlation (PRCC; Marino et al. 2008 J Theor Biol 254:178)
  of the row's per-draw statistic with the parameter's unit-cube coordinate, controlling for every other fitted
  parameter; and ``width``: its 90 % posterior interval as a share of the prior's (``posterior.csv``): a lever with
  a large ``|rho|`` and a width near 1 is one that no fitted target pins.

A small ``p_rule`` (a few per cent) says the model cannot meet the rule anywhere the targets allow (a missing
mechanism or a different observable); a large one (a third or more) that the rule is met in a sizeable part of the
posterior and the miss is where the unidentified levers happen to sit. Writes ``heldout_levers.csv`` (one line per
row and parameter) and ``heldout_levers.json`` (per-draw statistics) into ``--out`` (default
``calibration/joint/results``; files already there are refused before any simulation unless ``--overwrite``, and
written atomically) and prints each row's ``p_rule`` and leading levers.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from nksim.calibration.joint_spec import load_joint_spec
from nksim.calibration.registry import (
    group_by_protocol,
    load_registry,
    median_interval,
    predictive_interval,
    share_tail_between_trials,
    simulated_per_patient,
    simulated_per_trial,
)
from nksim.calibration.scoring import (
    LEVEL,
    MEDIAN_LEVEL,
    derived_seed,
    monte_carlo,
    protocol_run,
    resolution_params,
    simulate_draws,
    verdict,
)
from nksim.errors import NksimInputError
from nksim.fileio import check_output_folder, shown_path, write_atomic
from nksim.io import open_output

HERE = Path(__file__).resolve().parent


def partial_rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PRCC of ``y`` (n,) with each column of ``x`` (n, p): rank-transform, regress out the other columns, correlate.

    Rows with a non-finite ``y`` are dropped first; NaN for every column when fewer than ``p + 3`` rows remain, and
    for a column without spread.
    """
    keep = np.isfinite(y)
    x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
    n, p = x.shape
    if n < p + 3:
        return np.full(p, math.nan)
    rx = np.column_stack([stats.rankdata(x[:, j]) for j in range(p)])
    ry = stats.rankdata(y)
    out = np.full(p, math.nan)
    for j in range(p):
        others = np.column_stack([np.ones(n), np.delete(rx, j, axis=1)])
        ex = rx[:, j] - others @ np.linalg.lstsq(others, rx[:, j], rcond=None)[0]
        ey = ry - others @ np.linalg.lstsq(others, ry, rcond=None)[0]
        den = math.sqrt(float(ex @ ex) * float(ey @ ey))
        out[j] = float(ex @ ey) / den if den > 1e-12 else math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="*", help="held-out rows (default: those that disagree in <out>/scores.nc)")
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--posterior", default=None, help="posterior.nc (default: <out>/posterior.nc)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--draws", type=int, default=500, help="posterior draws, one virtual trial each (default 500)")
    ap.add_argument("--seed", type=int, default=None, help="default: the spec's seed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true",
                    help="replace heldout_levers.csv/.json already in --out (refused otherwise)")
    args = ap.parse_args(argv)
    spec = load_joint_spec(args.spec)
    reg = load_registry()
    out = Path(args.out)
    post = open_output(Path(args.posterior) if args.posterior else out / "posterior.nc")
    theta, u = post["theta"].values, post["u"].values
    names = [str(k) for k in post["parameter"].values]
    if names != [f.key for f in spec.parameters]:
        raise NksimInputError("the posterior's parameters differ from the spec's fit.parameters", source=args.spec,
                              key="fit.parameters")
    if not 1 <= args.draws <= theta.shape[0]:
        raise NksimInputError(f"--draws must be in [1, {theta.shape[0]}] (the posterior's draws), got {args.draws}",
                              source="heldout_levers", key="draws")
    if args.rows:
        try:
            rows = [reg.observation(n) for n in args.rows]
        except KeyError as e:
            raise NksimInputError(str(e.args[0]), source="heldout_levers", key="rows") from None
    else:
        sc = open_output(out / "scores.nc")
        rows = [reg.observation(str(n)) for n, role, a in zip(sc["observation"].values, sc["role"].values,
                                                               sc["agrees"].values) if role == "held_out" and a == 0]
    bad = [o.name for o in rows if o.role != "held_out" or o.check in ("none", None) or not o.has_counterpart]
    if bad:
        raise NksimInputError(f"not simulated held-out rows with a check: {', '.join(bad)}", source="heldout_levers",
                              key="rows")
    check_output_folder(out, ("heldout_levers.csv", "heldout_levers.json"), args.overwrite)  # before computing
    seed = spec.seed if args.seed is None else args.seed
    idx = np.sort(np.random.default_rng(derived_seed(seed, "levers")).choice(theta.shape[0], args.draws,
                                                                            replace=False))
    base = resolution_params(spec.model, "calibration", spec.lattice_overrides)
    sets = [base.with_values({f.key: float(theta[i, j]) for j, f in enumerate(spec.parameters)},
                             origin=f"{base.origin} (joint posterior draw {i})") for i in idx]
    needed = {o.name: o for o in rows}
    for o in rows:
        if o.versus is not None:
            needed.setdefault(o.versus, reg.observation(o.versus))
    per_trial, flags, summary = {}, {}, {}
    for name, obs in group_by_protocol(list(needed.values())).items():
        proto, ids = protocol_run(name, obs)
        print(f"simulating {name}: {args.draws} draws", flush=True)
        ds = simulate_draws(sets, proto, args.draws, derived_seed(seed, f"levers:protocol:{name}"), ids, args.workers)
        for o in obs:   # the scorer's numbers from these draws (nksim.calibration.scoring.score_registry)
            per_trial[o.name] = simulated_per_trial(o, ds)
            if o.is_share:
                flags[o.name] = simulated_per_patient(o, ds)
            mint = ((math.nan, math.nan) if o.is_share and o.n is not None
                    else median_interval(per_trial[o.name], MEDIAN_LEVEL))
            summary[o.name] = (*predictive_interval(o, ds, level=LEVEL, between_trials=True), *mint)
        del ds
    width = {}
    if (out / "posterior.csv").exists():
        with (out / "posterior.csv").open() as fh:
            width = {r["parameter"]: float(r["width_share_of_prior"]) for r in csv.DictReader(fh)}
    lines = []
    for o in rows:
        y = per_trial[o.name]
        med, lo, hi, mlo, mhi = summary[o.name]
        vs = summary[o.versus] if o.versus is not None else None
        agrees, _ = verdict(o, med, lo, hi, versus_median=None if vs is None else vs[0])
        mc = monte_carlo(o, mlo, mhi, versus_interval=None if vs is None else (vs[3], vs[4]))
        if o.check == "binomial_90":
            p_rule = share_tail_between_trials(flags[o.name], int(o.k), int(o.n))
        else:
            v = per_trial.get(o.versus) if o.versus is not None else None   # paired: draw r in both
            p_rule = float(np.mean([bool(verdict(o, y[r], y[r], y[r], versus_median=None if v is None else v[r])[0])
                                    for r in range(y.size)]))
        finite = np.isfinite(y)
        rho = partial_rank_correlation(u[idx], y)
        for j, pname in enumerate(names):
            lines.append({"row": o.name, "check": o.check, "observed": o.value if o.value is not None else
                          (f"{o.k}/{o.n}" if o.k is not None else ""), "draws": int(args.draws),
                          "defined_draws": int(finite.sum()), "median_over_draws": med, "median_lo": mlo,
                          "median_hi": mhi, "verdict": "agrees" if agrees else "disagrees",
                          "monte_carlo": "" if mc is None else str(bool(mc)).lower(), "p_rule": p_rule,
                          "parameter": pname, "rho": rho[j], "width": width.get(pname, math.nan)})
        lead = sorted((j for j in range(len(names)) if math.isfinite(rho[j])), key=lambda j: -abs(rho[j]))[:4]
        print(f"{o.name} ({o.check}): {'agrees' if agrees else 'disagrees'}"
              f"{' (Monte Carlo)' if mc else ''} over these draws, median {med:.3g} [{mlo:.3g}, {mhi:.3g}]; "
              f"p_rule {100 * p_rule:.1f} % ({int(finite.sum())} of {args.draws} defined); levers: "
              + ", ".join(f"{names[j]} {rho[j]:+.2f} (width {width.get(names[j], math.nan):.2f})" for j in lead))
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(lines[0]))
    w.writeheader()
    w.writerows(lines)
    write_atomic(out / "heldout_levers.csv", buf.getvalue())
    write_atomic(out / "heldout_levers.json", json.dumps(
        {"spec": shown_path(args.spec), "seed": seed, "draw_index": idx.tolist(),
         "per_draw": {k: [None if not math.isfinite(v) else float(v) for v in x] for k, x in per_trial.items()}},
        indent=1))
    print(f"wrote {shown_path(out / 'heldout_levers.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
