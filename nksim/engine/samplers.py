"""Exact random-variate samplers for the numba kernel, drawing from a process's PCG64 stream.

Every sampler takes the stream of the process that draws (``rng_marrow``, ``rng_init``,
``rng_traffic``: the state words of its Generator, :mod:`nksim.engine.pcg64`) and consumes only
its uniforms (:func:`~nksim.engine.pcg64.uniform`, ``Generator.random()``'s values), so the explicit-RNG story of
the kernel holds: the same seed gives the same draws, and each process advances only its own
stream. Counts are ``int64`` in and out (one integer type: one compiled specialisation).

Why not ``Generator.binomial``: numba's version recomputes its whole set-up (logs, exps, square
roots, argument checks) on every call (35-75 ns per draw, measured), and the marrow update makes
~15 draws per voxel per day. Here:

* :func:`binomial` / :func:`binomial_draw` -- exact Bin(n, p). ``p`` is folded to ``p' <= 1/2``
  (``X = n - Bin(n, 1 - p)``). For a mean ``n p' < INVERSION_MAX_MEAN`` sequential inversion from
  0 (the BINV recurrence ``P(k) = P(k-1) ((n + 1) / k - 1) p'/q'``; one uniform, ~mean steps;
  restarted in the (< 1e-20) event that rounding carries the search past
  ``mean + 10 sd + 10``); otherwise Hormann's (1993) transformed rejection with squeeze, BTRS,
  whose final test uses exact log-factorials (a table of ``lgamma(k + 1)`` for ``k < 8192``,
  Stirling's series with three correction terms beyond, truncation error < 1e-30). Both are exact
  in distribution up to floating-point rounding. ``n <= 0``, ``p <= 0`` return 0 and ``p >= 1``
  returns ``n`` without touching the stream.
* :func:`binomial_setup` -- the per-probability part of the set-up, shared by draws with the same
  ``p`` (the susceptible and resistant blasts of a voxel, the spread fraction of every voxel).
* :func:`split_even4` -- an even multinomial split of ``m`` items over 4 classes (the four
  neighbours of a voxel): each item's class is 2 bits of a uniform (53 random bits per uniform,
  26 items per draw), exactly Multinomial(m; 1/4, 1/4, 1/4, 1/4); the classes of a draw's items
  are counted with three population counts (one CPU instruction each) instead of item by item.

Tested against ``scipy.stats`` (chi-square and Kolmogorov-Smirnov at fixed seeds) in
``tests/test_samplers.py``. The compiled kernel links these functions into its own cache
entry, so :mod:`nksim.engine` includes this file's digest in the cache guard's stamp.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .jitopts import LEAF_JIT
from .pcg64 import uniform

#: Mean ``n p'`` (``p' = min(p, 1 - p)``) below which inversion is used, at or above which BTRS.
#: BTRS is valid for means >= 10 (Hormann 1993); 24 is about the measured break-even on this machine
#: (inversion costs ~2 ns per unit of mean, BTRS ~45-60 ns whatever the mean).
INVERSION_MAX_MEAN = 24.0
_LF_SIZE = 8192
#: log(k!) for k < 8192 (exact to rounding); larger k use Stirling's series (:func:`log_factorial`).
LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(_LF_SIZE)])
_RECIP_SIZE = 256
_RECIP = np.array([0.0] + [1.0 / k for k in range(1, _RECIP_SIZE)])  # 1 / k: the search avoids a division
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_TWO53 = 9007199254740992.0  # 2**53: random() * 2**53 is a uniform 53-bit integer


@njit(**LEAF_JIT)
def log_factorial(k):
    """log(k!) for an integer ``k >= 0``: table below 8192, Stirling's series with 3 terms beyond."""
    if k < _LF_SIZE:
        return LOG_FACTORIAL[k]
    x = k + 1.0
    x2 = x * x
    return ((x - 0.5) * math.log(x) - x + _HALF_LOG_2PI
            + (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * x2)) / x2) / x)


@njit(**LEAF_JIT)
def binomial_setup(p):
    """Set-up for Bin(n, ``p``) draws that share ``p``: ``(p', q', log q', flip)``, ``p' <= 1/2``.

    ``flip``: the draw is ``n - Bin(n, p')`` (``p > 1/2``). ``p <= 0`` (or NaN) gives ``p' = 0``
    (draws return 0), ``p >= 1`` gives ``p' = 0`` flipped (draws return ``n``).
    """
    if not p > 0.0:
        return 0.0, 1.0, 0.0, False
    if p >= 1.0:
        return 0.0, 1.0, 0.0, True
    if p > 0.5:
        return 1.0 - p, p, math.log(p), True
    return p, 1.0 - p, math.log1p(-p), False


