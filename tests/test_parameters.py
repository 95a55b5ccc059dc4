"""Parameter sets: loading, validation errors (file + key + what is allowed), extends, overrides."""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

import nksim
from nksim.errors import OutsidePriorWarning
from nksim.parameters import MODELS_DIR
from nksim.quantities import PARAMETERS, SECTIONS

DEFAULT_TOML = MODELS_DIR / "default.toml"


# ----------------------------------------------------------------------------- helpers
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def dump_params(data: dict) -> str:
    """Serialise {section: {name: {field: value}}} (plus a flat 'meta' table) as TOML."""
    lines = []
    for section, table in data.items():
        if section == "meta":
            lines.append("[meta]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
            lines.append("")
            continue
        for name, entry in table.items():
            lines.append(f"[{section}.{name}]")
            if isinstance(entry, dict):
                lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
            else:
                lines.append(f"value = {_toml_value(entry)}")
            lines.append("")
    return "\n".join(lines)


def default_data() -> dict:
    with open(DEFAULT_TOML, "rb") as fh:
        return tomllib.load(fh)


def write(tmp_path: Path, data: dict, name: str = "model.toml") -> Path:
    p = tmp_path / name
    p.write_text(dump_params(data))
    return p


def child(tmp_path: Path, entries: dict, name: str = "child.toml") -> Path:
    """A model that extends 'default' and declares ``entries`` ({"section.name": entry dict})."""
    data: dict = {"meta": {"name": "child", "status": "test", "extends": "default"}}
    for key, entry in entries.items():
        section, pname = key.split(".", 1)
        data.setdefault(section, {})[pname] = entry
    return write(tmp_path, data, name)


def entry(key: str, value, unit: str | None = None, **extra) -> dict:
    e = {"value": value, "unit": unit if unit is not None else PARAMETERS[key].unit,
         "description": "test entry", "source": "test"}
    e.update(extra)
    return e


def expect_error(path: Path, *fragments: str) -> nksim.NksimInputError:
    with pytest.raises(nksim.NksimInputError) as info:
        nksim.load_parameters(path)
    msg = str(info.value)
    assert path.name in msg, f"error does not name the file: {msg}"
    for f in fragments:
        assert f in msg, f"{f!r} not in error message: {msg}"
    return info.value


# ----------------------------------------------------------------------------- loading
def test_default_loads_every_schema_key_in_schema_units(default_params):
    assert set(default_params.keys()) == set(PARAMETERS)
    for key, spec in PARAMETERS.items():
        v = default_params[key]
        assert default_params.unit(key) == spec.unit
        assert math.isfinite(v) and spec.lo <= v <= spec.hi, key
        if spec.integer:
            assert v == int(v), key
    # the default model is the calibrated one (models/default.toml [meta] status)
    assert default_params.status.startswith("calibrated")


def test_default_by_name_and_by_path_agree(default_params):
    by_path = nksim.load_parameters(DEFAULT_TOML)
    assert by_path.values() == default_params.values()
    assert by_path.digest() == default_params.digest()


def test_default_priors_are_inside_schema_range_and_contain_value(default_params):
    priors = default_params.priors()
    assert priors, "the default set declares calibrated parameters"
    for key, (lo, hi) in priors.items():
        spec = PARAMETERS[key]
        assert spec.lo <= lo < hi <= spec.hi
        assert lo <= default_params[key] <= hi, key


def test_unknown_model_name_lists_shipped_models():
    with pytest.raises(nksim.NksimInputError, match="default"):
        nksim.load_parameters("no_such_model_xyz")


def test_missing_model_path(tmp_path):
    p = tmp_path / "missing.toml"
    with pytest.raises(nksim.NksimInputError) as info:
        nksim.load_parameters(p)
    assert "missing.toml" in str(info.value)


def test_invalid_toml_syntax(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[nk.speed\nvalue = 1\n")
    expect_error(p, "TOML")


# ----------------------------------------------------------------------------- errors
def test_unknown_key_suggests_the_close_match(tmp_path):
    p = child(tmp_path, {"nk.sped": entry("nk.speed", 5.0)})
    err = expect_error(p, "nk.sped", "did you mean 'nk.speed'")
    assert err.key == "nk.sped"


def test_unknown_section(tmp_path):
    data = {"meta": {"extends": "default"}, "nkk": {"speed": entry("nk.speed", 5.0)}}
    p = write(tmp_path, data)
    expect_error(p, "nkk", "unknown section")


def test_unknown_meta_field(tmp_path):
    p = write(tmp_path, {"meta": {"extends": "default", "colour": "red"}})
    expect_error(p, "meta.colour")


def test_missing_parameter_without_extends(tmp_path):
    data = default_data()
    del data["nk"]["kill_probability"]
    p = write(tmp_path, data)
    expect_error(p, "missing parameters", "nk.kill_probability")


def test_full_copy_of_default_loads_identically(tmp_path, default_params):
    # guards the helpers above: a faithful rewrite of default.toml must load to the same values
    p = write(tmp_path, default_data())
    assert nksim.load_parameters(p).values() == default_params.values()


@pytest.mark.parametrize("field", ["value", "unit", "description", "source"])
def test_missing_entry_field(tmp_path, field):
    e = entry("nk.speed", 5.0)
    del e[field]
    p = child(tmp_path, {"nk.speed": e})
    expect_error(p, "nk.speed", field)


def test_unknown_entry_field(tmp_path):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 5.0, colour="red")})
    expect_error(p, "nk.speed", "colour")


