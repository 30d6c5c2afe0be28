"""What each operator does: :data:`CATEGORIES`, the kinds of operator time, and
:func:`category`, which puts one operator run under one of them by its op type, its node's
role and its input shapes."""

from __future__ import annotations

from collections.abc import Sequence

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
(``BiasGelu``); ``unpack/repack``: the gathers between the token axis and attention rows.
The ``fused_int8`` kernels (:mod:`packing.runtime.cpu_kernels`) count under the part they end
with: ``RowQuantize`` quantize, ``DequantBias`` dequantize (with the bias add),
``DequantBiasGeluQuantize`` GELU (with the rescale, bias and the next quantization),
``DequantBiasResidualLayerNormQuantize`` LayerNorm (with the rescale, bias, residual add and
the next quantization); the ``fused_fp32`` kernels likewise: ``BiasGelu`` GELU (with the bias),
``BiasResidualLayerNorm`` LayerNorm (with the bias and residual add); ``PackedAttention``
(``packed_attention``) is attention (fused), the unpack/repack gathers it replaces and, in
fp32 with ``fused_fp32``, the Q/K/V bias add included."""

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
    "RowQuantize": "quantize",
    "DequantBias": "dequantize",
    "DequantBiasGeluQuantize": "GELU",
    "DequantBiasResidualLayerNormQuantize": "LayerNorm",
    "PackedAttention": "attention (fused)",
    "BiasResidualLayerNorm": "LayerNorm",
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
