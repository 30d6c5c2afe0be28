"""Precisions of the prepared graphs, and the int8 arithmetic (numpy) they are built from.

``fp32``: everything float32 (the default). ``int8`` (CPU execution provider): the four big
Linear layers of every encoder layer -- fused Q/K/V, attention output, feed-forward in and
out -- run as ``MatMulInteger`` (uint8 activations x int8 weights); embeddings, attention
scores and context, LayerNorm, GELU and the QA head stay float32. ``fp16`` (CUDA execution
provider): the whole graph in float16 with float32 inputs and outputs.

int8 is **batch-invariant**: weights are quantized once, at prepare time, per output
channel (symmetric, :func:`quantize_weight`); activations are quantized at run time **per
token** (:func:`quantize_rows`): every row of ``x`` gets its own scale ``absmax / 127``, so a
token's result never depends on what else was packed into the batch (unlike
``onnxruntime.quantization.quantize_dynamic``, whose one scale per tensor does).
:func:`int8_linear_reference` is the arithmetic the graph's int8 Linear performs.
"""

from __future__ import annotations

import numpy as np

PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")
"""Precisions ``packed-bert prepare --precision`` builds."""

TOLERANCES: dict[str, float] = {"fp32": 1e-4, "int8": 0.1, "fp16": 0.05}
"""Max abs logit difference allowed between a request packed by a mode and the same request
run alone through that mode's graph, same precision (prepare's check, the bench's check):
packed == solo. fp32: rounding order only. int8: the per-token arithmetic is batch-invariant
(measured 0.0 on builtin:squad-mini and random:base); the margin covers a float32 rounding
difference upstream that flips one activation to the next int8 step. fp16: set for the CUDA
run, not measured here (no GPU)."""

LAYOUT_TOLERANCES: dict[str, float] = {"fp32": 1e-4, "int8": 0.5, "fp16": 0.5}
"""Max abs logit difference allowed between a packed graph and ``original``, each request run
alone (prepare's check that the graphs compute the same model). fp32: rounding only. int8:
the graphs' float32 attention rounds differently (~1e-6), and per-token quantization turns a
rounding difference at a step boundary into one int8 step, layer after layer: measured up to
0.26 on builtin:squad-mini, random inputs (docs/precision.md). fp16: not measured here."""

DEVICES: dict[str, str] = {"fp32": "cpu or cuda", "int8": "cpu", "fp16": "cuda"}
"""Where each precision runs (ONNX Runtime execution provider)."""

QMAX = 127  # symmetric range of the (shifted) activations: q - 128 in [-127, 127]
WEIGHT_QMAX = 63  # symmetric range of the weights: 7 bits ("reduce range"), see below
"""Weights use [-63, 63], not [-127, 127]. ONNX Runtime's u8 x s8 ``MatMulInteger`` on an x86
CPU without VNNI (AVX2, AVX-512 without VNNI) multiplies with ``vpmaddubsw``, which adds two
u8 x s8 products into a *saturating* int16: 2 x 255 x 127 = 64,770 overflows it, and the
result is silently wrong (measured on an AVX2-only EPYC: logit errors up to 3 on one loud
token). With 7-bit weights the worst pair is 2 x 255 x 63 = 32,130 < 32,767, exact on every
kernel (VNNI's ``vpdpbusd`` accumulates in int32 and never saturated); it costs one bit of
weight resolution, no speed (the same kernel runs). ``tests/unit/test_precision.py`` runs the
worst case through ONNX Runtime on whatever CPU the suite runs on."""
ZERO_POINT = 128  # uint8 activations: q = round(x / scale) + 128, in [1, 255]
MIN_SCALE = 1e-12  # scale of an all-zero row (keeps QuantizeLinear finite)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError naming it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def quantize_weight(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 of a ``[in, out]`` weight (``x @ w_t``).

    Returns ``(q, scale)``: ``q`` int8 ``[in, out]`` in ``[-63, 63]`` (:data:`WEIGHT_QMAX`),
    ``scale`` float32 ``[out]`` with ``w_t ~= q * scale``; a column of zeros gets scale 1
    (and q 0).
    """
    w_t = np.asarray(w_t, dtype=np.float32)
    if w_t.ndim != 2:
        raise ValueError(f"weight must be 2-D [in, out], got shape {w_t.shape}")
    absmax = np.abs(w_t).max(axis=0)
    scale = np.where(absmax > 0, absmax / np.float32(WEIGHT_QMAX), np.float32(1.0)).astype(
        np.float32
    )
    q = np.clip(np.rint(w_t / scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale


def row_scales(x: np.ndarray) -> np.ndarray:
    """Per-token scale ``max(absmax(row) / 127, MIN_SCALE)`` of ``x`` ``[..., K]``, float32
    ``[..., 1]`` (what the graph computes as ``Max(ReduceMax(x), -ReduceMin(x)) / 127``)."""
    x = np.asarray(x, dtype=np.float32)
    s = np.abs(x).max(axis=-1, keepdims=True) / np.float32(QMAX)
    return np.maximum(s, np.float32(MIN_SCALE)).astype(np.float32)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token uint8 of ``x`` ``[..., K]``: ``(q, scale)`` with ``q = round(x / scale) + 128``
    (round half to even, as ``QuantizeLinear``) saturated to [0, 255] and ``scale`` from
    :func:`row_scales`; ``x ~= (q - 128) * scale``."""
    x = np.asarray(x, dtype=np.float32)
    scale = row_scales(x)
    q = np.clip(np.rint(x / scale) + ZERO_POINT, 0, 255).astype(np.uint8)
    return q, scale


