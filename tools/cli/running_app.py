"""``loadtest``, ``soak``, ``crowd`` and ``abandon``: the commands that drive an app already
running at ``--url``; their handlers and their flags."""

from __future__ import annotations

import argparse
import sys

from packing.cli.common import (
    backend_choice,
    backend_flags,
    positive_float,
    positive_int,
    report_flags,
)
from packing.cli.report import emit

from .flags import (
    app_client,
    command,
)


def _loadtest(args: argparse.Namespace) -> int:
    from tools.loadtest import loadtest

    backend, options = backend_choice(args)
    report = loadtest(
        args.url,
        args.model_dir,
        args.workload,
        args.samples,
        args.concurrency,
        inprocess=not args.no_inprocess,
        threads=args.threads,
        progress=not args.no_progress,
        backend=backend,
        backend_options=options,
    )
    emit(report, args.json)
    errors = report["http"]["errors"]
    return 1 if errors else 0


def _soak(args: argparse.Namespace) -> int:
    from tools.soak import soak

    report = soak(
        args.url,
        args.model_dir,
        args.workload,
        args.requests,
        args.concurrency,
        distinct=args.distinct,
        slow_s=args.slow_s,
        kill_replica=args.kill_replica,
        rate=args.rate,
        progress=not args.no_progress,
    )
    emit(report, args.json)
    if report["lost"] or report["crossed"]:
        print(f"FAIL: {report['lost']} lost, {report['crossed']} crossed", file=sys.stderr)
        return 1
    return 0


def _crowd(args: argparse.Namespace) -> int:
    from tools.crowd import crowd, format_crowd

    report = crowd(
        args.url,
        args.requests,
        args.concurrency,
        list_size=args.list_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    emit(report, args.json, table=format_crowd(report))
    bad = report["lost"] or report["failed"] or report["differ"]
    if bad:
        print(
            f"FAIL: {report['lost']} lost, {report['failed']} failed, {report['differ']} "
            f"differ from the same request alone",
            file=sys.stderr,
        )
    return 1 if bad else 0


def _abandon(args: argparse.Namespace) -> int:
    from tools.crowd import abandon, format_abandon

    report = abandon(args.url, args.requests, args.hang_up_s, seed=args.seed)
    emit(report, args.json, table=format_abandon(report))
    return 0 if report["live_status"] == 200 else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of ``loadtest``, ``soak``, ``crowd`` and ``abandon`` under ``sub``, in that order."""
    lt = app_client(
        command(
            sub,
            _loadtest,
            "loadtest",
            help="concurrent HTTP requests to a running "
            "app, compared with the in-process PackRunner",
        )
    )
    lt.add_argument("--samples", type=int, default=512)
    lt.add_argument("--concurrency", type=int, default=80)
    lt.add_argument("--threads", type=int, default=None, help="in-process intra-op threads")
    lt.add_argument("--no-inprocess", action="store_true", help="HTTP side only")
    backend_flags(lt)

    so = app_client(
        command(
            sub,
            _soak,
            "soak",
            help="drive a running app and check every answer "
            "against its solo answer; exits 1 on any lost or crossed "
            "request",
        )
    )
    so.add_argument("--requests", type=int, default=10000)
    so.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="clients (closed loop), or connections at most (with --rate)",
    )
    so.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="REQ_PER_S",
        help="open loop: Poisson arrivals at this rate instead of closed-loop clients",
    )
    so.add_argument("--distinct", type=int, default=500, help="different requests, cycled")
    so.add_argument(
        "--slow-s", type=float, default=10.0, help="answers slower than this count as slow"
    )
    so.add_argument(
        "--kill-replica",
        metavar="DEPLOYMENT",
        help="kill one replica of this deployment (e.g. PlanExecutor) a quarter in",
    )

    cr = command(
        sub,
        _crowd,
        "crowd",
        help="every request alone, then all concurrently: "
        "each crowd answer must equal its alone answer exactly; exits 1 otherwise",
    )
    cr.add_argument("--url", default="http://127.0.0.1:8000")
    cr.add_argument("--requests", type=positive_int, default=1000)
    cr.add_argument("--concurrency", type=positive_int, default=64)
    cr.add_argument(
        "--list-size",
        type=positive_int,
        default=8,
        help="a quarter of the requests go in list bodies of this size",
    )
    cr.add_argument("--seed", type=int, default=0)
    report_flags(cr)

    ab = command(
        sub,
        _abandon,
        "abandon",
        help="a burst of requests whose clients hang up: "
        "windows computed, dropped and discarded, and the next request's latency",
    )
    ab.add_argument("--url", default="http://127.0.0.1:8000")
    ab.add_argument("--requests", type=positive_int, default=600)
    ab.add_argument("--hang-up-s", type=positive_float, default=0.3)
    ab.add_argument("--seed", type=int, default=0)
    report_flags(ab)
