"""The kernel's inlined PCG64 (nksim.engine.pcg64) draws exactly what numpy's Generator draws.

Value-for-value equality with ``Generator.random()`` and ``Generator.integers(0, n)``
interleaved (including the buffered upper 32-bit half that PCG64 keeps between bounded draws),
state round trips through pack/unpack, the states spawned_states derives from a SeedSequence's
entropy equal those of numpy's spawned Generators, and a simulation starts its kernel from the
states of its streams' Generators.
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


def _entropy_words(seed, key):
    """SeedSequence's assembled entropy, written out independently of nksim.streams."""
    def words(v):
        out = [v & 0xFFFFFFFF]
        v >>= 32
        while v:
            out.append(v & 0xFFFFFFFF)
            v >>= 32
        return out
    run = words(seed)
    return np.array(run + [0] * (4 - len(run)) + [w for k in key for w in words(k)], dtype=np.uint64)


def test_spawned_states_equal_the_states_of_spawned_generators():
    """spawned_states gives, child by child, the state of Generator(PCG64(child)) of numpy's SeedSequence.spawn."""
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1] + [int(x) for x in rng.integers(0, 2**63, size=20)]
    keys = [(0, 0), (2**32 - 1, 1), (17, 2**32 + 3), (123456789, 2**40)] + [
        (int(a), int(b)) for a, b in zip(rng.integers(0, 2**32, size=20), rng.integers(0, 1000, size=20))]
    for seed in seeds:
        for key in keys:
            got = pcg64.spawned_states(_entropy_words(seed, key), 0, 8)
            for i, child in enumerate(np.random.SeedSequence(seed, spawn_key=key).spawn(8)):
                want = pcg64.pack(np.random.Generator(np.random.PCG64(child)))
                np.testing.assert_array_equal(got[i], want, err_msg=f"seed {seed}, key {key}, child {i}")
    later = pcg64.spawned_states(_entropy_words(5, (1, 2)), 3, 2)  # children 3 and 4 alone
    np.testing.assert_array_equal(later, pcg64.spawned_states(_entropy_words(5, (1, 2)), 0, 5)[3:])


@pytest.mark.parametrize("seed,replicate", [(3, 0), (2**64 - 1, 7), (np.uint64(12), np.int64(2))])
def test_simulation_starts_the_kernel_from_the_streams_generators(monkeypatch, seed, replicate):
    """run_one hands the kernel the states of generators(seed, patient, replicate), stream by stream."""
    import importlib

    from nksim import load_protocol
    from nksim.parameters import load_parameters
    from nksim.streams import generators, stream_generator

    sim = importlib.import_module("nksim.simulate")
    params = load_parameters("default").with_values({"lattice.side": 2}, origin="test")
    proto = load_protocol("ahmadvand2023")
    pat = proto.patients[0]
    fresh = generators(seed, pat.id, replicate)
    states = sim.kernel_states(seed, pat.id, replicate)
    assert len(states) == len(sim.KERNEL_STREAMS)
    for name, st in zip(sim.KERNEL_STREAMS, states):
        np.testing.assert_array_equal(st, pcg64.pack(fresh[name]), err_msg=name)
    assert (stream_generator(seed, pat.id, replicate, "patient").bit_generator.state
            == fresh["patient"].bit_generator.state)
    captured = []
    real = sim.run_patient

    def spy(*args):
        captured.append([a.copy() for a in args[-7:-1]])
        return real(*args)

    monkeypatch.setattr(sim, "run_patient", spy)
    sim.run_one(params, proto, pat, seed, replicate)
    for name, st in zip(sim.KERNEL_STREAMS, captured[0]):
        np.testing.assert_array_equal(st, pcg64.pack(fresh[name]), err_msg=name)
