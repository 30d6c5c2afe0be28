"""API keys (deployments/auth.py): parsing and validation, the constant-time check, the 401s,
the open paths, and the refusal to start on a public host without a key."""

from __future__ import annotations

import pickle

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import SecretStr, ValidationError

from deployments import auth
from deployments.auth import (
    ENV_VAR,
    ApiKeyError,
    ApiKeys,
    BearerAuth,
    ExposureRefused,
    check_authorization,
    is_loopback,
    parse_keys,
    resolve_keys,
    startup_keys,
)
from deployments.config import AppConfig

from asgi_client import call

K1, K2, K3 = "a" * 16, "B-._~+/" + "9" * 12 + "==", "0123456789abcdef" * 4


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, want",
    [
        (None, None),
        ([], None),
        ("", None),
        (" , ", None),
        ([K1], [K1]),
        ([K1, K2], [K1, K2]),
        (f"{K1}, {K2} ,", [K1, K2]),
        ([SecretStr(K3)], [K3]),
        ((K1,), [K1]),
    ],
)
def test_parse_keys_accepts_lists_and_comma_separated_text(value, want):
    assert parse_keys(value) == want


@pytest.mark.parametrize(
    "value, fragment",
    [
        (["short-key"], "9 characters; a key needs at least 16"),
        ([K1, "x" * 15], "item 1 is 15 characters"),
        (["has space inside key!"], "may hold only"),
        (["comma,inside-the-key-1234"], "may hold only"),
        (["ünïcode-key-long-enough"], "may hold only"),
        (["=leading-equals-sign-key"], "may hold only"),
        ([12345678901234567890], "item 0 must be a string, got int"),
        ({"k": K1}, "must be a list of strings or null, got dict"),
        (7, "got int"),
    ],
)
def test_unusable_keys_are_refused_without_quoting_them(value, fragment):
    with pytest.raises(ApiKeyError) as info:
        parse_keys(value)
    message = str(info.value)
    assert fragment in message
    for text in value if isinstance(value, list) else [value]:
        assert str(text) not in message


def test_environment_keys_join_the_configured_ones():
    keys = resolve_keys([K1], environ={ENV_VAR: f"{K2},{K3}"})
    assert len(keys) == 3 and all(keys.matches(k) for k in (K1, K2, K3))
    assert resolve_keys(None, environ={}) is None
    assert resolve_keys(None, environ={ENV_VAR: " "}) is None
    assert len(resolve_keys([K1], environ={ENV_VAR: K1})) == 1  # the same key once
    with pytest.raises(ApiKeyError, match=f"{ENV_VAR} item 1 is 5 characters"):
        resolve_keys(None, environ={ENV_VAR: f"{K1},short"})


def test_api_keys_holds_digests_only_and_shows_only_a_count():
    keys = ApiKeys([K1, K2])
    assert repr(keys) == "ApiKeys(2 keys)" and repr(ApiKeys([K1])) == "ApiKeys(1 key)"
    state = pickle.dumps(keys)
    for k in (K1, K2):
        assert k.encode() not in state and k not in repr(keys)
    again = pickle.loads(state)
    assert again.matches(K2) and not again.matches(K3)
    with pytest.raises(ApiKeyError):
        ApiKeys([])


