"""``python -m tools placement``: the app on a multi-node Ray cluster, runners pinned to
accelerators.

Starts a private multi-node cluster on this machine (``ray.cluster_utils.Cluster``: a head
that declares no accelerator and ``workers`` nodes that each declare ``{resource:
per_worker}``, e.g. ``{"IPU": 2}``), deploys the app on the ``sim`` device with every
PlanExecutor replica asking for one unit of ``resource``, waits for it with a deadline, and
reports from Ray's own state which node every replica of every deployment sits on, and
whether every answer equals its solo answer. A resource that no node declares ends in a
:class:`PlacementTimeout` that names what the runners asked for and what each node has,
instead of a hang.

The cluster lives in a temp dir of its own (``RAY_TMPDIR``) and is shut down at the end:
no other Ray cluster on the host is touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from packing.jobs.local_cluster import private_cluster
from packing.model.prepared import ModelLike, PreparedModel
from packing.runtime.features import Features

from .ceiling import resolve_config
from .scaling import _drive_handle, count_crossed

APP = "placement"
SQUAD_CONFIG = "configs/squad.yaml"  # the runners' slots (max_ongoing_requests) come from it


class PlacementTimeout(TimeoutError):
    """The app did not reach RUNNING in time (usually: replicas that cannot be scheduled)."""


def node_table() -> dict[str, dict]:
    """node id -> {"head": bool, "resources": {name: amount}} for the alive nodes."""
    from ray.util.state import list_nodes

    out = {}
    for n in list_nodes(detail=True):
        if n.state != "ALIVE":
            continue
        res = {
            k: v
            for k, v in (n.resources_total or {}).items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")
        }
        out[n.node_id] = {"head": bool(n.is_head_node), "resources": res}
    return out


def replica_placement(app: str) -> list[dict]:
    """Every alive replica of ``app``: deployment, actor id and node id, from Ray's state API
    (Serve names its replica actors ``ServeReplica:<app>:<deployment>``)."""
    from ray.util.state import list_actors

    rows = []
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10000):
        if a.class_name.startswith(f"ServeReplica:{app}:"):
            rows.append(
                {
                    "deployment": a.class_name.split(":", 2)[2],
                    "actor_id": a.actor_id,
                    "node_id": a.node_id,
                }
            )
    return sorted(rows, key=lambda r: (r["deployment"], r["node_id"]))


def wait_for_app(app: str, timeout_s: float, poll_s: float = 1.0) -> None:
    """Return once ``app`` is RUNNING; raise :class:`PlacementTimeout` after ``timeout_s`` (or
    RuntimeError if it fails to deploy) with Serve's status of each deployment and every
    node's resources in the message."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        st = serve.status().applications.get(app)
        status = str(st.status) if st else "NOT_STARTED"
        if status.endswith("RUNNING"):
            return
        if status.endswith("DEPLOY_FAILED") or time.monotonic() > deadline:
            deps = "; ".join(
                f"{name}: {d.status} {d.message}".strip()
                for name, d in (st.deployments.items() if st else [])
            )
            nodes = "; ".join(
                f"{'head' if v['head'] else 'worker'} {k[:8]} {v['resources']}"
                for k, v in node_table().items()
            )
            msg = (
                f"application {app!r} is {status} after {timeout_s:g} s. Deployments: "
                f"{deps or 'none'}. Nodes: {nodes}"
            )
            raise (RuntimeError if status.endswith("DEPLOY_FAILED") else PlacementTimeout)(msg)
        time.sleep(poll_s)


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


def _deploy(
    model_dir: ModelLike,
    replicas: int,
    resource: str,
    profile: str,
    tokens_per_s: float | None = None,
    autoscaling: dict | None = None,
) -> None:
    """Deploy the app as ``APP`` (sim device of ``profile``, optionally at ``tokens_per_s``)
    without waiting for it (``autoscaling``: the runners' autoscaling_config instead of a
    fixed ``replicas``): runners
    take one ``resource`` unit each; Ingress and Packer one CPU each, which only the head has
    (workers declare num_cpus 0), so the front end stays on the head."""
    from ray import serve
    from ray.serve.api import RunTarget

    from deployments.app import build_graph
    from deployments.config import AppConfig, config_deployment_options

    model = PreparedModel.open(model_dir)
    serve.start(proxy_location="Disabled")
    sim = {"profile": profile, **({"tokens_per_s": tokens_per_s} if tokens_per_s else {})}
    cfg = AppConfig(
        model_dir=str(model),
        model_source=model.manifest.source,  # the folder as it is
        device="sim",
        sim=sim,
        packing={"mode": "unpack_repack", "batch_wait_timeout_s": 0.005},
    )
    slots = config_deployment_options(resolve_config(SQUAD_CONFIG), "PlanExecutor")[
        "max_ongoing_requests"
    ]
    runner = {
        "max_ongoing_requests": slots,
        "ray_actor_options": {"num_cpus": 0, "resources": {resource: 1}},
        **({"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}),
    }
    app = build_graph(
        cfg, runner_options=runner, front_options={"ray_actor_options": {"num_cpus": 1}}
    )
    serve.run_many(
        [RunTarget(target=app, name=APP, route_prefix=None)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


async def _packer_seeing(replicas: int, timeout_s: float = 60.0):
    """The Packer's handle, once it counts ``replicas`` running runners (or ``timeout_s``)."""
    from ray import serve

    packer = serve.get_deployment_handle("Packer", APP)
    deadline = time.monotonic() + timeout_s
    while (await packer.stats.remote())[
        "runner_replicas"
    ] < replicas and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return packer


async def _answers(data: Sequence[Features], replicas: int, progress: bool) -> list:
    """Wait for the packer to see every runner, then send every window through it."""
    from ray import serve

    packer = await _packer_seeing(replicas)
    got, _ = await _drive_handle(packer, data, 16, 256, progress)
    await serve.shutdown_async()
    return got


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
