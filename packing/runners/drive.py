"""Drive a runner or a server with concurrent clients: the load loops of ``bench``, ``eval``
and the load tools (``tools/``).

* :func:`run_online` -- closed-loop clients on a runner's ``submit`` (a PackRunner, a
  SortedPaddingServer: anything whose ``submit(features)`` returns a Future).
* :func:`drive` -- ``call(i)`` for n calls, closed loop or open loop at a Poisson rate
  (HTTP clients: ``eval --url``, loadtest, soak).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from packing.runtime.features import Features, Result


def run_online(
    runner, data: Sequence[Features], concurrency: int, progress: bool = False
) -> tuple[list[Result], np.ndarray]:
    """Drive ``runner.submit`` (a PackRunner, a SortedPaddingServer: anything whose
    ``submit(features)`` returns a Future) with ``concurrency`` closed-loop clients.

    Returns results in request order and each request's latency in seconds.
    """
    n = len(data)
    results: list[Result | None] = [None] * n
    latency = np.zeros(n)
    next_i = iter(range(n))
    lock = threading.Lock()
    errors: list[BaseException] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="online requests", unit="req", leave=False)

    def client() -> None:
        while True:
            with lock:
                i = next(next_i, None)
            if i is None or errors:
                return
            t0 = time.perf_counter()
            try:
                results[i] = runner.submit(data[i]).result()
            except BaseException as exc:  # noqa: BLE001 - surfaced in the caller
                errors.append(exc)
                return
            latency[i] = time.perf_counter() - t0
            if bar is not None:
                with lock:
                    bar.update(1)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bar is not None:
        bar.close()
    if errors:
        raise errors[0]
    return results, latency  # type: ignore[return-value]


def drive(
    n: int,
    concurrency: int,
    call: Callable[[int], bool],
    progress: bool = False,
    rate: float | None = None,
    seed: int = 0,
) -> tuple[float, np.ndarray, int]:
    """Run ``call(i)`` for i in range(n) from ``concurrency`` closed-loop threads, or, with
    ``rate`` (calls per second), open loop: call i is due at Poisson arrival time t_i whatever
    the earlier calls do, and runs on a pool of ``concurrency`` threads.

    Returns wall seconds, per-call latencies (s) and the number of calls that returned False
    or raised. Open-loop latency counts from the due time, so it includes any wait for a free
    client thread (no coordinated omission).
    """
    if rate is not None:
        return _drive_open(n, concurrency, call, progress, rate, seed)
    latency = np.zeros(n)
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(n))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="req", leave=False)

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                ok = call(i)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                ok = False
            latency[i] = time.perf_counter() - t0
            with lock:
                errors[0] += 0 if ok else 1
                if bar is not None:
                    bar.update(1)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return seconds, latency, errors[0]


def _drive_open(
    n: int, concurrency: int, call: Callable[[int], bool], progress: bool, rate: float, seed: int
) -> tuple[float, np.ndarray, int]:
    if not rate > 0:
        raise ValueError(f"rate must be > 0 calls/s, got {rate}")
    from concurrent.futures import ThreadPoolExecutor

    due = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))
    latency = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    lock = threading.Lock()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="req", leave=False)

    def run(i: int, at: float) -> None:
        try:
            ok[i] = bool(call(i))
        except Exception:  # noqa: BLE001 - counted, the run goes on
            ok[i] = False
        latency[i] = time.perf_counter() - at
        if bar is not None:
            with lock:
                bar.update(1)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        for i in range(n):
            at = t0 + due[i]
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            pool.submit(run, i, at)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return seconds, latency, int((~ok).sum())
