"""A private local multi-node Ray cluster on this host: a head without accelerators and worker
nodes declaring one as a custom resource. ``packed-bert batch --local-cluster-nodes`` runs on it;
the multi-node drills (``python -m tools placement | node-loss | autoscale``) deploy the app on it.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile


def free_port() -> int:
    """A free loopback port in 20000-29999 (outside the ephemeral range and Ray's worker ports)."""
    for port in random.sample(range(20000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def start_cluster(workers: int, resource: str, per_worker: int, head_cpus: int = 4):
    """A local multi-node cluster: a head with ``head_cpus`` CPUs and no accelerator, and
    ``workers`` nodes with no CPUs and ``{resource: per_worker}``. Connects this driver; the
    returned cluster's ``dashboard_url`` (``http://host:port``) takes ``ray job submit``."""
    import ray
    from ray.cluster_utils import Cluster

    # the dashboard serves Ray's state API (node of every actor); a free port, so another
    # cluster's dashboard on this host is never reached
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head_cpus,
            "include_dashboard": True,
            "dashboard_port": free_port(),
        },
    )
    for _ in range(workers):
        cluster.add_node(num_cpus=0, resources={resource: per_worker})
    cluster.wait_for_nodes()
    ctx = ray.init(address=cluster.address, namespace="packed-bert-placement", log_to_driver=False)
    url = ctx.dashboard_url
    cluster.dashboard_url = url if url.startswith("http") else f"http://{url}"
    return cluster


@contextlib.contextmanager
def private_cluster(workers: int, resource: str, per_worker: int):
    """:func:`start_cluster` in a temp dir of its own (``RAY_TMPDIR``); on exit Serve, the
    driver's connection and every node of this cluster (and only those) are shut down."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="pbs-mn-", dir="/tmp")
    cluster = start_cluster(workers, resource, per_worker)
    try:
        yield cluster
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
