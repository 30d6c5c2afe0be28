"""How busy the rest of the host was while a calibration measured: CPU other processes took.

A calibration times the model on the host as it is. When other work shares the CPU (replicas
of another app starting, a benchmark, a neighbour on a VM), every budget runs slower and the
curve is noise: a budget picked from it is cached and used at every later start.
:class:`OthersLoad` reads, over the measuring, the host's busy CPU seconds (Linux
``/proc/stat``: every state but idle and iowait, steal included) minus this process's own
CPU seconds (``time.process_time``: all its threads), as a share of the cores' seconds.
:mod:`.cache` keeps a calibration measured above :data:`MAX_OTHERS_LOAD` for the run only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..host import cpu_ticks

MAX_OTHERS_LOAD = 0.25
"""Share of the host's CPU that other processes may take while a calibration measures for it
to be cached (above it the calibration is used for this run only and measured again at the
next start)."""


def host_busy_seconds(path: str = "/proc/stat") -> float | None:
    """CPU seconds the whole host has been busy since boot (all cores; user, nice, system, irq,
    softirq and steal; not idle or iowait), from Linux ``/proc/stat``; None where it cannot
    be read."""
    try:
        ticks = cpu_ticks(Path(path).read_text())
        return None if ticks is None else (ticks[0] - ticks[1]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class OthersLoad:
    """The share of the host's CPU that processes other than this one used between
    construction and :meth:`share`.

    ``busy`` (host busy CPU seconds, or None when unknown), ``own`` (this process's CPU
    seconds), ``clock`` (wall seconds) and ``cores`` are injectable for tests."""

    def __init__(
        self,
        busy: Callable[[], float | None] = host_busy_seconds,
        own: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.perf_counter,
        cores: int | None = None,
    ) -> None:
        self._busy, self._own, self._clock = busy, own, clock
        self.cores = int(cores or os.cpu_count() or 1)
        self._start = (busy(), own(), clock())

    def share(self) -> float | None:
        """Other processes' CPU seconds over the cores' wall seconds since construction, in
        [0, 1]; None when the host's busy time cannot be read or no time passed."""
        busy0, own0, t0 = self._start
        busy1, own1, t1 = self._busy(), self._own(), self._clock()
        if busy0 is None or busy1 is None or t1 <= t0:
            return None
        others = (busy1 - busy0) - (own1 - own0)
        return min(1.0, max(0.0, others / (self.cores * (t1 - t0))))
