"""``packed-bert bench --profile``: where the time of one full batch goes, per kind of operator.

Each layout of a prepared folder (``original``: the spec's padded ``batch_size x seq_len``;
``attention_mask``: offline SPFHP rows; ``unpack_repack``: tokens end to end at the
calibrated token budget) runs a few of its fullest batches of the workload under ONNX
Runtime's profiler (:class:`~packing.runtime.backend.OnnxRuntimeBackend` ``profile=``). The
first batch warms up and is not counted. Every operator's time is put under one
:data:`CATEGORIES` entry by :func:`category`: from its ONNX Runtime op type where that says
it (a ``MatMulInteger`` is dense, a ``SkipLayerNormalization`` is LayerNorm), else from the
role the graph builder wrote into its node name (:data:`packing.model.graphs.ROLES`; ONNX
Runtime keeps it on the nodes it fuses). The table gives milliseconds per batch and the
share of the operators' time.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from packing.model.manifest import Manifest
from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.offline import (
    plan_offline_attention_mask,
    plan_offline_unpack_repack,
    plan_padded,
)
from packing.policy.plans import Plan
from packing.runtime.backend import OnnxRuntimeBackend, backend_kwargs
from packing.runtime.calibrate import resolve_max_tokens
from packing.runtime.executor import PlanExecutor
from packing.runtime.features import Features
from packing.runtime.knobs import DEFAULT_MAX_TOKENS

CATEGORIES: tuple[str, ...] = (
    "dense MatMul",
    "quantize",
    "dequantize",
    "bias add",
    "attention scores",
    "attention softmax",
    "attention context",
    "attention (fused)",
    "attention layout",
    "LayerNorm",
    "GELU",
    "unpack/repack",
    "embeddings",
    "mask",
    "other",
)
"""Kinds of operator time, in the order the table prints them. ``dense MatMul``: the Linear
layers' products (``MatMul``/``Gemm`` on a 2-D weight, ``MatMulInteger``); ``quantize``: the
int8 Linear's per-token scale and ``QuantizeLinear``; ``dequantize``: its ``Cast`` and
rescaling; ``attention scores`` / ``softmax`` / ``context``: ``Q K^T``, mask + softmax,
``P V``; ``attention (fused)``: an ONNX Runtime attention kernel doing all three;
``attention layout``: reshapes and transposes to and from heads; ``LayerNorm``: residual add
+ LayerNorm (``SkipLayerNormalization``); ``GELU``: with its bias add when fused
(``BiasGelu``); ``unpack/repack``: the gathers between the token axis and attention rows."""

_BY_OP = {
    "MatMulInteger": "dense MatMul",
    "MatMulIntegerToFloat": "dense MatMul",
    "DynamicQuantizeMatMul": "dense MatMul",
    "QuantizeLinear": "quantize",
    "DynamicQuantizeLinear": "quantize",
    "DequantizeLinear": "dequantize",
    "Softmax": "attention softmax",
    "Attention": "attention (fused)",
    "MultiHeadAttention": "attention (fused)",
    "SkipLayerNormalization": "LayerNorm",
    "LayerNormalization": "LayerNorm",
    "SkipSimplifiedLayerNormalization": "LayerNorm",
    "BiasGelu": "GELU",
    "Gelu": "GELU",
    "FastGelu": "GELU",
}
_BY_ROLE = {
    "embed": "embeddings",
    "quant": "quantize",
    "dense": "dense MatMul",
    "dequant": "dequantize",
    "bias": "bias add",
    "attn_layout": "attention layout",
    "attn_scores": "attention scores",
    "attn_softmax": "attention softmax",
    "attn_context": "attention context",
    "mask": "mask",
    "repack": "unpack/repack",
    "norm": "LayerNorm",
    "gelu": "GELU",
    "head": "other",
}
_MATMULS = ("MatMul", "FusedMatMul", "Gemm")
_LAYOUT_OPS = ("Transpose", "Reshape", "Split", "Squeeze", "Unsqueeze")


def category(op: str, node: str, input_shapes: Sequence[Sequence[int]] = ()) -> str:
    """The :data:`CATEGORIES` entry of one operator run: ``op`` its ONNX Runtime op type,
    ``node`` its node name (``role/...`` as the graph builder writes it, or a name ONNX
    Runtime made), ``input_shapes`` the shapes of its inputs as the profiler recorded them.

    A float ``MatMul``/``FusedMatMul``/``Gemm`` is attention scores or context by its role, and
    dense when its role says so, when its second input is a 2-D weight, or when the profiler
    lists one input only (ONNX Runtime pre-packed the weight); other op types go by
    :data:`_BY_OP`, then by the node's role, then layout ops with no role to ``attention
    layout``; anything else is ``other``."""
    role = node.split("/", 1)[0] if "/" in node else ""
    if op in _MATMULS:
        if role in ("attn_scores", "attn_context"):
            return _BY_ROLE[role]
        if role == "dense" or len(input_shapes) < 2 or len(input_shapes[1]) == 2:
            return "dense MatMul"
        return "attention scores"
    if op in _BY_OP:
        return _BY_OP[op]
    if role in _BY_ROLE:
        return _BY_ROLE[role]
    if op in _LAYOUT_OPS:
        return "attention layout"
    return "other"


@dataclass(frozen=True)
class OpRun:
    """One operator run from a profiler trace."""

    node: str
    op: str
    dur_us: int
    input_shapes: tuple[tuple[int, ...], ...]


def _shapes(args: dict) -> tuple[tuple[int, ...], ...]:
    out = []
    for entry in args.get("input_type_shape", []):
        for shape in entry.values():
            out.append(tuple(int(x) for x in shape))
    return tuple(out)


def read_trace(path: str | Path, skip_runs: int = 1) -> tuple[list[OpRun], list[int]]:
    """The operator runs and the model runs' wall times (microseconds) of an ONNX Runtime
    profiler trace, without the first ``skip_runs`` model runs (warm-up). An operator run
    belongs to the model run whose time span holds its start."""
    events = json.loads(Path(path).read_text())
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    counted = runs[skip_runs:]
    ops = []
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(begin <= e["ts"] <= end for begin, end in counted):
            continue
        ops.append(
            OpRun(
                node=e["name"].removesuffix("_kernel_time"),
                op=e["args"]["op_name"],
                dur_us=int(e["dur"]),
                input_shapes=_shapes(e["args"]),
            )
        )
    return ops, [end - begin for begin, end in counted]


@dataclass(frozen=True)
class LayoutProfile:
    """Where the time of one layout's batches went.

    ``ms``: milliseconds per batch in each :data:`CATEGORIES` entry (operators' time);
    ``run_ms``: mean wall time of a model run; ``tokens`` / ``slots``: mean real tokens and
    token slots the dense layers computed per batch."""

    layout: str
    precision: str
    batches: int
    tokens: float
    slots: float
    run_ms: float
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def ops_ms(self) -> float:
        """Operators' time per batch (the wall time less what runs between operators)."""
        return sum(self.ms.values())

    def share(self, cat: str) -> float:
        """Share of the operators' time in ``cat``."""
        total = self.ops_ms
        return self.ms.get(cat, 0.0) / total if total else 0.0


def summarize(
    layout: str, precision: str, ops: Sequence[OpRun], run_us: Sequence[int], tokens, slots
) -> LayoutProfile:
    """A :class:`LayoutProfile` from a trace's counted operator runs and model runs."""
    n = max(len(run_us), 1)
    ms = dict.fromkeys(CATEGORIES, 0.0)
    for r in ops:
        ms[category(r.op, r.node, r.input_shapes)] += r.dur_us / 1000.0 / n
    return LayoutProfile(
        layout=layout,
        precision=precision,
        batches=len(run_us),
        tokens=float(np.mean(tokens)) if len(tokens) else 0.0,
        slots=float(np.mean(slots)) if len(slots) else 0.0,
        run_ms=float(np.mean(run_us)) / 1000.0 if len(run_us) else 0.0,
        ms=ms,
    )


def fullest_plans(
    kind: str,
    manifest: Manifest,
    lengths: np.ndarray,
    batches: int,
    max_tokens: int | None,
    attention_groups: int = ATTENTION_GROUPS,
) -> list[Plan]:
    """The ``batches`` fullest batches (most real tokens) of layout ``kind`` on sequences of
    ``lengths``: the spec's padded batches (``original``), offline SPFHP rows
    (``attention_mask``), tokens end to end within ``max_tokens`` (``unpack_repack``)."""
    m = manifest
    if kind == "original":
        plans: list = plan_padded(lengths, m.seq_len, m.batch_size)
    elif kind == "attention_mask":
        plans = plan_offline_attention_mask(lengths, m.seq_len, m.batch_size, m.max_valid_num)
    elif kind == "unpack_repack":
        plans = plan_offline_unpack_repack(
            lengths,
            m.seq_len,
            m.batch_size,
            m.max_valid_num,
            max_tokens=max_tokens,
            attention_groups=attention_groups,
        )
    else:
        raise ValueError(f"unknown layout {kind!r}")
    order = sorted(range(len(plans)), key=lambda i: -int(plans[i].lengths.sum()))
    return [plans[i] for i in sorted(order[:batches])]


def budget_plans(
    model_dir: ModelLike,
    kind: str,
    data: Sequence[Features],
    batches: int,
    options: dict,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
) -> tuple[list[Plan], int | None]:
    """``(plans, budget)``: the ``batches`` fullest batches of layout ``kind`` on ``data``
    (:func:`fullest_plans`), unpack/repack's at the token budget ``max_tokens`` resolves to for
    ONNX Runtime with ``options`` (``"auto"``: calibrated, as the bench's modes; the budget is
    None for the row layouts). ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`. Raises ValueError when the folder has no
    such graph."""
    model = PreparedModel.open(model_dir)
    model.graph_path(kind)  # ValueError naming the folder's graphs when it has no such graph
    budget = None
    if kind == "unpack_repack":
        budget, _ = resolve_max_tokens(max_tokens, model, "onnxruntime", options)
    lengths = np.array([len(f) for f in data])
    return fullest_plans(kind, model.manifest, lengths, batches, budget, attention_groups), budget


def profile_layout(
    model_dir: ModelLike,
    kind: str,
    data: Sequence[Features],
    batches: int = 4,
    threads: int | None = None,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
    backend_options: dict | None = None,
) -> LayoutProfile:
    """Profile graph ``kind`` of the folder on its ``batches`` fullest batches of ``data``
    (one more batch, run first, warms up and is not counted), on ONNX Runtime with
    ``backend_options`` (e.g. ``device``) and ``threads`` intra-op threads. ``max_tokens`` is
    the unpack/repack token budget (``"auto"``: calibrated for these options, as the bench's
    modes). ``model_dir``: a path or a :class:`~packing.model.prepared.PreparedModel`. Raises
    ValueError when the folder has no such graph or ``batches`` < 1."""
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    options = backend_kwargs("onnxruntime", backend_options, threads)
    options.pop("backend")
    plans, _ = budget_plans(model, kind, data, batches + 1, options, max_tokens, attention_groups)
    with tempfile.TemporaryDirectory(prefix="pbs-profile-") as tmp:
        backend = OnnxRuntimeBackend(
            model.graph_path(kind), profile=str(Path(tmp) / kind), **options
        )
        executor = PlanExecutor(backend, manifest, model)
        tokens, slots = [], []
        for i, plan in enumerate(plans):
            feats = [data[k] for k in plan.seq_ids]
            inputs, n_slots = executor.inputs(plan, feats)
            backend.run(inputs)
            if i:
                tokens.append(int(plan.lengths.sum()))
                slots.append(n_slots)
        ops, run_us = read_trace(backend.end_profiling(), skip_runs=1)
    return summarize(kind, manifest.precision, ops, run_us, tokens, slots)


def profile_folders(
    model_dirs: Sequence[ModelLike],
    data: Sequence[Features],
    batches: int = 4,
    threads: int | None = None,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
    backend_options: dict | None = None,
    echo=print,
) -> list[LayoutProfile]:
    """:func:`profile_layout` of every graph of every folder (in the folders' order, layouts
    as :data:`~packing.model.graphs.KINDS`), echoing one line per layout as it lands. Each
    folder given as a path is opened once, for all its layouts."""
    from packing.model.graphs import KINDS

    out = []
    for model_dir in model_dirs:
        model = PreparedModel.open(model_dir)
        for kind in (k for k in KINDS if k in model.manifest.graphs):
            p = profile_layout(
                model,
                kind,
                data,
                batches=batches,
                threads=threads,
                max_tokens=max_tokens,
                attention_groups=attention_groups,
                backend_options=backend_options,
            )
            echo(
                f"[profile] {model} {kind} {p.precision}: {p.run_ms:.1f} ms per batch of "
                f"{p.tokens:.0f} real tokens ({p.batches} batches)"
            )
            out.append(p)
    return out


def format_profile(profiles: Sequence[LayoutProfile]) -> str:
    """Markdown table: one column per profile, one row per :data:`CATEGORIES` entry that took
    time anywhere (ms per batch and share of the operators' time), then the operators' total,
    the model run's wall time, and real tokens and token slots per batch."""
    head = "| kind of operator | " + " | ".join(f"{p.layout} {p.precision}" for p in profiles)
    rows = [head + " |", "|---|" + "---:|" * len(profiles)]
    for cat in CATEGORIES:
        if not any(p.ms.get(cat, 0.0) > 0 for p in profiles):
            continue
        cells = [f"{p.ms.get(cat, 0.0):.1f} ms ({p.share(cat):.0%})" for p in profiles]
        rows.append(f"| {cat} | " + " | ".join(cells) + " |")
    rows.append("| operators, total | " + " | ".join(f"{p.ops_ms:.1f} ms" for p in profiles) + " |")
    rows.append("| model run (wall) | " + " | ".join(f"{p.run_ms:.1f} ms" for p in profiles) + " |")
    rows.append(
        "| real tokens / slots per batch | "
        + " | ".join(f"{p.tokens:.0f} / {p.slots:.0f}" for p in profiles)
        + " |"
    )
    rows.append(
        "| ms per 1,000 real tokens | "
        + " | ".join(f"{1000 * p.run_ms / max(p.tokens, 1):.1f}" for p in profiles)
        + " |"
    )
    return "\n".join(rows)
