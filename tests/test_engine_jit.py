"""Every numba function of the engine is compiled with the engine's options (nksim.engine.kernel, module docstring).

``error_model="numpy"`` on every one and ``_nrt=False`` on every one that allocates no array: read
from the source (``ast``), so a new helper without them (numba's defaults: a zero test per division,
an atomic reference count per array argument) fails here rather than slowing the kernel unnoticed.
"""
from __future__ import annotations

import ast
from pathlib import Path

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
                    yield path.name, node.name, {k.arg: ast.literal_eval(k.value) for k in dec.keywords}


def test_every_engine_function_has_the_engine_options():
    found = list(_jitted())
    assert len(found) > 50  # blood, kernel, samplers, pcg64
    for module, name, opts in found:
        assert opts.get("cache") is True, (module, name)
        assert opts.get("error_model") == "numpy", (module, name)
        if name in ALLOCATING:
            assert "_nrt" not in opts, (module, name)
        else:
            assert opts.get("_nrt") is False, (module, name)
    assert ALLOCATING <= {name for _, name, _ in found}
