"""Calls made for many requests at once, detached from the request that happens to make them.

Ray cancels, with a Serve request whose client went away, every call that request made (Ray
core cancels an actor task's child tasks recursively; Serve cancels its children still
waiting for a replica). Both find the parent through context variables that every asyncio
task copies from the code that created it. So a task created while one request runs (a
``@serve.batch`` loop that the first request to reach it starts, a shared packer call, a
plan task) makes its calls as that request's children, and one client leaving cancels them
for everyone (measured: the first client of a new app hung up, and the eight bodies queued
behind it all got 500).

:func:`detached` makes a call in a copy of the current context without a parent request:
Ray core's current async task id and Serve's request ids cleared, everything else kept.
Whoever makes such a call answers for cancelling it (here: ``Packer.withdraw``).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["detached"]


def _forget_parent() -> None:
    """In the current context: no Ray parent task and no Serve parent request."""
    try:
        import ray._raylet as raylet

        raylet.async_task_id.set(None)  # the parent Ray core cancels recursively
    except (ImportError, AttributeError):  # another Ray: nothing of ours to clear
        pass
    try:
        from ray.serve import context as serve_context
    except ImportError:
        return
    request = serve_context._serve_request_context.get()
    if request is not None:  # the parent Serve cancels children pending assignment of
        serve_context._serve_request_context.set(
            dataclasses.replace(
                request,
                request_id="",
                _internal_request_id="",
                cancel_on_parent_request_cancel=False,
            )
        )


def detached(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run in a copy of the current context that has no parent
    request, so Ray never cancels what it starts when some client goes away. A task created
    inside (``asyncio.ensure_future``, a handle's ``.remote()``) keeps that context."""
    ctx = contextvars.copy_context()
    ctx.run(_forget_parent)
    return ctx.run(fn, *args, **kwargs)
