"""The HTTP side of embed-http: the servers given (``NAME=URL``), their embeddings routes, the
keep-alive :class:`Client` of one connection, the served model and the probe that finds the
route. Standard library only."""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import socket
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

#: ``--api`` choices: the embeddings path(s) tried under each server's URL, in order.
APIS: dict[str, tuple[str, ...]] = {
    "auto": ("/v1/embeddings", "/embeddings"),
    "v1": ("/v1/embeddings",),
    "plain": ("/embeddings",),
}


PROBE_TEXT = "A short probe sentence."

ENCODINGS = ("float", "base64")
"""``--encoding-format`` choices: ``float`` sends no ``encoding_format`` (OpenAI's default: a
JSON list of numbers per vector); ``base64`` asks for the base64 of the little-endian float32
bytes, what the ``openai`` Python client asks for unless told otherwise."""


def check_encoding(encoding_format: str) -> str:
    """``encoding_format`` if it is one of :data:`ENCODINGS`, else ValueError naming it."""
    if encoding_format not in ENCODINGS:
        raise ValueError(f"--encoding-format must be one of {ENCODINGS}, got {encoding_format!r}")
    return encoding_format


@dataclass(frozen=True)
class Server:
    """A server to measure: its name in the table and its base URL (no trailing slash)."""

    name: str
    url: str


def parse_server(text: str) -> Server:
    """``NAME=URL`` -> :class:`Server`; ValueError unless NAME is non-empty and URL is an
    ``http://`` or ``https://`` URL with a host."""
    name, sep, url = text.partition("=")
    name, url = name.strip(), url.strip().rstrip("/")
    if not sep or not name:
        raise ValueError(f"--server takes NAME=URL, got {text!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--server {name}: {url!r} is not an http(s) URL")
    return Server(name, url)


def check_servers(servers: Sequence[Server]) -> list[Server]:
    """``servers`` as a list; ValueError when empty or when two share a name."""
    servers = list(servers)
    if not servers:
        raise ValueError("give at least one --server NAME=URL")
    names = [s.name for s in servers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"server names must differ: {', '.join(dup)} given twice")
    return servers


def endpoint_paths(url: str, api: str) -> tuple[str, ...]:
    """The embeddings URLs to try for a server at ``url`` under ``--api`` ``api``, in order.
    A URL that already ends in ``/v1`` (an OpenAI-style base URL) is tried as is: its
    ``/embeddings`` only."""
    if api not in APIS:
        raise ValueError(f"--api must be one of {sorted(APIS)}, got {api!r}")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        return (base + "/embeddings",)
    return tuple(base + p for p in APIS[api])


class EmbedError(RuntimeError):
    """A request that did not give one vector: its HTTP status (None: no answer) and why."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status if status is not None else 'no answer'}: {message}")
        self.status = status


class Client:
    """One keep-alive connection to an embeddings URL; :meth:`embed` sends one text."""

    def __init__(
        self, url: str, model: str | None, timeout_s: float, encoding_format: str = "float"
    ):
        self.encoding_format = check_encoding(encoding_format)
        parts = urlsplit(url)
        self.url = url
        self.path = parts.path or "/"
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.model = model
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get("EMBED_HTTP_API_KEY")
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        """Close the connection if one is open; the next request opens a new one."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, body: dict) -> tuple[int, bytes]:
        """POST ``body`` as JSON; ``(status, response bytes)``. The connection is dropped on
        an exception (the next call opens a new one)."""
        try:
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self.conn = cls(self.host, self.port, timeout=self.timeout_s)
                self.conn.connect()
                # no Nagle: a small request is never held back waiting for an ACK
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conn.request("POST", self.path, json.dumps(body).encode(), self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return resp.status, data

    def embed(self, text: str) -> Sequence[float]:
        """The one vector of ``text`` (sent as ``"input": "<text>"``); :class:`EmbedError`
        otherwise."""
        return self._vectors(text, 1)[0]

    def embed_many(self, texts: Sequence[str]) -> list[Sequence[float]]:
        """The vectors of ``texts`` in order, from one request (``"input": [...]``; a single
        text is sent as a string); :class:`EmbedError` otherwise."""
        texts = list(texts)
        return self._vectors(texts[0] if len(texts) == 1 else texts, len(texts))

    def _vectors(self, inputs: str | list[str], n: int) -> list[Sequence[float]]:
        body: dict = {"input": inputs}
        if self.model:
            body["model"] = self.model
        if self.encoding_format != "float":
            body["encoding_format"] = self.encoding_format
        try:
            status, data = self.post(body)
        except (OSError, http.client.HTTPException) as exc:
            raise EmbedError(None, f"{type(exc).__name__}: {exc}") from None
        if status != 200:
            raise EmbedError(status, data[:200].decode("utf-8", "replace"))
        try:
            items = json.loads(data)["data"]
            if len(items) != n:
                raise ValueError(f"{len(items)} vectors for {n} text(s)")
            by_index = sorted(items, key=lambda item: item.get("index", 0))
            vecs = [item["embedding"] for item in by_index]
            if self.encoding_format == "base64":
                vecs = [float32_of_base64(v) for v in vecs]
            if any(not isinstance(v, list | array) or not v for v in vecs):
                raise ValueError("embedding is not a list of numbers")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise EmbedError(status, f"unexpected body: {exc}") from None
        return vecs


def float32_of_base64(text: str) -> array:
    """The float32 numbers of ``text``, the base64 of their little-endian bytes (OpenAI's
    ``encoding_format: base64``); ValueError when it is not base64 of whole float32s."""
    if not isinstance(text, str):
        raise ValueError("embedding is not a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"embedding is not base64: {exc}") from None
    if len(raw) % 4:
        raise ValueError(f"embedding is {len(raw)} bytes, not whole float32s")
    out = array("f")
    out.frombytes(raw)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _get_json(url: str, timeout_s: float) -> tuple[int | None, object]:
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout_s)
    try:
        headers = {"Accept": "application/json"}
        key = os.environ.get("EMBED_HTTP_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("GET", parts.path or "/", headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, None
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        conn.close()


def served_model(url: str, timeout_s: float) -> str | None:
    """The first model id ``GET {url}/v1/models`` (or ``/models``) lists, else None."""
    base = url.rstrip("/")
    paths = ("/models",) if base.endswith("/v1") else ("/v1/models", "/models")
    for path in paths:
        status, body = _get_json(base + path, timeout_s)
        if status == 200 and isinstance(body, dict):
            data = body.get("data")
            if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("id"):
                return str(data[0]["id"])
    return None


def find_endpoint(
    server: Server, api: str, model: str | None, timeout_s: float, encoding_format: str = "float"
) -> tuple[str, int]:
    """The embeddings URL of ``server`` that answers a probe text with one vector (in
    ``encoding_format``), and the vector's dimensions. RuntimeError naming every URL tried
    when none does (an answer other than 404 / 405 stops the search: that route exists and
    refused the probe)."""
    tried = []
    for url in endpoint_paths(server.url, api):
        client = Client(url, model, timeout_s, encoding_format)
        try:
            vec = client.embed(PROBE_TEXT)
            return url, len(vec)
        except EmbedError as exc:
            tried.append(f"POST {url} -> {exc}")
            if exc.status not in (404, 405):
                break
        finally:
            client.close()
    raise RuntimeError(
        f"server {server.name}: no OpenAI embeddings route answered: " + "; ".join(tried)
    )
