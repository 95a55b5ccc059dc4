"""Every numba function of the engine is compiled with the engine's options (:mod:`nksim.engine.jitopts`).

``**ENGINE_JIT`` (cache, ``error_model="numpy"``) on the functions that allocate arrays and
``**LEAF_JIT`` (the same without numba's reference-counting runtime where numba allows it) on
every other one: read from the source (``ast``), so a new helper with numba's defaults (a zero
test per division, an atomic reference count per array argument) fails here rather than slowing
the kernel unnoticed.
"""
from __future__ import annotations

import ast
from pathlib import Path

from nksim.engine import jitopts

ENGINE = Path(__file__).resolve().parents[1] / "nksim" / "engine"
#: The engine's functions that allocate arrays (they need numba's reference-counting runtime).
ALLOCATING = {"run_patient", "_grow", "_add_agent", "quiet_tolerances", "spawned_states"}


def _jitted():
    for path in sorted(ENGINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "njit":
                    spread = {k.value.id for k in dec.keywords if k.arg is None}
                    named = {k.arg: ast.literal_eval(k.value) for k in dec.keywords if k.arg is not None}
                    yield path.name, node.name, spread, named


def test_every_engine_function_has_the_engine_options():
    found = list(_jitted())
    assert len(found) > 50  # blood, kernel, samplers, pcg64
    for module, name, spread, named in found:
        assert set(named) <= {"nogil"}, (module, name, named)  # every other option comes from jitopts
        assert spread == ({"ENGINE_JIT"} if name in ALLOCATING else {"LEAF_JIT"}), (module, name, spread)
    assert ALLOCATING <= {name for _, name, _, _ in found}


def test_option_sets():
    assert jitopts.ENGINE_JIT == {"cache": True, "error_model": "numpy"}
    extra = {k: v for k, v in jitopts.LEAF_JIT.items() if k not in jitopts.ENGINE_JIT}
    assert extra == ({"_nrt": False} if jitopts.nrt_option_supported() else {})


def test_numba_without_the_nrt_option_compiles_with_the_runtime(monkeypatch):
    """If numba drops its private ``_nrt`` option the engine falls back to the documented defaults."""
    from numba.core import cpu

    assert jitopts.leaf_options(False) == jitopts.ENGINE_JIT
    monkeypatch.setattr(cpu, "CPUTargetOptions", type("OptionsWithoutNrt", (), {}))
    assert not jitopts.nrt_option_supported()
