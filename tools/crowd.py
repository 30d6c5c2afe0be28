"""``python -m tools crowd`` and ``python -m tools abandon``: two drills against a running app.

``crowd``: the same answer alone or in a crowd, for the task the app serves (``GET /info``'s
``task``; an app without ``/info`` is a QA app). Every request (questions of random words,
contexts of 3 to 300 words, single bodies and lists of 8) is sent **alone**, one at a time,
then all of them **concurrently**; each crowd answer must equal its alone answer exactly (bit
for bit). QA: ``POST /v1/answer`` ``{question, context}`` (span and score). Embed: TEI's
``POST /embed`` with the context as the text (the vector). Classify: TEI's ``POST /predict``
with the pair ``[question, context]`` and ``raw_scores`` (every label's score). Embed and
classify send ``truncate: true``, so a text over the model's ``seq_len`` is cut, not
refused. Counts: ``lost`` (no HTTP response), ``failed`` (an HTTP error), ``differ`` (another
answer or score). Exits non-zero unless all three are 0.

``abandon``: work for clients that went away. A burst of one-window requests whose clients
hang up after ``--hang-up-s``; then one live request. Reports from the packer's ``/v1/stats``
how many windows were computed, dropped (never computed) and discarded (computed for nobody),
and how long the live request took. Meant for a slow device (``device: sim``): see
docs/reliability.md for the command that made its figure.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .loadtest import _get_json

__all__ = ["ROUTES", "abandon", "app_task", "compare", "crowd", "random_items"]

WORDS = (
    "the river city north king music water school first war history century church "
    "team season film government people world population energy island army "
    "river court law art"
).split()
CONTEXT_WORDS = (3, 8, 20, 45, 90, 160, 300)


def random_items(n: int, seed: int = 0) -> list[dict]:
    """``n`` questions of 2-7 random words over contexts of 3 to 300 random words (cycling
    through :data:`CONTEXT_WORDS`): one to several windows each."""
    out = []
    for k in range(n):
        rng = np.random.default_rng(seed + k)
        q = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8))))
        ctx = " ".join(rng.choice(WORDS, size=CONTEXT_WORDS[k % len(CONTEXT_WORDS)]))
        out.append({"question": q + "?", "context": ctx + "."})
    return out


@dataclass(frozen=True)
class TaskRoute:
    """How the drill speaks to an app of one task: the route, the body of one item or of a
    list of items (answered with a list, one answer per item), and the answer in the response
    to a one-item body (TEI's ``/embed`` answers one text with a list of one vector)."""

    task: str
    path: str
    one: Callable[[dict], object]
    many: Callable[[list[dict]], object]
    single: Callable[[object], object]


def _first(body: object) -> object:
    return body[0] if isinstance(body, list) and len(body) == 1 else body


ROUTES = {
    "qa": TaskRoute("qa", "/v1/answer", lambda it: it, lambda its: its, lambda body: body),
    "embed": TaskRoute(
        "embed",
        "/embed",
        lambda it: {"inputs": it["context"], "truncate": True},
        lambda its: {"inputs": [it["context"] for it in its], "truncate": True},
        _first,
    ),
    "classify": TaskRoute(
        "classify",
        "/predict",
        lambda it: {
            "inputs": [it["question"], it["context"]],
            "truncate": True,
            "raw_scores": True,
        },
        lambda its: {
            "inputs": [[it["question"], it["context"]] for it in its],
            "truncate": True,
            "raw_scores": True,
        },
        lambda body: body,
    ),
}


def app_task(url: str, timeout_s: float = 10.0) -> str:
    """The task of the app at ``url``: ``GET /info``'s ``task.task`` (qa when the app has no
    ``/info``). ValueError for a task the drill does not know."""
    status, body = _get(url.rstrip("/") + "/info", timeout_s)
    task = "qa"
    if status == 200 and isinstance(body, dict) and isinstance(body.get("task"), dict):
        task = str(body["task"].get("task", "qa"))
    if task not in ROUTES:
        raise ValueError(f"the app serves task {task!r}; the drill knows {sorted(ROUTES)}")
    return task


def _get(url: str, timeout_s: float) -> tuple[int | None, object]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", parts.path)
        r = conn.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _post(url: str, body, timeout_s: float, path: str = "/v1/answer") -> tuple[int | None, object]:
    """``(status, parsed body)``, or ``(None, error text)`` when no response came."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request(
            "POST",
            parts.path.rstrip("/") + path,
            json.dumps(body),
            {"content-type": "application/json"},
        )
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def compare(
    alone: list[tuple[int | None, object]], crowd_answers: list[tuple[int | None, object]]
) -> dict:
    """Counts of ``lost`` (status None), ``failed`` (another status than 200) over both lists,
    and ``differ`` (both 200, answers not equal), with the largest score difference of the QA
    answers that differ and up to three examples."""
    both = alone + crowd_answers
    lost = sum(1 for s, _ in both if s is None)
    failed = sum(1 for s, _ in both if s not in (None, 200))
    differ, max_diff, examples = 0, 0.0, []
    for (sa, a), (sc, c) in zip(alone, crowd_answers):
        if sa == sc == 200 and a != c:
            differ += 1
            if isinstance(a, dict) and isinstance(c, dict) and "score" in a and "score" in c:
                max_diff = max(max_diff, abs(a["score"] - c["score"]))
            if len(examples) < 3:
                examples.append({"alone": a, "crowd": c})
    return {
        "lost": lost,
        "failed": failed,
        "differ": differ,
        "max_score_diff": max_diff,
        "examples": examples,
    }


def crowd(
    url: str,
    n: int = 1000,
    concurrency: int = 64,
    list_size: int = 8,
    seed: int = 0,
    timeout_s: float = 120.0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Send ``n`` requests alone, then concurrently (a quarter of them in list bodies of
    ``list_size``), on the route of the app's task; the JSON-able report (see the module
    docstring)."""
    route = ROUTES[app_task(url)]
    items = random_items(n, seed)
    t0 = time.monotonic()
    alone = []
    for k, it in enumerate(items):
        status, body = _post(url, route.one(it), timeout_s, route.path)
        alone.append((status, route.single(body) if status == 200 else body))
        if progress and (k + 1) % 100 == 0:
            echo(f"[crowd] {route.task}: alone {k + 1}/{n}")
    alone_s = time.monotonic() - t0
    n_single = n - (n // 4) // list_size * list_size
    bodies = [(k, 1) for k in range(n_single)] + [
        (k, list_size) for k in range(n_single, n, list_size)
    ]

    def send(b: tuple[int, int]) -> tuple[int | None, object]:
        k, size = b
        body = route.one(items[k]) if size == 1 else route.many(items[k : k + size])
        return _post(url, body, timeout_s, route.path)

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, bodies))
    crowd_s = time.monotonic() - t0
    crowd_answers: list[tuple[int | None, object]] = []
    for (_, size), (status, body) in zip(bodies, results):
        if status == 200 and size > 1:
            answers = body if isinstance(body, list) else [body]
            if len(answers) != size:
                answers = [f"{len(answers)} answers for {size} items"] * size
                status = 500
            crowd_answers.extend((status, b) for b in answers)
        elif status == 200:
            crowd_answers.append((status, route.single(body)))
        else:
            crowd_answers.extend([(status, body)] * size)
    counts = compare(alone, crowd_answers)
    stats = _get_json(url.rstrip("/") + "/v1/stats")["packer"]
    return {
        "settings": {
            "url": url,
            "requests": n,
            "concurrency": concurrency,
            "list_size": list_size,
            "seed": seed,
        },
        "task": route.task,
        "route": route.path,
        **counts,
        "alone_s": alone_s,
        "crowd_s": crowd_s,
        "crowd_bodies": len(bodies),
        "mode": stats["knobs"]["mode"],
        "batch_invariant": stats.get("batch_invariant"),
        "mean_sequences": stats["mean_sequences"],
    }


