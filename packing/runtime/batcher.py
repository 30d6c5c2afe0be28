"""The one online batcher: requests in, packed batch plans out to an executor, results back.

:class:`PackBatcher` is the packing loop of this project. The served ``Packer`` deployment
runs it (its executor is a handle call to a PackRunner replica) and so does the in-process
online :class:`~packing.runtime.pack_runner.PackRunner` (its executor runs the plan on a local
backend), so ``packed-bert bench``'s online figures describe what is served.

It is a thin asyncio driver around the pure policy, :class:`~packing.policy.online.OnlinePacker`:

* **What goes in a batch** is the policy's: each request is placed on arrival (in arrival
  order) by the configured heuristic; a batch is bounded by real tokens first
  (``capacity_tokens``) and holds at most ``max_valid_num`` sequences.
* **When a batch closes**: when it holds ``max_valid_num`` sequences, when the next request
  does not fit (that request starts the next batch), or when its oldest request has waited
  ``timeout_s`` -- the last only while a dispatch slot is free: while every slot is busy an
  overdue batch stays open and keeps filling, since it could not start any earlier.
* **Dispatch**: at most ``max_inflight_batches`` plans run at once (the serving graph sets it
  to runner replicas x their ``max_ongoing_requests`` and follows autoscaling); closed plans
  wait in order for a slot.
* **Results**: each request gets exactly its own result or the error of the plan it was in;
  a request whose caller went away before its plan started is dropped (the plan's other
  requests are re-planned without it). Nothing waits forever: a failed plan fails its
  requests, and :meth:`close` runs or fails everything still queued.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from packing.policy.collate import pack_batch
from packing.policy.config import PackingConfig
from packing.policy.online import OnlinePacker
from packing.policy.plans import Plan

from .features import Features, SpanLogits

Execute = Callable[[Plan, list[Features]], Awaitable[Sequence[SpanLogits]]]
"""``execute(plan, features) -> results``: run one plan; ``features[k]`` is the plan's k-th
sequence and ``results[k]`` its logits."""


class Overloaded(RuntimeError):
    """The batcher already holds ``max_pending`` requests; retry later."""


@dataclass
class BatcherStats:
    """Cumulative counters of what the batcher sent (for ``/v1/stats`` and benchmarks)."""

    plans: int = 0  # plans dispatched
    failed_plans: int = 0  # plans whose execution raised or returned the wrong count
    sequences: int = 0  # requests answered by successful plans
    real_tokens: int = 0  # their tokens
    token_slots: int = 0  # token positions their plans' dense layers computed
    dropped: int = 0  # requests dropped because their caller went away before dispatch
    closed_full: int = 0  # batches closed holding max_valid_num sequences
    closed_no_room: int = 0  # batches closed because the next request did not fit
    closed_timeout: int = 0  # batches closed because their oldest request waited timeout_s
    closed_flush: int = 0  # batches closed by close() or by a change of knobs (set_config)
    max_inflight_seen: int = 0  # most plans that ran at once

    @property
    def mean_sequences(self) -> float:
        """Sequences per successful plan."""
        ok = self.plans - self.failed_plans
        return self.sequences / ok if ok else 0.0

    @property
    def efficiency(self) -> float:
        """real_tokens / token_slots of successful plans (1.0 = no padding computed)."""
        return self.real_tokens / self.token_slots if self.token_slots else 0.0

    def as_dict(self) -> dict:
        """Plain dict of every counter plus the derived ratios."""
        out = {k: v for k, v in self.__dict__.items()}
        out["mean_sequences"] = self.mean_sequences
        out["efficiency"] = self.efficiency
        return out


@dataclass
class _Request:
    features: Features  # validated token ids of one sequence
    future: asyncio.Future  # resolves to its SpanLogits or the error of its plan
    arrival_s: float  # clock() when it reached the batcher


@dataclass
class _Closed:
    plan: Plan  # seq_ids index the batcher's request table
    reason: str  # full | no_room | timeout | flush


class PackBatcher:
    """Online packing: ``await submit(features)`` returns that sequence's logits.

    Args:
        config: the packing policy's knobs (mode, heuristic, sizes, timeout).
        execute: runs one plan (see :data:`Execute`); may raise, failing that plan's requests.
        max_inflight_batches: plans allowed to run at once (>= 1).
        max_pending: requests held at once (queued or running); more raise :class:`Overloaded`.
        clock: monotonic seconds (injectable for tests).
        on_plan: optional ``on_plan(plan, seconds, error, waits)`` called after every plan
            (metrics): its run time, its error or None, and how long each of its requests
            waited from arrival to dispatch.

    Must be used from one event loop; every method but :meth:`close` is non-blocking.
    """

    def __init__(self, config: PackingConfig, execute: Execute, max_inflight_batches: int = 1,
                 max_pending: int = 4096, clock: Callable[[], float] = time.monotonic,
                 on_plan: Callable[[Plan, float, BaseException | None, list[float]], None]
                 | None = None
                 ) -> None:
        self._execute = execute
        self._clock = clock
        self._on_plan = on_plan
        self.stats = BatcherStats()
        self._requests: dict[int, _Request] = {}  # seq id -> request, until its plan starts
        self._next_id = 0
        self._ready: deque[_Closed] = deque()  # closed plans waiting for a slot, in order
        self._inflight = 0  # plans running now
        self._pending = 0  # requests submitted and not yet answered
        self._tasks: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._closed = False
        self.max_pending = 1
        self.max_inflight_batches = 1
        self.set_limits(max_inflight_batches=max_inflight_batches, max_pending=max_pending)
        self.config = config
        self._packer = OnlinePacker(config, clock=clock)

    # ------------------------------------------------------------------ knobs
    def set_limits(self, max_inflight_batches: int | None = None,
                   max_pending: int | None = None) -> None:
        """Change the dispatch slots and/or the pending bound (ValueError below 1)."""
        if max_inflight_batches is not None:
            if max_inflight_batches < 1:
                raise ValueError(f"max_inflight_batches must be >= 1, got {max_inflight_batches}")
            self.max_inflight_batches = int(max_inflight_batches)
        if max_pending is not None:
            if max_pending < 1:
                raise ValueError(f"max_pending must be >= 1, got {max_pending}")
            self.max_pending = int(max_pending)
        self._poke()

    def set_config(self, config: PackingConfig) -> None:
        """Switch to new packing knobs: the open batch is closed under the old ones first."""
        self._close_open("flush")
        self.config = config
        self._packer = OnlinePacker(config, clock=self._clock)
        self._poke()

    # ----------------------------------------------------------------- state
    @property
    def pending(self) -> int:
        """Requests submitted and not yet answered."""
        return self._pending

    @property
    def inflight(self) -> int:
        """Plans running now."""
        return self._inflight

    @property
    def queued_plans(self) -> int:
        """Closed plans waiting for a dispatch slot."""
        return len(self._ready)

    # -------------------------------------------------------------- requests
    async def submit(self, features: Features) -> SpanLogits:
        """Logits of one sequence (already validated: 1 <= len <= seq_len).

        Raises :class:`Overloaded` when ``max_pending`` requests are held, ``RuntimeError``
        after :meth:`close`, ``ValueError`` for a length the policy rejects, or the error of
        the plan the sequence ran in.
        """
        fut = self.enqueue(features)
        try:
            return await fut
        finally:
            if not fut.done():  # the caller went away: drop it unless its plan started
                fut.cancel()

    async def submit_many(self, features: Sequence[Features]) -> list[SpanLogits]:
        """Logits of several sequences, in order; admitted together, in order, or none is.

        Raises the first failing sequence's error once all have finished.
        """
        if self._pending + len(features) > self.max_pending:
            raise Overloaded(f"packer holds {self._pending} requests; {len(features)} more "
                             f"would pass max_pending={self.max_pending}")
        futs = [self.enqueue(f) for f in features]
        try:
            outs = await asyncio.gather(*futs, return_exceptions=True)
        finally:
            for fut in futs:
                if not fut.done():
                    fut.cancel()
        for out in outs:
            if isinstance(out, BaseException):
                raise out
        return list(outs)  # type: ignore[arg-type]

    def enqueue(self, features: Features) -> asyncio.Future:
        """Place one sequence now; returns the future of its logits (cancel it to withdraw)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        if self._pending >= self.max_pending:
            raise Overloaded(f"packer holds {self._pending} requests (max_pending="
                             f"{self.max_pending})")
        self._start()
        now = self._clock()
        sid = self._next_id
        closed = self._packer.add(sid, len(features), arrival_s=now)  # may raise ValueError
        self._next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self._requests[sid] = _Request(features, fut, now)
        self._pending += 1
        fut.add_done_callback(self._answered)
        for plan in closed:
            # add() returns the previous batch (no room for sid) and/or sid's batch (full)
            self._ready.append(_Closed(plan, "full" if sid in plan.seq_ids else "no_room"))
        self._poke()
        return fut

    def _answered(self, _fut: asyncio.Future) -> None:
        self._pending -= 1

    # ----------------------------------------------------------------- loop
    def _start(self) -> None:
        if self._loop_task is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _close_open(self, reason: str) -> None:
        plan = self._packer.flush()
        if plan is not None:
            self._ready.append(_Closed(plan, reason))

    async def _run(self) -> None:
        """Dispatch loop: closes overdue batches while a slot is free, starts ready plans."""
        assert self._wake is not None
        while True:
            self._wake.clear()
            if self._inflight < self.max_inflight_batches and not self._ready:
                timed_out = self._packer.poll(self._clock())
                if timed_out is not None:
                    self._ready.append(_Closed(timed_out, "timeout"))
            while self._ready and self._inflight < self.max_inflight_batches:
                self._dispatch(self._ready.popleft())
            if self._closed and not self._ready and self._packer.pending == 0:
                return
            wait = None
            if self._inflight < self.max_inflight_batches and not self._ready:
                wait = self._packer.time_to_deadline(self._clock())
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _dispatch(self, closed: _Closed) -> None:
        """Start one closed plan: drop requests whose caller left, re-plan if any did."""
        plan = closed.plan
        reqs = [self._requests.pop(int(s)) for s in plan.seq_ids]
        live = [r for r in reqs if not r.future.done()]
        self.stats.dropped += len(reqs) - len(live)
        if not live:
            return
        setattr(self.stats, f"closed_{closed.reason}", getattr(self.stats, f"closed_{closed.reason}") + 1)
        plans = [plan] if len(live) == len(reqs) else pack_batch([len(r.features) for r in live],
                                                               self.config)
        for p in plans:
            members = [live[int(k)] for k in p.seq_ids] if p is not plan else reqs
            self._inflight += 1
            self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, self._inflight)
            task = asyncio.get_running_loop().create_task(self._run_plan(p, members))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_plan(self, plan: Plan, members: list[_Request]) -> None:
        t0 = self._clock()
        error: BaseException | None = None
        try:
            outs = await self._execute(plan, [r.features for r in members])
            if len(outs) != len(members):
                raise RuntimeError(f"executor returned {len(outs)} results for "
                                   f"{len(members)} sequences")
        except BaseException as exc:  # noqa: BLE001 - delivered to every caller of the plan
            error = exc
        finally:
            self._inflight -= 1
            self._poke()
        self.stats.plans += 1
        if error is not None:
            self.stats.failed_plans += 1
            if isinstance(error, asyncio.CancelledError):
                error = RuntimeError("batch cancelled")
            for r in members:
                if not r.future.done():
                    r.future.set_exception(error)
        else:
            self.stats.sequences += plan.n_seqs
            self.stats.real_tokens += plan.real_tokens
            self.stats.token_slots += plan.token_slots
            for r, out in zip(members, outs):
                if not r.future.done():
                    r.future.set_result(out)
        if self._on_plan is not None:
            try:
                self._on_plan(plan, self._clock() - t0, error,
                              [t0 - r.arrival_s for r in members])
            except Exception:  # noqa: BLE001 - metrics must never fail requests
                pass

    async def close(self) -> None:
        """Stop taking requests, run everything queued, wait for running plans. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_open("flush")
        if self._loop_task is None:
            return
        self._poke()
        await self._loop_task
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
