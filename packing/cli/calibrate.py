"""``packed-bert calibrate``: measure and cache the token budget of ``max_tokens: auto``."""

from __future__ import annotations

import argparse
import json

from .common import (
    backend_choice,
    backend_flags,
    non_negative_float,
    positive_float,
    positive_int,
    unit_fraction,
)
from .report import emit


def _calibrate(args: argparse.Namespace) -> int:
    from packing.runtime.calibrate import MAX_OTHERS_LOAD, cache_path, load_or_calibrate

    backend, options = backend_choice(args)
    if args.threads is not None:
        if backend != "onnxruntime":
            raise ValueError("--threads is an onnxruntime option; the sim backend ignores it")
        options["intra_op_threads"] = args.threads
    cal = load_or_calibrate(
        args.model_dir,
        backend,
        options,
        threshold=args.threshold,
        plan_overhead_s=args.plan_overhead_s,
        force=args.force,
        progress=not args.no_progress,
        min_time_s=args.min_time_s,
    )
    how = "read from the cache" if cal.from_cache else f"measured in {cal.seconds:.1f} s"
    print(
        f"token budget calibration of {args.model_dir} on {cal.backend} ({how}; "
        f"measured {cal.measured_at}, fingerprint {cal.fingerprint})"
    )
    print(cal.table())
    print(f"max_tokens = {cal.max_tokens} ({cal.rule})")
    if cal.others_load is not None:
        print(f"other processes took {cal.others_load:.0%} of the host's CPU while measuring")
    path = cache_path(args.model_dir)
    try:  # this calibration (not an older one) is the file's entry for its fingerprint
        entry = json.loads(path.read_text())[cal.fingerprint]
        cached = entry["measured_at"] == cal.measured_at
    except (OSError, ValueError, TypeError, KeyError):
        cached = False
    if cached:
        print(f"cached in {path}")
    elif cal.others_load is not None and cal.others_load > MAX_OTHERS_LOAD:
        print(
            f"not cached: the host was busy (over {MAX_OTHERS_LOAD:.0%}); run it again when quiet"
        )
    else:
        print(f"not cached: {path} could not be written")
    emit(cal.to_dict(), args.json)
    return 0


def register(sub) -> None:
    ca = sub.add_parser(
        "calibrate",
        help="measure the backend's throughput against the batch "
        "token budget and cache the budget runners and the served packer use "
        "for max_tokens 'auto' (calibration.json in the model folder)",
    )
    ca.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    ca.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: its own, all cores)",
    )
    ca.add_argument(
        "--threshold",
        type=unit_fraction,
        default=0.95,
        help="pick the smallest budget with at least this fraction of the best "
        "throughput (default 0.95)",
    )
    ca.add_argument(
        "--plan-overhead-s",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="pick as served: add S seconds to every batch's time (the served app's "
        "plan_overhead_s; default 0, as an in-process runner)",
    )
    ca.add_argument(
        "--min-time-s",
        type=positive_float,
        default=1.0,
        help="time each budget for at least this long (and 3 batches)",
    )
    ca.add_argument("--force", action="store_true", help="measure even if a cached entry matches")
    ca.add_argument("--json", help="write the calibration here too")
    ca.add_argument("--no-progress", action="store_true")
    backend_flags(ca)
    ca.set_defaults(func=_calibrate)
