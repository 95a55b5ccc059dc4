"""Bad input is refused before any work, in one line; garbage is never returned (issue 23, part 2).

* patient lists: ``simulate_cohort(patients=["p02", "p02"])`` returned uninitialised memory in
  one slot and ``patients=[]`` an IndexError; duplicates, empty lists, strings and unknown ids
  are refused naming the problem, and :func:`nksim.output.build_dataset` refuses runs that do
  not fill the (patient x replicate) grid, so no unfilled slot can be returned;
* seeds: one check (:func:`nksim.checks.check_seed`, integers in ``[0, 2**64)``, NumPy integers
  too, never bools or floats) at every public entry point (``simulate`` accepted ``2**64``, and
  ``1.5`` ran as seed 1);
* TOML types: every field of protocols, model files, sweep specs and calibration configs is
  fuzzed with values of each wrong TOML type and arrays nested 40 and 3000 levels deep: always
  one NksimInputError line naming the file and the key, never another exception;
* ``--scheduler``: a malformed address is refused before any work naming ``--scheduler`` and the
  expected form; a scheduler without workers is waited for a bounded time, then one line;
* assessment days lie after the first NK infusion (day 0) and no later than ``end_day``.
"""
from __future__ import annotations

import copy
import logging
import re
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _sweep_util import tiny, write_toml
from _toml_fuzz import dump_toml, nested, wrong_type_cases

import nksim
from nksim.checks import check_seed
from nksim.cli import main
from nksim.errors import NksimInputError
from nksim.fileio import loads_toml
from nksim.output import build_dataset
from nksim.protocol import PROTOCOLS_DIR, protocol_from_dict
from nksim.streams import generators, seed_sequence

SIMULATE = sys.modules["nksim.simulate"]  # the module (``nksim.simulate`` is also a function)

SMALL_MODEL = ('[meta]\nname = "small"\nstatus = "test, uncalibrated"\nextends = "default"\n\n'
               '[lattice.side]\nvalue = 4\nunit = "1"\ndescription = "small test lattice"\nsource = "tests"\n')


