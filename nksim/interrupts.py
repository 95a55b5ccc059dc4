"""Ctrl-C and SIGTERM: recognising an interruption, handling SIGTERM like Ctrl-C, the one line that reports it.

Below every command-line module (``nksim.cli``, ``nksim.sweep.cli``, ``nksim.calibration``), so that
none of them imports another's CLI for it.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Interrupted, Terminated


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``, else ``__context__``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) Ctrl-C or SIGTERM: numba kernels report it as a SystemError on return."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


def interruption_line(command: str, exc: BaseException, signal_name: str | None = None) -> str:
    """The one line printed when ``command`` is interrupted: what stopped it and what was kept.

    ``kept`` comes from the first :class:`~nksim.errors.Interrupted` in the exception chain
    ("nothing written" if none); ``signal_name`` (e.g. ``"SIGTERM"``) is named when given or
    when the chain holds a :class:`~nksim.errors.Terminated`.
    """
    chain = list(_chain(exc))
    kept = next((e.kept for e in chain if isinstance(e, Interrupted)), "nothing written")
    if signal_name is None and any(isinstance(e, Terminated) for e in chain):
        signal_name = "SIGTERM"
    by = f" by {signal_name}" if signal_name else ""
    return f"nksim {command}: interrupted{by}; {kept}"


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While the block runs, SIGTERM raises :class:`~nksim.errors.Terminated` (handled like Ctrl-C).

    Yields a list that receives the signal number when SIGTERM arrives. A second SIGTERM
    during the clean-up is ignored (the clean-up is short: it only keeps finished work).
    The previous handler is restored on exit. Outside the main thread (where Python cannot
    install signal handlers) nothing is installed.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame) -> None:
        if received:
            return
        received.append(signum)
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
