"""The app on a multi-node Ray cluster (ray.cluster_utils.Cluster, in a subprocess of its own):
a head without accelerators, two workers declaring {"IPU": 2}, runners pinned to IPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run_placement(model_dir, tmp_path, *extra, timeout_s=400):
    out = tmp_path / "placement.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "placement",
            "--model-dir",
            str(model_dir),
            "--samples",
            "60",
            "--no-progress",
            "--json",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    report = json.loads(out.read_text()) if out.exists() else None
    return proc, report


def test_runners_land_only_on_accelerator_nodes_and_answer_exactly(tiny_model_dir, tmp_path):
    proc, report = run_placement(tiny_model_dir, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert all(report["checks"].values()), report["checks"]
    runners = [r for r in report["replicas"] if r["deployment"] == "PlanExecutor"]
    assert len(runners) == 4  # every IPU declared: 2 workers x 2
    heads = [n for n, v in report["nodes"].items() if v["head"]]
    assert len(heads) == 1 and "IPU" not in report["nodes"][heads[0]]["resources"]
    for r in runners:
        assert r["node_id"] != heads[0] and r["node_resources"]["IPU"] == 2
    front = [r for r in report["replicas"] if r["deployment"] in ("Packer", "Ingress")]
    assert {r["deployment"] for r in front} == {"Packer", "Ingress"}
    assert all(r["head"] for r in front)  # they ask for a CPU: only the head has them
    assert report["answered"] == report["questions"] == 60 and report["crossed"] == 0
    assert "| PlanExecutor |" in proc.stdout


def test_a_resource_no_node_declares_fails_with_a_clear_message(tiny_model_dir, tmp_path):
    proc, report = run_placement(tiny_model_dir, tmp_path, "--declare", "TPU", "--timeout-s", "15")
    assert proc.returncode == 3 and report is None, proc.stderr[-3000:]
    err = proc.stderr
    assert "PlanExecutor replicas ask for {'IPU': 1} and no node declares 'IPU'" in err
    assert "'TPU': 2.0" in err and "after 15 s" in err


def test_a_host_lost_under_load_loses_nothing_and_serving_continues(tiny_model_dir, tmp_path):
    """One of the two accelerator nodes is removed (no drain) while windows flow: every window
    is answered with its solo answer or failed with an error, none lost or crossed, answers
    keep coming after the removal on the other node's runners."""
    out = tmp_path / "loss.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "node-loss",
            "--model-dir",
            str(tiny_model_dir),
            "--samples",
            "4000",
            "--remove-after-s",
            "2",
            "--sim-tokens-per-s",
            "4000",  # 64 ms per full batch of this model
            "--no-progress",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["lost"] == 0 and r["crossed"] == 0
    assert r["answered"] + r["failed"] == r["windows"] == 4000
    assert r["failed"] == 0 or r["errors"], r  # a failure always says why
    assert r["answered_after_removal"] > 0 and r["runner_replicas_at_end"] == 2


def test_runners_autoscale_across_both_nodes_and_back(tiny_model_dir, tmp_path):
    """One step of load: runners scale from 1 to 4 (every IPU of both workers), the packer's
    dispatch slots follow (2 per replica), and they go back to 1 when the load stops."""
    out = tmp_path / "autoscale.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "autoscale",
            "--model-dir",
            str(tiny_model_dir),
            "--samples",
            "400",
            "--sim-tokens-per-s",
            "4000",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert "runner autoscaling policy: packing" in proc.stdout  # the shipped policy
    assert r["up_s"] is not None and r["down_s"] is not None, r["timeline"]
    assert len(r["peak_runner_nodes"]) == 2  # the runners spread over both accelerator nodes
    assert any(n == 4 and slots == 8 for _, n, slots in r["timeline"]), r["timeline"]
    assert r["timeline"][0][1] == 1 and r["timeline"][-1][1] == 1


JOB_DRIVER = r"""
import json, os, subprocess, sys
from packing.jobs.local_cluster import private_cluster

repo, squad, model_dir, out, summary = sys.argv[1:6]
with private_cluster(2, "IPU", 2) as cluster:
    cmd = ["ray", "job", "submit", "--address", cluster.dashboard_url, "--working-dir", repo,
           "--", "packed-bert", "batch", "--input", squad, "--output", out,
           "--model-dir", model_dir, "--workers", "4", "--num-cpus", "0",
           "--resources", '{"IPU": 1}', "--backend", "sim", "--sim-tokens-per-s", "8000",
           "--json", summary]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    print(proc.stdout[-4000:])
    print(proc.stderr[-4000:], file=sys.stderr)
    sys.exit(proc.returncode)
"""


def test_batch_job_through_ray_job_submit_on_the_multi_node_cluster(tiny_model_dir, tmp_path):
    """What a user runs on a cluster: `ray job submit --working-dir . -- packed-bert batch ...`
    against a private multi-node cluster (head without accelerator, two {"IPU": 2} workers);
    the job's predictor actors are pinned to IPU, every question gets a prediction."""
    from factories import REPO as repo
    from factories import make_squad_file

    squad = make_squad_file(tmp_path)
    out, summary = tmp_path / "pred.json", tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            JOB_DRIVER,
            str(repo),
            str(squad),
            str(tiny_model_dir),
            str(out),
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        env=env,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    preds = json.loads(out.read_text())
    truth = json.loads(squad.read_text())
    ids = {qa["id"] for a in truth["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert set(preds) == ids
    r = json.loads(summary.read_text())
    assert r["questions"] == len(ids) and r["failed"] == 0 and r["metrics"]["count"] == len(ids)
