"""This package's CPU kernels (packing/runtime/cpu_kernels, domain packed_bert): each against
numpy, row by row independent of the other rows and of the thread count, the build cache,
and clear errors for bad inputs and a host without a compiler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from packing.model.quantize import MIN_SCALE, ZERO_POINT, quantize_rows
from packing.runtime import cpu_kernels

from factories import kernel_node_session

OUTPUTS = {
    "RowQuantize": [TensorProto.UINT8, TensorProto.FLOAT],
    "DequantBias": [TensorProto.FLOAT],
    "DequantBiasGeluQuantize": [TensorProto.UINT8, TensorProto.FLOAT],
    "DequantBiasResidualLayerNormQuantize": [
        TensorProto.FLOAT,
        TensorProto.UINT8,
        TensorProto.FLOAT,
    ],
    "BiasGelu": [TensorProto.FLOAT],
    "BiasResidualLayerNorm": [TensorProto.FLOAT],
}
INPUTS = {
    "RowQuantize": 1,
    "DequantBias": 3,
    "DequantBiasGeluQuantize": 3,
    "DequantBiasResidualLayerNormQuantize": 6,
    "BiasGelu": 2,
    "BiasResidualLayerNorm": 5,
}
EPS = 1e-12


def kernel_session(op: str, threads: int = 2):
    """An ONNX Runtime session of the one kernel ``op`` (inputs i0.., outputs o0..)."""
    ins = [(f"i{k}", TensorProto.FLOAT) for k in range(INPUTS[op])]
    outs = [(f"o{k}", t) for k, t in enumerate(OUTPUTS[op])]
    attrs = {"min_scale": MIN_SCALE}
    if "LayerNorm" in op:
        attrs["epsilon"] = EPS
    return kernel_node_session(op, ins, outs, threads=threads, **attrs)


def run(op: str, *arrays, threads: int = 2):
    sess = kernel_session(op, threads)
    return sess.run(None, {f"i{k}": a for k, a in enumerate(arrays)})


def gelu_reference(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    z = x.astype(np.float64)
    return (0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))).astype(np.float32)


def layer_norm_reference(x, gamma, beta):
    z = x.astype(np.float64)
    mean = z.mean(-1, keepdims=True)
    var = z.var(-1, keepdims=True)
    return ((z - mean) / np.sqrt(var + EPS) * gamma + beta).astype(np.float32)


def near_tie(x: np.ndarray, scale: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Where x / scale lies within ``tol`` of a rounding boundary (k + 0.5): a last-bit
    difference of x may round it either way."""
    v = x / scale
    return np.abs(v - np.floor(v) - 0.5) < tol


def rows(rng, shape, loud=1.0):
    return (rng.standard_normal(shape) * loud).astype(np.float32)


def test_row_quantize_is_the_graphs_quantization_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rows(rng, (2, 19, 96), 3.0)
    x[0, 0] = 0.0  # an all-zero row takes MIN_SCALE
    x[1, 3, 5] = 1e6  # one loud element saturates nothing: it sets its row's scale
    q, s = run("RowQuantize", x)
    ref_q, ref_s = quantize_rows(x)
    assert q.dtype == np.uint8 and q.shape == x.shape and s.shape == (2, 19, 1)
    assert np.array_equal(q, ref_q) and np.array_equal(s, ref_s)
    assert s[0, 0, 0] == np.float32(MIN_SCALE) and np.all(q[0, 0] == ZERO_POINT)


def test_dequant_bias_is_mul_then_add_bit_for_bit():
    rng = np.random.default_rng(1)
    acc = rows(rng, (33, 48), 100.0)
    scale = np.abs(rows(rng, (33, 1))) + 0.01
    bias = rows(rng, (48,))
    (y,) = run("DequantBias", acc, scale, bias)
    assert np.array_equal(y, acc * scale + bias)


def test_gelu_quantize_matches_numpy_to_the_int8_step():
    rng = np.random.default_rng(2)
    acc = rows(rng, (1, 41, 256), 50.0)
    scale = np.abs(rows(rng, (1, 41, 1))) * 0.1 + 0.01
    bias = rows(rng, (256,))
    q, s = run("DequantBiasGeluQuantize", acc, scale, bias)
    g = gelu_reference(acc * scale + bias)
    ref_q, ref_s = quantize_rows(g)
    np.testing.assert_allclose(s, ref_s, rtol=1e-6)
    differ = q != ref_q
    # only where the value sits on a rounding boundary, and by one step
    assert np.all(near_tie(g, ref_s)[differ]), int(differ.sum())
    assert np.abs(q.astype(int) - ref_q.astype(int)).max() <= 1