def test_every_key_is_compared_whichever_matches(monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = ApiKeys([K1, K2, K3])
    for presented, want in ((K1, True), (K3, True), ("nope", False), ("x" * 5000, False)):
        calls.clear()
        assert keys.matches(presented) is want
        assert len(calls) == 3, "no early exit: each presented key meets every configured one"
        assert {c for c in calls} == {(32, 32)}, "fixed-length digests, whatever the length"


# --- the header -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, fragment, error",
    [
        ([], "missing API key", None),
        ([(b"authorization", b"Basic " + b"dXNlcjpwYXNz")], "malformed", "invalid_request"),
        ([(b"authorization", b"Bearer")], "malformed", "invalid_request"),
        ([(b"authorization", b"Bearer ")], "malformed", "invalid_request"),
        ([(b"authorization", f"Bearer {K1} {K2}".encode())], "malformed", "invalid_request"),
        ([(b"authorization", K1.encode())], "malformed", "invalid_request"),
        (bearer(K1) + bearer(K1), "exactly one", "invalid_request"),
        (bearer("wrong-key-wrong-key"), "invalid API key", "invalid_token"),
        (bearer(K1.upper()), "invalid API key", "invalid_token"),
        (bearer(K1[:-1]), "invalid API key", "invalid_token"),
    ],
)
def test_refused_headers(headers, fragment, error):
    message, challenge = check_authorization(headers, ApiKeys([K1, K2]))
    assert fragment in message and K1 not in message
    assert challenge.startswith('Bearer realm="packed-bert-serve"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


@pytest.mark.parametrize(
    "value", [f"Bearer {K2}", f"bearer {K2}", f"BEARER   {K2}  ", f"Bearer {K1}"]
)
def test_accepted_headers(value):
    assert check_authorization([(b"Authorization", value.encode())], ApiKeys([K1, K2])) is None


# --- the middleware ---------------------------------------------------------------------------


def small_app(keys: ApiKeys | None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BearerAuth, keys=keys, use_current=False)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.post("/v1/answer")
    async def answer():
        return JSONResponse({"answer": "x"})

    return app


def test_requests_without_a_valid_key_get_401_in_the_json_shape():
    app = small_app(ApiKeys([K1, K2]))
    for headers in (
        [],
        [("authorization", "Bearer not-the-key-at-all")],
        [("authorization", "Token abc")],
    ):
        r = call(app, "POST", "/v1/answer", headers=headers)
        assert r.status == 401 and set(r.json()) == {"error"}
        assert r.headers["www-authenticate"].startswith("Bearer ")
        assert r.headers["content-type"] == "application/json"
    for key in (K1, K2):
        r = call(app, "POST", "/v1/answer", headers=[("Authorization", f"Bearer {key}")])
        assert r.status == 200 and r.json() == {"answer": "x"}


def test_healthz_and_the_api_description_stay_open():
    app = small_app(ApiKeys([K1]))
    assert call(app, "GET", "/healthz").status == 200
    assert call(app, "GET", "/openapi.json").status == 200
    assert call(app, "GET", "/docs").status == 200
    # under a route prefix too, and only those paths
    assert call(app, "GET", "/healthz", root_path="/qa").status == 200
    assert call(app, "POST", "/v1/answer", root_path="/qa").status == 401
    for path in ("/healthz/", "/healthzz", "/nope", "/v1/stats"):
        assert call(app, "GET", path).status == 401, path


def test_no_keys_means_no_check():
    app = small_app(None)
    assert call(app, "POST", "/v1/answer").status == 200


def test_use_keys_drives_the_ingress_app():
    from deployments import ingress

    assert [m.cls.__name__ for m in ingress.api.user_middleware] == ["InternalErrors", "BearerAuth"]
    try:
        auth.use_keys(ApiKeys([K1]))
        r = call(
            ingress.api,
            "POST",
            "/v1/answer",
            body=b"{}",
            headers=[("content-type", "application/json")],
        )
        assert r.status == 401 and "missing API key" in r.json()["error"]
        assert call(ingress.api, "GET", "/openapi.json").status == 200
        r = call(ingress.api, "GET", "/nope", headers=[("authorization", f"Bearer {K1}")])
        assert r.status == 404 and set(r.json()) == {"error"}
        with pytest.raises(TypeError):
            auth.use_keys([K1])
    finally:
        auth.use_keys(None)
    assert call(ingress.api, "GET", "/nope").status == 404


# --- starting on a public host ----------------------------------------------------------------


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        (None, True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_public_host_without_a_key_refuses_to_start_with_a_clear_message():
    with pytest.raises(ExposureRefused) as info:
        startup_keys(None, False, environ={}, host_of=lambda: "0.0.0.0")
    message = str(info.value)
    assert "'0.0.0.0'" in message and ENV_VAR in message and "api_keys" in message
    assert "allow_unauthenticated_public: true" in message


def test_startup_keys_cases():
    def never():
        raise AssertionError("the host is not needed when keys are set")

    assert startup_keys(None, False, environ={}, host_of=lambda: "127.0.0.1") is None
    assert startup_keys(None, True, environ={}, host_of=never) is None  # said explicitly
    keys = startup_keys([K1], False, environ={}, host_of=never)
    assert keys.matches(K1)
    keys = startup_keys(None, False, environ={ENV_VAR: K2}, host_of=never)
    assert keys.matches(K2)

    def broken():
        raise TimeoutError("controller did not answer")

    with pytest.raises(ExposureRefused, match="could not be learnt"):
        startup_keys(None, False, environ={}, host_of=broken)  # fails closed
    with pytest.raises(ApiKeyError):
        startup_keys(["short"], True, environ={}, host_of=never)


def test_serve_http_host_without_a_running_serve_is_serves_default(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_SERVE_DEFAULT_HTTP_HOST", raising=False)
    assert not ray.is_initialized()
    from ray.serve.config import HTTPOptions

    assert auth.serve_http_host() == HTTPOptions().host
    assert is_loopback(auth.serve_http_host())


# --- the settings -----------------------------------------------------------------------------


def test_appconfig_keys_are_secret_and_validated():
    cfg = AppConfig(api_keys=[K1, K2])
    assert [k.get_secret_value() for k in cfg.api_keys] == [K1, K2]
    assert K1 not in repr(cfg) and K1 not in str(cfg.model_dump())
    assert AppConfig(api_keys=f"{K1},{K2}").api_keys[1].get_secret_value() == K2
    assert AppConfig().api_keys is None and AppConfig(api_keys=[]).api_keys is None
    assert AppConfig().allow_unauthenticated_public is False
    with pytest.raises(ApiKeyError) as info:  # not a ValidationError: it would print the key
        AppConfig(api_keys=[K1, "tooshort-secret"])
    assert "tooshort-secret" not in str(info.value) and "item 1" in str(info.value)


@pytest.mark.parametrize("value", [0, -1, 601, "soon"])
def test_body_read_timeout_is_validated(value):
    with pytest.raises(ValidationError, match="body_read_timeout_s"):
        AppConfig(body_read_timeout_s=value)
    assert AppConfig().body_read_timeout_s == 10.0
