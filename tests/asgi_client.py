"""Call an ASGI app in-process, without a server or an HTTP client library (the unit tier has
no ``httpx``, which ``fastapi.testclient`` needs).

Imported as ``from asgi_client import call`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def json(self):
        return json.loads(self.body)


async def call_async(
    app,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    chunks: Sequence[bytes] | None = None,
    receive: Callable[[], Awaitable[dict]] | None = None,
    root_path: str = "",
) -> Reply:
    """One HTTP request through ``app``: ``body`` (or ``chunks``, one message each), or a
    custom ``receive``; returns what the app sent."""
    parts = list(chunks) if chunks is not None else [body]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]

    async def default_receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays; the app must not need more
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }
    await app(scope, receive or default_receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = list(start.get("headers", []))
    return Reply(
        start["status"],
        {k.decode("latin-1"): v.decode("latin-1") for k, v in raw},
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        raw,
    )


def call(app, method: str = "GET", path: str = "/", **kwargs) -> Reply:
    """:func:`call_async` on a fresh event loop."""
    return asyncio.run(call_async(app, method, path, **kwargs))
