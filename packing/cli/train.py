"""``packed-bert train``: fine-tune builtin:squad-mini's base encoder (LoRA) on packed batches."""

from __future__ import annotations

import argparse
import dataclasses
import json


def _train(args: argparse.Namespace) -> int:
    from packing.train.loop import TrainConfig, compare_layouts, train

    cfg = TrainConfig(
        squad_path=args.squad,
        seq_len=args.seq_len,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        rank=args.rank,
        seed=args.seed,
        layout=args.layout,
        seqs_per_step=args.seqs_per_step,
    )
    if args.compare_steps:
        got = compare_layouts(cfg, args.compare_steps, progress=not args.no_progress)
        pad, pack = got["padded"], got["packed"]
        print(
            f"{args.compare_steps} steps of {cfg.seqs_per_step} windows each, same windows and "
            f"order (threads {cfg.threads}):"
        )
        print(
            f"{'layout':<8} {'seconds':>8} {'token slots':>12} {'real tokens':>12} {'final loss':>11}"
        )
        for name, r in got.items():
            print(
                f"{name:<8} {r['seconds']:8.1f} {r['token_slots']:12d} {r['real_tokens']:12d} "
                f"{r['final_loss']:11.4f}"
            )
        print(
            f"packed / padded: {pad['seconds'] / pack['seconds']:.2f}x faster, "
            f"{pad['token_slots'] / pack['token_slots']:.2f}x fewer token slots"
        )
        return 0
    stats = train(cfg, out_dir=args.out, progress=not args.no_progress)
    print(json.dumps(stats))
    print(f"wrote {args.out}/delta.safetensors and delta.json")
    return 0


def register(sub) -> None:
    from packing.train.loop import LAYOUTS, TrainConfig

    # the flags' defaults are TrainConfig's (written once, there)
    d = {
        f.name: f.default
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING
    }
    tr = sub.add_parser(
        "train",
        help="fine-tune builtin:squad-mini's base encoder (LoRA) on "
        "packed batches of the SQuAD train split (needs torch)",
    )
    tr.add_argument("--squad", required=True, help="SQuAD v1.1 dev json (split by article)")
    tr.add_argument(
        "--out",
        default="packing/assets/squad_mini",
        help="folder for delta.safetensors + delta.json (default: the shipped one)",
    )
    tr.add_argument("--epochs", type=float, default=d["epochs"])
    tr.add_argument("--max-steps", type=int, default=d["max_steps"])
    tr.add_argument("--seq-len", type=int, default=d["seq_len"])
    tr.add_argument("--seqs-per-step", type=int, default=d["seqs_per_step"])
    tr.add_argument("--lr", type=float, default=d["lr"])
    tr.add_argument("--rank", type=int, default=d["rank"], help="LoRA rank")
    tr.add_argument("--seed", type=int, default=d["seed"])
    tr.add_argument("--layout", choices=LAYOUTS, default=d["layout"])
    tr.add_argument(
        "--compare-steps",
        type=int,
        default=0,
        metavar="N",
        help="only time N steps padded and N steps packed on the same windows",
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)