def test_empty_description_rejected(tmp_path):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 5.0, description="  ")})
    expect_error(p, "nk.speed", "description")


def test_entry_must_be_a_table(tmp_path):
    p = tmp_path / "flat.toml"
    p.write_text('[meta]\nextends = "default"\n[nk]\nspeed = 5.0\n')
    expect_error(p, "nk.speed", "table")


@pytest.mark.parametrize(
    "key, value, unit",
    [
        ("blasts.net_growth_rate", 0.02, "h"),  # a time where a rate is expected
        ("blasts.cycle_time", 2880.0, "min"),  # convertible to h, but never silently rescaled
        ("blasts.cycle_time", 2.0, "day"),  # convertible to h
        ("nk.speed", 0.3, "um s-1"),  # convertible to um min-1
        ("anatomy.body_weight", 70000.0, "g"),
        ("blasts.baseline_pct", 0.4, "1"),  # a fraction where percent is expected
    ],
)
def test_wrong_unit_rejected_even_when_convertible(tmp_path, key, value, unit):
    p = child(tmp_path, {key: entry(key, value, unit=unit)})
    expect_error(p, f"{key}.unit", f"'{unit}'", PARAMETERS[key].unit)


@pytest.mark.parametrize(
    "key, value, spelling",
    [("blasts.cycle_time", 48.0, "hour"), ("blasts.net_growth_rate", 0.02, "1/day"), ("nk.speed", 5.0, "um/min")],
)
def test_spelling_variants_of_the_same_unit_accepted(tmp_path, key, value, spelling):
    p = child(tmp_path, {key: entry(key, value, unit=spelling)})
    assert nksim.load_parameters(p)[key] == value


@pytest.mark.parametrize("unit", ["not_a_unit", "", 3])
def test_invalid_unit_string(tmp_path, unit):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 5.0, unit=unit)})
    expect_error(p, "nk.speed.unit", "um min-1")


@pytest.mark.parametrize(
    "key, value",
    [
        ("nk.speed", -1.0),
        ("nk.kill_probability", 1.5),
        ("blasts.baseline_pct", 101.0),
        ("lattice.side", 1),
        ("nk.speed", float("nan")),
        ("nk.speed", float("inf")),
        ("nk.homing_rate", float("-inf")),
    ],
)
def test_value_out_of_range_or_not_finite(tmp_path, key, value):
    p = child(tmp_path, {key: entry(key, value)})
    spec = PARAMETERS[key]
    expect_error(p, f"{key}.value", f"[{spec.lo:g}, {spec.hi:g}]")


@pytest.mark.parametrize("value", ["fast", True, [1.0]])
def test_value_not_a_number(tmp_path, value):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", value)})
    expect_error(p, "nk.speed.value", "not a number")


@pytest.mark.parametrize("key, value", [("lattice.side", 8.5), ("nk.max_kills", 2.25)])
def test_integer_parameter_rejects_fraction(tmp_path, key, value):
    p = child(tmp_path, {key: entry(key, value)})
    expect_error(p, key, "integer")


def test_integer_parameter_accepts_integral_float(tmp_path):
    p = child(tmp_path, {"lattice.side": entry("lattice.side", 12.0)})
    assert nksim.load_parameters(p)["lattice.side"] == 12


@pytest.mark.parametrize(
    "prior, fragment",
    [
        ([0.5], "prior"),
        ("wide", "prior"),
        ([3.0, 2.0], "lo < hi"),
        ([2.0, 2.0], "lo < hi"),
        ([-1.0, 2.0], "prior[0]"),
        ([1.0, 1000.0], "prior[1]"),
    ],
)
def test_bad_prior(tmp_path, prior, fragment):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 5.0, prior=prior)})
    expect_error(p, "nk.speed", fragment)


def test_good_prior_is_kept(tmp_path):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 5.0, prior=[1.0, 9.0])})
    assert nksim.load_parameters(p).priors()["nk.speed"] == (1.0, 9.0)


