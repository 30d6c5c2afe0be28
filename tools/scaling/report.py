"""A scaling run's figures: one :class:`ScalingRow` per measured configuration, from the
packer's counter deltas, the answers that differ from their solo answer, and the Markdown
report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from packing.runtime.features import SpanLogits


@dataclass
class ScalingRow:
    """One measured configuration."""

    name: str  # "served, N runner replicas" or "in-process PackRunner"
    replicas: int | None  # runner replicas (None in-process)
    dispatch_slots: int  # plans allowed in flight
    sequences: int  # windows answered in the measured phase
    seconds: float  # measured phase
    sequences_per_s: float
    mean_sequences: float  # sequences per batch (model call)
    fill: float  # real tokens / token slots computed
    crossed: int  # answers that differ from the window's solo answer
    batches: int  # model calls in the measured phase
    closed: dict = field(default_factory=dict)  # why plans closed: full / budget / rest
    mean_admitted: float = 0.0  # windows per batch @serve.batch admitted


CLOSED = ("full", "budget", "rest")  # why a plan closed (DispatchStats.<why>_plans)


def counter_delta(after: dict, before: dict) -> dict:
    """The packer counters (``/v1/stats``, or the in-process dispatcher's) that a run moved:
    ``after - before`` for each counter a :class:`ScalingRow` is computed from."""
    keys = (
        "plans",
        "failed_plans",
        "sequences",
        "real_tokens",
        "token_slots",
        "admitted_batches",
        "admitted_windows",
        *(f"{k}_plans" for k in CLOSED),
    )
    return {k: after[k] - before[k] for k in keys}


def scaling_row(
    name: str, replicas: int | None, slots: int, d: dict, seconds: float, crossed: int
) -> ScalingRow:
    """One table row from the counter deltas ``d`` (:func:`counter_delta`) of a run that
    took ``seconds`` on ``slots`` dispatch slots; ``crossed``: answers not equal to the
    reference's."""
    ok = d["plans"] - d["failed_plans"]
    return ScalingRow(
        name=name,
        replicas=replicas,
        dispatch_slots=slots,
        sequences=d["sequences"],
        seconds=seconds,
        sequences_per_s=d["sequences"] / seconds if seconds else 0.0,
        mean_sequences=d["sequences"] / ok if ok else 0.0,
        fill=d["real_tokens"] / d["token_slots"] if d["token_slots"] else 0.0,
        crossed=crossed,
        batches=d["plans"],
        closed={k: d[f"{k}_plans"] for k in CLOSED},
        mean_admitted=(
            d["admitted_windows"] / d["admitted_batches"] if d["admitted_batches"] else 0.0
        ),
    )


def count_crossed(got: Sequence[SpanLogits], want: Sequence[SpanLogits]) -> int:
    """Answers whose logits are not exactly the reference's."""
    return sum(
        not (
            np.array_equal(g.start_logits, w.start_logits)
            and np.array_equal(g.end_logits, w.end_logits)
        )
        for g, w in zip(got, want)
    )


def format_report(report: dict) -> str:
    """The report as a Markdown table plus the two ratios."""
    s = report["settings"]
    lines = [
        f"sim profile {s['profile']}, mode {s['mode']}, batch_wait_timeout_s "
        f"{s['batch_wait_timeout_s']} s, "
        f"{s['sequences']} windows, {s['outstanding']} outstanding "
        f"({s['windows_per_call']} per handle call)",
        "",
        "| run | dispatch slots | sequences/s | speed-up | admitted/batch | seqs/plan | "
        "token fill | plans (full / budget / rest) | crossed |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    base = report["rows"][0]["sequences_per_s"]
    for r in report["rows"]:
        c = r["closed"]
        speed = f"{r['sequences_per_s'] / base:.2f}x" if r["replicas"] else "-"
        lines.append(
            f"| {r['name']} | {r['dispatch_slots']} | {r['sequences_per_s']:.1f} | "
            f"{speed} | {r['mean_admitted']:.2f} | {r['mean_sequences']:.2f} | "
            f"{r['fill']:.3f} | {r['batches']} "
            f"({c['full']} / {c['budget']} / {c['rest']}) | {r['crossed']} |"
        )
    if report["fill_ratio"] is not None:
        lines += [
            "",
            f"served (1 replica) over in-process: sequences per plan "
            f"{report['mean_sequences_ratio']:.3f}x, token fill {report['fill_ratio']:.3f}x",
        ]
    return "\n".join(lines)
