"""argparse value types shared by the CLI subcommands."""
from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(lo: int, what: str = "integer") -> Callable[[str], int]:
    """An argparse ``type=`` that accepts integers >= ``lo`` with a clear message otherwise."""

    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} (integer >= {lo}), got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected a {what} (integer >= {lo}), got {v}")
        return v

    convert.__name__ = f"int_at_least_{lo}"
    return convert


#: ``type=`` for counts that must be at least 1 (workers, replicates, trials).
positive_int = int_at_least(1, "positive integer")
