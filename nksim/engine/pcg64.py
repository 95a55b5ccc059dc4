"""numpy's PCG64 generator, inlined into the numba kernel, drawing the values numpy draws.

Why: a ``numpy.random.Generator`` passed to a numba function draws through the bit generator's
C function pointers (an indirect call per uniform, 4-5 ns measured, and numba cannot inline it);
the NK agents draw >= 2 uniforms per agent-step and the marrow update ~12 per voxel-day.
Here the generator's state is a ``uint64`` array of :data:`STATE_WORDS` words that the kernel
advances itself, with the same arithmetic as numpy's ``PCG64`` (128-bit LCG, XSL-RR output;
O'Neill 2014), so the stream is the Generator's own:

* :func:`uniform` is ``Generator.random()`` (53 high bits of the 64-bit output / 2**53);
* :func:`below` is ``Generator.integers(0, n)`` for ``1 <= n < 2**32`` (Lemire's bounded
  draw on the 32-bit output, with PCG64's buffered upper half, as numpy's
  ``random_bounded_uint64`` does);
* :func:`pack` copies a Generator's state into an array (checking that it is a ``PCG64``)
  and :func:`unpack` writes an advanced state back, so a Generator that the kernel used
  continues exactly where the kernel stopped;
* :func:`spawned_states` gives the states of a SeedSequence's children's Generators from the
  sequence's entropy, without building those objects (:func:`nksim.simulate.kernel_states`).

``tests/test_pcg64.py`` checks value-for-value equality with numpy (interleaved uniforms and
bounded integers, carried 32-bit halves, state round trips). The explicit-RNG story is unchanged:
each process has its own state array, the same seed gives the same draws.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .jitopts import ENGINE_JIT, LEAF_JIT

#: Words of one state array: 128-bit state (high, low), 128-bit increment (high, low), whether a
#: buffered 32-bit half is pending (0/1), the buffered half.
STATE_WORDS = 6
_S_HI, _S_LO, _I_HI, _I_LO, _HAS32, _U32 = range(STATE_WORDS)
_MASK64 = (1 << 64) - 1
_M_HI = np.uint64(2549297995355413924)  # PCG_DEFAULT_MULTIPLIER_128, high and low words
_M_LO = np.uint64(4865540595714422341)
_TO_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53
_U32_MAX = np.uint64(0xFFFFFFFF)


@intrinsic
def _mulhi(typingctx, a, b):
    """High 64 bits of the 128-bit product of two uint64 (one ``mul`` on x86-64)."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        wide = ir.IntType(128)
        prod = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(prod, ir.Constant(wide, 64)), ir.IntType(64))

    return sig, codegen


@njit(**LEAF_JIT)
def next64(st):
    """Advance the state (``state * M + inc`` mod 2**128) and return the XSL-RR output (uint64)."""
    _step128(st)
    s_hi = st[_S_HI]
    x = s_hi ^ st[_S_LO]
    rot = s_hi >> np.uint64(58)
    return (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))


@njit(**LEAF_JIT)
def uniform(st):
    """``Generator.random()``: a uniform double in [0, 1) (float64)."""
    return np.float64(next64(st) >> np.uint64(11)) * _TO_DOUBLE


@njit(**LEAF_JIT)
def _next32(st):
    """PCG64's 32-bit output: the buffered upper half of the last 64-bit output, else a new one's lower half."""
    if st[_HAS32] != 0:
        st[_HAS32] = np.uint64(0)
        return st[_U32]
    x = next64(st)
    st[_HAS32] = np.uint64(1)
    st[_U32] = x >> np.uint64(32)
    return x & _U32_MAX


@njit(**LEAF_JIT)
def below(st, n):
    """``Generator.integers(0, n)`` (int64) for an int64 ``1 <= n < 2**32``; ``n == 1`` draws nothing."""
    rng = np.uint64(n - 1)
    if rng == np.uint64(0):
        return np.int64(0)
    excl = rng + np.uint64(1)
    m = _next32(st) * excl
    left = m & _U32_MAX
    if left < excl:
        threshold = (_U32_MAX - rng) % excl
        while left < threshold:
            m = _next32(st) * excl
            left = m & _U32_MAX
    return np.int64(m >> np.uint64(32))


def pack(gen: np.random.Generator) -> np.ndarray:
    """The state of ``gen`` (a ``PCG64`` Generator) as a new uint64 array of :data:`STATE_WORDS` words."""
    bg = gen.bit_generator
    if type(bg) is not np.random.PCG64:
        raise TypeError(f"the kernel's streams are PCG64 generators (nksim.streams); got {type(bg).__name__}")
    s = bg.state
    st, inc = int(s["state"]["state"]), int(s["state"]["inc"])
    return np.array([st >> 64, st & _MASK64, inc >> 64, inc & _MASK64, int(s["has_uint32"]), int(s["uinteger"])],
                    dtype=np.uint64)


def unpack(words: np.ndarray, gen: np.random.Generator) -> None:
    """Set ``gen``'s state to ``words`` (from :func:`pack`, advanced by the kernel)."""
    w = [int(x) for x in words]
    gen.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[_S_HI] << 64) | w[_S_LO], "inc": (w[_I_HI] << 64) | w[_I_LO]},
        "has_uint32": w[_HAS32],
        "uinteger": w[_U32],
    }


