"""Set ``blasts.cytarabine_log_kill`` from FLAG alone in relapsed AML (external series, not a registry row).

    python calibration/flag_cytarabine/fit_log_kill.py [--patients 200] [--workers 2]

The model's relapsed/refractory population (``models/default.toml``; children's body size as in
Bednarski's protocol: 40 kg, 1.3 m2) receives FLAG alone -- fludarabine 30 mg m-2 and cytarabine
2 g m-2 on days 0-4 -- and no NK cell (a protocol needs an infusion: 1 cell per kg on day 7), and is
assessed 35 days after FLAG started (after count recovery, as the series assess CR). For each log kill
on a grid, the share in CR (marrow blasts < 5 %) with common random numbers across the grid; the
value where the share crosses the target is the default, the values at the range's ends its prior.

Target (external FLAG series in relapsed AML of children; the registry's Bednarski rows are NOT used):
* Fleischhack et al. 1998, Br J Haematol (doi:10.1046/j.1365-2141.1998.00836.x): IDA-FLAG or FLAG,
  17 of 23 in CR (74 %; idarubicin adds to FLAG, so an upper end);
* Xu et al. 2010 (doi:10.3969/j.issn.1672-1535.2010.03.019): FLAG (cytarabine 2 g m-2 x 5 days),
  57 % CR in its AML patients (6 patients; abstract only).
Target 60 % (range 50-74 %): "about half or more".

Writes ``results.json`` beside this file. ``--joint-posterior``: instead of the grid, the CR share of FLAG
alone at the model's log kill with every virtual patient her own draw of the fourth joint posterior
(``calibration/joint/results/posterior_draws.csv``; the drug sensitivities there differ from the default
model's), written to ``joint_posterior.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0)
TARGET, LOW, HIGH = 0.60, 0.50, 0.74
ASSESS_AFTER_FLAG = 35


def flag_alone_protocol(patients: int):
    """FLAG alone (no NK effect) for ``patients`` virtual children; assessment 35 days after FLAG started."""
    from nksim.protocol import protocol_from_dict

    events = []
    for d in range(5):
        events.append({"day": d - 7, "kind": "fludarabine", "dose": 30.0, "unit": "mg m-2"})
        events.append({"day": d - 7, "kind": "cytarabine", "dose": 2000.0, "unit": "mg m-2"})
    events.append({"day": 0, "kind": "nk_infusion", "dose": 1.0, "unit": "kg-1"})
    cov = {"body_weight": {"value": 40.0, "unit": "kg"}, "body_surface_area": {"value": 1.3, "unit": "m2"}}
    return protocol_from_dict({
        "protocol": {"name": "flag_alone", "title": "FLAG alone (fit of blasts.cytarabine_log_kill)",
                     "start_day": -7, "end_day": ASSESS_AFTER_FLAG - 7,
                     "assessment_days": [ASSESS_AFTER_FLAG - 7], "infusions_after_lymphodepletion": True,
                     "nk_product": "fresh"},
        "events": events,
        "patients": [{"id": f"f{i:03d}", "group": "all", **cov} for i in range(patients)],
    }, source="flag_alone")


def main(argv: list[str] | None = None) -> int:
    from nksim import __version__
    from nksim.engine import layout as L
    from nksim.observables import response_thresholds
    from nksim.parameters import load_parameters
    from nksim.simulate import run_one
    from nksim.threads import ordered_thread_map

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--joint-posterior", action="store_true", help="FLAG alone under the joint posterior's draws")
    args = ap.parse_args(argv)
    t0 = time.time()
    proto = flag_alone_protocol(args.patients)
    base = load_parameters("default")
    th = response_thresholds(base)
    if args.joint_posterior:
        import pandas as pd

        draws = pd.read_csv(HERE.parent / "joint" / "results" / "posterior_draws.csv")
        pick = np.random.default_rng(args.seed).choice(len(draws), args.patients, replace=len(draws) < args.patients)
        sets = [base.with_values({k: float(draws[k].iloc[i]) for k in draws.columns}) for i in pick]

        def own(i):
            b = run_one(sets[i], proto, proto.patients[i], args.seed, 0).rec[:, L.R.marrow_blast_pct]
            return float(b[-1] < th["cr_blast_pct"])

        cr = np.array(ordered_thread_map(own, range(args.patients), args.workers))
        out = {"log_kill": base["blasts.cytarabine_log_kill"], "cr_share": float(cr.mean()),
               "patients": args.patients, "seed": args.seed, "posterior": "calibration/joint/results",
               "assessed_days_after_flag": ASSESS_AFTER_FLAG, "nksim_version": __version__,
               "seconds": round(time.time() - t0, 1)}
        (HERE / "joint_posterior.json").write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
        return 0
    rows = []
    for k in GRID:
        params = base.with_values({"blasts.cytarabine_log_kill": k})

        def one(p, params=params):
            run = run_one(params, proto, p, args.seed, 0)
            b = run.rec[:, L.R.marrow_blast_pct]
            return float(b[-1] < th["cr_blast_pct"]), float(b[0]), float(b[-1])

        res = np.array(ordered_thread_map(one, list(proto.patients), args.workers))
        rows.append({"log_kill": k, "cr_share": float(res[:, 0].mean()),
                     "median_blasts_end": float(np.median(res[:, 2])),
                     "median_blasts_start": float(np.median(res[:, 1]))})
        print(f"k = {k:.2f} m2 g-1: CR {100 * rows[-1]['cr_share']:.0f} %", flush=True)
    ks = np.array([r["log_kill"] for r in rows])
    cr = np.array([r["cr_share"] for r in rows])

    def crossing(level: float) -> float | None:
        above = np.flatnonzero(cr >= level)
        if not above.size:
            return None
        i = int(above[0])
        if i == 0:
            return float(ks[0])
        return float(np.interp(level, cr[i - 1:i + 1], ks[i - 1:i + 1]))

    out = {"grid": rows, "target": TARGET, "range": [LOW, HIGH], "log_kill_at_target": crossing(TARGET),
           "log_kill_at_range": [crossing(LOW), crossing(HIGH)], "patients": args.patients, "seed": args.seed,
           "assessed_days_after_flag": ASSESS_AFTER_FLAG, "nksim_version": __version__,
           "seconds": round(time.time() - t0, 1)}
    (HERE / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "grid"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
