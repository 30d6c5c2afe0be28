"""ONNX graphs of BERT (QA, embed, classify) in the three layouts the runners use.

All three graphs are written node by node with ``onnx.helper`` from the same weights:
no torch export, no graph surgery. Their initializers are *external data* that point
straight into the model folder's ``model.safetensors`` (float32, Hugging Face names),
so the three graphs share one copy of the weights on disk. Transposes of the Linear
weights and the Q/K/V concatenation are constant-folded by ONNX Runtime at load.

Precision (``packed-bert prepare --precision``, :mod:`packing.model.quantize`) is a property
of how the builder writes its Linear layers, not a second copy of the graphs: ``fp32``
writes ``MatMul`` + ``Add``; ``int8`` writes the four big Linear layers of each encoder layer
as per-token ``QuantizeLinear`` -> ``MatMulInteger`` (uint8 x int8) -> ``Cast`` -> two ``Mul``
(weight scale per column, then activation scale per row) -> ``Add`` (:meth:`_Builder.int8_linear`),
reading int8 weights from ``model.int8.safetensors``; ``fp16`` writes every float tensor in
float16 (weights from a float16 ``model.safetensors``) and casts the logits back to float32.

Where ONNX Runtime has a contrib kernel (domain ``com.microsoft``) for a run of those
operators, the builder writes it instead (:data:`KERNELS`, per precision
:data:`DEFAULT_KERNELS`; ``packed-bert prepare --kernels none`` keeps plain ONNX for other
runtimes): ``MultiHeadAttention`` for the attention of every layout, ``MatMulIntegerToFloat``
for the int8 product and its weight scale. Each gives the plain graph's numbers
(``tests/unit/test_kernels.py``). Graphs on the CPU also take this package's own kernels
(domain ``packed_bert``, :mod:`packing.runtime.cpu_kernels`): ``packed_attention``, the
attention of ``unpack_repack`` per sequence over the token axis; for int8 ``fused_int8``,
the quantization, rescale, bias, GELU, residual and LayerNorm between the integer products,
one pass per row; for fp32 ``fused_fp32``, the bias, GELU, residual and LayerNorm after the
float products, one pass per row.
Every node's name starts with its role (:data:`ROLES`), which the profile of
``packed-bert bench --profile`` reads.

The encoder is the same for every task (:mod:`packing.model.task`); only the outputs differ.
``qa`` graphs end with the QA head and write ``start_logits`` / ``end_logits`` (below).
``embed`` and ``classify`` graphs write the encoder's ``last_hidden_state`` instead, float32
whatever the precision: ``[tokens, hidden]`` (unpack_repack) or ``[batch, seq, hidden]``
(original, attention_mask); the heads run per sequence in numpy (:mod:`packing.model.heads`),
so a classify graph reads no pooler or classifier.

Inputs and outputs of the qa graphs (all ids int64, logits float32, whatever the precision):

``original`` (padded, the spec's model with ``position_ids`` added)
    input_ids, attention_mask (1 real / 0 pad), token_type_ids, position_ids: [batch, seq]
    -> start_logits, end_logits: [batch, seq]

``attention_mask`` (rows of packed sequences; PopRT's ``insert_attention_mask``)
    the same inputs, but ``attention_mask`` holds per-row segment ids 1, 2, 3 ... and 0
    for padding; a token attends only to tokens of its own segment (block-diagonal).

``unpack_repack`` (padding-free: dense layers run on real tokens only)
    input_ids, token_type_ids, position_ids: [tokens]  (sequences end to end)
    unpack_index_g: [rows_g, width_g] for each attention group g < ATTENTION_GROUPS:
        flat token index of each slot of the group's attention rows (sequences re-packed
        whole into rows of that group's width; padding slots point at token 0)
    segment_ids_g: [rows_g, width_g] 1, 2, 3 ... per sequence within a row, 0 for padding
    repack_index: [tokens] index of each token in the concatenation of every group's
        flattened [rows_g * width_g] rows
    -> start_logits, end_logits: [tokens]
    Per layer, the fused Q/K/V projection runs on the real tokens only, is gathered
    into each group's attention rows, and the contexts are gathered back to the token
    axis. Groups let attention work follow the sequences' lengths
    (:func:`packing.policy.attention.plan_attention` chooses them). With the
    ``packed_attention`` kernel, attention reads the tokens where they lie instead, one
    sequence at a time (the runs of consecutive ``position_ids``), and the group inputs and
    ``repack_index`` are fed but not read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from packing.policy.attention import ATTENTION_GROUPS

from .heads import HIDDEN_OUTPUT
from .quantize import MIN_SCALE, QMAX, ZERO_POINT, check_precision, quantized_linears
from .task import TaskSpec
from .weights import BertDims, encoder_names, weight_names

KINDS = ("original", "attention_mask", "unpack_repack")
OPSET = 17
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators
MS_OPSET = 1
PB_DOMAIN = "packed_bert"  # this package's CPU kernels (packing/runtime/cpu_kernels)
PB_OPSET = 1
MASK_VALUE = -10000.0  # additive bias for disallowed keys (finite: fully masked rows stay NaN-free)
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_FILES = {"fp32": WEIGHTS_FILE, "fp16": WEIGHTS_FILE, "int8": "model.int8.safetensors"}
"""File of the graphs' weights per precision (fp32 and fp16: a transformers checkpoint)."""
_ONNX_TYPES = {"F32": TensorProto.FLOAT, "F16": TensorProto.FLOAT16, "I8": TensorProto.INT8}
QA_OUTPUTS = ("start_logits", "end_logits")


