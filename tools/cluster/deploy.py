"""The app on the cluster: :func:`_deploy` (the app as ``APP`` on the ``sim`` device, runners
pinned to an accelerator resource), :func:`wait_for_app` with its deadline
(:class:`PlacementTimeout`), and where things sit, from Ray's state API (:func:`node_table`,
:func:`replica_placement`)."""

from __future__ import annotations

import asyncio
import time

from packing.model.prepared import ModelLike, PreparedModel

from ..ceiling import resolve_config

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
