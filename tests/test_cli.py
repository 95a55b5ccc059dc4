"""The ``nksim run`` command line."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import nksim
from nksim.cli import main


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.toml"
    p.write_text(
        '[meta]\nname = "small"\nstatus = "test, uncalibrated"\nextends = "default"\n\n'
        '[lattice.side]\nvalue = 4\nunit = "1"\ndescription = "small test lattice"\nsource = "tests"\n'
    )
    return p


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, small_model):
    out = tmp_path_factory.mktemp("cli") / "trial"
    rc = main(["run", "--out", str(out), "--no-progress", "--model", str(small_model), "--seed", "5"])
    return rc, out


def _exit_code(argv) -> int:
    """main() returns a code for nksim errors; argparse raises SystemExit for bad options."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_run_writes_netcdf_and_png(first_run, capsys):
    rc, out = first_run
    assert rc == 0
    nc, png = out / "trial.nc", out / "trial.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ds = nksim.open_output(nc)
    assert ds.sizes["patient"] == 10 and ds.sizes["replicate"] == 1
    assert ds.sizes["x"] == 4
    assert ds.attrs["seed"] == 5 and ds.attrs["parameter_set"] == "small"
    assert ds.attrs["protocol"] == "ahmadvand2023"


def test_second_run_refuses_and_leaves_files(first_run, small_model, capsys):
    _, out = first_run
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    rc = main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert after == before


def test_overwrite_replaces(tmp_path, small_model):
    out = tmp_path / "o"
    out.mkdir()
    (out / "trial.png").write_bytes(b"old")
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model)]) == 2
    assert (out / "trial.png").read_bytes() == b"old" and not (out / "trial.nc").exists()
    assert main(["run", "--out", str(out), "--no-progress", "--model", str(small_model), "--overwrite",
                 "--seed", "8", "--replicates", "2", "--workers", "2"]) == 0
    assert (out / "trial.png").read_bytes()[:4] == b"\x89PNG"
    ds = nksim.open_output(out / "trial.nc")
    assert ds.attrs["seed"] == 8 and ds.sizes["replicate"] == 2


def test_bad_model_path(tmp_path, capsys):
    missing = tmp_path / "missing_model.toml"
    assert _exit_code(["run", "--out", str(tmp_path / "x"), "--no-progress", "--model", str(missing)]) == 2
    assert "missing_model.toml" in capsys.readouterr().err
    assert not (tmp_path / "x" / "trial.nc").exists()


def test_invalid_model_file_reports_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad_model.toml"
    bad.write_text('[meta]\nextends = "default"\n[nk.speed]\nvalue = 5.0\nunit = "um s-1"\n'
                   'description = "x"\nsource = "y"\n')
    assert _exit_code(["run", "--out", str(tmp_path / "x"), "--no-progress", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad_model.toml" in err and "nk.speed" in err


def test_unknown_protocol(tmp_path, small_model, capsys):
    assert _exit_code(["run", "--out", str(tmp_path / "x"), "--no-progress", "--model", str(small_model),
                       "--protocol", "nope_protocol"]) == 2
    assert "nope_protocol" in capsys.readouterr().err


@pytest.mark.parametrize("opt, value", [("--replicates", "0"), ("--replicates", "abc"), ("--replicates", "-3"),
                                        ("--seed", "-1"), ("--workers", "0")])
def test_bad_option_values(tmp_path, small_model, capsys, opt, value):
    assert _exit_code(["run", "--out", str(tmp_path / "x"), "--no-progress", "--model", str(small_model),
                       opt, value]) == 2
    err = capsys.readouterr().err
    assert opt in err
    assert not (tmp_path / "x").exists()


def test_no_command_is_an_error(capsys):
    assert _exit_code([]) == 2


def _entry_point() -> list[str]:
    exe = Path(sysconfig.get_path("scripts")) / "nksim"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "nksim.cli"]


def test_version_entry_point():
    cmd = _entry_point()
    res = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"nksim {nksim.__version__}"


def test_python_dash_m_nksim():
    """``python -m nksim`` is the console script (for environments whose scripts folder is not on PATH)."""
    res = subprocess.run([sys.executable, "-m", "nksim", "--version"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"nksim {nksim.__version__}"


def test_out_path_that_is_a_file(tmp_path, small_model, capsys):
    target = tmp_path / "results_file"
    target.write_text("not a folder")
    assert _exit_code(["run", "--out", str(target), "--no-progress", "--model", str(small_model)]) == 2
    assert "results_file" in capsys.readouterr().err
    assert target.read_text() == "not a folder"