def graph_outputs(task: TaskSpec = TaskSpec()) -> tuple[str, ...]:
    """Names of the outputs a graph of ``task`` writes: :data:`QA_OUTPUTS` for qa,
    ``(HIDDEN_OUTPUT,)`` for embed and classify."""
    return QA_OUTPUTS if task.task == "qa" else (HIDDEN_OUTPUT,)


def safetensors_offsets(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """Map tensor name -> (dtype, shape, absolute byte offset, byte length) in a safetensors file."""
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
    base = 8 + header_len
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        out[name] = (meta["dtype"], meta["shape"], base + begin, end - begin)
    return out


def graph_weight_names(
    dims: BertDims, precision: str = "fp32", task: TaskSpec = TaskSpec()
) -> list[str]:
    """Names of the tensors the graphs of ``precision`` and ``task`` read from their weights
    file: the Hugging Face names (fp32, fp16) of the encoder, plus the QA head for qa (embed
    and classify graphs stop at the encoder), or for int8 those of
    :func:`packing.model.quantize.int8_weights` (``L.qweight``, ``L.wscale``, ``L.bias`` per
    quantized Linear ``L``, every other tensor under its own name)."""
    names = weight_names(dims, task) if task.task == "qa" else encoder_names(dims)
    if check_precision(precision) != "int8":
        return names
    quantized = quantized_linears(dims.num_hidden_layers)
    replaced = {
        f"{name}.{part}"
        for q in quantized
        for name in _float_linears(q)
        for part in ("weight", "bias")
    }
    return [n for n in names if n not in replaced] + [
        f"{q}.{part}" for q in quantized for part in ("qweight", "wscale", "bias")
    ]


def _float_linears(prefix: str) -> tuple[str, ...]:
    """The float Linear layers a quantized one stands for (Q/K/V for the fused one)."""
    if prefix.endswith("attention.self.qkv"):
        base = prefix.removesuffix("qkv")
        return tuple(base + n for n in ("query", "key", "value"))
    return (prefix,)


def external_initializers(
    weights_path: Path, names: list[str], dtypes: tuple[str, ...] = ("F32",)
) -> list[TensorProto]:
    """Initializers for ``names`` whose data stays in ``weights_path`` (safetensors), each of a
    safetensors dtype in ``dtypes`` (ValueError naming the tensor otherwise)."""
    table = safetensors_offsets(weights_path)
    out = []
    for name in names:
        if name not in table:
            raise ValueError(f"{weights_path}: no tensor {name!r}")
        dtype, shape, offset, length = table[name]
        if dtype not in dtypes:
            raise ValueError(f"{weights_path}: tensor {name} is {dtype}, graphs need {dtypes}")
        t = TensorProto()
        t.name = name
        t.data_type = _ONNX_TYPES[dtype]
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", weights_path.name),
            ("offset", str(offset)),
            ("length", str(length)),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        out.append(t)
    return out


ROLES = (
    "embed",
    "quant",
    "dense",
    "dequant",
    "bias",
    "attn_layout",
    "attn_scores",
    "attn_softmax",
    "attn_context",
    "attn_fused",
    "mask",
    "repack",
    "norm",
    "gelu",
    "head",
)
"""What each node of a graph does, the first part of its name (``attn_scores/MatMul_12``):
the embeddings; int8 Linear layers' activation quantization, integer product and rescaling
(``quant``, ``dense``, ``dequant``); every Linear's weight product (``dense``) and bias add;
attention's reshapes to heads, scores, mask-and-softmax and context; the segment mask; the
unpack/repack gathers; residual + LayerNorm; GELU; the task head. ONNX Runtime keeps the
prefix on the nodes it fuses from a named node, which lets a profile
(:mod:`packing.bench.profile`) put each kernel's time under what it does."""


KERNELS: tuple[str, ...] = ("int8_to_float", "mha", "fused_int8", "packed_attention", "fused_fp32")
"""Kernels the builder can write in place of plain ONNX operators: ONNX Runtime contrib
kernels (domain ``com.microsoft``, CPU and CUDA) and this package's own CPU kernels (domain
``packed_bert``, :mod:`packing.runtime.cpu_kernels`):

``int8_to_float``
    an int8 Linear's ``MatMulInteger`` -> ``Cast`` -> ``Mul`` (weight scale) as one
    ``MatMulIntegerToFloat`` (activation scale 1, weight scale per column); the per-token
    scale and the bias stay the nodes after it.
``mha``
    attention (scores, mask, softmax, context and the reshapes to heads) as one
    ``MultiHeadAttention`` with the additive mask as its ``attention_bias``.
``fused_int8`` (int8 graphs; ONNX Runtime's CPU provider, built on the host at first use)
    the float32 work around each int8 Linear in one pass per row: ``RowQuantize`` (the
    per-token quantization), ``DequantBias`` (per-row scale and bias, before attention),
    ``DequantBiasGeluQuantize`` (scale, bias, GELU and the next Linear's quantization) and
    ``DequantBiasResidualLayerNormQuantize`` (scale, bias, residual add, LayerNorm, and the
    quantization of the result for the next Linear). Same per-token arithmetic as the plain
    operators; GELU's ``erf`` and LayerNorm's sums round differently in the last bits.
``packed_attention`` (``unpack_repack`` graphs in fp32 and int8; ONNX Runtime's CPU provider,
built on the host at first use)
    each layer's attention as one ``PackedAttention`` over the token axis: every sequence
    attends over its own tokens, read where they lie (sequences are the runs of consecutive
    ``position_ids``), so the gathers into attention rows and back, the mask and the scores
    between tokens of different sequences are not computed. The graph keeps the layout's
    inputs (``unpack_index_g``, ``segment_ids_g``, ``repack_index``) and does not read them.
    Same arithmetic as the other attentions to fp32 rounding (summation order and ``exp``).
    Other layouts keep ``mha`` or the plain operators.
``fused_fp32`` (fp32 graphs; ONNX Runtime's CPU provider, built on the host at first use)
    the float32 work after the attention output, intermediate and output Linear layers'
    products in one pass per row: ``BiasGelu`` (bias and GELU) and ``BiasResidualLayerNorm``
    (bias, residual add and LayerNorm); with ``packed_attention``, ``PackedAttention`` adds
    the Q/K/V bias as it reads Q, K and V. Same per-token arithmetic as the plain operators;
    GELU's ``erf`` and LayerNorm's sums round differently in the last bits.
"""


HOST_BUILT_KERNELS = frozenset({"fused_int8", "packed_attention", "fused_fp32"})
"""The kernels of this package's own CPU library (domain ``packed_bert``), compiled on the host
at first use (:mod:`packing.runtime.cpu_kernels`): a host with no C++ compiler cannot run them."""

DEFAULT_KERNELS: dict[str, frozenset[str]] = {
    "fp32": frozenset({"mha", "packed_attention", "fused_fp32"}),
    "int8": frozenset({"int8_to_float", "mha", "fused_int8", "packed_attention"}),
    "fp16": frozenset(),
}
"""The kernels ``packed-bert prepare`` writes per precision unless told otherwise (measured
faster; the contrib kernels give the plain graph's numbers, ``fused_int8`` and ``fused_fp32``
the same within the last bits, ``packed_attention`` within fp32 rounding: docs/precision.md
"Where the time goes"). :data:`HOST_BUILT_KERNELS` are left out on a host with no C++ compiler
(:func:`packing.model.prepare.default_kernels`). fp16 graphs keep the plain operators: they
run on CUDA, where these were not measured (no GPU here); an fp32 folder meant for CUDA is
prepared with ``--kernels mha`` (this package's kernels run on the CPU only)."""


def check_kernels(kernels, precision: str | None = None) -> frozenset[str]:
    """``kernels`` as a frozenset if each is one of :data:`KERNELS` (and, given a
    ``precision``, ``fused_int8`` only for int8 and ``fused_fp32`` only for fp32), else
    ValueError naming the bad one."""
    out = frozenset(kernels)
    bad = sorted(out - set(KERNELS))
    if bad:
        raise ValueError(f"unknown kernels {bad}; expected a subset of {KERNELS}")
    if precision is not None and "fused_int8" in out and precision != "int8":
        raise ValueError(f"kernel fused_int8 is for int8 graphs; the precision is {precision!r}")
    if precision is not None and "fused_fp32" in out and precision != "fp32":
        raise ValueError(f"kernel fused_fp32 is for fp32 graphs; the precision is {precision!r}")
    if precision == "fp16" and "packed_attention" in out:
        raise ValueError("kernel packed_attention is float32 on the CPU; the precision is 'fp16'")
    return out


class _Builder:
    """Small helper that names nodes and collects them."""

    def __init__(
        self, precision: str = "fp32", token_major: bool = False, kernels=frozenset()
    ) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.consts: list[TensorProto] = []
        self._n = 0
        self.precision = check_precision(precision)
        self.float = np.float16 if precision == "fp16" else np.float32  # activations' dtype
        self.token_major = token_major  # hidden states are [1, T, H] (unpack_repack)
        self._quantized = set()  # Linear prefixes written as int8 (set by build_graph)
        self._role = "embed"  # first part of each node's name (ROLES)
        self.kernels = check_kernels(kernels)
        self._quant: dict[str, tuple[str, str]] = {}  # float tensor -> its (q, scale), fused_int8

    @property
    def fused(self) -> bool:
        """True when the int8 Linear layers are written with the ``fused_int8`` kernels."""
        return "fused_int8" in self.kernels and bool(self._quantized)

    @contextmanager
    def role(self, role: str) -> Iterator[None]:
        """Name the nodes written inside the block ``role/...`` (one of :data:`ROLES`)."""
        if role not in ROLES:
            raise ValueError(f"unknown node role {role!r}; expected one of {ROLES}")
        outer, self._role = self._role, role
        try:
            yield
        finally:
            self._role = outer

    def op(
        self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs
    ) -> str | list[str]:
        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}_{k}" for k in range(n_out)]
        name = f"{self._role}/{op_type}_{self._n}"
        node = helper.make_node(op_type, inputs, outs, name=name, domain=domain or None, **attrs)
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        self._n += 1
        name = f"const_{self._n}"
        self.consts.append(onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def fconst(self, value) -> str:
        """A float constant in the activations' dtype."""
        return self.const(value, self.float)

    @property
    def fused_fp32(self) -> bool:
        """True when the float32 Linear layers' bias, GELU, residual and LayerNorm are written
        with the ``fused_fp32`` kernels."""
        return "fused_fp32" in self.kernels and self.float == np.float32

    def product(self, x: str, prefix: str) -> str:
        """x @ W.T for a float Linear stored as W [out, in], without its bias."""
        with self.role("dense"):
            return self.op("MatMul", [x, self.op("Transpose", [prefix + ".weight"], perm=[1, 0])])

    def linear(self, x: str, prefix: str) -> str:
        """x @ W.T + b for a torch Linear stored as W [out, in]; written as
        :meth:`int8_linear` when ``prefix`` is one of the quantized Linear layers."""
        if prefix in self._quantized:
            return self.int8_linear(x, prefix)
        y = self.product(x, prefix)
        with self.role("bias"):
            return self.op("Add", [y, prefix + ".bias"])

    def int8_linear(self, x: str, prefix: str) -> str:
        """Batch-invariant int8 Linear on float32 ``x`` ``[..., K]`` (weights ``prefix.qweight``
        int8 ``[K, N]``, ``prefix.wscale`` float32 ``[N]``, ``prefix.bias``).

        Per token: ``scale = max(absmax / 127, MIN_SCALE)``, ``absmax`` the row's largest
        ``|x|`` (written ``Max(ReduceMax(x), -ReduceMin(x))``, the same number); ``QuantizeLinear``
        (axis 1 of ``[1, T, K]``, the scales as a ``[T]`` vector, uint8 zero point 128) ->
        ``MatMulInteger`` (u8 x s8, a_zero_point 128) -> ``Cast`` float -> ``Mul`` by the
        per-column weight scale -> ``Mul`` by the per-row scale -> ``Add`` bias. The two scales
        stay two ``Mul`` nodes: folded into one ``[T, N]`` scale, ONNX Runtime 1.32 fuses it
        into ``MatMulIntegerToFloat``, which supports only scalar or per-column scales and
        returns wrong results. :func:`packing.model.quantize.int8_linear_reference` is the
        same arithmetic in numpy.
        """
        with self.role("quant"):
            # max |x| per row as max(max x, -min x): two reads of x, no |x| tensor written
            hi = self.op("ReduceMax", [x], axes=[-1], keepdims=1)  # [..., 1]
            lo = self.op("ReduceMin", [x], axes=[-1], keepdims=1)
            absmax = self.op("Max", [hi, self.op("Neg", [lo])])
            scale = self.op(
                "Max",
                [
                    self.op("Div", [absmax, self.const(float(QMAX), np.float32)]),
                    self.const(MIN_SCALE, np.float32),
                ],
            )
            flat_x = x if self.token_major else self.op("Reshape", [x, self.const([1, -1, 0])])
            scale_t = self.op("Reshape", [scale, self.const([-1])])  # [T]
            zp_t = self.op(
                "Expand", [self.const(ZERO_POINT, np.uint8), self.op("Shape", [scale_t])]
            )
            q = self.op("QuantizeLinear", [flat_x, scale_t, zp_t], axis=1)  # uint8 [1, T, K]
        y = self.int8_product(q, prefix)
        with self.role("dequant"):
            if not self.token_major:  # back to x's leading dims: [..., N]
                lead = self.op("Shape", [x], end=-1)
                y = self.op("Reshape", [y, self.op("Concat", [lead, self.const([-1])], axis=0)])
            y = self.op("Mul", [y, scale])  # per-row scale, a node of its own (see above)
        with self.role("bias"):
            return self.op("Add", [y, prefix + ".bias"])

    def int8_product(self, q: str, prefix: str) -> str:
        """``q`` (uint8, zero point 128) times ``prefix.qweight`` times the per-column weight
        scale ``prefix.wscale``: float32 ``[..., N]``, before the per-row scale and the bias.
        ``MatMulIntegerToFloat`` (activation scale 1) with the ``int8_to_float`` kernel, else
        ``MatMulInteger`` -> ``Cast`` -> ``Mul``."""
        zp = self.const(ZERO_POINT, np.uint8)
        if "int8_to_float" in self.kernels:  # acc * (1 * wscale), one kernel
            with self.role("dense"):
                one = self.const(1.0, np.float32)
                return self.op(
                    "MatMulIntegerToFloat",
                    [q, prefix + ".qweight", one, prefix + ".wscale", zp],
                    domain=MS_DOMAIN,
                )
        with self.role("dense"):
            acc = self.op("MatMulInteger", [q, prefix + ".qweight", zp])
        with self.role("dequant"):
            return self.op(
                "Mul", [self.op("Cast", [acc], to=TensorProto.FLOAT), prefix + ".wscale"]
            )

    def quantized(self, x: str) -> tuple[str, str]:
        """``fused_int8``: the uint8 ``q`` and per-row scale ``[..., 1]`` of float32 ``x``,
        one ``RowQuantize`` per tensor (or the pair a fused kernel already wrote for it)."""
        if x not in self._quant:
            with self.role("quant"):
                self._quant[x] = tuple(
                    self.op("RowQuantize", [x], n_out=2, domain=PB_DOMAIN, min_scale=MIN_SCALE)
                )
        return self._quant[x]

    def fused_residual_norm(
        self, xq: tuple[str, str], residual: str, linear: str, norm: str, eps: float
    ) -> str:
        """``fused_int8``: ``LayerNorm(residual + linear(x))`` as one
        ``DequantBiasResidualLayerNormQuantize`` after the int8 product of ``xq``, the
        ``(q, scale)`` of ``x``; the result's quantization, written by the same kernel, is
        kept for the next Linear."""
        q, scale = xq
        acc = self.int8_product(q, linear)
        with self.role("norm"):
            y, qy, sy = self.op(
                "DequantBiasResidualLayerNormQuantize",
                [acc, scale, linear + ".bias", residual, norm + ".weight", norm + ".bias"],
                n_out=3,
                domain=PB_DOMAIN,
                min_scale=MIN_SCALE,
                epsilon=float(eps),
            )
        self._quant[y] = (qy, sy)
        return y

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        with self.role("norm"):
            return self.op(
                "LayerNormalization",
                [x, prefix + ".weight", prefix + ".bias"],
                axis=-1,
                epsilon=eps,
            )

    def gelu(self, x: str) -> str:
        """Exact (erf) GELU, as BERT's ``hidden_act='gelu'``; ORT fuses it to one kernel."""
        with self.role("gelu"):
            scaled = self.op("Div", [x, self.fconst(np.sqrt(2.0))])
            one_plus = self.op("Add", [self.op("Erf", [scaled]), self.fconst(1.0)])
            return self.op("Mul", [self.op("Mul", [x, one_plus]), self.fconst(0.5)])


def _qkv(b: _Builder, h: str, p: str) -> str:
    """Fused Q/K/V projection of ``h``: [..., 3H] (int8: one quantized Linear)."""
    prefix = p + "attention.self.qkv"
    if prefix in b._quantized and b.fused:
        q, scale = b.quantized(h)
        acc = b.int8_product(q, prefix)
        with b.role("dequant"):
            return b.op("DequantBias", [acc, scale, prefix + ".bias"], domain=PB_DOMAIN)
    if prefix in b._quantized:
        return b.int8_linear(h, prefix)
    y, bias = _qkv_product(b, h, p)
    with b.role("bias"):
        return b.op("Add", [y, bias])


def _qkv_product(b: _Builder, h: str, p: str) -> tuple[str, str]:
    """Fused Q/K/V float product of ``h`` [..., 3H] without its bias, and that bias [3H]."""
    with b.role("dense"):
        w, bias = _qkv_weights(b, p)
        return b.op("MatMul", [h, w]), bias


def _qkv_weights(b: _Builder, p: str) -> tuple[str, str]:
    """Fused Q/K/V projection weight [H, 3H] and bias [3H] (constant-folded at load)."""
    parts = [
        b.op("Transpose", [f"{p}attention.self.{n}.weight"], perm=[1, 0])
        for n in ("query", "key", "value")
    ]
    w = b.op("Concat", parts, axis=1)
    bias = b.op(
        "Concat", [f"{p}attention.self.{n}.bias" for n in ("query", "key", "value")], axis=0
    )
    return w, bias


def _attention(b: _Builder, qkv: str, bias: str, dims: BertDims) -> str:
    """Multi-head attention on a padded view.

    qkv: [N, L, 3H] fused projections; bias: additive mask [N, 1, L, L] (or [N, 1, 1, L],
    broadcast over the queries). Returns the context [N, L, H]. Written as one
    ``MultiHeadAttention`` when the builder has the ``mha`` kernel (:data:`KERNELS`).
    """
    if "mha" in b.kernels:
        return _fused_attention(b, qkv, bias, dims)
    heads = dims.num_attention_heads
    d = dims.hidden_size // heads
    with b.role("attn_layout"):
        x = b.op("Reshape", [qkv, b.const([0, 0, 3, heads, d])])
        x = b.op("Transpose", [x], perm=[2, 0, 3, 1, 4])  # [3, N, heads, L, d]
        q, k, v = (b.op("Gather", [x, b.const(i)], axis=0) for i in range(3))
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    with b.role("attn_scores"):
        q = b.op("Mul", [q, b.fconst(1.0 / np.sqrt(d))])
        scores = b.op("MatMul", [q, kt])
    with b.role("attn_softmax"):
        probs = b.op("Softmax", [b.op("Add", [scores, bias])], axis=-1)
    with b.role("attn_context"):
        ctx = b.op("MatMul", [probs, v])
    with b.role("attn_layout"):
        ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])  # [N, L, heads, d]
        return b.op("Reshape", [ctx, b.const([0, 0, dims.hidden_size])])