def format_crowd(report: dict) -> str:
    """One line of counts and timings."""
    r, s = report, report["settings"]
    return (
        f"{r.get('task', 'qa')} (POST {r.get('route', '/v1/answer')}): {s['requests']} "
        f"requests alone ({r['alone_s']:.1f} s), then in {r['crowd_bodies']} "
        f"bodies at concurrency {s['concurrency']} ({r['crowd_s']:.1f} s; mode "
        f"{r['mode']}, {r['mean_sequences']:.1f} windows per plan so far): lost "
        f"{r['lost']}, failed {r['failed']}, differ {r['differ']} (largest score "
        f"difference {r['max_score_diff']:g})"
    )


def _hang_up(url: str, body: dict, after_s: float) -> str:
    status, _ = _post(url, body, after_s)
    return "gone" if status is None else str(status)


def abandon(
    url: str,
    n: int = 600,
    hang_up_s: float = 0.3,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> dict:
    """A burst of ``n`` one-window requests whose clients hang up after ``hang_up_s``, then
    one live request; the JSON-able report (see the module docstring)."""
    base = url.rstrip("/")
    before = _get_json(base + "/v1/stats")["packer"]
    items = [
        {"question": it["question"], "context": " ".join(it["context"].split()[:3])}
        for it in random_items(n, seed)
    ]  # one window each
    t0 = time.monotonic()
    with ThreadPoolExecutor(min(n, 256)) as pool:
        outcomes = list(pool.map(lambda it: _hang_up(base, it, hang_up_s), items))
    burst_s = time.monotonic() - t0
    while _get_json(base + "/v1/stats")["packer"]["pending"]:
        time.sleep(0.1)
    t0 = time.monotonic()
    status, _ = _post(base, random_items(1, seed + n)[0], 120.0)
    live_s = time.monotonic() - t0
    after = _get_json(base + "/v1/stats")["packer"]
    d = {
        k: after[k] - before[k]
        for k in ("admitted_windows", "sequences", "dropped", "discarded", "plans")
    }
    return {
        "settings": {"url": url, "requests": n, "hang_up_s": hang_up_s},
        "gone": outcomes.count("gone"),
        "answered_before_hang_up": n - outcomes.count("gone"),
        "burst_s": burst_s,
        "live_status": status,
        "live_s": live_s,
        "windows_admitted": d["admitted_windows"],
        "windows_computed": d["sequences"] - 1,
        "windows_dropped": d["dropped"],
        "windows_discarded": d["discarded"],
        "plans": d["plans"],
    }


def format_abandon(report: dict) -> str:
    """One line of counts and timings."""
    r, s = report, report["settings"]
    return (
        f"{s['requests']} one-window requests, clients gone after {s['hang_up_s']:g} s: "
        f"{r['gone']} hung up; windows admitted by the packer {r['windows_admitted']}, "
        f"computed {r['windows_computed']} (discarded {r['windows_discarded']}), dropped "
        f"{r['windows_dropped']}; the next request answered {r['live_status']} in "
        f"{r['live_s']:.2f} s"
    )
