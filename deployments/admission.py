"""Batch-aware admission in front of ``@serve.batch``'s queue.

Serve forms the next batch eagerly, from whatever is queued, as soon as it has formed the
previous one, and only then waits for a free batch slot. Left alone under load, the few
requests that did not fit the last batch become a small batch of their own, which then waits
for a slot while a full batch could have been gathered (measured on bert-base: ~3 sequences a
batch under a load that fills 25), and ``batch_size_fn`` pushes a request that does not fit to
the back of the queue.

:class:`BatchGate` therefore lets requests into Serve's queue only while a batch slot is free,
and at most one batch budget of them: requests wait here, in arrival order, while
``max_running`` batches run. A batch that forms is then as full as the traffic allows, the
next one forms while the current one runs, and Serve's queue never holds more than fits.
"""

from __future__ import annotations

import asyncio
from collections import deque


class BatchGate:
    """FIFO admission of costed items: one batch budget at a time, while a slot is free."""

    def __init__(self, budget: int, max_running: int) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        self.max_running = max_running
        self.budget = 1
        self.set_budget(budget)
        self.queued = 0  # cost admitted into Serve's queue, not yet in a running batch
        self.running = 0  # batches running now
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    @property
    def waiting(self) -> int:
        """Items waiting to be admitted."""
        return len(self._waiters)

    def set_budget(self, budget: int) -> None:
        """Change the batch budget (a reconfigure); admits waiters that now fit."""
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.budget = budget
        if hasattr(self, "_waiters"):
            self._wake()

    async def enter(self, cost: int) -> None:
        """Wait until this item may join Serve's queue; items are admitted in arrival order."""
        if not self._waiters and self._fits(cost):
            self.queued += cost
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (cost, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.withdraw(cost)  # admitted just as the caller went away
            else:
                self._waiters.remove(entry)
                self._wake()
            raise

    def withdraw(self, cost: int) -> None:
        """An admitted item left before its batch started."""
        self.queued = max(0, self.queued - cost)
        self._wake()

    def batch_started(self, cost: int) -> None:
        """A batch holding admitted items of total ``cost`` started running."""
        self.queued = max(0, self.queued - cost)
        self.running += 1

    def batch_finished(self) -> None:
        """A batch finished (answered or failed): its slot is free again."""
        self.running = max(0, self.running - 1)
        self._wake()

    def _fits(self, cost: int) -> bool:
        if self.running >= self.max_running:
            return False
        return self.queued == 0 or self.queued + cost <= self.budget

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            cost, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.queued += cost
            fut.set_result(None)
