"""Admission: when a batch of windows is formed, by Ray Serve ``@serve.batch``'s count rule.

The served ``Packer`` admits windows with ``@serve.batch`` itself (count path only: no
``batch_size_fn``). Ray Serve's decorator runs only inside a replica, so the in-process
online :class:`~packing.runners.pack_runner.PackRunner` admits with :class:`CountAdmission`,
which follows the same rule, so both paths form the same batches:

* a batch opens when a window is taken off the queue, and its timer starts then;
* it closes with ``max_batch_size`` windows, or when ``batch_wait_timeout_s`` has passed
  since it opened (taking every window queued by then, up to ``max_batch_size``);
* at most ``max_concurrent_batches`` batches are handled at once; forming never waits for
  that limit (a formed batch waits for it instead);
* new ``max_batch_size`` / ``batch_wait_timeout_s`` apply from the next batch;
* an exception in the batch handler fails every window of that batch, and admission goes on.

One thing differs, on purpose: where Ray Serve lets a ``CancelledError`` raised by the handler
escape (leaving that batch's callers waiting forever), :class:`CountAdmission` fails them
with a ``RuntimeError``. The packer's handler never raises one (see
:meth:`~packing.runtime.dispatch.Dispatcher.run_batch`), so the two paths agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from packing.policy.checks import finite_at_least, positive_int

from .outcomes import results_or_error

__all__ = ["AdmissionConfig", "CountAdmission", "DEFAULT_ADMISSION", "NeverAdmitted", "Overloaded"]


@dataclass(frozen=True)
class AdmissionConfig:
    """The count path of ``@serve.batch``, validated once.

    Attributes:
        max_batch_size: most windows one admitted batch holds (>= 1); ``None`` stands for the
            packer's ``max_valid_num`` (one full plan), resolved by :meth:`batch_size`.
        batch_wait_timeout_s: longest time a batch stays open after its first window was
            taken (finite, >= 0).
        max_concurrent_batches: admitted batches handled at once (>= 1). A packer's batch is
            handled until all its windows are answered, so this bounds the batches in the
            dispatch step; ``None`` stands for the packer's ``max_pending`` (every batch holds
            a window, so it can never bind first), resolved by :meth:`concurrent_batches`.
    """

    max_batch_size: int | None = None
    batch_wait_timeout_s: float = 0.01
    max_concurrent_batches: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_concurrent_batches"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name), optional=True))
        t = finite_at_least("batch_wait_timeout_s", self.batch_wait_timeout_s, 0)
        object.__setattr__(self, "batch_wait_timeout_s", t)

    def batch_size(self, max_valid_num: int) -> int:
        """``max_batch_size``, or ``max_valid_num`` where it is None."""
        return int(self.max_batch_size or max_valid_num)

    def concurrent_batches(self, max_pending: int) -> int:
        """``max_concurrent_batches``, or ``max_pending`` where it is None."""
        return int(self.max_concurrent_batches or max_pending)


DEFAULT_ADMISSION = AdmissionConfig()
"""The one place the admission defaults are written (the Packer's knobs and the in-process
runner read them from here)."""


class Overloaded(RuntimeError):
    """The packer already holds ``max_pending`` windows; retry later (HTTP 503)."""


class NeverAdmitted(ValueError):
    """A call with more windows than ``max_pending``: no wait can make room for it, so it is
    refused for good (HTTP 413), never as :class:`Overloaded`."""


Handler = Callable[[list[Any]], Awaitable[Sequence[Any]]]
"""``handler(items) -> results``: handle one admitted batch; ``results[k]`` is ``items[k]``'s."""


class CountAdmission:
    """``@serve.batch``'s count path on a plain asyncio loop (see the module docstring).

    ``await submit(item)`` returns ``handler(batch)[k]`` for the batch the item was admitted in.
    Timing uses the running loop's clock (``loop.time()``), so tests can run it on a loop
    with virtual time. Use it from one event loop; :meth:`close` handles what is queued and
    waits for every batch.
    """

    def __init__(
        self,
        handler: Handler,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_concurrent_batches: int = 1 << 30,
    ) -> None:
        AdmissionConfig(max_batch_size, batch_wait_timeout_s, max_concurrent_batches)  # checks
        self._handler = handler
        self.max_batch_size = int(max_batch_size)
        self.batch_wait_timeout_s = float(batch_wait_timeout_s)
        self.max_concurrent_batches = int(max_concurrent_batches)
        self._queue: asyncio.Queue | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.batches = 0  # batches formed so far
        self.items = 0  # items in them

    def set_max_batch_size(self, value: int) -> None:
        """Applies from the next batch (as Ray Serve's setter)."""
        AdmissionConfig(value, self.batch_wait_timeout_s, self.max_concurrent_batches)
        self.max_batch_size = int(value)

    def set_batch_wait_timeout_s(self, value: float) -> None:
        """Applies from the next batch (as Ray Serve's setter)."""
        self.batch_wait_timeout_s = AdmissionConfig(
            self.max_batch_size, value, self.max_concurrent_batches
        ).batch_wait_timeout_s

    async def submit(self, item: Any) -> Any:
        """Queue one item; its result, or the error of its batch. (``admission(item)`` is the
        same call, as with ``@serve.batch``'s wrapper.)"""
        if self._closed:
            raise RuntimeError("admission is closed")
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._semaphore = asyncio.Semaphore(self.max_concurrent_batches)
            self._loop_task = asyncio.get_running_loop().create_task(self._form())
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    __call__ = submit

    async def _form(self) -> None:
        """Form batches: first item, timer, up to max_batch_size (Serve's loop). Ends at the
        close marker, handing over at once the batch it was forming."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        closing = False
        while not closing:
            first = await self._queue.get()
            if first is _CLOSE:
                return
            batch = [first]
            size, timeout = self.max_batch_size, self.batch_wait_timeout_s
            opened = loop.time()
            expired = False
            while len(batch) < size and not closing:
                while len(batch) < size and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is _CLOSE:
                        closing = True
                        break
                    batch.append(item)
                left = opened + timeout - loop.time()
                if closing or len(batch) >= size or expired or left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    expired = True  # take what was queued meanwhile, then close the batch
                    continue
                if item is _CLOSE:
                    closing = True
                else:
                    batch.append(item)
            self.batches += 1
            self.items += len(batch)
            task = loop.create_task(self._handle(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        assert self._semaphore is not None
        async with self._semaphore:
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                return
            results, error = await results_or_error(
                self._handler([item for item, _ in live]), len(live), "batch handler", "items"
            )
            if error is not None:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(error)
                return
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)

    async def close(self) -> None:
        """Stop taking items, hand over everything queued without waiting for timers, wait
        for every batch. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is None:
            return
        assert self._queue is not None
        self._queue.put_nowait(_CLOSE)  # behind every queued item: the forming loop ends there
        await self._loop_task
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


_CLOSE = object()  # queued by close(): the forming loop hands over what it holds and ends
