"""Optional bearer API keys for the HTTP ingress (``Authorization: Bearer <key>``).

Keys come from the app's ``api_keys`` setting and from the environment variable
``PACKED_BERT_API_KEYS`` (comma-separated), both read where the app is built; every key of
either source is accepted. With no key the app is open, which it may only be on a loopback
bind: :func:`startup_keys` refuses to build an app whose Serve HTTP host is reachable from
other hosts unless a key is set or ``allow_unauthenticated_public`` says so explicitly.

With keys, every request needs one, except ``GET /healthz`` and ``GET /health`` (probes) and
the API description (``/docs``, ``/redoc``, ``/openapi.json``: the schema and limits, no data). A missing, malformed
or unknown key gets 401 with ``{"error": ...}`` and ``WWW-Authenticate: Bearer``.

Keys are never logged, echoed or kept: :class:`ApiKeys` holds their SHA-256 digests only, and
a presented key is compared with every configured one (``hmac.compare_digest`` of digests: no
early exit, no length leak).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

ENV_VAR = "PACKED_BERT_API_KEYS"
MIN_KEY_CHARS = 16
# RFC 6750 b64token: what a bearer credential may contain.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
OPEN_PATHS = frozenset(
    {"/healthz", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
REALM = "packed-bert-serve"


class ApiKeyError(Exception):
    """An unusable key in the configuration; the message names where, never the key.

    Deliberately not a ``ValueError``: pydantic would wrap one into a ValidationError that
    prints the offending input, which is the key itself."""


class ExposureRefused(RuntimeError):
    """The app would serve hosts other than this one with no API key."""


def check_key(key: Any, where: str) -> str:
    """``key`` if it can be a bearer key, else :class:`ApiKeyError` naming ``where``."""
    if not isinstance(key, str):
        raise ApiKeyError(f"{where} must be a string, got {type(key).__name__}")
    if len(key) < MIN_KEY_CHARS:
        raise ApiKeyError(
            f"{where} is {len(key)} characters; a key needs at least "
            f"{MIN_KEY_CHARS} (e.g. `openssl rand -hex 32`)"
        )
    if not _B64TOKEN.fullmatch(key):
        raise ApiKeyError(
            f"{where} may hold only letters, digits and - . _ ~ + / (then = "
            "padding), as an HTTP bearer token can"
        )
    return key


def parse_keys(value: Any, where: str = "api_keys") -> list[str] | None:
    """The keys of a config value: None, a list of strings, or one comma-separated string.
    Raises :class:`ApiKeyError` (never quoting a key); an empty list is None (no keys)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)):
        value = [getattr(v, "get_secret_value", lambda v=v: v)() for v in value]
    else:
        raise ApiKeyError(f"{where} must be a list of strings or null, got {type(value).__name__}")
    return [check_key(k, f"{where} item {i}") for i, k in enumerate(value)] or None


def keys_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The keys in ``PACKED_BERT_API_KEYS`` (comma-separated; blanks ignored)."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return parse_keys(raw, ENV_VAR) or []


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """A set of accepted keys, kept as SHA-256 digests; ``repr`` shows only how many."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        digests = tuple(dict.fromkeys(_digest(k) for k in keys))
        if not digests:
            raise ApiKeyError("ApiKeys needs at least one key")
        self._digests = digests

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} key{'s' if len(self) != 1 else ''})"

    def __getstate__(self) -> tuple:
        return self._digests

    def __setstate__(self, state: tuple) -> None:
        self._digests = state

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys. Compares with every key, whichever
        matches, in time that does not depend on where the strings differ or how long the
        presented one is (digests of fixed length)."""
        probe = _digest(presented)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(probe, digest)
        return found


def resolve_keys(config_keys: Any, environ: Mapping[str, str] | None = None) -> ApiKeys | None:
    """The keys in force: the config's ``api_keys`` and ``PACKED_BERT_API_KEYS`` together;
    None when neither has one."""
    keys = list(parse_keys(config_keys) or []) + keys_from_env(environ)
    return ApiKeys(keys) if keys else None


