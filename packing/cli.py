"""``packed-bert``: prepare model folders and benchmark the run modes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packing.bench.modes import MODES
from packing.model.quantize import PRECISIONS
from packing.policy.attention import ATTENTION_GROUPS
from packing.runtime.admission import DEFAULT_ADMISSION


def _prepare(args: argparse.Namespace) -> int:
    from packing.model.prepare import prepare

    prepare(args.model, args.out, seq_len=args.seq_len, batch_size=args.batch_size,
            max_valid_num=args.max_valid_num, seed=args.seed, check=not args.no_check,
            precision=args.precision)
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from packing.train.loop import TrainConfig, compare_layouts, train

    cfg = TrainConfig(squad_path=args.squad, seq_len=args.seq_len, epochs=args.epochs,
                      max_steps=args.max_steps, lr=args.lr, rank=args.rank, seed=args.seed,
                      layout=args.layout, seqs_per_step=args.seqs_per_step)
    if args.compare_steps:
        got = compare_layouts(cfg, args.compare_steps, progress=not args.no_progress)
        pad, pack = got["padded"], got["packed"]
        print(f"{args.compare_steps} steps of {cfg.seqs_per_step} windows each, same windows and "
              f"order (threads {cfg.threads}):")
        print(f"{'layout':<8} {'seconds':>8} {'token slots':>12} {'real tokens':>12} {'final loss':>11}")
        for name, r in got.items():
            print(f"{name:<8} {r['seconds']:8.1f} {r['token_slots']:12d} {r['real_tokens']:12d} "
                  f"{r['final_loss']:11.4f}")
        print(f"packed / padded: {pad['seconds'] / pack['seconds']:.2f}x faster, "
              f"{pad['token_slots'] / pack['token_slots']:.2f}x fewer token slots")
        return 0
    stats = train(cfg, out_dir=args.out, progress=not args.no_progress)
    print(json.dumps(stats))
    print(f"wrote {args.out}/delta.safetensors and delta.json")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from packing.jobs.evaluate import EVAL_MODES, run_eval

    modes = [] if args.http_only else (args.modes or list(EVAL_MODES))
    run_eval(args.model_dir, args.squad, split=args.split, limit=args.limit, modes=modes,
             url=args.url, threads=args.threads, output=args.json, progress=not args.no_progress)
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from packing.bench.bench import (bench, check_precisions, compare_precisions,
                                     format_precisions, plot)

    folders = args.model_dir
    check_precisions(folders, args.precision)
    data = _workload_of(argparse.Namespace(**{**vars(args), "model_dir": folders[0]}))
    modes = args.modes or list(MODES)
    backend, options = _backend_choice(args)
    reports = []
    for folder in folders:  # same workload, same modes, one precision after the other
        reports.append(bench(folder, data, args.workload, modes=modes, threads=args.threads,
                             concurrency=args.concurrency,
                             batch_wait_timeout_s=args.batch_wait_timeout_s,
                             check_samples=args.check_samples, progress=not args.no_progress,
                             backend=backend, backend_options=options, limit=not args.no_limit,
                             max_tokens=args.max_tokens, attention_groups=args.attention_groups))
        print("")
    cmp = compare_precisions(reports) if len(reports) > 1 else None
    if cmp:
        print(format_precisions(cmp))
    if args.json:
        body = reports[0].to_json() if cmp is None else json.dumps(
            {"runs": [asdict(r) for r in reports], "precisions": cmp}, indent=2)
        Path(args.json).write_text(body + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        for i, rep in enumerate(reports):
            path = args.plot if i == 0 else str(Path(args.plot).with_suffix(f".{rep.precision}.png"))
            plot(rep, path)
            print(f"wrote {path}")
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    import json

    from packing.bench.loadtest import loadtest

    backend, options = _backend_choice(args)
    report = loadtest(args.url, args.model_dir, args.workload, args.samples, args.concurrency,
                      inprocess=not args.no_inprocess, threads=args.threads,
                      progress=not args.no_progress, backend=backend, backend_options=options)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    errors = report["http"]["errors"]
    return 1 if errors else 0


def _backend_choice(args: argparse.Namespace) -> tuple[str, dict]:
    """(backend name, its options) from --backend / --sim-profile / --sim-tokens-per-s.

    The sim options need ``--backend sim``; a bad profile name or speed is a ValueError
    (one line, exit 2) raised by the sim itself.
    """
    if args.backend != "sim":
        given = [flag for flag, value in (("--sim-profile", args.sim_profile),
                                          ("--sim-tokens-per-s", args.sim_tokens_per_s))
                 if value is not None]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise ValueError(f"{' and '.join(given)} {verb} --backend sim")
        return args.backend, {}
    from packing.runtime.sim import sim_profile

    options = {"profile": args.sim_profile or "ipu"}
    if args.sim_tokens_per_s is not None:
        options["tokens_per_s"] = args.sim_tokens_per_s
    sim_profile(options["profile"], options.get("tokens_per_s"))  # fail before any work
    return "sim", options


def _backend_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--backend and the sim backend's options (see packing.runtime.sim)."""
    p.add_argument("--backend", choices=["onnxruntime", "sim"], default="onnxruntime",
                   help="model runtime: onnxruntime, or sim (a simulated accelerator that "
                   "sleeps for its device time and returns deterministic logits)")
    p.add_argument("--sim-profile", default=None, metavar="NAME",
                   help="sim device profile: ipu (default; static shapes, 1,861 padded "
                   "16x256 sequences/s), slow (static, 125 ms per full batch) or fast "
                   "(dynamic shapes, never the bottleneck)")
    p.add_argument("--sim-tokens-per-s", type=_positive_float, default=None, metavar="N",
                   help="override the sim profile's speed (token slots per second)")
    return p


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _soak(args: argparse.Namespace) -> int:
    import json

    from packing.bench.soak import soak

    report = soak(args.url, args.model_dir, args.workload, args.requests, args.concurrency,
                  distinct=args.distinct, slow_s=args.slow_s, kill_replica=args.kill_replica,
                  rate=args.rate, progress=not args.no_progress)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if report["lost"] or report["crossed"]:
        print(f"FAIL: {report['lost']} lost, {report['crossed']} crossed", file=sys.stderr)
        return 1
    return 0


