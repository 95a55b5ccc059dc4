"""Can NK killing, rather than the drugs, make the registry's remissions? The bank's answer, by drug sensitivity.

``python calibration/joint/bank_by_drug_sensitivity.py [--bank outputs/joint/bank] [--out calibration/joint/results]``

Reads the simulation bank (``run_bank.py``) and bins its points by ``blasts.drug_sensitivity``. Per bin:
the mean of each target share row over the bin's points (10 simulated patients per point and protocol),
and the best point by a crude binomial log-likelihood of every fitted share row (the point's own simulated
share, clipped to [0.02, 0.98], as the patient probability; no emulator). A bin whose best point is
far below the others' says that no parameter combination the bank sampled at that drug effect
reproduces the targets: the evidence behind "the remissions are the drugs'" in calibration/README.md.
Writes ``bank_by_drug_sensitivity.csv`` and prints it as Markdown.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

from nksim.calibration.bank import open_bank
from nksim.calibration.joint_run import md_table
from nksim.calibration.joint_spec import load_joint_spec
from nksim.calibration.registry import load_registry

HERE = Path(__file__).resolve().parent
EDGES = (0.01, 0.03, 0.06, 0.1, 0.2, 0.3, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", default=str(HERE.parents[1] / "outputs" / "joint" / "bank"))
    ap.add_argument("--spec", default=str(HERE / "joint.toml"))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    spec = load_joint_spec(args.spec)
    ds = open_bank(args.bank)
    excluded = dict(spec.excluded)
    rows = [o for o in load_registry().observations
            if o.role in spec.roles and o.is_share and o.name in set(ds["row"].values) and o.name not in excluded]
    keys = list(ds["parameter"].values)
    d = ds["theta"].values[:, keys.index("blasts.drug_sensitivity")]
    share = {o.name: ds["statistic"].sel(row=o.name).values for o in rows}
    ll = sum(binom.logpmf(o.k, o.n, np.clip(share[o.name], 0.02, 0.98)) for o in rows)
    out = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        m = (d >= lo) & (d < hi)
        if not m.any():
            continue
        best = int(np.flatnonzero(m)[np.argmax(ll[m])])
        rec = {"drug_sensitivity": f"{lo:g}-{hi:g}", "points": int(m.sum()),
               "best_log_likelihood": round(float(ll[best]), 1)}
        for o in rows:
            rec[f"{o.name} ({o.k}/{o.n})"] = round(float(np.nanmean(share[o.name][m])), 3)
        rec["best point's CR rows (mean)"] = round(float(np.nanmean(
            [share[o.name][best] for o in rows if o.observable.startswith(("cr_", "response")) and
             not o.name.startswith("ahmadvand")])), 2)
        if "ahmadvand_response" in share:
            rec["best point's ahmadvand_response"] = round(float(share["ahmadvand_response"][best]), 2)
        out.append(rec)
    df = pd.DataFrame(out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(args.out) / "bank_by_drug_sensitivity.csv", index=False)
    print(md_table(list(df.columns), df.itertuples(index=False)))


if __name__ == "__main__":
    main()