def _fused_attention(b: _Builder, qkv: str, bias: str, dims: BertDims) -> str:
    """:func:`_attention` as ONNX Runtime's ``MultiHeadAttention`` (``com.microsoft``): Q, K
    and V split from ``qkv`` ([N, L, H] each), the mask [N, 1, L, L] as its
    ``attention_bias``, scale 1/sqrt(head size)."""
    h = dims.hidden_size
    with b.role("attn_layout"):
        q, k, v = b.op("Split", [qkv, b.const([h, h, h])], n_out=3, axis=-1)
    with b.role("attn_fused"):
        return b.op(
            "MultiHeadAttention",
            [q, k, v, "", "", bias],
            domain=MS_DOMAIN,
            num_heads=dims.num_attention_heads,
        )


def _key_bias(b: _Builder, allowed: str) -> str:
    """0 where ``allowed`` (bool), MASK_VALUE elsewhere, as float32."""
    with b.role("mask"):
        return b.op("Where", [allowed, b.fconst(0.0), b.fconst(MASK_VALUE)])


def _embeddings(b: _Builder, ids: str, types: str, positions: str, eps: float) -> str:
    e = "bert.embeddings."
    with b.role("embed"):
        word = b.op("Gather", [e + "word_embeddings.weight", ids], axis=0)
        pos = b.op("Gather", [e + "position_embeddings.weight", positions], axis=0)
        typ = b.op("Gather", [e + "token_type_embeddings.weight", types], axis=0)
        summed = b.op("Add", [b.op("Add", [word, pos]), typ])
        return b.layer_norm(summed, e + "LayerNorm", eps)


