"""Per-cell NK killing that would make the registry's remissions at the trials' expansion rates: how much.

``python calibration/joint/killing_beyond_priors.py [--replicates 10]``

Bachanova 2014's Hi-Cy/Flu + IL-2 arm (fresh product; CR 5/19 and 4/23, expansion 4/42) simulated at the
bank's resolution (40 um cell places) with the parameters of the joint fit that holds the drugs' blast kill
at stage A's (``results_drug_at_stage_a/posterior.csv``, medians: NK potency already at the top of its
priors), then with the killing parameters pushed **beyond** their priors step by step. Nothing else
changes, so the expansion share stays where it is and the CR shares show what per-cell killing alone can
do. Writes ``results_second_fit/killing_beyond_priors.csv`` and prints it. Diagnostic for the next model change
(calibration/README.md, "Second joint fit"): not a fit, and the values beyond the priors have no source.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from nksim.calibration.joint_run import md_table
from nksim.calibration.registry import load_registry, simulated_per_patient
from nksim.calibration.scoring import protocol_run, resolution_params
from nksim.simulate import simulate_cohort

HERE = Path(__file__).resolve().parent
PROTOCOL = "bachanova2014_hi_cy_flu"
ROWS = ("bachanova_expansion_d14", "bachanova_cr_cohort1", "bachanova_cr_cohort2")
#: (label, overrides on top of the posterior medians); prior upper ends: kill_probability 0.7,
#: engagement_interval >= 1 h, max_kills 10, competent_fraction 0.75, susceptible_fraction 0.9
STEPS = (
    ("posterior medians (drug effect of stage A)", {}),
    ("nk.kill_probability 0.95", {"nk.kill_probability": 0.95}),
    ("+ nk.engagement_interval 0.25 h, nk.max_kills 20",
     {"nk.kill_probability": 0.95, "nk.engagement_interval": 0.25, "nk.max_kills": 20}),
    ("+ nk.competent_fraction 1, blasts.susceptible_fraction 1",
     {"nk.kill_probability": 0.95, "nk.engagement_interval": 0.25, "nk.max_kills": 20,
      "nk.competent_fraction": 1.0, "blasts.susceptible_fraction": 1.0}),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    reg = load_registry()
    rows = [reg.observation(r) for r in ROWS]
    proto, ids = protocol_run(PROTOCOL, rows)
    p = resolution_params("default", "calibration", {"lattice.cell_diameter": 40.0})
    med = pd.read_csv(HERE / "results_drug_at_stage_a" / "posterior.csv").set_index("parameter")["median"]
    base = {k: float(v) for k, v in med.items()}
    base["nk.max_kills"] = float(round(base["nk.max_kills"]))
    out = []
    for label, over in STEPS:
        q = p.with_values({**base, **over}, origin=f"killing beyond priors: {label}")
        ds = simulate_cohort(q, proto, replicates=args.replicates, seed=args.seed, patients=ids,
                             workers=args.workers)
        rec = {"step": label}
        for o in rows:
            rec[f"{o.name} ({o.k}/{o.n})"] = round(float(np.nanmean(simulated_per_patient(o, ds))), 3)
        out.append(rec)
    df = pd.DataFrame(out)
    (HERE / "results_second_fit").mkdir(exist_ok=True)
    df.to_csv(HERE / "results_second_fit" / "killing_beyond_priors.csv", index=False)
    print(md_table(list(df.columns), df.itertuples(index=False)))


if __name__ == "__main__":
    main()
