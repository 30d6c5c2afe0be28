"""``packed-bert prepare``: write a model folder (the ONNX graphs, tokenizer and manifest)."""

from __future__ import annotations

import argparse

from packing.model.quantize import PRECISIONS
from packing.model.task import TASKS
from packing.policy.shapes import DEFAULT_SHAPES


def _prepare(args: argparse.Namespace) -> int:
    from packing.model.prepare import prepare

    prepare(
        args.model,
        args.out,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_valid_num=args.max_valid_num,
        seed=args.seed,
        check=not args.no_check,
        precision=args.precision,
        prepared_by="cli",
        task=args.task,
        kernels=_kernels(args.kernels),
    )
    return 0


def _kernels(value: str):
    """``--kernels``: ``auto`` -> None (the precision's default), ``none`` -> no contrib
    kernel, else a comma-separated subset of :data:`~packing.model.graphs.KERNELS` (ValueError
    naming an unknown one)."""
    from packing.model.graphs import check_kernels

    if value == "auto":
        return None
    if value == "none":
        return frozenset()
    return check_kernels(k.strip() for k in value.split(",") if k.strip())


def register(sub) -> None:
    pr = sub.add_parser("prepare", help="write the three ONNX graphs, tokenizer and manifest")
    pr.add_argument(
        "--model",
        required=True,
        help="builtin:squad-mini, builtin:minilm-embed, hub id, local transformers "
        "or sentence-transformers folder, random:tiny or random:base",
    )
    pr.add_argument(
        "--task",
        choices=list(TASKS),
        default=None,
        help="what the folder serves: qa (span logits), embed (pooled last hidden "
        "state) or classify (sequence classification, cross-encoders); default: "
        "inferred from the source's architecture or sentence-transformers files "
        "(random:* is qa); recorded in the manifest",
    )
    pr.add_argument(
        "--out",
        required=True,
        help="output folder; its manifest records it as prepared by this command, "
        "so the app serves it as it is and never rewrites it",
    )
    pr.add_argument("--seq-len", type=int, default=DEFAULT_SHAPES.seq_len)
    pr.add_argument("--batch-size", type=int, default=DEFAULT_SHAPES.batch_size)
    pr.add_argument(
        "--max-valid-num",
        type=int,
        default=DEFAULT_SHAPES.max_valid_num,
        help="max sequences in one packed batch",
    )
    pr.add_argument("--seed", type=int, default=0, help="seed of random:* weights")
    pr.add_argument(
        "--no-check", action="store_true", help="skip the packed-vs-original logit check"
    )
    pr.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="fp32 (any device), int8 (CPU: per-token int8 Linear layers, "
        "batch-invariant) or fp16 (CUDA); recorded in the manifest "
        "(docs/precision.md)",
    )
    pr.add_argument(
        "--kernels",
        default="auto",
        metavar="auto|none|K[,K]",
        help="kernels the graphs use in place of plain operators: auto (the precision's "
        "default: MultiHeadAttention and packed_attention for fp32 and int8; for fp32 also "
        "fused_fp32; for int8 also MatMulIntegerToFloat and fused_int8; packed_attention, "
        "fused_fp32 and fused_int8 are this package's CPU kernels, built with g++ on first "
        "use), none (plain ONNX operators only, for other runtimes), or a list of "
        "int8_to_float, mha, fused_int8, packed_attention, fused_fp32; recorded in the "
        "manifest",
    )
    pr.set_defaults(func=_prepare)
