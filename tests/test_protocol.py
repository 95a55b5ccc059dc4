"""Treatment protocols: the shipped files, and validation of events, patients and schedules."""
from __future__ import annotations

import copy

import pytest

import nksim
from nksim.protocol import EVENT_UNITS, Event, protocol_from_dict


def _days(events, kind):
    return sorted(e.day for e in events if e.kind == kind)


# ----------------------------------------------------------------------------- shipped protocols
def test_ahmadvand2023(ahmadvand):
    p = ahmadvand
    assert p.name == "ahmadvand2023"
    assert [x.id for x in p.patients] == [f"p{i:02d}" for i in range(1, 11)]
    assert not p.patient("p01").evaluable
    assert all(p.patient(f"p{i:02d}").evaluable for i in range(2, 11))
    assert all(p.patient(f"p{i:02d}").group == "g1" for i in range(1, 6))
    assert all(p.patient(f"p{i:02d}").group == "g2" for i in range(6, 11))
    for pid in ("p01", "p10"):
        evs = p.events_for(pid)
        assert _days(evs, "fludarabine") == [-9, -8, -7]
        assert _days(evs, "cyclophosphamide") == [-8, -7]
        assert _days(evs, "nk_infusion") == [0, 7]
        assert list(evs) == sorted(evs)
    assert p.start_day <= -9 and p.end_day >= 365
    assert p.infusions_after_lymphodepletion
    # the high-dose group gets more NK cells at each infusion
    g1 = [e.dose for e in p.events_for("p02") if e.kind == "nk_infusion"]
    g2 = [e.dose for e in p.events_for("p07") if e.kind == "nk_infusion"]
    assert all(b > a for a, b in zip(g1, g2))


def test_hi_cy_flu():
    p = nksim.load_protocol("hi_cy_flu")
    evs = p.events_for(p.patients[0])
    flu = [e for e in evs if e.kind == "fludarabine"]
    cy = [e for e in evs if e.kind == "cyclophosphamide"]
    assert [e.day for e in flu] == [-6, -5, -4, -3, -2]
    assert all(e.dose == 25.0 and e.unit == "mg m-2" for e in flu)
    assert [e.day for e in cy] == [-5, -4]
    assert all(e.dose == 60.0 and e.unit == "mg kg-1" for e in cy)
    assert len(p.patients) == 10


def test_unknown_protocol_name():
    with pytest.raises(nksim.NksimInputError, match="ahmadvand2023"):
        nksim.load_protocol("no_such_protocol_xyz")


# ----------------------------------------------------------------------------- validation
BASE = {
    "protocol": {"name": "t", "start_day": -5, "end_day": 30, "assessment_days": [28],
                 "infusions_after_lymphodepletion": True, "nk_product": "expanded"},
    "events": [
        {"day": -5, "kind": "fludarabine", "dose": 30.0, "unit": "mg m-2"},
        {"day": -4, "kind": "cyclophosphamide", "dose": 60.0, "unit": "mg kg-1"},
        {"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"},
    ],
    "patients": [{"id": "p1", "group": "a"}],
}


def base():
    return copy.deepcopy(BASE)


def expect_error(data, *fragments):
    with pytest.raises(nksim.NksimInputError) as info:
        protocol_from_dict(data, "proto.toml")
    msg = str(info.value)
    assert "proto.toml" in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return info.value


def test_base_is_valid():
    p = protocol_from_dict(base())
    assert [e.kind for e in p.events_for("p1")] == ["fludarabine", "cyclophosphamide", "nk_infusion"]


def test_unknown_event_kind():
    d = base()
    d["events"][0]["kind"] = "busulfan"
    expect_error(d, "events[0].kind", "busulfan", "fludarabine")


@pytest.mark.parametrize("i, unit", [(0, "mg kg-1"), (1, "mg m-2"), (2, "1"), (0, "g m-2")])
def test_wrong_dose_unit(i, unit):
    d = base()
    d["events"][i]["unit"] = unit
    expect_error(d, f"events[{i}].unit", EVENT_UNITS[d["events"][i]["kind"]])


@pytest.mark.parametrize("dose", [0.0, -20.0, float("nan"), float("inf"), "20"])
def test_bad_dose(dose):
    d = base()
    d["events"][0]["dose"] = dose
    expect_error(d, "events[0].dose")


@pytest.mark.parametrize("day", [-5, -4])  # before / on the last lymphodepleting day (-4)
def test_infusion_not_after_lymphodepletion(day):
    d = base()
    d["events"][2]["day"] = day
    expect_error(d, "not after the last lymphodepleting dose")


