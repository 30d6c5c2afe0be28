"""Precisions (issue 17): int8 arithmetic against numpy, per-token independence, the
MatMulIntegerToFloat fusion pitfall, packed == solo per precision, fp16 structure and its
refusal on a CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from packing.model.graphs import KINDS, _Builder, graph_weight_names, safetensors_offsets
from packing.model.manifest import Manifest
from packing.model.prepare import argmax_mismatches, check_graphs, prepare
from packing.model.quantize import (
    MIN_SCALE,
    PRECISIONS,
    TOLERANCES,
    WEIGHT_QMAX,
    ZERO_POINT,
    check_precision,
    int8_linear_reference,
    int8_weights,
    quantize_rows,
    quantize_weight,
    quantized_linears,
    row_scales,
)
from packing.model.weights import RANDOM_DIMS, random_weights, vocab_asset_path
from packing.runners import ModelRunner, PackRunner
from packing.runtime.backend import OnnxRuntimeBackend
from packing.runtime.features import Features

TINY = {"seq_len": 64, "batch_size": 4, "max_valid_num": 8}


# ---------------------------------------------------------------- quantizer arithmetic


def test_quantize_weight_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 5)).astype(np.float32) * np.array([1, 10, 0.01, 3, 0], np.float32)
    q, scale = quantize_weight(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (5,)
    assert np.allclose(scale[:4], np.abs(w[:, :4]).max(axis=0) / WEIGHT_QMAX)
    assert scale[4] == 1.0 and not q[:, 4].any()  # an all-zero column
    assert WEIGHT_QMAX == 63  # 7-bit weights: exact on non-VNNI x86 kernels too
    assert np.abs(q).max() == WEIGHT_QMAX and q.min() >= -WEIGHT_QMAX
    assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-7)  # round to nearest


def test_quantize_rows_is_per_token():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 16)).astype(np.float32)
    x[1, 2] *= 30.0
    x[2, 0] = 0.0
    q, s = quantize_rows(x)
    assert q.dtype == np.uint8 and s.shape == (3, 7, 1)
    assert np.allclose(s[..., 0], np.maximum(np.abs(x).max(-1) / 127, MIN_SCALE))
    assert np.all(q[2, 0] == ZERO_POINT)  # a zero row quantizes to the zero point
    assert q.min() >= 1 and q.max() <= 255
    assert np.all(np.abs((q.astype(np.float32) - ZERO_POINT) * s - x) <= s / 2 + 1e-6)
    # each row alone gives the same bytes as inside the batch
    q1, s1 = quantize_rows(x[0, 3])
    assert np.array_equal(q1, q[0, 3]) and np.array_equal(s1, s[0, 3])


def test_int8_weights_layout():
    dims = RANDOM_DIMS["tiny"]
    w = random_weights(dims, 0)
    q = int8_weights(w, dims.num_hidden_layers)
    assert sorted(q) == sorted(graph_weight_names(dims, "int8"))
    p = "bert.encoder.layer.1."
    fused = np.concatenate(
        [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]
    ).T
    assert q[p + "attention.self.qkv.qweight"].shape == fused.shape == (32, 96)
    assert np.allclose(
        q[p + "attention.self.qkv.qweight"] * q[p + "attention.self.qkv.wscale"],
        fused,
        atol=float(q[p + "attention.self.qkv.wscale"].max()) / 2 + 1e-7,
    )
    assert q[p + "intermediate.dense.qweight"].dtype == np.int8
    assert q["qa_outputs.weight"].dtype == np.float32  # the QA head stays float32
    assert len(quantized_linears(dims.num_hidden_layers)) == 4 * dims.num_hidden_layers


def test_check_precision_names_the_bad_value():
    assert [check_precision(p) for p in PRECISIONS] == list(PRECISIONS)
    with pytest.raises(ValueError, match="'int4'"):
        check_precision("int4")


# ------------------------------------------------- the int8 Linear graph against numpy


def _linear_model(k: int, n: int, token_major: bool, seed: int = 0, kernels=frozenset()):
    """A graph of one :meth:`_Builder.int8_linear` with random weights, and those weights
    (``kernels``: the builder's contrib kernels; ``int8_to_float`` writes MatMulIntegerToFloat)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    qw, ws = quantize_weight(w)
    bias = rng.standard_normal(n).astype(np.float32)
    b = _Builder("int8", token_major=token_major, kernels=kernels)
    out = b.int8_linear("x", "lin")
    b.nodes.append(helper.make_node("Identity", [out], ["y"]))
    shape = [1, "t", k] if token_major else ["b", "s", k]
    inits = [
        onnx.numpy_helper.from_array(a, name)
        for a, name in ((qw, "lin.qweight"), (ws, "lin.wscale"), (bias, "lin.bias"))
    ]
    graph = helper.make_graph(
        b.nodes,
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape[:-1] + [n])],
        initializer=inits + b.consts,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, (qw, ws, bias)


