"""The committed two-infusion study (experiments/studies/two_infusion/): its spec and its fair clock."""
from __future__ import annotations

from pathlib import Path

import pytest

from nksim.sweep import build_plan, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "studies" / "two_infusion" / "schedules.toml"


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_spec(SPEC))


def test_study_draws_from_the_posterior_on_the_lymphodepletion_clock(plan):
    c = plan.content
    assert c["draws_from"]["posterior"] == "posterior.nc" and len(c["draws_from"]["sha256"]) == 16
    assert c["draws"] and len(c["draws"]) == 12  # resampled from the committed posterior
    assert c["clock"] == "lymphodepletion"
    # the trial's schedule (Flu/Cy ending 7 days before, two equal infusions 7 days apart) is a scenario
    trial = [i for i, sc in enumerate(c["scenarios"])
             if sc["schedule"]["regimen"] == "trial" and sc["schedule"]["interval"] == 7
             and tuple(sc["schedule"]["dose_split"]) == (50.0, 50.0) and sc["schedule"]["gap"] == 7
             and sc["schedule"]["nk_product"] == "expanded"]
    assert len(trial) == 1


def test_every_scenario_is_assessed_on_the_same_days_after_lymphodepletion(plan):
    """Protocol assessment days = calendar days (since the first Flu/Cy dose) - that scenario's offset."""
    calendar = [37.0, 99.0, 189.0, 279.0]
    for i, sc in enumerate(plan.content["scenarios"]):
        proto = plan.protocol(i)
        first_ld = min(e.day for e in proto.events if e.kind in ("fludarabine", "cyclophosphamide"))
        assert [d - first_ld for d in proto.assessment_days] == pytest.approx(calendar), sc["label"]
    # the trial's own assessment days (28, 90, 180, 270 after the first infusion) are these days
    gap7 = next(i for i, sc in enumerate(plan.content["scenarios"]) if sc["label"] == "interval=7 dose_split=50/50")
    assert list(plan.protocol(gap7).assessment_days) == [28.0, 90.0, 180.0, 270.0]