def test_gelu_covers_the_whole_erf_range():
    """Inputs from -10 to 10 (erf saturates beyond 4): the quantized GELU matches math.erf's."""
    x = np.linspace(-10, 10, 2001, dtype=np.float32).reshape(1, -1)
    one = np.ones((1, 1), np.float32)
    q, s = run("DequantBiasGeluQuantize", x, one, np.zeros(x.shape[-1], np.float32))
    ref_q, ref_s = quantize_rows(gelu_reference(x))
    np.testing.assert_allclose(s, ref_s, rtol=1e-6)
    assert np.abs(q.astype(int) - ref_q.astype(int)).max() <= 1
    assert (q != ref_q).mean() < 0.01


def test_residual_layer_norm_quantize_matches_numpy():
    rng = np.random.default_rng(3)
    acc = rows(rng, (2, 9, 128), 30.0)
    scale = np.abs(rows(rng, (2, 9, 1))) * 0.05 + 0.01
    bias, residual = rows(rng, (128,)), rows(rng, (2, 9, 128))
    gamma, beta = rows(rng, (128,)), rows(rng, (128,))
    y, q, s = run("DequantBiasResidualLayerNormQuantize", acc, scale, bias, residual, gamma, beta)
    ref = layer_norm_reference(residual + (acc * scale + bias), gamma, beta)
    np.testing.assert_allclose(y, ref, atol=5e-6, rtol=1e-5)
    # the quantized output is y's quantization, exactly
    ref_q, ref_s = quantize_rows(y)
    assert np.array_equal(q, ref_q) and np.array_equal(s, ref_s)


def test_bias_gelu_is_the_int8_kernels_gelu_bit_for_bit():
    """fp32's BiasGelu is gelu(x + bias) with the same arithmetic as the int8 kernel's GELU
    (whose scale 1 leaves x as it is), and matches math.erf's GELU over erf's whole range."""
    rng = np.random.default_rng(4)
    x = rows(rng, (3, 17, 200), 4.0)
    x[0, 0, :101] = np.linspace(-10, 10, 101)  # erf saturates beyond 4
    bias = rows(rng, (200,))
    (y,) = run("BiasGelu", x, bias)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, gelu_reference(x + bias), atol=3e-6, rtol=1e-6)
    one = np.ones((3, 17, 1), np.float32)
    q, s = run("DequantBiasGeluQuantize", x, one, bias)
    ref_q, ref_s = quantize_rows(y)
    assert np.array_equal(q, ref_q) and np.array_equal(s, ref_s)


def test_bias_residual_layer_norm_matches_numpy_and_the_int8_kernel():
    """fp32's BiasResidualLayerNorm is LayerNorm(residual + (x + bias)): against float64 numpy,
    and bit for bit the int8 kernel's float output with a scale of 1."""
    rng = np.random.default_rng(5)
    x, residual = rows(rng, (2, 11, 128), 3.0), rows(rng, (2, 11, 128))
    bias, gamma, beta = rows(rng, (128,)), rows(rng, (128,)), rows(rng, (128,))
    (y,) = run("BiasResidualLayerNorm", x, bias, residual, gamma, beta)
    ref = layer_norm_reference(residual + (x + bias), gamma, beta)
    np.testing.assert_allclose(y, ref, atol=5e-6, rtol=1e-5)
    one = np.ones((2, 11, 1), np.float32)
    y8, _, _ = run("DequantBiasResidualLayerNormQuantize", x, one, bias, residual, gamma, beta)
    assert np.array_equal(y, y8)


KERNEL_CASES = {
    "RowQuantize": lambda rng, r, k: (rows(rng, (r, k), 4.0),),
    "DequantBias": lambda rng, r, k: (
        rows(rng, (r, k), 80.0),
        np.abs(rows(rng, (r, 1))) + 0.01,
        rows(rng, (k,)),
    ),
    "DequantBiasGeluQuantize": lambda rng, r, k: (
        rows(rng, (r, k), 80.0),
        np.abs(rows(rng, (r, 1))) * 0.05 + 0.01,
        rows(rng, (k,)),
    ),
    "DequantBiasResidualLayerNormQuantize": lambda rng, r, k: (
        rows(rng, (r, k), 80.0),
        np.abs(rows(rng, (r, 1))) * 0.05 + 0.01,
        rows(rng, (k,)),
        rows(rng, (r, k)),
        rows(rng, (k,)),
        rows(rng, (k,)),
    ),
    "BiasGelu": lambda rng, r, k: (rows(rng, (r, k), 4.0), rows(rng, (k,))),
    "BiasResidualLayerNorm": lambda rng, r, k: (
        rows(rng, (r, k), 4.0),
        rows(rng, (k,)),
        rows(rng, (r, k)),
        rows(rng, (k,)),
        rows(rng, (k,)),
    ),
}
ROW_INPUTS = {  # the inputs with one row per output row (the rest are per column)
    "RowQuantize": (0,),
    "DequantBias": (0, 1),
    "DequantBiasGeluQuantize": (0, 1),
    "DequantBiasResidualLayerNormQuantize": (0, 1, 3),
    "BiasGelu": (0,),
    "BiasResidualLayerNorm": (0, 2),
}