KERNEL_SETS = [frozenset(), frozenset({"int8_to_float"})]
"""The int8 Linear as plain ONNX (MatMulInteger, Cast, Mul) and as MatMulIntegerToFloat."""


def _session(model, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kernels", KERNEL_SETS, ids=lambda k: "+".join(sorted(k)) or "plain")
def test_int8_linear_graph_matches_numpy(kernels):
    """Under ORT's full optimisation (fusions included) the graph computes exactly the
    per-token arithmetic of int8_linear_reference, token-major [1, T, K] or row [B, S, K],
    with the plain operators and with MatMulIntegerToFloat."""
    for token_major in (True, False):
        _check_linear_against_numpy(token_major, kernels)


def _check_linear_against_numpy(token_major: bool, kernels) -> None:
    model, (qw, ws, bias) = _linear_model(64, 40, token_major, kernels=kernels)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 37, 64) if token_major else (3, 11, 64)).astype(np.float32)
    x[0, 5] *= 30.0
    got = _session(model).run(None, {"x": x})[0]
    want = int8_linear_reference(x, qw, ws, bias)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and it is an int8 product: far from the float32 one at this weight precision
    assert np.abs(got - (x @ (qw * ws) + bias)).max() > 1e-4


def test_int8_product_is_exact_at_the_saturating_worst_case():
    """The int16 pitfall: ORT's u8 x s8 kernel without VNNI adds pairs of u8 x s8 products in
    a saturating int16. Activations at the ends of their range (u8 255 and 1) against weights
    at +-WEIGHT_QMAX, on the CPU this suite runs on, give exactly numpy's int64 product; with
    8-bit weights (+-127) an AVX2-only host returns wrong numbers here."""
    k, n = 64, 8
    w = np.full((k, n), 0.5, np.float32)
    w[:, 1::2] *= -1  # columns of +63 and of -63 after quantizing
    w[0] = 0.25  # keeps every column's absmax at 0.5
    qw, ws = quantize_weight(w)
    assert np.abs(qw).max() == WEIGHT_QMAX
    b = _Builder("int8", token_major=True)
    out = b.int8_linear("x", "lin")
    b.nodes.append(helper.make_node("Identity", [out], ["y"]))
    inits = [
        onnx.numpy_helper.from_array(a, name)
        for a, name in (
            (qw, "lin.qweight"),
            (ws, "lin.wscale"),
            (np.zeros(n, np.float32), "lin.bias"),
        )
    ]
    graph = helper.make_graph(
        b.nodes,
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "t", n])],
        initializer=inits + b.consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.ones((1, 3, k), np.float32)  # u8 255 everywhere
    x[0, 1] = -1.0  # u8 1 everywhere
    x[0, 2, ::2] = -1.0  # alternating 1 / 255
    got = _session(model).run(None, {"x": x})[0]
    want = int8_linear_reference(x, qw, ws)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    assert np.abs(want).max() > 1.0  # not a trivial zero product


