"""Integration tier: the Serve app started from configs/test.yaml as ``serve run`` does."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from packing.runners import ModelRunner
from packing.runtime.features import Features

from serve_client import get_stats, make_qa, post, same_answer

pytestmark = pytest.mark.integration


def test_http_answer_and_health(serve_app, solo):
    qa = make_qa(30, seed=1)
    status, body, _ = post(serve_app.url, qa)
    assert status == 200
    assert body["model"] == "random:tiny"
    assert same_answer(body, solo(qa))
    assert body["answer"] == qa["context"][body["start"] : body["end"]]
    with urllib.request.urlopen(serve_app.url + "/healthz") as r:
        assert json.loads(r.read()) == {"status": "ok", "model": "random:tiny"}
    with urllib.request.urlopen(serve_app.url + "/openapi.json") as r:
        assert "/v1/answer" in json.loads(r.read())["paths"]


def test_list_body_answers_each_item(serve_app, solo):
    items = [make_qa(n, seed=n) for n in (5, 40, 90)]
    status, body, _ = post(serve_app.url, items)
    assert status == 200 and len(body) == 3
    assert all(same_answer(b, solo(qa)) for b, qa in zip(body, items))


def test_long_context_is_split_into_windows(serve_app, solo):
    qa = make_qa(400, seed=7)
    want = solo(qa)
    assert want["windows"] >= 5
    status, body, _ = post(serve_app.url, qa)
    assert status == 200 and same_answer(body, want)


def test_concurrent_mixed_requests_each_get_their_own_answer(serve_app, solo):
    rng = np.random.default_rng(3)
    items = [make_qa(int(n), seed=1000 + i) for i, n in enumerate(rng.integers(1, 120, size=200))]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda qa: post(serve_app.url, qa), items))
    assert [s for s, _, _ in results] == [200] * len(items)
    wrong = [
        i
        for i, ((_, body, _), qa) in enumerate(zip(results, items))
        if not same_answer(body, solo(qa))
    ]
    assert not wrong, f"{len(wrong)} requests got another answer, e.g. {wrong[:5]}"
    stats = get_stats(serve_app.url)["packer"]
    assert stats["batches"] < stats["sequences"]  # requests really shared batches
    assert stats["failed_plans"] == 0


def test_python_handles(serve_app, solo):
    """A DeploymentHandle call from another driver: the app's ``ask`` and the packer's logits."""
    import ray
    from ray import serve

    ray.init(
        address=serve_app.ray_address,
        namespace="serve",
        ignore_reinit_error=True,
        log_to_driver=False,
    )
    try:
        qa = make_qa(25, seed=11)
        got = (
            serve.get_app_handle(serve_app.app)
            .ask.remote(qa["question"], qa["context"])
            .result(timeout_s=60)
        )
        assert same_answer(got, solo(qa)) and got["model"] == "random:tiny"

        packer = serve.get_deployment_handle("Packer", serve_app.app)
        rng = np.random.default_rng(5)
        feats = [
            Features(rng.integers(1000, 30522, size=int(n)), np.zeros(int(n), dtype=np.int64))
            for n in rng.integers(1, 65, size=40)
        ]
        responses = [packer.remote(f) for f in feats]  # concurrent: packed together
        runner = ModelRunner(serve_app.model_dir, batch_size=1, padding="longest")
        for f, resp in zip(feats, responses):
            got_logits, want = resp.result(timeout_s=60), runner.run([f])[0]
            assert np.abs(got_logits.start_logits - want.start_logits).max() <= 1e-4
            assert np.abs(got_logits.end_logits - want.end_logits).max() <= 1e-4
    finally:
        ray.shutdown()


def test_metrics_reach_the_prometheus_endpoint(serve_app):
    """The packer's and ingress's metrics show on the node's metrics export port."""
    import time

    import ray

    post(serve_app.url, make_qa(10, seed=5))
    ray.init(
        address=serve_app.ray_address,
        namespace="serve",
        ignore_reinit_error=True,
        log_to_driver=False,
    )
    try:
        port = ray.nodes()[0]["MetricsExportPort"]
    finally:
        ray.shutdown()
    wanted = {
        "ray_packed_bert_batch_packing_efficiency",
        "ray_packed_bert_batch_sequences",
        "ray_packed_bert_packer_wait_seconds",
        "ray_packed_bert_requests",
    }
    deadline, seen = time.monotonic() + 60, set()
    while time.monotonic() < deadline and seen != wanted:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        seen = {w for w in wanted if w in text}
        time.sleep(2)
    assert seen == wanted


BAD = [
    ("missing question", {"context": "some text"}, None, "application/json"),
    ("empty context", {"question": "who?", "context": "   "}, None, "application/json"),
    ("wrong type", {"question": 3, "context": "text"}, None, "application/json"),
    ("list of non-objects", ["who?"], None, "application/json"),
    ("empty list", [], None, "application/json"),
    ("unknown field", {"question": "q", "context": "c", "extra": 1}, None, "application/json"),
    ("invalid JSON", None, b'{"question": "q", ', "application/json"),
    ("not UTF-8", None, b'{"question": "\xff\xfe", "context": "x"}', "application/json"),
    ("NUL character", {"question": "who\u0000?", "context": "text"}, None, "application/json"),
    ("lone surrogate", None, b'{"question": "a\\ud800", "context": "text"}', "application/json"),
    (
        "question too long for the sequence",
        {"question": "why " * 200, "context": "text"},
        None,
        "application/json",
    ),
    (
        "body over the limit",
        None,
        b'{"question": "q", "context": "' + b"a" * 1_100_000 + b'"}',
        "application/json",
    ),
    ("wrong content type", {"question": "q", "context": "c"}, None, "text/plain"),
    ("deeply nested JSON", None, b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (
        "list over max_batch_items",
        [{"question": "q", "context": "c"}] * 65,
        None,
        "application/json",
    ),
    ("question over max chars", {"question": "q" * 2001, "context": "c"}, None, "application/json"),
    ("NaN literal", None, b'{"question": NaN, "context": "c"}', "application/json"),
    ("top-level number", 42, None, "application/json"),
    ("empty body", None, b"", "application/json"),
    ("null fields", {"question": None, "context": None}, None, "application/json"),
    (
        "control character in context",
        {"question": "q", "context": "a\x07b"},
        None,
        "application/json",
    ),
]


@pytest.mark.parametrize("name,body,raw,ctype", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_with_one_line(serve_app, solo, name, body, raw, ctype):
    status, resp, _ = post(serve_app.url, body, ctype=ctype, raw=raw)
    assert 400 <= status < 500, (name, status, resp)
    assert set(resp) == {"error"} and resp["error"] and "\n" not in resp["error"]
    assert "Traceback" not in resp["error"]
    qa = make_qa(12, seed=99)
    status, good, _ = post(serve_app.url, qa)  # and the app keeps serving
    assert status == 200 and same_answer(good, solo(qa))


def test_loadtest_command(serve_app, tmp_path):
    from tools.cli import main

    js = tmp_path / "lt.json"
    assert (
        main(
            [
                "loadtest",
                "--url",
                serve_app.url,
                "--model-dir",
                str(serve_app.model_dir),
                "--samples",
                "60",
                "--concurrency",
                "16",
                "--json",
                str(js),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(js.read_text())
    assert report["http"]["errors"] == 0 and report["inprocess"]["errors"] == 0
    assert report["http"]["requests"] == 60
    assert 0 < report["http"]["efficiency"] <= 1
    assert report["ratio"] > 0
