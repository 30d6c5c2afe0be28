"""``packed-bert ceiling`` end to end: one slow run of the echo floor (a real ``serve run`` of
its own); the fast parts are in tests/unit/test_ceiling.py."""

from __future__ import annotations

import pytest

from tools import ceiling as ce


@pytest.mark.slow
def test_echo_floor_end_to_end_in_two_rounds():
    s = ce.Settings(
        apps=("echo",),
        config=ce.REPO / "configs/test.yaml",
        concurrency=4,
        duration_s=2.0,
        warmup_s=1.0,
        progress=False,
        rounds=2,
    )
    lines: list[str] = []
    report = ce.run_ceiling(s, echo=lines.append)
    rows = report["rows"]
    assert [r["round"] for r in rows] == [1, 2]
    for row in rows:
        assert row["answered"] > 0 and row["non_200"] == 0 and row["server_cpu_s"] > 0
    # a fresh serve run per round: two startups reported
    assert sum("healthy on" in line for line in lines) == 2
    (summary,) = report["summary"]
    assert summary["app"] == "echo" and summary["rounds"] == 2
