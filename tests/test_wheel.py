"""The built distribution: sdist -> wheel, installed into a fresh virtual environment, run elsewhere.

Builds the sdist and, from it, the wheel (``python -m build --no-isolation``: hatchling and build
come with the ``dev`` extra), installs the wheel with ``--no-deps`` into a new venv, and checks
from a temporary working directory that

* ``nksim`` is imported from the venv, not from this source tree (the editable install in the
  system site-packages must not shadow the wheel), and the shipped data (models, protocols,
  calibration data and results) is the wheel's package data;
* ``nksim run`` (the console script) writes trial.nc and trial.png, with a small lattice;
* the core runs with every optional package hidden, and sweep/calibrate then stop with one line
  naming the extra to install.

The new venv takes its dependencies from the environment running the tests, wherever that is
(a virtual env, as the README installs it, or the system Python): a ``.pth`` file in the new
venv's site-packages appends this interpreter's site-packages folders to its path. Folders named
in a ``.pth`` file are added as plain path entries, so their own ``.pth`` files (among them the
editable install of this checkout) are not run: the venv's ``nksim`` is the wheel's.
"""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A small lattice (the calibration resolution: same marrow region, 5 x 5 voxels of 3.2 mm).
TINY_MODEL = """\
[meta]
name = "tiny"
extends = "default"
description = "default on a 5 x 5 lattice (wheel test)"

[lattice.side]
value = 5
unit = "1"
description = "Lattice side in voxels"
source = "test"

[lattice.voxel_side]
value = 3200.0
unit = "um"
description = "Edge length of one voxel"
source = "test"
"""

#: Runs the CLI with the optional packages hidden (as if only the core dependencies were installed).
CORE_ONLY = """\
import sys
for name in ("dask", "distributed", "zarr", "pyabc", "SALib", "mesa", "solara"):
    sys.modules[name] = None  # import raises ModuleNotFoundError; find_spec gives None
from nksim.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: What the venv's nksim sees (run as a script from the temporary directory).
PROBE = """\
import json, nksim
from nksim.resources import DATA_FOLDERS, data_path
print(json.dumps({"file": nksim.__file__, "version": nksim.__version__,
                  "data": {k: str(data_path(k)) for k in DATA_FOLDERS}}))
"""


def _dependency_folders() -> list[str]:
    """The site-packages folders of the interpreter running the tests (venv or system, and the user's if enabled)."""
    folders = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    return [f for f in dict.fromkeys(folders) if Path(f).is_dir()]


def _env(bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NUMBA_CACHE_DIR", "PYTHONSTARTUP")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin dir, working directory, environment) with the built wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT], cwd=tmp,
         env=_env(Path(sys.executable).parent))
    (sdist,) = dist.glob("nksim-*.tar.gz")
    (wheel,) = dist.glob("nksim-*.whl")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for path in ("models/default.toml", "experiments/protocols/ahmadvand2023.toml", "calibration/ahmadvand2023.toml",
                 "calibration/data/ahmadvand2023_outcomes.csv", "calibration/posterior/posterior.nc",
                 "hatch_build.py", "nksim/resources.py"):
        assert path in names, f"sdist lacks {path}"

    env_dir = tmp / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=os.name != "nt").create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env = _env(bindir)
    venv_site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp,
                     env=env).stdout.strip()
    Path(venv_site, "_nksim_test_dependencies.pth").write_text("\n".join(_dependency_folders()) + "\n")
    # pip comes from this environment too; --ignore-installed: the editable nksim there is not this one
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet", wheel],
         cwd=tmp, env=env)
    work = tmp / "elsewhere"
    work.mkdir()
    return python, bindir, work, env, env_dir


def test_wheel_imports_from_the_venv_with_its_package_data(installed):
    python, _, work, env, env_dir = installed
    (work / "probe.py").write_text(PROBE)
    info = json.loads(_run([python, "probe.py"], cwd=work, env=env).stdout)
    venv_root = env_dir.resolve()
    pkg = Path(info["file"]).resolve().parent
    assert venv_root in pkg.parents, f"nksim imported from {pkg}, not from the venv {venv_root}"
    assert ROOT.resolve() not in pkg.parents
    for name, folder in info["data"].items():
        assert Path(folder).resolve() == pkg / "_data" / name, (name, folder)
    data = {k: Path(v) for k, v in info["data"].items()}
    assert (data["models"] / "default.toml").is_file()
    assert (data["protocols"] / "ahmadvand2023.toml").is_file()
    assert (data["calibration"] / "ahmadvand2023.toml").is_file()
    assert (data["calibration"] / "data" / "ahmadvand2023_outcomes.csv").is_file()
    assert (data["calibration"] / "posterior" / "posterior.nc").is_file()


def test_wheel_nksim_run_from_another_directory(installed):
    python, bindir, work, env, _ = installed
    (work / "tiny.toml").write_text(TINY_MODEL)
    proc = _run([bindir / "nksim", "run", "--model", "tiny.toml", "--out", "trial", "--no-progress"], cwd=work, env=env)
    assert "wrote trial/trial.nc" in proc.stdout and "wrote trial/trial.png" in proc.stdout
    assert (work / "trial" / "trial.png").stat().st_size > 0
    check = "import sys, xarray as xr; print(xr.open_dataset(sys.argv[1]).sizes['patient'])"
    out = _run([python, "-c", check, work / "trial" / "trial.nc"], cwd=work, env=env).stdout
    assert int(out) == 10  # the ahmadvand2023 protocol, found in the wheel's package data


def test_wheel_core_without_optional_packages(installed):
    python, _, work, env, _ = installed
    (work / "tiny.toml").write_text(TINY_MODEL)
    (work / "core_only.py").write_text(CORE_ONLY)
    proc = _run([python, "core_only.py", "run", "--model", "tiny.toml", "--out", "core", "--no-progress"],
                cwd=work, env=env)
    assert (work / "core" / "trial.nc").is_file() and (work / "core" / "trial.png").is_file()
    for args, extra in ((["sweep", "spec.toml", "--out", "s.zarr"], "sweep"),
                        (["summarize", "s.zarr"], "sweep"),
                        (["calibrate", "ahmadvand2023", "--smoke"], "calibrate"),
                        (["screen", "ahmadvand2023"], "calibrate")):
        proc = _run([python, "core_only.py", *args], cwd=work, env=env, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("nksim: error: ") and f'pip install "nksim[{extra}]"' in lines[0], lines[0]
