"""``packed-bert bench --profile``: operator times put under what each operator does."""

from __future__ import annotations

import json

import pytest

from packing.bench.profile import (
    CATEGORIES,
    LayoutProfile,
    category,
    format_profile,
    profile_layout,
    read_trace,
    summarize,
)
from packing.cli import main
from packing.runtime.synthetic import seed_lengths, synthetic_features


@pytest.mark.parametrize(
    ("op", "node", "shapes", "want"),
    [
        ("MatMulInteger", "dense/MatMulInteger_7", [], "dense MatMul"),
        ("MatMulIntegerToFloat", "dense/MatMulIntegerToFloat_7", [], "dense MatMul"),
        ("MatMul", "dense/MatMul_3", [(1, 9, 64)], "dense MatMul"),  # weight pre-packed
        ("MatMul", "x", [(1, 9, 64), (64, 32)], "dense MatMul"),  # 2-D weight, no role
        ("FusedMatMul", "attn_scores/MatMul_5/MatMulScaleFusion/", [(2, 4, 8, 16)] * 2, None),
        ("MatMul", "attn_context/MatMul_9", [(2, 4, 8, 8), (2, 4, 8, 16)], "attention context"),
        ("MatMul", "Transposed_MatMul", [(2, 4, 8, 16), (2, 4, 16, 8)], "attention scores"),
        ("Gemm", "dense/MatMul_1/MatMulAddFusion", [(9, 64), (2,)], "dense MatMul"),
        ("QuantizeLinear", "quant/QuantizeLinear_4", [], "quantize"),
        ("Abs", "quant/Abs_1", [], "quantize"),
        ("Cast", "dequant/Cast_8", [], "dequantize"),
        ("Mul", "dequant/Mul_9", [], "dequantize"),
        ("SkipLayerNormalization", "SkipLayerNormalization_token_5", [], "LayerNorm"),
        ("BiasGelu", "BiasGelu", [], "GELU"),
        ("MultiHeadAttention", "attn_fused/MultiHeadAttention_3", [], "attention (fused)"),
        ("Softmax", "attn_softmax/Softmax_3", [], "attention softmax"),
        ("Gather", "repack/Gather_12", [], "unpack/repack"),
        ("Gather", "embed/Gather_1", [], "embeddings"),
        ("Transpose", "Transpose_token_4", [], "attention layout"),
        ("Where", "mask/Where_3", [], "mask"),
        ("Identity", "Identity_0", [], "other"),
    ],
)
def test_category(op, node, shapes, want):
    assert category(op, node, shapes) == (want or "attention scores")


def _trace(tmp_path, runs):
    """A trace in ONNX Runtime's format: model runs, each with its operator runs."""
    events, ts = [], 0
    for ops in runs:
        begin = ts
        for name, op, dur in ops:
            events.append(
                {
                    "cat": "Node",
                    "name": f"{name}_kernel_time",
                    "ts": ts,
                    "dur": dur,
                    "args": {"op_name": op, "input_type_shape": [{"float": [1, 4, 8]}]},
                }
            )
            events.append({"cat": "Node", "name": f"{name}_fence_before", "ts": ts, "dur": 0})
            ts += dur
        events.append({"cat": "Session", "name": "model_run", "ts": begin, "dur": ts - begin + 5})
        ts += 100
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events))
    return path


def test_read_trace_skips_the_warm_up_run(tmp_path):
    warm = [("dense/MatMulInteger_1", "MatMulInteger", 9000)]
    run = [("dense/MatMulInteger_1", "MatMulInteger", 300), ("quant/Abs_2", "Abs", 100)]
    ops, run_us = read_trace(_trace(tmp_path, [warm, run, run]), skip_runs=1)
    assert run_us == [405, 405]
    assert [o.dur_us for o in ops] == [300, 100, 300, 100]
    assert ops[0].input_shapes == ((1, 4, 8),)
    p = summarize("unpack_repack", "int8", ops, run_us, tokens=[10, 30], slots=[10, 30])
    assert p.ms["dense MatMul"] == pytest.approx(0.3) and p.ms["quantize"] == pytest.approx(0.1)
    assert p.ops_ms == pytest.approx(0.4) and p.run_ms == pytest.approx(0.405)
    assert p.share("dense MatMul") == pytest.approx(0.75) and p.tokens == 20
    table = format_profile([p])
    assert "| dense MatMul | 0.3 ms (75%) |" in table and "| LayerNorm |" not in table


def test_profile_layout_of_a_folder(tiny_model_dir):
    data = synthetic_features(seed_lengths(24, 64, 1), 30522)
    for kind in ("original", "unpack_repack"):
        p = profile_layout(tiny_model_dir, kind, data, batches=2, threads=1, max_tokens=None)
        assert isinstance(p, LayoutProfile) and p.batches == 2
        assert set(p.ms) == set(CATEGORIES)
        assert p.ms["dense MatMul"] > 0 and p.ms["LayerNorm"] > 0
        assert 0 < p.ops_ms <= p.run_ms * 1.05
        assert p.ms["other"] < 0.2 * p.ops_ms  # nearly every operator has its kind
    assert p.slots == p.tokens  # unpack/repack computes real tokens only
    with pytest.raises(ValueError, match="batches must be >= 1"):
        profile_layout(tiny_model_dir, "original", data, batches=0)


def test_bench_profile_command(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "profile.json"
    argv = ["bench", "--profile", "--profile-batches", "1", "--model-dir", str(tiny_model_dir)]
    argv += ["--samples", "16", "--threads", "1", "--max-tokens", "full", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| kind of operator | original fp32 | attention_mask fp32 | unpack_repack fp32 |" in text
    assert "avx2=" in text  # the host's CPU features next to the figures
    assert [p["layout"] for p in json.loads(out.read_text())] == [
        "original",
        "attention_mask",
        "unpack_repack",
    ]
    assert main([*argv, "--modes", "original"]) == 2  # --profile runs no modes