def int8_linear_reference(
    x: np.ndarray, q_w: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None = None
) -> np.ndarray:
    """What the graph's int8 Linear computes for ``x`` ``[..., K]`` (float32 result ``[..., N]``):
    ``((q_x - 128) @ q_w) * w_scale * row_scale + bias``, the integer product exact in int64."""
    q_x, s_x = quantize_rows(x)
    acc = (q_x.astype(np.int64) - ZERO_POINT) @ q_w.astype(np.int64)
    y = acc.astype(np.float32) * np.asarray(w_scale, np.float32) * s_x
    return y if bias is None else y + np.asarray(bias, np.float32)


def quantized_linears(num_layers: int) -> list[str]:
    """Names (prefixes) of the Linear layers the int8 graphs quantize: per layer the fused
    ``attention.self.qkv`` (query, key and value side by side), ``attention.output.dense``,
    ``intermediate.dense`` and ``output.dense``."""
    out = []
    for i in range(num_layers):
        p = f"bert.encoder.layer.{i}."
        out += [
            p + "attention.self.qkv",
            p + "attention.output.dense",
            p + "intermediate.dense",
            p + "output.dense",
        ]
    return out


def int8_weights(weights: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """The tensors the int8 graphs read, from float32 Hugging Face ``weights``.

    Each quantized Linear ``L`` (:func:`quantized_linears`) becomes ``L.qweight`` (int8
    ``[in, out]``, already transposed), ``L.wscale`` (float32 ``[out]``) and ``L.bias``;
    for Q/K/V the three are fused side by side first. Every other tensor is kept float32
    under its own name.
    """
    out = dict(weights)
    for i in range(num_layers):
        p = f"bert.encoder.layer.{i}."
        names = [f"{p}attention.self.{n}" for n in ("query", "key", "value")]
        out[p + "attention.self.qkv.weight"] = np.concatenate(
            [out.pop(n + ".weight") for n in names], axis=0
        )
        out[p + "attention.self.qkv.bias"] = np.concatenate([out.pop(n + ".bias") for n in names])
    for name in quantized_linears(num_layers):
        w = out.pop(name + ".weight")  # torch layout [out, in]
        out[name + ".qweight"], out[name + ".wscale"] = quantize_weight(w.T)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def fp16_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float32 tensor of ``weights`` as float16 (same names: still a transformers
    checkpoint, which loads float16 safetensors)."""
    return {k: np.ascontiguousarray(v.astype(np.float16)) for k, v in weights.items()}
