"""The packing-aware runner autoscaling policy (deployments/autoscaling.py), without Ray."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments.autoscaling import DEMAND, desired_replicas, packing_aware_policy


@pytest.mark.parametrize(
    "demand, ongoing, target, want",
    [
        (0, 0, 1, 1),  # idle: the minimum
        (2, 2, 1, 2),  # two plans: two replicas at one plan each
        (9, 2, 1, 4),  # a backlog beyond the maximum: clamped
        (3, 2, 2, 2),  # target 2 plans per replica
        (0, 3, 1, 3),  # no demand report yet: the ongoing requests still count
    ],
)
def test_desired_replicas(demand, ongoing, target, want):
    assert desired_replicas(demand, ongoing, target, lo=1, hi=4) == want


def _ctx(metrics, ongoing=2.0, current=1):
    return SimpleNamespace(
        aggregated_metrics=metrics,
        total_num_requests=ongoing,
        config=SimpleNamespace(target_ongoing_requests=1),
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=4,
        target_num_replicas=current,
        policy_state={"__decision_counters": 0},
    )


def test_policy_jumps_to_the_demand_in_one_decision_and_keeps_serves_state():
    # the runners saturate at 2 ongoing plans; the packer reports 7 running or waiting
    want, state = packing_aware_policy(_ctx({DEMAND: {"r1": 7.0}}))
    assert want == 4 and state == {"__decision_counters": 0}
    # several runners report: the largest (latest packer view) counts
    assert packing_aware_policy(_ctx({DEMAND: {"r1": 0.0, "r2": 3.0}}))[0] == 3
    # no custom metric yet (first seconds of a replica): Serve's own signal
    assert packing_aware_policy(_ctx({}, ongoing=2.0))[0] == 2
    assert packing_aware_policy(_ctx({DEMAND: {"r1": 0.0}}, ongoing=0.0))[0] == 1
