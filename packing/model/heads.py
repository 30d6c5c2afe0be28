"""The embed and classify heads, in numpy, one sequence at a time (no ONNX Runtime, no torch).

The graphs of an ``embed`` or ``classify`` folder stop at the encoder's last hidden state
(:mod:`packing.model.graphs`); the runtime cuts it per sequence
(:func:`packing.policy.layouts.scatter_outputs`) and applies the head here. Every head works on
one sequence's ``[T, H]`` float32 hidden states with shapes that depend on that sequence only
(``[T, H]`` in, ``[H]`` or ``[num_labels]`` out, through fixed ``[H]`` / ``[H, H]`` /
``[L, H]`` operands on fresh contiguous copies), and sums in a fixed order in float64 before
one rounding to float32. So a sequence's result depends on its own hidden states alone, never
on what was packed with it: where the graph's hidden states are bit-identical alone and in a
crowd (``unpack_repack``, int8 included), so are the pooled vectors and the logits.

* embed: :func:`pool` (mean over the sequence's tokens, or its first token, CLS), not
  normalised (:func:`normalize` is the response's choice, ``TaskSpec.normalize``).
* classify: :class:`ClassifyHead` (``BertForSequenceClassification``'s pooler then classifier)
  from ``head.safetensors``, the float32 head tensors ``prepare`` writes into the folder.
  RoBERTa's ``RobertaClassificationHead`` (``out_proj(tanh(dense(h[<s>])))``) is the same
  computation; :mod:`packing.model.roberta` gives its ``dense`` and ``out_proj`` the pooler's
  and the classifier's names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .task import POOLINGS, TaskSpec
from .weights import HEAD_NAMES

if TYPE_CHECKING:
    from .prepared import ModelLike

HIDDEN_OUTPUT = "last_hidden_state"
"""The graph output embed and classify folders' graphs write, and the heads read: float32
``[tokens, H]`` (unpack_repack) or ``[batch, seq, H]`` (original, attention_mask)."""
HEAD_FILE = "head.safetensors"
"""File of a classify folder holding the head's float32 tensors (:data:`HEAD_TENSORS`)."""
HEAD_TENSORS = HEAD_NAMES["classify"]
"""``bert.pooler.dense.weight`` [H, H], ``.bias`` [H], ``classifier.weight`` [L, H],
``classifier.bias`` [L]."""


def _hidden(hidden: np.ndarray) -> np.ndarray:
    """``hidden`` as a fresh C-contiguous float64 ``[T, H]`` copy; ValueError for another rank
    or no token."""
    h = np.asarray(hidden)
    if h.ndim != 2 or h.shape[0] < 1:
        raise ValueError(f"hidden states must be [tokens >= 1, hidden], got shape {h.shape}")
    return np.array(h, dtype=np.float64, order="C", copy=True)


def pool(hidden: np.ndarray, mode: str) -> np.ndarray:
    """One sequence's embedding from its last hidden states ``hidden`` ``[T, H]`` (its ``T``
    real tokens only, no padding): float32 ``[H]``.

    ``mode`` ``mean``: the mean over the ``T`` rows, summed row after row in float64 (a fixed
    order that depends on ``T`` only) and rounded once to float32; ``cls``: row 0 as it is.
    Not normalised. ValueError for an unknown ``mode`` or a ``hidden`` that is not ``[T>=1, H]``.
    """
    if mode not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
    if mode == "cls":
        h = np.asarray(hidden)
        if h.ndim != 2 or h.shape[0] < 1:
            raise ValueError(f"hidden states must be [tokens >= 1, hidden], got shape {h.shape}")
        return np.array(h[0], dtype=np.float32, copy=True)
    h = _hidden(hidden)
    # axis 0 of a C-contiguous array: numpy adds whole rows in turn (each column's sum in
    # row order; pairwise summation applies only along the contiguous axis)
    total = np.add.reduce(h, axis=0)
    return (total / h.shape[0]).astype(np.float32)


