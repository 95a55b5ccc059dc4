"""An ordered map over threads that stops promptly: the one thread pool of nksim's simulation loops.

The simulation kernels release the GIL, so threads run them in parallel. What a plain
``with ThreadPoolExecutor() as pool: pool.map(...)`` gets wrong on Ctrl-C (or any error) is the
exit: the pool waits for *every* queued item, so an interrupted predictive check or scoring run
simulates all its remaining virtual trials before it stops. :func:`ordered_thread_map` cancels the
items not started and halts the running kernels (:func:`nksim.interrupts.halt_kernels`; they return
within one step), then re-raises.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .interrupts import halt_kernels_on_error

T = TypeVar("T")


def ordered_thread_map(func: Callable[[Any], T], items: Iterable[Any], workers: int,
                       on_result: Callable[[T], None] | None = None) -> list[T]:
    """``[func(x) for x in items]`` on ``workers`` threads, results in order of ``items``.

    ``on_result`` is called with each result as it is collected (in order: a progress bar). On an
    exception (Ctrl-C included) the items not started are cancelled and running kernels halted.
    ``workers <= 1`` runs in the calling thread.
    """
    out: list[T] = []
    if workers <= 1:
        for x in items:
            out.append(func(x))
            if on_result is not None:
                on_result(out[-1])
        return out
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        with halt_kernels_on_error():
            for r in pool.map(func, items):
                out.append(r)
                if on_result is not None:
                    on_result(r)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out