# ----------------------------------------------------------------------------- extends
def test_extends_default_overrides_one_value(tmp_path, default_params):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 7.5)})
    ps = nksim.load_parameters(p)
    assert ps["nk.speed"] == 7.5
    others = {k: v for k, v in ps.values().items() if k != "nk.speed"}
    assert others == {k: v for k, v in default_params.values().items() if k != "nk.speed"}
    assert ps.name == "child" and ps.status == "test"
    assert ps.digest() != default_params.digest()


def test_extends_relative_toml_path_and_chain(tmp_path):
    child(tmp_path, {"nk.speed": entry("nk.speed", 7.5)}, name="mid.toml")
    data = {"meta": {"extends": "mid.toml"}, "nk": {"kill_probability": entry("nk.kill_probability", 0.25)}}
    ps = nksim.load_parameters(write(tmp_path, data, "leaf.toml"))
    assert ps["nk.speed"] == 7.5 and ps["nk.kill_probability"] == 0.25


def test_circular_extends(tmp_path):
    write(tmp_path, {"meta": {"extends": "b.toml"}}, "a.toml")
    write(tmp_path, {"meta": {"extends": "a.toml"}}, "b.toml")
    with pytest.raises(nksim.NksimInputError, match="circular"):
        nksim.load_parameters(tmp_path / "a.toml")


def test_extends_missing_parent(tmp_path):
    p = write(tmp_path, {"meta": {"extends": "nowhere.toml"}})
    expect_error(p, "meta.extends", "nowhere.toml")


# ----------------------------------------------------------------------------- ParameterSet API
def test_with_values_overrides_and_validates(default_params):
    ps = default_params.with_values({"nk.speed": 3.0, "lattice.side": 10})
    assert ps["nk.speed"] == 3.0 and ps["lattice.side"] == 10
    assert default_params["nk.speed"] != 3.0, "with_values must not mutate the original"
    with pytest.raises(nksim.NksimInputError, match=r"nk\.kill_probability"):
        default_params.with_values({"nk.kill_probability": 2.0})
    with pytest.raises(nksim.NksimInputError, match="did you mean 'nk.speed'"):
        default_params.with_values({"nk.sped": 3.0})
    with pytest.raises(nksim.NksimInputError, match="integer"):
        default_params.with_values({"lattice.side": 7.5})
    with pytest.raises(nksim.NksimInputError):
        default_params.with_values({"nk.speed": float("nan")})


def test_digest_identifies_values(default_params):
    same = default_params.with_values({"nk.speed": default_params["nk.speed"]})
    assert same.digest() == default_params.digest()
    changed = default_params.with_values({"nk.speed": default_params["nk.speed"] * 1.001})
    assert changed.digest() != default_params.digest()
    assert len(default_params.digest()) == 16


def test_as_json_round_trips_values_and_units(default_params):
    blob = json.loads(default_params.as_json())
    assert set(blob) == set(PARAMETERS)
    for key, item in blob.items():
        assert item["value"] == default_params[key]
        assert item["unit"] == PARAMETERS[key].unit


def test_unknown_parameter_lookup_is_a_key_error(default_params):
    with pytest.raises(KeyError):
        default_params["nk.nope"]


def test_sections_cover_schema():
    assert set(SECTIONS) == {k.split(".")[0] for k in PARAMETERS}


# ----------------------------------------------------------------------------- derived resolution
@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"numerics.dt": 5.0}, "numerics.dt"),  # does not divide 24 h
        ({"numerics.dt": 2.0, "numerics.marrow_step": 3.0}, "numerics.marrow_step"),  # not a multiple of dt
    ],
)
def test_inconsistent_numerics_rejected_at_simulation(default_params, ahmadvand, overrides, key):
    ps = default_params.with_values({"lattice.side": 4, **overrides})
    with pytest.raises(nksim.NksimInputError) as info:
        nksim.simulate(ps, ahmadvand, "p02")
    assert key in str(info.value)


@pytest.mark.parametrize("value", [np.int64(12), np.float32(12.0)])
def test_with_values_accepts_numpy_scalars(default_params, value):
    assert default_params.with_values({"lattice.side": value})["lattice.side"] == 12


# ----------------------------------------------------------------------------- values outside the prior range
def test_value_outside_its_own_prior_warns_naming_file_key_value_and_range(tmp_path):
    p = child(tmp_path, {"nk.speed": entry("nk.speed", 9.5, prior=[2.0, 8.0])})
    with pytest.warns(OutsidePriorWarning) as rec:
        ps = nksim.load_parameters(p)
    assert ps["nk.speed"] == 9.5  # accepted: a warning, not an error
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert str(p) in msg and "'nk.speed'" in msg and "9.5" in msg and "[2, 8]" in msg, msg
    assert issubclass(OutsidePriorWarning, nksim.NksimWarning) and issubclass(OutsidePriorWarning, UserWarning)