def test_infusion_on_last_lymphodepletion_day_rejected_but_allowed_when_flag_false():
    d = base()
    d["events"][1]["day"] = 0  # the last dose (Cy) on the infusion day, day 0
    expect_error(d, "infusion on day 0", "(day 0)")
    d["protocol"]["infusions_after_lymphodepletion"] = False
    p = protocol_from_dict(d)
    assert not p.infusions_after_lymphodepletion
    assert _days(p.events_for("p1"), "cyclophosphamide") == [0]


def test_infusion_before_lymphodepletion_allowed_when_flag_false():
    d = base()
    d["events"][0]["day"] = 2  # fludarabine after the infusion (day 0)
    expect_error(d, "infusion")
    d["protocol"]["infusions_after_lymphodepletion"] = False
    protocol_from_dict(d)


@pytest.mark.parametrize("day", [-6, 30, 45])
def test_event_outside_window(day):
    d = base()
    d["events"].append({"day": day, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"})
    expect_error(d, "outside the simulated window")


def test_no_infusion_rejected():
    d = base()
    del d["events"][2]
    expect_error(d, "no nk_infusion")


@pytest.mark.parametrize("n", [1, 3, 5])
def test_any_number_of_infusions(n):
    d = base()
    d["events"] = d["events"][:2] + [
        {"day": 7 * k, "kind": "nk_infusion", "dose": 1e6 * (k + 1), "unit": "kg-1"} for k in range(n)
    ]
    p = protocol_from_dict(d)
    assert _days(p.events_for("p1"), "nk_infusion") == [7 * k for k in range(n)]


def test_duplicate_patient():
    d = base()
    d["patients"].append({"id": "p1", "group": "a"})
    expect_error(d, "duplicate", "p1")


def test_unknown_group():
    d = base()
    inf = d["events"].pop(2)
    d["groups"] = {"low": {"events": [inf]}}
    d["patients"] = [{"id": "p1", "group": "high"}]
    expect_error(d, "patients[0].group", "high", "low")
    d["patients"] = [{"id": "p1", "group": "low"}]
    assert protocol_from_dict(d).patient("p1").group == "low"


def test_group_events_are_validated_per_group():
    d = base()
    d["events"].pop(2)
    d["groups"] = {
        "ok": {"events": [{"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}]},
        "bad": {"events": [{"day": -4, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}]},
    }
    d["patients"] = [{"id": "p1", "group": "ok"}]  # even with no patient in it, a bad group is an error
    expect_error(d, "groups.bad")


@pytest.mark.parametrize(
    "where, field",
    [("top", "extras"), ("protocol", "colour"), ("event", "route"), ("patient", "age")],
)
def test_unknown_field(where, field):
    d = base()
    target = {"top": d, "protocol": d["protocol"], "event": d["events"][0], "patient": d["patients"][0]}[where]
    target[field] = 1
    expect_error(d, field)


@pytest.mark.parametrize("missing", ["name", "start_day", "end_day", "assessment_days"])
def test_missing_protocol_field(missing):
    d = base()
    del d["protocol"][missing]
    expect_error(d, missing)


@pytest.mark.parametrize(
    "field, value",
    [
        ("assessment_days", []),
        ("assessment_days", [28, 14]),
        ("assessment_days", [28, 28]),
        ("assessment_days", [40]),
        ("assessment_days", [10.5]),
        ("snapshot_days", [-9]),
        ("start_day", 1),
        ("start_day", -2.5),
        ("end_day", 0),
    ],
)
def test_bad_protocol_days(field, value):
    d = base()
    d["protocol"][field] = value
    expect_error(d, "protocol")


def test_patient_covariates_units_and_ranges():
    d = base()
    d["patients"][0]["body_weight"] = {"value": 80.0, "unit": "kg"}
    d["patients"][0]["baseline_blast_pct"] = {"value": 35.0, "unit": "percent"}
    p = protocol_from_dict(d).patient("p1")
    assert dict(p.covariates) == {"body_weight": 80.0, "baseline_blast_pct": 35.0}
    d["patients"][0]["body_weight"] = {"value": 80000.0, "unit": "g"}
    expect_error(d, "patients[0].body_weight.unit", "kg")
    d["patients"][0]["body_weight"] = {"value": 500.0, "unit": "kg"}
    expect_error(d, "patients[0].body_weight.value")
    d["patients"][0]["body_weight"] = {"value": 80.0, "unit": "kg"}
    d["patients"][0]["baseline_blast_pct"] = {"value": 0.4, "unit": "1"}
    expect_error(d, "baseline_blast_pct.unit", "percent")


def test_patient_disease_status_is_checked():
    d = base()
    assert protocol_from_dict(d).patient("p1").disease == "active"  # the default
    d["patients"][0]["disease"] = "remission"
    assert protocol_from_dict(d).patient("p1").disease == "remission"
    d["patients"][0]["disease"] = "CR1"
    expect_error(d, "patients[0].disease", "active", "remission")
    d["patients"][0]["disease"] = 1
    expect_error(d, "patients[0].disease", "string")


def test_shipped_protocols_mark_the_patients_in_remission():
    """The trials' populations in remission (first CR, molecular relapse) are marked; refractory ones are not."""
    feh = nksim.load_protocol("fehniger2018_cndo109")
    assert {p.disease for p in feh.patients} == {"remission"}
    assert {p.disease for p in nksim.load_protocol("nkae_consolidation").patients} == {"remission"}
    curti = nksim.load_protocol("curti2011_elderly")
    assert {p.group: p.disease for p in curti.patients} == {"active": "active", "molecular": "remission",
                                                             "cr": "remission"}
    assert {p.disease for p in nksim.load_protocol("ahmadvand2023").patients} == {"active"}


def test_evaluable_must_be_boolean():
    d = base()
    d["patients"][0]["evaluable"] = "yes"
    expect_error(d, "evaluable")


def test_protocol_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad_protocol.toml"
    p.write_text(
        '[protocol]\nname = "x"\nstart_day = -2\nend_day = 10\nassessment_days = [5]\nnk_product = "fresh"\n'
        '[[events]]\nday = 0\nkind = "fludarabine"\ndose = 25.0\nunit = "mg kg-1"\n'
    )
    with pytest.raises(nksim.NksimInputError) as info:
        nksim.load_protocol(p)
    assert "bad_protocol.toml" in str(info.value) and "mg m-2" in str(info.value)
    p.write_text("[protocol\n")
    with pytest.raises(nksim.NksimInputError, match="bad_protocol.toml"):
        nksim.load_protocol(p)


def test_with_events_revalidates(ahmadvand):
    evs = list(ahmadvand.events)
    groups = {g: [e for e in ev if e.kind != "nk_infusion"] + [Event(-8.0, "nk_infusion", 1e6)]
              for g, ev in ahmadvand.groups.items()}
    with pytest.raises(nksim.NksimInputError, match="not after"):
        ahmadvand.with_events(evs, groups)
    three = {g: list(ev) + [Event(14.0, "nk_infusion", 1e7)] for g, ev in ahmadvand.groups.items()}
    p = ahmadvand.with_events(evs, three)
    assert _days(p.events_for("p03"), "nk_infusion") == [0, 7, 14]


def test_event_not_on_a_time_step_rejected_at_simulation(small_params, make_protocol):
    proto = make_protocol([(0, "nk_infusion", 1e6), (0.1, "il2", 1.0)], start_day=0, end_day=3)  # 2.4 h, dt = 1 h
    with pytest.raises(nksim.NksimInputError, match="time step"):
        nksim.simulate(small_params.with_values({"lattice.side": 4}), proto)


# ----------------------------------------------------------------------------- bounded, consistent schedules
@pytest.mark.parametrize("kind", sorted(EVENT_UNITS))
def test_each_event_kind_has_a_dose_range(kind):
    from nksim.protocol import MAX_DOSE

    hi = MAX_DOSE[kind][0]
    d = base()
    d["protocol"]["infusions_after_lymphodepletion"] = False  # a drug on day 1 is fine here
    if kind == "nk_infusion":
        i = 2
    else:
        i = 3
        d["events"].append({"day": 1, "kind": kind, "dose": 1.0, "unit": EVENT_UNITS[kind]})
    d["events"][i]["dose"] = hi
    protocol_from_dict(d)  # the maximum itself is allowed
    d["events"][i]["dose"] = hi * 1.01
    err = expect_error(d, f"events[{i}].dose", "allowed range (0, ", EVENT_UNITS[kind])
    assert err.key == f"events[{i}].dose"


def test_huge_nk_dose_rejected_with_range():
    d = base()
    d["events"][2]["dose"] = 5e13
    expect_error(d, "events[2].dose", "5e+13", "(0, 1e+10] kg-1")


def test_total_nk_dose_over_infusions_is_bounded():
    d = base()
    d["events"][2]["dose"] = 6e9
    d["events"].append({"day": 7, "kind": "nk_infusion", "dose": 6e9, "unit": "kg-1"})
    expect_error(d, "total NK dose", "1.2e+10", "1e+10")


def test_with_events_checks_doses(ahmadvand):
    groups = {g: list(ev) + [Event(3.0, "il2", 5e4)] for g, ev in ahmadvand.groups.items()}
    with pytest.raises(nksim.NksimInputError, match="il2 dose"):
        ahmadvand.with_events(list(ahmadvand.events), groups)


def test_two_infusions_same_day_same_donor_rejected():
    d = base()
    d["events"].append({"day": 0, "kind": "nk_infusion", "dose": 2e6, "unit": "kg-1"})
    expect_error(d, "two nk_infusion events", "day 0", "summed dose", "3e+06")


def test_two_infusions_same_day_from_different_donors_allowed():
    d = base()
    d["events"][2]["donor"] = "A"
    d["events"].append({"day": 0, "kind": "nk_infusion", "dose": 2e6, "unit": "kg-1", "donor": "B"})
    p = protocol_from_dict(d)
    assert sorted(e.donor for e in p.events_for("p1") if e.kind == "nk_infusion") == ["A", "B"]


@pytest.mark.parametrize("kind, dose", [("fludarabine", 30.0), ("cyclophosphamide", 10.0), ("il2", 1.0)])
def test_duplicate_drug_event_rejected(kind, dose):
    d = base()
    day = {"fludarabine": -5, "cyclophosphamide": -4, "il2": 3}[kind]
    d["events"] += [{"day": day, "kind": kind, "dose": dose, "unit": EVENT_UNITS[kind]}] * (2 if kind == "il2" else 1)
    expect_error(d, f"two {kind} events", f"day {day}")


def test_duplicate_split_between_common_and_group_events_rejected():
    d = base()
    d["groups"] = {"a": {"events": [{"day": -5, "kind": "fludarabine", "dose": 30.0, "unit": "mg m-2"}]}}
    expect_error(d, "groups.a.events", "two fludarabine events", "day -5")


def test_same_drug_on_different_days_and_times_allowed():
    d = base()
    d["events"] += [{"day": day, "kind": "il2", "dose": 1.0, "unit": "1e6"} for day in (1, 1.5, 2)]
    assert _days(protocol_from_dict(d).events_for("p1"), "il2") == [1, 1.5, 2]


def test_unsorted_events_are_accepted_and_sorted():
    d = base()
    d["events"] = list(reversed(d["events"])) + [{"day": 7, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"},
                                                 {"day": -3, "kind": "fludarabine", "dose": 30.0, "unit": "mg m-2"}]
    d["events"][0], d["events"][3] = d["events"][3], d["events"][0]
    evs = protocol_from_dict(d).events_for("p1")
    assert list(evs) == sorted(evs)
    assert [e.day for e in evs] == [-5, -4, -3, 0, 7]


@pytest.mark.parametrize("day", [2, 0.5, 10])
def test_first_infusion_must_be_on_day_0(day):
    d = base()
    d["events"][2]["day"] = day
    err = expect_error(d, f"first nk_infusion is on day {day:g}", "must be on day 0", "days since the first NK")
    assert err.key == "events"


def test_first_infusion_day_checked_per_group():
    d = base()
    d["events"].pop(2)
    d["groups"] = {"ok": {"events": [{"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}]},
                   "late": {"events": [{"day": 3, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"},
                                       {"day": 10, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}]}}
    d["patients"] = [{"id": "p1", "group": "ok"}]
    expect_error(d, "groups.late.events", "day 3")


def test_shipped_protocols_satisfy_the_schedule_rules():
    from nksim.protocol import PROTOCOLS_DIR

    names = sorted(p.stem for p in PROTOCOLS_DIR.glob("*.toml"))
    assert len(names) >= 8
    for name in names:
        p = nksim.load_protocol(name)
        for pt in p.patients:
            assert min(e.day for e in p.events_for(pt) if e.kind == "nk_infusion") == 0, name


def test_sweep_interval_0_gives_one_infusion_of_the_total():
    """A sweep's interval 0 is the single-infusion schedule: one event, not two on day 0."""
    from nksim.sweep.scenario import build_protocol, schedule_protocol

    d = schedule_protocol({"gap": 7, "interval": 0, "dose_split": (80.44, 19.56), "total_dose": 7.266e7},
                          name="t", title="", end_day=30, assessment_days=[28], ld_events=[(0, "fludarabine", 25.0)])
    p = build_protocol(d, ["p1"], "<sweep>")
    inf = [e for e in p.events_for("p1") if e.kind == "nk_infusion"]
    assert [e.day for e in inf] == [0] and inf[0].dose == pytest.approx(7.266e7, rel=1e-12)
    from nksim.sweep.scenario import effective_schedule

    sched = effective_schedule({}, {"interval": 0, "dose_split": [75, 25]}, "<spec>", "factors")
    assert sched["n_infusions"] == 1  # what is given, not the split's length
    assert effective_schedule({}, {"interval": 7, "dose_split": [75, 25]}, "<spec>", "factors")["n_infusions"] == 2


def test_dose_factor_keeps_the_dose_caps():
    """Scaling NK doses (nksim screen --dose-factor) is validated like a protocol file: the 1e10 kg-1 cap holds."""
    p = nksim.load_protocol("ahmadvand2023")
    assert p.with_nk_dose_factor(100.0).events_for(p.patients[0])
    with pytest.raises(nksim.NksimInputError, match="dose"):
        p.with_nk_dose_factor(1e4)