def _ffn_block(b: _Builder, ctx: str, h: str, p: str, eps: float) -> str:
    """Attention output projection, residual + LayerNorm, feed-forward, residual + LayerNorm."""
    if b.fused:
        return _fused_ffn_block(b, ctx, h, p, eps)
    if b.fused_fp32:
        return _fp32_ffn_block(b, ctx, h, p, eps)
    out = b.linear(ctx, p + "attention.output.dense")
    with b.role("norm"):
        h1 = b.layer_norm(b.op("Add", [out, h]), p + "attention.output.LayerNorm", eps)
    ff = b.linear(b.gelu(b.linear(h1, p + "intermediate.dense")), p + "output.dense")
    with b.role("norm"):
        return b.layer_norm(b.op("Add", [ff, h1]), p + "output.LayerNorm", eps)


def _fp32_residual_norm(b: _Builder, x: str, residual: str, linear: str, norm: str, eps) -> str:
    """``fused_fp32``: ``LayerNorm(residual + linear(x))`` as the float product and one
    ``BiasResidualLayerNorm``."""
    y = b.product(x, linear)
    with b.role("norm"):
        return b.op(
            "BiasResidualLayerNorm",
            [y, linear + ".bias", residual, norm + ".weight", norm + ".bias"],
            domain=PB_DOMAIN,
            epsilon=float(eps),
        )


