"""The trial registry (calibration/data/trials/, nksim.calibration.registry).

The shipped files, bad inputs, and the simulated counterparts of its observables on a tiny simulation.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import nksim
from nksim.calibration import registry as R
from nksim.protocol import PROTOCOLS_DIR

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "calibration" / "data" / "trials" / "README.md"


@pytest.fixture(scope="module")
def reg() -> R.Registry:
    return R.load_registry()


# ----------------------------------------------------------------------------- the shipped registry
def test_shipped_registry_loads_with_the_declared_counts(reg):
    assert reg.counts() == {"target": 16, "held_out": 45, "context": 29}  # St Jude arms added 2026-12-06
    assert len(reg.arms) == 21
    held_trials = {o.trial for o in reg.held_out()}
    assert len(held_trials) >= 8
    assert len(reg.held_out()) >= 30
    assert reg.split_declared == "2026-12-05"
    # the public API
    from nksim.calibration import load_registry

    assert load_registry().counts() == reg.counts()


def test_every_protocol_and_group_exists(reg):
    shipped = {p.stem for p in PROTOCOLS_DIR.glob("*.toml")}
    for a in reg.arms:
        assert a.protocol in shipped, a.id
        proto = nksim.load_protocol(a.protocol)
        groups = {p.group for p in proto.patients}
        for o in reg.observations:
            if o.arm == a.id and o.group is not None:
                assert o.group in groups, o.name
    assert set(reg.by_protocol()) <= shipped


def test_every_held_out_row_has_a_rule_and_a_simulated_counterpart(reg):
    for o in reg.held_out():
        assert o.rule and o.check != "none", o.name
        assert o.has_counterpart, o.name
        if o.check == "binomial_90":
            assert o.k is not None and o.n is not None
    for o in reg.context():
        assert o.check == "none"
    for o in reg.targets():
        assert o.has_counterpart, o.name


def test_miller_hi_cy_flu_is_recorded_once(reg):
    """Miller 2005 Hi-Cy/Flu = Bachanova cohort 1: no arm of its own, cohort 1 carries its 5/19."""
    assert "miller2005_hi_cy_flu" not in reg.by_protocol()
    c1 = reg.observation("bachanova_cr_cohort1")
    assert (c1.k, c1.n, c1.group) == (5, 19, "cd3_depleted")


def test_shares_and_units(reg):
    for o in reg.observations:
        if o.k is not None:
            assert 0 <= o.k <= o.n and o.unit == "1" and o.value == pytest.approx(o.k / o.n)
        elif o.value is not None and o.has_counterpart:
            assert o.unit == R.OBSERVABLES[o.observable].unit
    assert reg.observation("bachanova_il2dt_peak_in_expanders").unit == "uL-1"


def test_table_and_readme_agree(reg):
    frame = reg.table()
    assert len(frame) == len(reg.observations)
    assert set(frame["role"]) == set(R.ROLES)
    text = README.read_text(encoding="utf-8")
    assert reg.markdown() in text, "calibration/data/trials/README.md is out of date: paste Registry.markdown()"
    assert "2026-12-05" in text


# ----------------------------------------------------------------------------- bad inputs
GOOD_ARM = '''[arm]
id = "{stem}"
trial = "T"
label = "L"
protocol = "bachanova2014_hi_cy_flu"
population = "P"
enrolled = 10
evaluable = 10
source = "S"
grade = "A"
'''
GOOD_OBS = '''
[[observation]]
name = "x"
observable = "expansion_share"
k = 1
n = 10
day = 14
threshold = 100.0
of = "patients"
role = "held_out"
reason = "R"
check = "binomial_90"
rule = "inside"
grade = "A"
source = "S"
'''


def _write(tmp_path: Path, obs: str = GOOD_OBS, arm: str = GOOD_ARM, stem: str = "arm1") -> Path:
    folder = tmp_path / "trials"
    folder.mkdir(exist_ok=True)
    (folder / f"{stem}.toml").write_text(arm.format(stem=stem) + obs, encoding="utf-8")
    return folder


def test_a_good_file_loads(tmp_path):
    reg = R.load_registry(_write(tmp_path))
    (o,) = reg.observations
    assert (o.k, o.n, o.day, o.threshold, o.threshold_unit, o.protocol) == (1, 10, 14.0, 100.0, "uL-1",
                                                                             "bachanova2014_hi_cy_flu")


@pytest.mark.parametrize(("old", "new", "key", "allowed"), [
    ('source = "S"\n', 'source = "S"\ncolour = "red"\n', "observation[0]", "allowed"),         # unknown key
    ("k = 1\n", "k = 11\n", "observation[0] ('x').k", "0 <= k <= n"),                        # k > n
    ("k = 1\n", "k = -1\n", "observation[0] ('x').k", "0 <= k"),                             # negative
    ("k = 1\n", 'k = "1"\n', "observation[0].k", "integer"),                                 # wrong type
    ("threshold = 100.0\n", 'threshold = 100.0\nthreshold_unit = "percent"\n',
     "observation[0] ('x').threshold_unit", "uL-1"),                                         # wrong unit
    ('observable = "expansion_share"', 'observable = "expansion_rate"',
     "observation[0] ('x').observable", "cr_share_first_assessment"),                        # unknown observable
    ("day = 14\n", "day = 120\n", "observation[0] ('x').day", "start_day .. end_day"),       # after the run
    ('rule = "inside"\n', "", "observation[0] ('x').rule", "fixed before any fit"),           # held out, no rule
    ('check = "binomial_90"\n', "", "observation[0] ('x').check", "binomial_90"),            # held out, no check
    ('role = "held_out"', 'role = "maybe"', "observation[0] ('x').role", "target, held_out, context"),
    ('grade = "A"\nsource = "S"\n', 'source = "S"\n', "observation[0]", "grade"),             # missing grade
    ('source = "S"\n', 'source = ""\n', "observation[0] ('x').source", "non-empty"),          # empty source
    ("k = 1\n", 'group = "cohort9"\nk = 1\n', "observation[0] ('x').group", "cd3_depleted"),  # unknown group
])
def test_bad_observation_names_file_key_and_allowed(tmp_path, old, new, key, allowed):
    assert old in GOOD_OBS
    folder = _write(tmp_path, GOOD_OBS.replace(old, new, 1))
    with pytest.raises(nksim.NksimInputError) as info:
        R.load_registry(folder)
    msg = str(info.value)
    assert str(folder / "arm1.toml") in msg
    assert f"key '{key}" in msg
    assert allowed in msg


@pytest.mark.parametrize(("old", "new", "key", "allowed"), [
    ('protocol = "bachanova2014_hi_cy_flu"', 'protocol = "bachanova2099"', "arm.protocol",
     "bachanova2014_il2dt"),
    ('protocol = "bachanova2014_hi_cy_flu"', 'protocol = "bachanova2014_hi_cy_flu"\ngroup = "g9"', "arm.group",
     "cd56_selected"),
    ('grade = "A"', 'grade = "E"', "arm.grade", "A, B, C, D"),
    ("evaluable = 10", "evaluable = 12", "arm.evaluable", "evaluable <= enrolled"),
    ('id = "{stem}"', 'id = "other"', "arm.id", "file name"),
])
def test_bad_arm_names_file_key_and_allowed(tmp_path, old, new, key, allowed):
    assert old in GOOD_ARM
    folder = _write(tmp_path, arm=GOOD_ARM.replace(old, new, 1))
    with pytest.raises(nksim.NksimInputError, match=re.escape(f"key '{key}'")) as info:
        R.load_registry(folder)
    assert allowed in str(info.value) and "arm1.toml" in str(info.value)


def test_registry_wide_checks(tmp_path):
    folder = _write(tmp_path)
    _write(tmp_path, stem="arm2")                        # the same observation name twice
    with pytest.raises(nksim.NksimInputError, match=r"arm2\.toml.*duplicate observation name 'x'"):
        R.load_registry(folder)
    (folder / "arm2.toml").unlink()
    lower = GOOD_OBS.replace('check = "binomial_90"', 'check = "lower"\nversus = "nothing"')
    _write(tmp_path, lower)
    with pytest.raises(nksim.NksimInputError, match=r"key 'observation\[0\] \('x'\)\.versus'"):
        R.load_registry(folder)
    # unseparated-blood chimerism has no counterpart: context only
    ctx = GOOD_OBS.replace('observable = "expansion_share"', 'observable = "detectable_share"').replace(
        "threshold = 100.0\n", 'threshold = 1.0\nchimerism = "unseparated"\n')
    _write(tmp_path, ctx)
    with pytest.raises(nksim.NksimInputError, match="unseparated.*allowed role: context"):
        R.load_registry(folder)
    with pytest.raises(nksim.NksimInputError, match="no trial registry files"):
        R.load_registry(tmp_path / "empty")


# ----------------------------------------------------------------------------- simulated counterparts
@pytest.fixture(scope="module")
def tiny_bachanova():
    """Bachanova 2014 (no IL2DT) to its first assessment: 10 patients x 3 virtual trials on a 4 x 4 lattice."""
    params = nksim.load_parameters("default").with_values({"lattice.side": 4, "lattice.voxel_side": 4000.0},
                                                          origin="<tests: tiny lattice>")
    proto = nksim.load_protocol("bachanova2014_hi_cy_flu")
    proto = replace(proto, end_day=28.0, assessment_days=(28.0,), snapshot_days=())
    return nksim.simulate_cohort(params, proto, replicates=3, seed=7)


def test_simulated_counterparts_in_range(reg, tiny_bachanova):
    ds = tiny_bachanova
    obs = [o for o in reg.by_protocol()["bachanova2014_hi_cy_flu"] if o.has_counterpart]
    assert {o.observable for o in obs} >= {"expansion_share", "cr_share_first_assessment", "il15_peak_fold",
                                           "peak_day_chimerism", "peak_donor_chimerism"}
    assert R.simulation_end_day(obs) == 28.0
    for o in obs:
        per_trial = R.simulated_per_trial(o, ds)
        assert per_trial.shape == (3,)
        med, lo, hi = R.predictive_interval(o, ds, draws=500)
        assert lo <= med <= hi, o.name
        if o.is_share:
            assert np.all((per_trial >= 0) & (per_trial <= 1)), o.name
            assert 0 <= lo <= hi <= 1
        elif o.unit == "day":
            assert np.all((per_trial >= o.window[0]) & (per_trial <= o.window[1])), o.name
        else:
            assert np.all(per_trial >= 0), o.name
    cohort1 = R.simulated_per_patient(reg.observation("bachanova_cr_cohort1"), ds)
    assert cohort1.shape == (int((ds["group"].values == "cd3_depleted").sum()), 3)


def test_counterparts_agree_with_a_direct_computation(reg, tiny_bachanova):
    ds = tiny_bachanova
    o = reg.observation("bachanova_expansion_d14")
    direct = (ds["donor_nk_blood"].sel(time=14.0) > 100.0).mean("patient").values
    np.testing.assert_allclose(R.simulated_per_trial(o, ds), direct)
    o = reg.observation("bachanova_il15_rise_cohort1")
    sub = ds.isel(patient=ds["group"].values == "cd3_depleted")
    direct = sub["il15"].sel(time=slice(-6, 28)).max("time").median("patient").values
    np.testing.assert_allclose(R.simulated_per_trial(o, ds), direct)
    o = reg.observation("bachanova_cr_cohort2")
    ev = ds.isel(patient=ds["group"].values == "cd56_selected")
    direct = (ev["response"].isel(assessment=0) == nksim.observables.RESPONSE_CODES["CR"]).mean("patient").values
    np.testing.assert_allclose(R.simulated_per_trial(o, ds), direct)


def test_counterpart_refuses_the_wrong_protocol_or_a_short_run(reg, tiny_bachanova):
    with pytest.raises(ValueError, match="protocol 'bachanova2014_il2dt'"):
        R.simulated_per_trial(reg.observation("bachanova_il2dt_cr"), tiny_bachanova)
    short = tiny_bachanova.sel(time=slice(None, 10.0))
    with pytest.raises(ValueError, match="day 14 is not in the simulation's record"):
        R.simulated_per_trial(reg.observation("bachanova_expansion_d14"), short)
    with pytest.raises(ValueError, match="no simulated counterpart"):
        R.simulated_per_patient(reg.observation("bachanova_dfs_6mo"), tiny_bachanova)


def test_share_interval_and_clopper_pearson():
    rng = np.random.default_rng(0)
    med, lo, hi = R.share_interval(np.array([0.0, 1.0, np.nan, 0.0, 0.0]), 20, rng=rng, draws=2000)
    assert 0 <= lo <= med <= hi <= 1 and med == pytest.approx(0.25, abs=0.06)
    lo, hi = R.clopper_pearson(4, 42)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (2.7, 22.6)     # trials_checked.md s1.2
    assert R.clopper_pearson(0, 9)[0] == 0.0 and R.clopper_pearson(9, 9)[1] == 1.0


# ----------------------------------------------------------------------------- intervals under posterior draws
def test_between_trials_interval_is_binomial_when_trials_share_one_probability():
    """Same p in every virtual trial: the interval is Binomial(n, p)'s (the between-draw variance is noise)."""
    from scipy.stats import binom

    rng = np.random.default_rng(1)
    flags = (rng.random((10, 400)) < 0.3).astype(float)
    med, lo, hi = R.share_interval_between_trials(flags, 42)
    want = binom.ppf([0.05, 0.5, 0.95], 42, 0.3) / 42
    assert abs(lo - want[0]) <= 1.5 / 42 and abs(hi - want[2]) <= 1.5 / 42 and abs(med - want[1]) <= 1 / 42


