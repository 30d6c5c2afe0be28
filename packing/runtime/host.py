"""Facts about the host that change a measurement: the CPU's model, its features that change
int8 and fp32 speed (AVX2, AVX-512F, AVX-512 VNNI, AMX), and the cores. One source for the
calibration fingerprint, ``bench``'s header and JSON, and the tools' reports."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "CPU_FEATURES",
    "cpu_features",
    "cpu_model",
    "cpu_ticks",
    "read_proc_stat",
    "features_line",
    "host_description",
    "host_facts",
]

#: The CPU flags reported with every figure: AVX2, AVX-512F, AVX-512 VNNI (int8 dot products
#: in hardware; int8 runs several times faster with it) and AMX int8.
CPU_FEATURES: tuple[str, ...] = ("avx2", "avx512f", "avx512_vnni", "amx_int8")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def read_proc_stat() -> str:
    """The text of Linux ``/proc/stat`` ("" where it cannot be read)."""
    try:
        return Path("/proc/stat").read_text()
    except OSError:
        return ""


def cpu_ticks(stat: str) -> tuple[int, int] | None:
    """``(all, idle)`` clock ticks of every core since boot, from the aggregate ``cpu`` line of
    ``/proc/stat``'s text ``stat``: all is the first eight states (user, nice, system, idle,
    iowait, irq, softirq, steal; guest time is already counted in user), idle is idle +
    iowait. None when the text has no such line."""
    for line in stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            return sum(values[:8]), values[3] + (values[4] if len(values) > 4 else 0)
    return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (``cpuinfo``: its text, for tests), else what
    ``platform`` says."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features(names: Sequence[str] = CPU_FEATURES, cpuinfo: str | None = None) -> dict:
    """``{flag: bool}`` for each of ``names`` from the first ``flags`` line of
    ``/proc/cpuinfo`` (``cpuinfo``: its text, for tests); every value None when there is no
    such line (not Linux x86)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return {n: n in have for n in names}
    return {n: None for n in names}


def features_line(features: dict) -> str:
    """``avx2=yes avx512f=yes avx512_vnni=no ...`` (``?`` where unknown)."""
    return " ".join(
        f"{k}={'yes' if v else 'no' if v is not None else '?'}" for k, v in features.items()
    )


def host_description() -> dict:
    """The host facts that change a measurement: CPU model and features, core counts."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": platform.machine(),
    }


def host_facts(**extra: object) -> dict:
    """The host lines of a tool's benchmark report: ``date`` (now, UTC, ISO 8601 to the
    second), ``cpu`` (:func:`cpu_model`), ``flags`` (:func:`cpu_features`), ``cores`` (the
    host's) and ``usable_cores`` (this process's), ``python`` and ``platform``, then the items
    of ``extra`` (a tool's own facts: thread counts, library versions) in the order given."""
    host = host_description()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": host["cpu"],
        "flags": host["cpu_features"],
        "cores": host["cores"],
        "usable_cores": host["usable_cores"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }
