"""The one sequence-classification pipeline: texts or (text, text_pair) pairs -> model inputs
-> labelled scores, and (query, texts) -> ranks for cross-encoder rerankers.

Every route that classifies (TEI's ``/predict`` and ``/rerank``, the HF Inference API's
text-classification on ``/``) goes through :class:`ClassifyPipeline`; each only decides how
the model runs (a packer call), which score function applies and how the result is written
out. The model step returns, per sequence, the classifier's raw logits
(:class:`~packing.runtime.features.Pooled`, ``[num_labels]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.model.task import TaskSpec

from .sequences import Encoded, SequenceTokenizer

SCORE_FUNCTIONS = ("softmax", "sigmoid", "none")
"""How logits become scores: softmax over the labels, a sigmoid per label, or the raw logit
(the names of the HF pipeline's ``function_to_apply``)."""


def default_function(spec: TaskSpec) -> str:
    """The score function of a classify folder when a request names none, in the order the
    HF text-classification pipeline (transformers 5) decides it: ``none`` for
    ``problem_type`` regression, ``sigmoid`` for multi-label or a single output (a cross-encoder
    whose config names no problem_type), ``softmax`` otherwise."""
    if spec.problem_type == "regression":
        return "none"
    if spec.problem_type == "multi_label_classification" or spec.num_labels == 1:
        return "sigmoid"
    return "softmax"


def tei_function(num_labels: int, raw_scores: bool) -> str:
    """The score function TEI applies on ``/predict`` and ``/rerank``: the raw logits with
    ``raw_scores``, else softmax over several outputs and a sigmoid of a single one."""
    if raw_scores:
        return "none"
    return "softmax" if num_labels > 1 else "sigmoid"


def apply_function(logits: np.ndarray, function: str) -> np.ndarray:
    """``function`` (one of :data:`SCORE_FUNCTIONS`) of one sequence's logits, as float64."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    if function == "softmax":
        e = np.exp(x - x.max())
        return e / e.sum()
    if function == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-x) of a very negative logit: inf, score 0
            return 1.0 / (1.0 + np.exp(-x))
    if function == "none":
        return x
    raise ValueError(f"score function must be one of {SCORE_FUNCTIONS}, got {function!r}")


class ClassifyPipeline:
    """Inputs -> :class:`~packing.runtime.features.Features` -> scores for one classify model
    folder (``spec``: its ``manifest.task``, labels in output order).

    ``tokenizer``: a Hugging Face fast tokenizer; ``seq_len``: the folder's
    ``manifest.seq_len``. :meth:`encode` is thread-safe; the other methods hold no state."""

    def __init__(self, tokenizer: Any, seq_len: int, spec: TaskSpec) -> None:
        if spec.task != "classify":
            raise ValueError(f"a classify pipeline needs a classify task, got {spec.task!r}")
        self.sequences = SequenceTokenizer(tokenizer, seq_len)
        self.seq_len = seq_len
        self.spec = spec

    @classmethod
    def from_model_dir(cls, model_dir: ModelLike) -> ClassifyPipeline:
        """The pipeline of a prepared classify folder (a path, or a
        :class:`~packing.model.prepared.PreparedModel`, whose manifest is not read again): its
        tokenizer, and ``seq_len`` and the task (labels, problem type) from its manifest.
        ValueError for another task."""
        from transformers import AutoTokenizer

        model = PreparedModel.open(model_dir)
        manifest = model.manifest
        return cls(AutoTokenizer.from_pretrained(str(model)), manifest.seq_len, manifest.task)

    @property
    def labels(self) -> tuple[str, ...]:
        """The label of each output, in output order."""
        return self.spec.labels

    @property
    def is_reranker(self) -> bool:
        """Whether the model has a single output: a cross-encoder reranker (TEI's rule)."""
        return self.spec.num_labels == 1

    def encode(self, inputs: Sequence[str | tuple[str, str]], truncate: bool) -> list[Encoded]:
        """The model input of every text or ``(text, text_pair)`` pair, in order, with one
        tokenizer batch call (a pair's second text gets token type 1): an input over
        ``seq_len`` tokens is cut to it when ``truncate`` is true (longest text first) and is
        a :class:`~packing.qa.requests.TooLarge` naming its token count and the limit
        otherwise."""
        return self.sequences.encode(
            [x if isinstance(x, str) else tuple(x) for x in inputs], truncate
        )

    def logits(self, outputs: Sequence[Any]) -> list[np.ndarray]:
        """The ``[num_labels]`` logits of every sequence from the model's
        :class:`~packing.runtime.features.Pooled` results. Raises ValueError for a wrong
        count or a non-finite value (a failed model, never the client's input)."""
        out = []
        for k, o in enumerate(outputs):
            v = np.asarray(o.values, dtype=np.float64).reshape(-1)
            if v.size != self.spec.num_labels:
                raise ValueError(f"sequence {k}: {v.size} logits for {self.spec.num_labels} labels")
            if not np.isfinite(v).all():
                raise ValueError(f"sequence {k}: non-finite (NaN or inf) logits")
            out.append(v)
        return out

    def predictions(
        self, outputs: Sequence[Any], function: str | None = None, top_k: int | None = None
    ) -> list[list[dict]]:
        """Per sequence, ``[{"label", "score"}]`` sorted by score, highest first (ties in
        label order), the first ``top_k`` of them (None: every label). ``function`` is one of
        :data:`SCORE_FUNCTIONS`; None: :func:`default_function` of the folder."""
        function = default_function(self.spec) if function is None else function
        out = []
        for v in self.logits(outputs):
            scores = apply_function(v, function)
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
            out.append(
                [{"label": self.labels[i], "score": float(scores[i])} for i in order[:top_k]]
            )
        return out

    def rerank(
        self, outputs: Sequence[Any], raw_scores: bool = False, texts: Sequence[str] | None = None
    ) -> list[dict]:
        """Ranks of a reranker's (query, text) sequences, TEI's ``/rerank``:
        ``[{"index", "score"}]`` (with ``"text": texts[index]`` when ``texts`` is given),
        sorted by score, highest first (ties: lower index first). The score is the sigmoid of
        the single logit, or the logit itself with ``raw_scores``. Raises ValueError when the
        model has more than one output (:attr:`is_reranker`)."""
        if not self.is_reranker:
            raise ValueError(
                f"rerank needs a model with one output, this one has {self.spec.num_labels}"
            )
        function = tei_function(1, raw_scores)
        scores = [float(apply_function(v, function)[0]) for v in self.logits(outputs)]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [
            {"index": i, "score": scores[i], **({"text": texts[i]} if texts is not None else {})}
            for i in order
        ]
