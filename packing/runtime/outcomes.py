"""One call's results, or the one error every waiter of that call gets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any


async def results_or_error(
    call: Awaitable[Sequence[Any]], n: int, who: str, unit: str
) -> tuple[Sequence[Any] | None, BaseException | None]:
    """Await ``call``: ``(results, None)`` when it returns exactly ``n`` results, else
    ``(None, error)``: its exception; a RuntimeError naming the wrong count ("``who``
    returned 3 results for 4 ``unit``"); or, for a ``CancelledError``, a RuntimeError
    ("``who`` call cancelled"), since a CancelledError must not reach callers waiting on
    these results (Ray Serve's batch handlers let it escape and leave them waiting)."""
    try:
        results = await call
        if len(results) != n:
            raise RuntimeError(f"{who} returned {len(results)} results for {n} {unit}")
    except BaseException as exc:  # noqa: BLE001 - delivered to every waiter of the call
        if isinstance(exc, asyncio.CancelledError):
            return None, RuntimeError(f"{who} call cancelled")
        return None, exc
    return results, None
