"""nksim.threads.ordered_thread_map: order, and an interrupt cancels the items not started."""
from __future__ import annotations

import threading
import time

import pytest

from nksim.threads import ordered_thread_map


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_in_order_and_each_collected_once(workers):
    seen = []
    out = ordered_thread_map(lambda i: (time.sleep(0.002 * (5 - i % 5)), i * i)[1], range(20), workers,
                             on_result=seen.append)
    assert out == [i * i for i in range(20)] == seen


@pytest.mark.parametrize("exc", [KeyboardInterrupt, ValueError])
def test_an_interrupt_cancels_the_items_not_started(exc):
    """Item 1 raises; with 2 workers at most the items already running finish, the other 95+ never start."""
    started = []
    lock = threading.Lock()

    def f(i):
        with lock:
            started.append(i)
        if i == 1:
            raise exc
        time.sleep(0.01)
        return i

    with pytest.raises(exc):
        ordered_thread_map(f, range(100), 2)
    assert len(started) <= 5, started
