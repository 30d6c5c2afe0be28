"""Driving the load and keeping it fair: :func:`run_phase` (closed-loop clients, one text
or several a request) and the host's CPU busy share read before each server (:func:`settle`:
wait for a quiet host)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from packing.runners.drive import drive
from packing.runtime.host import cpu_ticks, read_proc_stat

MAX_ERROR_SAMPLES = 5


def run_phase(
    texts: Sequence[str],
    concurrency: int,
    make_client: Callable[[], object],
    progress: Callable[[int], None] | None = None,
    per_request: int = 1,
) -> dict:
    """Send every text once, ``per_request`` consecutive texts to a request (the last request
    may hold fewer), ``concurrency`` closed-loop clients at a time (threads, each with its own
    ``make_client()``, whose ``embed(text)`` returns a vector and ``embed_many(texts)`` the
    vectors of several texts, or raise; its optional ``close()`` is called at the end).
    Returns ``{"latencies_s": [...] of the answered requests, "vectors": [n, d] float32 (NaN
    rows: no answer; None when nothing was answered), "requests": count, "errors": failed
    requests, "error_samples": first messages, "wall_s"}``; ``progress(k)`` per finished
    request of ``k`` texts."""
    if per_request < 1:
        raise ValueError(f"--texts-per-request must be >= 1, got {per_request}")
    n = len(texts)
    spans = [(a, min(a + per_request, n)) for a in range(0, n, per_request)]
    vectors: list[list[float] | None] = [None] * n
    answered = [False] * len(spans)
    errors: list[str] = []
    lock = threading.Lock()
    mine = threading.local()  # each client thread's own client (keep-alive connection)
    clients: list = []

    def call(j: int) -> bool:
        a, b = spans[j]
        client = getattr(mine, "client", None)
        if client is None:
            client = mine.client = make_client()
            with lock:
                clients.append(client)
        try:
            if per_request == 1:
                vectors[a] = client.embed(texts[a])
            else:
                vectors[a:b] = client.embed_many(texts[a:b])
            answered[j] = True
            return True
        except Exception as exc:  # noqa: BLE001 - every failure is an error of the server's row
            with lock:
                errors.append(str(exc) or type(exc).__name__)
            return False
        finally:
            if progress is not None:
                progress(b - a)

    try:  # the project's closed loop (packing.runners.drive), one thread per client
        wall, latency, _ = drive(len(spans), max(1, min(concurrency, len(spans))), call)
    finally:
        for client in clients:
            close = getattr(client, "close", None)
            if close is not None:
                close()
    latencies = [float(latency[j]) for j in range(len(spans)) if answered[j]]
    dims = {len(v) for v in vectors if v is not None}
    if not dims:
        array = None
    elif len(dims) > 1:
        raise RuntimeError(f"the server answered vectors of {sorted(dims)} dimensions")
    else:
        d = dims.pop()
        array = np.full((n, d), np.nan, dtype=np.float32)
        for i, v in enumerate(vectors):
            if v is not None:
                array[i] = v
    samples = list(dict.fromkeys(errors))[:MAX_ERROR_SAMPLES]
    return {
        "latencies_s": latencies,
        "vectors": array,
        "requests": len(spans),
        "errors": len(errors),
        "error_samples": samples,
        "wall_s": wall,
    }


def cpu_busy_share(before: str, after: str) -> float | None:
    """The share of CPU time not idle (idle + iowait) between two readings of
    ``/proc/stat``'s text (:func:`~packing.runtime.host.cpu_ticks`); None when a reading has
    no ``cpu`` line or no time passed."""
    a, b = cpu_ticks(before), cpu_ticks(after)
    if a is None or b is None or b[0] <= a[0]:
        return None
    return 1.0 - (b[1] - a[1]) / (b[0] - a[0])


def host_busy(seconds: float) -> float | None:
    """The host's CPU busy share over the next ``seconds`` (None off Linux, or for 0 s)."""
    if seconds <= 0:
        return None
    before = read_proc_stat()
    time.sleep(seconds)
    return cpu_busy_share(before, read_proc_stat())


def settle(
    seconds: float,
    quiet_below: float | None,
    wait_s: float,
    measure: Callable[[float], float | None] = host_busy,
) -> tuple[float | None, float]:
    """Read the host's busy share over ``seconds`` (``measure``) until it is below
    ``quiet_below`` or ``wait_s`` seconds of readings have passed (no waiting when
    ``quiet_below`` is None): ``(the last reading, seconds spent)``. A server measured right
    after another still runs that one's after-work (a Ray cluster scaling down, say): this
    keeps it from counting against the next."""
    spent, busy = 0.0, measure(seconds)
    spent += max(seconds, 0.0)
    while quiet_below is not None and busy is not None and busy >= quiet_below and spent < wait_s:
        busy = measure(seconds)
        spent += max(seconds, 0.0)
    return busy, spent
