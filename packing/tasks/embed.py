"""The one embedding pipeline: texts -> model inputs -> vectors.

Every route that embeds (OpenAI's ``/v1/embeddings``, TEI's ``/embed`` and ``/similarity``,
the HF Inference API's feature-extraction and sentence-similarity on ``/``) goes through
:class:`EmbedPipeline`; each only decides how the model runs (a packer call) and how the
vectors are written out. The model step returns, per sequence, the pooled last hidden state,
not normalised (:class:`~packing.runtime.features.Pooled`); normalisation is this pipeline's,
per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel

from .sequences import Encoded, Input, SequenceTokenizer

#: ``torch.nn.functional.normalize``'s floor on the norm (sentence-transformers' Normalize).
NORM_EPS = 1e-12


class EmbedPipeline:
    """Texts -> :class:`~packing.runtime.features.Features` -> vectors for one embedding
    model folder.

    ``tokenizer``: a Hugging Face fast tokenizer; ``seq_len``: the folder's
    ``manifest.seq_len``; ``normalize``: the folder's own choice
    (``manifest.task.normalize``: a sentence-transformers ``Normalize`` module), used when a
    request does not say. :meth:`encode` is thread-safe; the other methods hold no state."""

    def __init__(self, tokenizer: Any, seq_len: int, normalize: bool = True) -> None:
        self.sequences = SequenceTokenizer(tokenizer, seq_len)
        self.seq_len = seq_len
        self.normalize = bool(normalize)

    @classmethod
    def from_model_dir(cls, model_dir: ModelLike) -> EmbedPipeline:
        """The pipeline of a prepared embed folder (a path, or a
        :class:`~packing.model.prepared.PreparedModel`, whose manifest is not read again): its
        tokenizer, ``seq_len`` and ``task.normalize`` from its manifest. ValueError when the
        folder's task is not ``embed``."""
        from transformers import AutoTokenizer

        model = PreparedModel.open(model_dir)
        manifest = model.manifest
        if manifest.task.task != "embed":
            raise ValueError(f"{model} serves the {manifest.task.task} task, not embed")
        return cls(
            AutoTokenizer.from_pretrained(str(model)), manifest.seq_len, manifest.task.normalize
        )

    def encode(self, texts: Sequence[str | Sequence[int]], truncate: bool) -> list[Encoded]:
        """The model input of every text (or token-id list, used as given), in order, with one
        tokenizer batch call: an input over ``seq_len`` tokens is cut to ``seq_len`` when
        ``truncate`` is true and is a :class:`~packing.qa.requests.TooLarge` naming its token
        count and the limit otherwise (see :meth:`SequenceTokenizer.encode`)."""
        inputs: list[Input] = [t if isinstance(t, str) else tuple(t) for t in texts]
        return self.sequences.encode(inputs, truncate)

    def vectors(self, outputs: Sequence[Any], normalize: bool | None = None) -> list[np.ndarray]:
        """The embedding of every sequence as float32 ``[hidden]``, in order: ``outputs`` are
        the model's :class:`~packing.runtime.features.Pooled` results, L2-normalised when
        ``normalize`` is true (None: the folder's :attr:`normalize`). Raises ValueError for a
        non-finite value (a failed model, never the client's input)."""
        unit = self.normalize if normalize is None else normalize
        out = []
        for k, o in enumerate(outputs):
            v = np.asarray(o.values, dtype=np.float32).reshape(-1)
            if not np.isfinite(v).all():
                raise ValueError(f"sequence {k}: non-finite (NaN or inf) embedding")
            if unit:
                v = (v / max(float(np.linalg.norm(v.astype(np.float64))), NORM_EPS)).astype(
                    np.float32
                )
            out.append(v)
        return out


def cosine(source: np.ndarray, others: Sequence[np.ndarray]) -> list[float]:
    """Cosine similarity of ``source`` with each of ``others`` (0 where a vector is zero):
    sentence-similarity's scores."""
    a = np.asarray(source, dtype=np.float64)
    na = float(np.linalg.norm(a))
    out = []
    for b in others:
        b = np.asarray(b, dtype=np.float64)
        denom = na * float(np.linalg.norm(b))
        out.append(float(a @ b / denom) if denom > 0 else 0.0)
    return out