def _fp32_ffn_block(b: _Builder, ctx: str, h: str, p: str, eps: float) -> str:
    """:func:`_ffn_block` of a float32 layer with the ``fused_fp32`` kernels: one kernel after
    each of the three float products."""
    h1 = _fp32_residual_norm(
        b, ctx, h, p + "attention.output.dense", p + "attention.output.LayerNorm", eps
    )
    up = p + "intermediate.dense"
    y = b.product(h1, up)
    with b.role("gelu"):
        act = b.op("BiasGelu", [y, up + ".bias"], domain=PB_DOMAIN)
    return _fp32_residual_norm(b, act, h1, p + "output.dense", p + "output.LayerNorm", eps)


def _fused_ffn_block(b: _Builder, ctx: str, h: str, p: str, eps: float) -> str:
    """:func:`_ffn_block` of an int8 layer with the ``fused_int8`` kernels: four kernels
    between the four int8 products, each reading its rows once."""
    h1 = b.fused_residual_norm(
        b.quantized(ctx), h, p + "attention.output.dense", p + "attention.output.LayerNorm", eps
    )
    q1, s1 = b.quantized(h1)
    up = p + "intermediate.dense"
    acc = b.int8_product(q1, up)
    with b.role("gelu"):  # GELU's float32 output is never written: only its (q, scale)
        gelu_q = b.op(
            "DequantBiasGeluQuantize",
            [acc, s1, up + ".bias"],
            n_out=2,
            domain=PB_DOMAIN,
            min_scale=MIN_SCALE,
        )
    return b.fused_residual_norm(tuple(gelu_q), h1, p + "output.dense", p + "output.LayerNorm", eps)


