"""Every error of the HTTP app in the one shape ``{"error": ...}``: FastAPI's own (404, 405,
422), exceptions escaping a route (500, no internal text), the body read limits (408, 413),
and the Ingress's request path on long and malformed bodies, all without Ray."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, HTTPException
from starlette.requests import Request

from deployments import errors
from deployments.body import BodyError, read_body
from packing.qa.requests import Limits

from asgi_client import call

SECRET = "/srv/internal/path secret-detail 0xdeadbeef"


@pytest.fixture
def server_log():
    """What the app logs on ``ray.serve`` (a handler of its own: Ray may stop that logger
    from propagating to pytest's capture)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("ray.serve")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def error_app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/items/{n}")
    async def item(n: int):
        return {"n": n}

    @app.post("/v1/answer")
    async def answer():
        return {"ok": True}

    @app.get("/boom")
    async def boom():
        raise RuntimeError(SECRET)

    @app.get("/teapot")
    async def teapot():
        raise HTTPException(418, "short and stout")

    @app.get("/bare")
    async def bare():
        raise HTTPException(409)

    return app


def one_error(r, status: int) -> str:
    assert r.status == status, (r.status, r.body)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    assert r.headers["content-type"].startswith("application/json")
    return body["error"]


def test_unknown_route_and_wrong_method():
    app = error_app()
    message = one_error(call(app, "GET", "/nope"), 404)
    assert "GET /nope" in message and "/v1/answer" in message
    r = call(app, "GET", "/v1/answer")
    assert "allowed: POST" in one_error(r, 405) and r.headers["allow"] == "POST"
    one_error(call(app, "DELETE", "/items/3"), 405)
    assert "x" * 200 not in one_error(call(app, "GET", "/" + "x" * 5000), 404)


def test_validation_error_is_422_in_the_shape():
    message = one_error(call(error_app(), "GET", "/items/abc"), 422)
    assert message.startswith("invalid request: path.n:")


def test_other_http_exceptions_keep_their_status_and_detail():
    assert one_error(call(error_app(), "GET", "/teapot"), 418) == "short and stout"
    assert one_error(call(error_app(), "GET", "/bare"), 409) == "Conflict"


def test_an_escaping_exception_is_a_500_naming_an_incident_not_the_cause(server_log):
    message = one_error(call(error_app(), "GET", "/boom"), 500)
    assert SECRET not in message and "RuntimeError" not in message
    incident = message.split("incident ")[1].split(";")[0]
    assert len(incident) == 12
    logged = [r for r in server_log if incident in r.getMessage()]
    assert logged and SECRET in logged[0].getMessage() and logged[0].exc_info


def test_internal_error_response_does_not_echo(server_log):
    response = errors.internal_error(ValueError(SECRET), "the model call")
    body = json.loads(response.body)
    assert response.status_code == 500 and set(body) == {"error"}
    assert body["error"].startswith("the model call failed (incident ")
    assert SECRET not in body["error"] and any(SECRET in r.getMessage() for r in server_log)


def test_the_ingress_app_answers_unknown_routes_in_the_shape():
    from deployments import ingress

    one_error(call(ingress.api, "GET", "/nope"), 404)
    assert "POST" in one_error(call(ingress.api, "GET", "/v1/answer"), 405)
    one_error(call(ingress.api, "PUT", "/healthz"), 405)
    one_error(call(ingress.api, "POST", "/v1/stats"), 405)
    document = ingress.api.openapi()["paths"]["/v1/answer"]["post"]["responses"]
    assert {"401", "408", "413", "500"} <= set(document)


# --- reading the body -------------------------------------------------------------------------


async def chunks_of(*parts: bytes, stall: bool = False):
    for part in parts:
        yield part
    if stall:
        await asyncio.Event().wait()  # a client that never sends the rest


def test_read_body_takes_the_chunks_within_the_limits():
    assert asyncio.run(read_body(chunks_of(b"ab", b"", b"cd"), 4, 5.0)) == b"abcd"
    with pytest.raises(BodyError) as info:
        asyncio.run(read_body(chunks_of(b"ab", b"cde"), 4, 5.0))
    assert info.value.status == 413 and "over 4 bytes" in str(info.value)


@pytest.mark.parametrize("timeout_s", [0, 0.01])
def test_a_body_that_does_not_arrive_in_time_is_408(timeout_s):
    with pytest.raises(BodyError) as info:
        asyncio.run(read_body(chunks_of(b'{"question": ', stall=True), 1000, timeout_s))
    assert info.value.status == 408 and "body_read_timeout_s" in str(info.value)


# --- the Ingress request path, without Ray ----------------------------------------------------


def ingress_checked(
    body: bytes | None = None,
    *,
    stall: bool = False,
    answer=None,
    timeout_s: float = 5.0,
    limits: Limits = Limits(),
):
    """Status and JSON of ``Ingress._checked`` on one POST (a stand-in for the replica: its
    limits, deadlines and an ``_answer_all`` that answers or raises)."""
    from deployments.ingress import Ingress

    async def answer_all(reqs, is_list):
        if answer is not None:
            raise answer
        return [{"answer": r.question} for r in reqs]

    fake = SimpleNamespace(
        limits=limits, deadline_s=5.0, body_read_timeout_s=timeout_s, _answer_all=answer_all
    )
    sent = [] if body is None else [body]

    async def receive():
        if sent:
            return {"type": "http.request", "body": sent.pop(), "more_body": stall}
        await asyncio.Event().wait()

    async def run():
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/answer",
            "headers": [(b"content-type", b"application/json")],
        }
        response = await Ingress.func_or_class._checked(fake, Request(scope, receive))
        return response.status_code, json.loads(response.body)

    return asyncio.run(run())


