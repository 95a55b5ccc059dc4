"""The ``cytokine`` schedule factor: events taken from shipped protocols, no change without one, errors, a run."""
from __future__ import annotations

import numpy as np
import pytest
from _sweep_util import tiny, tiny_spec

import nksim
from nksim.errors import NksimInputError
from nksim.protocol import EVENT_UNITS, load_protocol
from nksim.sweep import SweepStore, build_plan, spec_from_dict
from nksim.sweep.factors import CYTOKINE_GROUPS, CYTOKINE_KINDS, CYTOKINES
from nksim.sweep.scenario import (
    build_protocol,
    cytokine_events,
    effective_schedule,
    regimen_events,
    schedule_protocol,
)

ALLOWED = "allowed: ['il2', 'n803', 'none', 'rhil15_iv', 'rhil15_sc']"


def list_spec(*scenarios, **changes):
    """A tiny list-design spec of the given [[scenarios]] (one patient, one replicate, 30 days)."""
    sweep = {"design": "list", "end_day": 30, "assessment_days": [14, 28], "landmark_day": 28,
             **changes.pop("sweep", {})}
    return tiny_spec(sweep=sweep, cohort={"patients": 1, "replicates": 1}, factors=None, scenarios=list(scenarios),
                     **changes)


def source_schedule(name: str, group: str | None = None) -> list[tuple[float, str, float, str]]:
    """Cytokine events of a shipped protocol's first patient (of ``group``), days from its first infusion."""
    proto = load_protocol(name)
    patient = next(p for p in proto.patients if group is None or p.group == group)
    evs = proto.events_for(patient)
    first = min(e.day for e in evs if e.kind == "nk_infusion")
    return sorted((e.day - first, e.kind, e.dose, e.unit) for e in evs if e.kind in CYTOKINE_KINDS)


def protocol_dict(schedule, end_day=60.0):
    return schedule_protocol(schedule, name="x", title="t", end_day=end_day, assessment_days=[min(28.0, end_day)],
                             ld_events=regimen_events(schedule["regimen"]))


# --- the events -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("regimen, gap", [("trial", None), ("hi_cy_flu", 10), ("none", None)])
def test_il2_is_bachanovas_schedule_from_the_first_infusion(regimen, gap):
    """With cytokine = "il2": Bachanova 2014's six IL-2 doses (9 MIU every other day from day 0), nothing else added."""
    base = {"regimen": regimen, **({"gap": gap} if gap is not None else {})}
    plan = build_plan(list_spec({"cytokine": "il2"}, {"cytokine": "none"}, baseline=base))
    with_il2, without = plan.protocol(0), plan.protocol(1)
    il2 = [(e.day, e.kind, e.dose, e.unit) for e in with_il2.events if e.kind in CYTOKINE_KINDS]
    expected = source_schedule("bachanova2014_hi_cy_flu")
    assert il2 == expected
    assert len(il2) == 6 and [e[0] for e in il2] == [0, 2, 4, 6, 8, 10]
    assert {(e[2], e[3]) for e in il2} == {(9.0, "1e6")}  # 9 MIU, EVENT_UNITS["il2"] (the file's "MIU")
    assert min(e.day for e in with_il2.events if e.kind == "nk_infusion") == 0.0
    # everything else is the scenario without cytokine: same infusions, lymphodepletion, window
    assert [e for e in with_il2.events if e.kind not in CYTOKINE_KINDS] == list(without.events)
    assert with_il2.start_day == without.start_day and with_il2.end_day == without.end_day
    assert not [e for e in with_il2.events if e.kind == "il2dt"]
    # the plan's protocol dictionary carries the same doses and units
    rows = [e for e in plan["scenarios"][0]["protocol"]["events"] if e["kind"] == "il2"]
    assert [(e["day"], e["dose"], e["unit"]) for e in rows] == [(d, x, u) for d, _, x, u in expected]


@pytest.mark.parametrize("cytokine", [c for c in CYTOKINES if c != "none"])
def test_every_cytokine_has_its_protocols_events(cytokine):
    """Each level's events are its source protocol's (its dose group where they differ), and non-empty."""
    events = cytokine_events(cytokine)
    assert events and list(events) == source_schedule(CYTOKINES[cytokine], CYTOKINE_GROUPS.get(cytokine))
    assert {e[1] for e in events} == {cytokine}  # the level's name is its event kind
    assert all(e[3] == EVENT_UNITS[e[1]] for e in events)
    d = protocol_dict(effective_schedule({}, {"cytokine": cytokine}, "<spec>", "factors"))
    assert [(e["day"], e["kind"], e["dose"], e["unit"]) for e in d["events"] if e["kind"] in CYTOKINE_KINDS] \
        == list(events)
    build_protocol(d, ["vp0000"], "<spec>")  # a valid protocol


