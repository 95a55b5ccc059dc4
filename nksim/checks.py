"""The checks of user input: a number within an allowed range, a TOML value's type, a seed.

Model files (:mod:`nksim.parameters`), protocols (:mod:`nksim.protocol`), sweep factors
(:mod:`nksim.sweep.factors`), calibration configs and targets
(:mod:`nksim.calibration.config`, :mod:`nksim.calibration.data`) all validate numbers here,
so that every such error reads the same way and names the file, the key and the allowed
range::

    value 7.5 must be a whole number (integer); allowed range [2, 4096] (whole numbers)

:func:`check_number` raises :class:`~nksim.errors.NksimInputError`; :func:`number_problem`
returns the message instead, for callers that report errors their own way (a CSV cell, whose
error names the row and the column).

:func:`check_table` checks a TOML table against its declared fields (``{name: TOML type}``):
unknown and missing fields, and the TOML type of every value (:data:`TOML_TYPES`), so that a
wrong type anywhere is a one-line error naming the file, the key and the expected type::

    proto.toml: key 'events[0].kind': expected a string, got an array (['il2'])

:func:`check_seed` is the one check of a random seed (every public entry point that takes one).
"""
from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import NksimInputError

__all__ = ["SEED_LIMIT", "TOML_TYPES", "check_number", "check_seed", "check_table", "check_type", "number_problem",
           "range_text", "show", "type_problem"]

#: Seeds are unsigned 64-bit integers (stored as such in every output file): allowed ``[0, SEED_LIMIT)``.
SEED_LIMIT = 2**64

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 6, 6


def show(value: Any) -> str:
    """A short text of any value for an error message (depth and length bounded: never a recursion error)."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose repr fails: say what it is
        return f"<{type(value).__name__}>"


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
    return show(value)


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


# ----------------------------------------------------------------------------- TOML types
#: TOML types a field may declare, with the Python types :mod:`tomllib` gives them. ``"number"`` is
#: an integer or a float; ``"array of T"`` an array whose every element is a T (e.g. ``"array of
#: numbers"``, ``"array of tables"``). A boolean is never a number.
TOML_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "string": ("a string", (str,)),
    "integer": ("an integer", (int,)),
    "float": ("a float", (float,)),
    "number": ("a number (integer or float)", (int, float)),
    "boolean": ("a boolean (true or false)", (bool,)),
    "array": ("an array", (list, tuple)),
    "table": ("a table", (Mapping,)),
}
_PLURAL = {"strings": "string", "integers": "integer", "floats": "float", "numbers": "number",
           "booleans": "boolean", "arrays": "array", "tables": "table"}


def toml_type_of(value: Any) -> str:
    """The TOML type of a parsed value, as an article and a name (``"an array"``, ``"a string"``)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    import datetime

    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return f"a {type(value).__name__}"


def _is(value: Any, name: str) -> bool:
    """Whether ``value`` is of TOML type ``name`` (NumPy scalars count as numbers: API input)."""
    if isinstance(value, bool):
        return name == "boolean"
    if name == "integer":
        return isinstance(value, numbers.Integral)
    if name == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    if name == "number":
        return isinstance(value, numbers.Real)
    return isinstance(value, TOML_TYPES[name][1])


def _parse_type(expected: str) -> tuple[str, str | None]:
    """``"array of numbers"`` -> ``("array", "number")``; ``"string"`` -> ``("string", None)``."""
    if expected.startswith("array of "):
        inner = expected[len("array of "):]
        inner = _PLURAL.get(inner, inner)
        if inner not in TOML_TYPES:
            raise ValueError(f"unknown TOML type {expected!r}")
        return "array", inner
    if expected not in TOML_TYPES:
        raise ValueError(f"unknown TOML type {expected!r}; known: {sorted(TOML_TYPES)} or 'array of ...'")
    return expected, None


def type_text(expected: str) -> str:
    """The declared type as words: ``"an array of numbers"``, ``"a string"``."""
    outer, inner = _parse_type(expected)
    if inner is None:
        return TOML_TYPES[outer][0]
    return f"an array of {inner}s" if inner != "number" else "an array of numbers"