@pytest.mark.parametrize("kernels", KERNEL_SETS, ids=lambda k: "+".join(sorted(k)) or "plain")
def test_int8_linear_is_per_token_under_a_loud_neighbour(kernels):
    """A row's output is bit-identical whatever rows sit beside it: 30x louder, or none."""
    model, _ = _linear_model(64, 40, True, kernels=kernels)
    sess = _session(model)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 9, 64)).astype(np.float32)
    quiet = sess.run(None, {"x": x})[0]
    loud = x.copy()
    loud[0, 1:] *= 30.0
    beside = sess.run(None, {"x": loud})[0]
    alone = sess.run(None, {"x": x[:, :1]})[0]
    assert np.array_equal(beside[0, 0], quiet[0, 0]) and np.array_equal(alone[0, 0], quiet[0, 0])


def test_one_fused_row_by_column_scale_is_not_written():
    """The fusion pitfall: the graph multiplies by the per-column weight scale and by the
    per-row scale in two Mul nodes, never by one [T, N] product (which ORT 1.32 fuses into
    MatMulIntegerToFloat, unsupported there and wrong)."""
    model, _ = _linear_model(64, 40, True)
    by_out = {o: n for n in model.graph.node for o in n.output}
    (mmi,) = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    cast = next(n for n in model.graph.node if mmi.output[0] in n.input)
    assert cast.op_type == "Cast"
    mul_w = next(n for n in model.graph.node if cast.output[0] in n.input)
    assert mul_w.op_type == "Mul" and "lin.wscale" in mul_w.input
    mul_row = next(n for n in model.graph.node if mul_w.output[0] in n.input)
    assert mul_row.op_type == "Mul"
    other = [i for i in mul_row.input if i != mul_w.output[0]][0]
    assert by_out[other].op_type == "Max"  # the [T, 1] row scale itself, not a product with wscale
    # the optimised graph still matches numpy at every level
    x = np.random.default_rng(4).standard_normal((1, 21, 64)).astype(np.float32)
    basic = _session(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"x": x})[0]
    full = _session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(full, basic, rtol=1e-6, atol=1e-6)


def test_matmul_integer_to_float_takes_scalar_and_column_scales_only():
    """The int8_to_float kernel writes MatMulIntegerToFloat with the two scales it supports:
    activation scale the scalar 1, weight scale per column; the per-row scale and the bias
    stay the nodes after it, and the whole matches the plain graph bit for bit."""
    model, _ = _linear_model(64, 40, True, kernels=frozenset({"int8_to_float"}))
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    (fused,) = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert fused.domain == "com.microsoft"
    a_scale, b_scale = fused.input[2], fused.input[3]
    assert consts[a_scale].shape == () and float(consts[a_scale]) == 1.0
    assert b_scale == "lin.wscale"
    assert not [n for n in model.graph.node if n.op_type in ("MatMulInteger", "Cast")]
    mul_row = next(n for n in model.graph.node if fused.output[0] in n.input)
    assert mul_row.op_type == "Mul"
    plain, _ = _linear_model(64, 40, True)
    x = np.random.default_rng(5).standard_normal((1, 33, 64)).astype(np.float32)
    x[0, 3] *= 40.0
    got = _session(model).run(None, {"x": x})[0]
    want = _session(plain).run(None, {"x": x})[0]
    assert np.array_equal(got, want)


# ---------------------------------------------------------------- prepared folders


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model"
    prepare("random:tiny", out, quiet=True, precision="int8", **TINY)
    return out


@pytest.fixture(scope="module")
def fp16_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "model"
    prepare("random:tiny", out, quiet=True, precision="fp16", **TINY)
    return out


def test_int8_folder(int8_dir, tiny_model_dir):
    m = Manifest.read(int8_dir)
    assert m.precision == "int8" and Manifest.read(tiny_model_dir).precision == "fp32"
    assert not (int8_dir / "model.safetensors").exists()
    table = safetensors_offsets(int8_dir / "model.int8.safetensors")
    assert table["bert.encoder.layer.0.intermediate.dense.qweight"][0] == "I8"
    assert table["bert.embeddings.word_embeddings.weight"][0] == "F32"
    assert all(v <= TOLERANCES["int8"] for v in m.max_abs_diff.values())
    m.verify_files(int8_dir)
    for kind in KINDS:
        model = onnx.load(str(int8_dir / m.graphs[kind]), load_external_data=False)
        ops = [n.op_type for n in model.graph.node]
        # the default kernels write the integer product as MatMulIntegerToFloat
        products = ops.count("MatMulInteger") + ops.count("MatMulIntegerToFloat")
        assert products == 4 * m.dims.num_hidden_layers
        assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"


