"""Response classification and time to progression on hand-made values.

Expected categories are worked out by hand from the ELN-style rules in the
``nksim.observables`` docstring with the thresholds below (the default set's values,
written out here so that a change of defaults does not silently change the tests):
CR b < 5; PR b <= 25 and b <= b0/2; PD b >= 1.5 b0 and, when b0 < 30, b >= b0 + 15 (b >= 5 when b0 < 5:
relapse from CR); SD otherwise.
"""
from __future__ import annotations

import numpy as np
import pytest

from nksim import RESPONSE_CODES, classify_response, time_to_progression
from nksim.observables import RESPONSE_FILL, pd_threshold, response_thresholds

TH = {"cr_blast_pct": 5.0, "pr_blast_pct": 25.0, "pr_min_fall": 50.0, "pd_relative_rise": 50.0,
      "pd_absolute_rise": 15.0, "pd_absolute_below": 30.0}
CR, PR, SD, PD = (RESPONSE_CODES[k] for k in ("CR", "PR", "SD", "PD"))


def test_codes_are_distinct_and_fill_is_negative():
    assert sorted(RESPONSE_CODES) == ["CR", "PD", "PR", "SD"]
    assert len(set(RESPONSE_CODES.values())) == 4
    assert RESPONSE_FILL < 0


def test_thresholds_from_parameter_set(default_params):
    th = response_thresholds(default_params)
    assert th == {k: default_params[f"response.{k}"] for k in TH}


@pytest.mark.parametrize(
    "b, b0, expected, why",
    [
        (4.9, 40.0, CR, "below 5 %"),
        (0.0, 40.0, CR, "no blasts"),
        (4.0, 8.0, CR, "CR even if the fall is less than half"),
        (5.0, 40.0, PR, "5 is not < 5; 5 <= 25 and 5 <= 20"),
        (20.0, 40.0, PR, "exactly half of baseline"),
        (20.1, 40.0, SD, "fell, but by less than half"),
        (25.0, 60.0, PR, "25 <= 25 and 25 <= 30"),
        (25.1, 60.0, SD, "above the 25 % PR ceiling although < b0/2"),
        (5.0, 8.0, SD, "5 > 8/2: not PR; below PD threshold max(12, 23)"),
        (59.9, 40.0, SD, "below 1.5 * 40"),
        (60.0, 40.0, PD, "1.5 * 40 reached (b0 >= 30: relative rule only)"),
        (45.0, 30.0, PD, "b0 = 30 is not below 30: relative rule only, 45 = 1.5 * 30"),
        (15.0, 10.0, SD, "relative rise reached (15 = 1.5 * 10) but not +15 points"),
        (24.9, 10.0, SD, "needs 10 + 15 = 25"),
        (25.0, 10.0, PD, "10 + 15 = 25 reached, and 25 >= 15"),
        (34.9, 20.0, SD, "needs max(30, 35)"),
        (35.0, 20.0, PD, "max(30, 35) reached"),
        (44.87, 29.9, SD, ">= 1.5 * 29.9 = 44.85 but < 29.9 + 15 = 44.9"),
        (44.95, 29.9, PD, "both rules met"),
        (5.0, 0.0, PD, "from a baseline in CR (< 5): relapse at 5"),
        (4.9, 0.0, CR, "from a baseline in CR: still CR below 5"),
        (5.0, 4.9, PD, "baseline 4.9 is in CR: relapse at 5, not 4.9 + 15"),
        (19.9, 5.0, SD, "baseline 5 is not in CR: needs 5 + 15 = 20"),
        (20.0, 5.0, PD, "5 + 15 = 20 reached"),
        (100.0, 100.0, SD, "full marrow stays full: 100 < 150"),
        (float("nan"), 40.0, RESPONSE_FILL, "not assessed"),
    ],
)
def test_classify_single_values(b, b0, expected, why):
    assert classify_response(np.array([b]), np.array([b0]), TH)[0] == expected, why


def test_classify_broadcasts_and_returns_int8():
    b = np.array([[1.0, 30.0, 70.0], [np.nan, 10.0, 26.0]])
    b0 = np.array([[40.0], [10.0]])
    out = classify_response(b, b0, TH)
    assert out.dtype == np.int8 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, [[CR, SD, PD], [RESPONSE_FILL, SD, PD]])


def test_classify_uses_given_thresholds():
    th = dict(TH, cr_blast_pct=1.0, pr_blast_pct=5.0)
    assert classify_response(np.array([3.0]), np.array([40.0]), th)[0] == PR  # 3 >= 1, <= 5 and <= 20
    assert classify_response(np.array([6.0]), np.array([40.0]), th)[0] == SD  # above the PR ceiling of 5
    th = dict(TH, pd_relative_rise=100.0)
    assert classify_response(np.array([60.0]), np.array([40.0]), th)[0] == SD  # needs 80 now


def test_pd_threshold():
    np.testing.assert_allclose(pd_threshold(np.array([10.0, 20.0, 30.0, 40.0]), TH), [25.0, 35.0, 45.0, 60.0])


