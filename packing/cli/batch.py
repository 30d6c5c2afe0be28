"""``packed-bert batch``: offline packed question answering over Ray Data (packing.jobs.batch)."""

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
    kwargs = dict(mode=args.mode, workers=args.workers, questions_per_block=args.questions_per_block,
                  limit=args.limit, backend=backend, backend_options=options,
                  resources=resources, num_cpus=args.num_cpus, address=args.address)
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
    print(f"{r['questions']} questions ({r['windows']} windows) in {r['seconds']:.1f} s: "
          f"{r['questions_per_s']:.1f} questions/s, {r['windows_per_s']:.1f} windows/s; "
          f"{r['failed']} could not be tokenized; wrote {args.output}")
    print(f"predictors busy {r['busy_seconds']:.1f} s (first block start to last block end, "
          f"actor start-up excluded): {r['busy_questions_per_s']:.1f} questions/s")
    if r["metrics"]:
        m = r["metrics"]
        print(f"exact match {m['exact_match']:.2f}, F1 {m['f1']:.2f} over {m['count']} questions "
              f"(official SQuAD v1.1 normalisation)")
    emit(r, args.json, announce=False)
    return 0


def register(sub) -> None:
    ba = sub.add_parser("batch", help="offline packed question answering over Ray Data: "
                        "SQuAD-format JSON in, {id: answer} predictions out, EM/F1 if answers")
    ba.add_argument("--input", required=True, help="SQuAD v1.1-format JSON")
    ba.add_argument("--output", required=True, help="predictions JSON to write ({id: text})")
    ba.add_argument("--model-dir", required=True, help="a folder written by 'prepare' (on every node)")
    ba.add_argument("--mode", default=DEFAULT_MODE, choices=[*MODES, "original"],
                    help="packed layout, or original: padded batches (the baseline)")
    ba.add_argument("--workers", type=positive_int, default=1, help="predictor actors")
    ba.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per predictor actor")
    ba.add_argument("--resources", default=None, metavar="JSON",
                    help='custom resources per actor, e.g. \'{"IPU": 1}\'')
    ba.add_argument("--questions-per-block", type=positive_int, default=64)
    ba.add_argument("--limit", type=positive_int, default=None, help="first N questions only")
    ba.add_argument("--address", default=None, help="Ray cluster to join (default: the job's, or local)")
    ba.add_argument("--local-cluster-nodes", type=positive_int, default=None, metavar="N",
                    help="run on a private local cluster of N accelerator nodes declaring "
                    "--ipus-per-node IPUs each, one predictor per IPU (use with --backend sim)")
    ba.add_argument("--ipus-per-node", type=positive_int, default=2)
    ba.add_argument("--json", help="write the summary here")
    backend_flags(ba)
    ba.set_defaults(func=_batch)
