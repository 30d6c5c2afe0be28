"""CPU time of a ``serve run``'s processes, read from ``/proc`` (Linux): the server side of
the ceiling's CPU per question, and the process tree :class:`~tools.ceiling.servers.ServeRun`
stops."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` from field 3 (state) on, or None if the process is gone.

    The command name (field 2) may hold spaces and parentheses, so the text is split after
    its last ``)``; field ``n`` (1-based, as in proc(5)) is ``result[n - 3]``.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rfind(")") + 2 :].split()


def children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from ``/proc/PID/task/*/children``; empty if it is gone)."""
    out: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in tasks:
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and all its live descendants (``root`` included only while it exists)."""
    seen: set[int] = set()
    todo = [root] if read_stat(root) is not None else []
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children(pid) - seen)
    return seen


def all_pids() -> list[int]:
    """Every process id visible in ``/proc``."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def session_members(sid: int) -> set[int]:
    """Live processes whose session id (stat field 6) is ``sid``."""
    out = set()
    for pid in all_pids():
        fields = read_stat(pid)
        if fields is not None and int(fields[3]) == sid:
            out.add(pid)
    return out


def server_pids(root: int) -> set[int]:
    """The processes a ``serve run`` started in its own session (pid = session id) owns:
    its process tree plus anything re-parented out of the tree but still in the session."""
    return process_tree(root) | session_members(root)


def cpu_times(pids: Iterable[int]) -> dict[tuple[int, int], float]:
    """utime + stime seconds (stat fields 14, 15) of each live pid, keyed by (pid, starttime)
    so that a reused pid is never mistaken for the process it replaced."""
    out = {}
    for pid in pids:
        f = read_stat(pid)
        if f is not None:
            out[(pid, int(f[19]))] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def cpu_delta(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """CPU seconds spent between two :func:`cpu_times` samples by the processes alive at the
    second (a process started in between counts whole; one that exited in between is lost)."""
    return sum(t - before.get(key, 0.0) for key, t in after.items())


def tree_cpu(root: int) -> dict[tuple[int, int], float]:
    """A :func:`cpu_times` sample of every process of ``root``'s serve run (:func:`server_pids`)."""
    return cpu_times(server_pids(root))


def self_cpu() -> float:
    """User + system CPU seconds of this process (its threads included)."""
    t = os.times()
    return t.user + t.system