def test_value_outside_the_inherited_prior_warns(tmp_path, default_params):
    lo, hi = default_params.priors()["nk.kill_probability"]
    p = child(tmp_path, {"nk.kill_probability": entry("nk.kill_probability", min(1.0, hi + 0.1))})
    with pytest.warns(OutsidePriorWarning, match=rf"child\.toml: key 'nk.kill_probability'.*\[{lo:g}, {hi:g}\]"):
        nksim.load_parameters(p)


def test_values_inside_the_prior_and_shipped_models_do_not_warn(tmp_path):
    import warnings

    p = child(tmp_path, {"nk.speed": entry("nk.speed", 8.0, prior=[2.0, 8.0])})  # the bounds are inside
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nksim.load_parameters(p)
        for model in MODELS_DIR.glob("*.toml"):
            nksim.load_parameters(model)


def test_hard_range_is_still_an_error_not_a_warning(tmp_path):
    p = child(tmp_path, {"nk.kill_probability": entry("nk.kill_probability", 1.5, prior=[0.2, 0.7])})
    expect_error(p, "nk.kill_probability", "[0, 1]")


def test_overrides_warn_only_when_asked(default_params):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default_params.with_values({"nk.kill_probability": 0.95})  # generated values (calibration, draws): silent
    with pytest.warns(OutsidePriorWarning, match=r"my override: key 'nk.kill_probability': value 0.95"):
        default_params.with_values({"nk.kill_probability": 0.95}, origin="my override", warn_prior=True)


def test_sweep_values_outside_the_prior_warn_once_each():
    from _sweep_util import tiny_spec

    from nksim.sweep import build_plan

    spec = tiny_spec(factors={"interval": [7, 14], "nk.kill_probability": [0.5, 0.9]},
                     parameters={"lattice.side": 6, "nk.max_kills": 12})
    with pytest.warns(OutsidePriorWarning) as rec:
        build_plan(spec)
    msgs = sorted(str(r.message) for r in rec)
    assert len(msgs) == 2, msgs  # 0.9 once although two scenarios use it; the fixed value once
    assert "[factors]: key 'nk.kill_probability': value 0.9" in msgs[0] and "[0.2, 0.7]" in msgs[0]
    assert "[parameters]: key 'nk.max_kills': value 12" in msgs[1] and "[3, 10]" in msgs[1]


# ----------------------------------------------------------------------------- deprecated keys (0.6.0)
def test_deprecated_drug_sensitivity_sets_both_drugs_with_a_warning(tmp_path, default_params):
    """``host.t_drug_sensitivity`` (0.5.0) still loads: its value sets the Flu and the Cy sensitivity of host T."""
    p = child(tmp_path, {"host.t_drug_sensitivity": entry("host.t_drug_sensitivity", 0.75, unit="1")})
    with pytest.warns(nksim.errors.DeprecatedKeyWarning, match="host.t_drug_sensitivity.*host.t_flu_sensitivity"):
        ps = nksim.load_parameters(p)
    assert ps["host.t_flu_sensitivity"] == ps["host.t_cy_sensitivity"] == 0.75
    assert "host.t_drug_sensitivity" not in ps
    with pytest.warns(nksim.errors.DeprecatedKeyWarning, match="host.nk_drug_sensitivity"):
        over = default_params.with_values({"host.nk_drug_sensitivity": 1.0})
    assert over["host.nk_flu_sensitivity"] == over["host.nk_cy_sensitivity"] == 1.0


def test_deprecated_key_beside_the_keys_it_sets_is_an_error(tmp_path, default_params):
    p = child(tmp_path, {"host.t_drug_sensitivity": entry("host.t_drug_sensitivity", 0.75, unit="1"),
                         "host.t_cy_sensitivity": entry("host.t_cy_sensitivity", 1.0)})
    expect_error(p, "host.t_drug_sensitivity", "give the new keys only")
    with pytest.raises(nksim.NksimInputError, match="give the new keys only"):
        default_params.with_values({"host.t_drug_sensitivity": 0.7, "host.t_flu_sensitivity": 0.5})


def test_the_il15_agonist_keys_of_0_5_0_load(tmp_path):
    """0.6.0: N-803 keys renamed (deprecated aliases), the agonist's own Emax and EC50 retired (ignored)."""
    p = child(tmp_path, {"il15_agonist.absorption_half_life": entry("il15_agonist.absorption_half_life", 12.0,
                                                                    unit="h"),
                         "il15_agonist.ec50": entry("il15_agonist.ec50", 100.0, unit="ug")})
    with pytest.warns(nksim.errors.DeprecatedKeyWarning) as record:
        ps = nksim.load_parameters(p)
    messages = " ".join(str(w.message) for w in record)
    assert "n803.absorption_half_life" in messages and "retired and ignored" in messages
    assert ps["n803.absorption_half_life"] == 12.0 and "il15_agonist.ec50" not in ps
