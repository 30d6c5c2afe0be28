"""What a prepared model folder serves: its task and the task's head settings.

Three tasks share one encoder and one graph builder; only the head differs:

* ``qa`` — extractive question answering: per-token start/end logits (``BertForQuestionAnswering``).
* ``embed`` — sentence embeddings: the last hidden states pooled per sequence (mean over its
  real tokens, or its first token, CLS), optionally L2-normalised (sentence-transformers
  models: ``1_Pooling/config.json`` and a ``Normalize`` module in ``modules.json``).
* ``classify`` — sequence classification (``BertForSequenceClassification``: pooler, then
  classifier), for one text or a (query, text) pair; also cross-encoder rerankers (one
  output). ``problem_type`` is the checkpoint's (None when its config names none, as most
  cross-encoders'); the routes turn logits into scores from it
  (:func:`packing.tasks.classify.default_function`).

The manifest records a :class:`TaskSpec` (``manifest.json``: ``"task": {...}``); manifests
written before tasks read as ``qa``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TASKS = ("qa", "embed", "classify")
POOLINGS = ("mean", "cls")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")

_FAMILIES = ("Bert", "Roberta", "XLMRoberta")  # packing.model.roberta maps the other two
_QA_ARCHS = tuple(f"{f}ForQuestionAnswering" for f in _FAMILIES)
_CLASSIFY_ARCHS = tuple(f"{f}ForSequenceClassification" for f in _FAMILIES)
_EMBED_ARCHS = tuple(f"{f}Model" for f in _FAMILIES)


@dataclass(frozen=True)
class TaskSpec:
    """The task of a model folder and its head settings (validated on construction).

    ``pooling`` and ``normalize`` matter for ``embed`` only; ``labels`` and ``problem_type``
    for ``classify`` only (``labels[i]`` names output ``i``; their count is the head's)."""

    task: str = "qa"
    pooling: str = "mean"
    normalize: bool = True
    labels: tuple[str, ...] = ()
    problem_type: str | None = None  # classify: the checkpoint's; None when it names none

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be true or false, got {self.normalize!r}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"problem_type must be one of {PROBLEM_TYPES} or null, got {self.problem_type!r}"
            )
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.task == "classify":
            if not self.labels:
                raise ValueError("a classify task needs at least one label")
            if self.problem_type == "regression" and len(self.labels) != 1:
                raise ValueError(f"regression has one output, got {len(self.labels)} labels")

    @property
    def num_labels(self) -> int:
        """Outputs of the classify head (0 for the other tasks)."""
        return len(self.labels) if self.task == "classify" else 0

    def to_dict(self) -> dict:
        """JSON-ready (labels as a list)."""
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, raw: dict | None) -> TaskSpec:
        """Read a manifest's ``task`` block; None (manifests before tasks) is ``qa``.
        ValueError names an unknown key or a bad value."""
        if raw is None:
            return cls()
        if isinstance(raw, str):
            return cls(task=raw)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown task settings {sorted(unknown)}")
        return cls(**{**raw, "labels": tuple(raw.get("labels", ()))})


def infer_task(
    config: dict[str, Any], folder: Path | None = None, task: str | None = None
) -> TaskSpec:
    """The :class:`TaskSpec` of a transformers checkpoint: its ``config.json`` dict, and for
    sentence-transformers models the folder's ``modules.json`` and ``1_Pooling/config.json``.

    ``task`` (``prepare --task``) overrides what the architecture says; without it the task
    is ``qa`` for ``BertForQuestionAnswering``, ``classify`` for
    ``BertForSequenceClassification``, ``embed`` for ``BertModel`` or a sentence-transformers
    folder (the same for ``Roberta*`` and ``XLMRoberta*``: :mod:`packing.model.roberta`), and
    ``qa`` when the config names no architecture. Raises ValueError for a task or
    architecture this code cannot serve."""
    archs = config.get("architectures") or []
    st = _sentence_transformers(folder)
    if task is None:
        if st is not None or any(a in _EMBED_ARCHS for a in archs):
            task = "embed"
        elif any(a in _CLASSIFY_ARCHS for a in archs):
            task = "classify"
        elif not archs or any(a in _QA_ARCHS for a in archs):
            task = "qa"
        else:
            raise ValueError(
                f"architecture {archs} has no task here; pass --task ({'|'.join(TASKS)})"
            )
    if task == "embed":
        pooling, normalize = st if st is not None else ("mean", True)
        return TaskSpec(task="embed", pooling=pooling, normalize=normalize)
    if task == "classify":
        return TaskSpec(task="classify", labels=_labels(config), problem_type=_problem_type(config))
    return TaskSpec(task=task)


def _labels(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label")
    n = config.get("num_labels")
    if isinstance(id2label, dict) and id2label:
        ordered = sorted(((int(k), str(v)) for k, v in id2label.items()))
        return tuple(v for _, v in ordered)
    if isinstance(n, int) and n > 0:
        return tuple(f"LABEL_{i}" for i in range(n))
    return ("LABEL_0", "LABEL_1")  # transformers' default num_labels


def _problem_type(config: dict[str, Any]) -> str | None:
    """The checkpoint's ``problem_type`` as its config names it (None when it names none:
    transformers then scores one output with a sigmoid, several with softmax)."""
    given = config.get("problem_type")
    return str(given) if given else None


def _sentence_transformers(folder: Path | None) -> tuple[str, bool] | None:
    """``(pooling, normalize)`` of a sentence-transformers folder, None for another folder.
    Max and sqrt-length pooling are refused (ValueError)."""
    if folder is None or not (Path(folder) / "modules.json").exists():
        return None
    modules = json.loads((Path(folder) / "modules.json").read_text())
    types = [str(m.get("type", "")) for m in modules]
    normalize = any(t.endswith("Normalize") for t in types)
    pooling = "mean"
    for m in modules:
        if str(m.get("type", "")).endswith("Pooling"):
            cfg_path = Path(folder) / str(m.get("path", "")) / "config.json"
            cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
            if cfg.get("pooling_mode_max_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
                raise ValueError(f"{cfg_path}: only mean or CLS pooling is served")
            pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    return pooling, normalize


def require_task(spec: TaskSpec, task: str, what: str, instead: str = "") -> None:
    """Raise ValueError unless ``spec`` is of ``task``: ``what`` (a command) serves only
    folders of that task; ``instead`` says what to use for the folder's own task."""
    if spec.task != task:
        raise ValueError(
            f"{what} works on {task} folders; this folder's task is {spec.task}{instead}"
        )
