"""``python -m tools embed-quality``: our sentence embeddings against sentence-transformers, on
real text, in one run: quality, retrieval and speed.

Texts: SQuAD v1.1 dev questions and their paragraphs (``--questions N`` / ``--paragraphs M``,
seeded; every sampled question's own paragraph is among the paragraphs, the rest are
distractors drawn from the file). For every prepared embed folder (``--model-dir``, repeatable:
e.g. its fp32 and int8 preparations) the tool reports:

* **quality**: per text, the cosine between our normalised vector (:class:`EmbedPipeline`,
  truncating at the folder's ``seq_len``) and the reference implementation's,
  sentence-transformers' own ``SentenceTransformer(<the package's model folder>).encode(texts,
  normalize_embeddings=True)`` with its ``max_seq_length`` set to the same ``seq_len`` (both
  truncate alike); summarised as mean, worst, and the fraction >= 0.99999 and >= 0.995, for
  each run mode: packed ``unpack_repack`` and ``attention_mask`` (offline
  :class:`~packing.runtime.PackRunner`) and the padded ``original``
  (:class:`~packing.runtime.ModelRunner`, every row padded to ``seq_len``);
* **retrieval**: each question against all sampled paragraphs (cosine of normalised vectors):
  recall@1 and MRR@10, for sentence-transformers and for each folder (``unpack_repack``);
* **speed**: texts/s embedding all texts (questions and paragraphs, shuffled once with the
  seed) for each folder's modes (offline, at the runners' default knobs: ``unpack_repack``'s
  token budget is the calibrated one, measured into the folder's ``calibration.json`` on
  first use, before any timing) and for sentence-transformers at its best batch size among
  :data:`ST_BATCH_SIZES` (a short probe on the first :data:`PROBE_TEXTS` texts, then the
  timed run); ours over sentence-transformers', and each precision over fp32. Every timing
  includes tokenization and normalisation (sentence-transformers tokenizes inside ``encode``;
  ours times ``EmbedPipeline.encode`` + the runner + ``EmbedPipeline.vectors``); the
  tokenizer's share of ours is reported apart. The timed runs are also the runs whose vectors
  the quality and retrieval figures use. One thread count for all (``--threads``):
  ``torch.set_num_threads``, ONNX Runtime's intra-op threads and the tokenizers' Rayon pool
  (``RAYON_NUM_THREADS``, when not already set);
* **host**: date, CPU model and its avx2 / avx512f / avx512_vnni flags, library versions, each
  folder's precision and ``seq_len``.

A benchmark: run it on a quiet host. torch and sentence-transformers are imported only inside
the functions that run them.

The package, by job: :mod:`~tools.embed_quality.texts` (sampling SQuAD),
:mod:`~tools.embed_quality.scores` (cosines, retrieval, speed ratios),
:mod:`~tools.embed_quality.models` (our runners and sentence-transformers),
:mod:`~tools.embed_quality.run` (the run) and :mod:`~tools.embed_quality.report` (the text);
every public name is re-exported here. The host facts are
:func:`packing.runtime.host.host_facts`, as in ``embed-http``.
"""

from __future__ import annotations

from .models import (
    library_versions,
)
from .report import (
    format_report,
)
from .run import (
    PROBE_TEXTS,
    ST_BATCH_SIZES,
    WARMUP_TEXTS,
    embed_quality,
)
from .scores import (
    COSINE_THRESHOLDS,
    MODES,
    MRR_K,
    RETRIEVAL_MODE,
    by_first,
    cosine_rows,
    cosine_summary,
    retrieval_scores,
    speed_ratios,
)
from .texts import (
    DEFAULT_SQUAD,
    REPO_ROOT,
    Texts,
    sample_texts,
    squad_pairs,
)

__all__ = [
    "COSINE_THRESHOLDS",
    "DEFAULT_SQUAD",
    "MODES",
    "MRR_K",
    "PROBE_TEXTS",
    "REPO_ROOT",
    "RETRIEVAL_MODE",
    "ST_BATCH_SIZES",
    "Texts",
    "WARMUP_TEXTS",
    "by_first",
    "cosine_rows",
    "cosine_summary",
    "embed_quality",
    "format_report",
    "library_versions",
    "retrieval_scores",
    "sample_texts",
    "speed_ratios",
    "squad_pairs",
]
