"""Every user file is read as UTF-8 (a byte-order mark is accepted); anything else is an error naming the file.

Model, protocol, sweep-spec and calibration-config TOML files go through
:func:`nksim.fileio.read_toml`, the calibration CSVs and sweep draw files through
:func:`nksim.fileio.open_text`; a Latin-1 file (one "é" in a description) used to fail with a
bare ``UnicodeDecodeError`` naming no file.
"""
from __future__ import annotations

import codecs
from pathlib import Path

import pytest

import nksim
from nksim.calibration.config import load_config
from nksim.calibration.data import OUTCOMES_FILE, load_outcomes
from nksim.cli import main
from nksim.fileio import read_text, read_toml
from nksim.protocol import PROTOCOLS_DIR
from nksim.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
MODEL = '[meta]\nname = "small"\nstatus = "test"\nextends = "default"\n\n' \
        '[lattice.side]\nvalue = 4\nunit = "1"\ndescription = "{text}"\nsource = "tests"\n'


def _latin1(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("latin-1"))
    return path


def _assert_encoding_error(exc: BaseException, path: Path, line: int) -> None:
    msg = str(exc)
    assert str(path) in msg, msg
    assert "UTF-8" in msg and "byte position" in msg and f"line {line}" in msg, msg
    assert "0xE9" in msg, msg  # the offending byte ("é" in Latin-1)


def _with_e_acute(text: str, line: int) -> tuple[str, int]:
    """``text`` with " é" appended to the end of line ``line`` (1-based) as a TOML comment."""
    lines = text.split("\n")
    lines[line - 1] += "  # réseau"
    return "\n".join(lines), line


# ----------------------------------------------------------------------------- the reader itself
def test_read_text_names_byte_position_line_and_column(tmp_path):
    p = _latin1(tmp_path / "x.toml", 'a = 1\nb = "caf\u00e9"\n')
    with pytest.raises(nksim.NksimInputError) as info:
        read_text(p)
    msg = str(info.value)
    assert msg.startswith(str(p)) and "byte position 14 (line 2, column 9)" in msg, msg
    assert info.value.source == str(p)


def test_bom_is_accepted_and_positions_count_it(tmp_path):
    p = tmp_path / "bom.toml"
    p.write_bytes(codecs.BOM_UTF8 + 'a = "caf\u00e9"\n'.encode())
    assert read_toml(p) == {"a": "caf\u00e9"}
    p.write_bytes(codecs.BOM_UTF8 + b'a = "caf\xe9"\n')
    with pytest.raises(nksim.NksimInputError, match=r"byte position 11 \(line 1, column 9\)"):
        read_toml(p)


def test_crlf_line_endings_are_accepted(tmp_path):
    p = tmp_path / "crlf.toml"
    p.write_bytes(b'a = 1\r\nb = "x"\r\n')
    assert read_toml(p) == {"a": 1, "b": "x"}


def test_utf16_file_is_named_as_such(tmp_path):
    p = tmp_path / "u16.toml"
    p.write_bytes('a = 1\n'.encode("utf-16"))
    with pytest.raises(nksim.NksimInputError, match="UTF-16.*UTF-8"):
        read_toml(p)


def test_missing_file_still_named(tmp_path):
    with pytest.raises(nksim.NksimInputError, match="missing.toml.*not found"):
        read_toml(tmp_path / "missing.toml", "protocol file")


# ----------------------------------------------------------------------------- each kind of user file
def test_latin1_model_file(tmp_path):
    p = _latin1(tmp_path / "model.toml", MODEL.format(text="r\u00e9seau de test"))
    with pytest.raises(nksim.NksimInputError) as info:
        nksim.load_parameters(p)
    _assert_encoding_error(info.value, p, 9)


def test_utf8_model_with_bom_loads(tmp_path):
    p = tmp_path / "model.toml"
    p.write_bytes(codecs.BOM_UTF8 + MODEL.format(text="r\u00e9seau de test").encode())
    assert nksim.load_parameters(p)["lattice.side"] == 4


