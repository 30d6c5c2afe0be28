"""A ceiling run's figures: one :class:`Row` per (app, body kind) measurement, the ratios to
the chain, the per-round summary, and the Markdown tables and header line printed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .load import Measurement
from .servers import REPO

if TYPE_CHECKING:
    from .run import Settings


@dataclass
class Row:
    """One (app, body kind) measurement, reduced to the table's figures."""

    app: str
    body: str  # "single" or "list32" etc.
    items_per_request: int
    seconds: float
    answered: int  # HTTP 200
    non_200: int
    statuses: dict
    requests_per_s: float  # answered (200) requests per second
    questions_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_s: float
    client_cpu_s: float
    server_cpu_ms_per_q: float | None
    client_cpu_ms_per_q: float | None
    warmup_s: float
    ratio_to_chain: float | None = None
    round: int | None = None  # runs by round: the round it was measured in (1-based)


def make_row(app: str, body: str, items: int, m: Measurement) -> Row:
    """Reduce a measurement: rates count HTTP 200 only; latencies are of 200 and non-200 alike;
    CPU per question divides by answered questions (None when none were answered)."""
    questions = m.ok * items
    lat = np.asarray(m.latencies) * 1000
    per_q = (lambda s: s * 1000 / questions) if questions else (lambda s: None)
    return Row(
        app=app,
        body=body,
        items_per_request=items,
        seconds=m.seconds,
        answered=m.ok,
        non_200=sum(c for s, c in m.statuses.items() if s != 200),
        statuses={str(k): v for k, v in sorted(m.statuses.items())},
        requests_per_s=m.ok / m.seconds,
        questions_per_s=questions / m.seconds,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
        p99_ms=float(np.percentile(lat, 99)) if lat.size else None,
        server_cpu_s=m.server_cpu_s,
        client_cpu_s=m.client_cpu_s,
        server_cpu_ms_per_q=per_q(m.server_cpu_s),
        client_cpu_ms_per_q=per_q(m.client_cpu_s),
        warmup_s=m.warmup_s,
    )


def add_ratios(rows: Sequence[Row]) -> None:
    """Set each row's ``ratio_to_chain``: its requests/s over the chain row's of the same round
    (None without such a chain row or when the chain answered nothing)."""
    base = {r.round: r.requests_per_s for r in rows if r.app == "chain"}
    for r in rows:
        chain = base.get(r.round, 0.0)
        r.ratio_to_chain = r.requests_per_s / chain if chain > 0 else None


def round_summary(rows: Sequence[Row]) -> list[dict]:
    """Per (app, body) over the rounds of a run: the median, lowest and highest
    ratio to the chain, and for list bodies the median of their questions/s over the same
    round's single-question app rate (``list_over_single``). Rows need their ratios
    (:func:`add_ratios`); rows without a round are ignored."""
    single = {r.round: r.questions_per_s for r in rows if r.app == "app" and r.body == "single"}
    out = []
    for app, body in dict.fromkeys((r.app, r.body) for r in rows if r.round is not None):
        mine = [r for r in rows if (r.app, r.body) == (app, body) and r.round is not None]
        ratios = [r.ratio_to_chain for r in mine if r.ratio_to_chain is not None]
        over = [
            r.questions_per_s / single[r.round]
            for r in mine
            if body != "single" and single.get(r.round)
        ]
        out.append(
            {
                "app": app,
                "body": body,
                "rounds": len(mine),
                "median_ratio_to_chain": float(np.median(ratios)) if ratios else None,
                "min_ratio_to_chain": min(ratios) if ratios else None,
                "max_ratio_to_chain": max(ratios) if ratios else None,
                "median_list_over_single": float(np.median(over)) if over else None,
            }
        )
    return out


def format_summary(summary: Sequence[dict]) -> str:
    """The round summary as a Markdown table."""
    lines = [
        "| app | body | rounds | vs chain: median (min - max) | list over single: median |",
        "|---|---|---:|---:|---:|",
    ]
    for x in summary:
        ratio = (
            "-"
            if x["median_ratio_to_chain"] is None
            else f"{x['median_ratio_to_chain']:.2f}x ({x['min_ratio_to_chain']:.2f}x - "
            f"{x['max_ratio_to_chain']:.2f}x)"
        )
        over = _fmt(x["median_list_over_single"], ".1f") + (
            "x" if x["median_list_over_single"] is not None else ""
        )
        lines.append(f"| {x['app']} | {x['body']} | {x['rounds']} | {ratio} | {over} |")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_HEAD = (
    "| app | body | requests/s | questions/s | vs chain | p50 ms | p99 ms "
    "| server CPU ms/q | client CPU ms/q | non-200 |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)
ROUND_HEAD = "| round " + TABLE_HEAD.split("\n")[0] + "\n|---:" + TABLE_HEAD.split("\n")[1]


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table, one line per row (ratios as set by :func:`add_ratios`)."""
    rounds = any(r.round is not None for r in rows)
    lines = [ROUND_HEAD if rounds else TABLE_HEAD]
    for r in rows:
        ratio = "-" if r.ratio_to_chain is None else f"{r.ratio_to_chain:.2f}x"
        non200 = str(r.non_200) + (f" ({_status_text(r.statuses)})" if r.non_200 else "")
        lead = f"| {r.round} " if rounds else ""
        lines.append(
            f"{lead}| {r.app} | {r.body} | {r.requests_per_s:.1f} | {r.questions_per_s:.1f} "
            f"| {ratio} | {_fmt(r.p50_ms, '.0f')} | {_fmt(r.p99_ms, '.0f')} "
            f"| {_fmt(r.server_cpu_ms_per_q, '.2f')} "
            f"| {_fmt(r.client_cpu_ms_per_q, '.2f')} | {non200} |"
        )
    return "\n".join(lines)


def _status_text(statuses: dict) -> str:
    return ", ".join(f"{'conn' if k == '0' else k}: {v}" for k, v in statuses.items() if k != "200")


def format_header(s: Settings, workload: str) -> str:
    """One line naming the settings of a run."""
    phase = f"{s.requests} requests" if s.requests is not None else f"{s.duration_s:g} s"
    env = " ".join(f"{k}={v}" for k, v in s.env.items()) or "(none)"
    floor = "default" if s.floor_max_ongoing is None else s.floor_max_ongoing
    hosting = "co-hosted in one serve run" if s.cohosted else "one serve run per app"
    if s.by_round:
        hosting += f", {s.rounds} interleaved round{'s' if s.rounds > 1 else ''}"
    return (
        f"ceiling: apps {','.join(s.apps)} ({hosting}); config {_rel(s.config)}; concurrency "
        f"{s.concurrency}; warm-up {s.warmup_s:g} s + measured {phase}; list size "
        f"{s.list_size}; floor max_ongoing_requests {floor}; {workload}; env {env}; "
        f"{os.cpu_count()} CPUs"
    )


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)