def test_rhil15_iv_uses_the_mtd_group_and_n803_is_weekly():
    assert {e[2] for e in cytokine_events("rhil15_iv")} == {0.75}
    assert [e[0] for e in cytokine_events("rhil15_iv")] == list(range(1, 13))
    assert [(e[0], e[2]) for e in cytokine_events("n803")] == [(0.0, 10.0), (7.0, 10.0), (14.0, 10.0)]
    assert [(e[0], e[2]) for e in cytokine_events("rhil15_sc")] == [(float(d), 2.0) for d in range(1, 11)]


def test_il2dt_is_never_taken_and_differing_groups_are_refused(monkeypatch):
    """Only cytokine kinds are read (not il2dt); a protocol whose groups differ needs a named group."""
    monkeypatch.setitem(CYTOKINES, "test_il2dt_source", "bachanova2014_il2dt")
    events = cytokine_events("test_il2dt_source")
    assert events and {e[1] for e in events} == {"il2"}
    assert any(e.kind == "il2dt" for e in load_protocol("bachanova2014_il2dt").events_for(
        load_protocol("bachanova2014_il2dt").patients[0]))
    monkeypatch.setitem(CYTOKINES, "test_no_group", "cooley2019_rhil15_iv")
    with pytest.raises(NksimInputError, match="do not share one non-empty schedule.*CYTOKINE_GROUPS"):
        cytokine_events("test_no_group")


def test_doses_after_end_day_are_left_out():
    sched = effective_schedule({}, {"cytokine": "n803"}, "<spec>", "factors")
    d = protocol_dict(sched, end_day=10.0)
    assert [e["day"] for e in d["events"] if e["kind"] == "n803"] == [0.0, 7.0]
    build_protocol(d, ["vp0000"], "<spec>")


# --- "none" changes nothing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("regimen", ["trial", "hi_cy_flu", "none"])
def test_none_leaves_schedule_protocol_and_digest_unchanged(regimen):
    plain = effective_schedule({"regimen": regimen}, {}, "<spec>", "factors")
    none = effective_schedule({"regimen": regimen}, {"cytokine": "none"}, "<spec>", "factors")
    assert "cytokine" not in plain and none == plain
    assert protocol_dict(none) == protocol_dict(plain)
    assert not [e for e in protocol_dict(plain)["events"] if e["kind"] in CYTOKINE_KINDS]
    with_il2 = effective_schedule({"regimen": regimen}, {"cytokine": "il2"}, "<spec>", "factors")
    assert with_il2 == {**plain, "cytokine": "il2"}
    # a spec that names cytokine = "none" resolves to the very plan of one that does not
    a = build_plan(tiny_spec(baseline={"regimen": regimen}))
    b = build_plan(tiny_spec(baseline={"regimen": regimen, "cytokine": "none"}))
    assert a.digest == b.digest and a.to_json() == b.to_json()
    assert not any("cytokine" in sc["schedule"] for sc in a["scenarios"])


def test_store_has_a_cytokine_coordinate_only_when_used(tmp_path):
    plain = SweepStore.create(tmp_path / "plain.zarr", build_plan(tiny_spec()))
    try:
        with pytest.raises(KeyError):
            plain.coord("cytokine")
    finally:
        plain.unlock()
    spec = tiny_spec(factors={"cytokine": ["none", "il2"]})
    store = SweepStore.create(tmp_path / "il2.zarr", build_plan(spec), dict(spec.raw))
    try:
        assert [str(c) for c in store.coord("cytokine")] == ["none", "il2"]
        events = [str(e) for e in store.coord("events")]
        assert '"il2"' in events[1] and '"il2"' not in events[0]
    finally:
        store.unlock()