@settings(max_examples=16, deadline=None)
@given(
    op=st.sampled_from(sorted(KERNEL_CASES)),
    n_rows=st.integers(1, 70),
    width=st.sampled_from([1, 7, 16, 64, 100]),
    pick=st.integers(0, 69),
    seed=st.integers(0, 2**16),
)
def test_a_row_alone_equals_the_row_among_others_bit_for_bit(op, n_rows, width, pick, seed):
    """Batch invariance: every output row depends on its own input row only, whatever the
    number of rows, the threads, and a 30x louder neighbour."""
    rng = np.random.default_rng(seed)
    inputs = KERNEL_CASES[op](rng, n_rows, width)
    per_row = ROW_INPUTS[op]
    inputs = list(inputs)
    inputs[0][0] *= 30.0  # the loud neighbour (row 0)
    i = pick % n_rows
    crowd = run(op, *inputs, threads=2)
    alone_in = [a[i : i + 1] if k in per_row else a for k, a in enumerate(inputs)]
    alone = run(op, *alone_in, threads=1)
    for c, a in zip(crowd, alone):
        assert np.array_equal(c[i : i + 1], a), op


def test_empty_input_gives_empty_outputs():
    q, s = run("RowQuantize", np.zeros((0, 8), np.float32))
    assert q.shape == (0, 8) and s.shape == (0, 1)


@pytest.mark.parametrize(
    ("op", "inputs", "message"),
    [
        (
            "DequantBias",
            (np.ones((4, 8), np.float32), np.ones((4, 1), np.float32), np.ones(5, np.float32)),
            "bias has 5 elements, expected 8",
        ),
        (
            "DequantBias",
            (np.ones((4, 8), np.float32), np.ones((3, 1), np.float32), np.ones(8, np.float32)),
            "scale has 3 elements, expected one per row \\(4\\)",
        ),
        (
            "DequantBiasResidualLayerNormQuantize",
            (np.ones((4, 8), np.float32), np.ones((4, 1), np.float32), np.ones(8, np.float32))
            + (np.ones((4, 7), np.float32), np.ones(8, np.float32), np.ones(8, np.float32)),
            "residual's shape differs from input 0's",
        ),
        (
            "BiasGelu",
            (np.ones((4, 8), np.float32), np.ones(5, np.float32)),
            "BiasGelu: bias has 5 elements, expected 8",
        ),
        (
            "BiasResidualLayerNorm",
            (np.ones((4, 8), np.float32), np.ones(8, np.float32), np.ones((4, 8), np.float32))
            + (np.ones(8, np.float32), np.ones(6, np.float32)),
            "gamma and beta need 8 elements each",
        ),
    ],
)
def test_bad_shapes_are_refused_with_the_bad_value(op, inputs, message):
    with pytest.raises(Exception, match=message):
        run(op, *inputs)


def test_library_is_built_once_per_source_compiler_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_kernels.CACHE_ENV, str(tmp_path))
    cpu_kernels.library_path.cache_clear()
    try:
        first = cpu_kernels.library_path()
        assert first.parent.parent == tmp_path and first.exists()
        mtime = first.stat().st_mtime_ns
        cpu_kernels.library_path.cache_clear()
        assert cpu_kernels.library_path() == first and first.stat().st_mtime_ns == mtime
        # another CPU (a shared home over hosts of two kinds) gets a build of its own
        monkeypatch.setattr(cpu_kernels, "_cpu_flags", lambda: "flags : sse2")
        cpu_kernels.library_path.cache_clear()
        other = cpu_kernels._build_key(cpu_kernels.compiler())
        assert other != first.parent.name
    finally:
        cpu_kernels.library_path.cache_clear()


def test_no_compiler_is_a_clear_error_and_prepare_leaves_the_kernels_out(monkeypatch):
    from packing.model.prepare import default_kernels

    monkeypatch.setattr(cpu_kernels, "compiler", lambda: None)
    cpu_kernels.library_path.cache_clear()
    try:
        with pytest.raises(cpu_kernels.KernelBuildError, match="need a C\\+\\+ compiler"):
            cpu_kernels.library_path()
        with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
            kernels = default_kernels("int8")
        assert not kernels & {"fused_int8", "packed_attention"} and "int8_to_float" in kernels
    finally:
        cpu_kernels.library_path.cache_clear()


def test_a_failed_build_shows_the_compilers_message(tmp_path, monkeypatch):
    bad = tmp_path / "kernels.cc"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", bad)
    monkeypatch.setenv(cpu_kernels.CACHE_ENV, str(tmp_path / "cache"))
    cpu_kernels.library_path.cache_clear()
    try:
        with pytest.raises(cpu_kernels.KernelBuildError, match="building the packed_bert CPU"):
            cpu_kernels.library_path()
        assert not list((tmp_path / "cache").rglob("*.so"))  # no half-written library left
    finally:
        cpu_kernels.library_path.cache_clear()
