"""One packer call shared by the bodies tokenized together, and what happens when one leaves.

The Ingress sends the windows of every body of one tokenizer batch to the Packer in one
``many`` handle call (one call instead of one per body). Each body then waits for its slice
of the result. A body whose client goes away (it disconnected, or its deadline passed) must
not leave its windows to be computed for nobody, nor cancel the windows of the others:

* its slice is withdrawn (``Packer.withdraw``): windows whose plan has not started are never
  computed, the others' results are discarded. When the last body leaves, the call returns
  (all ``None``) as soon as its running plans end.

Withdrawal is the Packer's own bookkeeping, not a cancellation of the Ray call: cancelling a
Serve request cancels, through Ray, the calls made while it ran, and the packer makes its plan
calls for windows of many callers at once (one caller leaving must never fail a plan that
carries another's windows). For the same reason the call and its withdrawals are made
:func:`~deployments.detach.detached` from the request of the body that starts them.

A plan already running on a device finishes; the Packer counts what it dropped and
discarded (``/v1/stats``: ``dropped``, ``discarded``; metrics ``packed_bert_windows_*``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from .detach import detached
from .retry import retry_replica_lost

__all__ = ["CallGatherer", "PackerCall", "PackerCallCancelled", "share_calls"]


class PackerCallCancelled(RuntimeError):
    """The shared packer call was cancelled while a body still waited for it."""


def _retrieve(task: asyncio.Future) -> None:
    """Done-callback: fetch a task's outcome so an error nobody awaits is not logged."""
    if not task.cancelled():
        task.exception()


class PackerCall:
    """``packer.many(features, call_id)`` for the windows of ``bodies`` bodies, started now.

    ``packer`` is the Packer's deployment handle (anything with ``many.remote`` and
    ``withdraw.remote`` returning awaitables; ``many``'s has ``cancel()``). Use from one
    event loop.
    """

    def __init__(self, packer: Any, features: Sequence[Any], bodies: int) -> None:
        if bodies < 1:
            raise ValueError(f"a packer call needs at least one body, got {bodies}")
        self.packer = packer
        self.call_id = uuid.uuid4().hex
        self.waiting = bodies  # bodies that have not left
        self.withdrawn = 0  # windows withdrawn by bodies that left
        self._features = list(features)
        # detached: not a child of the request of whichever body happened to start it
        self.task = detached(asyncio.ensure_future, retry_replica_lost(self._send))
        self.task.add_done_callback(_retrieve)  # every waiter may be gone

    def _send(self) -> Any:
        return self.packer.many.remote(self._features, self.call_id)

    async def result(self, offset: int, count: int) -> list:
        """The results of windows ``offset:offset + count`` (one body's), or the call's error.

        If the awaiting task is cancelled (the body's client went away), the body leaves:
        see the module docstring. ``CancelledError`` is raised as usual. If the shared call
        itself is cancelled while the body waits, raises :class:`PackerCallCancelled`."""
        try:
            # shield: one body leaving must not cancel the call the others wait for
            out = await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if not self.task.done():
                self.leave(offset, count)
            elif self.task.cancelled() and not asyncio.current_task().cancelling():
                # the shared call was cancelled under this body, which is still waiting:
                # an error of the server, answered as one (never a bare cancellation)
                raise PackerCallCancelled("the packer call of this body was cancelled") from None
            raise
        return list(out[offset : offset + count])

    def leave(self, offset: int, count: int) -> None:
        """A body stops waiting for windows ``offset:offset + count``: withdraw them from the
        packer. Never raises, never blocks."""
        self.waiting -= 1
        if self.task.done():
            return
        self.withdrawn += count
        task = detached(asyncio.ensure_future, self._withdraw(offset, count))
        task.add_done_callback(_retrieve)

    async def _withdraw(self, offset: int, count: int) -> Any:
        return await self.packer.withdraw.remote(self.call_id, offset, offset + count)


def share_calls(
    packer: Any, bodies: Sequence[Sequence[Any] | None], max_per_call: int
) -> list[tuple[PackerCall, int] | None]:
    """Start the packer calls (:class:`PackerCall`) for the sequences of ``bodies`` (one list
    per body, ``None`` for a body not to send), as few as ``max_per_call`` sequences per call
    allow: bodies share a call in order, and a new one starts where the next body would take
    it past ``max_per_call`` (a body over the limit alone gets a call of its own).

    Returns, per body, its call and the offset of its first sequence there (what it passes to
    :meth:`PackerCall.result` or :meth:`PackerCall.leave`), ``None`` for a body not sent. The
    one grouping of the QA route's tokenizer batches (``Ingress._submit``) and of
    :class:`CallGatherer`. Call from the event loop that awaits the calls."""
    if max_per_call < 1:
        raise ValueError(f"max_per_call must be >= 1, got {max_per_call}")
    placed: list[tuple[PackerCall, int] | None] = [None] * len(bodies)
    group: list[int] = []  # bodies of the call being formed
    offsets: list[int] = []
    features: list = []

    def send() -> None:
        call = PackerCall(packer, features, len(group))
        for k, offset in zip(group, offsets):
            placed[k] = (call, offset)

    for k, mine in enumerate(bodies):
        if mine is None:
            continue
        if group and len(features) + len(mine) > max_per_call:
            send()
            group, offsets, features = [], [], []
        group.append(k)
        offsets.append(len(features))
        features.extend(mine)
    if group:
        send()
    return placed


class CallGatherer:
    """Bodies that reach :meth:`run` in the same event-loop turn share one :class:`PackerCall`
    (one handle call instead of one per body), split where a call would pass
    ``max_per_call`` sequences (:func:`share_calls`, as the QA route's tokenizer batches).
    For routes that tokenize each body on its own. Use from one event loop."""

    def __init__(self, packer: Any, max_per_call: int) -> None:
        if max_per_call < 1:
            raise ValueError(f"max_per_call must be >= 1, got {max_per_call}")
        self.packer = packer
        self.max_per_call = max_per_call
        self.calls = 0  # packer calls made (for tests and stats)
        self._queue: list[tuple[list, asyncio.Future]] = []

    async def run(self, features: Sequence[Any]) -> list:
        """The packer's results of ``features`` (one body's sequences), in order, or the
        call's error. Cancelled before its turn ends, the body is never sent; after, it
        leaves its call (:meth:`PackerCall.result`)."""
        loop = asyncio.get_running_loop()
        joined: asyncio.Future = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((list(features), joined))
        call, offset = await joined
        return await call.result(offset, len(features))

    def _flush(self) -> None:
        """Send every body queued in this turn (those still waiting: a body whose caller went
        away is never sent) with :func:`share_calls`."""
        queued, self._queue = self._queue, []
        live = [(mine, joined) for mine, joined in queued if not joined.done()]
        placed = share_calls(self.packer, [mine for mine, _ in live], self.max_per_call)
        self.calls += len({where[0] for where in placed if where is not None})
        for (_, joined), where in zip(live, placed):
            joined.set_result(where)
