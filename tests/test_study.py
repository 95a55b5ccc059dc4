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


# --- the second question: an expanding product (expanding.toml) and the runs of run_study.py --------------
EXPANDING = SPEC.parent / "expanding.toml"


def _run_study():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_study", SPEC.parent / "run_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def expanding():
    return build_plan(load_spec(EXPANDING))


def test_expanding_spec_is_assessed_28_days_after_the_first_infusion(expanding):
    c = expanding.content
    assert c["clock"] == "lymphodepletion" and len(c["draws"]) == 8 and expanding.n_scenarios == 2 * 12 + 4 + 4
    # the two-infusion factorial with the IL-2 course from the first infusion and restarted at each, and the
    # controls: one infusion with a second IL-2 course 3, 7, 14, 21 days later
    assert sum(sc["schedule"].get("cytokine_course") == "each" for sc in c["scenarios"]) == 12 + 4
    controls = [sc["schedule"] for sc in c["scenarios"] if tuple(sc["schedule"]["dose_split"]) == (100.0, 0.0)]
    assert sorted(s["interval"] for s in controls) == [3.0, 7.0, 14.0, 21.0]
    assert all(s["n_infusions"] == 1 and s["cytokine_course"] == "each" for s in controls)
    for i, sc in enumerate(c["scenarios"]):
        s = sc["schedule"]
        assert (s["regimen"], s["nk_product"], s["gap"], s["total_dose"]) == ("hi_cy_flu", "fresh", 2.0, 1.0e7)
        proto = expanding.protocol(i)
        first_ld = min(e.day for e in proto.events if e.kind in ("fludarabine", "cyclophosphamide"))
        assert first_ld == -6.0  # Bachanova's day -6: the clock offset of every scenario
        assert [d - first_ld for d in proto.assessment_days] == pytest.approx([34.0, 96.0, 186.0, 276.0])
        assert list(proto.assessment_days) == [28.0, 90.0, 180.0, 270.0], sc["label"]
    assert c["landmark_day"] == 276
    # the bank's resolution: 40 um cell places on the study's coarse lattice
    assert expanding.parameters(0, 0)["lattice.cell_diameter"] == 40.0


def test_expanding_reference_is_the_one_infusion_baseline(expanding):
    """The default reference of summarize: no scenario has the trial's schedule; exactly one has the [baseline]'s."""
    from nksim.sweep.scenario import effective_schedule
    from nksim.sweep.summaries import _same_schedule, trial_schedule

    raw = load_spec(EXPANDING).raw
    base = effective_schedule(dict(raw["baseline"]), {}, "<baseline>", "")
    scen = expanding.content["scenarios"]
    assert not [sc for sc in scen if _same_schedule(sc["schedule"], trial_schedule())]
    hits = [sc for sc in scen if _same_schedule(sc["schedule"], base)]
    assert len(hits) == 1
    s = hits[0]["schedule"]
    assert s["n_infusions"] == 1 and s["cytokine"] == "il2" and tuple(s["dose_split"]) == (100.0,)
    assert {sc["schedule"].get("cytokine", "none") for sc in scen} == {"il2", "rhil15_sc", "none"}


def test_run_study_runs_and_partial_tables(tmp_path, capsys):
    rs = _run_study()
    assert list(rs.RUNS) == ["default", "high_potency", "joint", "expanding_joint", "expanding_nk_potent",
                             "consolidation_joint", "consolidation_nk_potent", "joint_persistence",
                             "expanding_persistence", "consolidation_persistence"]
    assert rs.RUNS["default"][:2] == ("schedules.toml", ['sweep.model="default"'])
    assert rs.RUNS["high_potency"][:2] == ("schedules.toml", ['sweep.model="high_potency"'])
    assert rs.JOINT_DRAWS.as_posix() == "calibration/joint/results/posterior_draws.csv"
    # the joint runs build with a draws file (12 rows of model values) and at the bank's resolution
    draws = tmp_path / "posterior_draws.csv"
    draws.write_text("nk.kill_probability,nk.homing_rate\n" + "0.5,2.0\n0.6,3.0\n" * 6, encoding="utf-8")
    assert rs.DRUG_AT_STAGE_A_DRAWS.as_posix() == "calibration/joint/results_drug_at_stage_a/posterior_draws.csv"
    assert rs.PERSISTENCE_DRAWS.as_posix() == "calibration/joint/results_whatif_persistence/posterior_draws.csv"
    for name in ("joint", "expanding_joint", "expanding_nk_potent", "consolidation_joint", "consolidation_nk_potent",
                 "joint_persistence", "expanding_persistence", "consolidation_persistence"):
        spec_file, overrides, _ = rs.RUNS[name]
        plan = build_plan(load_spec(SPEC.parent / spec_file, [o.replace(rs.DRAWS, str(draws)).replace(
            rs.POTENT_DRAWS, str(draws)).replace(rs.PERSIST_DRAWS, str(draws)) for o in overrides]))
        assert plan.content["draws_from"] == "posterior_draws.csv"
        assert plan.content["draws"][1] == {"nk.kill_probability": 0.6, "nk.homing_rate": 3.0}
        assert plan.parameters(0, 1)["lattice.cell_diameter"] == 40.0 and plan.parameters(0, 1)["nk.homing_rate"] == 3.0
        # the consolidation runs are the expanding runs' sweeps with the cohort in first CR
        expected = {"disease": "remission", "baseline_blast_pct": 2.0} if name.startswith("consolidation") else {}
        assert plan.population == expected
    # without the draws file the joint runs are skipped with a message, and nothing else is run
    rec = rs.run(tmp_path / "out", tmp_path / "rep", only=["joint", "expanding_joint"],
                 joint_draws=tmp_path / "missing.csv")
    assert rec["runs"] == {} and "skipped" in capsys.readouterr().err
    # a row written before p_cr_first existed shows n/a; the reference is marked
    row = {"scenario": 0, "label": "dose_split=100", "reference": 0, "p_best": 0.5, "pfs_landmark": 0.3,
           "rmst_landmark": 200.0}
    for name, _, _, _ in rs.TABLE_CONTRASTS:
        if name != "p_cr_first":
            row |= {f"{name}_diff": 0.0, f"{name}_diff_lo": 0.0, f"{name}_diff_hi": 0.0}
    md = rs.markdown_table({"expanding_joint": [row]})
    assert "dose_split=100 (reference)" in md and "| n/a |" in md and "Bachanova 2014" in md