def _ceiling(args: argparse.Namespace) -> int:
    import json

    from packing.bench.ceiling import (AppNotHealthy, Settings, format_table, parse_env,
                                       resolve_config, run_ceiling)

    settings = Settings(apps=tuple(args.apps), config=resolve_config(args.config),
                        concurrency=args.concurrency,
                        duration_s=None if args.requests else args.duration_s,
                        requests=args.requests, warmup_s=args.warmup_s, list_size=args.list_size,
                        env=parse_env(args.env), health_timeout_s=args.health_timeout_s,
                        progress=not args.no_progress, floor_max_ongoing=args.floor_max_ongoing)
    try:
        report = run_ceiling(settings)
    except AppNotHealthy as exc:
        print(f"packed-bert ceiling: {exc.app}: {exc}; last lines of its serve log "
              f"(all logs kept in {exc.log_dir}):\n{exc.log_tail}", file=sys.stderr)
        if exc.rows:
            print(format_table(exc.rows))
        return 1
    print(report["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _overload(args: argparse.Namespace) -> int:
    import json

    from packing.bench.ceiling import AppNotHealthy
    from packing.bench.overload import format_overload, overload

    try:
        report = overload(args.config, dispatches=args.dispatch, rate=args.rate,
                          seconds=args.seconds, profile=args.sim_profile,
                          tokens_per_s=args.tokens_per_s,
                          batch_wait_timeout_s=args.batch_wait_timeout_s,
                          workload=args.workload, concurrency=args.concurrency,
                          progress=not args.no_progress)
    except AppNotHealthy as exc:
        print(f"packed-bert overload: {exc}; last lines of its serve log:\n{exc.log_tail}",
              file=sys.stderr)
        return 1
    print(format_overload(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if any(r["lost"] or r["crossed"] for r in report["rows"]) else 0


def _workload_of(args: argparse.Namespace) -> list:
    """The features of ``--workload`` / ``--samples`` / ``--seed`` for ``--model-dir``."""
    from packing.bench.workloads import load_workload
    from packing.model.manifest import Manifest

    manifest = Manifest.read(args.model_dir)
    return load_workload(args.workload, args.samples, args.model_dir, manifest.seq_len,
                         manifest.dims.vocab_size, manifest.dims.type_vocab_size, args.seed)


def _scaling(args: argparse.Namespace) -> int:
    import json

    from packing.bench.scaling import format_report, scaling

    data = _workload_of(args)
    report = scaling(str(Path(args.model_dir).resolve()), data, replicas=args.replicas,
                     profile=args.sim_profile, mode=args.mode,
                     batch_wait_timeout_s=args.batch_wait_timeout_s,
                     outstanding=args.outstanding, per_call=args.windows_per_call,
                     progress=not args.no_progress)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    crossed = sum(r["crossed"] for r in report["rows"])
    return 1 if crossed else 0


def _placement(args: argparse.Namespace) -> int:
    import json

    from packing.bench.cluster import PlacementTimeout, format_placement, placement

    data = _workload_of(args)
    try:
        report = placement(str(Path(args.model_dir).resolve()), data, workers=args.workers,
                           resource=args.resource, per_worker=args.per_worker,
                           declared=args.declare, runner_replicas=args.runner_replicas,
                           timeout_s=args.timeout_s, progress=not args.no_progress)
    except PlacementTimeout as exc:
        print(f"placement failed: {exc}", file=sys.stderr)
        return 3
    print(format_placement(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(report["checks"].values()) else 1


def _node_loss(args: argparse.Namespace) -> int:
    import json

    from packing.bench.cluster import node_loss

    data = _workload_of(args)
    report = node_loss(str(Path(args.model_dir).resolve()), data, workers=args.workers,
                       per_worker=args.per_worker, profile=args.sim_profile,
                       tokens_per_s=args.sim_tokens_per_s,
                       remove_after_s=args.remove_after_s, progress=not args.no_progress)
    for key in ("windows", "answered", "failed", "lost", "crossed", "removed_after_s",
                "seconds", "gap_s", "runner_replicas_at_end", "errors"):
        value = report[key]
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if report["lost"] == 0 and report["crossed"] == 0 else 1


def _autoscale(args: argparse.Namespace) -> int:
    import json

    from packing.bench.cluster import autoscale_step

    data = _workload_of(args)
    r = autoscale_step(str(Path(args.model_dir).resolve()), data, workers=args.workers,
                       per_worker=args.per_worker, profile=args.sim_profile,
                       tokens_per_s=args.sim_tokens_per_s, policy=args.policy)
    print(f"runner autoscaling policy: {args.policy}")
    print("t (s) | runner replicas | packer dispatch slots")
    for t, n, slots in r["timeline"]:
        print(f"{t:5.1f} | {n} | {slots}")
    up = f"{r['up_s']:.1f} s" if r["up_s"] is not None else "not reached"
    down = f"{r['down_s']:.1f} s" if r["down_s"] is not None else "not reached"
    print(f"load step to {r['max_replicas']} runner replicas: {up}, on "
          f"{len(r['peak_runner_nodes'])} nodes; load stop to 1 replica: {down}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if r["up_s"] is not None and r["down_s"] is not None else 1


def _batch(args: argparse.Namespace) -> int:
    import json

    from packing.jobs.batch import run_batch

    backend, options = _backend_choice(args)
    resources = json.loads(args.resources) if args.resources else None
    kwargs = dict(mode=args.mode, workers=args.workers, questions_per_block=args.questions_per_block,
                  limit=args.limit, backend=backend, backend_options=options,
                  resources=resources, num_cpus=args.num_cpus, address=args.address)
    if args.local_cluster_nodes:
        # a private multi-node cluster here: accelerator nodes declaring {"IPU": per node},
        # one predictor actor per IPU, pinned to it (no CPU asked)
        from packing.bench.cluster import private_cluster

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
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


def _efficiency(args: argparse.Namespace) -> int:
    from packing.bench.workloads import seed_lengths
    from packing.policy.offline import plan_offline_attention_mask

    for n in args.samples:
        lengths = seed_lengths(n, args.seq_len, args.seed)
        plans = plan_offline_attention_mask(lengths, args.seq_len, args.batch_size,
                                            args.max_valid_num)
        rows = sum(p.n_rows for p in plans)
        print(f"{n} seed sequences: {rows} rows in {len(plans)} batches, offline AttentionMask "
              f"packing efficiency {lengths.sum() / (rows * args.seq_len):.4f}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from packing.runtime.calibrate import cache_path, load_or_calibrate

    backend, options = _backend_choice(args)
    if args.threads is not None:
        if backend != "onnxruntime":
            raise ValueError("--threads is an onnxruntime option; the sim backend ignores it")
        options["intra_op_threads"] = args.threads
    cal = load_or_calibrate(args.model_dir, backend, options, threshold=args.threshold,
                            force=args.force, progress=not args.no_progress,
                            min_time_s=args.min_time_s)
    how = "read from the cache" if cal.from_cache else f"measured in {cal.seconds:.1f} s"
    print(f"token budget calibration of {args.model_dir} on {cal.backend} ({how}; "
          f"measured {cal.measured_at}, fingerprint {cal.fingerprint})")
    print(cal.table())
    print(f"max_tokens = {cal.max_tokens} ({cal.rule})")
    path = cache_path(args.model_dir)
    try:
        cached = cal.fingerprint in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        cached = False
    print(f"cached in {path}" if cached else f"not cached: {path} could not be written")
    if args.json:
        Path(args.json).write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _budget(text: str) -> int | str | None:
    """--max-tokens: 'auto', 'full' (None: batch_size x seq_len) or a positive int."""
    if text in ("auto", "full"):
        return None if text == "full" else text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto, full or an int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _unit_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _cluster_flags(p: argparse.ArgumentParser, samples: int) -> argparse.ArgumentParser:
    """Options of the commands that run the app on a local multi-node cluster of sim devices."""
    p.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    p.add_argument("--workers", type=_positive_int, default=2, help="accelerator nodes")
    p.add_argument("--per-worker", type=_positive_int, default=2, help="IPUs each node declares")
    p.add_argument("--sim-profile", default="slow", help="sim device profile of the runners")
    p.add_argument("--sim-tokens-per-s", type=_positive_float, default=None, metavar="N",
                   help="the sim device's speed instead of the profile's")
    p.add_argument("--samples", type=_positive_int, default=samples, help="windows to send")
    p.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    p.add_argument("--seed", type=int, default=2022, help="workload RNG seed")
    p.add_argument("--json", help="write the report here")
    return p


def _app_client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options shared by the commands that drive a running app."""
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model-dir", required=True, help="the app's prepared model folder")
    p.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--no-progress", action="store_true")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="packed-bert", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("prepare", help="write the three ONNX graphs, tokenizer and manifest")
    pr.add_argument("--model", required=True,
                    help="builtin:squad-mini, hub id, local transformers folder, random:tiny "
                    "or random:base")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--seq-len", type=int, default=256)
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--max-valid-num", type=int, default=40,
                    help="max sequences in one packed batch")
    pr.add_argument("--seed", type=int, default=0, help="seed of random:* weights")
    pr.add_argument("--no-check", action="store_true",
                    help="skip the packed-vs-original logit check")
    pr.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                    help="fp32 (any device), int8 (CPU: per-token int8 Linear layers, "
                    "batch-invariant) or fp16 (CUDA); recorded in the manifest "
                    "(docs/precision.md)")
    pr.set_defaults(func=_prepare)

    tr = sub.add_parser("train", help="fine-tune builtin:squad-mini's base encoder (LoRA) on "
                        "packed batches of the SQuAD train split (needs torch)")
    tr.add_argument("--squad", required=True, help="SQuAD v1.1 dev json (split by article)")
    tr.add_argument("--out", default="packing/assets/squad_mini",
                    help="folder for delta.safetensors + delta.json (default: the shipped one)")
    tr.add_argument("--epochs", type=float, default=2.0)
    tr.add_argument("--max-steps", type=int, default=None)
    tr.add_argument("--seq-len", type=int, default=384)
    tr.add_argument("--seqs-per-step", type=int, default=16)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--rank", type=int, default=32, help="LoRA rank")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--layout", choices=["packed", "padded"], default="packed")
    tr.add_argument("--compare-steps", type=int, default=0, metavar="N",
                    help="only time N steps padded and N steps packed on the same windows")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="EM / F1 of a model folder under Original and every "
                        "packed mode, side by side (and of a running app with --url)")
    ev.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    ev.add_argument("--squad", required=True, help="SQuAD v1.1 json")
    ev.add_argument("--split", choices=["heldout", "train", "all"], default="heldout",
                    help="articles to score (default: the held-out ones of 'train')")
    ev.add_argument("--limit", type=int, default=None, help="first N questions of the split")
    ev.add_argument("--modes", nargs="+", metavar="MODE", help="subset of the modes")
    ev.add_argument("--url", help="also score the running app, e.g. http://127.0.0.1:8000/v1/answer")
    ev.add_argument("--http-only", action="store_true", help="score only the app at --url")
    ev.add_argument("--threads", type=int, default=None, help="intra-op threads")
    ev.add_argument("--json", help="write the scores here")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_eval)

    b = sub.add_parser("bench", help="run every mode on one workload and compare")
    b.add_argument("--model-dir", required=True, nargs="+", metavar="DIR",
                   help="a folder written by 'prepare'; several (e.g. its fp32 and int8 "
                   "preparations) run one after the other on the same workload")
    b.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=None,
                   help="the precision of each --model-dir, checked against its manifest "
                   "(default: read from the manifests)")
    b.add_argument("--samples", type=int, default=1024)
    b.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    b.add_argument("--modes", nargs="+", choices=list(MODES), metavar="MODE",
                   help=f"subset of: {' '.join(MODES)}")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    b.add_argument("--concurrency", type=int, default=None,
                   help="client threads for online modes (default 2 x max_valid_num)")
    b.add_argument("--batch-wait-timeout-s", type=float,
                   default=DEFAULT_ADMISSION.batch_wait_timeout_s,
                   help="online modes: longest an admitted batch stays open after its first "
                        "request (as @serve.batch)")
    b.add_argument("--check-samples", type=int, default=16,
                   help="requests checked against a solo run in every mode")
    b.add_argument("--seed", type=int, default=2022, help="workload RNG seed")
    b.add_argument("--json", help="write the full report here")
    b.add_argument("--plot", help="write a PNG of throughput and p99 latency here")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--max-tokens", type=_budget, default="auto", metavar="N|auto|full",
                   help="packed modes' token budget: auto (calibrated for the backend, cached; "
                   "the default), an int, or full (batch_size x seq_len)")
    b.add_argument("--attention-groups", type=int, default=ATTENTION_GROUPS, choices=range(1, ATTENTION_GROUPS + 1),
                   metavar="G", help=f"most unpack/repack attention width groups (1 = rows as wide "
                   f"as the batch's longest sequence; default {ATTENTION_GROUPS})")
    b.add_argument("--no-limit", action="store_true",
                   help="skip measuring the dense MatMul rate (the compute limit)")
    _backend_flags(b)
    b.set_defaults(func=_bench)

    lt = _app_client(sub.add_parser("loadtest", help="concurrent HTTP requests to a running "
                                    "app, compared with the in-process PackRunner"))
    lt.add_argument("--samples", type=int, default=512)
    lt.add_argument("--concurrency", type=int, default=80)
    lt.add_argument("--threads", type=int, default=None, help="in-process intra-op threads")
    lt.add_argument("--no-inprocess", action="store_true", help="HTTP side only")
    _backend_flags(lt)
    lt.set_defaults(func=_loadtest)

    so = _app_client(sub.add_parser("soak", help="drive a running app and check every answer "
                                    "against its solo answer; exits 1 on any lost or crossed "
                                    "request"))
    so.add_argument("--requests", type=int, default=10000)
    so.add_argument("--concurrency", type=int, default=64,
                    help="clients (closed loop), or connections at most (with --rate)")
    so.add_argument("--rate", type=_positive_float, default=None, metavar="REQ_PER_S",
                    help="open loop: Poisson arrivals at this rate instead of closed-loop clients")
    so.add_argument("--distinct", type=int, default=500, help="different requests, cycled")
    so.add_argument("--slow-s", type=float, default=10.0, help="answers slower than this count as slow")
    so.add_argument("--kill-replica", metavar="DEPLOYMENT",
                    help="kill one replica of this deployment (e.g. PlanExecutor) a quarter in")
    so.set_defaults(func=_soak)

    ce = sub.add_parser("ceiling", help="the serving front end's ceiling against Ray Serve's "
                        "floor: echo, chain and the real app, each in its own `serve run`")
    ce.add_argument("--apps", nargs="+", choices=["echo", "chain", "app"],
                    default=["echo", "chain", "app"], help="subset to run (always in this order)")
    ce.add_argument("--config", default="configs/sim.yaml", help="the real app's Serve config")
    ce.add_argument("--concurrency", type=_positive_int, default=64,
                    help="closed-loop connections")
    ce.add_argument("--duration-s", type=_positive_float, default=20.0,
                    help="measured phase length")
    ce.add_argument("--requests", type=_positive_int, default=None,
                    help="measure this many responses instead of --duration-s")
    ce.add_argument("--warmup-s", type=float, default=2.0,
                    help="warm-up (and until every connection had one response)")
    ce.add_argument("--list-size", type=_positive_int, default=32, help="questions per list body (app)")
    ce.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment variable for every serve run (repeatable)")
    ce.add_argument("--health-timeout-s", type=float, default=300.0,
                    help="wait this long for GET /healthz == 200")
    ce.add_argument("--floor-max-ongoing", type=_positive_int, default=1024, metavar="N",
                    help="max_ongoing_requests of the echo/chain deployments (default 1024, "
                    "as the app's Ingress; Serve's own default of 5 starves them at 64 "
                    "connections)")
    ce.add_argument("--json", help="write the report here")
    ce.add_argument("--no-progress", action="store_true")
    ce.set_defaults(func=_ceiling)

    ov = sub.add_parser("overload", help="the served app past its device's capacity (sim, "
                        "static shapes, one runner): merged dispatch against per-batch plans")
    ov.add_argument("--config", default="configs/sim.yaml", help="Serve config to start from")
    ov.add_argument("--dispatch", nargs="+", default=["merge", "per_batch"],
                    choices=["merge", "per_batch"])
    ov.add_argument("--rate", type=_positive_float, default=30.0, help="requests/s, open loop")
    ov.add_argument("--seconds", type=_positive_float, default=30.0, help="of arrivals")
    ov.add_argument("--sim-profile", default="slow", help="sim profile (slow: static shapes)")
    ov.add_argument("--tokens-per-s", type=_positive_float, default=2048.0,
                    help="sim token slots/s (2048: 2 s per 16 x 256 batch)")
    ov.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    ov.add_argument("--workload", default="short", help="seed | short | squad:FILE")
    ov.add_argument("--concurrency", type=int, default=512, help="client connections at most")
    ov.add_argument("--json", help="write the report here")
    ov.add_argument("--no-progress", action="store_true")
    ov.set_defaults(func=_overload)

    sc = sub.add_parser("scaling", help="the app on simulated accelerators through Python "
                        "handles: throughput at several runner replica counts, and served "
                        "batch fill against the in-process PackRunner")
    sc.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    sc.add_argument("--samples", type=int, default=4000)
    sc.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    sc.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    sc.add_argument("--sim-profile", default="slow", help="sim device profile (slow: 125 ms "
                    "per full batch, so the front end is not the bottleneck)")
    sc.add_argument("--mode", default="unpack_repack", choices=["unpack_repack", "attention_mask"])
    sc.add_argument("--batch-wait-timeout-s", type=float, default=0.005,
                    help="packer admission: longest a batch stays open (as @serve.batch)")
    sc.add_argument("--outstanding", type=int, default=1024, help="windows kept in flight")
    sc.add_argument("--windows-per-call", type=int, default=32)
    sc.add_argument("--seed", type=int, default=2022, help="workload RNG seed")
    sc.add_argument("--json", help="write the report here")
    sc.add_argument("--no-progress", action="store_true")
    sc.set_defaults(func=_scaling)

    ef = sub.add_parser("efficiency", help="offline AttentionMask packing efficiency (SPFHP) "
                        "on seed workloads; no model needed")
    ef.add_argument("--samples", type=int, nargs="+", default=[1000, 2000, 10000])
    ef.add_argument("--seq-len", type=int, default=256)
    ef.add_argument("--batch-size", type=int, default=16)
    ef.add_argument("--max-valid-num", type=int, default=40)
    ef.add_argument("--seed", type=int, default=2022)
    ef.set_defaults(func=_efficiency)

    pl = sub.add_parser("placement", help="deploy the app on a local multi-node Ray cluster "
                        "(a head without accelerators, workers declaring one) with the runners "
                        "pinned to the accelerator; print where every replica landed")
    pl.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    pl.add_argument("--workers", type=_positive_int, default=2, help="accelerator nodes")
    pl.add_argument("--resource", default="IPU", help="custom resource each runner asks for")
    pl.add_argument("--per-worker", type=_positive_int, default=2, help="units each worker declares")
    pl.add_argument("--declare", default=None, metavar="NAME",
                    help="resource the workers declare (default: --resource; another name "
                    "shows the error a placement mistake gives)")
    pl.add_argument("--runner-replicas", type=_positive_int, default=None,
                    help="default: every unit declared")
    pl.add_argument("--samples", type=_positive_int, default=200)
    pl.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    pl.add_argument("--seed", type=int, default=2022)
    pl.add_argument("--timeout-s", type=_positive_float, default=120.0,
                    help="give up (exit 3, with what each node has) if the app is not running by then")
    pl.add_argument("--json", help="write the report here")
    pl.add_argument("--no-progress", action="store_true")
    pl.set_defaults(func=_placement)

    nl = _cluster_flags(sub.add_parser(
        "node-loss", help="remove an accelerator node of a local multi-node cluster while "
        "windows flow; count answered / failed / lost / crossed"), samples=3000)
    nl.add_argument("--remove-after-s", type=_positive_float, default=4.0,
                    help="seconds after the first answer to remove the node")
    nl.add_argument("--no-progress", action="store_true")
    nl.set_defaults(func=_node_loss)

    au = _cluster_flags(sub.add_parser(
        "autoscale", help="a step of load on a local multi-node cluster: runners autoscale "
        "from 1 to every accelerator unit and back; reaction times"), samples=2000)
    au.add_argument("--policy", choices=["packing", "default"], default="packing",
                    help="runner autoscaling: packing (the packer's demand in plans, "
                    "deployments/autoscaling.py; what configs/squad.yaml uses) or Serve's "
                    "default (requests ongoing at the runners)")
    au.set_defaults(func=_autoscale)

    ba = sub.add_parser("batch", help="offline packed question answering over Ray Data: "
                        "SQuAD-format JSON in, {id: answer} predictions out, EM/F1 if answers")
    ba.add_argument("--input", required=True, help="SQuAD v1.1-format JSON")
    ba.add_argument("--output", required=True, help="predictions JSON to write ({id: text})")
    ba.add_argument("--model-dir", required=True, help="a folder written by 'prepare' (on every node)")
    ba.add_argument("--mode", default="unpack_repack",
                    choices=["unpack_repack", "attention_mask", "original"],
                    help="packed layout, or original: padded batches (the baseline)")
    ba.add_argument("--workers", type=_positive_int, default=1, help="predictor actors")
    ba.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per predictor actor")
    ba.add_argument("--resources", default=None, metavar="JSON",
                    help='custom resources per actor, e.g. \'{"IPU": 1}\'')
    ba.add_argument("--questions-per-block", type=_positive_int, default=64)
    ba.add_argument("--limit", type=_positive_int, default=None, help="first N questions only")
    ba.add_argument("--address", default=None, help="Ray cluster to join (default: the job's, or local)")
    ba.add_argument("--local-cluster-nodes", type=_positive_int, default=None, metavar="N",
                    help="run on a private local cluster of N accelerator nodes declaring "
                    "--ipus-per-node IPUs each, one predictor per IPU (use with --backend sim)")
    ba.add_argument("--ipus-per-node", type=_positive_int, default=2)
    ba.add_argument("--json", help="write the summary here")
    _backend_flags(ba)
    ba.set_defaults(func=_batch)

    ca = sub.add_parser("calibrate", help="measure the backend's throughput against the batch "
                        "token budget and cache the budget runners and the served packer use "
                        "for max_tokens 'auto' (calibration.json in the model folder)")
    ca.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")
    ca.add_argument("--threads", type=_positive_int, default=None,
                    help="onnxruntime intra-op threads (default: its own, all cores)")
    ca.add_argument("--threshold", type=_unit_fraction, default=0.95,
                    help="pick the smallest budget with at least this fraction of the best "
                    "throughput (default 0.95)")
    ca.add_argument("--min-time-s", type=_positive_float, default=1.0,
                    help="time each budget for at least this long (and 3 batches)")
    ca.add_argument("--force", action="store_true", help="measure even if a cached entry matches")
    ca.add_argument("--json", help="write the calibration here too")
    ca.add_argument("--no-progress", action="store_true")
    _backend_flags(ca)
    ca.set_defaults(func=_calibrate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"packed-bert {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
