"""The packer deployment: collects requests with ``@serve.batch`` and packs each batch.

Batches are bounded by tokens first: ``batch_size_fn`` charges every request
``max(length, capacity / max_valid_num)`` units against a budget of ``capacity_tokens``, so a
batch never holds more tokens than one model batch nor more than ``max_valid_num``
sequences. Three Ray Serve behaviours are handled explicitly:

* ``max_ongoing_requests`` defaults to 5, which would silently cap every batch at 5
  requests: the deployment sets it far above ``max_valid_num``.
* ``batch_size_fn`` sends a request that does not fit to the *back* of the queue, and Serve
  forms the next batch eagerly from leftovers: a :class:`~deployments.admission.BatchGate`
  admits one batch budget at a time into Serve's queue, in arrival order, while a batch slot
  is free, so neither happens.
* an exception inside ``batch_size_fn`` can hang Serve's batch loop: :func:`batch_cost`
  cannot raise (items are built here, and it falls back to counting).

Each batch is laid out by :func:`packing.policy.collate.pack_batch` with the configured mode
and heuristic; every plan goes to a PackRunner replica; every caller gets exactly its own
result, or the error of the model call its sequence was in.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from ray import serve
from ray.serve.handle import DeploymentHandle

from packing.policy.collate import pack_batch
from packing.policy.config import PackingConfig
from packing.runtime.features import Features, SpanLogits, validate_features

from .admission import BatchGate
from .config import PackingKnobs
from .metrics import PackerMetrics
from .model_store import ensure_model


# Batches in flight at once: one running on a runner replica while the next is formed and
# sent, so the runner never waits for the packer.
MAX_CONCURRENT_BATCHES = 2


class Overloaded(RuntimeError):
    """The packer holds ``max_pending`` requests already; retry later."""


@dataclass(frozen=True)
class PackItem:
    """One request as the batch queue sees it."""

    features: Features  # validated token ids of one window
    cost: int  # budget units: max(tokens, capacity / max_valid_num)
    enqueued_s: float  # time.monotonic() when it reached the packer


@dataclass(frozen=True)
class _Failed:
    error: BaseException  # why this request's model call failed


def batch_cost(items: list) -> int:
    """``batch_size_fn``: total budget units of a batch. Never raises."""
    try:
        return sum(int(item.cost) for item in items)
    except Exception:  # defensive: an exception here would stall Serve's batch loop
        return len(items)


@serve.deployment(name="Packer", max_ongoing_requests=8192, ray_actor_options={"num_cpus": 0})
class Packer:
    """Online packer in the serving path: ``__call__(features) -> SpanLogits`` for one window,
    ``many([features, ...]) -> [SpanLogits, ...]`` for all windows of a request."""

    def __init__(self, runner: DeploymentHandle, model_dir: str, model_source: str,
                 seq_len: int, batch_size: int, max_valid_num: int) -> None:
        self.runner = runner
        self.manifest = ensure_model(model_dir, model_source, seq_len, batch_size, max_valid_num)
        self.metrics = PackerMetrics()
        self.totals = {"batches": 0, "plans": 0, "sequences": 0, "real_tokens": 0,
                       "token_slots": 0, "failed_plans": 0}
        self.pending = 0
        self.gate = BatchGate(1, MAX_CONCURRENT_BATCHES)
        self._admitted: set[int] = set()  # id() of admitted items not yet in a batch
        self.reconfigure(PackingKnobs().model_dump())

    def reconfigure(self, user_config: dict | None) -> None:
        """Apply new packing knobs (Serve calls this on ``user_config`` changes)."""
        knobs = PackingKnobs(**(user_config or {}))
        m = self.manifest
        config = PackingConfig(
            seq_len=m.seq_len, batch_size=m.batch_size,
            max_valid_num=knobs.max_valid_num or m.max_valid_num, timeout_s=knobs.timeout_s,
            mode=knobs.mode, algorithm=knobs.algorithm, max_tokens=knobs.max_tokens)
        self.knobs, self.config = knobs, config
        self.unit = math.ceil(config.capacity_tokens / config.max_valid_num)
        self.gate.set_budget(config.capacity_tokens)
        self.pack.set_max_batch_size(config.capacity_tokens)
        self.pack.set_batch_wait_timeout_s(config.timeout_s)

    async def __call__(self, features: Features) -> SpanLogits:
        """Logits of one window; raises InvalidInput, Overloaded or the batch's error."""
        d = self.manifest.dims
        f = validate_features(features, self.config.seq_len, d.vocab_size, d.type_vocab_size)
        if self.pending >= self.knobs.max_pending:
            raise Overloaded(f"packer holds {self.pending} requests (max_pending)")
        self.pending += 1
        item = PackItem(f, min(max(len(f), self.unit), self.config.capacity_tokens),
                        time.monotonic())
        try:
            await self.gate.enter(item.cost)
            self._admitted.add(id(item))
            out = await self.pack(item)
        finally:
            self.pending -= 1
            if id(item) in self._admitted:  # never reached a batch (caller gone, Serve error)
                self._admitted.discard(id(item))
                self.gate.withdraw(item.cost)
        if isinstance(out, _Failed):
            raise out.error
        return out

    async def many(self, features: list[Features]) -> list[SpanLogits]:
        """Logits of every window of one request, in order: one handle call instead of one per
        window. Each window is admitted and packed as its own sequence (windows may land in
        different batches); raises the first window's error once all have finished."""
        outs = await asyncio.gather(*(self(f) for f in features), return_exceptions=True)
        for out in outs:
            if isinstance(out, BaseException):
                raise out
        return list(outs)  # type: ignore[arg-type]

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.01,
                 max_concurrent_batches=MAX_CONCURRENT_BATCHES,
                 batch_size_fn=batch_cost)
    async def pack(self, items: list[PackItem]) -> list[SpanLogits | _Failed]:
        """Collate: pack the batch, run its plans on runner replicas, scatter back.

        Serve has already removed requests whose caller went away (cancelled) while queued;
        callers that went away while waiting at the gate never got this far.
        """
        config = self.config
        now = time.monotonic()
        for item in items:
            self._admitted.discard(id(item))
            self.metrics.wait.observe(now - item.enqueued_s)
        self.gate.batch_started(sum(item.cost for item in items))
        try:
            plans = pack_batch([len(i.features) for i in items], config)
            t0 = time.monotonic()
            outs = await asyncio.gather(
                *(self.runner.execute.remote(p, [items[k].features for k in p.seq_ids])
                  for p in plans), return_exceptions=True)
            seconds = time.monotonic() - t0
        finally:
            self.gate.batch_finished()
        results: list[SpanLogits | _Failed | None] = [None] * len(items)
        tags = {"mode": config.mode}
        self.totals["batches"] += 1
        for plan, out in zip(plans, outs):
            self.totals["plans"] += 1
            if isinstance(out, BaseException) or len(out) != plan.n_seqs:
                err = out if isinstance(out, BaseException) else RuntimeError(
                    f"runner returned {len(out)} results for {plan.n_seqs} sequences")
                self.totals["failed_plans"] += 1
                for k in plan.seq_ids:
                    results[k] = _Failed(err)
                continue
            for k, logits in zip(plan.seq_ids, out):
                if results[k] is not None:
                    raise RuntimeError(f"request {k} of the batch was packed twice")
                results[k] = logits
            self.totals["sequences"] += plan.n_seqs
            self.totals["real_tokens"] += plan.real_tokens
            self.totals["token_slots"] += plan.token_slots
            self.metrics.efficiency.observe(plan.real_tokens / plan.token_slots, tags=tags)
            self.metrics.sequences.observe(plan.n_seqs, tags=tags)
            self.metrics.tokens.observe(plan.real_tokens, tags=tags)
            self.metrics.batch_seconds.observe(seconds, tags=tags)
        missing = [k for k, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"requests {missing[:5]} of the batch got no result")
        return results  # type: ignore[return-value]

    def stats(self) -> dict:
        """Cumulative counters and the current knobs (served at ``GET /v1/stats``)."""
        t = self.totals
        return {**t, "efficiency": t["real_tokens"] / t["token_slots"] if t["token_slots"] else None,
                "pending": self.pending, "knobs": self.knobs.model_dump()}
