"""``packed-bert ceiling`` end to end: one slow run of the echo floor (a real ``serve run`` of
its own); the fast parts are in tests/unit/test_ceiling.py."""

from __future__ import annotations

import pytest

from tools import ceiling as ce


@pytest.mark.slow
def test_echo_floor_end_to_end():
    s = ce.Settings(apps=("echo",), config=ce.REPO / "configs/test.yaml", concurrency=4,
                    duration_s=2.0, warmup_s=1.0, progress=False)
    report = ce.run_ceiling(s, echo=lambda _: None)
    (row,) = report["rows"]
    assert row["answered"] > 0 and row["non_200"] == 0 and row["server_cpu_s"] > 0
