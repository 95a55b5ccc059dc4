"""Cold start (issue 13): one line on stderr before the kernel compiles, only where a progress bar is shown.

Fast tests use stand-in dispatchers and a fresh ``NUMBA_CACHE_DIR`` (no compile); the slow
test compiles the kernel once in a fresh cache and checks that the second process is silent.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import nksim
from nksim.engine import cache_guard

sim = importlib.import_module("nksim.simulate")  # the module, not nksim.simulate()

ROOT = Path(__file__).resolve().parents[1]


def _fake(signatures=(), index=None, magic=("cpu", "")):
    cache = None
    if index is not None:
        cache = types.SimpleNamespace(_cache_file=types.SimpleNamespace(_load_index=lambda: index))
    codegen = types.SimpleNamespace(magic_tuple=lambda: magic)
    return types.SimpleNamespace(signatures=list(signatures), _cache=cache,
                                 targetctx=types.SimpleNamespace(codegen=lambda: codegen))


def test_kernel_cached_reads_the_index():
    assert cache_guard.kernel_cached(_fake(signatures=["sig"])) is True      # loaded in this process
    assert cache_guard.kernel_cached(lambda: None) is True                    # NUMBA_DISABLE_JIT
    assert cache_guard.kernel_cached(_fake(index={})) is False                # empty or stale index
    assert cache_guard.kernel_cached(_fake()) is False                        # caching off
    assert cache_guard.kernel_cached(_fake(index={("sig", ("cpu", ""), "h"): 1})) is True
    assert cache_guard.kernel_cached(_fake(index={("sig", ("other-cpu", ""), "h"): 1})) is False
    broken = _fake(index={})
    broken._cache._cache_file._load_index = lambda: 1 / 0
    assert cache_guard.kernel_cached(broken) is None                          # cannot tell: no message


def _env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_fresh_cache_is_cold(tmp_path):
    code = "from nksim.engine import run_patient, cache_guard; print(cache_guard.kernel_cached(run_patient))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "numba"), capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_message_only_with_a_progress_bar(monkeypatch, capsys):
    params = nksim.load_parameters("default").with_values({"lattice.side": 2})
    proto = nksim.load_protocol("ahmadvand2023")
    monkeypatch.setattr(cache_guard, "kernel_cached", lambda d: False)  # as on a cold cache
    nksim.simulate_cohort(params, proto, patients=["p02"], seed=1)
    nksim.simulate(params, proto, patient="p02", seed=1)
    sim.warm_up(params)
    assert sim.COMPILE_MESSAGE not in capsys.readouterr().err   # library calls: silent
    nksim.simulate_cohort(params, proto, patients=["p02"], seed=1, progress=True)
    err = capsys.readouterr().err
    assert err.count(sim.COMPILE_MESSAGE) == 1
    assert err.index(sim.COMPILE_MESSAGE) < err.index("simulating")  # before the progress bar
    sim.warm_up(params, announce=True)
    assert capsys.readouterr().err.count(sim.COMPILE_MESSAGE) == 1
    monkeypatch.setattr(cache_guard, "kernel_cached", lambda d: True)
    nksim.simulate_cohort(params, proto, patients=["p02"], seed=1, progress=True)
    assert sim.COMPILE_MESSAGE not in capsys.readouterr().err


@pytest.mark.slow
def test_cold_cache_prints_once_then_loads_silently(tmp_path):
    """A fresh NUMBA_CACHE_DIR: the first process prints the line and compiles, the second loads silently."""
    code = ("import nksim\n"
            "p = nksim.load_parameters('default').with_values({'lattice.side': 2})\n"
            "nksim.simulate_cohort(p, 'ahmadvand2023', patients=['p02'], seed=1, progress=True)\n")
    env = _env(tmp_path / "numba")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(sim.COMPILE_MESSAGE) == 1
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert sim.COMPILE_MESSAGE not in second.stderr


def test_warmup_command_reports_a_cached_kernel(capsys):
    """In a process whose kernel is loaded, ``nksim warmup`` loads, prints no compile line, exits 0."""
    from nksim.cli import main

    sim.warm_up()
    assert main(["warmup"]) == 0
    io = capsys.readouterr()
    assert "kernel loaded from" in io.out
    assert sim.COMPILE_MESSAGE not in io.err


@pytest.mark.slow
def test_warmup_fills_a_cold_cache_for_later_processes(tmp_path):
    """``nksim warmup`` on a fresh NUMBA_CACHE_DIR compiles (with the line); a later run then loads silently."""
    env = _env(tmp_path / "numba")
    warm = subprocess.run([sys.executable, "-m", "nksim.cli", "warmup"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert warm.returncode == 0, warm.stderr
    assert warm.stderr.count(sim.COMPILE_MESSAGE) == 1
    assert warm.stdout.startswith(f"kernel compiled into {tmp_path / 'numba' / 'engine_'}"), warm.stdout  # its folder
    code = ("import nksim\n"
            "p = nksim.load_parameters('default').with_values({'lattice.side': 2})\n"
            "nksim.simulate_cohort(p, 'ahmadvand2023', patients=['p02'], seed=1, progress=True)\n")
    later = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert later.returncode == 0, later.stderr
    assert sim.COMPILE_MESSAGE not in later.stderr
