"""The runner replicas: the ``PlanExecutor`` Serve deployment, whose replicas execute packed
batch plans on the accelerator they are pinned to (one
:class:`packing.runtime.executor.PlanExecutor` per packed graph).

Pinning comes from ``ray_actor_options`` in the config: ``num_cpus`` by default,
``num_gpus: 1`` with ``device: cuda``, or a custom resource such as ``{"resources": {"IPU": 1}}``
on hosts that declare it (``ray start --resources='{"IPU": 4}'``). ``device: sim`` runs the
simulated accelerator (:mod:`packing.runtime.sim`), which holds no CPU while a batch "runs".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ray import serve

from deployments.autoscaling import DEMAND, STALE_S
from packing.model.manifest import Manifest
from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.plans import AttentionMaskPlan, Plan, UnpackRepackPlan
from packing.runtime.backend import load_backend
from packing.runtime.executor import PlanExecutor
from packing.runtime.faults import FaultInjectingBackend
from packing.runtime.features import Features, Result

PACKED_GRAPHS = ("attention_mask", "unpack_repack")


def graph_for(plan: Plan) -> str:
    """Which prepared graph runs a plan."""
    if isinstance(plan, UnpackRepackPlan):
        return "unpack_repack"
    if isinstance(plan, AttentionMaskPlan):
        return "attention_mask"
    return "original"


@serve.deployment(name="PlanExecutor", max_ongoing_requests=2, ray_actor_options={"num_cpus": 1})
class PlanExecutorDeployment:
    """Holds both packed graphs of one prepared folder; ``execute`` runs one plan (through a
    :class:`packing.runtime.executor.PlanExecutor` per graph). Not the in-process
    :class:`packing.runners.pack_runner.PackRunner`, which also admits and packs.

    Both graphs are loaded at start, so the packer's ``mode`` (its ``user_config``) can change
    at run time without a replica restart or a slow first batch.
    """

    def __init__(
        self,
        model_dir: ModelLike,
        backend: str = "onnxruntime",
        backend_options: dict | None = None,
        fault_file: str | None = None,
    ) -> None:
        model = PreparedModel.open(model_dir)
        self.manifest: Manifest = model.manifest
        self._executors: dict[str, PlanExecutor] = {}
        for kind in PACKED_GRAPHS:
            be = load_backend(backend, model.graph_path(kind), **(backend_options or {}))
            if fault_file:  # model calls fail while this file exists (drills)
                be = FaultInjectingBackend(be, fault_file)
            self._executors[kind] = PlanExecutor(be, self.manifest, model)
        self._demand = (0, 0.0)  # (packer's demand in plans, when it came): autoscaling signal

    async def execute(
        self, plan: Plan, features: Sequence[Features], demand_plans: int | None = None
    ) -> list[Result]:
        """Run one plan (``features[k]`` is its k-th sequence); results in plan order: span
        logits for a qa folder, one :class:`~packing.runtime.features.Pooled` vector per
        sequence for embed and classify (``self.manifest.task``).
        ``demand_plans``: the sending packer's plans running or waiting for a slot, reported
        to the autoscaler (:mod:`deployments.autoscaling`)."""
        if demand_plans is not None:
            self._demand = (int(demand_plans), time.monotonic())
        kind = graph_for(plan)
        if kind not in self._executors:
            raise ValueError(f"PlanExecutor runs packed plans only, got a {type(plan).__name__}")
        # Off the event loop, so health checks and the next call stay responsive.
        return await asyncio.to_thread(self._executors[kind].execute, plan, list(features))

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metrics (Serve calls this every ``metrics_interval_s``): the
        latest packer demand, 0 when no plan came recently."""
        demand, at = self._demand
        return {DEMAND: float(demand if time.monotonic() - at <= STALE_S else 0)}

    def slots(self) -> int:
        """Plans this replica takes at once (its ``max_ongoing_requests``).

        Serve exposes a replica's own deployment config only through this private field
        (its ``@serve.batch`` reads the same one); the packer asks once per replica count."""
        return int(serve.get_replica_context()._deployment_config.max_ongoing_requests)

    def describe(self) -> dict:
        """Backends loaded on this replica and what they computed."""
        return {
            kind: {
                "backend": ex.backend.describe(),
                "batches": ex.stats.batches,
                "real_tokens": ex.stats.real_tokens,
                "token_slots": ex.stats.token_slots,
            }
            for kind, ex in self._executors.items()
        }