def test_between_trials_interval_keeps_the_spread_between_draws():
    """The probability varies between draws (Beta(2, 6)): the interval is the true beta-binomial; coverage 90 %.

    400 virtual trials of 10 patients each (as nksim score simulates a protocol under posterior draws);
    the pooled bootstrap (share_interval) is too narrow. Coverage of 2000 trials drawn from the truth:
    within 0.84-0.97 (the interval of a discrete share covers at least its level, up to the moment estimate).
    """
    from scipy.stats import betabinom

    rng = np.random.default_rng(2)
    p = rng.beta(2.0, 6.0, size=400)
    flags = (rng.random((10, 400)) < p).astype(float)
    flags[9, ::7] = np.nan                      # a patient not evaluable in some trials
    n = 42
    med, lo, hi = R.share_interval_between_trials(flags, n)
    true = betabinom.ppf([0.05, 0.5, 0.95], n, 2.0, 6.0) / n
    assert abs(lo - true[0]) <= 2 / n and abs(hi - true[2]) <= 3 / n
    _, plo, phi = R.share_interval(flags, n, rng=np.random.default_rng(3))
    assert hi - lo > 1.5 * (phi - plo)
    k = betabinom.rvs(n, 2.0, 6.0, size=2000, random_state=4) / n
    cover = np.mean((k >= lo) & (k <= hi))
    assert 0.84 <= cover <= 0.97, cover


