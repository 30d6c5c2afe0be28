"""PackRunner replicas: execute packed batch plans on the accelerator they are pinned to.

Pinning comes from ``ray_actor_options`` in the config: ``num_cpus`` by default,
``num_gpus: 1`` with ``device: cuda``, or a custom resource such as ``{"resources": {"IPU": 1}}``
on hosts that declare it (``ray start --resources='{"IPU": 4}'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from ray import serve

from packing.model.manifest import Manifest
from packing.policy.plans import AttentionMaskPlan, Plan, UnpackRepackPlan
from packing.runtime.backend import load_backend
from packing.runtime.faults import FaultInjectingBackend
from packing.runtime.features import Features, SpanLogits
from packing.runtime import PlanExecutor

from .model_store import ensure_model


def graph_for(plan: Plan) -> str:
    """Which prepared graph runs a plan."""
    if isinstance(plan, UnpackRepackPlan):
        return "unpack_repack"
    if isinstance(plan, AttentionMaskPlan):
        return "attention_mask"
    return "original"


@serve.deployment(name="PackRunner", max_ongoing_requests=2,
                  ray_actor_options={"num_cpus": 1})
class PackRunnerDeployment:
    """Holds the packed graphs of one model folder; ``execute`` runs one plan."""

    def __init__(self, model_dir: str, model_source: str, seq_len: int, batch_size: int,
                 max_valid_num: int, device: str = "auto", intra_op_threads: int | None = None,
                 preload: Sequence[str] = ("unpack_repack",), fault_file: str | None = None
                 ) -> None:
        self.manifest: Manifest = ensure_model(model_dir, model_source, seq_len, batch_size,
                                               max_valid_num)
        self.model_dir = Path(model_dir)
        self.options = {"device": device}
        if intra_op_threads:
            self.options["intra_op_threads"] = intra_op_threads
        self.fault_file = fault_file  # model calls fail while this file exists (drills)
        self._executors: dict[str, PlanExecutor] = {}
        for kind in preload:
            self._executor(kind)

    def _executor(self, kind: str) -> PlanExecutor:
        if kind not in self._executors:
            backend = load_backend("onnxruntime", self.model_dir / self.manifest.graphs[kind],
                                   **self.options)
            if self.fault_file:
                backend = FaultInjectingBackend(backend, self.fault_file)
            self._executors[kind] = PlanExecutor(backend, self.manifest)
        return self._executors[kind]

    async def execute(self, plan: Plan, features: Sequence[Features]) -> list[SpanLogits]:
        """Run one plan (``features[k]`` is its k-th sequence); results in plan order."""
        executor = self._executor(graph_for(plan))
        # Off the event loop, so health checks and queued calls stay responsive.
        return await asyncio.to_thread(executor.execute, plan, list(features))

    def describe(self) -> dict:
        """Backends loaded on this replica and what they computed."""
        return {kind: {"backend": ex.backend.describe(), "batches": ex.stats.batches,
                       "real_tokens": ex.stats.real_tokens, "token_slots": ex.stats.token_slots}
                for kind, ex in self._executors.items()}
