"""Integration tier: the same answer alone or in a crowd over HTTP, bounded work per body, and
work dropped for clients that went away. Apps are deployed next to the session's test app.

* ``default_app``: the default config's app (``configs/squad.yaml``'s args: builtin:squad-mini,
  int8 on the CPU, ``unpack_repack``) at ``/default``.
* ``slow_app``: the test model on the simulated device with static shapes, one runner taking
  one plan at a time, each plan a full second, at ``/slow``; ``fresh_slow_app``: the same, new
  for one test, at ``/fresh``.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from factories import REPO
from serve_apps import deploy_beside
from serve_client import get_stats, make_qa, post, post_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_app(serve_app):
    from deployments.config import AppConfig

    args = yaml.safe_load((REPO / "configs" / "squad.yaml").read_text())["applications"][0]["args"]
    cfg = AppConfig(**{**args, "model_dir": str(serve_app.work / "squad-mini")})
    assert cfg.precision() == "int8" and cfg.packing.mode == "unpack_repack"
    yield from deploy_beside(serve_app, cfg, "squad-default-test", "/default")


def _slow_config(serve_app):
    from deployments.config import AppConfig

    args = dict(serve_app.config["applications"][0]["args"])
    args.pop("fault_file", None)
    shape = args["prepare"]
    full = shape["batch_size"] * shape["seq_len"]
    return AppConfig(
        **{
            **args,
            "model_dir": str(serve_app.model_dir),
            "device": "sim",
            # static shapes: every plan costs the full batch, one second
            "sim": {"profile": "slow", "tokens_per_s": float(full)},
            "max_inflight_requests": 512,
            "packing": {"mode": "unpack_repack", "batch_wait_timeout_s": 0.005, "max_tokens": full},
        }
    )


SLOW_RUNNER = {"num_replicas": 1, "max_ongoing_requests": 1, "ray_actor_options": {"num_cpus": 0}}


@pytest.fixture(scope="module")
def slow_app(serve_app):
    yield from deploy_beside(
        serve_app, _slow_config(serve_app), "squad-slow-test", "/slow", SLOW_RUNNER
    )


@pytest.fixture()
def fresh_slow_app(serve_app):
    """The slow app, deployed for one test: no request has reached it yet."""
    yield from deploy_beside(
        serve_app, _slow_config(serve_app), "squad-fresh-test", "/fresh", SLOW_RUNNER
    )


def _items(n: int, seed: int) -> list[dict]:
    return [
        make_qa(int(w), seed=seed + k)
        for k, w in enumerate([3, 8, 20, 45, 90, 160, 300] * (n // 7 + 1))
    ][:n]


def test_default_app_gives_the_same_scores_alone_and_in_a_crowd(default_app):
    items = _items(140, seed=5000)
    alone = [post(default_app, it) for it in items]  # one at a time
    assert all(status == 200 for status, _, _ in alone), [b for s, b, _ in alone if s != 200][:3]
    bodies = items[:100] + [items[k : k + 8] for k in range(100, 140, 8)]
    crowd = post_all(default_app, bodies, concurrency=48)
    differ = [k for k, (a, c) in enumerate(zip(alone, crowd)) if a[1] != c]
    assert not differ, (
        f"{len(differ)} of {len(items)} answers differ from the same request "
        f"alone, e.g. {alone[differ[0]][1]} vs {crowd[differ[0]]}"
    )
    packer = get_stats(default_app)["packer"]
    assert packer["mean_sequences"] > 1 and packer["batch_invariant"] is True


def _hang_up(url: str, body: dict, after_s: float) -> str:
    """POST ``body`` and close the connection after ``after_s`` without an answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=after_s)
    try:
        conn.request(
            "POST",
            parts.path + "/v1/answer",
            json.dumps(body),
            {"content-type": "application/json"},
        )
        return str(conn.getresponse().status)
    except (TimeoutError, OSError):
        return "gone"
    finally:
        conn.close()


def test_windows_of_clients_that_hung_up_are_not_computed(slow_app):
    before = get_stats(slow_app)["packer"]
    plan = before["knobs"]["max_valid_num"] or 8  # windows per plan
    burst = [make_qa(4, seed=9000 + k) for k in range(120)]  # one window each
    with ThreadPoolExecutor(120) as pool:
        outcomes = list(pool.map(lambda b: _hang_up(slow_app, b, 0.3), burst))
    assert outcomes.count("gone") >= 110, outcomes
    deadline = time.monotonic() + 30
    while get_stats(slow_app)["packer"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.2)
    t0 = time.monotonic()
    status, _, _ = post(slow_app, make_qa(4, seed=1))
    waited = time.monotonic() - t0
    after = get_stats(slow_app)["packer"]
    computed = after["sequences"] - before["sequences"]
    dropped = after["dropped"] - before["dropped"]
    admitted = after["admitted_windows"] - before["admitted_windows"]
    assert status == 200
    # the plans on the device when the clients left finish (one slot: 1-2 plans); every other
    # window was dropped in the packer or never sent to it, and the next request does not
    # wait behind abandoned work
    seen = (computed, dropped, admitted, after["failed_plans"] - before["failed_plans"])
    assert computed <= 2 * plan + 1, seen
    assert admitted == computed + dropped and after["pending"] == 0, seen
    assert waited < 5.0


def test_the_first_client_hanging_up_fails_nobody_behind_it(fresh_slow_app):
    """Serve starts a replica's batch loops in the request that first reaches them, and Ray
    cancels the calls a request made when its client goes away. The first body of a new app
    hangs up while eight bodies wait behind its plan: each of them is answered, no plan
    fails, and the body that left is dropped, not computed for nobody after its plan."""
    url = fresh_slow_app
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(_hang_up, url, make_qa(4, seed=7000), 0.3)
        time.sleep(0.05)
        live = [pool.submit(post, url, make_qa(4, seed=7001 + k)) for k in range(8)]
        outcome = first.result()
        got = [f.result() for f in live]
    packer = get_stats(url)["packer"]
    assert outcome == "gone"
    assert [status for status, _, _ in got] == [200] * 8, [body for _, body, _ in got]
    assert packer["failed_plans"] == 0 and packer["pending"] == 0, packer


def test_a_body_over_the_window_limits_gets_413_alone(serve_app, solo):
    """A body over ``max_windows_per_request`` gets 413 (never a retryable 503), whether it
    is tokenized with other bodies (under BIG_BODY_CHARS) or apart (over it), and the bodies
    tokenized beside it are answered."""
    from deployments.ingress import BIG_BODY_CHARS

    ok = make_qa(6, seed=3)
    # punctuation: a token per character; at the test app's seq_len 64 a few hundred windows
    small = {"question": "what?", "context": "!" * (BIG_BODY_CHARS - 100)}
    big = {"question": "what?", "context": "!" * (BIG_BODY_CHARS + 4000)}
    with ThreadPoolExecutor(5) as pool:
        got = list(pool.map(lambda b: post(serve_app.url, b), [small, ok, [ok, big], ok, big]))
    for k in (0, 2, 4):
        status, body, headers = got[k]
        assert status == 413 and "max_windows_per_request" in body["error"], body
        assert "Retry-After" not in headers
    assert got[2][1]["error"].startswith("item 1: the context takes")
    assert got[1][0] == got[3][0] == 200
    assert got[1][1]["answer"] == got[3][1]["answer"] == solo(ok)["answer"]
