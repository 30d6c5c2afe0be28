"""``python -m tools scaling``: report arithmetic (no Ray; the small end-to-end run is in
tests/integration/test_scaling.py)."""

from __future__ import annotations

import numpy as np

from packing.runtime.features import SpanLogits
from tools.scaling import count_crossed, counter_delta, format_report, scaling_row


def counters(**kw) -> dict:
    base = dict(
        plans=0,
        failed_plans=0,
        sequences=0,
        real_tokens=0,
        token_slots=0,
        admitted_batches=0,
        admitted_windows=0,
        full_plans=0,
        budget_plans=0,
        rest_plans=0,
    )
    return {**base, **kw}


def test_row_from_counter_deltas():
    before = counters(
        plans=3,
        sequences=30,
        real_tokens=300,
        token_slots=400,
        full_plans=1,
        admitted_batches=10,
        admitted_windows=30,
    )
    after = counters(
        plans=13,
        failed_plans=2,
        sequences=110,
        real_tokens=1100,
        token_slots=1400,
        full_plans=5,
        budget_plans=6,
        admitted_batches=30,
        admitted_windows=110,
    )
    row = scaling_row("served", 2, 4, counter_delta(after, before), 2.0, crossed=0)
    assert row.sequences == 80 and row.sequences_per_s == 40.0
    assert row.mean_sequences == 80 / 8  # failed plans carry no sequences
    assert row.fill == 800 / 1000 and row.batches == 10
    assert row.closed == {"full": 4, "budget": 6, "rest": 0}
    assert row.mean_admitted == 80 / 20


def test_crossed_counts_any_difference():
    a = SpanLogits(np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32))
    b = SpanLogits(np.array([1.0, 2.0], np.float32), np.array([3.0, 4.5], np.float32))
    assert count_crossed([a, a, b], [a, b, b]) == 1


def test_report_table_and_ratios():
    rows = [
        scaling_row(
            "served, 1 runner replica",
            1,
            2,
            counters(plans=4, sequences=40, real_tokens=400, token_slots=400),
            1.0,
            0,
        ),
        scaling_row(
            "served, 4 runner replicas",
            4,
            8,
            counters(plans=4, sequences=40, real_tokens=400, token_slots=400),
            0.25,
            0,
        ),
        scaling_row(
            "in-process PackRunner",
            None,
            2,
            counters(plans=5, sequences=40, real_tokens=400, token_slots=500),
            1.0,
            0,
        ),
    ]
    from dataclasses import asdict

    report = {
        "settings": {
            "profile": "slow",
            "mode": "unpack_repack",
            "batch_wait_timeout_s": 0.005,
            "outstanding": 64,
            "windows_per_call": 8,
            "sequences": 40,
        },
        "rows": [asdict(r) for r in rows],
        "fill_ratio": 1.0 / 0.8,
        "mean_sequences_ratio": 10 / 8,
    }
    text = format_report(report)
    assert "| served, 4 runner replicas | 8 | 160.0 | 4.00x |" in text
    assert "sequences per plan 1.250x, token fill 1.250x" in text
