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

The package, by job: :mod:`~tools.cluster.deploy` (the app deployed, waited for, and where
its replicas sit), :mod:`~tools.cluster.place` (``placement`` and its table),
:mod:`~tools.cluster.loss` (``node-loss``) and :mod:`~tools.cluster.autoscale`
(``autoscale``); every public name is re-exported here.
"""

from __future__ import annotations

from .autoscale import AUTOSCALING, POLICIES, autoscale_step
from .deploy import (
    APP,
    SQUAD_CONFIG,
    PlacementTimeout,
    node_table,
    replica_placement,
    wait_for_app,
)
from .loss import node_loss
from .place import format_placement, placement

__all__ = [
    "APP",
    "AUTOSCALING",
    "POLICIES",
    "PlacementTimeout",
    "SQUAD_CONFIG",
    "autoscale_step",
    "format_placement",
    "node_loss",
    "node_table",
    "placement",
    "replica_placement",
    "wait_for_app",
]
