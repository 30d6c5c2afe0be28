"""Every error the HTTP app answers, in the one documented shape ``{"error": "<one line>"}``.

:func:`install` puts on a FastAPI app: handlers that turn FastAPI's and Starlette's own errors
(404 unknown route, 405 wrong method, 422 validation, any other ``HTTPException``) into that
shape, and :class:`InternalErrors`, outermost, which turns an exception escaping a route into a
500 whose message names an incident id and nothing of the exception: the cause is logged on
the server under that id (:func:`internal_error` does the same for a caught cause).
"""

from __future__ import annotations

import json
import logging
import uuid
from http import HTTPStatus

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ray.serve")

_MAX_CHARS = 300


def one_line(text: str, limit: int = _MAX_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _incident(what: str, exc: BaseException) -> str:
    """Log ``exc`` (with its traceback) under a new incident id; return the id."""
    incident = uuid.uuid4().hex[:12]
    logger.error(
        "incident %s: %s failed: %s: %s",
        incident,
        what,
        type(exc).__name__,
        one_line(str(exc)),
        exc_info=exc,
    )
    return incident


def internal_error(exc: BaseException, what: str = "the request") -> JSONResponse:
    """A 500 for a server-side failure ``exc``: the client gets ``what`` failed and an incident
    id, the server log gets the exception under that id; nothing of its text is echoed."""
    incident = _incident(what, exc)
    return error_response(500, f"{what} failed (incident {incident}; the server log has the cause)")


def _path(request) -> str:
    return one_line(request.url.path, 100)


DEFAULT_ROUTES = ("POST /v1/answer", "GET /healthz", "GET /v1/stats", "GET /docs")
"""What an unknown route's 404 lists on an app that has not said (:func:`use_routes`)."""


def use_routes(app, routes) -> None:
    """Make an unknown route's 404 on ``app`` list ``routes`` (``"METHOD /path"`` strings: the
    routes of the app's task)."""
    app.state.api_routes = tuple(routes)


async def http_exception(request, exc: StarletteHTTPException) -> JSONResponse:
    """404, 405 and any other ``HTTPException`` as ``{"error": ...}`` (headers kept)."""
    status = exc.status_code
    if status == 404:
        routes = getattr(request.app.state, "api_routes", DEFAULT_ROUTES)
        message = f"no route {request.method} {_path(request)}; the API: {', '.join(routes)}"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow") or "?"
        message = f"method {request.method} not allowed on {_path(request)}; allowed: {allowed}"
    elif isinstance(exc.detail, str) and exc.detail:
        message = exc.detail
    else:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = f"HTTP {status}"
    return error_response(status, message, getattr(exc, "headers", None))


async def validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's request validation error (422) as ``{"error": ...}``: its first problem."""
    errors = exc.errors()
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid request: {where}: {first.get('msg', 'invalid')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
    else:
        message = "invalid request"
    return error_response(422, message)


class InternalErrors:
    """ASGI middleware: an exception escaping the app becomes a JSON 500 naming an incident id
    (the cause goes to the server log); a response already started is left as it is."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - every failure gets the JSON shape
            incident = _incident(f"{scope.get('method', '?')} {scope.get('path', '?')}", exc)
            if started:
                return  # nothing more can be said on this response
            body = json.dumps(
                {"error": f"internal error (incident {incident}; the server log has the cause)"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def install(app) -> None:
    """The error handlers and :class:`InternalErrors` on a FastAPI ``app`` (before it serves;
    install it after other middleware so that it is the outermost)."""
    app.add_exception_handler(StarletteHTTPException, http_exception)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(InternalErrors)
