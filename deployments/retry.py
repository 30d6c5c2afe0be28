"""Retry of side-effect-free handle calls whose replica died under them.

Packer and PlanExecutor calls only compute (no state changes), so a call lost with its replica
(``ActorDiedError``, or ``ActorUnavailableError``: "may or may not have been executed") is
safe to send again; Serve routes the retry to a live or replacement replica. Every other
error passes through at once. The caller's own deadline bounds the total wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.exceptions import ActorDiedError, ActorUnavailableError

T = TypeVar("T")

REPLICA_LOST = (ActorDiedError, ActorUnavailableError)


async def retry_replica_lost(
    call: Callable[[], Awaitable[T]], attempts: int = 4, first_delay_s: float = 0.1
) -> T:
    """``await call()``, sent again (up to ``attempts`` in all, doubling the pause from
    ``first_delay_s``) while it fails because its replica was lost; the last error is raised."""
    for attempt in range(attempts):
        try:
            return await call()
        except REPLICA_LOST:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(first_delay_s * 2**attempt)
    raise AssertionError("unreachable")
