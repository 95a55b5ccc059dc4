"""The one check of "a number within an allowed range" for user input.

Model files (:mod:`nksim.parameters`), protocols (:mod:`nksim.protocol`), sweep factors
(:mod:`nksim.sweep.factors`), calibration configs and targets
(:mod:`nksim.calibration.config`, :mod:`nksim.calibration.data`) all validate numbers here,
so that every such error reads the same way and names the file, the key and the allowed
range::

    value 7.5 must be a whole number (integer); allowed range [2, 4096] (whole numbers)

:func:`check_number` raises :class:`~nksim.errors.NksimInputError`; :func:`number_problem`
returns the message instead, for callers that report errors their own way (a CSV cell, whose
error names the row and the column).
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import NksimInputError

__all__ = ["check_number", "number_problem", "range_text"]


def _fmt(x: Any) -> str:
    """A number as text: the short ``:g`` form when it is exact, else every digit."""
    if isinstance(x, numbers.Integral):
        x = int(x)
        try:
            s = f"{x:g}"
        except OverflowError:  # an int too large for a float
            return str(x)
        return s if float(s) == x else str(x)
    x = float(x)
    s = f"{x:g}"
    return s if math.isnan(x) or float(s) == x else repr(x)


def _show(value: Any) -> str:
    """The offending value as text: numbers plainly (also NumPy scalars), anything else by repr."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return _fmt(value)
        except (TypeError, ValueError, OverflowError):
            pass
    return repr(value)


def range_text(lo: float = -math.inf, hi: float = math.inf, unit: str = "", *,
               integer: bool = False, lo_open: bool = False) -> str:
    """``"allowed range [lo, hi] unit"`` (``(lo`` when ``lo_open``; ``(whole numbers)`` when ``integer``)."""
    text = f"allowed range {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
    if unit:
        text += f" {unit}"
    if integer:
        text += " (whole numbers)"
    return text


def number_problem(value: Any, *, lo: float = -math.inf, hi: float = math.inf, unit: str = "",
                   integer: bool = False, lo_open: bool = False,
                   types: tuple[type, ...] = (int, float), shown: str | None = None) -> str | None:
    """What is wrong with ``value`` as a number in the allowed range, or ``None`` if nothing is.

    Rejected: bools; anything not an instance of ``types`` (default ``int`` and ``float``; pass
    e.g. ``(int,)`` to refuse ``5.0`` for a count, or add NumPy scalar types); NaN and
    infinities; values below ``lo`` (or equal to it when ``lo_open``) or above ``hi``; and,
    when ``integer``, values that are not whole. Bounds are inclusive unless ``lo_open``;
    comparisons of ints are exact (no rounding through float). ``shown`` replaces the value's
    own text in the message (e.g. the raw text of a CSV cell).
    """
    rng = range_text(lo, hi, unit, integer=integer, lo_open=lo_open)
    txt = shown if shown is not None else _show(value)
    if isinstance(value, bool) or not isinstance(value, types):
        if integer and isinstance(value, float):
            txt = shown if shown is not None else repr(float(value))  # "5.0", not "5"
            return f"value {txt} must be a whole number (integer), written without a decimal point; {rng}"
        return f"value {txt} is not a number; {rng}"
    if isinstance(value, numbers.Integral):
        num: float | int = int(value)
    else:
        num = float(value)
        if not math.isfinite(num):
            return f"value {txt} is not a finite number; {rng}"
    if not ((lo < num) if lo_open else (lo <= num)) or not num <= hi:
        return f"value {txt} is outside the {rng}"
    if integer and isinstance(num, float) and num != int(num):
        return f"value {txt} must be a whole number (integer); {rng}"
    try:
        float(num)
    except OverflowError:  # an int in range only because hi is infinite
        return f"value {txt} is too large to be represented; {rng}"
    return None


def check_number(value: Any, *, source: Any, key: str, lo: float = -math.inf, hi: float = math.inf,
                 unit: str = "", integer: bool = False, lo_open: bool = False,
                 types: tuple[type, ...] = (int, float)) -> float:
    """``value`` as a float if it is a number in the allowed range, else :class:`NksimInputError`.

    The error names ``source`` (file or other origin), ``key`` and the allowed range; see
    :func:`number_problem` for what is rejected. Callers that need an ``int`` (counts, seeds)
    should convert the *original* value, which for ``types=(int,)`` is exact for any size.
    """
    problem = number_problem(value, lo=lo, hi=hi, unit=unit, integer=integer, lo_open=lo_open, types=types)
    if problem is not None:
        raise NksimInputError(problem, source=source, key=key)
    return float(value)
