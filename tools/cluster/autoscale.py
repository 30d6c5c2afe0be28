"""``autoscale``: a step of load on the runners of a multi-node cluster, then none, and the
timeline of runner replicas it drew under Serve's own policy or the packing-aware one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from packing.jobs.local_cluster import private_cluster
from packing.model.prepared import ModelLike
from packing.runtime.features import Features

from .deploy import APP, _deploy, replica_placement, wait_for_app

AUTOSCALING = {
    "min_replicas": 1,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 2,
    "downscale_delay_s": 5,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
}
"""Runner autoscaling for :func:`autoscale_step` (``max_replicas``: every accelerator unit):
scale on slots in use, target 1 of the runners' ``max_ongoing_requests`` (2), as
``configs/squad.yaml``, which :func:`_deploy` reads them from."""


POLICIES = {
    "default": None,  # Serve's own: requests ongoing at the runners
    "packing": "deployments.autoscaling:packing_aware_policy",
}  # the packer's demand


def autoscale_step(
    model_dir: ModelLike,
    data: Sequence[Features],
    workers: int = 2,
    per_worker: int = 2,
    resource: str = "IPU",
    profile: str = "slow",
    tokens_per_s: float | None = None,
    clients: int = 24,
    up_limit_s: float = 60.0,
    down_limit_s: float = 90.0,
    timeout_s: float = 120.0,
    policy: str = "packing",
) -> dict:
    """A step of load on the runners of a multi-node cluster, then none.

    Runners autoscale from 1 to ``workers * per_worker`` (:data:`AUTOSCALING`); ``clients``
    closed-loop callers of ``Packer.many`` start at t = 0 and stop once every runner replica
    runs (or ``up_limit_s``). Returns the timeline ``[(s, runner replicas, dispatch slots)]``
    sampled every second, ``up_s`` (load start to all replicas running, per the packer),
    ``down_s`` (load stop to 1 replica), and the nodes the runners sat on at the peak.
    """
    top = workers * per_worker
    with private_cluster(workers, resource, per_worker):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")
        autoscaling = {**AUTOSCALING, "max_replicas": top}
        if POLICIES[policy]:
            autoscaling["policy"] = {"policy_function": POLICIES[policy]}
        _deploy(model_dir, 1, resource, profile, tokens_per_s, autoscaling=autoscaling)
        wait_for_app(APP, timeout_s)
        return asyncio.run(_step(data, top, clients, up_limit_s, down_limit_s))


async def _step(data, top, clients, up_limit_s, down_limit_s) -> dict:
    from ray import serve

    packer = serve.get_deployment_handle("Packer", APP)
    timeline: list[tuple[float, int, int]] = []
    peak_nodes: list[str] = []

    async def client() -> None:
        while True:
            for i in range(0, len(data), 32):
                await packer.many.remote(list(data[i : i + 32]))

    async def sample(t0: float) -> int:
        st = await packer.stats.remote()
        timeline.append(
            (round(time.monotonic() - t0, 1), st["runner_replicas"], st["dispatch_slots"])
        )
        return st["runner_replicas"]

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    up_s = None
    while time.monotonic() - t0 < up_limit_s:
        if await sample(t0) >= top:
            up_s = time.monotonic() - t0
            peak_nodes = sorted(
                {
                    r["node_id"]
                    for r in await asyncio.to_thread(replica_placement, APP)
                    if r["deployment"] == "PlanExecutor"
                }
            )
            break
        await asyncio.sleep(1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stop = time.monotonic()
    down_s = None
    while time.monotonic() - stop < down_limit_s:
        await asyncio.sleep(1)
        if await sample(t0) == 1:
            down_s = time.monotonic() - stop
            break
    await serve.shutdown_async()
    return {
        "timeline": timeline,
        "max_replicas": top,
        "up_s": up_s,
        "down_s": down_s,
        "peak_runner_nodes": peak_nodes,
        "load_stopped_at_s": round(stop - t0, 1),
    }
