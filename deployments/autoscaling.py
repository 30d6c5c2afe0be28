"""A packing-aware autoscaling policy for the PlanExecutor deployment (Ray Serve custom policy).

Serve's default policy scales runners on the requests ongoing at them. The packer never sends
a runner more plans than its slots (``max_ongoing_requests``), so that signal saturates at
"every slot busy" and says nothing about the plans waiting at the packer: a load step grows
the runners one round at a time (1 -> 2 -> 4 ...). Here the packer sends its demand in plans
(running + closed and waiting for a slot) along with every plan; each runner reports the
latest value it received (0 when no plan came for :data:`STALE_S`) through
``record_autoscaling_stats``, and this policy asks for enough replicas to give every
demanded plan a slot at the target use, in one step.

Enable it per deployment: ``autoscaling_config: {policy: {policy_function:
deployments.autoscaling:packing_aware_policy}, ...}``. With several packer replicas the policy
sees the largest one's demand (each runner reports the last packer it heard from).
"""

from __future__ import annotations

import math
from typing import Any

DEMAND = "packer_demand_plans"  # custom metric name, reported by PlanExecutor replicas
STALE_S = 1.0  # a runner that received no plan for this long reports no demand


def desired_replicas(
    demand_plans: float, ongoing: float, target_per_replica: float, lo: int, hi: int
) -> int:
    """Replicas that give ``max(demand_plans, ongoing)`` plans a slot each at
    ``target_per_replica`` plans per replica, clamped to ``[lo, hi]``."""
    need = max(float(demand_plans), float(ongoing), 0.0)
    want = math.ceil(need / max(target_per_replica, 1e-9)) if need > 0 else lo
    return int(min(max(want, lo), hi))


def packing_aware_policy(ctx: Any) -> tuple[int, dict]:
    """Serve custom autoscaling policy: ``(replicas, policy_state)`` from the packer's demand.

    Serve itself holds a decision for ``upscale_delay_s`` / ``downscale_delay_s`` before acting
    (its ``__decision_counters`` in the policy state), so this returns the wanted count at once
    and leaves the state as it came."""
    metrics = ctx.aggregated_metrics or {}
    demand = max((metrics.get(DEMAND) or {}).values(), default=0.0)
    want = desired_replicas(
        demand,
        ctx.total_num_requests,
        ctx.config.target_ongoing_requests or 1.0,
        ctx.capacity_adjusted_min_replicas,
        ctx.capacity_adjusted_max_replicas,
    )
    return want, ctx.policy_state
