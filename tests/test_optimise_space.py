"""nksim optimise: schedules, the declared space and spec validation (no simulation)."""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from nksim.errors import NksimInputError  # noqa: E402
from nksim.optimise.candidate import Candidate  # noqa: E402
from nksim.optimise.space import parse_space  # noqa: E402
from nksim.optimise.spec import load_spec, spec_from_dict  # noqa: E402
from nksim.protocol import protocol_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "experiments" / "optimise").glob("*.toml"))

SPACE = {"regimen": "hi_cy_flu", "nk_product": "fresh", "total_dose": 1e7, "cytokine": "il2",
         "n_infusions": {"low": 1, "high": 4}, "gap": {"low": 1, "high": 14}, "interval": {"low": 3, "high": 28},
         "donor": {"choices": ["same", "new"]}}


def _cand(**kw) -> Candidate:
    base = dict(regimen="hi_cy_flu", nk_product="fresh", cytokine="il2", cytokine_start=0.0, gap=2.0,
                days=(0.0, 14.0), shares=(50.0, 50.0), donors=("donor1", "donor2"), total_dose=1e7)
    base.update(kw)
    return Candidate(**base)


def _raw() -> dict:
    return {"optimise": {"name": "t", "seed": 1, "horizon": 120, "assessment_days": [34, 60],
                         "draws_from": "prior", "space": copy.deepcopy(SPACE),
                         "constraints": {"last_infusion_day": 42}, "reference": {"gap": 2, "days": [0]}}}


def test_shares_meet_the_constraints_for_any_weights():
    space = parse_space(SPACE, {"min_share": 10, "share_step": 5}, "<t>")
    grid = [0.0, 0.01, 0.3, 0.5, 0.99, 1.0]
    for n in (2, 3, 4):
        for w in itertools.product(grid, repeat=n):
            sh = space.shares(list(w))
            assert len(sh) == n
            assert sum(sh) == pytest.approx(100.0)
            assert min(sh) >= 10.0
            assert all(abs(s / 5 - round(s / 5)) < 1e-9 for s in sh)
    # weights order the shares (larger weight, share at least as large)
    sh = space.shares([0.9, 0.1, 0.5])
    assert sh[0] >= sh[2] >= sh[1]


def test_intervals_are_scaled_to_end_by_the_last_day_and_keep_the_low_end():
    space = parse_space(SPACE, {"last_infusion_day": 30}, "<t>")
    for ivs in ([28, 28, 28], [3, 28], [10, 10, 10], [28], [3, 3, 3]):
        out = space.fit_intervals(list(ivs))
        assert sum(out) <= 30
        assert all(x >= 3 for x in out)
        if sum(ivs) <= 30:
            assert out == list(ivs)


def test_neighbours_stay_in_the_space_and_differ_by_one_move():
    space = parse_space(SPACE, {"last_infusion_day": 42}, "<t>")
    c = _cand(days=(0.0, 14.0, 20.0), shares=(40.0, 40.0, 20.0), donors=("donor1", "donor1", "donor2"))
    nb = space.neighbours(c)
    assert nb and all(space.contains(n) for n in nb)
    assert len({n.key() for n in nb}) == len(nb) and c.key() not in {n.key() for n in nb}
    for n in nb:
        changed = [f for f in ("gap", "days", "shares", "donors") if getattr(n, f) != getattr(c, f)]
        assert len(changed) == 1
    # at a boundary the move out of the space is not offered
    edge = _cand(gap=1.0)
    assert all(n.gap >= 1 for n in space.neighbours(edge))


def test_candidate_protocol_has_the_dated_events():
    c = _cand(days=(0.0, 10.0), shares=(70.0, 30.0), donors=("donor1", "donor2"), cytokine_start=3.0, gap=5.0)
    d = c.protocol_dict(name="x", end_day=200, assessment_days=[28])
    inf = [e for e in d["events"] if e["kind"] == "nk_infusion"]
    assert [e["day"] for e in inf] == [0.0, 10.0]
    assert [e["dose"] for e in inf] == pytest.approx([7e6, 3e6])
    assert [e["donor"] for e in inf] == ["donor1", "donor2"]
    ld = [e for e in d["events"] if e["kind"] in ("fludarabine", "cyclophosphamide")]
    assert max(e["day"] for e in ld) == -5.0  # the last lymphodepleting dose `gap` days before
    il2 = sorted(e["day"] for e in d["events"] if e["kind"] == "il2")
    assert il2[0] == 3.0  # Bachanova's IL-2 starts on day 0, shifted by cytokine_start
    assert c.lymphodepletion_offset() == 5.0 + 4.0  # Hi-Cy/Flu starts 4 days before its last dose
    d["patients"] = [{"id": "a", "group": "all"}]
    protocol_from_dict(d, "<t>")  # a valid protocol


@pytest.mark.parametrize("change, key", [
    (dict(days=(0.0, 0.0)), "days"), (dict(shares=(60.0, 60.0)), "shares"), (dict(gap=0.0), "gap"),
    (dict(regimen="cy_only"), "regimen"), (dict(total_dose=-1.0), "total_dose"), (dict(days=(1.0, 5.0)), "days"),
])
def test_invalid_candidates_name_the_field(change, key):
    with pytest.raises(NksimInputError, match=key):
        _cand(**change)


