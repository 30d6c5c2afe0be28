"""``packed-bert batch``: offline packed inference over Ray Data for the model folder's task:
qa, embed or classify (packing.jobs.batch)."""

from __future__ import annotations

import argparse
import json

from packing.policy.config import DEFAULT_MODE, MODES

from .common import backend_choice, backend_flags, positive_int
from .report import emit


def _batch(args: argparse.Namespace) -> int:
    from packing.jobs.batch import run_batch

    backend, options = backend_choice(args)
    resources = json.loads(args.resources) if args.resources else None
    kwargs = dict(
        mode=args.mode,
        workers=args.workers,
        inputs_per_block=args.inputs_per_block,
        limit=args.limit,
        backend=backend,
        backend_options=options,
        resources=resources,
        num_cpus=args.num_cpus,
        address=args.address,
        truncate=args.truncate,
        normalize=args.normalize,
    )
    if args.local_cluster_nodes:
        # a private multi-node cluster here: accelerator nodes declaring {"IPU": per node},
        # one predictor actor per IPU, pinned to it (no CPU asked)
        from packing.jobs.local_cluster import private_cluster

        per = args.ipus_per_node
        kwargs.update(workers=args.local_cluster_nodes * per, resources={"IPU": 1}, num_cpus=0)
        with private_cluster(args.local_cluster_nodes, "IPU", per):
            r = run_batch(args.input, args.output, args.model_dir, **kwargs)
    else:
        r = run_batch(args.input, args.output, args.model_dir, **kwargs)
    if r["task"] == "qa":
        _print_qa(r, args.output)
    else:
        print(
            f"{r['texts']} texts ({r['tokens']} tokens) in {r['seconds']:.1f} s: "
            f"{r['texts_per_s']:.1f} texts/s, {r['tokens_per_s']:.1f} tokens/s; "
            f"{r['failed']} error lines; wrote {args.output}"
        )
        print(
            f"predictors busy {r['busy_seconds']:.1f} s (first block start to last block "
            f"end, actor start-up excluded): {r['busy_texts_per_s']:.1f} texts/s"
        )
    emit(r, args.json, announce=False)
    return 0


def _print_qa(r: dict, output: str) -> None:
    print(
        f"{r['questions']} questions ({r['windows']} windows) in {r['seconds']:.1f} s: "
        f"{r['questions_per_s']:.1f} questions/s, {r['windows_per_s']:.1f} windows/s; "
        f"{r['failed']} could not be tokenized; wrote {output}"
    )
    print(
        f"predictors busy {r['busy_seconds']:.1f} s (first block start to last block end, "
        f"actor start-up excluded): {r['busy_questions_per_s']:.1f} questions/s"
    )
    if r["metrics"]:
        m = r["metrics"]
        print(
            f"exact match {m['exact_match']:.2f}, F1 {m['f1']:.2f} over {m['count']} questions "
            f"(official SQuAD v1.1 normalisation)"
        )


def register(sub) -> None:
    ba = sub.add_parser(
        "batch",
        help="offline packed inference over Ray Data, for the model folder's task",
        description="Offline packed inference over Ray Data; the task is the model folder's "
        "(its manifest). qa: SQuAD v1.1-format JSON in, {id: answer} JSON out, EM/F1 printed "
        'when the input has answers. embed: JSONL in, one {"id", "text"} per line; '
        'JSONL out, one {"id", "embedding": [floats]} per line. classify: JSONL in, '
        '{"id", "text"} or {"id", "text", "text_pair"} per line; JSONL out, '
        '{"id", "scores": [{"label", "score"}, ...]} highest first. An embed or '
        'classify line the model cannot take is {"id", "error"} and the job goes on.',
    )
    ba.add_argument(
        "--input", required=True, help="qa: SQuAD v1.1-format JSON; embed, classify: JSONL"
    )
    ba.add_argument(
        "--output",
        required=True,
        help="file to write: qa: JSON {id: text}; embed, classify: JSONL, one line "
        "per input line, in input order",
    )
    ba.add_argument(
        "--model-dir",
        required=True,
        help="a folder written by 'prepare' (on every node); its task decides the formats",
    )
    ba.add_argument(
        "--mode",
        default=DEFAULT_MODE,
        choices=[*MODES, "original"],
        help="packed layout, or original: padded batches (the baseline)",
    )
    ba.add_argument("--workers", type=positive_int, default=1, help="predictor actors")
    ba.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per predictor actor")
    ba.add_argument(
        "--resources",
        default=None,
        metavar="JSON",
        help="custom resources per actor, e.g. '{\"IPU\": 1}'",
    )
    ba.add_argument(
        "--inputs-per-block",
        "--questions-per-block",
        dest="inputs_per_block",
        type=positive_int,
        default=64,
        help="questions (qa) or input lines (embed, classify) per block",
    )
    ba.add_argument(
        "--limit", type=positive_int, default=None, help="first N questions or input lines only"
    )
    ba.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="embed, classify: cut a text over the folder's seq_len tokens to it "
        '(the default); --no-truncate: its line is {"id", "error"} instead',
    )
    ba.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="embed: L2-normalise the vectors (default: as the folder says, its "
        "manifest's task.normalize)",
    )
    ba.add_argument(
        "--address", default=None, help="Ray cluster to join (default: the job's, or local)"
    )
    ba.add_argument(
        "--local-cluster-nodes",
        type=positive_int,
        default=None,
        metavar="N",
        help="run on a private local cluster of N accelerator nodes declaring "
        "--ipus-per-node IPUs each, one predictor per IPU (use with --backend sim)",
    )
    ba.add_argument("--ipus-per-node", type=positive_int, default=2)
    ba.add_argument("--json", help="write the summary here")
    backend_flags(ba)
    ba.set_defaults(func=_batch)
