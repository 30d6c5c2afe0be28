"""The PackedAttention CPU kernel (packing/runtime/cpu_kernels, domain packed_bert): each
sequence attends over its own tokens only, as numpy computes it, and a sequence's context is
the same bits alone or among others, on any number of threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from packing.runtime import cpu_kernels

from factories import kernel_node_session

FLOAT, UINT8 = TensorProto.FLOAT, TensorProto.UINT8
ATOL = 2e-6  # fp32 against a float64 reference, contexts of magnitude ~1


def attention_session(
    num_heads: int | None,
    threads: int = 2,
    scale: float | None = None,
    library=None,
    bias: bool = False,
):
    """An ONNX Runtime session of one PackedAttention node (inputs qkv, position_ids, and
    with ``bias`` its optional bias), with the host's kernel library or ``library``."""
    ins = [("qkv", FLOAT), ("position_ids", TensorProto.INT64)] + (
        [("bias", FLOAT)] if bias else []
    )
    attrs = {} if num_heads is None else {"num_heads": num_heads}
    if scale is not None:
        attrs["scale"] = scale
    return kernel_node_session(
        "PackedAttention", ins, [("context", FLOAT)], library=library, threads=threads, **attrs
    )


def attend(qkv, positions, num_heads, threads=2, scale=None, library=None, bias=None):
    sess = attention_session(num_heads, threads, scale, library, bias is not None)
    feed = {"qkv": qkv, "position_ids": np.asarray(positions, np.int64)}
    if bias is not None:
        feed["bias"] = bias
    (out,) = sess.run(None, feed)
    return out


def positions_of(lengths) -> np.ndarray:
    return np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)


def reference(qkv: np.ndarray, lengths, num_heads: int, scale: float | None = None) -> np.ndarray:
    """Multi-head attention of each sequence over its own tokens, in float64."""
    x = qkv.reshape(-1, qkv.shape[-1]).astype(np.float64)
    hidden = x.shape[-1] // 3
    d = hidden // num_heads
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    out = np.zeros((x.shape[0], hidden))
    start = 0
    for n in lengths:
        rows = x[start : start + n]
        for h in range(num_heads):
            q, k, v = (
                rows[:, part * hidden + h * d : part * hidden + (h + 1) * d] for part in range(3)
            )
            s = q @ k.T * scale
            p = np.exp(s - s.max(-1, keepdims=True))
            out[start : start + n, h * d : (h + 1) * d] = (p / p.sum(-1, keepdims=True)) @ v
        start += n
    return out.reshape(*qkv.shape[:-1], hidden).astype(np.float32)


def packed_qkv(rng, lengths, hidden, loud=1.0):
    return (rng.standard_normal((1, sum(lengths), 3 * hidden)) * loud).astype(np.float32)


@pytest.mark.parametrize(
    ("heads", "head_size", "lengths"),
    [
        (12, 64, [168, 1, 93, 256]),  # BERT-base's heads; a one-token sequence
        (4, 8, [5, 17, 33]),  # narrower than one vector
        (2, 48, [40, 7]),  # not a power of two
        (3, 24, [64]),
        (1, 100, [3, 70]),
    ],
)
def test_matches_numpy_per_sequence(heads, head_size, lengths):
    rng = np.random.default_rng(heads * 1000 + head_size)
    qkv = packed_qkv(rng, lengths, heads * head_size)
    out = attend(qkv, positions_of(lengths), heads)
    assert out.shape == (1, sum(lengths), heads * head_size) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(qkv, lengths, heads), atol=ATOL, rtol=1e-5)


def test_loud_scores_stay_finite_and_exact():
    """Scores of hundreds (a softmax of near one-hot rows) and a given scale. float32 scores
    of ~100 carry ~1e-5 of rounding each, which the softmax passes on to contexts of ~6."""
    rng = np.random.default_rng(7)
    lengths = [31, 50]
    qkv = packed_qkv(rng, lengths, 64, loud=6.0)
    out = attend(qkv, positions_of(lengths), 2, scale=0.5)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference(qkv, lengths, 2, 0.5), atol=5e-4, rtol=1e-4)


def test_sequences_are_runs_of_consecutive_positions():
    """A new sequence starts wherever a position is not the previous one plus one: the
    layout's padding tokens (position 0 each) are sequences of one token, and a run that
    starts above 0 is still one sequence."""
    rng = np.random.default_rng(8)
    positions = np.array([0, 1, 2, 0, 0, 1, 5, 6, 7, 0, 0], np.int64)
    lengths = [3, 1, 2, 3, 1, 1]
    qkv = packed_qkv(rng, lengths, 16)
    out = attend(qkv, positions, 2)
    np.testing.assert_allclose(out, reference(qkv, lengths, 2), atol=ATOL, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 90), min_size=1, max_size=8),
    pick=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)
def test_a_sequence_alone_equals_the_sequence_among_others_bit_for_bit(lengths, pick, seed):
    """Batch invariance: a sequence's context depends on its own tokens only, whatever its
    neighbours (one 30x louder), their number and the threads."""
    rng = np.random.default_rng(seed)
    qkv = packed_qkv(rng, lengths, 64)
    qkv[0, 0] *= 30.0
    i = pick % len(lengths)
    start = sum(lengths[:i])
    crowd = attend(qkv, positions_of(lengths), 4, threads=2)
    alone = attend(qkv[:, start : start + lengths[i]], np.arange(lengths[i]), 4, threads=1)
    assert np.array_equal(crowd[:, start : start + lengths[i]], alone)