def type_problem(value: Any, expected: str) -> tuple[str, str] | None:
    """What is wrong with the TOML type of ``value`` (declared ``expected``), or ``None``.

    Returns ``(suffix, message)``: ``suffix`` is ``""`` for the value itself or ``"[i]"`` for the
    first element of an array of the wrong type.
    """
    outer, inner = _parse_type(expected)
    if not _is(value, outer):
        return "", f"expected {type_text(expected)}, got {toml_type_of(value)} ({show(value)})"
    if inner is not None:
        for i, item in enumerate(value):
            if not _is(item, inner):
                return f"[{i}]", (f"expected {TOML_TYPES[inner][0]} (an element of {type_text(expected)}), got "
                                  f"{toml_type_of(item)} ({show(item)})")
    return None


def check_type(value: Any, expected: str, *, source: Any, key: str) -> Any:
    """``value`` unchanged if its TOML type is ``expected`` (see :data:`TOML_TYPES`), else NksimInputError.

    The error names ``source``, ``key`` (with ``[i]`` for an element of an array) and the
    expected type, and shows the value briefly (nested arrays, however deep, are cut short).
    """
    problem = type_problem(value, expected)
    if problem is not None:
        suffix, message = problem
        raise NksimInputError(message, source=source, key=f"{key}{suffix}")
    return value


def check_table(table: Any, fields: Mapping[str, str], *, source: Any, key: str = "",
                required: Sequence[str] = (), what: str = "field") -> Mapping[str, Any]:
    """Check a TOML table against its declared ``fields`` (``{name: TOML type}``); returns it.

    Refused, each with an :class:`NksimInputError` naming ``source`` and the key: a ``table``
    that is not a table; an unknown field (the allowed ones are listed); a missing ``required``
    field; a field whose value is not of its declared type (:func:`check_type`). ``key`` is the
    table's own dotted key (``""`` for the top level of a file).
    """
    if not isinstance(table, Mapping):
        raise NksimInputError(f"expected a table, got {toml_type_of(table)} ({show(table)})", source=source,
                              key=key or None)
    for f in table:
        if f not in fields:
            raise NksimInputError(f"unknown {what} '{f}'; allowed: {sorted(fields)}", source=source, key=key or None)
    for f in required:
        if f not in table:
            raise NksimInputError(f"missing {what} '{f}'", source=source, key=key or None)
    for f, expected in fields.items():
        if f in table:
            check_type(table[f], expected, source=source, key=f"{key}.{f}" if key else f)
    return table


# ----------------------------------------------------------------------------- seeds
def check_seed(seed: Any, *, source: Any = None, key: str = "seed", limit: int = SEED_LIMIT) -> int:
    """``seed`` as an ``int`` if it is an integer in ``[0, limit)``, else :class:`NksimInputError`.

    The one check of a random seed, used by every public entry point that takes one
    (:func:`nksim.simulate`, :func:`nksim.simulate_cohort`, :mod:`nksim.streams`, sweep specs,
    calibration configs, the Morris screen). Accepted: Python and NumPy integers in
    ``[0, limit)`` (default ``[0, 2**64)``: outputs store seeds as unsigned 64-bit integers).
    Refused: bools, floats (also whole ones such as ``1.0``, and ``1.5``, which would otherwise
    run as seed 1), strings, and integers outside the range. The error names ``source`` and
    ``key`` and the allowed range.
    """
    rng = f"[0, {_power(limit)})"
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        if isinstance(seed, numbers.Real) and not isinstance(seed, bool):
            what = f"value {show(seed)} is not an integer (a float)"
        else:
            what = f"value {show(seed)} is {toml_type_of(seed)}, not an integer"
        raise NksimInputError(f"{what}; a seed must be an integer in {rng}", source=source, key=key)
    value = int(seed)
    if not 0 <= value < limit:
        raise NksimInputError(f"value {value} is outside the allowed range: a seed must be an integer in {rng}",
                              source=source, key=key)
    return value


def _power(n: int) -> str:
    """``2**64`` for powers of two above 2**16, else the number."""
    k = n.bit_length() - 1
    return f"2**{k}" if k > 16 and n == 1 << k else str(n)
