"""nksim optimise: the confirmation statistics against known answers (synthetic data, no simulation)."""
from __future__ import annotations

import numpy as np
import pytest

from nksim.optimise.bank import Bank
from nksim.optimise.select import (
    cluster_mean_se,
    held_out,
    near_optimal_set,
    paired,
    per_draw_best,
    select,
)


def _bank(draws: int, patients: int, replicates: int = 1) -> Bank:
    return Bank("t", 1, tuple({} for _ in range(draws)), patients, replicates)


def test_units_are_draw_major_and_each_draw_has_its_own_patients():
    b = _bank(3, 4, 2)
    assert b.n_units == 24
    assert [b.unit(u)[0] for u in range(b.n_units)] == list(b.draw_of_unit)
    ids = {b.unit(u)[1] for u in range(b.n_units)}
    assert len(ids) == 12  # 3 draws x 4 patients, replicates share their patient
    assert b.unit(1)[1] == b.unit(0)[1] and b.unit(1)[2] == 1


def test_clustered_se_matches_the_sampling_spread_of_the_mean():
    """The clustered SE estimates the true sd of the bank mean.

    Draw effect sd 3, unit noise sd 10: the clustered SE estimates the true sd of the bank mean
    (sqrt(3**2/D + 10**2/(D P))) within 10 % on average over 2000 banks.
    """
    rng = np.random.default_rng(5)
    D, P = 16, 8
    b = _bank(D, P)
    means, ses = [], []
    for _ in range(2000):
        y = np.repeat(rng.normal(0, 3, D), P) + rng.normal(0, 10, D * P)
        m, se = cluster_mean_se(y, b)
        means.append(m)
        ses.append(se)
    truth = np.sqrt(9 / D + 100 / (D * P))
    assert np.std(means) == pytest.approx(truth, rel=0.05)
    assert np.mean(ses) == pytest.approx(truth, rel=0.10)


def test_paired_differences_cancel_the_common_unit_noise():
    rng = np.random.default_rng(1)
    b = _bank(8, 8)
    common = rng.normal(0, 100, b.n_units)
    y = np.stack([common + 5.0 + rng.normal(0, 1, b.n_units), common + rng.normal(0, 1, b.n_units)])
    d, se = paired(y, b)
    assert d[0, 1] == pytest.approx(5.0, abs=4 * se[0, 1])
    assert se[0, 1] < 0.5 and d[1, 0] == -d[0, 1] and d[0, 0] == 0


def test_near_optimal_set_holds_the_true_best_at_least_1_minus_alpha():
    """The true best is in the near-optimal set in >= 1 - alpha of the banks.

    Five schedules 0, -1, -2, -8, -20 days from the best, delta 3, alpha 0.1: over 600 banks the best
    is in the set in >= 90 % (minus 2.5 % Monte-Carlo tolerance); the clearly worse ones rarely.
    """
    rng = np.random.default_rng(7)
    truth = np.array([0.0, -1.0, -2.0, -8.0, -20.0])
    D, P = 12, 8
    b = _bank(D, P)
    hits = np.zeros(5)
    n = 600
    for _ in range(n):
        common = np.repeat(rng.normal(0, 30, D), P) + rng.normal(0, 80, D * P)
        draw_x = np.repeat(rng.normal(0, 2, (5, D)), P, axis=1)
        y = truth[:, None] + common[None, :] + draw_x + rng.normal(0, 6, (5, D * P))
        hits += near_optimal_set(y, b, delta=3.0, alpha=0.1)
    share = hits / n
    assert share[0] >= 0.90 - 0.025
    assert share[1] >= 0.90 - 0.025  # within delta of the best: also covered
    assert share[4] < 0.05           # 20 days worse: excluded


def test_select_prefers_the_reference_on_a_tie_and_never_a_probe():
    b = _bank(2, 2)
    y = np.array([[1.0, 1, 1, 1], [1.0, 1, 1, 1], [5.0, 5, 5, 5]])
    assert select(y, b, [True, True, False]) == 0
    assert select(y, b, [True, True, False], prefer=1) == 1
    y[0] += 1
    assert select(y, b, [True, True, False], prefer=1) == 0


def test_per_draw_best_and_evpi_in_a_known_case():
    """Probability of being best per draw and the EVPI bounds in a known case.

    Two schedules; in half the draws A is 10 days better, in the other half B is: each is best in half,
    the population means are equal, so EVPI = 5 days; with patient noise the plain estimate lies above
    and the cross-fitted one below (up to Monte-Carlo error).
    """
    rng = np.random.default_rng(3)
    D, P = 40, 20
    b = _bank(D, P)
    sign = np.repeat(np.where(np.arange(D) % 2 == 0, 1.0, -1.0), P)
    y = np.stack([5 * sign, -5 * sign]) + rng.normal(0, 10, (2, D * P))
    r = per_draw_best(y, b)
    assert r["p_best"] == pytest.approx([0.5, 0.5], abs=0.1)
    assert r["p_best"].sum() == pytest.approx(1.0)
    assert r["evpi_cross"] - 1.5 < 5.0 < r["evpi_plain"] + 1.5
    ties = per_draw_best(np.zeros((3, D * P)), b)
    assert ties["p_best"] == pytest.approx([1 / 3] * 3)  # exact ties are shared
    assert ties["evpi_plain"] == 0.0


def test_held_out_estimate_is_unbiased():
    rng = np.random.default_rng(11)
    b = _bank(10, 10)
    z = []
    for _ in range(400):
        common = rng.normal(0, 50, b.n_units)
        r = held_out(common + 12.0 + rng.normal(0, 5, b.n_units), common + rng.normal(0, 5, b.n_units), b)
        z.append((r["gain"] - 12.0) / r["gain_se"])
    assert abs(np.mean(z)) < 3 / np.sqrt(len(z)) + 0.05
    assert np.mean(np.abs(z) < 2.262) == pytest.approx(0.95, abs=0.03)  # t(9) 95 % interval covers
