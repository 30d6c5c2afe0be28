"""``packed-bert eval``: EM / F1 of a model folder under Original and every packed mode."""

from __future__ import annotations

import argparse

from .common import report_flags


def _eval(args: argparse.Namespace) -> int:
    from packing.jobs.evaluate import EVAL_MODES, format_table, report, run_eval

    from .report import emit

    modes = [] if args.http_only else (args.modes or list(EVAL_MODES))
    questions, scores = run_eval(
        args.model_dir,
        args.squad,
        split=args.split,
        limit=args.limit,
        modes=modes,
        url=args.url,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(
        f"{len(questions)} questions ({args.split} split of {args.squad}), model {args.model_dir}"
    )
    emit(report(scores), args.json, table=format_table(scores, len(questions)))
    return 0


def register(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="EM / F1 of a model folder under Original and every "
        "packed mode, side by side (and of a running app with --url)",
    )
    ev.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    ev.add_argument("--squad", required=True, help="SQuAD v1.1 json")
    ev.add_argument(
        "--split",
        choices=["heldout", "train", "all"],
        default="heldout",
        help="articles to score (default: the held-out ones of 'train')",
    )
    ev.add_argument("--limit", type=int, default=None, help="first N questions of the split")
    ev.add_argument("--modes", nargs="+", metavar="MODE", help="subset of the modes")
    ev.add_argument(
        "--url", help="also score the running app, e.g. http://127.0.0.1:8000/v1/answer"
    )
    ev.add_argument("--http-only", action="store_true", help="score only the app at --url")
    ev.add_argument("--threads", type=int, default=None, help="intra-op threads")
    report_flags(ev, "write the scores here")
    ev.set_defaults(func=_eval)
