"""Whether the calibration simulator's coarse resolution is good enough for the calibration summaries.

Run from the repository root::

    python benchmarks/calibration_resolution.py              # 30 virtual trials, about 3 min
    python benchmarks/calibration_resolution.py --trials 10  # quick look

The calibration config (``calibration/ahmadvand2023.toml``, ``[simulator]``) simulates the same
16 mm x 16 mm marrow region as the default model with 5 x 5 voxels of 3.2 mm instead of
40 x 40 of 0.4 mm, stops progressed patients early, and follows patients to day 270. This
script runs both resolutions on the same virtual trials (same seeds: identical patient random
effects, common random numbers) at the default parameter values and reports

* the per-patient agreement of the outcome category (pd_first / progressed / stable / ...),
* P(PD at the first assessment) and P(progressed | followed SD) at both resolutions,
* the paired ratio of peak donor chimerism (PBMC) and the peak-day difference,
* the time per virtual trial at both resolutions and their ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, source_digest

from nksim.calibration.config import load_config
from nksim.calibration.model import CalibrationModel
from nksim.calibration.summaries import CATEGORY_INDEX, PROGRESSED


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--config", default=str(ROOT / "calibration" / "ahmadvand2023.toml"))
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    cfg = load_config(args.config)
    coarse = CalibrationModel(cfg)
    fine = CalibrationModel(replace(cfg, simulator_overrides={}, early_stop=False))
    theta = {f.key: coarse.base[f.key] for f in cfg.fit}
    coarse.simulate_patients(theta, seed=0, virtual_trials=1)  # compile / load
    res = {}
    for name, m in (("coarse", coarse), ("default", fine)):
        t0 = time.perf_counter()
        out = [m.simulate_patients(theta, seed=s, virtual_trials=1) for s in range(args.trials)]
        dt = time.perf_counter() - t0
        res[name] = {"seconds_per_trial": dt / args.trials,
                     "category": np.concatenate([o["category"][0] for o in out]),
                     "peak": np.concatenate([o["peak_donor_chimerism_pbmc"][0] for o in out]),
                     "peak_day": np.concatenate([o["peak_day"][0] for o in out])}
        print(f"{name:8s} resolution: {dt / args.trials:.3f} s per 9-patient virtual trial", flush=True)
    c, f = res["coarse"], res["default"]
    n = c["category"].size

    def props(cat):
        pd = np.mean(cat == CATEGORY_INDEX["pd_first"])
        prog = np.sum(np.isin(cat, [CATEGORY_INDEX[k] for k in PROGRESSED]))
        fol = prog + np.sum(cat == CATEGORY_INDEX["stable"])
        return pd, prog / max(fol, 1), np.sqrt(pd * (1 - pd) / n)

    agree = float(np.mean(c["category"] == f["category"]))
    pc, pf = props(c["category"]), props(f["category"])
    ratio = c["peak"] / f["peak"]
    summary = {
        "trials": args.trials, "patients": int(n),
        "category_agreement": agree,
        "p_pd_first": {"coarse": pc[0], "default": pf[0], "se": pf[2]},
        "p_progressed_given_followed_sd": {"coarse": pc[1], "default": pf[1]},
        "peak_chimerism_ratio_median": float(np.median(ratio)),
        "peak_chimerism_ratio_q05_q95": [float(x) for x in np.quantile(ratio, [0.05, 0.95])],
        "peak_day_abs_diff_median": float(np.median(np.abs(c["peak_day"] - f["peak_day"]))),
        "seconds_per_trial": {"coarse": c["seconds_per_trial"], "default": f["seconds_per_trial"]},
        "speed_up": f["seconds_per_trial"] / c["seconds_per_trial"],
        "engine": source_digest(),
    }
    print(f"per-patient category agreement: {agree:.1%} of {n} simulated patients (paired by seed)")
    print(f"P(PD at first assessment): coarse {pc[0]:.3f}, default {pf[0]:.3f} (binomial SE {pf[2]:.3f})")
    print(f"P(progressed | followed SD): coarse {pc[1]:.3f}, default {pf[1]:.3f}")
    print(f"peak chimerism coarse/default: median {np.median(ratio):.3f}, 90% of patients in "
          f"[{np.quantile(ratio, 0.05):.3f}, {np.quantile(ratio, 0.95):.3f}]; median |peak-day difference| "
          f"{summary['peak_day_abs_diff_median']:.1f} d")
    print(f"speed-up of the calibration simulator: {summary['speed_up']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
