"""Observed trial data (calibration/data): the shipped files, the synthetic example and validation."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import nksim
from nksim.calibration.data import (
    CONFIDENCE_LEVELS,
    DATA_DIR,
    RESPONSE_LABELS,
    SERIES_QUANTITIES,
    ChimerismTarget,
    ObservedTrial,
    PatientOutcome,
    SeriesPoint,
    default_observed,
    load_observed,
    load_outcomes,
    load_series,
    load_targets,
)
from nksim.errors import NksimInputError, NksimWarning

OUTCOMES = DATA_DIR / "ahmadvand2023_outcomes.csv"
TARGETS = DATA_DIR / "analogue_chimerism.toml"
EXAMPLE = DATA_DIR / "examples" / "synthetic_series.csv"
REPO = DATA_DIR.parents[1]
IDS = [f"p{i:02d}" for i in range(1, 11)]


# ----------------------------------------------------------------------------- shipped data
def test_data_dir_is_repository_folder():
    assert DATA_DIR == REPO / "calibration" / "data"
    assert OUTCOMES.is_file() and TARGETS.is_file() and (DATA_DIR / "SCHEMA.md").is_file()


def test_shipped_outcomes_match_the_abstract():
    obs = default_observed()
    assert isinstance(obs, ObservedTrial)
    assert [o.patient for o in obs.outcomes] == IDS
    assert obs.series == () and len(obs.files) == 2
    ev = obs.evaluable()
    assert len(ev) == 9 and all(isinstance(o, PatientOutcome) for o in ev)
    p01 = obs.outcome("p01")
    assert not p01.evaluable and p01.first_response is None and p01.progressed is None
    resp = {o.patient: o.first_response for o in ev}
    assert sorted(p for p, r in resp.items() if r == "PD") == ["p02", "p06", "p10"]
    assert sorted(p for p, r in resp.items() if r == "SD") == ["p03", "p04", "p05", "p07", "p08", "p09"]
    assert not any(r in ("CR", "PR") for r in resp.values())  # no CR
    assert all(o.first_assessment_day == 28 for o in ev)
    # PD at first assessment: progressed within (0, 28]
    for p in ("p02", "p06", "p10"):
        o = obs.outcome(p)
        assert o.progressed is True and o.progression_day_lo == 0 and o.progression_day_hi == 28
    # of the 5 followed SD patients, 3 progressed at 9 months, 2 stayed SD
    followed = [o for o in ev if o.first_response == "SD" and not o.lost_to_follow_up]
    assert len(followed) == 5
    assert sorted(o.patient for o in followed if o.progressed) == ["p04", "p05", "p07"]
    for p in ("p04", "p05", "p07"):
        o = obs.outcome(p)
        # converted "at 9 months": bracketed by the assessments at day 180 (SD, assumption) and 270
        assert (o.progression_day_lo, o.progression_day_hi) == (180, 270)
        assert o.confidence == "assumption" and "assessments at 90 and 180 days were SD" in o.note
    for p in ("p08", "p09"):
        o = obs.outcome(p)
        assert o.progressed is False and o.last_followup_day == 270
    # p03 censored after the first assessment
    p03 = obs.outcome("p03")
    assert p03.lost_to_follow_up and p03.progressed is None and p03.last_followup_day == 28
    assert [o.patient for o in obs.outcomes if o.lost_to_follow_up] == ["p03"]
    # dose groups agree with the shipped protocol
    proto = nksim.load_protocol("ahmadvand2023")
    for o in obs.outcomes:
        assert o.dose_group == proto.patient(o.patient).group
        assert o.evaluable == proto.patient(o.patient).evaluable
    with pytest.raises(KeyError):
        obs.outcome("p99")


def test_looser_reading_is_a_documented_alternative_file():
    """(28, 270]: only the first assessment is known SD; everything else as in the default file."""
    alt = load_observed(DATA_DIR / "ahmadvand2023_outcomes_any_time.csv")
    default = default_observed()
    for o, d in zip(alt.outcomes, default.outcomes):
        if o.patient in ("p04", "p05", "p07"):
            assert (o.progression_day_lo, o.progression_day_hi) == (28, 270) and "looser reading" in o.note
            assert (d.progression_day_lo, d.progression_day_hi) == (180, 270)
        else:
            assert (o.progressed, o.progression_day_lo, o.progression_day_hi, o.last_followup_day,
                    o.first_response) == (d.progressed, d.progression_day_lo, d.progression_day_hi,
                                          d.last_followup_day, d.first_response)
    text = (DATA_DIR / "ahmadvand2023_outcomes_any_time.csv").read_text()
    assert 'progression_timing = "any"' in text  # the header comment says how to use it


def test_shipped_rows_have_provenance():
    obs = default_observed()
    for o in obs.outcomes:
        assert o.source.strip() and "Ahmadvand 2023" in o.source
        assert o.confidence in CONFIDENCE_LEVELS and o.confidence != "synthetic"
        assert o.note.strip()
    for t in obs.targets:
        assert t.source.strip() and t.confidence in CONFIDENCE_LEVELS
    # the plain CSV has exactly the documented columns and 10 rows
    with open(OUTCOMES, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["patient", "evaluable", "dose_group", "first_response", "first_assessment_day", "progressed",
                       "progression_day_lo", "progression_day_hi", "last_followup_day", "lost_to_follow_up",
                       "source", "confidence", "note"]
    assert len(rows) == 11
    assert set(RESPONSE_LABELS) == {"CR", "PR", "SD", "PD"}


def test_shipped_targets():
    targets = load_targets(TARGETS, protocol="ahmadvand2023")
    assert all(isinstance(t, ChimerismTarget) for t in targets)
    by = {t.quantity: t for t in targets}
    assert set(by) == {"peak_donor_chimerism_pbmc", "lymphocyte_count", "share_donor_nk_above"}
    assert "haplo_nk_peak_day" not in {t.name for t in targets}
    assert "independent validation" in " ".join(TARGETS.read_text().replace("#", " ").lower().split())
    chim = by["peak_donor_chimerism_pbmc"]
    assert chim.value == pytest.approx(0.065) and chim.unit == "percent" and chim.statistic == "median"
    assert chim.log10_sd == pytest.approx(0.5) and chim.sd is None and chim.window == (1.0, 28.0)
    assert chim.protocol == "nkae_consolidation" and chim.weight == 0.5 and "weak analogue" in chim.note
    lym = by["lymphocyte_count"]
    assert lym.value == 100.0 and lym.unit == "uL-1" and lym.window == (0.0, 0.0) and lym.weight == 1.0
    assert lym.protocol == "cart_flucy_ld" and lym.sd is None
    # 50-300 per uL is about +-1 sd around 100 on the log10 scale
    assert math.log10(100 / 50) <= lym.log10_sd + 0.1 and math.log10(300 / 100) >= lym.log10_sd - 0.1
    share = by["share_donor_nk_above"]
    assert share.value == 0.10 and share.threshold == 100.0 and share.window == (14.0, 14.0)
    assert share.statistic == "mean" and share.unit == "1" and share.sd == 0.1 and share.log10_sd is None
    assert share.protocol == "bachanova2014_hi_cy_flu" and share.confidence == "A"
    assert nksim.load_protocol(share.protocol).nk_product == "fresh"
    for t in targets:
        nksim.load_protocol(t.protocol)  # every named protocol loads


def test_target_protocol_defaults_to_the_trial(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text(_targets_text(**{'protocol = "nkae_consolidation"\n': ''}))
    t = load_targets(f)[0]
    assert t.protocol is None  # the calibrated trial's protocol (its twins)
    # its window is checked against the trial's start_day, an analogue target's against its own protocol's
    f.write_text(_targets_text(**{'protocol = "nkae_consolidation"\n': '', 'window = [1, 28]': 'window = [-8, 28]'}))
    assert load_targets(f, start_day=-9)[0].window == (-8.0, 28.0)
    f.write_text(_targets_text(**{'window = [1, 28]': 'window = [-8, 28]'}))
    with pytest.raises(NksimInputError, match=r"t\.toml.*target\[0\] \('nkae_peak_chimerism'\)\.window\[0\].*"
                                              r"nkae_consolidation' start_day"):
        load_targets(f, start_day=-9)


def test_peak_day_target_still_allowed(tmp_path):
    f = tmp_path / "day.toml"
    f.write_text('[[target]]\nname = "d"\nquantity = "peak_day"\nstatistic = "median"\nvalue = 10.0\nunit = "day"\n'
                 'sd = 4.0\nwindow = [1, 28]\nprotocol = "hi_cy_flu"\nsource = "s"\nconfidence = "B"\n')
    (t,) = load_targets(f)
    assert t.sd == 4.0 and t.protocol == "hi_cy_flu"
    f.write_text(f.read_text().replace("value = 10.0", "value = 40.0"))
    with pytest.raises(NksimInputError, match="within the window"):
        load_targets(f)


def test_synthetic_example_loads():
    assert EXAMPLE.stat().st_size < 30_000
    proto = nksim.load_protocol("ahmadvand2023")
    obs = load_observed(OUTCOMES, TARGETS, EXAMPLE, protocol=proto)
    assert obs.series and all(isinstance(s, SeriesPoint) for s in obs.series)
    assert len(obs.files) == 3
    quantities = {s.quantity for s in obs.series}
    assert quantities == {"donor_chimerism_pbmc", "donor_chimerism_nk", "marrow_blast_pct"}
    for s in obs.series:
        assert s.unit == SERIES_QUANTITIES[s.quantity][0]
        assert s.confidence == "synthetic" and "NOT trial data" in s.source
        assert s.day >= proto.start_day
        if s.quantity.startswith("donor_chimerism"):
            assert s.lod == pytest.approx(0.01)
            assert (s.below_lod and math.isnan(s.value)) or (not s.below_lod and s.value >= 0.01)
        else:
            assert s.lod is None and 0 <= s.value <= 100
    assert {s.patient for s in obs.series} == {o.patient for o in obs.evaluable()}
    assert sorted({s.day for s in obs.series if s.quantity == "marrow_blast_pct"}) == [-9, 28, 90, 180, 270]
    assert sorted({s.day for s in obs.series if s.quantity == "donor_chimerism_pbmc"}) == [1, 3, 7, 8, 14, 21, 28]
    frame = obs.series_frame()
    assert len(frame) == len(obs.series)
    assert list(frame.columns) == ["patient", "day", "quantity", "value", "unit", "lod", "below_lod", "method",
                                   "source", "confidence"]
    assert frame["below_lod"].sum() == sum(s.below_lod for s in obs.series)


def test_empty_series_frame_has_columns():
    frame = default_observed().series_frame()
    assert len(frame) == 0 and "quantity" in frame.columns and "below_lod" in frame.columns


def test_make_synthetic_example_refuses_overwrite_and_is_reproducible(tmp_path):
    script = REPO / "calibration" / "make_synthetic_example.py"
    out = tmp_path / "s.csv"
    out.write_text("keep\n")
    r = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode != 0 and "--overwrite" in r.stderr
    assert out.read_text() == "keep\n"
    # the shipped file is exactly what the script makes with its default seed
    r = subprocess.run([sys.executable, str(script), "--out", str(out), "--overwrite"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == EXAMPLE.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary file left


def test_comment_lines_and_blank_lines_are_skipped(tmp_path):
    text = OUTCOMES.read_text()
    f = tmp_path / "c.csv"
    f.write_text("# a comment\n# another, with a comma\n" + text.replace("\np05", "\n\n# mid comment\np05"))
    outs = load_outcomes(f, patients=IDS, start_day=-9)
    assert [o.patient for o in outs] == IDS


# ----------------------------------------------------------------------------- outcome validation
def _outcome_rows() -> tuple[list[str], list[dict[str, str]]]:
    with open(OUTCOMES, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), [dict(r) for r in reader]


def _write_outcomes(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _row_index(rows, pid):
    return next(i for i, r in enumerate(rows) if r["patient"] == pid)


# (patient, {field: new value}, field named in the error, fragment of the message)
BAD_OUTCOMES = [
    ("p02", {"patient": "p11"}, "patient", "unknown patient"),
    ("p02", {"first_response": "MRD"}, "first_response", "CR, PR, SD, PD"),
    ("p04", {"first_response": ""}, "first_response", "no response"),
    ("p01", {"first_response": "SD"}, "first_response", "not evaluable"),
    ("p01", {"last_followup_day": "30"}, "last_followup_day", "not evaluable"),
    ("p02", {"evaluable": "yes"}, "evaluable", "true, false"),
    ("p08", {"lost_to_follow_up": "1"}, "lost_to_follow_up", "true, false"),
    ("p02", {"first_assessment_day": "-12"}, "first_assessment_day", "before lymphodepletion"),
    ("p08", {"last_followup_day": "nine months"}, "last_followup_day", "not a number"),
    ("p04", {"progression_day_lo": "300"}, "progression_day_lo", "progression_day_hi"),
    ("p04", {"progression_day_hi": ""}, "progression_day_hi", "progressed=true"),
    ("p08", {"last_followup_day": ""}, "last_followup_day", "progressed=false"),
    ("p03", {"last_followup_day": ""}, "last_followup_day", "censored"),
    ("p02", {"progressed": "false", "progression_day_lo": "", "progression_day_hi": "", "last_followup_day": "28"},
     "progressed", "PD"),
    ("p02", {"progressed": ""}, "progressed", "PD"),
    ("p08", {"progression_day_hi": "100"}, "progression_day_hi", "only allowed with progressed=true"),
    ("p02", {"source": ""}, "source", "non-empty"),
    ("p02", {"confidence": ""}, "confidence", "non-empty"),
    ("p02", {"confidence": "high"}, "confidence", "A, B, C, assumption, synthetic"),
    ("p02", {"dose_group": "g3"}, "dose_group", "g1, g2"),
]


@pytest.mark.parametrize("pid,change,field,fragment", BAD_OUTCOMES,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(BAD_OUTCOMES)])
def test_bad_outcomes(tmp_path, pid, change, field, fragment):
    header, rows = _outcome_rows()
    i = _row_index(rows, pid)
    rows[i].update(change)
    f = _write_outcomes(tmp_path / "bad_outcomes.csv", header, rows)
    with pytest.raises(NksimInputError) as exc:
        load_observed(f)
    msg = str(exc.value)
    assert "bad_outcomes.csv" in msg
    assert f"data row {i + 1} " in msg and f"line {i + 2}" in msg
    assert f"'{field}'" in msg
    assert fragment in msg
    assert exc.value.key == field


def test_duplicate_patient(tmp_path):
    header, rows = _outcome_rows()
    rows.append(dict(rows[3]))
    f = _write_outcomes(tmp_path / "dup.csv", header, rows)
    with pytest.raises(NksimInputError, match=r"dup\.csv.*data row 11 .*'patient'.*duplicate patient 'p04'.*row 4"):
        load_observed(f)


def test_unknown_and_missing_columns(tmp_path):
    header, rows = _outcome_rows()
    f = _write_outcomes(tmp_path / "extra.csv", header + ["response_day"], [dict(r, response_day="1") for r in rows])
    with pytest.raises(NksimInputError, match=r"extra\.csv.*unknown column 'response_day'.*allowed columns: patient"):
        load_observed(f)
    f = _write_outcomes(tmp_path / "missing.csv", [h for h in header if h != "confidence"], rows)
    with pytest.raises(NksimInputError, match=r"missing\.csv.*missing column 'confidence'"):
        load_observed(f)


def test_wrong_field_count(tmp_path):
    lines = OUTCOMES.read_text().splitlines()
    lines[3] = lines[3] + ",extra"
    f = tmp_path / "ragged.csv"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(NksimInputError, match=r"ragged\.csv.*data row 3 \(line 4\).*14 fields"):
        load_outcomes(f)


def test_outcomes_without_protocol_skip_protocol_checks(tmp_path):
    header, rows = _outcome_rows()
    rows[1]["patient"] = "x99"
    rows[1]["progression_day_lo"] = "-20"
    outs = load_outcomes(_write_outcomes(tmp_path / "free.csv", header, rows))
    assert outs[1].patient == "x99" and outs[1].progression_day_lo == -20
    with pytest.raises(NksimInputError, match="before lymphodepletion"):
        load_outcomes(tmp_path / "free.csv", start_day=-9)
    with pytest.raises(NksimInputError, match="unknown patient 'x99'"):
        load_outcomes(tmp_path / "free.csv", patients=IDS)


def test_group_mismatch_with_protocol_warns(tmp_path):
    header, rows = _outcome_rows()
    rows[_row_index(rows, "p02")]["dose_group"] = "g2"
    f = _write_outcomes(tmp_path / "swap.csv", header, rows)
    with pytest.warns(NksimWarning, match="p02"):
        obs = load_observed(f)
    assert obs.outcome("p02").dose_group == "g2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default_observed()


# ----------------------------------------------------------------------------- target validation
def _targets_text(**replace: str) -> str:
    text = TARGETS.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text


BAD_TARGETS = [
    ({'weight = 0.5': 'weight = 0.5\ncolour = "red"'}, "target[0].colour", "unknown key 'colour'"),
    ({'[meta]': '[meta]\nauthor = "x"'}, "meta.author", "allowed keys"),
    ({'[meta]': 'extra = 1\n[meta]'}, "extra", "allowed top-level keys"),
    ({'quantity = "peak_donor_chimerism_pbmc"': 'quantity = "chimerism"'}, "quantity", "peak_donor_chimerism_pbmc"),
    ({'statistic = "median"': 'statistic = "mode"'}, "statistic", "median, mean"),
    ({'unit = "percent"': 'unit = "1"'}, "unit", "'percent'"),
    ({'unit = "uL-1"': 'unit = "per uL"'}, "unit", "'uL-1'"),
    ({'value = 0.065': 'value = 150.0'}, "value", "outside"),
    ({'value = 100.0': 'value = -1.0'}, "value", "uL-1"),
    ({'log10_sd = 0.5': 'sd = 0.5'}, "sd", "not allowed"),
    ({'log10_sd = 0.4': 'sd = 0.4'}, "cart_ld_lymphocyte_count').sd", "not allowed"),
    ({'log10_sd = 0.4\n': ''}, "log10_sd", "missing key 'log10_sd'"),
    ({'window = [1, 28]': 'window = [28, 1]'}, "window[1]", "outside"),
    ({'window = [1, 28]': 'window = [1, 200]'}, "window[1]", "end_day"),
    ({'window = [1, 28]': 'window = [-20, 28]'}, "window[0]", "start_day"),
    ({'window = [0, 0]': 'window = [0, 3]'}, "cart_ld_lymphocyte_count').window[1]", "one day"),
    ({'protocol = "cart_flucy_ld"': 'protocol = "no_such_protocol"'}, "cart_ld_lymphocyte_count').protocol",
     "does not load"),
    ({'protocol = "cart_flucy_ld"': 'protocol = 3'}, "cart_ld_lymphocyte_count').protocol", "protocol name"),
    ({'confidence = "B"': 'confidence = "likely"'}, "confidence", "A, B, C, assumption, synthetic"),
    ({'confidence = "B"': 'confidence = ""'}, "confidence", "non-empty"),
    ({'source = "Vela': 'sauce = "Vela'}, "sauce", "unknown key"),
    ({'name = "cart_ld_lymphocyte_count"': 'name = "nkae_peak_chimerism"'}, "name", "duplicate target name"),
    ({'threshold = 100.0\n': ''}, "bachanova_expansion_share').threshold", "missing key 'threshold'"),
    ({'threshold = 100.0': 'threshold = -5.0'}, "bachanova_expansion_share').threshold", "uL-1"),
    ({'value = 0.10': 'value = 10.0'}, "bachanova_expansion_share').value", "share of patients"),
    ({'statistic = "mean"': 'statistic = "median"'}, "bachanova_expansion_share').statistic", "must be 'mean'"),
    ({'window = [14, 14]': 'window = [7, 14]'}, "bachanova_expansion_share').window[1]", "one day"),
    ({'weight = 0.5': 'weight = 0.5\nthreshold = 3.0'}, "nkae_peak_chimerism').threshold", "only allowed"),
]


@pytest.mark.parametrize("replace,key,fragment", BAD_TARGETS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_TARGETS)])
def test_bad_targets(tmp_path, replace, key, fragment):
    f = tmp_path / "bad_targets.toml"
    f.write_text(_targets_text(**replace))
    with pytest.raises(NksimInputError) as exc:
        load_observed(OUTCOMES, f)
    msg = str(exc.value)
    assert "bad_targets.toml" in msg and key in msg and fragment in msg


def test_targets_need_source_and_valid_toml(tmp_path):
    f = tmp_path / "nosource.toml"
    lines = [ln for ln in TARGETS.read_text().splitlines() if not ln.startswith("source = \"CAR-T")]
    f.write_text("\n".join(lines))
    with pytest.raises(NksimInputError, match=r"nosource\.toml.*target\[1\]\.source.*missing key 'source'"):
        load_targets(f)
    f = tmp_path / "broken.toml"
    f.write_text("[[target]\nname = 1")
    with pytest.raises(NksimInputError, match=r"broken\.toml.*not valid TOML"):
        load_targets(f)
    f = tmp_path / "none.toml"
    f.write_text('[meta]\ndescription = "nothing"\n')
    with pytest.raises(NksimInputError, match=r"none\.toml.*at least one \[\[target\]\]"):
        load_targets(f)


# ----------------------------------------------------------------------------- series validation
SERIES_HEADER = "patient,day,quantity,value,unit,lod,method,source,confidence\n"
GOOD = "p02,7,donor_chimerism_pbmc,0.5,percent,0.01,STR-PCR,lab report,A\n"


def _series(tmp_path: Path, *lines: str, header: str = SERIES_HEADER) -> Path:
    f = tmp_path / "bad_series.csv"
    f.write_text(header + GOOD + "".join(lines))
    return f


def test_good_series_and_lod(tmp_path):
    f = _series(tmp_path, "p02,14,donor_chimerism_nk,<LOD,percent,0.1,flow,lab report,B\n",
                "p03,28,marrow_blast_pct,35,percent,,aspirate,lab report,A\n",
                "p03,7,donor_nk_blood,12.5,uL-1,,flow,lab report,C\n")
    pts = load_series(f, patients=IDS, start_day=-9)
    assert len(pts) == 4
    assert pts[1].below_lod and math.isnan(pts[1].value) and pts[1].lod == 0.1
    assert pts[2].lod is None and not pts[2].below_lod and pts[2].value == 35.0
    # lod and method columns are optional
    f2 = tmp_path / "short.csv"
    f2.write_text("patient,day,quantity,value,unit,source,confidence\np02,1,donor_nk_blood,3,uL-1,lab,A\n")
    assert load_series(f2)[0].method == ""


# (bad line, field named in the error, fragment)
BAD_SERIES = [
    ("p12,7,donor_chimerism_pbmc,0.5,percent,0.01,STR,lab,A\n", "patient", "unknown patient 'p12'"),
    ("p02,-10,donor_chimerism_pbmc,0.5,percent,0.01,STR,lab,A\n", "day", "before lymphodepletion"),
    ("p02,day7,donor_chimerism_pbmc,0.5,percent,0.01,STR,lab,A\n", "day", "not a number"),
    ("p02,8,chimerism,0.5,percent,0.01,STR,lab,A\n", "quantity", "donor_chimerism_pbmc, donor_chimerism_nk"),
    ("p02,8,donor_chimerism_pbmc,0.5,%,0.01,STR,lab,A\n", "unit", "allowed unit: 'percent'"),
    ("p02,8,donor_nk_blood,5,percent,,flow,lab,A\n", "unit", "allowed unit: 'uL-1'"),
    ("p02,8,donor_chimerism_pbmc,120,percent,0.01,STR,lab,A\n", "value", "[0, 100]"),
    ("p02,8,donor_nk_blood,-1,uL-1,,flow,lab,A\n", "value", "outside"),
    ("p02,8,donor_chimerism_pbmc,nan,percent,0.01,STR,lab,A\n", "value", "finite"),
    ("p02,8,donor_chimerism_pbmc,high,percent,0.01,STR,lab,A\n", "value", "<lod"),
    ("p02,8,donor_chimerism_pbmc,,percent,0.01,STR,lab,A\n", "value", "missing"),
    ("p02,8,donor_chimerism_pbmc,<lod,percent,,STR,lab,A\n", "lod", "no lod"),
    ("p02,8,donor_chimerism_pbmc,<lod,percent,0,STR,lab,A\n", "lod", "> 0"),
    ("p02,8,donor_chimerism_pbmc,0.5,percent,0.01,STR,,A\n", "source", "non-empty"),
    ("p02,8,donor_chimerism_pbmc,0.5,percent,0.01,STR,lab,\n", "confidence", "non-empty"),
    ("p02,8,donor_chimerism_pbmc,0.5,percent,0.01,STR,lab,D\n", "confidence", "A, B, C, assumption, synthetic"),
    ("p02,7,donor_chimerism_pbmc,0.6,percent,0.01,STR-PCR,lab,A\n", "day", "duplicate measurement"),
]


@pytest.mark.parametrize("line,field,fragment", BAD_SERIES, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_SERIES)])
def test_bad_series(tmp_path, line, field, fragment):
    f = _series(tmp_path, line)
    with pytest.raises(NksimInputError) as exc:
        load_observed(OUTCOMES, series=f)
    msg = str(exc.value)
    assert "bad_series.csv" in msg and "data row 2 (line 3)" in msg and f"'{field}'" in msg and fragment in msg
    assert exc.value.key == field


def test_series_unknown_and_missing_columns(tmp_path):
    f = _series(tmp_path, header=SERIES_HEADER.replace("method", "assay"))
    with pytest.raises(NksimInputError, match=r"bad_series\.csv.*unknown column 'assay'.*allowed columns"):
        load_series(f)
    f = tmp_path / "nounit.csv"
    f.write_text("patient,day,quantity,value,source,confidence\np02,1,donor_nk_blood,3,lab,A\n")
    with pytest.raises(NksimInputError, match=r"nounit\.csv.*missing column 'unit'"):
        load_series(f)


def test_start_day_follows_the_protocol(tmp_path):
    f = tmp_path / "early.csv"
    f.write_text(SERIES_HEADER + "p02,-8,marrow_blast_pct,40,percent,,aspirate,lab,A\n")
    # Hi-Cy/Flu starts on day -6, ahmadvand2023 on day -9
    assert len(load_observed(OUTCOMES, series=f, protocol="ahmadvand2023").series) == 1
    hi = nksim.load_protocol("hi_cy_flu")
    assert hi.start_day == -6 and [p.id for p in hi.patients] == IDS
    with pytest.raises(NksimInputError, match=r"early\.csv.*data row 1 .*'day'.*before lymphodepletion.*-6"):
        load_observed(OUTCOMES, series=f, protocol=hi)


def test_missing_file():
    with pytest.raises(NksimInputError, match="no_such.csv.*not found"):
        load_outcomes("no_such.csv")


def test_share_target_counts_patients_above_the_threshold_on_its_day():
    """A share target's per-patient value is 1 above the threshold on the window day, 0 at or below, NaN outside."""
    from nksim.calibration.distance import target_z
    from nksim.calibration.model import target_value
    from nksim.calibration.summaries import cohort_statistic
    from nksim.quantities import RECORD, RECORD_INDEX

    share = {t.name: t for t in load_targets(TARGETS)}["bachanova_expansion_share"]
    start = -6.0
    per_patient = []
    for day14 in (250.0, 100.0, 99.0, 0.0, 1e4):
        rec = np.zeros((30, len(RECORD)))
        rec[:, RECORD_INDEX["donor_nk_blood"]] = 5000.0  # other days never count
        rec[int(14 - start), RECORD_INDEX["donor_nk_blood"]] = day14
        per_patient.append(target_value(rec, start, share))
    assert per_patient == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert cohort_statistic(np.array(per_patient), share.statistic) == pytest.approx(0.4)
    short = np.zeros((10, len(RECORD)))  # day 14 not simulated
    assert math.isnan(target_value(short, start, share))
    # the misfit is linear in the share: (0.4 - 0.1) / 0.1 = 3; zero expansion costs one sd
    assert target_z(0.4, share) == pytest.approx(3.0)
    assert target_z(0.0, share) == pytest.approx(-1.0)
