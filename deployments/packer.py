"""The packer deployment: runs the one online batcher in front of the PackRunner replicas.

Requests (one window each, or all windows of an HTTP body in one ``many`` call) are packed
by :class:`~packing.runtime.batcher.PackBatcher` -- the same batcher the in-process online
``PackRunner`` and ``packed-bert bench`` use -- under the knobs of this deployment's
``user_config``. Each closed plan goes to a PackRunner replica with one handle call.

Dispatch slots follow the runners: the packer lets as many plans run at once as the
running PackRunner replicas take together (replicas x their ``max_ongoing_requests``),
re-reading the replica count from Serve every ``runner_poll_s`` seconds, so autoscaling the
runners scales the packer's output with them, and a batch is only closed on its timeout
when a runner can start it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from packing.model.manifest import Manifest
from packing.policy.config import PackingConfig
from packing.policy.plans import Plan
from packing.runtime.batcher import Overloaded, PackBatcher
from packing.runtime.features import Features, SpanLogits, validate_features

from .config import PackingKnobs
from .metrics import PackerMetrics
from .retry import retry_replica_lost

log = logging.getLogger("ray.serve")

__all__ = ["Packer", "Overloaded", "running_replicas"]


def running_replicas(app: str, deployment: str) -> int | None:
    """Running replicas of ``deployment`` in ``app`` from Serve's status; None if unknown."""
    try:
        status = serve.status().applications[app].deployments[deployment]
    except Exception:  # noqa: BLE001 - controller busy or app not listed yet: keep the last value
        return None
    return sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))


