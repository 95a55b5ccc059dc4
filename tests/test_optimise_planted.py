"""nksim optimise finds planted optima (issue 27, done-when 1).

A synthetic simulator with nksim's interface (:class:`nksim.optimise.planted.PlantedProblem`: an
interior optimum, an optimum on a boundary of the space, a flat ridge of optima; noise and pairing
as nksim shows them) is searched, confirmed and estimated exactly as ``nksim optimise`` does, with
10 seeds per shape. The planted optimum and a clearly worse schedule are added to the confirmation
as probes (never selectable). Required over the 10 seeds:

* the planted optimum is in the near-optimal set in >= 9 runs;
* the selected schedule is within delta of the optimum's value in >= 8 runs;
* the held-out estimate of the selected schedule is unbiased within 2 SE (mean error over the seeds
  against the standard error of that mean);
* the worse probe (30+ days below the optimum) is excluded from the set in >= 9 runs (the set says
  something).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("optuna")

from nksim.optimise.bank import Bank, bank_seeds  # noqa: E402
from nksim.optimise.candidate import Candidate  # noqa: E402
from nksim.optimise.planted import SHAPES, PlantedProblem  # noqa: E402
from nksim.optimise.run import confirm  # noqa: E402
from nksim.optimise.search import SearchSettings, run_search  # noqa: E402
from nksim.optimise.space import parse_space  # noqa: E402
from nksim.optimise.store import EvaluationCache  # noqa: E402

SPACE = parse_space({"regimen": "hi_cy_flu", "nk_product": "fresh", "total_dose": 1e7, "cytokine": "il2",
                     "n_infusions": {"low": 1, "high": 3}, "gap": {"low": 1, "high": 14},
                     "interval": {"low": 3, "high": 28}, "donor": {"choices": ["same", "new"]}},
                    {"last_infusion_day": 56}, "<planted>")
DELTA = 5.0  # day
SIZES = {"search": (8, 8), "confirm": (16, 16), "estimate": (16, 16)}


def _banks(seed: int) -> dict[str, Bank]:
    seeds = bank_seeds(seed)
    return {k: Bank(k, seeds[k], tuple({} for _ in range(d)), p) for k, (d, p) in SIZES.items()}


def _run(shape: str, seed: int) -> dict[str, float]:
    prob = PlantedProblem(shape)
    banks = _banks(seed)
    cache = EvaluationCache(None, "planted")
    hist = run_search(prob, SPACE, banks["search"], SearchSettings(trials=64, batch_size=8, startup_trials=16,
                                                                    seed=seed), cache)
    template = hist.trials[0].candidate
    reference = Candidate(regimen=template.regimen, nk_product=template.nk_product, cytokine=template.cytokine,
                          cytokine_start=0.0, gap=14.0, days=(0.0,), shares=(100.0,), donors=("donor1",),
                          total_dose=template.total_dose)
    opt = prob.optimum(template)
    bad = Candidate(**{**opt.as_dict(), "gap": 14.0, "days": (0.0, 28.0, 56.0), "shares": (10.0, 10.0, 80.0),
                       "donors": ("donor1",) * 3})
    assert prob.truth(opt) == pytest.approx(prob.best_value)
    assert prob.best_value - prob.truth(bad) > 30.0
    ds = confirm(prob, hist, reference, banks, cache, top=6, delta=DELTA, alpha=0.05, probes=[opt, bad])
    roles = list(ds["role"].values)
    sel = int(np.flatnonzero(ds["selected"].values)[0])
    selected = Candidate.from_mapping(json.loads(ds["schedule"].values[sel]))
    i_opt, i_bad = len(roles) - 2, len(roles) - 1
    assert roles[i_opt] == roles[i_bad] == "probe" and roles[sel] != "probe"
    return {"opt_in_set": bool(ds["near_optimal"].values[i_opt]), "bad_in_set": bool(ds["near_optimal"].values[i_bad]),
            "regret": prob.best_value - prob.truth(selected),
            "error": ds.attrs["held_out_value"] - prob.truth(selected), "se": ds.attrs["held_out_value_se"]}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_planted_optimum_is_found_over_ten_seeds(shape):
    runs = [_run(shape, seed) for seed in range(10)]
    in_set = sum(r["opt_in_set"] for r in runs)
    within = sum(r["regret"] <= DELTA for r in runs)
    bad_out = sum(not r["bad_in_set"] for r in runs)
    err = np.array([r["error"] for r in runs])
    se_mean = np.sqrt(np.mean([r["se"] ** 2 for r in runs]) / len(runs))
    assert in_set >= 9, runs
    assert within >= 8, [round(r["regret"], 1) for r in runs]
    assert bad_out >= 9, runs
    assert abs(err.mean()) <= 2 * se_mean, (err, se_mean)


def test_same_seed_gives_identical_trials_and_another_seed_other_ones():
    def trials(seed):
        h = run_search(PlantedProblem("interior"), SPACE, _banks(0)["search"],
                       SearchSettings(trials=24, batch_size=8, startup_trials=8, seed=seed),
                       EvaluationCache(None, "p"))
        return [(t.candidate.key(), t.value) for t in h.trials]

    a, b, c = trials(3), trials(3), trials(4)
    assert a == b
    assert a != c


def test_each_schedule_is_simulated_once_per_bank():
    prob = PlantedProblem("ridge")
    cache = EvaluationCache(None, "p")
    h = run_search(prob, SPACE, _banks(1)["search"], SearchSettings(trials=32, batch_size=8, seed=1), cache)
    distinct = {t.candidate.key() for t in h.trials}
    assert prob.evaluations == len(distinct) == cache.simulated
    assert sum(not t.repeat for t in h.trials) == len(distinct)
