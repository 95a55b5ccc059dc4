"""nksim optimise on the real model, restricted to the existing grid (issue 27, done-when 1, last check).

The two-infusion study's expanding-product grid (``experiments/studies/two_infusion/expanding.toml``)
is ranked on one bank, as the sweep ranks it, and confirmed on an independent bank: the near-optimal
set must contain the grid's best cell.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("optuna")

from nksim.optimise.run import grid_check, sweep_grid  # noqa: E402
from nksim.optimise.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_the_grid_converts_to_the_sweeps_schedules():
    grid = sweep_grid(ROOT / "experiments/studies/two_infusion/expanding.toml")
    labels = [c.label() for c in grid]
    assert len(grid) == len(set(labels)) == 16
    assert "1 inf d0 gap 2 il2" in labels and "2 inf d0/21 (25/75, donors 1,1) gap 2 il2" in labels
    assert all(c.total_dose == pytest.approx(1e7) and c.regimen == "hi_cy_flu" for c in grid)


@pytest.mark.slow
def test_near_optimal_set_contains_the_grids_best_cell():
    spec = load_spec(ROOT / "experiments/optimise/expanding_two_infusions.toml",
                     ["optimise.banks.confirm.draws=8", "optimise.banks.confirm.patients=8"])
    r = grid_check(spec, sweep_grid(ROOT / "experiments/studies/two_infusion/expanding.toml"), workers=2)
    assert r["grid_best_in_near_optimal_set"], r
    assert 1 <= r["near_optimal_size"] <= len(r["grid"])