@serve.deployment(name="Packer", max_ongoing_requests=8192, ray_actor_options={"num_cpus": 0})
class Packer:
    """``__call__(features) -> SpanLogits`` for one window; ``many([features, ...])`` for all
    windows of a request body, in order, in one call."""

    def __init__(self, runner: DeploymentHandle, model_dir: str,
                 runner_poll_s: float = 1.0, calibrated_max_tokens: int | None = None) -> None:
        """``calibrated_max_tokens``: the budget the ``max_tokens: auto`` knob stands for,
        calibrated once by :func:`deployments.app.build_graph` for the runners' device (so
        replicas never measure); None means the full batch, ``batch_size x seq_len``."""
        self.runner = runner
        self.manifest = Manifest.read(model_dir)  # the one source of every shape
        self.calibrated_max_tokens = calibrated_max_tokens
        self.metrics = PackerMetrics()
        self.runner_poll_s = runner_poll_s
        self.runner_replicas = 1  # last count read from Serve
        self.runner_slots: int | None = None  # max_ongoing_requests of a runner replica, once read
        self._watcher: asyncio.Task | None = None
        try:  # outside a replica (unit tests) there are no runner replicas to follow
            self._app: str | None = serve.get_replica_context().app_name
        except Exception:  # noqa: BLE001
            self._app = None
        knobs = PackingKnobs()
        self.batcher = PackBatcher(self._config(knobs), self._execute, max_inflight_batches=1,
                                   max_pending=knobs.max_pending, on_plan=self._observe)
        self.reconfigure(knobs.model_dump())

    def _config(self, knobs: PackingKnobs) -> PackingConfig:
        """The batcher's config for ``knobs``: ``max_tokens: auto`` is the calibrated budget, an
        int is pinned; PackingConfig's ValueError names a value that does not fit the model."""
        m = self.manifest
        max_tokens = self.calibrated_max_tokens if knobs.max_tokens == "auto" else knobs.max_tokens
        try:
            return PackingConfig(seq_len=m.seq_len, batch_size=m.batch_size,
                                 max_valid_num=knobs.max_valid_num or m.max_valid_num,
                                 timeout_s=knobs.timeout_s, mode=knobs.mode,
                                 algorithm=knobs.algorithm, max_tokens=max_tokens,
                                 attention_groups=knobs.attention_groups)
        except ValueError as exc:
            if knobs.max_tokens == "auto" and "max_tokens" in str(exc):
                raise ValueError(f"max_tokens 'auto' (calibrated budget {max_tokens!r}): "
                                 f"{exc}") from None
            raise

    def reconfigure(self, user_config: dict | None) -> None:
        """Apply new packing knobs (Serve calls this on ``user_config`` changes)."""
        knobs = PackingKnobs(**(user_config or {}))
        config = self._config(knobs)  # ValueError names a knob that does not fit the model
        self.knobs = knobs
        self.batcher.set_config(config)
        self.batcher.set_limits(max_pending=knobs.max_pending)

    # --------------------------------------------------------------- requests
    def _validated(self, features: Features) -> Features:
        d = self.manifest.dims
        return validate_features(features, self.manifest.seq_len, d.vocab_size, d.type_vocab_size)

    async def __call__(self, features: Features) -> SpanLogits:
        """Logits of one window; raises InvalidInput, Overloaded or its batch's error."""
        self._watch()
        return await self.batcher.submit(self._validated(features))

    async def many(self, features: list[Features]) -> list[SpanLogits]:
        """Logits of every window of one request body, in order (one handle call instead of
        one per window); each window is packed as its own sequence. Raises InvalidInput
        before anything is queued, Overloaded, or the first failing window's error."""
        self._watch()
        return await self.batcher.submit_many([self._validated(f) for f in features])

    async def _execute(self, plan: Plan, features: list[Features]) -> list[SpanLogits]:
        demand = self.batcher.inflight + self.batcher.queued_plans  # autoscaling signal
        return await retry_replica_lost(lambda: self.runner.execute.remote(plan, features, demand))

    def _observe(self, plan: Plan, seconds: float, error: BaseException | None,
                 waits: list[float]) -> None:
        for wait in waits:
            self.metrics.wait.observe(wait)
        if error is not None:
            return
        tags = {"mode": self.knobs.mode}
        self.metrics.efficiency.observe(plan.real_tokens / plan.token_slots, tags=tags)
        self.metrics.sequences.observe(plan.n_seqs, tags=tags)
        self.metrics.tokens.observe(plan.real_tokens, tags=tags)
        self.metrics.batch_seconds.observe(seconds, tags=tags)

    # ------------------------------------------------------------ dispatch slots
    def _watch(self) -> None:
        if self._app is None:
            return
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._follow_runners())

    async def _follow_runners(self) -> None:
        """Keep the batcher's dispatch slots at running runner replicas x their slots."""
        app, name = self._app, self.runner.deployment_name
        while True:
            try:
                n = await asyncio.to_thread(running_replicas, app, name)
                # Slots are per deployment config: read again only when the replicas change.
                if self.runner_slots is None or (n and n != self.runner_replicas):
                    self.runner_slots = max(1, int(await self.runner.slots.remote()))
                if n:  # 0 while replicas restart: keep the last count, calls queue in Serve
                    self.runner_replicas = n
                self.batcher.set_limits(
                    max_inflight_batches=self.runner_replicas * self.runner_slots)
            except Exception as exc:  # noqa: BLE001 - keep serving with the last known slots
                log.warning("packer: could not read runner replicas: %s", exc)
            await asyncio.sleep(self.runner_poll_s)

    async def stats(self) -> dict:
        """Cumulative counters, dispatch slots and the current knobs (``GET /v1/stats``)."""
        self._watch()
        s = self.batcher.stats.as_dict()
        s.update(batches=s["plans"], pending=self.batcher.pending,
                 inflight=self.batcher.inflight, queued_plans=self.batcher.queued_plans,
                 dispatch_slots=self.batcher.max_inflight_batches,
                 runner_replicas=self.runner_replicas, runner_slots=self.runner_slots,
                 knobs=self.knobs.model_dump(), token_budget=self.batcher.config.capacity_tokens,
                 calibrated_max_tokens=self.calibrated_max_tokens, time_s=time.time())
        return s
