"""Unit handling.

Units are written in UDUNITS-2 syntax (``uL-1``, ``day-1``, ``mg m-2``,
``percent``) and parsed with :mod:`cf_units`. Input values must be given in the
unit the schema declares for them: a value in another unit -- even a
convertible one -- is an error, never a silent rescaling.
"""
from __future__ import annotations

from functools import cache

import cf_units

from .errors import NksimInputError

#: Names nksim accepts for units UDUNITS-2 cannot spell, and the UDUNITS-2 unit they mean.
#: International units measure bioactivity, not an amount: "MIU" (million IU of IL-2) is a
#: dimensionless count scaled by 10^6.
UNIT_ALIASES: dict[str, str] = {"MIU": "1e6"}


@cache
def parse_unit(text: str) -> cf_units.Unit:
    """Parse a UDUNITS-2 unit string (or an alias of :data:`UNIT_ALIASES`); ``ValueError`` if it is neither."""
    return cf_units.Unit(UNIT_ALIASES.get(text.strip(), text))


def check_unit(given: object, expected: str, *, source: str, key: str) -> None:
    """Require ``given`` to denote exactly the unit ``expected``.

    Spelling variants of the same unit are accepted (``h`` == ``hour``,
    ``1/day`` == ``day-1``); a different unit is rejected even when it is
    convertible, because silently rescaling doses or rates is how protocols go
    wrong.
    """
    if not isinstance(given, str) or not given.strip():
        raise NksimInputError(
            f"missing or empty unit; expected unit '{expected}'", source=source, key=key
        )
    try:
        u_given = parse_unit(given)
    except ValueError as exc:
        raise NksimInputError(
            f"unit '{given}' is not a valid UDUNITS-2 unit ({exc}); expected '{expected}'",
            source=source,
            key=key,
        ) from None
    if u_given != parse_unit(expected):
        raise NksimInputError(
            f"unit '{given}' is not the unit this value must be given in: expected '{expected}'"
            " (values are never rescaled silently)",
            source=source,
            key=key,
        )
