"""``node-loss``: one accelerator node removed while windows flow through the Packer, and
every window accounted for (answered, failed with an error, or lost)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from packing.jobs.local_cluster import private_cluster
from packing.model.prepared import ModelLike, PreparedModel
from packing.runtime.features import Features

from ..scaling.report import count_crossed
from .deploy import APP, _deploy, _packer_seeing, replica_placement, wait_for_app


def node_loss(
    model_dir: ModelLike,
    data: Sequence[Features],
    workers: int = 2,
    per_worker: int = 2,
    resource: str = "IPU",
    profile: str = "slow",
    tokens_per_s: float | None = None,
    remove_after_s: float = 4.0,
    per_call: int = 8,
    outstanding: int = 128,
    timeout_s: float = 120.0,
    progress: bool = False,
) -> dict:
    """Remove one accelerator node (its raylet killed, no drain) while windows flow through
    the Packer, and account for every window.

    Closed loop of ``outstanding // per_call`` callers of ``Packer.many`` over ``data`` on the
    ``profile`` sim device; ``remove_after_s`` after the first answer, the worker node that
    holds runners is removed. Every window ends answered (compared with its solo answer:
    ``crossed`` counts mismatches) or failed with an error (its type and message kept); none
    may be lost (no result and no error). Returns counts, the errors, the longest gap between
    two answers (``gap_s``) and the runner replicas running at the end.
    """
    from packing.runners import PackRunner

    model = PreparedModel.open(model_dir)  # read once, for the reference and the app's config
    reference = PackRunner(model, mode="unpack_repack", backend="sim", profile="fast").run(data)
    replicas = workers * per_worker
    with private_cluster(workers, resource, per_worker) as cluster:
        _deploy(model, replicas, resource, profile, tokens_per_s)
        wait_for_app(APP, timeout_s)
        victim_id = next(
            r["node_id"] for r in replica_placement(APP) if r["deployment"] == "PlanExecutor"
        )
        victim = next(n for n in cluster.worker_nodes if n.node_id == victim_id)
        report = asyncio.run(
            _flow_with_loss(
                cluster,
                victim,
                data,
                reference,
                replicas,
                remove_after_s,
                per_call,
                outstanding,
                progress,
            )
        )
        report["removed_node"] = victim_id
        return report


async def _flow_with_loss(
    cluster, victim, data, reference, replicas, remove_after_s, per_call, outstanding, progress
) -> dict:
    from ray import serve

    packer = await _packer_seeing(replicas)
    results: list = [None] * len(data)
    errors: dict[int, str] = {}
    done_at: list[float] = []
    chunks = iter(
        [list(range(i, min(i + per_call, len(data)))) for i in range(0, len(data), per_call)]
    )

    async def caller() -> None:
        for chunk in chunks:
            try:
                outs = await packer.many.remote([data[i] for i in chunk])
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                for i in chunk:
                    errors[i] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            for i, out in zip(chunk, outs):
                results[i] = out
            done_at.append(time.monotonic())

    async def remover() -> float:
        while not done_at:
            await asyncio.sleep(0.05)
        await asyncio.sleep(remove_after_s)
        t = time.monotonic()
        await asyncio.to_thread(cluster.remove_node, victim, False)
        return t

    t0 = time.monotonic()
    tasks = [asyncio.create_task(caller()) for _ in range(max(1, outstanding // per_call))]
    removed_at = await remover()
    await asyncio.gather(*tasks)
    end = time.monotonic()
    stats = await packer.stats.remote()
    await serve.shutdown_async()
    answered = [i for i, r in enumerate(results) if r is not None]
    times = sorted(done_at)
    after = [t for t in times if t >= removed_at]
    gaps = [b - a for a, b in zip([removed_at] + after[:-1], after)] if after else []
    return {
        "windows": len(data),
        "answered": len(answered),
        "failed": len(errors),
        "lost": sum(1 for i, r in enumerate(results) if r is None and i not in errors),
        "crossed": count_crossed([results[i] for i in answered], [reference[i] for i in answered]),
        "errors": sorted(set(errors.values()))[:5],
        "seconds": end - t0,
        "removed_after_s": removed_at - t0,
        "answered_after_removal": len(after) * per_call,
        "gap_s": max(gaps) if gaps else None,
        "runner_replicas_at_end": stats["runner_replicas"],
    }