# --------------------------------------------------------------------------- seeding without Generator objects
# numpy's SeedSequence (numpy/random/bit_generator.pyx, an algorithm numpy keeps stable for reproducibility):
# hash constants of its entropy pool (pool size 4 words) and of generate_state.
_POOL_SIZE = 4
_INIT_A = np.uint64(0x43B0D7E5)
_MULT_A = np.uint64(0x931E8875)
_INIT_B = np.uint64(0x8B51F9DD)
_MULT_B = np.uint64(0x58F38DED)
_MIX_MULT_L = np.uint64(0xCA01F9DD)
_MIX_MULT_R = np.uint64(0x4973F715)
_M32 = np.uint64(0xFFFFFFFF)
_XSHIFT = np.uint64(16)


@njit(**LEAF_JIT)
def _hashmix(value, hash_const):
    """SeedSequence's ``hashmix`` on 32-bit words (held in uint64); returns ``(value, next hash_const)``."""
    value = (value ^ hash_const) & _M32
    hash_const = (hash_const * _MULT_A) & _M32
    value = (value * hash_const) & _M32
    return value ^ (value >> _XSHIFT), hash_const


@njit(**LEAF_JIT)
def _mix(x, y):
    """SeedSequence's ``mix`` of two 32-bit words (held in uint64)."""
    r = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _M32
    return r ^ (r >> _XSHIFT)


@njit(**LEAF_JIT)
def _step128(st):
    """One LCG step of the 128-bit state: ``state * M + inc`` (mod 2**128), in place."""
    hi = st[_S_HI]
    lo = st[_S_LO]
    new_lo = lo * _M_LO
    new_hi = _mulhi(lo, _M_LO) + hi * _M_LO + lo * _M_HI
    s_lo = new_lo + st[_I_LO]
    carry = np.uint64(1) if s_lo < st[_I_LO] else np.uint64(0)
    st[_S_HI] = new_hi + st[_I_HI] + carry
    st[_S_LO] = s_lo


@njit(**ENGINE_JIT)
def spawned_states(entropy, first, count):
    """PCG64 states (uint64, ``(count, STATE_WORDS)``) of children ``first .. first + count - 1`` of a SeedSequence.

    ``entropy``: the parent's assembled entropy as 32-bit words in a uint64 array (its entropy's
    words, zero-padded to the pool size, then its spawn key's words: :func:`nksim.streams.stream_states`);
    child ``i`` (``i < 2**32``) appends the word ``i``. Row ``k`` is the state that
    ``Generator(PCG64(parent.spawn(...)[first + k]))`` starts from: SeedSequence's pool mixing
    and ``generate_state(4, uint64)``, then PCG64's seeding (``pcg64_set_seed``: two LCG steps),
    without building the SeedSequence, PCG64 and Generator objects (about 10 us each child).
    """
    n_e = entropy.shape[0] + 1
    ent = np.empty(n_e, dtype=np.uint64)
    for i in range(n_e - 1):
        ent[i] = entropy[i]
    out = np.zeros((count, STATE_WORDS), dtype=np.uint64)
    pool = np.empty(_POOL_SIZE, dtype=np.uint64)
    words = np.empty(2 * _POOL_SIZE, dtype=np.uint64)
    for c in range(count):
        ent[n_e - 1] = np.uint64(first + c)
        # mix_entropy
        hc = _INIT_A
        for i in range(_POOL_SIZE):
            pool[i], hc = _hashmix(ent[i] if i < n_e else np.uint64(0), hc)
        for i_src in range(_POOL_SIZE):
            for i_dst in range(_POOL_SIZE):
                if i_src != i_dst:
                    h, hc = _hashmix(pool[i_src], hc)
                    pool[i_dst] = _mix(pool[i_dst], h)
        for i_src in range(_POOL_SIZE, n_e):
            for i_dst in range(_POOL_SIZE):
                h, hc = _hashmix(ent[i_src], hc)
                pool[i_dst] = _mix(pool[i_dst], h)
        # generate_state(4, uint64): 8 32-bit words, paired little-endian
        hb = _INIT_B
        for i in range(2 * _POOL_SIZE):
            v = (pool[i % _POOL_SIZE] ^ hb) & _M32
            hb = (hb * _MULT_B) & _M32
            v = (v * hb) & _M32
            words[i] = v ^ (v >> _XSHIFT)
        seed_hi = words[0] | (words[1] << np.uint64(32))
        seed_lo = words[2] | (words[3] << np.uint64(32))
        inc_hi = words[4] | (words[5] << np.uint64(32))
        inc_lo = words[6] | (words[7] << np.uint64(32))
        # pcg64_set_seed: state 0, inc = (initseq << 1) | 1, step, state += initstate, step
        st = out[c]
        st[_I_HI] = (inc_hi << np.uint64(1)) | (inc_lo >> np.uint64(63))
        st[_I_LO] = (inc_lo << np.uint64(1)) | np.uint64(1)
        _step128(st)
        lo = st[_S_LO] + seed_lo
        carry = np.uint64(1) if lo < seed_lo else np.uint64(0)
        st[_S_HI] = st[_S_HI] + seed_hi + carry
        st[_S_LO] = lo
        _step128(st)
    return out
