"""Ctrl-C and SIGTERM: recognising an interruption, handling SIGTERM like Ctrl-C, the one line that reports it.

Below every command-line module (``nksim.cli``, ``nksim.sweep.cli``, ``nksim.calibration``), so that
none of them imports another's CLI for it.

Reaching the kernel: Python runs a signal handler only in the main thread, between two bytecodes,
so a signal cannot stop compiled code by itself. Every running kernel therefore registers its halt
flag here (:func:`halt_registered`); the command line's handlers (:func:`sigterm_as_interrupt`)
set every registered flag before raising, and the kernel, which polls its flag, returns within one
step (:mod:`nksim.engine.kernel`). A signal whose exception is swallowed (Python prints "Exception
ignored in ..." when a handler raises inside a weakref callback or a ``__del__``, e.g. while h5py
closes a netCDF file) is still recorded: :func:`signal_received` and :func:`raise_if_signalled` let
the command end at its next step and say what is on disk.
"""
from __future__ import annotations

import itertools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import Interrupted, Terminated

#: Halt flags (one-element int64 arrays) of the kernels running now, by registration token. Plain
#: dict operations, atomic under the GIL: a signal handler may read it while another thread edits it.
_HALT_FLAGS: dict[int, Any] = {}
_TOKENS = itertools.count()

#: The ``received`` lists of the active :func:`sigterm_as_interrupt` blocks, innermost last.
_ACTIVE: list[list[int]] = []


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``, else ``__context__``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) Ctrl-C or SIGTERM (a numba kernel may have wrapped it in a SystemError)."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


@contextmanager
def interruption_keeps(kept: str | Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C or SIGTERM inside the block into :class:`~nksim.errors.Interrupted` saying what is ``kept``.

    ``kept`` (or its value when it is a function, called only on an interruption): what is on disk and how
    to continue. An :class:`~nksim.errors.Interrupted` raised inside passes unchanged (it already says what
    is kept); an exception that is no interruption passes unchanged too.
    """
    try:
        yield
    except (KeyboardInterrupt, SystemError) as exc:  # numba may wrap the KeyboardInterrupt in a SystemError
        if isinstance(exc, Interrupted) or not interrupted(exc):
            raise
        raise Interrupted(kept() if callable(kept) else kept) from exc


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
def halt_registered(flag: Any) -> Iterator[Any]:
    """While the block runs, ``flag`` (a one-element int64 array a kernel polls) is set by :func:`halt_kernels`."""
    token = next(_TOKENS)
    _HALT_FLAGS[token] = flag
    try:
        yield flag
    finally:
        _HALT_FLAGS.pop(token, None)


def halt_kernels() -> int:
    """Set the halt flag of every running kernel of this process (they return within one step); how many."""
    flags = list(_HALT_FLAGS.values())
    for flag in flags:
        flag[0] = 1
    return len(flags)


@contextmanager
def halt_kernels_on_error() -> Iterator[None]:
    """If the block raises (Ctrl-C included), halt every running kernel first (:func:`halt_kernels`).

    Around a thread pool of simulations, inside its ``with``: the pool then waits for halted
    kernels (one step each) instead of simulations running to their end.
    """
    try:
        yield
    except BaseException:
        halt_kernels()
        raise


def signal_received() -> int | None:
    """The first Ctrl-C or SIGTERM received by the innermost active :func:`sigterm_as_interrupt`, else None."""
    return _ACTIVE[-1][0] if _ACTIVE and _ACTIVE[-1] else None


def raise_if_signalled() -> None:
    """Raise now for a Ctrl-C or SIGTERM received during the command whose exception was swallowed.

    Raises :class:`~nksim.errors.Terminated` for SIGTERM, :class:`KeyboardInterrupt` for
    Ctrl-C; does nothing when no signal was received (or outside :func:`sigterm_as_interrupt`).
    Commands call it between their steps, so that no signal is lost.
    """
    signum = signal_received()
    if signum == signal.SIGTERM:
        raise Terminated(f"signal {signal.Signals(signum).name}")
    if signum is not None:
        raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While the block runs, SIGTERM raises :class:`~nksim.errors.Terminated` (handled like Ctrl-C).

    Yields a list that receives the signal number of every SIGTERM and Ctrl-C (SIGINT) that
    arrives. Both first halt the running kernels (:func:`halt_kernels`), then raise; Ctrl-C's
    handler is installed only where Python's own is (an ignored SIGINT, e.g. in a background
    job, stays ignored). A second SIGTERM during the clean-up is ignored (the clean-up is short:
    it only keeps finished work). An exception of these handlers that Python cannot raise
    (inside a weakref callback or a ``__del__``) is not printed as "Exception ignored ...": the
    signal is recorded, and the command reports it (:func:`raise_if_signalled`). The previous
    handlers are restored on exit. Outside the main thread (where Python cannot install signal
    handlers) nothing is installed.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_sigterm(signum: int, frame) -> None:
        first = not received
        received.append(signum)
        halt_kernels()
        if first:
            raise Terminated(f"signal {signal.Signals(signum).name}")

    def on_sigint(signum: int, frame) -> None:
        received.append(signum)
        halt_kernels()
        raise KeyboardInterrupt

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
    hook = sys.unraisablehook

    def quiet_hook(unraisable) -> None:  # a handler's exception swallowed: recorded, reported by the command
        if received and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        hook(unraisable)

    sys.unraisablehook = quiet_hook
    _ACTIVE.append(received)
    try:
        yield received
    finally:
        if sys.unraisablehook is quiet_hook:
            sys.unraisablehook = hook
        for i in range(len(_ACTIVE) - 1, -1, -1):  # this block's list (by identity: lists compare by value)
            if _ACTIVE[i] is received:
                del _ACTIVE[i]
                break
        for signum, handler in previous.items():
            signal.signal(signum, handler)