def test_between_trials_interval_edge_cases():
    assert all(np.isnan(R.share_interval_between_trials(np.full((3, 4), np.nan), 10)))
    assert R.share_interval_between_trials(np.zeros((5, 20)), 10) == (0.0, 0.0, 0.0)
    assert R.share_interval_between_trials(np.ones((5, 20)), 10) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("name, n_patients, nk_dose",
                         [("rubnitz2010_nkaml", 10, 29.0e6), ("nguyen2019_nkaml", 10, 12.5e6)])
def test_st_jude_protocols_follow_their_sources(name, n_patients, nk_dose):
    """The St Jude arms (added 2026-12-06) follow their abstracts.

    Cy 60 mg/kg on day -7, Flu 25 mg/m2 on days -6..-2, one purified NK infusion on day 0 at the published median
    dose, six IL-2 doses on days -1, 1, 3, 5, 7, 9; children in CR1.
    """
    proto = nksim.load_protocol(name)
    assert proto.nk_product == "fresh" and proto.infusions_after_lymphodepletion
    p = proto.patients[0]
    events = proto.events_for(p)
    by_kind: dict[str, list] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)
    assert [(e.day, e.dose) for e in by_kind["cyclophosphamide"]] == [(-7.0, 60.0)]
    assert [(e.day, e.dose) for e in by_kind["fludarabine"]] == [(float(d), 25.0) for d in range(-6, -1)]
    assert [(e.day, e.dose) for e in by_kind["nk_infusion"]] == [(0.0, nk_dose)]
    assert [e.day for e in by_kind["il2"]] == [-1.0, 1.0, 3.0, 5.0, 7.0, 9.0]
    assert all(e.dose == pytest.approx(0.9) for e in by_kind["il2"])  # 1 MIU m-2 x 0.9 m2
    assert len(proto.patients) == n_patients
    assert all(q.disease == "remission" and q.covariates["baseline_blast_pct"] < 5.0 for q in proto.patients)


def test_st_jude_rows_were_declared_with_their_roles(reg):
    """Targets: the pilot's engraftment share and duration; held out: its day-14 count and the phase II's share."""
    roles = {o.name: o.role for o in reg.observations if o.arm in ("rubnitz2010_nkaml", "nguyen2019_nkaml")}
    assert roles == {"rubnitz_engrafted": "target", "rubnitz_engraftment_days": "target",
                     "rubnitz_kir_mismatched_nk_d14": "held_out", "rubnitz_remission_2y": "context",
                     "nguyen_engrafted": "held_out"}
    nguyen = reg.observation("nguyen_engrafted")
    assert (nguyen.k, nguyen.n, nguyen.check) == (18, 21, "binomial_90")
