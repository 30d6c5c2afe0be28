"""Integration tier: the app on the simulated accelerator with several runner replicas, deployed
next to the test app on the same session cluster, under high concurrency."""

from __future__ import annotations

import pytest

from deployments.config import config_deployment_options

from factories import REPO
from serve_apps import deploy_beside
from serve_client import get_stats, make_qa, post_all, same_answer

pytestmark = pytest.mark.integration

SIM_APP, SIM_PREFIX, RUNNERS = "squad-sim-test", "/sim", 3
SLOTS = config_deployment_options(REPO / "configs" / "sim.yaml", "PlanExecutor")[
    "max_ongoing_requests"
]  # per runner


@pytest.fixture(scope="module")
def sim_app(serve_app):
    """``device: sim`` app (profile ipu, 3 PlanExecutor replicas) at ``/sim``; deleted after."""
    from deployments.config import AppConfig

    args = dict(serve_app.config["applications"][0]["args"])
    args.pop("fault_file", None)
    full = args["prepare"]["batch_size"] * args["prepare"]["seq_len"]
    cfg = AppConfig(
        **{
            **args,
            "model_dir": str(serve_app.model_dir),
            "device": "sim",
            "sim": {"profile": "ipu"},
            "max_inflight_requests": 512,
            # the budget pinned (not calibrated on this host): the test counts how
            # requests share plans
            "packing": {"mode": "unpack_repack", "batch_wait_timeout_s": 0.005, "max_tokens": full},
        }
    )
    yield from deploy_beside(
        serve_app,
        cfg,
        SIM_APP,
        SIM_PREFIX,
        {
            "num_replicas": RUNNERS,
            "max_ongoing_requests": SLOTS,
            "ray_actor_options": {"num_cpus": 0},
        },
    )


def test_sim_app_gives_every_request_its_solo_answer_under_load(sim_app, serve_app):
    from tools.soak import solo_answers

    items = [
        make_qa(int(n), seed=1000 + k) for k, n in enumerate([5, 12, 30, 60, 90, 140] * 40)
    ]  # 1 to several windows each
    answering = get_stats(sim_app)["answering"]
    want = solo_answers(
        serve_app.model_dir, items, answering, backend="sim", backend_options={"profile": "fast"}
    )  # same logits, no sleeping
    bodies = [items[k] for k in range(200)] + [items[k : k + 5] for k in range(200, 240, 5)]
    got = post_all(sim_app, bodies, concurrency=64)
    assert len(got) == len(items)
    crossed = [k for k, (g, w) in enumerate(zip(got, want)) if not same_answer(g, w)]
    assert not crossed, (
        f"{len(crossed)} answers differ from their solo answers, first {crossed[:5]}"
    )
    packer = get_stats(sim_app)["packer"]
    assert packer["runner_replicas"] == RUNNERS and packer["dispatch_slots"] == SLOTS * RUNNERS
    assert packer["failed_plans"] == 0 and packer["pending"] == 0
    assert packer["mean_sequences"] > 1  # requests shared batches
    # admission is @serve.batch with its knobs resolved (max_batch_size: one full plan), and
    # each plan packs more than one admitted batch on average: the dispatch step merges
    from packing.model.manifest import Manifest

    full = Manifest.read(serve_app.model_dir).max_valid_num
    assert packer["admission"] == {
        "max_batch_size": full,
        "batch_wait_timeout_s": 0.005,
        "max_concurrent_batches": packer["knobs"]["max_pending"],
    }
    assert packer["admitted_windows"] == packer["sequences"] + packer["dropped"]
    assert packer["merged_plans"] > 0 and packer["waiting"] == 0