def test_pd_threshold_in_remission_is_relapse_at_the_cr_threshold():
    """Baseline below the CR threshold (morphological CR): progression is relapse, blasts >= 5 % (ELN 2017)."""
    b0 = np.array([0.0, 1.0, 4.99, 5.0])
    np.testing.assert_allclose(pd_threshold(b0, TH), [5.0, 5.0, 5.0, 20.0])
    # blasts at 5 % are PD (neither CR nor PR) for a patient in remission; 4.9 % stays CR
    assert list(classify_response(np.array([5.0, 4.9]), np.array([2.0, 2.0]), TH)) == [PD, CR]
    b = np.array([2.0, 3.0, 4.0, 6.0, 9.0])
    assert time_to_progression(T, b, 2.0, TH)[()] == 180.0


T = np.array([0.0, 28.0, 90.0, 180.0, 270.0])


def test_ttp_first_crossing():
    b = np.array([40.0, 70.0, 50.0, 80.0, 90.0])  # threshold 60
    assert time_to_progression(T, b, 40.0, TH)[()] == 28.0


def test_ttp_crossing_exactly_at_threshold_counts():
    b = np.array([40.0, 50.0, 60.0, 10.0, 10.0])
    assert time_to_progression(T, b, 40.0, TH)[()] == 90.0


def test_ttp_never_is_nan():
    b = np.array([40.0, 59.9, 50.0, 1.0, 0.0])
    assert np.isnan(time_to_progression(T, b, 40.0, TH)[()])


def test_ttp_respects_from_day():
    b = np.array([70.0, 70.0, 10.0, 80.0, 10.0])
    assert time_to_progression(T, b, 40.0, TH, from_day=0.0)[()] == 0.0
    assert time_to_progression(T, b, 40.0, TH, from_day=28.0)[()] == 28.0
    assert time_to_progression(T, b, 40.0, TH, from_day=29.0)[()] == 180.0
    assert np.isnan(time_to_progression(T, b, 40.0, TH, from_day=181.0)[()])


def test_ttp_vectorised_over_patients():
    b = np.array([
        [40.0, 70.0, 50.0, 80.0, 90.0],  # b0 40 -> thr 60: day 28
        [10.0, 20.0, 24.0, 25.0, 30.0],  # b0 10 -> thr 25: day 180
        [10.0, 20.0, 24.0, 24.0, 24.9],  # never
    ])
    out = time_to_progression(T, b, np.array([40.0, 10.0, 10.0]), TH)
    np.testing.assert_array_equal(out, [28.0, 180.0, np.nan])


@pytest.mark.parametrize("case", range(40))
def test_kaplan_meier_equals_scipy_ecdf_bit_for_bit(case):
    """km_survival / km_median / km_curve use scipy.stats.ecdf's arithmetic without importing scipy.stats."""
    stats = pytest.importorskip("scipy.stats")
    from nksim.observables import km_curve, km_median, km_survival

    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 30))
    end = 365.0
    ttp = rng.choice([28.0, 90.0, 180.0, 270.0, 365.0], size=n) if case % 2 else rng.uniform(20, 365, n).round(0)
    ttp[rng.random(n) < (0.0 if case % 5 == 0 else 0.4)] = np.nan  # every 5th case: nothing censored
    observed = np.isfinite(ttp)
    if not observed.any():
        assert km_survival(ttp, end, 100.0) == 1.0 and km_median(ttp, end) == np.inf
        return
    sf = stats.ecdf(stats.CensoredData(uncensored=ttp[observed], right=np.full(int((~observed).sum()), end))).sf
    t, s = km_curve(ttp, end)
    assert np.array_equal(t[-sf.quantiles.size:], sf.quantiles) and np.array_equal(s[-sf.quantiles.size:],
                                                                                    sf.probabilities)
    for day in (0.0, 27.9, 28.0, 90.0, 100.5, 180.0, 270.0, 364.0, 365.0, 400.0):
        assert km_survival(ttp, end, day) == float(sf.evaluate(day)), day
    below = np.nonzero(sf.probabilities <= 0.5)[0]
    assert km_median(ttp, end) == (float(sf.quantiles[below[0]]) if below.size else np.inf)


@pytest.mark.parametrize("case", range(20))
def test_kaplan_meier_with_a_censoring_day_per_patient_equals_scipy_ecdf(case):
    """An observed trial censors each patient at its own last visit: same arithmetic as scipy's ecdf."""
    stats = pytest.importorskip("scipy.stats")
    from nksim.observables import km_curve

    rng = np.random.default_rng(1000 + case)
    n = int(rng.integers(2, 25))
    ttp = rng.choice([28.0, 90.0, 180.0, 270.0], size=n)
    last = rng.choice([28.0, 90.0, 180.0, 270.0, 365.0], size=n)  # ties with event days included
    censored = rng.random(n) < 0.5
    censored[0] = False  # at least one event
    ttp[censored] = np.nan
    sf = stats.ecdf(stats.CensoredData(uncensored=ttp[~censored], right=last[censored])).sf
    t, s = km_curve(ttp, last)
    assert np.array_equal(t[-sf.quantiles.size:], sf.quantiles)
    assert np.allclose(s[-sf.quantiles.size:], sf.probabilities, rtol=0, atol=1e-15)
