"""The kernel's inlined PCG64 (nksim.engine.pcg64) draws exactly what numpy's Generator draws.

Value-for-value equality with ``Generator.random()`` and ``Generator.integers(0, n)``
interleaved (including the buffered upper 32-bit half that PCG64 keeps between bounded draws),
state round trips through pack/unpack, and a whole simulation that leaves each Generator where
drawing the same values through numpy would have left it.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from nksim.engine import pcg64


@njit(cache=False)
def _mixed(st, ns):
    out = np.empty(ns.shape[0])
    for i in range(ns.shape[0]):
        out[i] = pcg64.uniform(st) if ns[i] == 0 else pcg64.below(st, ns[i])
    return out


def _numpy_mixed(gen, ns):
    return np.array([gen.random() if n == 0 else gen.integers(0, n) for n in ns], dtype=float)


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 11])
def test_uniforms_and_bounded_integers_equal_numpy(seed):
    # bounds: 1 (no draw), powers of 2, small odd (Lemire rejection is likely at large odd n), the lattice
    # sizes the kernel uses, and the largest 32-bit range
    choices = np.array([0, 0, 0, 1, 2, 3, 4, 5, 7, 1600, 40_000, 250_000, 2**31 + 5, 2**32 - 1], dtype=np.int64)
    ns = np.random.default_rng(seed % 1000).choice(choices, size=30_000)
    a = np.random.Generator(np.random.PCG64(seed))
    b = np.random.Generator(np.random.PCG64(seed))
    a.integers(0, 9)  # leave a buffered 32-bit half pending in both
    b.integers(0, 9)
    st = pcg64.pack(b)
    np.testing.assert_array_equal(_mixed(st, ns), _numpy_mixed(a, ns))
    pcg64.unpack(st, b)
    assert b.bit_generator.state == a.bit_generator.state
    assert b.random() == a.random() and b.integers(0, 1000) == a.integers(0, 1000)


def test_large_odd_bound_rejections_follow_numpy():
    """N = 3 * 2**30 rejects a quarter of the 32-bit draws: the rejection loop must match numpy's."""
    n = np.full(5000, 3 * 2**30, dtype=np.int64)
    a = np.random.Generator(np.random.PCG64(5))
    st = pcg64.pack(np.random.Generator(np.random.PCG64(5)))
    np.testing.assert_array_equal(_mixed(st, n), _numpy_mixed(a, n))
    assert len(set(_mixed(st, n).tolist())) > 4900


def test_pack_refuses_other_bit_generators():
    with pytest.raises(TypeError, match="PCG64"):
        pcg64.pack(np.random.Generator(np.random.Philox(1)))


def test_pack_copies_and_unpack_restores():
    g = np.random.Generator(np.random.PCG64(42))
    before = g.bit_generator.state
    st = pcg64.pack(g)
    assert st.dtype == np.uint64 and st.shape == (pcg64.STATE_WORDS,)
    _mixed(st, np.zeros(10, dtype=np.int64))
    assert g.bit_generator.state == before  # the Generator is untouched until unpack
    pcg64.unpack(st, g)
    ref = np.random.Generator(np.random.PCG64(42))
    ref.random(10)
    assert g.bit_generator.state == ref.bit_generator.state


def test_simulation_advances_the_generators_it_was_given(monkeypatch):
    """run_one writes the kernel's advanced states back into the Generators (the lattice and marrow always draw)."""
    import importlib

    from nksim import load_protocol
    from nksim.parameters import load_parameters
    from nksim.streams import generators

    sim = importlib.import_module("nksim.simulate")
    params = load_parameters("default").with_values({"lattice.side": 4}, origin="test")
    proto = load_protocol("ahmadvand2023")
    pat = proto.patients[0]
    fresh = generators(3, pat.id, 0)
    captured = {}

    def spy(*args):
        captured.update(generators(*args))
        return captured

    monkeypatch.setattr(sim, "generators", spy)
    sim.run_one(params, proto, pat, 3, 0)
    for name in ("init", "marrow"):
        assert captured[name].bit_generator.state != fresh[name].bit_generator.state, name