@njit(**LEAF_JIT)
def _binomial_inversion(rng, n, p, q, logq):
    """Bin(n, p) by sequential search from 0 (p <= 1/2, small mean); one uniform per try.

    ``P(k) = P(k - 1) ((n + 1) / k - 1) p / q`` with ``1 / k`` from a table. If rounding leaves
    the summed probabilities below ``u`` at ``k = n`` (probability ~1e-16), it draws again.
    """
    r0 = math.exp(n * logq)  # P(0) = q^n
    s = p / q
    a = (n + 1) * s
    while True:
        u = uniform(rng)
        x = 0
        r = r0
        cdf = r0
        while u > cdf and x < n:
            x += 1
            r *= a * (_RECIP[x] if x < _RECIP_SIZE else 1.0 / x) - s
            cdf += r
        if u <= cdf:
            return x


@njit(**LEAF_JIT)
def _binomial_btrs(rng, n, p, q, logq):
    """Bin(n, p) by Hormann's BTRS (p <= 1/2, mean n p >= 10): ~1.2 tries of two uniforms."""
    mean = n * p
    spq = math.sqrt(mean * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = mean + 0.5
    vr = 0.92 - 4.2 / b
    alpha = 0.0
    lpq = 0.0
    h = 0.0
    m = 0
    have_set_up = False
    while True:
        u = uniform(rng) - 0.5
        v = uniform(rng)
        us = 0.5 - abs(u)
        kf = math.floor((2.0 * a / us + b) * u + c)
        if us >= 0.07 and v <= vr:
            return np.int64(kf)
        if not (kf >= 0.0 and kf <= n):
            continue
        if not have_set_up:  # second part of the set-up, needed only by the exact test
            alpha = (2.83 + 5.1 / b) * spq
            lpq = math.log(p) - logq
            m = np.int64(math.floor((n + 1) * p))
            h = log_factorial(m) + log_factorial(n - m)
            have_set_up = True
        k = np.int64(kf)
        v = v * alpha / (a / (us * us) + b)
        if math.log(v) <= h - log_factorial(k) - log_factorial(n - k) + (k - m) * lpq:
            return k


@njit(**LEAF_JIT)
def binomial_draw(rng, n, setup):
    """Bin(``n``, p) with ``setup = binomial_setup(p)``; ``n`` is int64. No draw when the result is certain."""
    p, q, logq, flip = setup
    if n <= 0:
        return np.int64(0)
    if p == 0.0:
        return n if flip else np.int64(0)
    mean = n * p
    if mean < INVERSION_MAX_MEAN:
        x = _binomial_inversion(rng, n, p, q, logq)
    else:
        x = _binomial_btrs(rng, n, p, q, logq)
    return n - x if flip else x


@njit(**LEAF_JIT)
def binomial(rng, n, p):
    """Bin(``n``, ``p``) (``n`` int64): exact; 0 for ``n <= 0`` or ``p <= 0``, ``n`` for ``p >= 1``, no draw then."""
    if n <= 0 or not p > 0.0:
        return np.int64(0)
    return binomial_draw(rng, n, binomial_setup(p))


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of an int64 (LLVM ``ctpop``: one ``popcnt`` instruction on x86-64)."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return sig, codegen


#: Bit 0 of every 2-bit field of a 64-bit word.
_EVEN_BITS = np.int64(0x5555555555555555)


@njit(**LEAF_JIT)
def split_even4(rng, m):
    """Multinomial(``m``; 1/4 each) as a tuple of 4 int64 counts: 2 random bits per item.

    Item ``k`` of a draw (``k < 26``) has class ``(bits >> 2k) & 3``; the items of each class
    are counted with population counts of the fields' low and high bits (the same counts as
    reading the items one by one).
    """
    c0 = np.int64(0)
    c1 = np.int64(0)
    c2 = np.int64(0)
    c3 = np.int64(0)
    left = m
    while left > 0:
        bits = np.int64(uniform(rng) * _TWO53)  # 53 uniform random bits; 26 items use 52 of them
        take = left if left < 26 else 26
        fields = (np.int64(1) << (2 * take)) - 1  # the 2 take low bits
        lo = bits & fields & _EVEN_BITS  # bit 0 of each item's class
        hi = (bits >> 1) & fields & _EVEN_BITS  # bit 1
        n3 = _popcount(lo & hi)
        n2 = _popcount(hi) - n3
        n1 = _popcount(lo) - n3
        c3 += n3
        c2 += n2
        c1 += n1
        c0 += take - n1 - n2 - n3
        left -= take
    return c0, c1, c2, c3
