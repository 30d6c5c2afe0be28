"""The kernels in the graphs (graphs.KERNELS): each gives the numbers of the plain graph
(ONNX Runtime's contrib kernels exactly, this package's within their rounding), the folder
records which it uses, and unpack/repack stays batch-invariant bit for bit with them."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from packing.model.graphs import (
    DEFAULT_KERNELS,
    HOST_BUILT_KERNELS,
    KERNELS,
    KINDS,
    WEIGHTS_FILES,
    build_graph,
)
from packing.model.manifest import Manifest
from packing.model.prepare import prepare
from packing.model.quantize import LAYOUT_TOLERANCES, TOLERANCES
from packing.runners import ModelRunner, PackRunner
from packing.runtime.backend import OnnxRuntimeBackend
from packing.runtime.executor import PlanExecutor
from packing.runtime.synthetic import synthetic_features

TINY_SHAPE = {"seq_len": 64, "batch_size": 4, "max_valid_num": 8}  # conftest.TINY_SHAPE

CONTRIB = frozenset({"mha", "int8_to_float"})  # ONNX Runtime's kernels (same numbers)
VARIANTS = [frozenset(), frozenset({"mha"}), frozenset({"int8_to_float"}), CONTRIB]
OURS = {  # this package's CPU kernels (same within the last bits)
    "fp32": [
        frozenset({"packed_attention"}),
        frozenset({"fused_fp32"}),
        frozenset({"mha", "packed_attention", "fused_fp32"}),
    ],
    "int8": [
        frozenset({"fused_int8"}),
        frozenset({"packed_attention"}),
        frozenset(KERNELS) - {"fused_fp32"},
    ],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """random:tiny prepared in fp32 and int8 with the default kernels."""
    out = {}
    for precision in ("fp32", "int8"):
        path = tmp_path_factory.mktemp(precision) / "model"
        prepare("random:tiny", path, quiet=True, precision=precision, **TINY_SHAPE)
        out[precision] = path
    return out


def _plans(kind: str, m: Manifest, lengths: np.ndarray):
    from packing.bench.profile import fullest_plans

    return fullest_plans(kind, m, lengths, 3, None)


def _outputs(folder, graph_file: str, kind: str, data):
    m = Manifest.read(folder)
    backend = OnnxRuntimeBackend(folder / graph_file, device="cpu", intra_op_threads=1)
    executor = PlanExecutor(backend, m, folder)
    lengths = np.array([len(f) for f in data])
    outs = []
    for plan in _plans(kind, m, lengths):
        inputs, _ = executor.inputs(plan, [data[k] for k in plan.seq_ids])
        outs.append(backend.run(inputs))
    return outs


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_kernel_gives_the_plain_graphs_numbers(folders, precision, kind, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(folders[precision], folder)
    m = Manifest.read(folder)
    rng = np.random.default_rng(7)
    data = synthetic_features(rng.integers(2, m.seq_len + 1, size=20), m.dims.vocab_size, seed=7)
    outs = {}
    for v in VARIANTS + OURS[precision]:
        if "int8_to_float" in v and precision != "int8":
            continue
        name = f"{kind}.{'+'.join(sorted(v)) or 'plain'}.onnx"
        model = build_graph(kind, m.dims, folder / WEIGHTS_FILES[precision], precision, m.task, v)
        ops = {n.op_type for n in model.graph.node}
        packed_attention = "packed_attention" in v and kind == "unpack_repack"
        assert ("PackedAttention" in ops) == packed_attention
        assert ("MultiHeadAttention" in ops) == ("mha" in v and not packed_attention)
        assert ("MatMulIntegerToFloat" in ops) == ("int8_to_float" in v)
        assert ("RowQuantize" in ops) == ("fused_int8" in v)
        assert ("BiasGelu" in ops) == ("BiasResidualLayerNorm" in ops) == ("fused_fp32" in v)
        attention = [n for n in model.graph.node if n.op_type == "PackedAttention"]
        # with fused_fp32, PackedAttention adds the Q/K/V bias itself (a third input)
        assert all(len(n.input) == 2 + ("fused_fp32" in v) for n in attention)
        onnx.save(model, str(folder / name))
        outs[v] = _outputs(folder, name, kind, data)
    plain = outs.pop(frozenset())
    for v, got in outs.items():
        for a, b in zip(plain, got):
            for key in a:
                diff = float(np.abs(a[key] - b[key]).max())
                # measured 0.0 for the contrib kernels (the same MLAS products and softmax);
                # fused_int8's and fused_fp32's GELU and LayerNorm and packed_attention's
                # sums and exp round
                # differently in the last bits, which in int8 moves some activations by one
                # int8 step
                assert diff <= (1e-5 if precision == "fp32" else TOLERANCES["int8"]), (v, diff)
                if not v & HOST_BUILT_KERNELS:
                    assert diff == 0.0, (v, key, diff)


def test_folders_record_their_kernels(folders, tmp_path):
    for precision, folder in folders.items():
        m = Manifest.read(folder)
        assert m.kernels == tuple(sorted(DEFAULT_KERNELS[precision]))
        graph = onnx.load(str(folder / m.graphs["unpack_repack"]), load_external_data=False)
        props = {p.key: p.value for p in graph.metadata_props}
        assert props["kernels"] == ",".join(sorted(DEFAULT_KERNELS[precision]))
    plain = tmp_path / "plain"
    prepare("random:tiny", plain, quiet=True, precision="int8", kernels=(), **TINY_SHAPE)
    m = Manifest.read(plain)
    assert m.kernels == ()
    for kind in KINDS:
        graph = onnx.load(str(plain / m.graphs[kind]), load_external_data=False)
        assert not [n for n in graph.graph.node if n.domain == "com.microsoft"], kind


def test_unknown_kernel_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown kernels \\['flash'\\]"):
        prepare("random:tiny", tmp_path / "x", quiet=True, kernels={"flash"}, **TINY_SHAPE)


def test_fused_int8_is_refused_for_float_graphs(tmp_path):
    with pytest.raises(ValueError, match="fused_int8 is for int8 graphs; the precision is 'fp32'"):
        prepare("random:tiny", tmp_path / "x", quiet=True, kernels={"fused_int8"}, **TINY_SHAPE)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_fused_fp32_is_refused_for_other_precisions(tmp_path, precision):
    with pytest.raises(
        ValueError, match=f"fused_fp32 is for fp32 graphs; the precision is '{precision}'"
    ):
        prepare(
            "random:tiny",
            tmp_path / "x",
            quiet=True,
            precision=precision,
            kernels={"fused_fp32"},
            **TINY_SHAPE,
        )


def test_packed_attention_is_refused_for_fp16(tmp_path):
    with pytest.raises(ValueError, match="packed_attention is float32 on the CPU"):
        prepare(
            "random:tiny",
            tmp_path / "x",
            quiet=True,
            precision="fp16",
            kernels={"packed_attention"},
            **TINY_SHAPE,
        )


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_unpack_repack_is_bit_for_bit_batch_invariant(folders, precision):
    """With the default kernels, each request's logits packed among others equal, bit for
    bit, its logits run alone through the same graph."""
    folder = folders[precision]
    rng = np.random.default_rng(11)
    m = Manifest.read(folder)
    data = synthetic_features(rng.integers(2, m.seq_len + 1, size=24), m.dims.vocab_size, seed=3)
    packed = PackRunner(folder, mode="unpack_repack", max_tokens=None).run(data)
    solo_runner = PackRunner(folder, mode="unpack_repack", max_tokens=m.seq_len)
    for f, p in zip(data, packed):
        (alone,) = solo_runner.run([f])
        assert np.array_equal(alone.start_logits, p.start_logits)
        assert np.array_equal(alone.end_logits, p.end_logits)
    # and the padded original graph agrees within the layout tolerance
    orig = ModelRunner(folder, batch_size=1, padding="longest").run(data[:4])
    diff = max(float(np.abs(a.start_logits - b.start_logits).max()) for a, b in zip(orig, packed))
    assert diff <= LAYOUT_TOLERANCES[precision]


def test_prepare_kernels_flag():
    from packing.cli.prepare import _kernels

    assert _kernels("auto") is None
    assert _kernels("none") == frozenset()
    assert _kernels("int8_to_float, mha") == CONTRIB
    assert _kernels("int8_to_float,mha,fused_int8,packed_attention,fused_fp32") == frozenset(
        KERNELS
    )
    with pytest.raises(ValueError, match="unknown kernels \\['fast'\\]"):
        _kernels("mha,fast")