# --- spec: where it may be given, labels, errors -------------------------------------------------------------
def test_accepted_in_baseline_factors_and_scenarios_with_labels():
    plan = build_plan(tiny_spec(factors={"cytokine": ["none", "il2", "rhil15_iv", "rhil15_sc", "n803"]}))
    assert [sc["label"] for sc in plan["scenarios"]] == [
        "cytokine=none", "cytokine=il2", "cytokine=rhil15_iv", "cytokine=rhil15_sc", "cytokine=n803"]
    assert [sc["schedule"].get("cytokine", "none") for sc in plan["scenarios"]] == list(CYTOKINES)
    plan = build_plan(list_spec({"cytokine": "n803", "interval": 14}, {"interval": 14}, baseline={"cytokine": "il2"}))
    assert [sc["label"] for sc in plan["scenarios"]] == ["cytokine=n803 interval=14", "interval=14"]
    assert [sc["schedule"]["cytokine"] for sc in plan["scenarios"]] == ["n803", "il2"]  # the baseline's otherwise
    kinds = [{e.kind for e in plan.protocol(i).events} & set(CYTOKINE_KINDS) for i in range(2)]
    assert kinds == [{"n803"}, {"il2"}]


@pytest.mark.parametrize("data, key", [
    (tiny(baseline={"cytokine": "il-2"}), "baseline.cytokine"),
    (tiny(factors={"cytokine": ["none", "IL2"]}), "factors.cytokine[1]"),
    (tiny(factors=None, sweep={"design": "list"}, scenarios=[{"cytokine": "il2dt"}]), "scenarios[0].cytokine"),
    (tiny(baseline={"cytokine": 2}), "baseline.cytokine"),
])
def test_bad_value_names_file_key_and_allowed_values(data, key):
    with pytest.raises(NksimInputError, match=r"is not an allowed cytokine; " + ALLOWED.replace("[", r"\[")) as info:
        spec_from_dict(data, "spec.toml")
    assert info.value.key == key and "spec.toml" in str(info.value)


def test_cytokine_cannot_be_sampled():
    with pytest.raises(NksimInputError, match="categorical"):
        spec_from_dict(tiny(sweep={"design": "lhs"}, factors={"cytokine": {"min": 0, "max": 1}}, sampling={"n": 4}),
                       "spec.toml")


# --- end to end ---------------------------------------------------------------------------------------------
def test_il2_reaches_the_simulated_patient():
    """One patient simulated from the plan: IL-2 in the central compartment after day 0 only with cytokine il2."""
    short = {"end_day": 14, "assessment_days": [7, 14], "landmark_day": 14}
    plan = build_plan(list_spec({"cytokine": "none"}, {"cytokine": "il2"}, sweep=short))
    il2 = []
    for s in range(2):
        ds = nksim.simulate(plan.parameters(s, 0), plan.protocol(s), plan.patients[0], seed=plan["seed"])
        il2.append(ds["il2_central"])
    none, with_il2 = il2
    assert float(np.abs(none).max()) == 0.0
    after = with_il2.sel(time=slice(1, None)).values
    assert after.size == 14 and (after > 0).all()
    assert float(with_il2.sel(time=slice(None, -1)).max()) == 0.0  # nothing before the first dose


def test_a_cytokine_schedule_is_not_the_trials_reference():
    """Summaries take the trial's schedule as the reference: the same schedule with a cytokine is not it."""
    from nksim.sweep.summaries import _same_schedule, trial_schedule

    trial = trial_schedule()
    assert _same_schedule(trial, dict(trial))
    assert not _same_schedule({**trial, "cytokine": "il2"}, trial)
    assert not _same_schedule(trial, {**trial, "cytokine": "n803"})


# --- cytokine_course: the course restarted at each infusion ---------------------------------------------------
def _cyto_rows(proto):
    return sorted((e.day, e.kind, e.dose, e.unit) for e in proto.events if e.kind in CYTOKINE_KINDS)


