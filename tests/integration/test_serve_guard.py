"""Integration tier: long and malformed bodies, FastAPI's own errors and a 500 in the one JSON
shape over HTTP; a slow upload (408) and the API key on a second app deployed next to the
session's app with keys set."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse

import pytest

from serve_apps import deploy_beside
from serve_client import make_qa, post, same_answer

pytestmark = pytest.mark.integration

KEYED_APP, KEYED_PREFIX = "squad-keyed-test", "/keyed"
KEYS = ["integration-key-one-0001", "integration-key-two-0002"]
BODY_TIMEOUT_S = 2.0
MB = 1_000_000


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, dict]:
    """``(status, JSON body, headers)`` of one request."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(
            method,
            parts.path.rstrip("/") + path,
            body=body,
            headers={"content-type": "application/json", "connection": "close", **(headers or {})},
        )
        r = conn.getresponse()
        raw = r.read()
        headers_out = {k.lower(): v for k, v in r.headers.items()}
        return r.status, json.loads(raw) if raw else {}, headers_out
    finally:
        conn.close()


def assert_one_error(status: int, body: dict, low: int = 400, high: int = 499) -> str:
    assert low <= status <= high, (status, body)
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], body
    assert "Traceback" not in body["error"]
    return body["error"]


LONG_BODIES = [
    ("huge integer", b'{"question": ' + b"9" * 5000 + b', "context": "c"}', 400),
    ("long float", b'{"question": 1.' + b"5" * 900_000 + b', "context": "c"}', 400),
    (
        "1 MB of punctuation in a context",
        b'{"question": "q", "context": "' + b"!" * (MB - 40) + b'"}',
        400,
    ),
    ("1 MB of punctuation, not JSON", b"!" * MB, 400),
    ("duplicate keys", b'{"question": "q", "context": "c", "question": "r"}', 400),
    ("deep nesting past the parser's limit", b"[" * 300_000 + b"]" * 300_000, 400),
    ("nesting one level too deep", b'[[{"question": "q", "context": "c"}]]', 400),
    ("wrong types inside a list", b'[{"question": "q", "context": "c"}, 7, null, ["x"]]', 400),
    (
        "a field of the wrong type inside a list",
        b'[{"question": "q", "context": "c"}, {"question": {"a": 1}, "context": "c"}]',
        400,
    ),
]


@pytest.mark.parametrize("name, raw, status", LONG_BODIES, ids=[b[0] for b in LONG_BODIES])
def test_long_and_malformed_bodies_get_a_4xx_in_the_shape(serve_app, solo, name, raw, status):
    got, body, _ = post(serve_app.url, None, raw=raw)
    assert got == status, (name, got, body)
    assert_one_error(got, body)
    qa = make_qa(12, seed=98)
    got, good, _ = post(serve_app.url, qa)  # and the app keeps serving
    assert got == 200 and same_answer(good, solo(qa))


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/nope", 404),
        ("POST", "/v1/answers", 404),
        ("GET", "/v1/answer", 405),
        ("DELETE", "/v1/answer", 405),
        ("POST", "/healthz", 405),
        ("PUT", "/v1/stats", 405),
    ],
)
def test_fastapi_errors_are_in_the_shape(serve_app, method, path, status):
    got, body, headers = request(serve_app.url, method, path, body=b"{}")
    assert got == status
    assert_one_error(got, body)
    assert headers["content-type"].startswith("application/json")


def test_failing_model_call_500_names_an_incident_not_the_cause(serve_app):
    qa = make_qa(20, seed=7)
    serve_app.fault_file.touch()
    try:
        status, body, _ = post(serve_app.url, qa)
    finally:
        serve_app.fault_file.unlink()
    message = assert_one_error(status, body, 500, 500)
    assert "InjectedFault" not in message and str(serve_app.fault_file) not in message
    assert "fail-model-calls" not in message and message.startswith("the model call failed")
    incident = message.split("incident ")[1].split(";")[0]
    deadline = time.monotonic() + 30  # the cause is in the Ingress replica's log, under the id
    while True:
        logs = sorted(serve_app.ray_tmp.glob("ray/session_*/logs/serve/*.log"))
        if any(
            incident in p.read_text(errors="replace")
            and "InjectedFault" in p.read_text(errors="replace")
            for p in logs
        ):
            break
        assert time.monotonic() < deadline, f"incident {incident} not in the Serve logs"
        time.sleep(1)