def _seqs(n, seq_len=64, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Features(rng.integers(1000, 30000, size=int(k)), rng.integers(0, 2, size=int(k)))
        for k in rng.integers(2, seq_len + 1, size=n)
    ]


def test_int8_packed_equals_solo(int8_dir, tiny_model_dir):
    data = _seqs(24)
    solo = ModelRunner(int8_dir, batch_size=1, padding="longest").run(data)
    for mode in ("attention_mask", "unpack_repack"):
        packed = PackRunner(int8_dir, mode=mode, max_tokens=None).run(data)
        diff = max(
            float(np.abs(a.start_logits - b.start_logits).max()) for a, b in zip(solo, packed)
        )
        assert diff <= TOLERANCES["int8"], (mode, diff)
    # int8 is not fp32 under another name: the logits move, a little
    fp32 = ModelRunner(tiny_model_dir, batch_size=1, padding="longest").run(data)
    moved = max(float(np.abs(a.start_logits - b.start_logits).max()) for a, b in zip(solo, fp32))
    assert 1e-6 < moved < 0.05


def _loud_source(folder, dims, loud_id: int, gain: float):
    """A transformers folder of random:tiny whose token ``loud_id`` leaves the embeddings
    ``gain`` times louder than any other token (channel 0), for the adversarial test."""
    from safetensors.numpy import save_file

    w = random_weights(dims, 5)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        t = w[f"bert.embeddings.{name}.weight"]
        t[:, 0] = 0.0  # channel 0 silent and each row zero-mean: LayerNorm leaves it at 0
        t[:, 1:] -= t[:, 1:].mean(axis=1, keepdims=True)
    w["bert.embeddings.word_embeddings.weight"][loud_id] = 0.0
    w["bert.embeddings.word_embeddings.weight"][loud_id, 0] = 1000.0
    w["bert.embeddings.LayerNorm.weight"][0] = gain
    folder.mkdir()
    save_file(w, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(dims.hf_config()))
    shutil.copy(vocab_asset_path(), folder / "vocab.txt")
    return w


def test_loud_neighbour_leaves_a_request_unchanged(tmp_path):
    """Adversarial: a request packed beside a neighbour whose activations are >= 30x larger
    gets the logits it gets alone (int8, both packed modes)."""
    dims, loud_id = RANDOM_DIMS["tiny"], 4242
    w = _loud_source(tmp_path / "src", dims, loud_id, gain=30.0)
    out = tmp_path / "model"
    prepare(str(tmp_path / "src"), out, quiet=True, precision="int8", **TINY)
    request = _seqs(1, seed=7)[0]
    neighbour = Features(np.full(40, loud_id), np.zeros(40, np.int64))

    # the neighbour really is >= 30x louder where layer 0's Q/K/V quantizes its input
    def embedded(f):
        e = "bert.embeddings."
        x = (
            w[e + "word_embeddings.weight"][f.input_ids]
            + w[e + "position_embeddings.weight"][: len(f)]
            + w[e + "token_type_embeddings.weight"][f.token_type_ids]
        )
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(
            x.var(-1, keepdims=True) + dims.layer_norm_eps
        )
        return x * w[e + "LayerNorm.weight"] + w[e + "LayerNorm.bias"]

    ratio = row_scales(embedded(neighbour)).min() / row_scales(embedded(request)).max()
    assert ratio >= 30.0, ratio

    alone = ModelRunner(out, batch_size=1, padding="longest").run([request])[0]
    for mode in ("attention_mask", "unpack_repack"):
        got = PackRunner(out, mode=mode, max_tokens=None).run([neighbour, request, neighbour])[1]
        assert np.abs(got.start_logits - alone.start_logits).max() <= TOLERANCES["int8"] / 10
        assert np.abs(got.end_logits - alone.end_logits).max() <= TOLERANCES["int8"] / 10

    # the same batch under one scale per tensor (quantize_dynamic's way) would not be: the
    # request's first Q/K/V input rows, quantized with the batch's scale, lose their precision
    x_req, x_nb = embedded(request), embedded(neighbour)
    shared = max(np.abs(x_req).max(), np.abs(x_nb).max()) / 127
    err_shared = np.abs(np.rint(x_req / shared) * shared - x_req).max()
    err_token = np.abs(
        (quantize_rows(x_req)[0].astype(np.float32) - ZERO_POINT) * row_scales(x_req) - x_req
    ).max()
    assert err_shared > 10 * err_token


