"""Runner autoscaling on the sim device: busy runners scale up, the packer's dispatch slots
follow, and the runners scale back down when the load stops (slow: about two minutes)."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.config import config_deployment_options

from factories import REPO

pytestmark = pytest.mark.slow

SLOTS = config_deployment_options(REPO / "configs" / "squad.yaml", "PlanExecutor")[
    "max_ongoing_requests"
]  # per runner


def test_runners_scale_up_under_load_and_back_down(tmp_path):
    import ray
    from ray import serve

    from deployments.app import build_graph
    from deployments.config import AppConfig
    from packing.runners.workloads import seed_lengths, synthetic_features

    model_dir = tmp_path / "model"
    cfg = AppConfig(
        model_dir=str(model_dir),
        model_source="random:tiny",
        device="sim",
        prepare={"seq_len": 384},  # the shape this timeline was tuned at
        sim={"profile": "slow"},
        packing={"max_pending": 100_000},
    )
    data = synthetic_features(seed_lengths(3000, 256, 1), 30522, seed=1)
    autoscaling = {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 2,
        "downscale_delay_s": 5,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    seen: list[tuple[float, int, int]] = []  # (seconds, runner replicas, dispatch slots)

    async def scenario() -> None:
        packer = serve.get_deployment_handle("Packer", "autoscale")

        async def client() -> None:
            for i in range(0, len(data), 32):
                await packer.many.remote(data[i : i + 32])

        t0 = time.monotonic()
        clients = [asyncio.ensure_future(client()) for _ in range(24)]
        while time.monotonic() - t0 < 40:
            st = await packer.stats.remote()
            seen.append((time.monotonic() - t0, st["runner_replicas"], st["dispatch_slots"]))
            if st["runner_replicas"] == 3:
                break
            await asyncio.sleep(1)
        for c in clients:
            c.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        while time.monotonic() - t0 < 100:
            await asyncio.sleep(2)
            st = await packer.stats.remote()
            seen.append((time.monotonic() - t0, st["runner_replicas"], st["dispatch_slots"]))
            if st["runner_replicas"] == 1:
                break
        await serve.shutdown_async()

    ray.init(include_dashboard=False, log_to_driver=False, namespace="autoscale-test")
    try:
        serve.start(proxy_location="Disabled")
        app = build_graph(
            cfg,
            runner_options={
                "max_ongoing_requests": SLOTS,
                "ray_actor_options": {"num_cpus": 0},
                "autoscaling_config": autoscaling,
            },
        )
        serve.run(app, name="autoscale", route_prefix=None)
        asyncio.run(scenario())
    finally:
        ray.shutdown()
    replicas = [r for _, r, _ in seen]
    assert max(replicas) == 3, seen
    assert replicas[-1] == 1, seen
    assert any(r == 3 and slots == 3 * SLOTS for _, r, slots in seen), seen  # slots followed
