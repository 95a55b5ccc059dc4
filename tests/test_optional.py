"""Optional dependencies (nksim._optional.require) and the shipped-data lookup (nksim.resources)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nksim._optional import EXTRAS, MissingOptionalDependency, require
from nksim.cli import main
from nksim.resources import DATA_FOLDERS, data_path

ROOT = Path(__file__).resolve().parents[1]


def test_require_returns_the_module():
    import math

    assert require("math", "sweep", "x") is math


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if not installed
    with pytest.raises(ImportError) as info:
        require("zarr", "sweep", "nksim.sweep")
    assert isinstance(info.value, MissingOptionalDependency)
    assert str(info.value) == "nksim.sweep needs the optional package 'zarr': pip install \"nksim[sweep]\""


def test_require_says_what_failed_inside_an_installed_package():
    with pytest.raises(MissingOptionalDependency, match=r"'json>=9'.*nksim\[mesa\].*json\.no_such_module"):
        require("json.no_such_module", "mesa", "feature", package="json>=9")


def test_require_rejects_an_unknown_extra():
    with pytest.raises(ValueError, match="unknown extra"):
        require("math", "nope", "x")
    assert {"sweep", "calibrate", "mesa", "viz", "all"} <= set(EXTRAS)


@pytest.mark.parametrize("argv, hidden, extra", [
    (["calibrate", "ahmadvand2023", "--smoke"], "pyabc", "calibrate"),
    (["screen", "ahmadvand2023"], "SALib", "calibrate"),
])
def test_cli_missing_extra_is_one_line(monkeypatch, capsys, tmp_path, argv, hidden, extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, hidden, None)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nksim: error: "), err
    assert f"optional package '{hidden}'" in err[0] and f'pip install "nksim[{extra}]"' in err[0]


def test_cli_sweep_without_zarr_is_one_line(tmp_path):
    """In a fresh interpreter (the store module imports zarr when first imported)."""
    code = ("import sys; sys.modules['zarr'] = None\n"
            "from nksim.cli import main\n"
            "print(main(['sweep', 'spec.toml', '--out', 's.zarr']), main(['summarize', 's.zarr']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["2", "2"], (proc.stdout, proc.stderr)
    err = proc.stderr.strip().splitlines()
    assert err == ["nksim: error: nksim.sweep needs the optional package 'zarr': pip install \"nksim[sweep]\""] * 2


def test_data_path_in_a_source_checkout():
    """Editable install / checkout: no nksim/_data, so the repository folders are used."""
    assert not (ROOT / "nksim" / "_data").exists()
    for name, rel in DATA_FOLDERS.items():
        assert data_path(name) == ROOT / rel and data_path(name).is_dir()
    with pytest.raises(KeyError):
        data_path("nope")