def test_argmax_mismatches_counts_starts_and_ends():
    from packing.runtime.features import SpanLogits

    a = [SpanLogits(np.array([0.0, 1.0]), np.array([1.0, 0.0]))]
    b = [SpanLogits(np.array([2.0, 1.0]), np.array([1.0, 0.0]))]
    assert argmax_mismatches(a, a) == 0 and argmax_mismatches(a, b) == 1


# ---------------------------------------------------------------- fp16


def test_fp16_graph_structure(fp16_dir):
    m = Manifest.read(fp16_dir)
    assert m.precision == "fp16"
    table = safetensors_offsets(fp16_dir / "model.safetensors")
    assert {v[0] for v in table.values()} == {"F16"}
    for kind in KINDS:
        model = onnx.load(str(fp16_dir / m.graphs[kind]), load_external_data=False)
        floats = {
            t.data_type
            for t in model.graph.initializer
            if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
        }
        assert floats == {TensorProto.FLOAT16}, kind  # no float32 weight or constant left
        assert all(i.type.tensor_type.elem_type == TensorProto.INT64 for i in model.graph.input)
        assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in model.graph.output)
        assert "Cast" in {n.op_type for n in model.graph.node}  # keep_io_types: logits cast back


def test_fp16_refused_on_cpu(fp16_dir):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA available: fp16 runs there")
    with pytest.raises(RuntimeError, match=r"fp16 graph .*CPUExecutionProvider.*--precision int8"):
        OnnxRuntimeBackend(fp16_dir / "original.onnx", device="cpu")
    with pytest.raises(RuntimeError, match="fp16"):
        ModelRunner(fp16_dir)


def test_fp16_numbers_through_the_cpu_casts(fp16_dir):
    """allow_cpu_half runs the fp16 graph on the CPU provider (slow; prepare's check on a
    host without CUDA): packed == solo within the fp16 tolerance."""
    diffs = check_graphs(fp16_dir, device="cpu", allow_cpu_half=True)
    assert all(v <= TOLERANCES["fp16"] for v in diffs.values()), diffs


@pytest.mark.gpu
def test_fp16_on_cuda_packed_equals_solo_and_near_fp32(fp16_dir, tiny_model_dir):
    # no skip: tests/conftest.py fails a gpu test where ONNX Runtime cannot run on CUDA
    data = _seqs(24, seed=3)
    solo = ModelRunner(fp16_dir, batch_size=1, padding="longest", device="cuda").run(data)
    assert "CUDA" in ModelRunner(fp16_dir, device="cuda").backend.describe()
    for mode in ("attention_mask", "unpack_repack"):
        packed = PackRunner(fp16_dir, mode=mode, max_tokens=None, device="cuda").run(data)
        diff = max(
            float(np.abs(a.start_logits - b.start_logits).max()) for a, b in zip(solo, packed)
        )
        assert diff <= TOLERANCES["fp16"], (mode, diff)
    fp32 = ModelRunner(tiny_model_dir, batch_size=1, padding="longest", device="cpu").run(data)
    assert (
        max(float(np.abs(a.start_logits - b.start_logits).max()) for a, b in zip(solo, fp32)) < 0.05
    )


# ---------------------------------------------------------------- bert-base (slow)


