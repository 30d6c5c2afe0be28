"""The load driver of the benchmark harness (``packing.runners.drive``): the open loop keeps
its Poisson arrivals. Real threads and a server that sleeps, so it lives in this tier, not the
unit tier."""

import numpy as np
import pytest


def test_open_loop_driver_keeps_arrivals_and_counts_waiting():
    """``drive(rate=...)``: calls start no earlier than their Poisson arrival times, and a
    slow server (one connection, 20 ms per call, arrivals every ~5 ms) shows up as growing
    latency instead of a lower offered load."""
    import threading
    import time

    from packing.runners.drive import drive

    started: dict[int, float] = {}
    lock = threading.Lock()

    def call(i):
        with lock:
            started[i] = time.perf_counter()
        time.sleep(0.02)
        return i % 5 != 0  # every fifth call "fails"

    t0 = time.perf_counter()
    seconds, latency, errors = drive(40, 1, call, rate=200.0, seed=1)
    assert sorted(started) == list(range(40)) and errors == 8
    assert seconds >= 40 * 0.02  # one connection: calls run one after another
    assert latency[-5:].mean() > 5 * latency[:5].mean()  # the queue grows: latency shows it
    due = np.cumsum(np.random.default_rng(1).exponential(1 / 200.0, 40))
    assert all(started[i] - t0 >= due[i] - 1e-3 for i in range(40))
    with pytest.raises(ValueError, match="rate"):
        drive(1, 1, call, rate=0.0)
