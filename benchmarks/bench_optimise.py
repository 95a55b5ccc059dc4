"""``nksim optimise`` benchmark: where the time goes (simulation vs the search itself), and threads.

    python benchmarks/bench_optimise.py            # the expanding spec, 24 trials on 4 x 8 units, 1 and 2 threads
    python benchmarks/bench_optimise.py --quick    # 8 trials on 2 x 4 units

Measured, for the same (small) optimisation of ``experiments/optimise/expanding_two_infusions.toml``:

* simulations per second of wall time with 1 and 2 simulation threads, and their ratio (the kernel
  releases the GIL; the results must be identical: checked);
* the share of the wall time spent in the optimiser's own work (TPE proposals, bookkeeping,
  statistics, outside ``ModelProblem.evaluate``);
* the optimiser alone on the planted problem (no simulation): proposals per second.

Writes ``outputs/benchmarks/optimise.json``. Timings on a shared machine are noisy: the numbers
are what was measured, at that time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    import xarray as xr

    from nksim import __version__
    from nksim.optimise import problem as P
    from nksim.optimise.bank import Bank
    from nksim.optimise.planted import PlantedProblem
    from nksim.optimise.run import optimise
    from nksim.optimise.search import SearchSettings, run_search
    from nksim.optimise.spec import load_spec
    from nksim.optimise.store import EvaluationCache
    from nksim.simulate import warm_up

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    trials, draws, patients = (8, 2, 4) if args.quick else (24, 4, 8)
    overrides = [f"optimise.trials={trials}", "optimise.startup_trials=8", "optimise.batch_size=8",
                 "optimise.polish_rounds=1", "optimise.top=3", "optimise.profile_levels=4",
                 *(f"optimise.banks.{b}.draws={draws}" for b in ("search", "confirm", "estimate")),
                 *(f"optimise.banks.{b}.patients={patients}" for b in ("search", "confirm", "estimate"))]
    spec = load_spec(ROOT / "experiments/optimise/expanding_two_infusions.toml", overrides)
    warm_up()
    sims = {"n": 0, "seconds": 0.0}
    real = P.ModelProblem.evaluate

    def timed(self, cands, bank, workers=1, on_unit=None):
        t = time.perf_counter()
        out = real(self, cands, bank, workers=workers, on_unit=on_unit)
        sims["seconds"] += time.perf_counter() - t
        sims["n"] += len(cands) * bank.n_units
        return out

    P.ModelProblem.evaluate = timed
    runs = {}
    datasets = []
    for workers in (1, 2):
        sims.update(n=0, seconds=0.0)
        t = time.perf_counter()
        res = optimise(spec, None, workers=workers, figures=False)
        wall = time.perf_counter() - t
        datasets.append(res.dataset)
        runs[workers] = {"wall_s": round(wall, 2), "simulations": sims["n"],
                         "simulations_per_s": round(sims["n"] / wall, 1),
                         "optimiser_share_of_wall": round(1 - sims["seconds"] / wall, 3)}
    P.ModelProblem.evaluate = real
    xr.testing.assert_identical(datasets[0], datasets[1])
    space = spec.space
    bank = Bank("planted", 1, tuple({} for _ in range(8)), 8)
    t = time.perf_counter()
    h = run_search(PlantedProblem("interior"), space, bank, SearchSettings(trials=96, batch_size=8, seed=1),
                   EvaluationCache(None, "bench"))
    planted_s = time.perf_counter() - t
    out = {"nksim_version": __version__, "python": platform.python_version(), "machine": platform.machine(),
           "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "overrides": overrides,
           "threads": runs, "speedup_2_vs_1_threads": round(runs[1]["wall_s"] / runs[2]["wall_s"], 2),
           "identical_results": True,
           "planted": {"trials": len(h.trials), "seconds": round(planted_s, 2),
                       "proposals_per_s": round(len(h.trials) / planted_s, 1)}}
    path = ROOT / "outputs" / "benchmarks" / "optimise.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