def _one_line(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("nksim: error:"), err
    return err


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.toml"
    p.write_text(SMALL_MODEL)
    return p


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if anything starts simulating."""
    def boom(*args, **kwargs):
        raise AssertionError("simulated although the input should have been refused before")

    monkeypatch.setattr(SIMULATE, "run_one", boom)
    monkeypatch.setattr(SIMULATE, "simulate_cohort", boom)


@pytest.fixture(scope="module")
def tiny_setup():
    """A 4 x 4 lattice and a 10-day protocol with two patients: simulations of milliseconds."""
    params = nksim.load_parameters("default").with_values({"lattice.side": 4}, origin="<tests>")
    proto = protocol_from_dict({
        "protocol": {"name": "t", "start_day": -2, "end_day": 10, "assessment_days": [7], "nk_product": "fresh"},
        "events": [{"day": -2, "kind": "fludarabine", "dose": 25.0, "unit": "mg m-2"},
                   {"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}],
        "patients": [{"id": "p01", "group": "a"}, {"id": "p02", "group": "a"}],
    }, "<tiny>")
    return params, proto


# ----------------------------------------------------------------------------- patient lists
@pytest.mark.parametrize("patients, key, words", [
    (["p02", "p02"], "patients[1]", "'p02' is listed twice"),
    (["p01", "p02", "p01"], "patients[2]", "'p01' is listed twice"),
    ([], "patients", "empty"),
    ((), "patients", "empty"),
    ("p02", "patients", "got the string 'p02'"),
    (["p99"], "patients[0]", "unknown patient 'p99'"),
    ([2], "patients[0]", "must be a string"),
    (["p01", None], "patients[1]", "must be a string"),
    (5, "patients", "expected a list of patient ids"),
])
def test_bad_patient_lists_are_refused_before_simulating(patients, key, words, no_simulation):
    with pytest.raises(NksimInputError) as info:
        nksim.simulate_cohort("default", "ahmadvand2023", patients=patients)
    msg = str(info.value)
    assert f"key '{key}'" in msg and words in msg and "\n" not in msg, msg


@pytest.mark.parametrize("patient, words", [("p99", "unknown patient 'p99'"), (["p01"], "must be a string")])
def test_simulate_refuses_an_unknown_patient(patient, words, no_simulation):
    with pytest.raises(NksimInputError, match=words):
        nksim.simulate("default", "ahmadvand2023", patient)


def test_a_listed_subset_is_simulated_in_its_order(tiny_setup):
    params, proto = tiny_setup
    ds = nksim.simulate_cohort(params, proto, patients=["p02", "p01"], seed=3)
    assert list(ds.patient.values) == ["p02", "p01"]
    one = nksim.simulate(params, proto, "p01", seed=3)
    np.testing.assert_array_equal(ds["marrow_blast_pct"].sel(patient="p01", replicate=0), one["marrow_blast_pct"])
    assert np.isfinite(ds["marrow_blast_pct"].values).all()


def test_build_dataset_refuses_a_grid_it_cannot_fill(tiny_setup):
    params, proto = tiny_setup
    runs = [SIMULATE.run_one(params, proto, proto.patient(p), 0, 0) for p in ("p01", "p02")]
    assert build_dataset(runs, params, proto, ["p01", "p02"], 1, 0).sizes["patient"] == 2
    bad = [
        (runs, ["p02", "p02"], "listed more than once"),  # the 0.4.0 garbage: two ids, one slot left empty
        (runs[:1], ["p01", "p02"], "missing"),
        (runs + runs[:1], ["p01", "p02"], "two runs"),
        (runs, ["p01"], "not in the grid"),
        ([], ["p01"], "missing"),
        (runs, [], "empty"),
    ]
    for some, ids, words in bad:
        with pytest.raises(ValueError, match=words):
            build_dataset(some, params, proto, ids, 1, 0)


# ----------------------------------------------------------------------------- seeds
BAD_SEEDS = [2**64, 2**70, -1, 1.5, 1.0, np.float64(2.0), True, np.bool_(True), "3", None, [1]]


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_every_api_entry_point_refuses_a_bad_seed_before_simulating(seed, no_simulation):
    calls = [
        lambda: nksim.simulate("default", "ahmadvand2023", seed=seed),
        lambda: seed_sequence(seed, "p01", 0),
        lambda: generators(seed, "p01", 0),
    ]
    for call in calls:
        with pytest.raises(NksimInputError) as info:
            call()
        assert "key 'seed'" in str(info.value) and "[0, 2**64)" in str(info.value), str(info.value)


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_simulate_cohort_refuses_a_bad_seed_before_loading_anything(seed, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("loaded inputs or simulated before checking the seed")

    monkeypatch.setattr(SIMULATE, "_as_params", boom)
    monkeypatch.setattr(SIMULATE, "run_one", boom)
    with pytest.raises(NksimInputError, match=r"key 'seed'.*\[0, 2\*\*64\)"):
        nksim.simulate_cohort("default", "ahmadvand2023", seed=seed)


@pytest.mark.parametrize("seed", [0, 7, 2**64 - 1, np.uint64(2**64 - 1), np.int32(5), np.int64(2**40)], ids=repr)
def test_integer_seeds_of_any_integer_type_are_accepted(seed):
    assert check_seed(seed) == int(seed)
    assert seed_sequence(seed, "p01", 0).entropy == int(seed)


def test_a_numpy_seed_gives_the_numbers_of_the_same_python_int(tiny_setup):
    params, proto = tiny_setup
    a = nksim.simulate(params, proto, seed=np.uint64(12))
    b = nksim.simulate(params, proto, seed=12)
    np.testing.assert_array_equal(a["marrow_blast_pct"], b["marrow_blast_pct"])
    assert a.attrs["seed"] == b.attrs["seed"] == 12


def test_mesa_reference_refuses_a_float_seed(no_simulation):
    pytest.importorskip("mesa")
    from nksim.mesa_ref.model import PatientModel

    with pytest.raises(NksimInputError, match="key 'seed'"):
        PatientModel("default", "ahmadvand2023", seed=1.5)


def test_screen_refuses_a_float_seed_before_any_work(monkeypatch):
    pytest.importorskip("SALib")
    from nksim.calibration import screen
    from nksim.calibration.config import CALIBRATION_DIR, load_config

    monkeypatch.setattr(screen, "CalibrationModel", lambda *a, **k: pytest.fail("built the model first"))
    with pytest.raises(NksimInputError, match="key 'seed'"):
        screen.run_screen(load_config(CALIBRATION_DIR / "ahmadvand2023.toml"), seed=1.5)


@pytest.mark.parametrize("seed, words", [(1.5, "not an integer"), (2**63, "[0, 2**63)"), (True, "boolean"),
                                         ("1", "string")])
def test_sweep_and_calibration_seeds_use_the_same_check(seed, words, tmp_path):
    from nksim.calibration.config import CALIBRATION_DIR, load_config
    from nksim.sweep import load_spec

    spec = tiny()
    spec["sweep"]["seed"] = seed
    with pytest.raises(NksimInputError) as info:
        load_spec(write_toml(tmp_path / "spec.toml", spec))
    assert "spec.toml" in str(info.value) and "key 'sweep.seed'" in str(info.value) and words in str(info.value)

    doc = tomllib.loads((CALIBRATION_DIR / "ahmadvand2023.toml").read_text())
    for k in ("outcomes", "targets"):
        doc["data"][k] = str((CALIBRATION_DIR / doc["data"][k]).resolve())
    doc["calibration"]["seed"] = seed
    cfg = tmp_path / "cal.toml"
    cfg.write_text(dump_toml(doc))
    with pytest.raises(NksimInputError) as info:
        load_config(cfg)
    assert "cal.toml" in str(info.value) and "key 'calibration.seed'" in str(info.value)


# ----------------------------------------------------------------------------- TOML types, fuzzed
def _fuzz(doc: dict[str, Any], load, path: Path, also_allowed: set[tuple[str, str]] = frozenset()) -> int:
    """Every wrong-type variant of ``doc`` (written to ``path``) is refused in one line naming file and key."""
    n = 0
    for key, label, variant, wrong in wrong_type_cases(doc):
        wrong = wrong and (key, label) not in also_allowed
        path.write_text(dump_toml(variant))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # values outside a prior: warnings, not the subject here
                load(path)
        except NksimInputError as exc:
            msg = str(exc)
            assert "\n" not in msg and len(msg) < 800, (key, label, msg)
            assert path.name in msg, (key, label, msg)
            if wrong:  # names the key (or a key inside it), or for an element of an array (or a deep array) the array
                found = re.search(r"key '([^']*)'", msg)
                assert found, (key, label, msg)
                named, arrays, k = found.group(1).replace("[...]", ""), {key}, key
                while k.endswith("]"):
                    k = k.rsplit("[", 1)[0]
                    arrays.add(k)
                assert named in arrays or named.startswith(key), (key, label, msg)
        except Exception as exc:  # noqa: BLE001  the point of the test
            pytest.fail(f"{key} = {label}: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            assert not wrong, f"{key} = {label} was accepted"
        n += 1
    return n


@pytest.mark.parametrize("name", ["ahmadvand2023", "nkae_consolidation"])
def test_every_protocol_field_of_the_wrong_toml_type_is_one_line_naming_file_and_key(name, tmp_path):
    doc = tomllib.loads((PROTOCOLS_DIR / f"{name}.toml").read_text())
    assert _fuzz(doc, nksim.load_protocol, tmp_path / "proto.toml") > 300


def test_every_model_file_field_of_the_wrong_toml_type_is_one_line_naming_file_and_key(tmp_path):
    doc = {"meta": {"name": "m", "status": "test", "description": "d", "extends": "default", "provenance": "p"},
           "lattice": {"side": {"value": 8, "unit": "1", "description": "d", "source": "s"}},
           "nk": {"speed": {"value": 5.0, "unit": "um min-1", "description": "d", "source": "s",
                            "prior": [2.0, 10.0]}}}
    assert _fuzz(doc, nksim.load_parameters, tmp_path / "model.toml") > 150


SPEC_FACTORIAL = {
    "sweep": {"name": "a", "description": "d", "model": "default", "seed": 3, "design": "factorial", "end_day": 60,
              "assessment_days": [28, 56], "landmark_day": 56, "batch_size": 4, "clock": "infusion"},
    "cohort": {"patients": ["v1", "v2"], "replicates": 1, "draws": 0, "draws_from": "prior"},
    "baseline": {"regimen": "trial", "nk_product": "expanded", "interval": 7, "dose_split": [50, 50],
                 "total_dose": 1.5e7},
    "parameters": {"lattice.side": 6},
    "factors": {"interval": [7, 14], "dose_split": [[75, 25], [50, 50]], "nk.kill_probability": [0.3, 0.5]},
    "scenarios": [{"gap": 2, "n_infusions": 3}],
}
SPEC_LHS = {
    "sweep": {"name": "b", "seed": 3, "design": "lhs", "end_day": 60, "assessment_days": [28], "landmark_day": 28},
    "cohort": {"patients": 2},
    "factors": {"interval": {"min": 3, "max": 14, "scale": "linear"},
                "nk.speed": {"min": 2.0, "max": 8.0, "scale": "log"}},
    "sampling": {"n": 4, "scramble": True},
}


@pytest.mark.parametrize("doc", [SPEC_FACTORIAL, SPEC_LHS], ids=["factorial", "lhs"])
def test_every_sweep_spec_field_of_the_wrong_toml_type_is_one_line_naming_file_and_key(doc, tmp_path):
    from nksim.sweep import build_plan, load_spec

    allowed = {("cohort.patients", "integer")}  # a count of virtual patients instead of their ids
    assert _fuzz(copy.deepcopy(doc), lambda p: build_plan(load_spec(p)), tmp_path / "spec.toml", allowed) > 200


def test_every_calibration_config_field_of_the_wrong_toml_type_is_one_line_naming_file_and_key(tmp_path):
    pytest.importorskip("pyabc")
    from nksim.calibration.config import CALIBRATION_DIR, load_config

    doc = tomllib.loads((CALIBRATION_DIR / "ahmadvand2023.toml").read_text())
    for k in ("outcomes", "targets"):
        doc["data"][k] = str((CALIBRATION_DIR / doc["data"][k]).resolve())
    doc["fit"]["prior"] = {doc["fit"]["parameters"][0]: [0.01, 0.5]}
    doc["smoke"].update({"virtual_trials": 1, "chimerism_weight": 1.0, "progression_timing": "any", "end_day": 60,
                         "early_stop": False, "lattice.side": 4})
    assert _fuzz(doc, load_config, tmp_path / "cal.toml") > 500


def test_every_targets_meta_field_of_the_wrong_toml_type_is_refused(tmp_path):
    from nksim.calibration.config import CALIBRATION_DIR
    from nksim.calibration.data import load_targets

    p = tmp_path / "targets.toml"
    doc = tomllib.loads((CALIBRATION_DIR / "data" / "analogue_chimerism.toml").read_text())
    for field in doc["meta"]:
        for value in (3, [1], {"a": 1}, True):
            d = copy.deepcopy(doc)
            d["meta"][field] = value
            p.write_text(dump_toml(d))
            with pytest.raises(NksimInputError, match=rf"targets.toml: key 'meta.{field}': expected a string"):
                load_targets(p)


# the reproductions of the issue, as `nksim run` on the command line
def _protocol_variant(change) -> dict[str, Any]:
    doc = tomllib.loads((PROTOCOLS_DIR / "ahmadvand2023.toml").read_text())
    change(doc)
    return doc


PROTOCOL_REPRODUCTIONS = {
    'kind = ["il2"]': (lambda d: d["events"][0].update(kind=["il2"]), "events[0].kind", "expected a string"),
    'nk_product = ["expanded"]': (lambda d: d["protocol"].update(nk_product=["expanded"]), "protocol.nk_product",
                                  "expected a string"),
    "groups = 3": (lambda d: d.update(groups=3), "groups", "expected a table"),
    "events = 5": (lambda d: d.update(events=5), "events", "expected an array of tables"),
    "a list as a group": (lambda d: d["groups"].update(g1=[d["groups"]["g1"]]), "groups.g1", "expected a table"),
    "no [[patients]]": (lambda d: d.pop("patients"), "patients", "at least one patient"),
    "patients = []": (lambda d: d.update(patients=[]), "patients", "at least one patient"),
    "a deeply nested array": (lambda d: d["protocol"].update(assessment_days=nested(3000)),
                              "protocol.assessment_days", "nested hundreds of levels deep"),
    "an array nested 40 deep": (lambda d: d["events"][1].update(dose=nested(40)), "events[1].dose[0][...]",
                                "nested more than 32 levels"),
    "a patient id as a number": (lambda d: d["patients"][3].update(id=4), "patients[3].id", "expected a string"),
    "assessment before day 0": (lambda d: d["protocol"].update(assessment_days=[-3, 28]),
                                "protocol.assessment_days[0]", "(0, 365] day"),
}


@pytest.mark.parametrize("case", list(PROTOCOL_REPRODUCTIONS))
def test_cli_protocol_reproductions_are_one_line(case, tmp_path, small_model, capsys, no_simulation):
    change, key, words = PROTOCOL_REPRODUCTIONS[case]
    p = tmp_path / "bad_protocol.toml"
    p.write_text(dump_toml(_protocol_variant(change)))
    out = tmp_path / "out"
    assert main(["run", "--protocol", str(p), "--model", str(small_model), "--out", str(out), "--no-progress"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(p) in err and f"key '{key}'" in err and words in err, err
    assert not out.exists()


def test_toml_nested_too_deeply_names_the_key_without_recursing():
    deep = "[" * 3000 + "1" + "]" * 3000
    cases = {
        f"a = {deep}\n": "key 'a'",
        f"x = 1\nb = {{c = 1, d = [2, {deep}]}}\n": "key 'b.d[1]'",
        f"[[t]]\ns = \"[[\"\nv = {deep}\n": "key 't[0].v'",
        "a = " + "[" * 40 + "]" * 40 + "\n": "key 'a[0][...]'",
        "a = " + "{b = " * 40 + "1" + "}" * 40 + "\n": "key 'a.b.b.b",
    }
    for text, key in cases.items():
        with pytest.raises(NksimInputError) as info:
            loads_toml(text, "f.toml")
        msg = str(info.value)
        assert msg.startswith("f.toml: ") and key in msg and "nested" in msg and "\n" not in msg, msg
    assert loads_toml("a = " + "[" * 31 + "]" * 31, "f.toml")  # 32 levels with the top level: allowed


def test_sweep_set_override_nested_too_deeply_is_one_line():
    from nksim.sweep.spec import apply_overrides

    for depth, words in ((3000, "nested hundreds of levels deep"), (40, "nested more than 32 levels")):
        with pytest.raises(NksimInputError, match=words) as info:
            apply_overrides({}, ["sweep.seed=" + "[" * depth + "]" * depth], "spec.toml")
        assert "--set" in str(info.value) and "sweep.seed" in str(info.value) and len(str(info.value)) < 300


# ----------------------------------------------------------------------------- assessment days
@pytest.mark.parametrize("days, key, words", [
    ([-3, 28], "protocol.assessment_days[0]", "outside the allowed range (0, 30] day"),
    ([0, 28], "protocol.assessment_days[0]", "outside the allowed range (0, 30] day"),
    ([28, 31], "protocol.assessment_days[1]", "outside the allowed range (0, 30] day"),
    ([28, 14], "protocol.assessment_days", "strictly increasing"),
    ([14, 14], "protocol.assessment_days", "strictly increasing"),
    ([14.5], "protocol.assessment_days", "whole days"),
    ([], "protocol.assessment_days", "at least one assessment day"),
])
def test_assessment_days_lie_after_the_first_infusion_and_within_the_simulation(days, key, words):
    data = {
        "protocol": {"name": "t", "start_day": -5, "end_day": 30, "assessment_days": days, "nk_product": "fresh"},
        "events": [{"day": 0, "kind": "nk_infusion", "dose": 1e6, "unit": "kg-1"}],
        "patients": [{"id": "p1", "group": "a"}],
    }
    with pytest.raises(NksimInputError) as info:
        protocol_from_dict(data, "proto.toml")
    msg = str(info.value)
    assert msg.startswith("proto.toml: ") and f"key '{key}'" in msg and words in msg, msg
    data["protocol"]["assessment_days"] = [1, 30]  # the first day after the infusion and the last day: allowed
    assert protocol_from_dict(data, "proto.toml").assessment_days == (1.0, 30.0)


# ----------------------------------------------------------------------------- --scheduler
BAD_ADDRESSES = ["not a url", "localhost", "tcp://", "tcp://host", "tcp://h:abc", "tcp://h:99999", "tcp://h:0",
                 "http://h:8786", "inproc://x", "tcp://a b:1", ""]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_malformed_scheduler_addresses_are_refused(address):
    pytest.importorskip("distributed")
    from nksim.cluster import check_scheduler

    with pytest.raises(NksimInputError) as info:
        check_scheduler(address)
    msg = str(info.value)
    assert "--scheduler" in msg and "PROTOCOL://HOST:PORT" in msg and "tcp://" in msg and "\n" not in msg


@pytest.mark.parametrize("address", ["tcp://10.0.0.1:8786", "10.0.0.1:8786", "tls://node7:8786", "tcp://[::1]:8786",
                                     "ws://h:1"])
def test_well_formed_scheduler_addresses_are_accepted(address):
    pytest.importorskip("distributed")
    from nksim.cluster import check_scheduler

    assert check_scheduler(address) == address


@pytest.mark.parametrize("command", ["sweep", "calibrate"])
def test_cli_scheduler_not_a_url_is_one_line_before_any_work(command, tmp_path, capsys, no_simulation):
    pytest.importorskip("distributed")
    if command == "sweep":
        target = str(write_toml(tmp_path / "spec.toml", tiny()))
    else:
        pytest.importorskip("pyabc")
        target = "ahmadvand2023"
    out = tmp_path / "out"
    assert main([command, target, "--scheduler", "not a url", "--out", str(out)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "--scheduler" in err and "'not a url'" in err and "PROTOCOL://HOST:PORT" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["spec.toml"] if command == "sweep" else [])


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_worker_timeout_setting_is_checked_with_the_address(value, monkeypatch):
    pytest.importorskip("distributed")
    from nksim.cluster import check_scheduler

    monkeypatch.setenv("NKSIM_WORKER_TIMEOUT", value)
    with pytest.raises(NksimInputError, match=r"environment: key 'NKSIM_WORKER_TIMEOUT': must be a number of seconds"):
        check_scheduler("tcp://127.0.0.1:8786")


def test_scheduler_without_workers_is_waited_for_a_bounded_time(tmp_path, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("zarr")
    monkeypatch.setenv("NKSIM_WORKER_TIMEOUT", "1")
    spec = write_toml(tmp_path / "spec.toml", tiny())
    with distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address
        rc = main(["sweep", str(spec), "--scheduler", address, "--out", str(tmp_path / "out.zarr"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2
    assert f"waiting up to 1 s for a Dask worker to join the scheduler {address}" in captured.out
    err = _one_line(captured.err)
    assert "no Dask worker joined the scheduler within 1 s" in err and "NKSIM_WORKER_TIMEOUT" in err, err


def test_every_optimise_spec_field_of_the_wrong_toml_type_is_one_line_naming_file_and_key(tmp_path):
    pytest.importorskip("optuna")
    from nksim.optimise.spec import load_spec

    doc = tomllib.loads((PROTOCOLS_DIR.parent / "optimise" / "expanding_two_infusions.toml").read_text())
    doc["optimise"]["draws_from"] = "prior"
    # a fixed value instead of a range or a choice is a dimension's other valid form
    allowed = {(f"optimise.space.{k}", t) for k in ("n_infusions", "gap", "interval") for t in ("integer", "float")}
    allowed |= {("optimise.space.cytokine", "string"), ("optimise.space.total_dose", "integer")}
    assert _fuzz(doc, load_spec, tmp_path / "optimise.toml", allowed) > 150
