"""The compute limit of a benchmark run: the backend's dense MatMul rate at BERT's shapes.

A mode's throughput says little on its own; against what the hardware can do it says how
much is left. :func:`measure_matmul` runs, on ONNX Runtime with the bench's intra-op
threads, a small graph of the four dense MatMuls one BERT layer does per token --
``[1, rows, H] x [H, 3H]`` (Q/K/V), ``x [H, H]`` (attention output), ``x [H, FF]`` and
``[1, rows, FF] x [FF, H]`` (feed-forward) -- at several row counts, and reports GFLOP/s
for each. :func:`useful_flops` counts the work a workload needs when every request runs
alone and unpadded; useful flops / a mode's wall time, over the best MatMul rate, is the
fraction of the dense limit that mode turns into answers.

For an int8 model folder the limit is the same four products as ``MatMulInteger`` (uint8
activations x int8 weights, int32 results: what the int8 graphs run), counted as 2
operations per multiply-add (GOP/s), so int8's distance to its own limit -- and the
int8 limit's distance to fp32's -- shows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from packing.model.weights import BertDims

ROWS = (128, 256, 512, 1024, 2048, 4096)  # token rows per MatMul call that are measured


def useful_flops(lengths: Sequence[int] | np.ndarray, dims: BertDims) -> float:
    """Floating-point operations the sequences of ``lengths`` need, each run alone unpadded.

    Per sequence of length ``L`` and per encoder layer (``H`` = hidden_size,
    ``FF`` = intermediate_size; 2 flops per multiply-add)::

        dense      2 * L * (3H*H + H*H + 2*H*FF)   Q/K/V [H, 3H], attention output [H, H],
                                                  feed-forward [H, FF] and [FF, H]
        attention  4 * L*L * H                    Q K^T and probabilities x V, all heads

    times ``num_hidden_layers``. Embeddings, layer norms, softmax, GELU and the QA head are
    left out (well under 1% at bert-base). This is the work any method must do, whatever
    it pads or packs: for bert-base (H 768, FF 3072, 12 layers) at L = 158 it is about
    0.17 GFLOP per token.
    """
    L = np.asarray(lengths, dtype=np.float64)
    H, FF = dims.hidden_size, dims.intermediate_size
    per_layer = 2.0 * L * (4 * H * H + 2 * H * FF) + 4.0 * L * L * H
    return float(per_layer.sum() * dims.num_hidden_layers)


def chain_flops(rows: int, hidden: int, intermediate: int) -> int:
    """Flops of one run of :func:`matmul_graph` on ``rows`` rows: ``2 * rows * K * N`` summed
    over its four MatMuls."""
    return 2 * rows * (4 * hidden * hidden + 2 * hidden * intermediate)


def row_counts(cap: int) -> list[int]:
    """The entries of :data:`ROWS` up to ``cap`` (the model's batch_size * seq_len), or
    ``[cap]`` when it is below them all."""
    return [r for r in ROWS if r <= cap] or [int(cap)]


def _checked_model(graph):
    """``graph`` as an opset-17 ONNX model (IR version 8, which every ORT build here reads),
    checked by the ONNX checker."""
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="packed-bert-serve"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def int8_matmul_graph(hidden: int, intermediate: int, seed: int = 0):
    """ONNX model of the four int8 products: uint8 inputs ``x`` ``[1, rows, H]`` and ``g``
    ``[1, rows, FF]`` (zero point 128) -> int32 ``x @ Wqkv``, ``x @ Wo``, ``x @ W1`` and
    ``g @ W2``, random int8 weights (``MatMulInteger``, as the int8 graphs' Linear layers)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    H, FF = hidden, intermediate
    shapes = {"w_qkv": (H, 3 * H), "w_o": (H, H), "w_1": (H, FF), "w_2": (FF, H)}
    inits = [
        numpy_helper.from_array(rng.integers(-127, 128, size=s, dtype=np.int8), n)
        for n, s in shapes.items()
    ]
    inits.append(numpy_helper.from_array(np.array(128, np.uint8), "zp"))
    nodes = [
        helper.make_node("MatMulInteger", [src, w, "zp"], [out])
        for src, w, out in (
            ("x", "w_qkv", "qkv"),
            ("x", "w_o", "attn"),
            ("x", "w_1", "ffn"),
            ("g", "w_2", "out"),
        )
    ]
    graph = helper.make_graph(
        nodes,
        "bert_layer_int8_matmuls",
        [
            helper.make_tensor_value_info("x", TensorProto.UINT8, [1, "rows", H]),
            helper.make_tensor_value_info("g", TensorProto.UINT8, [1, "rows", FF]),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.INT32, [1, "rows", d])
            for n, d in (("qkv", 3 * H), ("attn", H), ("ffn", FF), ("out", H))
        ],
        initializer=inits,
    )
    return _checked_model(graph)


def matmul_graph(hidden: int, intermediate: int, seed: int = 0):
    """ONNX model: input ``x`` ``[1, rows, H]`` -> ``qkv = x @ Wqkv`` ``[1, rows, 3H]`` and
    ``out = ((x @ Wo) @ W1) @ W2`` ``[1, rows, H]``, random float32 weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    H, FF = hidden, intermediate
    weights = {"w_qkv": (H, 3 * H), "w_o": (H, H), "w_1": (H, FF), "w_2": (FF, H)}
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name
        )
        for name, shape in weights.items()
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w_qkv"], ["qkv"]),
        helper.make_node("MatMul", ["x", "w_o"], ["attn"]),
        helper.make_node("MatMul", ["attn", "w_1"], ["ffn"]),
        helper.make_node("MatMul", ["ffn", "w_2"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bert_layer_matmuls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "rows", H])],
        [
            helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, "rows", 3 * H]),
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "rows", H]),
        ],
        initializer=inits,
    )
    return _checked_model(graph)


@dataclass
class MatmulLimit:
    """What :func:`measure_matmul` measured."""

    hidden: int
    intermediate: int
    provider: str  # ONNX Runtime execution provider it ran on
    threads: int | None  # intra-op threads (None: ORT's default, all cores)
    rates: list[dict] = field(default_factory=list)  # {"rows", "gflops", "seconds"} per row count
    best_gflops: float = 0.0
    best_rows: int = 0
    precision: str = "fp32"  # fp32: MatMul GFLOP/s; int8: MatMulInteger GOP/s


def measure_matmul(
    hidden: int,
    intermediate: int,
    rows: Sequence[int] = ROWS,
    threads: int | None = None,
    device: str = "auto",
    min_seconds: float = 0.2,
    min_repeats: int = 3,
    precision: str = "fp32",
) -> MatmulLimit:
    """GFLOP/s of ONNX Runtime on :func:`matmul_graph` at each row count of ``rows``
    (``precision="int8"``: GOP/s on :func:`int8_matmul_graph`, uint8 x int8; fp16 is
    measured as fp32, its limit on a GPU is not modelled here).

    ``threads``: intra-op threads (None: ORT's default). ``device``: "cpu", "cuda" or
    "auto" (CUDA when a session really gets it), as the bench's backend takes it; CUDA runs
    with TF32 off, as the model's sessions do. For each row count:
    one warm-up run, then runs until ``min_repeats`` were made and ``min_seconds`` passed;
    the fastest run gives the rate (``chain_flops / seconds``). Inputs and outputs stay on
    the device (IO binding), so only the four MatMuls are timed.
    """
    from packing.runtime.backend import (
        CPU_PROVIDER,
        CUDA_PROVIDER,
        cuda_providers,
        import_onnxruntime,
        resolve_device,
        session_provider,
    )

    ort = import_onnxruntime()
    use_cuda = resolve_device(device) == "cuda"
    providers = cuda_providers() if use_cuda else [CPU_PROVIDER]  # CUDA: TF32 off, as the model
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    int8 = precision == "int8"
    graph = (int8_matmul_graph if int8 else matmul_graph)(hidden, intermediate)
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=providers)
    if use_cuda and session_provider(sess) != CUDA_PROVIDER:
        raise RuntimeError(
            f"the MatMul limit was asked on CUDA (device={device!r}), but ONNX "
            f"Runtime made its session on {session_provider(sess)}"
        )
    where = "cuda" if use_cuda else "cpu"
    result = MatmulLimit(
        hidden, intermediate, session_provider(sess), threads, precision="int8" if int8 else "fp32"
    )
    rng = np.random.default_rng(1)
    for n in rows:
        binding = sess.io_binding()
        if int8:
            feeds = {
                "x": rng.integers(0, 256, (1, int(n), hidden), dtype=np.uint8),
                "g": rng.integers(0, 256, (1, int(n), intermediate), dtype=np.uint8),
            }
        else:
            feeds = {"x": rng.standard_normal((1, int(n), hidden), dtype=np.float32)}
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, where, 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, where)
        sess.run_with_iobinding(binding)  # warm-up
        best, spent, done = float("inf"), 0.0, 0
        while done < min_repeats or spent < min_seconds:
            t0 = time.perf_counter()
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
            dt = time.perf_counter() - t0
            best, spent, done = min(best, dt), spent + dt, done + 1
        gflops = chain_flops(int(n), hidden, intermediate) / best / 1e9
        result.rates.append({"rows": int(n), "gflops": gflops, "seconds": best})
    top = max(result.rates, key=lambda r: r["gflops"])
    result.best_gflops, result.best_rows = top["gflops"], top["rows"]
    return result
