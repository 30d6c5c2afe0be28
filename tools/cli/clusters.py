"""``placement``, ``node-loss`` and ``autoscale``: the commands that run the app on a local
multi-node Ray cluster of sim devices; their handlers and flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packing.cli.common import (
    positive_float,
    positive_int,
    report_flags,
    workload_of,
)
from packing.cli.report import emit

from .flags import (
    cluster_flags,
    command,
    model_dir_flag,
    workload_flags,
)


def _placement(args: argparse.Namespace) -> int:
    from tools.cluster import PlacementTimeout, format_placement, placement

    data = workload_of(args)
    try:
        report = placement(
            str(Path(args.model_dir).resolve()),
            data,
            workers=args.workers,
            resource=args.resource,
            per_worker=args.per_worker,
            declared=args.declare,
            runner_replicas=args.runner_replicas,
            timeout_s=args.timeout_s,
            progress=not args.no_progress,
        )
    except PlacementTimeout as exc:
        print(f"placement failed: {exc}", file=sys.stderr)
        return 3
    emit(report, args.json, table=format_placement(report))
    return 0 if all(report["checks"].values()) else 1


def _node_loss(args: argparse.Namespace) -> int:
    from tools.cluster import node_loss

    data = workload_of(args)
    report = node_loss(
        str(Path(args.model_dir).resolve()),
        data,
        workers=args.workers,
        per_worker=args.per_worker,
        profile=args.sim_profile,
        tokens_per_s=args.sim_tokens_per_s,
        remove_after_s=args.remove_after_s,
        progress=not args.no_progress,
    )
    lines = []
    for key in (
        "windows",
        "answered",
        "failed",
        "lost",
        "crossed",
        "removed_after_s",
        "seconds",
        "gap_s",
        "runner_replicas_at_end",
        "errors",
    ):
        value = report[key]
        lines.append(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    emit(report, args.json, table="\n".join(lines), default=str)
    return 0 if report["lost"] == 0 and report["crossed"] == 0 else 1


def _autoscale(args: argparse.Namespace) -> int:
    from tools.cluster import autoscale_step

    data = workload_of(args)
    r = autoscale_step(
        str(Path(args.model_dir).resolve()),
        data,
        workers=args.workers,
        per_worker=args.per_worker,
        profile=args.sim_profile,
        tokens_per_s=args.sim_tokens_per_s,
        policy=args.policy,
    )
    lines = [
        f"runner autoscaling policy: {args.policy}",
        "t (s) | runner replicas | packer dispatch slots",
    ]
    lines += [f"{t:5.1f} | {n} | {slots}" for t, n, slots in r["timeline"]]
    up = f"{r['up_s']:.1f} s" if r["up_s"] is not None else "not reached"
    down = f"{r['down_s']:.1f} s" if r["down_s"] is not None else "not reached"
    lines.append(
        f"load step to {r['max_replicas']} runner replicas: {up}, on "
        f"{len(r['peak_runner_nodes'])} nodes; load stop to 1 replica: {down}"
    )
    emit(r, args.json, table="\n".join(lines))
    return 0 if r["up_s"] is not None and r["down_s"] is not None else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of ``placement``, ``node-loss`` and ``autoscale`` under ``sub``, in that order."""
    pl = command(
        sub,
        _placement,
        "placement",
        help="deploy the app on a local multi-node Ray cluster "
        "(a head without accelerators, workers declaring one) with the runners "
        "pinned to the accelerator; print where every replica landed",
    )
    model_dir_flag(pl)
    pl.add_argument("--workers", type=positive_int, default=2, help="accelerator nodes")
    pl.add_argument("--resource", default="IPU", help="custom resource each runner asks for")
    pl.add_argument("--per-worker", type=positive_int, default=2, help="units each worker declares")
    pl.add_argument(
        "--declare",
        default=None,
        metavar="NAME",
        help="resource the workers declare (default: --resource; another name "
        "shows the error a placement mistake gives)",
    )
    pl.add_argument(
        "--runner-replicas", type=positive_int, default=None, help="default: every unit declared"
    )
    workload_flags(pl, 200)
    pl.add_argument(
        "--timeout-s",
        type=positive_float,
        default=120.0,
        help="give up (exit 3, with what each node has) if the app is not running by then",
    )
    report_flags(pl)

    nl = cluster_flags(
        command(
            sub,
            _node_loss,
            "node-loss",
            help="remove an accelerator node of a local multi-node cluster while "
            "windows flow; count answered / failed / lost / crossed",
        ),
        samples=3000,
    )
    nl.add_argument(
        "--remove-after-s",
        type=positive_float,
        default=4.0,
        help="seconds after the first answer to remove the node",
    )
    nl.add_argument("--no-progress", action="store_true")

    au = cluster_flags(
        command(
            sub,
            _autoscale,
            "autoscale",
            help="a step of load on a local multi-node cluster: runners autoscale "
            "from 1 to every accelerator unit and back; reaction times",
        ),
        samples=2000,
    )
    au.add_argument(
        "--policy",
        choices=["packing", "default"],
        default="packing",
        help="runner autoscaling: packing (the packer's demand in plans, "
        "deployments/autoscaling.py; what configs/squad.yaml uses) or Serve's "
        "default (requests ongoing at the runners)",
    )
