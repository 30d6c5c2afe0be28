"""Reading a request body within a size and a time limit.

A client that sends its body slowly holds one of the Ingress's ``max_inflight_requests``
slots while it does; :func:`read_body` gives up after ``timeout_s`` (408), so slow clients
cannot hold every slot for longer than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class BodyError(Exception):
    """The body cannot be taken: ``status`` (408 or 413) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(chunks: AsyncIterator[bytes], limit: int, timeout_s: float) -> bytes:
    """The bytes of ``chunks`` (e.g. ``request.stream()``), or :class:`BodyError`: 413 once
    they exceed ``limit`` bytes, 408 when they have not all arrived ``timeout_s`` seconds
    after the call."""

    async def take() -> bytes:
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise BodyError(413, f"body is over {limit} bytes")
        return bytes(body)

    try:
        return await asyncio.wait_for(take(), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise BodyError(
            408,
            f"body not received within {timeout_s:g} s "
            "(body_read_timeout_s); send it faster or smaller",
        ) from None
