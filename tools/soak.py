"""``python -m tools soak``: drive a running app and check every answer against a solo run.

Each response is compared with the answer the same request gets when each of its windows runs
alone through the ``original`` graph in this process (same tokenizer, windows and span rules,
read from the app's ``/v1/stats``). Requests are counted as

* ``ok`` — 200 with the solo answer (same span, score within ``score_tol``);
* ``crossed`` — 200 with another answer (e.g. another request's): must never happen;
* ``failed`` — an HTTP error status (4xx/5xx, counted by status);
* ``lost`` — no HTTP response at all (connection error, timeout);
* ``slow`` — answered, but after ``slow_s`` (also counted in its other class).

The command exits non-zero when any request is lost or crossed.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.runners.drive import drive

from .loadtest import _get_json, load_questions


def solo_answers(
    model_dir: ModelLike,
    items: list[dict],
    answering: dict,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
) -> list[dict]:
    """Expected ``{answer, score, start, end, windows}`` of each item (the app's response
    fields, and how many windows the item took) from the app's QA pipeline settings
    ``answering`` (its ``/v1/stats`` block), every window run alone (on ``backend``, the
    app's: ``sim`` for an app on the simulated device). ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once."""
    from packing.qa.pipeline import QAPipeline, features_of
    from packing.qa.requests import BadRequest
    from packing.runners import ModelRunner

    model = PreparedModel.open(model_dir)
    qa = QAPipeline.from_model_dir(model, answering)
    runner = ModelRunner(
        model, batch_size=1, padding="longest", backend=backend, **(backend_options or {})
    )
    per_q = qa.tokenize([(it["question"], it["context"]) for it in items])
    logits = [runner.run([f])[0] for f in features_of(per_q)]  # each window alone
    out = []
    for it, windows, answer in zip(
        items, per_q, qa.answers(per_q, logits, [it["context"] for it in items])
    ):
        if isinstance(answer, BadRequest):
            raise ValueError(f"item {it!r:.80} cannot be answered: {answer}")
        out.append({**answer.to_json(), "windows": len(windows)})
    return out


def kill_one_replica(deployment: str) -> str:
    """Kill one live replica of ``deployment`` (Serve replaces it); returns its actor name.

    Connects to the running Ray cluster (``address="auto"``) from this process.
    """
    import ray
    from ray.util.state import list_actors

    ray.init(address="auto", namespace="serve", ignore_reinit_error=True, log_to_driver=False)
    replicas = [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")])
        if (a.class_name or "").endswith(f":{deployment}")
    ]
    if not replicas:
        raise ValueError(f"no live replica of deployment {deployment!r}")
    victim = replicas[0]
    ray.kill(ray.get_actor(victim.name, namespace=victim.ray_namespace or "serve"), no_restart=True)
    return victim.name


def soak(
    url: str,
    model_dir: ModelLike,
    workload: str,
    n: int,
    concurrency: int,
    distinct: int = 500,
    slow_s: float = 10.0,
    score_tol: float = 1e-3,
    kill_replica: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
) -> dict:
    """Send ``n`` requests (cycling ``distinct`` different ones) and classify every answer.

    Closed loop by default (``concurrency`` clients, each sending its next request when the
    last is answered). With ``rate`` (requests/s) the load is open loop: Poisson arrivals at
    that rate on up to ``concurrency`` connections, so the offered load does not drop when
    the app slows down or refuses; latencies count from each request's arrival time.

    ``backend`` / ``backend_options``: what the solo answers run on, the app's runners' own
    (``"sim"`` for an app on ``device: sim``; any sim profile gives the same logits).

    With ``kill_replica``, one replica of that deployment is killed once a quarter of the
    requests are answered; ``recovery_s`` is then the time from the kill to the last request
    that was not answered correctly (0 when none failed). If the kill itself fails (no live
    replica, Ray's state API unreachable), the run finishes and then raises RuntimeError naming
    the cause. ``model_dir``: the app's folder, a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once.
    """
    from transformers import AutoTokenizer

    url = url.rstrip("/")
    stats = _get_json(url + "/v1/stats")
    answering = stats["answering"]
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    if manifest.source != stats["model"]:
        raise ValueError(f"the app serves {stats['model']!r} but {model} holds {manifest.source!r}")
    tok = AutoTokenizer.from_pretrained(str(model))
    uniq = load_questions(workload, min(distinct, n), tok, answering["seq_len"])
    expected = solo_answers(
        model, uniq, answering, backend=backend, backend_options=backend_options
    )
    bodies = [json.dumps(it).encode() for it in uniq]
    load = (
        f"open loop at {rate:g} requests/s, up to {concurrency} connections"
        if rate
        else f"concurrency {concurrency}"
    )
    echo(f"soak {url} ({stats['model']}): {n} requests ({len(uniq)} distinct, {workload}), {load}")
    parsed = urllib.parse.urlsplit(url)
    local = threading.local()
    outcome = [""] * n
    done_at = np.zeros(n)
    statuses: Counter = Counter()
    lock = threading.Lock()
    answered = [0]
    killed: dict = {}

    def call(i: int) -> bool:
        ok = _call(i)
        done_at[i] = time.monotonic()
        with lock:
            answered[0] += 1
            kill_now = kill_replica and not killed and answered[0] >= n // 4
            if kill_now:
                killed["at"] = time.monotonic()
        if kill_now:
            try:
                killed["name"] = kill_one_replica(kill_replica)
            except Exception as exc:  # noqa: BLE001 - the driver would swallow it; raised below
                killed["error"] = exc
            else:
                echo(f"killed {killed['name']}")
        return ok

    def _call(i: int) -> bool:
        k = i % len(uniq)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(
                parsed.hostname, parsed.port or 80, timeout=max(60.0, 6 * slow_s)
            )
        try:
            conn.request("POST", "/v1/answer", bodies[k], {"content-type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            local.conn = None
            conn.close()
            outcome[i] = "lost"
            return False
        if resp.status != 200:
            outcome[i] = "failed"
            with lock:
                statuses[resp.status] += 1
            return False
        got, want = json.loads(raw), expected[k]
        same = (got["start"], got["end"], got["answer"]) == (
            want["start"],
            want["end"],
            want["answer"],
        ) and abs(got["score"] - want["score"]) <= score_tol
        outcome[i] = "ok" if same else "crossed"
        return same

    seconds, latency, _ = drive(n, concurrency, call, progress, rate=rate)
    if "error" in killed:
        exc = killed["error"]
        raise RuntimeError(
            f"could not kill a replica of {kill_replica!r}: {type(exc).__name__}: {exc}"
        ) from exc
    counts = Counter(outcome)
    bad = np.array([o != "ok" for o in outcome])
    refused = np.array([o == "failed" for o in outcome])
    report = {
        "url": url,
        "model": stats["model"],
        "workload": workload,
        "requests": n,
        "distinct": len(uniq),
        "concurrency": concurrency,
        "rate": rate,
        "seconds": seconds,
        "requests_per_s": n / seconds,
        "ok_per_s": counts["ok"] / seconds,
        "ok": counts["ok"],
        "crossed": counts["crossed"],
        "failed": counts["failed"],
        "lost": counts["lost"],
        "failed_by_status": {str(k): v for k, v in sorted(statuses.items())},
        "slow": int((latency > slow_s).sum()),
        "slow_s": slow_s,
        "p50_ms": float(np.percentile(latency, 50) * 1000),
        "p99_ms": float(np.percentile(latency, 99) * 1000),
        "failed_p50_ms": float(np.percentile(latency[refused], 50) * 1000)
        if refused.any()
        else None,
        "failed_p99_ms": float(np.percentile(latency[refused], 99) * 1000)
        if refused.any()
        else None,
    }
    if killed:
        after = bad & (done_at >= killed["at"])
        report["killed"] = killed["name"]
        report["recovery_s"] = float(done_at[after].max() - killed["at"]) if after.any() else 0.0
    echo(
        f"ok {report['ok']}, crossed {report['crossed']}, failed {report['failed']} "
        f"{report['failed_by_status']}, lost {report['lost']}, slow (> {slow_s:g} s) "
        f"{report['slow']}; {report['requests_per_s']:.1f} requests/s "
        f"({report['ok_per_s']:.1f} ok/s), p50 "
        f"{report['p50_ms']:.0f} ms, p99 {report['p99_ms']:.0f} ms"
    )
    if report["failed_p50_ms"] is not None:
        echo(
            f"failed requests answered in p50 {report['failed_p50_ms']:.0f} ms, "
            f"p99 {report['failed_p99_ms']:.0f} ms"
        )
    if killed:
        echo(f"recovery: last failure {report['recovery_s']:.1f} s after the kill")
    return report