def test_shipped_specs_load():
    assert SPECS
    for p in SPECS:
        spec = load_spec(p)
        for f in ("regimen", "nk_product", "total_dose"):  # compared like with like: the same regimen, product, dose
            assert getattr(spec.reference, f) == spec.space.dims[f].value
        assert spec.space.contains(spec.reference)  # the shipped references are schedules of their spaces
        assert spec.horizon > spec.assessment_days[0]


@pytest.mark.parametrize("path, value, message", [
    (("optimise", "tirals"), 4, "unknown key 'tirals'"),
    (("optimise", "space", "gapp"), 3, "unknown dimension 'gapp'"),
    (("optimise", "space", "gap"), {"low": 0, "high": 3}, r"\[1, 60\] day"),
    (("optimise", "space", "gap"), {"low": 5, "high": 3}, "above high"),
    (("optimise", "space", "interval"), {"low": 3.5, "high": 9}, "whole number"),
    (("optimise", "space", "cytokine"), {"choices": ["il3"]}, "must be one of"),
    (("optimise", "space", "total_dose"), -1e7, r"\[1000, 1e\+10\] kg-1"),
    (("optimise", "constraints", "min_share"), 40, "exceed 100"),
    (("optimise", "constraints", "share_step"), 7, "must divide 100"),
    (("optimise", "constraints", "last_infusion_day"), 5, "cannot end by day"),
    (("optimise", "constraints", "first_day"), 5, "unknown constraint"),
    (("optimise", "horizon"), 60, "not before the horizon"),
    (("optimise", "reference", "shares"), [50, 50], "one entry per infusion"),
    (("optimise", "reference", "donor"), "x", "unknown key 'donor'"),
    (("optimise", "objective"), "cr", "objective"),
    (("optimise", "alpha"), 0.9, "alpha"),
    (("optimise", "banks", "confirm", "patients"), 1, ">= 2"),
    (("optimise", "banks", "serch"), {}, "unknown key 'serch'"),
    (("parameters", "nk.kill_rate"), 1.0, "nk.kill_rate"),
])
def test_bad_specs_are_refused_naming_the_key(path, value, message):
    raw = _raw()
    t = raw
    for k in path[:-1]:
        t = t.setdefault(k, {})
    t[path[-1]] = value
    with pytest.raises(NksimInputError, match=message) as exc:
        spec_from_dict(raw, "spec.toml")
    assert "spec.toml" in str(exc.value)


def test_reference_needs_values_the_space_varies():
    raw = _raw()
    raw["optimise"]["space"]["cytokine"] = {"choices": ["il2", "rhil15_sc"]}
    with pytest.raises(NksimInputError, match="give the reference's cytokine"):
        spec_from_dict(raw, "spec.toml")
    raw["optimise"]["reference"]["cytokine"] = "il2"
    assert spec_from_dict(raw, "spec.toml").reference.cytokine == "il2"


def test_cytokine_length_shortens_the_course_and_keeps_old_keys():
    whole = _cand()
    short = _cand(cytokine_days=5.0)
    day_of = lambda c: sorted(e["day"] for e in c.protocol_dict(name="x", end_day=200, assessment_days=[28])["events"]  # noqa: E731
                              if e["kind"] == "il2")
    assert day_of(whole) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # Bachanova: IL-2 every other day x6 from day 0
    assert day_of(short) == [0.0, 2.0, 4.0]
    assert day_of(_cand(cytokine_days=5.0, cytokine_start=3.0)) == [3.0, 5.0, 7.0]
    assert "cytokine_days" not in whole.key() and "cytokine_days" in short.key()
    assert Candidate.from_mapping(whole.as_dict()) == whole and Candidate.from_mapping(short.as_dict()) == short
    space = parse_space({**SPACE, "cytokine_days": {"low": 2, "high": 10}}, {}, "<t>")
    nb = {n.cytokine_days for n in space.neighbours(_cand(cytokine_days=5.0))}
    assert {4.0, 6.0} <= nb


def test_profile_varies_one_factor_and_stays_in_the_space():
    space = parse_space(SPACE, {"last_infusion_day": 42}, "<t>")
    c = _cand(days=(0.0, 14.0, 20.0), shares=(40.0, 40.0, 20.0), donors=("donor1", "donor1", "donor2"), gap=5.0)
    prof = space.profile(c, levels=6)
    assert set(prof) == {"gap", "interval", "first_share"}
    for pts in prof.values():
        assert all(space.contains(p) for _, p in pts)
        assert any(p == c for _, p in pts)  # the schedule's own level is a point
        for _, p in pts:
            changed = [f for f in ("gap", "days", "shares") if getattr(p, f) != getattr(c, f)]
            assert len(changed) <= 1
    assert min(lv for lv, _ in prof["gap"]) == 1 and max(lv for lv, _ in prof["gap"]) == 14
    assert all(p.shares[0] + p.shares[1] == 80.0 and p.shares[2] == 20.0 for _, p in prof["first_share"])
    assert all(p.intervals[1] == 6.0 for _, p in prof["interval"])  # later infusions move with the first interval