@pytest.mark.parametrize(("heads", "head_size"), [(12, 64), (2, 48), (4, 8)])
def test_the_optional_bias_is_added_as_the_graphs_add_would(heads, head_size):
    """With its third input, PackedAttention attends over qkv + bias: bit for bit the kernel
    run on the biased qkv (the Q, K and V values are the same floats), alone or among
    others (head sizes of whole vectors read V in place without a bias, copied with one)."""
    rng = np.random.default_rng(13)
    lengths = [70, 1, 33]
    qkv = packed_qkv(rng, lengths, heads * head_size)
    bias = rng.standard_normal(3 * heads * head_size).astype(np.float32)
    got = attend(qkv, positions_of(lengths), heads, bias=bias)
    assert np.array_equal(got, attend(qkv + bias, positions_of(lengths), heads))
    alone = attend(qkv[:, -33:], np.arange(33), heads, threads=1, bias=bias)
    assert np.array_equal(got[:, -33:], alone)


def test_no_tokens_gives_an_empty_context():
    out = attend(np.zeros((1, 0, 48), np.float32), np.zeros(0, np.int64), 2)
    assert out.shape == (1, 0, 16)


@pytest.mark.parametrize(
    ("heads", "qkv_shape", "n_positions", "message"),
    [
        (5, (1, 4, 48), 4, "hidden a multiple of num_heads \\(5\\), got a last axis of 48"),
        (2, (1, 4, 48), 3, "position_ids has 3 elements, expected one per token \\(4\\)"),
        (None, (1, 4, 48), 4, "num_heads must be >= 1, got 0"),
    ],
)
def test_bad_inputs_are_refused_with_the_bad_value(heads, qkv_shape, n_positions, message):
    with pytest.raises(Exception, match=message):
        attend(np.ones(qkv_shape, np.float32), np.arange(n_positions), heads)


def test_a_bias_of_the_wrong_size_is_refused():
    with pytest.raises(Exception, match="bias has 5 elements, expected 48 \\(3 x hidden\\)"):
        attend(np.ones((1, 4, 48), np.float32), np.arange(4), 2, bias=np.ones(5, np.float32))


def test_an_avx2_build_gives_the_same_numbers(tmp_path, monkeypatch):
    """The library built for AVX2 without AVX-512 (``-march=x86-64-v3``: 8-float vectors, 4
    query rows per block, what an AVX2-only host compiles), run on this host: attention
    against numpy and batch-invariant, the per-token quantization and GELU bit for bit."""
    from packing.model.quantize import MIN_SCALE, quantize_rows

    flags = set(cpu_kernels._cpu_flags().split())
    if not {"avx2", "fma", "bmi2", "movbe"} <= flags:
        pytest.skip("not an x86 host that runs x86-64-v3 code")
    monkeypatch.setattr(
        cpu_kernels,
        "CXX_FLAGS",
        tuple("-march=x86-64-v3" if f == "-march=native" else f for f in cpu_kernels.CXX_FLAGS),
    )
    monkeypatch.setenv(cpu_kernels.CACHE_ENV, str(tmp_path))
    cpu_kernels.library_path.cache_clear()
    try:
        avx2 = cpu_kernels.library_path()
    finally:
        cpu_kernels.library_path.cache_clear()
    rng = np.random.default_rng(12)
    for heads, d, lengths in [(12, 64, [168, 1, 93]), (2, 48, [40, 7]), (4, 8, [5, 17])]:
        qkv = packed_qkv(rng, lengths, heads * d)
        out = attend(qkv, positions_of(lengths), heads, library=avx2)
        np.testing.assert_allclose(out, reference(qkv, lengths, heads), atol=ATOL, rtol=1e-5)
        alone = attend(qkv[:, : lengths[0]], np.arange(lengths[0]), heads, 1, library=avx2)
        assert np.array_equal(out[:, : lengths[0]], alone)
    x = (rng.standard_normal((37, 96)) * 3).astype(np.float32)
    rq = kernel_node_session(
        "RowQuantize",
        [("x", FLOAT)],
        [("q", UINT8), ("s", FLOAT)],
        library=avx2,
        min_scale=MIN_SCALE,
    )
    q, scale = rq.run(None, {"x": x})
    ref_q, ref_s = quantize_rows(x)
    assert np.array_equal(q, ref_q) and np.array_equal(scale, ref_s)
    # GELU's arithmetic per element is the same whatever the vector width
    x[0, :81] = np.linspace(-10, 10, 81)
    b = rng.standard_normal(96).astype(np.float32)
    gelu = {
        lib: kernel_node_session(
            "BiasGelu", [("x", FLOAT), ("b", FLOAT)], [("y", FLOAT)], library=lib
        ).run(None, {"x": x, "b": b})[0]
        for lib in (avx2, None)
    }
    assert np.array_equal(gelu[avx2], gelu[None])
