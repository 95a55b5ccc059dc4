"""argparse value types shared by the CLI subcommands."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from .checks import SEED_LIMIT as _SEED_LIMIT


def int_at_least(lo: int, what: str = "integer", below: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` that accepts integers >= ``lo`` (and < ``below``) with a clear message otherwise."""
    allowed = f"integer >= {lo}" if below is None else f"integer in [{lo}, {_power(below)})"

    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} ({allowed}), got {text!r}") from None
        if v < lo or (below is not None and v >= below):
            raise argparse.ArgumentTypeError(f"expected a {what} ({allowed}), got {v}")
        return v

    convert.__name__ = f"int_at_least_{lo}"
    return convert


def _power(n: int) -> str:
    """``2**64`` for powers of two above 2**16, else the number."""
    k = n.bit_length() - 1
    return f"2**{k}" if k > 16 and n == 1 << k else str(n)


#: ``--dashboard`` without an address: Dask's usual port, on loopback only.
DEFAULT_DASHBOARD = "127.0.0.1:8787"


def dashboard_address(text: str) -> str:
    """An argparse ``type=`` for ``--dashboard``: ``HOST:PORT`` or ``:PORT`` (port 0-65535; 0 = a free port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or any(c.isspace() or c == "/" for c in host):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:8787 (port 0-65535), got {text!r}")
    return text


def add_dashboard_argument(parser: argparse.ArgumentParser) -> None:
    """``--dashboard [ADDRESS]``: serve the Dask dashboard of the run's cluster (none without it)."""
    parser.add_argument("--dashboard", nargs="?", const=DEFAULT_DASHBOARD, default=None, type=dashboard_address,
                        metavar="ADDRESS",
                        help=f"serve the Dask dashboard at ADDRESS (default {DEFAULT_DASHBOARD}, loopback only) and "
                        "print its URL; without it no dashboard is served and nothing listens beyond loopback. With "
                        "--scheduler, print that scheduler's dashboard URL")


#: Seeds are unsigned 64-bit integers (stored as such in every output file; :func:`nksim.checks.check_seed`).
SEED_LIMIT = _SEED_LIMIT

#: ``type=`` for counts that must be at least 1 (workers, replicates, trials).
positive_int = int_at_least(1, "positive integer")
