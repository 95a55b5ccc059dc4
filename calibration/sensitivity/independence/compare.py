"""Compare stage A refitted at two stage-B draws with the committed stage A (the independence test).

    python calibration/sensitivity/independence/compare.py

Reads ``posterior/posterior_summary.csv`` (committed two-stage posterior: stage A at stage B's
medians) and ``sensitivity/independence/{reseed,cy_low,cy_high}/posterior_summary.csv``; prints, per
kinetic parameter, the three medians and 90 % intervals and the shift of each refitted median in
units of the committed 90 % interval's width (on the parameter's fitting scale: log for the
log-scaled ones).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
CAL = HERE.parents[1]
RUNS = ("reseed", "cy_low", "cy_high")


def read(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["parameter"]: row for row in csv.DictReader(f)}


def main() -> None:
    base = read(CAL / "posterior" / "posterior_summary.csv")
    runs = {r: read(HERE / r / "posterior_summary.csv") for r in RUNS}
    print("| parameter | committed (stage-B medians) | " + " | ".join(f"{r}: median (90 % CrI), shift" for r in RUNS)
          + " |")
    print("|---|---|" + "---|" * len(RUNS))
    for name, row in base.items():
        if name not in runs[RUNS[0]]:
            continue  # a stage-B parameter
        tr = (lambda v: math.log(v)) if row["scale"] == "log" else (lambda v: v)
        lo, hi, med = (tr(float(row[k])) for k in ("q05", "q95", "median"))
        cells = []
        for r in RUNS:
            o = runs[r][name]
            shift = (tr(float(o["median"])) - med) / (hi - lo)
            cells.append(f"{float(o['median']):.3g} ({float(o['q05']):.3g} – {float(o['q95']):.3g}), {shift:+.2f}")
        print(f"| `{name}` | {float(row['median']):.3g} ({float(row['q05']):.3g} – {float(row['q95']):.3g}) | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