def _qa_head(b: _Builder, h: str) -> tuple[str, str]:
    logits = b.linear(h, "qa_outputs")  # [..., 2]
    with b.role("head"):
        if b.float != np.float32:  # keep_io_types: float32 logits whatever the precision
            logits = b.op("Cast", [logits], to=TensorProto.FLOAT)
        start = b.op("Gather", [logits, b.const(0)], axis=-1)
        end = b.op("Gather", [logits, b.const(1)], axis=-1)
    b.nodes.append(helper.make_node("Identity", [start], ["start_logits"]))
    b.nodes.append(helper.make_node("Identity", [end], ["end_logits"]))
    return "start_logits", "end_logits"


def _hidden_output(b: _Builder, h: str) -> str:
    """The encoder's last hidden state as the graph output :data:`HIDDEN_OUTPUT`, float32
    whatever the precision (keep_io_types)."""
    if b.float != np.float32:
        with b.role("head"):
            h = b.op("Cast", [h], to=TensorProto.FLOAT)
    b.nodes.append(helper.make_node("Identity", [h], [HIDDEN_OUTPUT]))
    return HIDDEN_OUTPUT


def _outputs(b: _Builder, h: str, task: TaskSpec) -> None:
    """What the graph of ``task`` writes from the encoder's last hidden state ``h``."""
    if task.task == "qa":
        _qa_head(b, h)
    else:
        _hidden_output(b, h)


