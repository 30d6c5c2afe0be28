"""The hand-built ONNX graphs compute exactly what transformers' BERT computes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packing.model.graphs import build_graph, safetensors_offsets
from packing.model.manifest import Manifest
from packing.model.prepare import prepare
from packing.model.weights import RANDOM_DIMS, BertDims, normalise_names, random_weights


def test_external_data_points_into_safetensors(tiny_model_dir):
    table = safetensors_offsets(tiny_model_dir / "model.safetensors")
    model = build_graph(
        "original", Manifest.read(tiny_model_dir).dims, tiny_model_dir / "model.safetensors"
    )
    ext = [t for t in model.graph.initializer if t.external_data]
    assert ext, "weights must stay in model.safetensors"
    for t in ext:
        meta = {e.key: e.value for e in t.external_data}
        assert meta["location"] == "model.safetensors"
        assert int(meta["offset"]) == table[t.name][2]


def test_unknown_kind_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown graph kind"):
        build_graph("nope", RANDOM_DIMS["tiny"], tiny_model_dir / "model.safetensors")


def test_dims_validation():
    with pytest.raises(ValueError, match="multiple"):
        BertDims(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="gelu"):
        BertDims.from_hf_config({"hidden_act": "relu"})


def test_legacy_layer_norm_names():
    out = normalise_names({"bert.embeddings.LayerNorm.gamma": 1, "x.LayerNorm.beta": 2})
    assert out == {"bert.embeddings.LayerNorm.weight": 1, "x.LayerNorm.bias": 2}


def test_random_weights_are_deterministic():
    a, b = random_weights(RANDOM_DIMS["tiny"], 3), random_weights(RANDOM_DIMS["tiny"], 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_original_graph_matches_transformers(tmp_path):
    """A transformers checkpoint prepared from its folder gives transformers' logits."""
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertForQuestionAnswering

    from packing.runtime.backend import OnnxRuntimeBackend

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        vocab_size=30522,
    )
    hf = BertForQuestionAnswering(config).eval()
    with torch.no_grad():  # make every bias and norm non-trivial
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    src = tmp_path / "hf"
    hf.save_pretrained(src)
    from packing.model.weights import save_tokenizer

    save_tokenizer(src, None)
    out = tmp_path / "prepared"
    prepare(str(src), out, seq_len=32, batch_size=2, max_valid_num=4, quiet=True)
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 48

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, size=(3, 32))
    mask = np.ones_like(ids)
    mask[1, 20:] = 0
    mask[2, 5:] = 0
    types = (np.arange(32) >= 10).astype(np.int64)[None].repeat(3, 0)
    pos = np.arange(32)[None].repeat(3, 0)
    got = OnnxRuntimeBackend(out / "original.onnx").run(
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "position_ids": pos}
    )
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
        )
    real = mask > 0
    assert np.abs(got["start_logits"] - ref.start_logits.numpy())[real].max() < 1e-4
    assert np.abs(got["end_logits"] - ref.end_logits.numpy())[real].max() < 1e-4