# --- a second app, with API keys --------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_app(serve_app):
    """The test app with ``api_keys`` and a short ``body_read_timeout_s``, at ``/keyed``;
    deleted after. Yields its URL (Ray stays connected meanwhile)."""
    from deployments.config import AppConfig

    args = dict(serve_app.config["applications"][0]["args"])
    args.pop("fault_file", None)
    full = args["prepare"]["batch_size"] * args["prepare"]["seq_len"]
    cfg = AppConfig(
        **{
            **args,
            "model_dir": str(serve_app.model_dir),
            "api_keys": KEYS,
            "body_read_timeout_s": BODY_TIMEOUT_S,
            "packing": {"mode": "attention_mask", "max_tokens": full},
        }
    )
    yield from deploy_beside(
        serve_app,
        cfg,
        KEYED_APP,
        KEYED_PREFIX,
        {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
    )


def test_keyed_app_asks_every_request_for_a_key(keyed_app, serve_app, solo):
    qa = make_qa(15, seed=5)
    body = json.dumps(qa).encode()
    for headers, fragment in (
        ({}, "missing API key"),
        ({"authorization": "Bearer not-one-of-the-keys"}, "invalid"),
        ({"authorization": f"Basic {KEYS[0]}"}, "malformed"),
        ({"authorization": f"Bearer {KEYS[0][:-1]}"}, "invalid"),
    ):
        status, reply, got = request(keyed_app, "POST", "/v1/answer", body, headers)
        assert status == 401 and fragment in assert_one_error(status, reply)
        assert got["www-authenticate"].startswith("Bearer")
    for key in KEYS:
        status, reply, _ = request(
            keyed_app, "POST", "/v1/answer", body, {"authorization": f"Bearer {key}"}
        )
        assert status == 200 and same_answer(reply, solo(qa))
    status, reply, _ = request(keyed_app, "GET", "/v1/stats")
    assert status == 401
    status, reply, _ = request(
        keyed_app, "GET", "/v1/stats", headers={"authorization": f"Bearer {KEYS[1]}"}
    )
    assert status == 200 and not any(k in json.dumps(reply) for k in KEYS)
    # open without a key: readiness and the API description
    assert request(keyed_app, "GET", "/healthz")[0] == 200
    assert request(keyed_app, "GET", "/openapi.json")[0] == 200
    # the session's app, without keys, is unaffected
    status, reply, _ = post(serve_app.url, qa)
    assert status == 200


def test_serve_http_host_is_the_config_files(keyed_app, serve_app):
    from deployments.auth import is_loopback, serve_http_host

    host = serve_http_host()  # asked of the running Serve controller
    assert host == serve_app.config["http_options"]["host"] and is_loopback(host)


def test_slow_upload_gets_408_and_does_not_stall_others(keyed_app, solo):
    parts = urllib.parse.urlsplit(keyed_app)
    head = (
        f"POST {parts.path}/v1/answer HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 200\r\n"
        f"Authorization: Bearer {KEYS[0]}\r\nConnection: close\r\n\r\n"
    ).encode()
    qa = make_qa(10, seed=11)
    others: list = []
    with socket.create_connection((parts.hostname, parts.port), timeout=BODY_TIMEOUT_S + 30) as s:
        t0 = time.monotonic()
        s.sendall(head + b'{"question": "who')  # and never the rest of the 200 bytes
        meanwhile = threading.Thread(
            target=lambda: others.append(
                request(
                    keyed_app,
                    "POST",
                    "/v1/answer",
                    json.dumps(qa).encode(),
                    {"authorization": f"Bearer {KEYS[1]}"},
                )
            )
        )
        meanwhile.start()
        response = http.client.HTTPResponse(s)
        response.begin()
        status, raw = response.status, response.read()
        elapsed = time.monotonic() - t0
    meanwhile.join(60)
    body = json.loads(raw)
    assert status == 408, raw[:300]
    assert "body_read_timeout_s" in assert_one_error(status, body)
    assert BODY_TIMEOUT_S - 0.5 <= elapsed <= BODY_TIMEOUT_S + 15, elapsed
    assert others and others[0][0] == 200 and same_answer(others[0][1], solo(qa))