def test_latin1_protocol_file(tmp_path):
    text, line = _with_e_acute((PROTOCOLS_DIR / "ahmadvand2023.toml").read_text(encoding="utf-8"), 3)
    p = _latin1(tmp_path / "proto.toml", text)
    with pytest.raises(nksim.NksimInputError) as info:
        nksim.load_protocol(p)
    _assert_encoding_error(info.value, p, line)
    p.write_bytes(codecs.BOM_UTF8 + text.encode())
    assert nksim.load_protocol(p).name == "ahmadvand2023"


@pytest.mark.parametrize("relpath, name, load", [
    ("experiments/two_infusion_schedules.toml", "spec.toml", load_spec),
    ("calibration/ahmadvand2023.toml", "calib.toml", load_config),
], ids=["sweep_spec", "calibration_config"])
def test_latin1_toml_inputs(tmp_path, relpath, name, load):
    text, line = _with_e_acute((REPO / relpath).read_text(encoding="utf-8"), 1)
    p = _latin1(tmp_path / name, text)
    with pytest.raises(nksim.NksimInputError) as info:
        load(p)
    _assert_encoding_error(info.value, p, line)


def test_latin1_calibration_csv(tmp_path):
    lines = OUTCOMES_FILE.read_text(encoding="utf-8").split("\n")
    lines[3] = lines[3].replace("assumption", "hypoth\u00e8se \u00e9crite", 1)
    p = _latin1(tmp_path / "outcomes.csv", "\n".join(lines))
    with pytest.raises(nksim.NksimInputError) as info:
        load_outcomes(p)
    msg = str(info.value)
    assert str(p) in msg and "UTF-8" in msg and "line 4" in msg and "byte position" in msg, msg


def test_calibration_csv_with_bom_and_crlf_loads(tmp_path):
    text = OUTCOMES_FILE.read_text(encoding="utf-8")
    p = tmp_path / "outcomes.csv"
    p.write_bytes(codecs.BOM_UTF8 + text.replace("\n", "\r\n").encode())
    assert load_outcomes(p) == load_outcomes(OUTCOMES_FILE)


def test_latin1_sweep_draws_file(tmp_path):
    from nksim.sweep.draws import file_draws

    p = _latin1(tmp_path / "draws.csv", "nk.rejection_rate\n0.1\n# r\u00e9sum\u00e9\n")
    with pytest.raises(nksim.NksimInputError) as info:
        file_draws(nksim.load_parameters(), p, 1)
    _assert_encoding_error(info.value, p, 3)


def test_cli_reports_latin1_protocol_in_one_line(tmp_path, capsys):
    text, _ = _with_e_acute((PROTOCOLS_DIR / "ahmadvand2023.toml").read_text(encoding="utf-8"), 2)
    p = _latin1(tmp_path / "proto.toml", text)
    rc = main(["run", "--protocol", str(p), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and str(p) in err and "UTF-8" in err, err
    assert not (tmp_path / "out").exists()


def test_posterior_summary_and_model_in_latin1_are_named(tmp_path):
    """apply_to_model reads the summary CSV and the model TOML as UTF-8: Latin-1 is a named error, not a crash."""
    from nksim.calibration.posterior import apply_to_model, read_summary_csv
    from nksim.resources import data_path

    summary = data_path("calibration") / "posterior" / "posterior_summary.csv"
    assert read_summary_csv(summary)  # the shipped file reads
    bad = tmp_path / "summary.csv"
    bad.write_bytes(summary.read_bytes().replace(b"day-1", "jour\u00e9".encode("latin-1"), 1))
    with pytest.raises(nksim.NksimInputError, match="summary.csv"):
        read_summary_csv(bad)
    model = tmp_path / "model.toml"
    model.write_bytes(data_path("models").joinpath("default.toml").read_bytes().replace(
        b"nksim default model", "mod\u00e8le".encode("latin-1"), 1))
    with pytest.raises(nksim.NksimInputError, match="model.toml"):
        apply_to_model(summary, model, provenance="test")
