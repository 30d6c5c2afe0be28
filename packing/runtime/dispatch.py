"""The dispatch step behind admission: admitted windows -> plans on free runner slots.

Admission (``@serve.batch`` in the served ``Packer``, :class:`~packing.runtime.admission.
CountAdmission` in-process) hands each batch it forms to :meth:`Dispatcher.run_batch`. The
dispatcher keeps the admitted windows in arrival order and, whenever a slot is free, packs
**everything waiting** with the one packing policy, :func:`packing.policy.collate.collate`,
and starts the plans that the free slots can take:

* **Under load nothing collapses.** While every slot is busy, admitted batches keep
  arriving (admission never waits for the runners) and wait here; the plan that starts when
  a slot frees holds all of them, up to ``max_valid_num`` windows and the token budget.
  Small admitted batches therefore never become small plans while work is waiting.
* **Light load adds no delay.** A batch that finds a free slot is packed and started at
  once: admission's timer already gave it its chance to fill.
* **Results go back by index.** Each window gets exactly its own logits, or the error of the
  plan it ran in. A window whose caller went away before its plan started is dropped (the
  rest are re-packed without it). A failing collate fails the windows it was packing;
  nothing waits forever.

``dispatch="per_batch"`` turns merging off: each admitted batch is packed on its own and its
plans wait for slots in order, which is what a plain ``@serve.batch`` batch function does.
It exists to measure what merging buys (``docs``: the overload run); do not serve with it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from packing.policy.collate import collate
from packing.policy.config import PackingConfig
from packing.policy.plans import Plan

from .features import Features, Result
from .outcomes import results_or_error

__all__ = [
    "DEFAULT_DISPATCH",
    "DISPATCH",
    "Dispatcher",
    "DispatchStats",
    "Execute",
    "Pending",
    "admit_windows",
]

DISPATCH: tuple[str, ...] = ("merge", "per_batch")
"""``merge``: pack everything waiting into the next plan; ``per_batch``: each admitted batch
alone (a plain ``@serve.batch`` batch function; for comparison only)."""

DEFAULT_DISPATCH = "merge"
"""The dispatch used where none is named (the served Packer's and
:class:`~packing.runners.pack_runner.PackRunner`'s)."""

Execute = Callable[[Plan, list[Features]], Awaitable[Sequence[Result]]]
"""``execute(plan, features) -> results``: run one plan; ``features[k]`` is the plan's k-th
sequence and ``results[k]`` its result (span logits, or a pooled vector for embed and
classify folders)."""

Collate = Callable[[Sequence[int], PackingConfig], list[Plan]]
"""The packing policy: window lengths in arrival order -> plans (see
:func:`packing.policy.collate.collate`)."""


@dataclass(eq=False)
class Pending:
    """One submitted window not yet answered, on its way through admission and dispatch (the
    served Packer's or the in-process PackRunner's). Any sequence the packer takes: not
    :class:`packing.qa.windows.Window`, the SQuAD context window of a question, whose tokens
    it may carry."""

    features: Features  # validated token ids of the window (1 <= length <= seq_len)
    future: asyncio.Future  # its Result or its plan's error; the caller cancels it to withdraw
    submitted_s: float  # time.monotonic() when the caller submitted it (before admission)


@dataclass
class DispatchStats:
    """Cumulative counters of what the dispatcher did (``/v1/stats``, benchmarks)."""

    admitted_batches: int = 0  # batches handed over by admission
    admitted_windows: int = 0  # windows in them
    plans: int = 0  # plans started
    failed_plans: int = 0  # plans whose execution raised or returned the wrong count
    sequences: int = 0  # windows answered by successful plans
    real_tokens: int = 0  # their tokens
    token_slots: int = 0  # token positions their plans' dense layers computed
    dropped: int = 0  # windows dropped because their caller went away before their plan started
    discarded: int = 0  # windows computed by a plan after their caller went away (results unused)
    full_plans: int = 0  # plans holding max_valid_num windows
    budget_plans: int = 0  # plans closed because the next window did not fit the token budget
    rest_plans: int = 0  # plans holding the rest of what was waiting
    merged_plans: int = 0  # plans holding windows of more than one admitted batch
    max_inflight_seen: int = 0  # most plans that ran at once
    slots_full: int = 0  # dispatch steps that left admitted windows waiting with every slot busy

    @property
    def mean_sequences(self) -> float:
        """Windows per successful plan."""
        ok = self.plans - self.failed_plans
        return self.sequences / ok if ok else 0.0

    @property
    def mean_admitted(self) -> float:
        """Windows per admitted batch."""
        return self.admitted_windows / self.admitted_batches if self.admitted_batches else 0.0

    @property
    def efficiency(self) -> float:
        """real_tokens / token_slots of successful plans (1.0 = no padding computed)."""
        return self.real_tokens / self.token_slots if self.token_slots else 0.0

    def as_dict(self) -> dict:
        """Plain dict of every counter plus the derived ratios."""
        out = dict(self.__dict__)
        out.update(
            mean_sequences=self.mean_sequences,
            mean_admitted=self.mean_admitted,
            efficiency=self.efficiency,
        )
        return out


@dataclass(eq=False)
class _Waiting:
    """An admitted window in the dispatcher, with the admitted batch it came in."""

    window: Pending
    batch: int  # number of the admitted batch it came in


class Dispatcher:
    """Packs admitted windows into plans and runs them on at most ``slots`` at once.

    Args:
        config: the packing policy's knobs (mode, heuristic, sizes, token budget).
        execute: runs one plan (see :data:`Execute`); may raise, failing that plan's windows.
        slots: plans allowed to run at once (>= 1; the served packer follows runner replicas
            x their ``max_ongoing_requests``).
        dispatch: ``"merge"`` or ``"per_batch"`` (see :data:`DISPATCH`).
        on_plan: optional ``on_plan(plan, seconds, error, waits)`` after every plan (metrics):
            its run time, its error or None, and each window's wait from submission to start.
        collate: the packing policy (injectable to test a failing one).
        on_drop: optional ``on_drop(dropped, discarded)`` whenever windows whose callers went
            away are dropped before their plan started (never computed) or discarded after
            it ran (metrics; the totals are in :attr:`stats`).

    Use from one event loop; every method but :meth:`run_batch` and :meth:`close` is
    non-blocking.
    """

    def __init__(
        self,
        config: PackingConfig,
        execute: Execute,
        slots: int = 1,
        dispatch: str = DEFAULT_DISPATCH,
        on_plan: Callable[[Plan, float, BaseException | None, list[float]], None] | None = None,
        collate: Collate = collate,
        on_drop: Callable[[int, int], None] | None = None,
    ) -> None:
        self._execute = execute
        self._on_plan = on_plan
        self._on_drop = on_drop
        self._collate = collate
        self.stats = DispatchStats()
        self._waiting: deque[_Waiting] = deque()  # merge: admitted windows, in arrival order
        self._ready: deque[tuple[Plan, list[_Waiting], str]] = deque()  # per_batch: plans
        self._inflight = 0
        self._running_windows = 0
        self._running_tokens = 0
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.slots = 1
        self.set_slots(slots)
        self.config = config
        self.dispatch = DEFAULT_DISPATCH
        self.set_dispatch(dispatch)

    # ------------------------------------------------------------------ knobs
    def set_slots(self, slots: int) -> None:
        """Plans allowed to run at once (ValueError below 1); starts plans if slots opened."""
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, got {slots!r}")
        self.slots = slots
        self._pump()

    def set_config(self, config: PackingConfig) -> None:
        """New packing knobs; they apply to every plan packed from now on."""
        self.config = config

    def set_dispatch(self, dispatch: str) -> None:
        """``merge`` or ``per_batch``; applies to batches admitted from now on."""
        if dispatch not in DISPATCH:
            raise ValueError(f"dispatch must be one of {DISPATCH}, got {dispatch!r}")
        self.dispatch = dispatch

    # ----------------------------------------------------------------- state
    @property
    def inflight(self) -> int:
        """Plans running now."""
        return self._inflight

    @property
    def waiting(self) -> int:
        """Admitted windows not yet in a started plan (a window whose caller went away counts
        until the dispatch step reaches it and drops it)."""
        return len(self._waiting) + sum(len(m) for _, m, _ in self._ready)

    @property
    def running_windows(self) -> int:
        """Windows in the plans running now."""
        return self._running_windows

    @property
    def running_tokens(self) -> int:
        """Real tokens of the windows in the plans running now."""
        return self._running_tokens

    def plans_for(self, windows: int, tokens: int) -> int:
        """Plans that ``windows`` windows of ``tokens`` real tokens need at least, under the
        current knobs (a lower bound: packing never does better than this)."""
        if windows <= 0:
            return 0
        c = self.config
        return max(math.ceil(windows / c.max_valid_num), math.ceil(tokens / c.capacity_tokens))

    # ---------------------------------------------------------------- batches
    async def run_batch(self, windows: Sequence[Pending]) -> list[Result | BaseException]:
        """The batch function behind admission: hand one admitted batch over, wait for it.

        Returns, per window, its result or the exception it got (never raises, and in
        particular never lets a ``CancelledError`` out, which would leave ``@serve.batch``'s
        callers waiting; if the task running it is cancelled, the batch's windows fail with a
        RuntimeError and a RuntimeError is raised for admission to deliver).
        """
        self.add(windows)
        try:
            # asyncio.wait, not gather: cancelling this task must not cancel the windows.
            await asyncio.wait([w.future for w in windows])
        except asyncio.CancelledError:
            error = RuntimeError("packer batch cancelled")
            for w in windows:
                if not w.future.done():
                    w.future.set_exception(error)
            raise error from None
        return [
            (w.future.exception() or w.future.result())
            if not w.future.cancelled()
            else asyncio.CancelledError()
            for w in windows
        ]

    def add(self, windows: Sequence[Pending]) -> None:
        """Admit one batch of windows (in arrival order) and start what free slots take."""
        if self._closed:
            error = RuntimeError("dispatcher is closed")
            for w in windows:
                if not w.future.done():
                    w.future.set_exception(error)
            return
        self.stats.admitted_batches += 1
        self.stats.admitted_windows += len(windows)
        number = self.stats.admitted_batches
        waiting = [_Waiting(w, number) for w in windows]
        if self.dispatch == "merge":
            self._waiting.extend(waiting)
        else:
            self._ready.extend(self._pack(waiting))
        self._pump()

    # ---------------------------------------------------------------- dispatch
    def _pack(
        self, waiting: Sequence[_Waiting], max_plans: int | None = None
    ) -> list[tuple[Plan, list[_Waiting], str]]:
        """Plans for ``waiting`` (arrival order), each with its members and why it closed;
        with ``max_plans``, the first plans only, covering a prefix of ``waiting``.

        A failing collate fails those windows (and returns no plans)."""
        try:
            plans = self._collate([len(x.window.features) for x in waiting], self.config, max_plans)
            picked = [[waiting[int(k)] for k in p.seq_ids] for p in plans]
            covered = sum(len(m) for m in picked)
            if sorted(int(k) for p in plans for k in p.seq_ids) != list(range(covered)) or (
                covered != len(waiting) and (max_plans is None or not plans)
            ):
                raise RuntimeError("collate did not place every window exactly once, in order")
        except Exception as exc:  # noqa: BLE001 - delivered to the windows it was packing
            for x in waiting:
                if not x.window.future.done():
                    x.window.future.set_exception(exc)
            return []
        out = []
        for k, (plan, members) in enumerate(zip(plans, picked)):
            last = k == len(plans) - 1 and covered == len(waiting)
            why = (
                "full" if plan.n_seqs >= self.config.max_valid_num else "rest" if last else "budget"
            )
            out.append((plan, members, why))
        return out

    def _pump(self) -> None:
        """Start plans while a slot is free and windows wait (older per-batch plans first)."""
        while self._ready and self._inflight < self.slots:
            plan, members, why = self._ready.popleft()
            live = [x for x in members if not x.window.future.done()]
            self._dropped(len(members) - len(live), 0)
            if len(live) == len(members):
                self._start(plan, members, why)
            elif live:  # re-packed without the windows whose callers left
                self._ready.extendleft(reversed(self._pack(live)))
        while self._waiting and self._inflight < self.slots:
            free = self.slots - self._inflight
            # The free slots take at most free x max_valid_num windows, and the next one
            # decides where the last plan closes: pack that prefix of the arrival order, not
            # everything waiting (collate's first plans depend on nothing after it), so a
            # plan costs the dispatch step its own size however long the queue is.
            need = free * self.config.max_valid_num + 1
            live: list[_Waiting] = []
            while self._waiting and len(live) < need:
                x = self._waiting.popleft()
                if x.window.future.done():  # its caller went away before it started
                    self._dropped(1, 0)
                else:
                    live.append(x)
            start = self._pack(live, max_plans=free)  # a failing collate failed ``live``
            # What the free slots cannot take waits, in arrival order, to be packed again
            # (with whatever arrives meanwhile) when the next slot frees.
            self._waiting.extendleft(
                reversed(live[sum(len(m) for _, m, _ in start) :]) if start else ()
            )
            for plan, members, why in start:
                self._start(plan, members, why)
        if (self._waiting or self._ready) and self._inflight >= self.slots:
            self.stats.slots_full += 1

    def _dropped(self, dropped: int, discarded: int) -> None:
        """Count windows of callers that went away: ``dropped`` before their plan started,
        ``discarded`` after it ran."""
        if not dropped and not discarded:
            return
        self.stats.dropped += dropped
        self.stats.discarded += discarded
        if self._on_drop is not None:
            try:
                self._on_drop(dropped, discarded)
            except Exception:  # noqa: BLE001 - metrics must never fail requests
                pass

    def _start(self, plan: Plan, members: list[_Waiting], why: str) -> None:
        self._inflight += 1
        self._running_windows += len(members)
        self._running_tokens += plan.real_tokens
        s = self.stats
        s.plans += 1
        s.max_inflight_seen = max(s.max_inflight_seen, self._inflight)
        setattr(s, f"{why}_plans", getattr(s, f"{why}_plans") + 1)
        if len({x.batch for x in members}) > 1:
            s.merged_plans += 1
        task = asyncio.get_running_loop().create_task(self._run(plan, members))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, plan: Plan, members: list[_Waiting]) -> None:
        t0 = time.monotonic()
        windows = [x.window for x in members]
        outs, error = await results_or_error(
            self._execute(plan, [w.features for w in windows]),
            len(windows),
            "executor",
            "sequences",
        )
        self._inflight -= 1
        self._running_windows -= len(windows)
        self._running_tokens -= plan.real_tokens
        if error is not None:
            self.stats.failed_plans += 1
            for w in windows:
                if not w.future.done():
                    w.future.set_exception(error)
        else:
            self.stats.sequences += plan.n_seqs
            self.stats.real_tokens += plan.real_tokens
            self.stats.token_slots += plan.token_slots
            gone = 0
            for w, out in zip(windows, outs):
                if w.future.done():  # its caller went away while the plan ran
                    gone += 1
                else:
                    w.future.set_result(out)
            self._dropped(0, gone)
        if self._on_plan is not None:
            try:
                self._on_plan(
                    plan, time.monotonic() - t0, error, [t0 - w.submitted_s for w in windows]
                )
            except Exception:  # noqa: BLE001 - metrics must never fail requests
                pass
        self._pump()

    async def close(self) -> None:
        """Stop taking batches; run what waits (within the slots), wait for every plan."""
        self._closed = True
        while self._tasks or self._waiting or self._ready:
            if not self._tasks:  # nothing running: what waits can start now
                self._pump()
                if not self._tasks:
                    break
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def admit_windows(
    admit: Callable[[Pending], Awaitable],
    features: Sequence[Features],
    on_windows: Callable[[list[Pending]], None] | None = None,
) -> list[Result | None]:
    """Logits of ``features`` (validated windows), each admitted as one item by
    ``admit(window)`` (``@serve.batch``'s wrapper, or :meth:`CountAdmission.submit`), in order.

    Each window's result comes from its own plan as soon as that plan ends (not when the
    whole admitted batch does). Raises, once every window has finished, the first failing
    window's error; an error of admission itself (the batch function raised) is that
    window's error. If the caller goes away, windows whose plans have not started are
    withdrawn.

    ``on_windows(windows)`` is called with the windows before any is admitted: whoever
    holds them may withdraw some by cancelling their futures (:meth:`Packer.withdraw`: the
    client of part of a shared call went away). A withdrawn window is never computed if its
    plan had not started; its result is ``None`` either way."""
    loop, now = asyncio.get_running_loop(), time.monotonic()
    windows = [Pending(f, loop.create_future(), now) for f in features]
    if on_windows is not None:
        on_windows(windows)
    # One task per item, created in order: each queues its item in its first step, and tasks
    # take their first step in creation order.
    admitted = [asyncio.ensure_future(admit(w)) for w in windows]
    for w, task in zip(windows, admitted):
        task.add_done_callback(functools.partial(_fail_unless_answered, w.future))
    try:
        outs = await asyncio.gather(*(w.future for w in windows), return_exceptions=True)
    finally:
        for w in windows:  # the caller went away: withdraw what has not started
            if not w.future.done():
                w.future.cancel()
        for task in admitted:
            if not task.done():
                task.cancel()
    for w, out in zip(windows, outs):
        if isinstance(out, BaseException) and not w.future.cancelled():
            raise out
    return [None if w.future.cancelled() else out for w, out in zip(windows, outs)]


def _fail_unless_answered(window: asyncio.Future, admitted: asyncio.Task) -> None:
    """Done-callback of a window's admission call: if admission ended (its batch function
    raised, or admission itself did) before the window was answered, the window gets that
    error, so it never waits forever."""
    if window.done() or admitted.cancelled():
        return
    error = admitted.exception()
    window.set_exception(error or RuntimeError("admitted batch ended without this window's result"))
