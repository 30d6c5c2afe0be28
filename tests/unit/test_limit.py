"""The compute limit: useful-flop formula and the dense MatMul measurement."""

from __future__ import annotations

import numpy as np
import pytest

from packing.bench.limit import (
    ROWS,
    chain_flops,
    matmul_graph,
    measure_matmul,
    row_counts,
    useful_flops,
)
from packing.model.weights import BertDims


def test_useful_flops_on_known_dims():
    dims = BertDims(
        vocab_size=10,
        hidden_size=4,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=8,
    )
    # per layer, L = 3: dense 2*3*(3*16 + 16 + 2*32) = 768, attention 4*9*4 = 144
    assert useful_flops([3], dims) == 2 * (768 + 144)
    assert useful_flops([3, 5], dims) == useful_flops([3], dims) + useful_flops([5], dims)
    assert useful_flops([], dims) == 0.0


def test_bert_base_is_about_0_17_gflop_per_token():
    per_token = useful_flops([158], BertDims()) / 158 / 1e9
    assert 0.17 <= per_token < 0.18


def test_chain_flops_and_row_counts():
    assert chain_flops(10, 4, 8) == 2 * 10 * (4 * 3 * 4 + 4 * 4 + 4 * 8 + 8 * 4)
    assert row_counts(256) == [128, 256]
    assert row_counts(16 * 256) == list(ROWS)
    assert row_counts(10**6) == list(ROWS)
    assert row_counts(100) == [100]


def test_matmul_graph_computes_the_layer_matmuls():
    import onnxruntime as ort
    from onnx import numpy_helper

    model = matmul_graph(8, 16)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert {k: v.shape for k, v in w.items()} == {
        "w_qkv": (8, 24),
        "w_o": (8, 8),
        "w_1": (8, 16),
        "w_2": (16, 8),
    }
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    qkv, out = sess.run(["qkv", "out"], {"x": x})
    np.testing.assert_allclose(qkv, x @ w["w_qkv"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, x @ w["w_o"] @ w["w_1"] @ w["w_2"], rtol=1e-4, atol=1e-4)


def test_measure_matmul_gives_a_positive_rate_per_row_count():
    lim = measure_matmul(16, 32, rows=[8, 32, 64], threads=1, device="cpu", min_seconds=0.01)
    assert [r["rows"] for r in lim.rates] == [8, 32, 64]
    assert all(r["gflops"] > 0 and r["seconds"] > 0 for r in lim.rates)
    for r in lim.rates:
        assert r["gflops"] == pytest.approx(chain_flops(r["rows"], 16, 32) / r["seconds"] / 1e9)
    assert lim.best_gflops == max(r["gflops"] for r in lim.rates)
    assert lim.best_rows in (8, 32, 64)
    assert (lim.provider, lim.threads) == ("CPUExecutionProvider", 1)