def test_ingress_answers_a_good_body():
    assert ingress_checked(b'{"question": "q", "context": "c"}') == (200, {"answer": "q"})


def test_ingress_slow_upload_is_408():
    status, body = ingress_checked(b'{"question": "q", ', stall=True, timeout_s=0.01)
    assert status == 408 and "body_read_timeout_s" in body["error"]


def test_ingress_500_does_not_echo_the_cause(server_log):
    status, body = ingress_checked(
        b'{"question": "q", "context": "c"}', answer=RuntimeError(SECRET)
    )
    assert status == 500 and SECRET not in body["error"] and "RuntimeError" not in body["error"]
    assert "incident" in body["error"] and any(SECRET in r.getMessage() for r in server_log)


LONG = 1_000_000


@pytest.mark.parametrize(
    "name, body, status, fragment",
    [
        (
            "huge integer",
            b'{"question": ' + b"9" * 5000 + b', "context": "c"}',
            400,
            "JSON number of 5000 characters",
        ),
        (
            "integer just over Python's 4300 digits, in a list",
            b'[{"question": "q", "context": "c"}, ' + b"1" * 4301 + b"]",
            400,
            "JSON number",
        ),
        (
            "long float",
            b'{"question": 1.' + b"5" * 900_000 + b', "context": "c"}',
            400,
            "JSON number",
        ),
        (
            "long negative exponent",
            b'{"question": 1e-' + b"9" * 200 + b', "context": "c"}',
            400,
            "JSON number",
        ),
        (
            "1 MB of punctuation in a context",
            b'{"question": "q", "context": "' + b"!" * (LONG - 40) + b'"}',
            400,
            "at most 100000 allowed",
        ),
        ("1 MB of punctuation, not JSON", b"!" * LONG, 400, "not valid JSON"),
        (
            "a body over the limit",
            b'{"question": "q", "context": "' + b"?" * LONG + b'"}',
            413,
            "over 1000000 bytes",
        ),
        (
            "duplicate key",
            b'{"question": "q", "context": "c", "question": "r"}',
            400,
            "'question' twice",
        ),
        (
            "duplicate key in a list item",
            b'[{"question": "q", "context": "c"}, {"context": "a", "context": "b"}]',
            400,
            "'context' twice",
        ),
        (
            "nesting at the limit of the valid shape",
            b"[[" + b'{"question": "q"}' + b"]]",
            400,
            "item 0: expected an object",
        ),
        (
            "deep nesting past the parser's limit",
            b"[" * 200_000 + b"]" * 200_000,
            400,
            "nested too deeply",
        ),
        ("deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "not valid JSON"),
        (
            "number inside a list",
            b'[{"question": "q", "context": "c"}, 7]',
            400,
            "item 1: expected an object",
        ),
        (
            "list inside a field",
            b'[{"question": ["q"], "context": "c"}]',
            400,
            "item 0: question must be a string, got list",
        ),
        (
            "object inside a field",
            b'[{"question": "q", "context": {"text": "c"}}]',
            400,
            "item 0: context must be a string, got dict",
        ),
        ("null item", b"[null]", 400, "got null"),
        ("bool field", b'{"question": true, "context": "c"}', 400, "got bool"),
        ("65 items of wrong types", b"[" + b",".join([b"1"] * 65) + b"]", 400, "65 items"),
    ],
)
def test_long_and_malformed_bodies_are_4xx_with_one_line(name, body, status, fragment):
    got, payload = ingress_checked(body)
    assert got == status, (name, got, payload)
    assert set(payload) == {"error"} and fragment in payload["error"], (name, payload)
    assert "\n" not in payload["error"] and len(payload["error"]) < 400


@pytest.mark.parametrize("depth", ["valid+1", "limit-200", "limit", "limit+1", "10*limit"])
def test_nesting_at_and_past_the_parsers_limit_is_400(depth):
    import sys

    from packing.qa.requests import BadRequest, parse_body

    limit = sys.getrecursionlimit()
    n = {
        "valid+1": 2,
        "limit-200": limit - 200,
        "limit": limit,
        "limit+1": limit + 1,
        "10*limit": 10 * limit,
    }[depth]
    for raw in (b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n):
        with pytest.raises(BadRequest) as info:
            parse_body(raw, Limits())
        message = str(info.value)
        if n > limit:
            assert "nested too deeply" in message
        else:  # parsed, or refused by the parser a little earlier: a 400 either way
            assert (
                "nested too deeply" in message
                or "expected an object" in message
                or ("unknown field" in message)
            )