def _row_graph(b: _Builder, dims: BertDims, segmented: bool, task: TaskSpec) -> None:
    """Body of the ``original`` (segmented=False) and ``attention_mask`` graphs."""
    eps = dims.layer_norm_eps
    h = _embeddings(b, "input_ids", "token_type_ids", "position_ids", eps)
    if segmented:
        bias = _segment_bias(b, "attention_mask")  # [B, 1, S, S]
    else:
        with b.role("mask"):
            real = b.op("Greater", ["attention_mask", b.const(0)])
            bias = b.op("Unsqueeze", [_key_bias(b, real), b.const([1, 2])])  # [B, 1, 1, S]
            if "mha" in b.kernels:  # MultiHeadAttention's bias is per query: [B, 1, S, S]
                s = b.op("Shape", ["attention_mask"], start=1, end=2)
                bias = b.op("Expand", [bias, b.op("Concat", [b.const([1, 1]), s, s], axis=0)])
    for i in range(dims.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        qkv = _qkv(b, h, p)
        h = _ffn_block(b, _attention(b, qkv, bias, dims), h, p, eps)
    _outputs(b, h, task)


def _segment_bias(b: _Builder, segments: str) -> str:
    """[N, 1, L, L] additive bias: a token sees only real tokens of its own segment."""
    with b.role("mask"):
        seg_q = b.op("Unsqueeze", [segments, b.const([2])])  # [N, L, 1]
        seg_k = b.op("Unsqueeze", [segments, b.const([1])])  # [N, 1, L]
        same = b.op("Equal", [seg_q, seg_k])
        real = b.op("Greater", [seg_k, b.const(0)])
        return b.op("Unsqueeze", [_key_bias(b, b.op("And", [same, real])), b.const([1])])


def _unpack_graph(b: _Builder, dims: BertDims, task: TaskSpec) -> None:
    """Body of the padding-free ``unpack_repack`` graph.

    Hidden states stay [1, T, H] (3-D so ONNX Runtime keeps its pre-packed MatMul and
    SkipLayerNorm kernels). Per layer the fused Q/K/V projection runs on the real tokens, and
    attention is :func:`_packed_attention` (the ``packed_attention`` kernel) or
    :func:`_group_attention` (rows gathered per attention group).
    """
    eps = dims.layer_norm_eps
    h = _embeddings(b, "input_ids", "token_type_ids", "position_ids", eps)  # [T, H]
    with b.role("repack"):
        h = b.op("Unsqueeze", [h, b.const([0])])  # [1, T, H]
    packed = "packed_attention" in b.kernels
    if not packed:
        biases = [_segment_bias(b, f"segment_ids_{g}") for g in range(ATTENTION_GROUPS)]
        flat_shape = b.const([1, -1, dims.hidden_size])
    for i in range(dims.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        if not packed:
            ctx = _group_attention(b, _qkv(b, h, p), biases, flat_shape, dims)
        elif b.fused_fp32:  # the Q/K/V bias added inside PackedAttention
            ctx = _packed_attention(b, *_qkv_product(b, h, p), dims=dims)
        else:
            ctx = _packed_attention(b, _qkv(b, h, p), dims=dims)
        h = _ffn_block(b, ctx, h, p, eps)
    with b.role("repack"):
        h = b.op("Squeeze", [h, b.const([0])])
    _outputs(b, h, task)


def _packed_attention(b: _Builder, qkv: str, bias: str | None = None, *, dims: BertDims) -> str:
    """Attention of ``qkv`` [1, T, 3H] (plus ``bias`` [3H] when given) as one
    ``PackedAttention``: each sequence (a run of consecutive ``position_ids``) over its own
    tokens, where they lie. Returns [1, T, H]."""
    with b.role("attn_fused"):
        return b.op(
            "PackedAttention",
            [qkv, "position_ids"] + ([bias] if bias else []),
            domain=PB_DOMAIN,
            num_heads=dims.num_attention_heads,
        )


def _group_attention(
    b: _Builder, qkv: str, biases: list[str], flat_shape: str, dims: BertDims
) -> str:
    """Attention of ``qkv`` [1, T, 3H] on rows: gathered into each attention group's rows
    [R_g, W_g, 3H] (sequences packed whole into rows, ``biases[g]`` the block-diagonal mask
    per row), the groups' contexts flattened to ``flat_shape``, concatenated and gathered
    back to [1, T, H]."""
    flats = []
    for g, bias in enumerate(biases):
        with b.role("repack"):
            rows = b.op("Gather", [qkv, f"unpack_index_{g}"], axis=1)  # [1, R_g, W_g, 3H]
            rows = b.op("Squeeze", [rows, b.const([0])])  # [R_g, W_g, 3H]
        ctx = _attention(b, rows, bias, dims)  # [R_g, W_g, H]
        with b.role("repack"):
            flats.append(b.op("Reshape", [ctx, flat_shape]))  # [1, R_g*W_g, H]
    with b.role("repack"):
        flat = b.op("Concat", flats, axis=1)  # [1, sum R_g*W_g, H]
        return b.op("Gather", [flat, "repack_index"], axis=1)  # [1, T, H]


_FILE_DTYPES = {"fp32": ("F32",), "fp16": ("F16",), "int8": ("F32", "I8")}


def _int_input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def build_graph(
    kind: str,
    dims: BertDims,
    weights_path: Path,
    precision: str = "fp32",
    task: TaskSpec = TaskSpec(),
    kernels=None,
) -> onnx.ModelProto:
    """The ONNX model of ``kind`` (one of KINDS) in ``precision`` (one of
    :data:`~packing.model.quantize.PRECISIONS`) for ``task`` (default qa) reading its
    weights from ``weights_path``.

    ``weights_path`` must be a safetensors file holding :func:`graph_weight_names` of
    ``precision`` and ``task``: float32 Hugging Face tensors (fp32), their float16 copies
    (fp16), or :func:`packing.model.quantize.int8_weights` (int8); the model must be saved
    next to it. qa graphs write ``start_logits`` / ``end_logits``; embed and classify graphs
    write :data:`HIDDEN_OUTPUT` (module docstring). The model's metadata ``precision`` and
    ``task`` record them (the runtime refuses fp16 on a CPU). ``kernels`` (a subset of
    :data:`KERNELS`; None: :data:`DEFAULT_KERNELS` of the precision) are the kernels written
    in place of plain operators (``fused_int8`` for int8 only, ``fused_fp32`` for fp32 only,
    else ValueError); the metadata ``kernels`` records them.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; expected one of {KINDS}")
    if not isinstance(task, TaskSpec):
        raise TypeError(f"task must be a TaskSpec, got {type(task).__name__} {task!r}")
    if kernels is None:
        kernels = DEFAULT_KERNELS[check_precision(precision)]
    kernels = check_kernels(kernels, precision)
    b = _Builder(precision, token_major=(kind == "unpack_repack"), kernels=kernels)
    if precision == "int8":
        b._quantized = set(quantized_linears(dims.num_hidden_layers))
    if kind == "unpack_repack":
        inputs = [
            _int_input(n, ["tokens"]) for n in ("input_ids", "token_type_ids", "position_ids")
        ]
        for g in range(ATTENTION_GROUPS):
            inputs += [
                _int_input(f"unpack_index_{g}", [f"rows_{g}", f"width_{g}"]),
                _int_input(f"segment_ids_{g}", [f"rows_{g}", f"width_{g}"]),
            ]
        inputs.append(_int_input("repack_index", ["tokens"]))
        out_shape: list = ["tokens"]
        _unpack_graph(b, dims, task)
    else:
        inputs = [
            _int_input(n, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
        ]
        out_shape = ["batch", "seq"]
        _row_graph(b, dims, segmented=(kind == "attention_mask"), task=task)
    if task.task != "qa":
        out_shape = out_shape + [dims.hidden_size]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, out_shape) for n in graph_outputs(task)
    ]
    graph = helper.make_graph(
        b.nodes,
        f"bert_{task.task}_{kind}",
        inputs,
        outputs,
        initializer=external_initializers(
            weights_path, graph_weight_names(dims, precision, task), _FILE_DTYPES[precision]
        )
        + b.consts,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, MS_OPSET)]
        + (
            [helper.make_opsetid(PB_DOMAIN, PB_OPSET)]
            if any(n.domain == PB_DOMAIN for n in b.nodes)
            else []
        ),
        producer_name="packed-bert-serve",
    )
    props = {"precision": precision, "kernels": ",".join(sorted(b.kernels))}
    if task.task != "qa":
        props["task"] = task.task
    helper.set_model_props(model, props)
    model.ir_version = 8
    return model
