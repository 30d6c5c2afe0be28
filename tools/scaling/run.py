"""A scaling run: :func:`scaling` deploys the app at each runner replica count in a private
local Ray cluster, measures it through the packer's handle, then measures the in-process
runner, and assembles the report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.config import DEFAULT_MODE
from packing.runtime.features import Features, SpanLogits

from ..ceiling import resolve_config
from .drive import _drive_handle, _drive_runner
from .report import ScalingRow, count_crossed, counter_delta, scaling_row

SIM_CONFIG = "configs/sim.yaml"  # the runners' slots (max_ongoing_requests) come from it


def scaling(
    model_dir: ModelLike,
    data: Sequence[Features],
    replicas: Sequence[int] = (1, 2, 4),
    profile: str = "slow",
    mode: str = DEFAULT_MODE,
    batch_wait_timeout_s: float = 0.005,
    outstanding: int = 1024,
    per_call: int = 32,
    warmup: int = 256,
    progress: bool = True,
) -> dict:
    """Measure the served graph at each runner replica count, then the in-process runner.

    Starts (and at the end shuts down) its own local Ray cluster. Returns a report dict with
    ``rows`` (:class:`ScalingRow` as dicts), ``speedup`` (sequences/s over the first replica
    count) and ``fill_ratio`` / ``mean_sequences_ratio`` (served with one replica over
    in-process). ``model_dir``: a path or a :class:`~packing.model.prepared.PreparedModel`,
    opened once here (the app's replicas open the folder themselves).
    """
    import ray
    from ray import serve

    from deployments.config import AppConfig, config_deployment_options
    from packing.runners import PackRunner

    slots = config_deployment_options(resolve_config(SIM_CONFIG), "PlanExecutor")[
        "max_ongoing_requests"
    ]
    model = PreparedModel.open(model_dir)
    reference = PackRunner(model, mode=mode, backend="sim", profile="fast").run(data)
    cfg = AppConfig(
        model_dir=str(model),
        model_source=model.manifest.source,  # the folder as it is
        device="sim",
        sim={"profile": profile},
        packing={
            "mode": mode,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "max_pending": 1 << 20,
        },
    )
    rows: list[ScalingRow] = []
    ray.init(include_dashboard=False, log_to_driver=False, namespace="packed-bert-scaling")
    try:
        serve.start(proxy_location="Disabled")
        rows += asyncio.run(
            _served_runs(
                cfg, replicas, slots, data, reference, per_call, outstanding, warmup, progress
            )
        )
    finally:
        ray.shutdown()
    with PackRunner(
        model,
        mode=mode,
        batch_wait_timeout_s=batch_wait_timeout_s,
        backend="sim",
        profile=profile,
        max_inflight_batches=slots,
    ) as runner:
        _drive_runner(runner, data[:warmup], outstanding, False)
        before = runner.dispatch_stats.as_dict()
        got, seconds = _drive_runner(runner, data, outstanding, progress)
        after = runner.dispatch_stats.as_dict()
    rows.append(
        scaling_row(
            "in-process PackRunner",
            None,
            slots,
            counter_delta(after, before),
            seconds,
            count_crossed(got, reference),
        )
    )
    base = rows[0].sequences_per_s
    served1 = next((r for r in rows if r.replicas == 1), None)
    inproc = rows[-1]
    return {
        "settings": {
            "profile": profile,
            "mode": mode,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "outstanding": outstanding,
            "windows_per_call": per_call,
            "sequences": len(data),
            "model_dir": str(model),
        },
        "rows": [asdict(r) for r in rows],
        "speedup": {str(r.replicas): r.sequences_per_s / base for r in rows if r.replicas},
        "fill_ratio": served1.fill / inproc.fill if served1 and inproc.fill else None,
        "mean_sequences_ratio": (
            served1.mean_sequences / inproc.mean_sequences
            if served1 and inproc.mean_sequences
            else None
        ),
    }


async def _served_runs(
    cfg,
    replicas: Sequence[int],
    slots: int,
    data: Sequence[Features],
    reference: Sequence[SpanLogits],
    per_call: int,
    outstanding: int,
    warmup: int,
    progress: bool,
) -> list[ScalingRow]:
    """Deploy and measure each replica count in turn, all in one event loop (Serve's handles
    stay bound to the loop they were first used in); each runner replica takes ``slots``
    plans at once."""
    from ray import serve

    from deployments.app import build_graph

    rows = []
    for n in replicas:
        name = f"scaling-{n}"
        app = build_graph(
            cfg,
            runner_options={
                "num_replicas": n,
                "max_ongoing_requests": slots,
                "ray_actor_options": {"num_cpus": 0},
            },
        )
        await asyncio.to_thread(serve.run, app, name=name, route_prefix=None)
        seen, d, seconds, got = await _measure_served(
            name, slots * n, data, per_call, outstanding, warmup, progress
        )
        rows.append(
            scaling_row(
                f"served, {n} runner replica{'s' if n > 1 else ''}",
                n,
                seen,
                d,
                seconds,
                count_crossed(got, reference),
            )
        )
        await asyncio.to_thread(serve.delete, name)
    await serve.shutdown_async()  # inside the loop its routers are bound to
    return rows


async def _measure_served(
    app: str,
    want_slots: int,
    data: Sequence[Features],
    per_call: int,
    outstanding: int,
    warmup: int,
    progress: bool,
) -> tuple[int, dict, float, list[SpanLogits]]:
    """Inside one event loop (handles need one with Serve's throughput settings): wait for
    the packer to see every runner replica, warm up, measure. Returns the dispatch slots, the
    packer's counter deltas, the seconds and the results."""
    from ray import serve

    packer = serve.get_deployment_handle("Packer", app)
    deadline = time.monotonic() + 60
    while True:
        slots = (await packer.stats.remote())["dispatch_slots"]
        if slots >= want_slots or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await _drive_handle(packer, data[:warmup], per_call, outstanding, False)
    before = await packer.stats.remote()
    got, seconds = await _drive_handle(packer, data, per_call, outstanding, progress)
    after = await packer.stats.remote()
    return slots, counter_delta(after, before), seconds, got
