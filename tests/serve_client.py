"""HTTP helpers for the tests against the running app (tests/integration): request bodies,
``POST /v1/answer``, ``GET /v1/stats`` and answer comparison.

Imported as ``from serve_client import ...`` (``tests/`` is on ``sys.path`` through pytest's
``pythonpath`` setting in pyproject.toml).
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
import urllib.request

import numpy as np

WORDS = (
    "the river city north king music water school first war history century church "
    "language island population government london paris system energy team season "
    "world people football university time film song album league party"
).split()


def make_qa(n_words: int, seed: int) -> dict:
    """A question and a context of ``n_words`` words (deterministic)."""
    rng = np.random.default_rng(seed)
    q = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8))))
    return {"question": q + "?", "context": " ".join(rng.choice(WORDS, size=n_words)) + "."}


def post(url: str, body, ctype: str = "application/json", raw: bytes | None = None):
    """``POST /v1/answer`` with ``body`` (JSON-encoded) or ``raw`` bytes; returns
    ``(status, parsed JSON, headers)``; a body that is not JSON comes back as
    ``{"not_json": its first 500 characters}``.

    A server may answer before it has read the whole body (a 413 for a body over
    ``max_body_bytes``) and close the connection while the client is still sending; the
    client then gets a broken pipe on send, but the answer is already on the socket. Like
    curl, this reads it anyway, so the verdict does not depend on how fast the host is."""
    data = raw if raw is not None else json.dumps(body).encode()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        try:
            conn.request(
                "POST",
                parts.path.rstrip("/") + "/v1/answer",
                body=data,
                headers={"content-type": ctype, "connection": "close"},
            )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early; its response is read below
        r = conn.getresponse()
        raw_out = r.read()
        try:
            parsed = json.loads(raw_out)
        except ValueError:  # every answer of the app is JSON: show what came instead
            parsed = {"not_json": raw_out.decode(errors="replace")[:500]}
        return r.status, parsed, dict(r.headers)
    finally:
        conn.close()


def get_stats(url: str) -> dict:
    """The app's ``GET /v1/stats`` body."""
    with urllib.request.urlopen(url + "/v1/stats", timeout=60) as r:
        return json.loads(r.read())


def same_answer(got: dict, want: dict) -> bool:
    return (got["start"], got["end"], got["answer"]) == (
        want["start"],
        want["end"],
        want["answer"],
    ) and abs(got["score"] - want["score"]) <= 1e-4


def post_all(url: str, bodies: list, concurrency: int) -> list[dict]:
    """POST every body at once (``concurrency`` clients); the answers in order, a list body
    giving one per item. Asserts every status is 200."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda b: post(url, b), bodies))
    out = []
    for status, body, _ in results:
        assert status == 200, body
        out.extend(body if isinstance(body, list) else [body])
    return out
