"""``ceiling``, ``overload`` and ``scaling``: the commands that start Serve themselves (``serve
run`` processes, or the app through Python handles) and measure it; their handlers and flags."""

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
from packing.policy.config import DEFAULT_MODE, MODES
from packing.runtime.dispatch import DISPATCH

from .flags import (
    PROG,
    command,
    model_dir_flag,
    sim_admission_flags,
    workload_flags,
)


def _ceiling(args: argparse.Namespace) -> int:
    from tools.ceiling import (
        AppNotHealthy,
        Settings,
        format_table,
        parse_env,
        resolve_config,
        run_ceiling,
    )

    settings = Settings(
        apps=tuple(args.apps),
        config=resolve_config(args.config),
        concurrency=args.concurrency,
        duration_s=None if args.requests else args.duration_s,
        requests=args.requests,
        warmup_s=args.warmup_s,
        list_size=args.list_size,
        env=parse_env(args.env),
        health_timeout_s=args.health_timeout_s,
        progress=not args.no_progress,
        floor_max_ongoing=args.floor_max_ongoing,
        rounds=args.rounds,
        cohosted=args.cohosted,
    )
    try:
        report = run_ceiling(settings)
    except AppNotHealthy as exc:
        print(
            f"{PROG} ceiling: {exc.app}: {exc}; last lines of its serve log "
            f"(all logs kept in {exc.log_dir}):\n{exc.log_tail}",
            file=sys.stderr,
        )
        if exc.rows:
            print(format_table(exc.rows))
        return 1
    emit(report, args.json, table=report["table"])
    return 0


def _overload(args: argparse.Namespace) -> int:
    from tools.ceiling import AppNotHealthy
    from tools.overload import format_overload, overload

    try:
        report = overload(
            args.config,
            dispatches=args.dispatch,
            rate=args.rate,
            seconds=args.seconds,
            profile=args.sim_profile,
            tokens_per_s=args.tokens_per_s,
            batch_wait_timeout_s=args.batch_wait_timeout_s,
            workload=args.workload,
            concurrency=args.concurrency,
            progress=not args.no_progress,
        )
    except AppNotHealthy as exc:
        print(
            f"{PROG} overload: {exc}; last lines of its serve log:\n{exc.log_tail}", file=sys.stderr
        )
        return 1
    emit(report, args.json, table=format_overload(report))
    return 1 if any(r["lost"] or r["crossed"] for r in report["rows"]) else 0


def _scaling(args: argparse.Namespace) -> int:
    from tools.scaling import format_report, scaling

    data = workload_of(args)
    report = scaling(
        str(Path(args.model_dir).resolve()),
        data,
        replicas=args.replicas,
        profile=args.sim_profile,
        mode=args.mode,
        batch_wait_timeout_s=args.batch_wait_timeout_s,
        outstanding=args.outstanding,
        per_call=args.windows_per_call,
        progress=not args.no_progress,
    )
    emit(report, args.json, table=format_report(report))
    crossed = sum(r["crossed"] for r in report["rows"])
    return 1 if crossed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of ``ceiling``, ``overload`` and ``scaling`` under ``sub``, in that order."""
    ce = command(
        sub,
        _ceiling,
        "ceiling",
        help="the serving front end's ceiling against Ray Serve's "
        "floor: echo, chain and the real app, each in its own `serve run`",
    )
    ce.add_argument(
        "--apps",
        nargs="+",
        choices=["echo", "chain", "app"],
        default=["echo", "chain", "app"],
        help="subset to run (always in this order)",
    )
    ce.add_argument("--config", default="configs/sim.yaml", help="the real app's Serve config")
    ce.add_argument("--concurrency", type=positive_int, default=64, help="closed-loop connections")
    ce.add_argument("--duration-s", type=positive_float, default=20.0, help="measured phase length")
    ce.add_argument(
        "--requests",
        type=positive_int,
        default=None,
        help="measure this many responses instead of --duration-s",
    )
    ce.add_argument(
        "--warmup-s",
        type=float,
        default=2.0,
        help="warm-up (and until every connection had one response)",
    )
    ce.add_argument(
        "--list-size", type=positive_int, default=32, help="questions per list body (app)"
    )
    ce.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for every serve run (repeatable)",
    )
    ce.add_argument(
        "--health-timeout-s",
        type=float,
        default=300.0,
        help="wait this long for GET /healthz == 200",
    )
    ce.add_argument(
        "--floor-max-ongoing",
        type=positive_int,
        default=1024,
        metavar="N",
        help="max_ongoing_requests of the echo/chain deployments (default 1024, "
        "as the app's Ingress; Serve's own default of 5 starves them at 64 "
        "connections)",
    )
    ce.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        metavar="N",
        help="measure every app N times, the order reversed in every other round, "
        "and report the ratios within each round and their median: on a host "
        "whose speed drifts, apps measured minutes apart are not comparable",
    )
    ce.add_argument(
        "--cohosted",
        action="store_true",
        help="run every app in one `serve run` (started once) instead of a fresh "
        "`serve run` per app and round; each app's background work is then paid "
        "during every app's phase",
    )
    report_flags(ce)

    ov = command(
        sub,
        _overload,
        "overload",
        help="the served app past its device's capacity (sim, "
        "static shapes, one runner): merged dispatch against per-batch plans",
    )
    ov.add_argument("--config", default="configs/sim.yaml", help="Serve config to start from")
    ov.add_argument("--dispatch", nargs="+", default=list(DISPATCH), choices=DISPATCH)
    ov.add_argument("--rate", type=positive_float, default=30.0, help="requests/s, open loop")
    ov.add_argument("--seconds", type=positive_float, default=30.0, help="of arrivals")
    sim_admission_flags(ov, "sim profile (slow: static shapes)")
    ov.add_argument(
        "--tokens-per-s",
        type=positive_float,
        default=2048.0,
        help="sim token slots/s (2048: 2 s per 16 x 256 batch)",
    )
    ov.add_argument("--workload", default="short", help="seed | short | squad:FILE")
    ov.add_argument("--concurrency", type=int, default=512, help="client connections at most")
    report_flags(ov)

    sc = command(
        sub,
        _scaling,
        "scaling",
        help="the app on simulated accelerators through Python "
        "handles: throughput at several runner replica counts, and served "
        "batch fill against the in-process PackRunner",
    )
    model_dir_flag(sc)
    workload_flags(sc, 12000)
    sc.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    sim_admission_flags(
        sc,
        "sim device profile (slow: 125 ms per full batch, so the front end is not the bottleneck)",
    )
    sc.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    sc.add_argument("--outstanding", type=int, default=1024, help="windows kept in flight")
    sc.add_argument("--windows-per-call", type=int, default=32)
    report_flags(sc)