def normalize(vector: np.ndarray) -> np.ndarray:
    """``vector`` divided by its L2 norm (float64 sum of squares, one rounding to float32),
    as sentence-transformers' ``Normalize`` module (a zero vector stays zero)."""
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.sqrt(np.sum(v * v)))
    return (v / max(norm, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class ClassifyHead:
    """``BertForSequenceClassification``'s head: ``classifier(tanh(pooler(hidden[0])))``.

    Weights are kept in float64 (read from float32); :meth:`logits` computes one sequence at a
    time with fixed shapes, so its result depends on that sequence's hidden states only."""

    pooler_weight: np.ndarray  # [H, H] float64 (torch Linear layout: [out, in])
    pooler_bias: np.ndarray  # [H]
    classifier_weight: np.ndarray  # [L, H]
    classifier_bias: np.ndarray  # [L]

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, np.ndarray], num_labels: int | None = None
    ) -> ClassifyHead:
        """The head from its :data:`HEAD_TENSORS` (any float dtype). ValueError naming a
        missing tensor, a wrong shape, or a classifier whose rows are not ``num_labels``."""
        missing = [n for n in HEAD_TENSORS if n not in tensors]
        if missing:
            raise ValueError(f"classify head needs tensors {missing}, have {sorted(tensors)}")
        pw, pb, cw, cb = (np.array(tensors[n], dtype=np.float64, order="C") for n in HEAD_TENSORS)
        h = pw.shape[0]
        if pw.shape != (h, h) or pb.shape != (h,):
            raise ValueError(f"pooler must be [H, H] and [H], got {pw.shape} and {pb.shape}")
        if cw.ndim != 2 or cw.shape[1] != h or cb.shape != (cw.shape[0],):
            raise ValueError(f"classifier must be [L, {h}] and [L], got {cw.shape} and {cb.shape}")
        if num_labels is not None and cw.shape[0] != num_labels:
            raise ValueError(
                f"classifier has {cw.shape[0]} outputs, the task has {num_labels} labels"
            )
        return cls(pw, pb, cw, cb)

    @classmethod
    def load(cls, path: str | Path, num_labels: int | None = None) -> ClassifyHead:
        """The head in the safetensors file ``path`` (a folder's :data:`HEAD_FILE`);
        FileNotFoundError naming it when absent, ValueError as :meth:`from_tensors`."""
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: a classify folder holds its head there; "
                "prepare the folder again"
            )
        return cls.from_tensors(load_file(str(path)), num_labels)

    @property
    def hidden_size(self) -> int:
        """``H``: the hidden states' width the head takes."""
        return int(self.pooler_weight.shape[0])

    @property
    def num_labels(self) -> int:
        """``L``: outputs of the classifier."""
        return int(self.classifier_weight.shape[0])

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Raw classifier outputs of one sequence, float32 ``[num_labels]``, from its last
        hidden states ``hidden`` ``[T, H]`` (only row 0, the CLS token, is read):
        ``W_c tanh(W_p h0 + b_p) + b_c`` in float64 on a fresh copy of ``h0``, rounded once.
        ValueError when ``hidden`` is not ``[T>=1, H]``."""
        h = np.asarray(hidden)
        if h.ndim != 2 or h.shape[0] < 1 or h.shape[1] != self.hidden_size:
            raise ValueError(
                f"hidden states must be [tokens >= 1, {self.hidden_size}], got shape {h.shape}"
            )
        cls_token = np.array(h[0], dtype=np.float64, order="C", copy=True)
        pooled = np.tanh(self.pooler_weight @ cls_token + self.pooler_bias)
        return (self.classifier_weight @ pooled + self.classifier_bias).astype(np.float32)


@dataclass(frozen=True)
class Head:
    """The head a folder's task applies to one sequence's hidden states: ``embed`` pools
    (:func:`pool`), ``classify`` runs :class:`ClassifyHead`. :meth:`__call__` maps
    ``[T, H]`` float32 to the float32 vector of :class:`packing.runtime.features.Pooled`."""

    task: TaskSpec
    classifier: ClassifyHead | None = None  # classify only

    def __post_init__(self) -> None:
        if self.task.task == "qa":
            raise ValueError("the qa task has no pooled head (its graphs write span logits)")
        if (self.task.task == "classify") != (self.classifier is not None):
            raise ValueError(
                f"a {self.task.task} head takes "
                f"{'a' if self.task.task == 'classify' else 'no'} ClassifyHead"
            )

    def __call__(self, hidden: np.ndarray) -> np.ndarray:
        """The sequence's vector: pooled hidden state ``[H]`` (embed, not normalised) or raw
        logits ``[num_labels]`` (classify)."""
        if self.classifier is not None:
            return self.classifier.logits(hidden)
        return pool(hidden, self.task.pooling)


def load_head(model_dir: ModelLike | None, task: TaskSpec) -> Head | None:
    """The head of a folder serving ``task``: None for qa (its graphs write the span logits),
    the pooling head for embed, and for classify the :class:`ClassifyHead` in
    ``model_dir/head.safetensors`` (checked against the task's label count; ``model_dir``: a
    path or a :class:`~packing.model.prepared.PreparedModel`, whose manifest is not read here).
    ValueError when a classify task comes without ``model_dir``; FileNotFoundError when the
    file is absent."""
    if task.task == "qa":
        return None
    if task.task == "embed":
        return Head(task)
    if model_dir is None:
        raise ValueError(
            "a classify folder's head is read from its head.safetensors: give the model folder"
        )
    return Head(task, ClassifyHead.load(Path(model_dir) / HEAD_FILE, task.num_labels))
