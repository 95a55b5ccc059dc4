"""nksim.checks: the one check of "a number within an allowed range"."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nksim.checks import check_number, number_problem, range_text
from nksim.errors import NksimInputError


def fails(value, fragment: str, **kw) -> str:
    with pytest.raises(NksimInputError) as info:
        check_number(value, source="in.toml", key="a.b", **kw)
    msg = str(info.value)
    assert msg.startswith("in.toml: key 'a.b': "), msg
    assert fragment in msg, msg
    assert info.value.source == "in.toml" and info.value.key == "a.b"
    return msg


@pytest.mark.parametrize("value", [True, False, np.bool_(True), "5", None, [1.0], 1 + 0j])
def test_not_a_number(value):
    msg = fails(value, "is not a number", lo=0, hi=10, unit="day")
    assert "allowed range [0, 10] day" in msg


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_not_finite(value):
    fails(value, "is not a finite number; allowed range [-inf, inf]")


def test_inclusive_bounds():
    assert check_number(0, source="s", key="k", lo=0, hi=1) == 0.0
    assert check_number(1.0, source="s", key="k", lo=0, hi=1) == 1.0
    assert isinstance(check_number(1, source="s", key="k", lo=0, hi=1), float)
    fails(-1e-12, "value -1e-12 is outside the allowed range [0, 1]", lo=0, hi=1)
    fails(1.5, "value 1.5 is outside the allowed range [0, 1]", lo=0, hi=1)


def test_open_lower_bound():
    assert check_number(1e-9, source="s", key="k", lo=0.0, lo_open=True) == 1e-9
    fails(0.0, "outside the allowed range (0, inf]", lo=0.0, lo_open=True)


def test_integer():
    assert check_number(12.0, source="s", key="k", lo=2, hi=4096, integer=True) == 12.0
    msg = fails(7.5, "value 7.5 must be a whole number (integer)", lo=2, hi=4096, integer=True)
    assert "allowed range [2, 4096] (whole numbers)" in msg
    fails(5000, "outside the allowed range [2, 4096]", lo=2, hi=4096, integer=True)


def test_int_only_types_refuse_floats_and_compare_exactly():
    kw = {"lo": 0, "hi": 2**63 - 1, "integer": True, "types": (int,)}
    assert check_number(2**63 - 1, source="s", key="k", **kw) == float(2**63 - 1)
    msg = fails(2**63, "value 9223372036854775808 is outside", **kw)
    assert "[0, 9223372036854775807]" in msg
    fails(5.0, "value 5.0 must be a whole number (integer), written without a decimal point", **kw)
    fails(True, "is not a number", **kw)


def test_numpy_scalars_only_when_allowed():
    fails(np.int64(3), "is not a number", lo=0, hi=10)
    numpy_ok = (int, float, np.integer, np.floating)
    assert check_number(np.int64(3), source="s", key="k", lo=0, hi=10, types=numpy_ok) == 3.0
    assert check_number(np.float32(0.5), source="s", key="k", lo=0, hi=1, types=numpy_ok) == 0.5
    fails(np.float32(np.nan), "not a finite number", types=numpy_ok)
    fails(np.bool_(True), "is not a number", types=numpy_ok)


def test_huge_int_is_an_error_not_a_crash():
    fails(10**400, "outside", lo=0, hi=1e300)
    fails(10**400, "too large")


def test_messages_without_raising():
    assert number_problem(0.5, lo=0, hi=1) is None
    assert number_problem(2.0, lo=0, hi=1, shown="2") == "value 2 is outside the allowed range [0, 1]"
    assert range_text(0.01, 1e10, "kg-1") == "allowed range [0.01, 1e+10] kg-1"
    assert range_text(0.0, 100.0, "percent", lo_open=True) == "allowed range (0, 100] percent"
    assert range_text(0, 1234567.5) == "allowed range [0, 1234567.5]"  # no rounding of a bound
