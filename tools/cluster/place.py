"""``placement``: where every replica of the app sits on a fresh multi-node cluster, whether
every answer equals its solo answer, and the Markdown table of it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from packing.jobs.local_cluster import private_cluster
from packing.model.prepared import ModelLike, PreparedModel
from packing.runtime.features import Features

from ..scaling.drive import _drive_handle
from ..scaling.report import count_crossed
from .deploy import (
    APP,
    PlacementTimeout,
    _deploy,
    _packer_seeing,
    node_table,
    replica_placement,
    wait_for_app,
)


def placement(
    model_dir: ModelLike,
    data: Sequence[Features],
    workers: int = 2,
    resource: str = "IPU",
    per_worker: int = 2,
    declared: str | None = None,
    runner_replicas: int | None = None,
    timeout_s: float = 120.0,
    progress: bool = False,
) -> dict:
    """Deploy the app (``sim`` device, fast profile) on a fresh local multi-node cluster and
    report placement and answers.

    Worker nodes declare ``declared`` (default ``resource``) x ``per_worker``; each PlanExecutor
    replica asks for one ``resource`` (so ``declared != resource`` is the misconfiguration
    case, which raises :class:`PlacementTimeout` after ``timeout_s``). ``runner_replicas``
    defaults to every unit declared. Returns ``{"nodes", "replicas", "runner_nodes",
    "answered", "crossed", "checks"}``; ``checks`` holds the booleans the caller asserts.
    """
    from packing.runners import PackRunner

    model = PreparedModel.open(model_dir)  # read once, for the reference and the app's config
    reference = PackRunner(model, mode="unpack_repack", backend="sim", profile="fast").run(data)
    replicas = runner_replicas or workers * per_worker
    with private_cluster(workers, declared or resource, per_worker):
        _deploy(model, replicas, resource, "fast")
        try:
            wait_for_app(APP, timeout_s)
        except PlacementTimeout as exc:
            have = sorted({k for v in node_table().values() for k in v["resources"]})
            hint = (
                f"no node declares {resource!r} (declared: {have})"
                if resource not in have
                else f"the nodes declare too few {resource!r} for {replicas} replicas"
            )
            raise PlacementTimeout(
                f"PlanExecutor replicas ask for {{{resource!r}: 1}} and {hint}. {exc}"
            ) from None
        nodes = node_table()
        rows = replica_placement(APP)
        for r in rows:
            r["head"] = nodes.get(r["node_id"], {}).get("head")
            r["node_resources"] = nodes.get(r["node_id"], {}).get("resources")
        got = asyncio.run(_answers(data, replicas, progress))
        runners = [r for r in rows if r["deployment"] == "PlanExecutor"]
        report = {
            "nodes": nodes,
            "replicas": rows,
            "runner_nodes": sorted({r["node_id"] for r in runners}),
            "answered": sum(g is not None for g in got),
            "questions": len(data),
            "crossed": count_crossed(got, reference),
        }
        report["checks"] = {
            "runners_all_on_accelerator_nodes": bool(runners)
            and all((r["node_resources"] or {}).get(declared or resource, 0) > 0 for r in runners),
            "no_runner_on_head": not any(r["head"] for r in runners),
            "runners_on_every_worker": len(report["runner_nodes"]) == workers,
            "every_answer_equals_solo": report["answered"] == len(data) and report["crossed"] == 0,
        }
        return report


async def _answers(data: Sequence[Features], replicas: int, progress: bool) -> list:
    """Wait for the packer to see every runner, then send every window through it."""
    from ray import serve

    packer = await _packer_seeing(replicas)
    got, _ = await _drive_handle(packer, data, 16, 256, progress)
    await serve.shutdown_async()
    return got


def format_placement(report: dict) -> str:
    """The placement table (replica -> node -> resources) and the checks, as Markdown."""
    short = {
        nid: f"{'head' if v['head'] else 'worker'}-{nid[:6]}" for nid, v in report["nodes"].items()
    }
    lines = ["| deployment | replica actor | node | node resources |", "|---|---|---|---|"]
    for r in report["replicas"]:
        lines.append(
            f"| {r['deployment']} | {r['actor_id'][:8]} | {short.get(r['node_id'], r['node_id'][:8])} "
            f"| {r['node_resources']} |"
        )
    lines += [
        "",
        f"answered {report['answered']} / {report['questions']}, crossed {report['crossed']}",
    ]
    lines += [f"{k}: {v}" for k, v in report["checks"].items()]
    return "\n".join(lines)