def test_each_course_restarts_at_every_infusion_and_merges_shared_days():
    """The IL-2 course (days 0, 2, ..., 10 after an infusion) restarts at each infusion.

    Infusions on days 0 and 7: days 0-10 and 7-17 in steps of 2, one dose a day; 14 days apart: two
    separate courses; one infusion: identical to 'first'.
    """
    course = source_schedule("bachanova2014_hi_cy_flu")
    plan = build_plan(list_spec(
        {"cytokine": "il2", "interval": 7, "dose_split": [50, 50]},
        {"cytokine": "il2", "interval": 7, "dose_split": [50, 50], "cytokine_course": "each"},
        {"cytokine": "il2", "interval": 14, "dose_split": [50, 50], "cytokine_course": "each"},
        {"cytokine": "il2", "dose_split": [100], "cytokine_course": "each"},
        {"cytokine": "il2", "dose_split": [100]},
        sweep={"end_day": 40, "assessment_days": [28], "landmark_day": 28}))
    first, each7, each14, single_each, single_first = (_cyto_rows(plan.protocol(s)) for s in range(5))
    assert first == course
    assert [r[0] for r in each7] == [0, 2, 4, 6, 7, 8, 9, 10, 11, 13, 15, 17]
    assert {(r[2], r[3]) for r in each7} == {(9.0, "1e6")}  # one 9 MIU dose a day, never two
    assert [r[0] for r in each14] == [0, 2, 4, 6, 8, 10, 14, 16, 18, 20, 22, 24]
    assert single_each == single_first == course
    # recorded only when not the default; labelled when swept; the infusions are the same in both
    assert "cytokine_course" not in plan["scenarios"][0]["schedule"]
    assert plan["scenarios"][1]["schedule"]["cytokine_course"] == "each"
    nk = [[e for e in plan.protocol(s).events if e.kind == "nk_infusion"] for s in (0, 1)]
    assert nk[0] == nk[1]


def test_each_course_keeps_the_course_of_an_infusion_of_share_0():
    """[100, 0] with 'each': one infusion (the whole dose on day 0) and a second IL-2 course from day 7.

    The control that tells a second course from a second infusion; with 'first' the 0 share changes nothing.
    """
    course = source_schedule("bachanova2014_hi_cy_flu")
    plan = build_plan(list_spec(
        {"cytokine": "il2", "interval": 7, "dose_split": [100, 0], "cytokine_course": "each"},
        {"cytokine": "il2", "interval": 7, "dose_split": [50, 50], "cytokine_course": "each"},
        {"cytokine": "il2", "interval": 7, "dose_split": [100, 0]},
        sweep={"end_day": 40, "assessment_days": [28], "landmark_day": 28}))
    control, split, first = (plan.protocol(s) for s in range(3))
    nk = [(e.day, e.dose) for e in control.events if e.kind == "nk_infusion"]
    assert nk == [(0.0, pytest.approx(plan["scenarios"][0]["schedule"]["total_dose"]))]
    assert _cyto_rows(control) == _cyto_rows(split)  # the same two courses as the 50/50 split 7 days apart
    assert _cyto_rows(first) == course
    assert plan["scenarios"][0]["schedule"]["n_infusions"] == 1


def test_course_without_cytokine_or_first_leaves_the_plan_unchanged():
    a = build_plan(tiny_spec())
    assert build_plan(tiny_spec(baseline={"cytokine_course": "each"})).digest == a.digest  # no cytokine: no course
    b = build_plan(tiny_spec(baseline={"cytokine": "il2"}))
    assert build_plan(tiny_spec(baseline={"cytokine": "il2", "cytokine_course": "first"})).digest == b.digest
    assert build_plan(tiny_spec(baseline={"cytokine": "il2", "cytokine_course": "each"})).digest != b.digest


def test_course_value_is_checked_and_stored_as_a_coordinate(tmp_path):
    with pytest.raises(NksimInputError, match="not an allowed cytokine course; allowed: \\['each', 'first'\\]") as e:
        spec_from_dict(tiny(factors={"cytokine_course": ["first", "every"]}), "spec.toml")
    assert e.value.key == "factors.cytokine_course[1]"
    spec = tiny_spec(baseline={"cytokine": "il2"}, factors={"cytokine_course": ["first", "each"]})
    store = SweepStore.create(tmp_path / "c.zarr", build_plan(spec), dict(spec.raw))
    try:
        assert [str(c) for c in store.coord("cytokine_course")] == ["first", "each"]
    finally:
        store.unlock()


def test_each_course_is_not_the_reference_and_not_an_optimise_candidate():
    from nksim.optimise.candidate import Candidate
    from nksim.sweep.summaries import _same_schedule

    sched = effective_schedule({"cytokine": "il2"}, {}, "<t>", "")
    each = effective_schedule({"cytokine": "il2", "cytokine_course": "each"}, {}, "<t>", "")
    assert _same_schedule(sched, dict(sched)) and not _same_schedule(sched, each)
    Candidate.from_sweep_schedule(sched)
    with pytest.raises(NksimInputError, match="cytokine_course"):
        Candidate.from_sweep_schedule(each)