@pytest.mark.slow
def test_bert_base_int8_packed_equals_solo(tmp_path):
    out = tmp_path / "base-int8"
    m = prepare("random:base", out, quiet=True, precision="int8", seq_len=256)
    assert all(v <= TOLERANCES["int8"] for v in m.max_abs_diff.values()), m.max_abs_diff
    data = _seqs(32, seq_len=256, seed=11)
    solo = ModelRunner(out, batch_size=1, padding="longest").run(data)
    packed = PackRunner(out, mode="unpack_repack", max_tokens=None).run(data)
    diff = max(float(np.abs(a.start_logits - b.start_logits).max()) for a, b in zip(solo, packed))
    assert diff <= TOLERANCES["int8"], diff


# ---------------------------------------------------------------- serving config, calibration


def test_calibration_is_keyed_by_precision(int8_dir, tiny_model_dir):
    from packing.runtime.calibrate import fingerprint

    k8, f8 = fingerprint(int8_dir, "onnxruntime", {"device": "cpu", "intra_op_threads": 1})
    k32, f32 = fingerprint(tiny_model_dir, "onnxruntime", {"device": "cpu", "intra_op_threads": 1})
    assert (f8["precision"], f32["precision"]) == ("int8", "fp32") and k8 != k32


def test_app_config_precision(monkeypatch):
    from pydantic import ValidationError

    from deployments.config import AppConfig

    assert AppConfig().precision() == "fp32"  # the default folder stays fp32 unless asked
    auto = {"precision": "auto"}
    assert AppConfig(device="cpu", prepare=auto).precision() == "int8"
    assert AppConfig(device="cuda", prepare=auto).precision() == "fp16"
    assert AppConfig(device="sim", prepare=auto).precision() == "fp32"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert AppConfig(device="auto", prepare=auto).precision() == "int8"
    assert AppConfig(device="cpu", prepare={"precision": "fp16"}).precision() == "fp16"
    with pytest.raises(ValidationError, match="int4"):
        AppConfig(prepare={"precision": "int4"})


def test_squad_config_picks_precision_per_device():
    import yaml

    from deployments.config import AppConfig

    from factories import REPO

    args = yaml.safe_load((REPO / "configs" / "squad.yaml").read_text())["applications"][0]["args"]
    assert args["prepare"]["precision"] == "auto"
    assert AppConfig(**{**args, "device": "cpu"}).precision() == "int8"


# ---------------------------------------------------------------- bench in two precisions


def test_bench_runs_fp32_and_int8_in_one_run(tiny_model_dir, int8_dir, tmp_path, capsys):
    from packing.cli import main

    js = tmp_path / "b.json"
    modes = [
        "original",
        "offline_unpack_repack",
        "online_unpack_repack",
        "no_batching",
        "hf_pipeline",
    ]
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                str(int8_dir),
                "--precision",
                "fp32",
                "int8",
                "--samples",
                "16",
                "--no-progress",
                "--concurrency",
                "8",
                "--max-tokens",
                "full",
                "--modes",
                *modes,
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "dense MatMulInteger u8 x s8 limit" in out and "dense MatMul limit" in out
    assert "best packed int8 / best packed fp32: " in out
    report = json.loads(js.read_text())
    fp32, int8 = report["runs"]
    assert (fp32["precision"], int8["precision"]) == ("fp32", "int8")
    assert int8["limit"]["precision"] == "int8" and int8["limit"]["best_gflops"] > 0
    for run in (fp32, int8):
        assert [m["key"] for m in run["modes"]] == modes
        for m in run["modes"]:
            if m["key"] == "hf_pipeline" and run["precision"] == "int8":
                assert "float32" in m["skipped"]
                continue
            if m["skipped"] and "torch" in m["skipped"]:
                continue
            assert m["max_abs_diff"] <= TOLERANCES[run["precision"]] == m["tolerance"], m
    assert report["precisions"]["runs"][1]["best_packed_vs_first"] > 0


def test_bench_precision_flag_is_checked(tiny_model_dir, int8_dir, capsys):
    from packing.cli import main

    assert (
        main(["bench", "--model-dir", str(int8_dir), "--precision", "fp32", "--samples", "4"]) == 2
    )
    err = capsys.readouterr().err
    assert "is prepared in int8, not fp32" in err and "--precision fp32" in err
