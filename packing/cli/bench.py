"""``packed-bert bench`` (every run mode on one workload, compared) and ``packed-bert
efficiency`` (offline AttentionMask packing efficiency, no model)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from packing.model.prepared import PreparedModel
from packing.model.quantize import PRECISIONS
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.shapes import DEFAULT_SHAPES
from packing.runners.run_modes import BENCH_MODES
from packing.runtime.admission import DEFAULT_ADMISSION
from packing.runtime.knobs import DEFAULT_MAX_TOKENS

from .common import backend_choice, backend_flags, budget, workload_of
from .report import write_json


def _bench(args: argparse.Namespace) -> int:
    from packing.bench.bench import (
        bench,
        check_precisions,
        compare_precisions,
        format_precisions,
        plot,
    )

    folders = [PreparedModel.open(d) for d in args.model_dir]  # each manifest read once
    check_precisions(folders, args.precision)
    data = workload_of(argparse.Namespace(**{**vars(args), "model_dir": folders[0]}))
    modes = args.modes or list(BENCH_MODES)
    backend, options = backend_choice(args)
    if args.profile:
        return _profile(args, folders, data, backend, options)
    reports = []
    for folder in folders:  # same workload, same modes, one precision after the other
        reports.append(
            bench(
                folder,
                data,
                args.workload,
                modes=modes,
                threads=args.threads,
                concurrency=args.concurrency,
                batch_wait_timeout_s=args.batch_wait_timeout_s,
                check_samples=args.check_samples,
                progress=not args.no_progress,
                backend=backend,
                backend_options=options,
                limit=not args.no_limit,
                max_tokens=args.max_tokens,
                attention_groups=args.attention_groups,
            )
        )
        print("")
    cmp = compare_precisions(reports) if len(reports) > 1 else None
    if cmp:
        print(format_precisions(cmp))
    if args.json:
        write_json(
            args.json,
            reports[0].to_json()
            if cmp is None
            else json.dumps({"runs": [asdict(r) for r in reports], "precisions": cmp}, indent=2),
        )
    if args.plot:
        for i, rep in enumerate(reports):
            path = (
                args.plot if i == 0 else str(Path(args.plot).with_suffix(f".{rep.precision}.png"))
            )
            plot(rep, path)
            print(f"wrote {path}")
    return 0


def _profile(args, folders, data, backend: str, options: dict) -> int:
    from packing.bench.profile import format_profile, profile_folders
    from packing.runtime.host import cpu_features, cpu_model, features_line

    if backend != "onnxruntime":
        raise ValueError(f"--profile runs ONNX Runtime's profiler; not the {backend} backend")
    if args.modes:
        raise ValueError("--profile runs each graph of the folders, not --modes")
    profiles = profile_folders(
        folders,
        data,
        batches=args.profile_batches,
        threads=args.threads,
        max_tokens=args.max_tokens,
        attention_groups=args.attention_groups,
        backend_options=options,
    )
    print(
        f"\nhost: {cpu_model()}, {features_line(cpu_features())}; {args.threads or 'all'} intra-op threads; "
        f"workload {args.workload}, {len(data)} samples"
    )
    print(format_profile(profiles))
    if args.json:
        write_json(args.json, json.dumps([asdict(p) for p in profiles], indent=2))
    return 0


def _efficiency(args: argparse.Namespace) -> int:
    from packing.policy.offline import plan_offline_attention_mask
    from packing.runners.workloads import seed_lengths

    for n in args.samples:
        lengths = seed_lengths(n, args.seq_len, args.seed)
        plans = plan_offline_attention_mask(
            lengths, args.seq_len, args.batch_size, args.max_valid_num
        )
        rows = sum(p.n_rows for p in plans)
        print(
            f"{n} seed sequences: {rows} rows in {len(plans)} batches, offline AttentionMask "
            f"packing efficiency {lengths.sum() / (rows * args.seq_len):.4f}"
        )
    return 0


def register(sub) -> None:
    b = sub.add_parser("bench", help="run every mode on one workload and compare")
    b.add_argument(
        "--model-dir",
        required=True,
        nargs="+",
        metavar="DIR",
        help="a folder written by 'prepare'; several (e.g. its fp32 and int8 "
        "preparations) run one after the other on the same workload",
    )
    b.add_argument(
        "--precision",
        nargs="+",
        choices=list(PRECISIONS),
        default=None,
        help="the precision of each --model-dir, checked against its manifest "
        "(default: read from the manifests)",
    )
    b.add_argument("--samples", type=int, default=1024)
    b.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    b.add_argument(
        "--modes",
        nargs="+",
        choices=list(BENCH_MODES),
        metavar="MODE",
        help=f"subset of: {' '.join(BENCH_MODES)}",
    )
    b.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: all cores)"
    )
    b.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="client threads for online modes (default 2 x max_valid_num)",
    )
    b.add_argument(
        "--batch-wait-timeout-s",
        type=float,
        default=DEFAULT_ADMISSION.batch_wait_timeout_s,
        help="online modes: longest an admitted batch stays open after its first "
        "request (as @serve.batch)",
    )
    b.add_argument(
        "--check-samples",
        type=int,
        default=16,
        help="requests checked against a solo run in every mode",
    )
    b.add_argument("--seed", type=int, default=2022, help="workload RNG seed")
    b.add_argument("--json", help="write the full report here")
    b.add_argument("--plot", help="write a PNG of throughput and p99 latency here")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument(
        "--max-tokens",
        type=budget,
        default=DEFAULT_MAX_TOKENS,
        metavar="N|auto|full",
        help="packed modes' token budget: auto (calibrated for the backend, cached; "
        "the default), an int, or full (batch_size x seq_len)",
    )
    b.add_argument(
        "--attention-groups",
        type=int,
        default=ATTENTION_GROUPS,
        choices=range(1, ATTENTION_GROUPS + 1),
        metavar="G",
        help=f"most unpack/repack attention width groups (1 = rows as wide "
        f"as the batch's longest sequence; default {ATTENTION_GROUPS})",
    )
    b.add_argument(
        "--profile",
        action="store_true",
        help="instead of the modes: profile each graph of each folder on its fullest "
        "batches of the workload and print the time per kind of operator",
    )
    b.add_argument(
        "--profile-batches",
        type=int,
        default=4,
        metavar="N",
        help="--profile: batches counted per graph, after one to warm up (default 4)",
    )
    b.add_argument(
        "--no-limit",
        action="store_true",
        help="skip measuring the dense MatMul rate (the compute limit)",
    )
    backend_flags(b)
    b.set_defaults(func=_bench)


def register_efficiency(sub) -> None:
    ef = sub.add_parser(
        "efficiency",
        help="offline AttentionMask packing efficiency (SPFHP) on seed workloads; no model needed",
    )
    ef.add_argument("--samples", type=int, nargs="+", default=[1000, 2000, 10000])
    ef.add_argument("--seq-len", type=int, default=DEFAULT_SHAPES.seq_len)
    ef.add_argument("--batch-size", type=int, default=DEFAULT_SHAPES.batch_size)
    ef.add_argument("--max-valid-num", type=int, default=DEFAULT_SHAPES.max_valid_num)
    ef.add_argument("--seed", type=int, default=2022)
    ef.set_defaults(func=_efficiency)