def is_loopback(host: str | None) -> bool:
    """Whether binding ``host`` serves this machine only. None (Serve's proxies off) counts
    as loopback; ``0.0.0.0``, ``::``, a LAN address or any name but ``localhost`` does not."""
    if host is None:
        return True
    text = host.strip().strip("[]").lower()
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def serve_http_host() -> str | None:
    """The host Serve's HTTP proxies bind (``http_options.host`` of the Serve config file, as
    ``serve run`` passed it to ``serve.start``), asked of the running Serve controller, the
    source the replicas use too. Where no controller runs yet, the host ``serve.run`` would
    start Serve with (``HTTPOptions()``'s default: 127.0.0.1 unless
    ``RAY_SERVE_DEFAULT_HTTP_HOST`` says otherwise)."""
    import ray
    from ray.serve.config import HTTPOptions

    if ray.is_initialized():
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        try:
            controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            controller = None
        if controller is not None:
            return ray.get(controller.get_http_config.remote(), timeout=60).host
    return HTTPOptions().host


def startup_keys(
    config_keys: Any,
    allow_unauthenticated_public: bool,
    environ: Mapping[str, str] | None = None,
    host_of=serve_http_host,
) -> ApiKeys | None:
    """The keys the Ingress enforces, checked before anything starts.

    Raises:
        ApiKeyError: a configured key cannot be used (the message never quotes it).
        ExposureRefused: no key, Serve's HTTP host is not a loopback address and
            ``allow_unauthenticated_public`` is false; also when that host cannot be learnt.
    """
    keys = resolve_keys(config_keys, environ)
    if keys is not None or allow_unauthenticated_public:
        return keys
    try:
        host = host_of()
    except Exception as exc:  # noqa: BLE001 - fail closed, saying why
        raise ExposureRefused(
            f"refusing to start without an API key: Serve's HTTP host could not be learnt "
            f"({type(exc).__name__}); set {ENV_VAR} or `api_keys`, or "
            "`allow_unauthenticated_public: true`"
        ) from None
    if is_loopback(host):
        return None
    raise ExposureRefused(
        f"refusing to start: Serve's HTTP proxies bind {host!r} (http_options.host), which "
        f"other hosts can reach, and no API key is set. Set {ENV_VAR} (comma-separated keys) "
        "in the environment of the Ray nodes, or `api_keys` in the app's args; or set "
        "`allow_unauthenticated_public: true` in the app's args to serve without a key on "
        'purpose (docs/serving.md, "API keys").'
    )


# --- the check, as ASGI middleware ------------------------------------------------------------

_current: ApiKeys | None = None


def use_keys(keys: ApiKeys | None) -> None:
    """Make :class:`BearerAuth` in this process enforce ``keys`` (None: no check). The Ingress
    calls it at start: Serve runs a frozen copy of the FastAPI app, so the keys cannot ride
    on the app object."""
    global _current
    if keys is not None and not isinstance(keys, ApiKeys):
        raise TypeError(f"use_keys takes ApiKeys or None, got {type(keys).__name__}")
    _current = keys


def route_path(scope: Mapping[str, Any]) -> str:
    """The request path below the app's route prefix (``root_path``)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def check_authorization(
    headers: Iterable[tuple[bytes, bytes]], keys: ApiKeys
) -> tuple[str, str] | None:
    """None when ``headers`` carry a valid ``Authorization: Bearer <key>``; else
    ``(message, WWW-Authenticate value)`` for the 401."""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    challenge = f'Bearer realm="{REALM}"'
    if not values:
        return ("missing API key: send the header 'Authorization: Bearer <key>'", challenge)
    if len(values) > 1:
        return (
            "malformed Authorization: send exactly one 'Authorization: Bearer <key>' header",
            challenge + ', error="invalid_request"',
        )
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return (
            "malformed Authorization: expected 'Bearer <key>'",
            challenge + ', error="invalid_request"',
        )
    if not keys.matches(token):
        return ("invalid API key", challenge + ', error="invalid_token"')
    return None


class BearerAuth:
    """ASGI middleware: 401 for an HTTP request without a valid key, while keys are set
    (:func:`use_keys`, or ``keys`` here for a fixed set). :data:`OPEN_PATHS` stay open."""

    def __init__(self, app, keys: ApiKeys | None = None, use_current: bool = True) -> None:
        self.app = app
        self.keys = keys
        self.use_current = use_current and keys is None

    async def __call__(self, scope, receive, send) -> None:
        keys = _current if self.use_current else self.keys
        if scope["type"] != "http" or keys is None or route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        refused = check_authorization(scope.get("headers", ()), keys)
        if refused is None:
            await self.app(scope, receive, send)
            return
        message, challenge = refused
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install(app) -> None:
    """Add :class:`BearerAuth` to a FastAPI/Starlette ``app`` (before it serves)."""
    app.add_middleware(BearerAuth)
