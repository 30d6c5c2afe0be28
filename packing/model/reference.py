"""A plain numpy forward pass of ``BertForQuestionAnswering`` for one unpadded sequence.

Slow and simple on purpose: it checks weights (an assembled builtin model against the logits
recorded at training time) without ONNX Runtime or torch.
"""

from __future__ import annotations

import math

import numpy as np

from .weights import BertDims

_erf = np.frompyfunc(math.erf, 1, 1)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def qa_logits(
    weights: dict[str, np.ndarray],
    dims: BertDims,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits ``([L], [L])`` of one sequence ``input_ids`` ``[L]`` (int), in
    float64, positions ``0 .. L-1``, every token attending to every other."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    ids = np.asarray(input_ids, dtype=np.int64)
    n = ids.shape[0]
    eps = dims.layer_norm_eps
    e = "bert.embeddings."
    x = (
        w[e + "word_embeddings.weight"][ids]
        + w[e + "position_embeddings.weight"][:n]
        + w[e + "token_type_embeddings.weight"][np.asarray(token_type_ids, dtype=np.int64)]
    )
    x = _layer_norm(x, w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], eps)
    heads, hd = dims.num_attention_heads, dims.hidden_size // dims.num_attention_heads

    def dense(h: np.ndarray, name: str) -> np.ndarray:
        return h @ w[name + ".weight"].T + w[name + ".bias"]

    for i in range(dims.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        q, k, v = (
            dense(x, p + f"attention.self.{m}").reshape(n, heads, hd).transpose(1, 0, 2)
            for m in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (scores / scores.sum(-1, keepdims=True)) @ v
        attn = dense(ctx.transpose(1, 0, 2).reshape(n, -1), p + "attention.output.dense")
        x = _layer_norm(
            x + attn,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = _gelu(dense(x, p + "intermediate.dense"))
        x = _layer_norm(
            x + dense(h, p + "output.dense"),
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            eps,
        )
    logits = dense(x, "qa_outputs")
    return logits[:, 0], logits[:, 1]
