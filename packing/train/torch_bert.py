"""A BERT question-answering model in torch that trains on this project's row layouts.

It takes the inputs :func:`packing.policy.layouts.build_inputs` makes for a
``PaddedPlan`` or an ``AttentionMaskPlan`` (``input_ids``, ``token_type_ids``,
``position_ids`` and ``attention_mask`` ``[rows, W]``, where ``attention_mask`` holds a
segment id per token: a token attends only to tokens of the same non-zero segment), so one
row may carry several sequences. Attention has no dropout (on CPU it would cost more than
the rest of the step and keep SDPA off its fused kernel). Every dense layer of the encoder gets a low-rank adapter
(LoRA); the frozen base weights stay as loaded. Training needs torch (the ``torch`` extra).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.weights import BertDims

ADAPTED = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class LoRALinear(nn.Module):
    """``y = x W0^T + b + (alpha / r) * dropout(x) A^T B^T`` with ``W0`` frozen."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        rank: int,
        alpha: float,
        dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        out_f, in_f = weight.shape
        self.weight = nn.Parameter(
            torch.from_numpy(weight.copy()), requires_grad=False
        )  # [out, in] frozen
        self.bias = nn.Parameter(torch.from_numpy(bias.copy()))  # [out] trained
        self.lora_A = nn.Parameter(
            torch.randn(rank, in_f, generator=generator) / math.sqrt(in_f)
        )  # [r, in]
        self.lora_B = nn.Parameter(
            torch.zeros(out_f, rank)
        )  # [out, r]; zero: training starts at the base
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(
            F.linear(self.dropout(x), self.lora_A), self.lora_B
        )


class PackedBertQA(nn.Module):
    """``BertForQuestionAnswering`` over packed rows, with LoRA on every dense layer."""

    def __init__(
        self,
        dims: BertDims,
        weights: dict[str, np.ndarray],
        rank: int = 32,
        alpha: float = 64.0,
        dropout: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.dims = dims
        t = {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for k, v in weights.items()
        }
        e = "bert.embeddings."
        self.word = nn.Parameter(t[e + "word_embeddings.weight"], requires_grad=False)
        self.pos = nn.Parameter(t[e + "position_embeddings.weight"], requires_grad=False)
        self.types = nn.Parameter(t[e + "token_type_embeddings.weight"], requires_grad=False)
        self.emb_ln = self._ln(t, e + "LayerNorm")
        self.layers = nn.ModuleList()
        for i in range(dims.num_hidden_layers):
            p = f"bert.encoder.layer.{i}."
            layer = nn.ModuleDict(
                {
                    name.replace(".", "_"): LoRALinear(
                        weights[p + name + ".weight"],
                        weights[p + name + ".bias"],
                        rank,
                        alpha,
                        dropout,
                        g,
                    )
                    for name in ADAPTED
                }
            )
            layer["ln1"] = self._ln(t, p + "attention.output.LayerNorm")
            layer["ln2"] = self._ln(t, p + "output.LayerNorm")
            self.layers.append(layer)
        self.qa = nn.Linear(dims.hidden_size, 2)
        if "qa_outputs.weight" in weights:
            self.qa.weight.data.copy_(t["qa_outputs.weight"])
            self.qa.bias.data.copy_(t["qa_outputs.bias"])
        else:
            self.qa.weight.data.normal_(0.0, 0.02, generator=g)
            self.qa.bias.data.zero_()
        self.drop = nn.Dropout(dropout)
        self.rank, self.alpha = rank, alpha

    def _ln(self, t: dict[str, torch.Tensor], name: str) -> nn.LayerNorm:
        ln = nn.LayerNorm(self.dims.hidden_size, eps=self.dims.layer_norm_eps)
        ln.weight.data.copy_(t[name + ".weight"])
        ln.bias.data.copy_(t[name + ".bias"])
        return ln

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits ``[rows, W]`` for the layout described in the module doc."""
        rows, width = input_ids.shape
        heads = self.dims.num_attention_heads
        hd = self.dims.hidden_size // heads
        seg = attention_mask
        allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
        # a padding slot attends to itself only: no all-masked row (NaN) reaches real tokens
        allowed |= torch.eye(width, dtype=torch.bool)[None]
        mask = allowed[:, None]  # [rows, 1, W, W]
        x = self.word[input_ids] + self.pos[position_ids] + self.types[token_type_ids]
        x = self.drop(self.emb_ln(x))
        for layer in self.layers:

            def split(h: torch.Tensor) -> torch.Tensor:
                return h.view(rows, width, heads, hd).transpose(1, 2)

            q = split(layer["attention_self_query"](x))
            k = split(layer["attention_self_key"](x))
            v = split(layer["attention_self_value"](x))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            ctx = ctx.transpose(1, 2).reshape(rows, width, -1)
            x = layer["ln1"](x + self.drop(layer["attention_output_dense"](ctx)))
            h = F.gelu(layer["intermediate_dense"](x))
            x = layer["ln2"](x + self.drop(layer["output_dense"](h)))
        logits = self.qa(x)
        return logits[..., 0], logits[..., 1]

    def delta(self) -> dict[str, np.ndarray]:
        """What training changed, under the Hugging Face names :func:`packing.model.builtin.
        merge_delta` reads: LoRA factors (float16), biases, LayerNorms and the QA head
        (float32)."""
        out: dict[str, np.ndarray] = {}

        def put(name: str, tensor: torch.Tensor, dtype=np.float32) -> None:
            out[name] = tensor.detach().cpu().numpy().astype(dtype)

        put("bert.embeddings.LayerNorm.weight", self.emb_ln.weight)
        put("bert.embeddings.LayerNorm.bias", self.emb_ln.bias)
        for i, layer in enumerate(self.layers):
            p = f"bert.encoder.layer.{i}."
            for name in ADAPTED:
                lin = layer[name.replace(".", "_")]
                put(p + name + ".lora_A", lin.lora_A, np.float16)
                put(p + name + ".lora_B", lin.lora_B, np.float16)
                put(p + name + ".bias", lin.bias)
            for key, hf in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
                put(p + hf + ".weight", layer[key].weight)
                put(p + hf + ".bias", layer[key].bias)
        put("qa_outputs.weight", self.qa.weight)
        put("qa_outputs.bias", self.qa.bias)
        return out
