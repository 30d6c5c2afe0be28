"""The request pipelines of the embed and classify tasks, and the route bodies of every task.

* :mod:`.embed`: :class:`EmbedPipeline`, texts -> model inputs -> (normalised) vectors;
* :mod:`.classify`: :class:`ClassifyPipeline`, texts or pairs -> model inputs -> labelled
  scores, and reranking;
* :mod:`.sequences`: the one tokenizer call both share (one sequence per input, truncation);
* :mod:`.payloads`: the bodies of the OpenAI, TEI and HF Inference API routes, parsed;
* :mod:`.fields`: the field checks the parsers share.

Pure like :mod:`packing.qa`: no Ray, no HTTP, no ONNX Runtime; the only heavy dependency is a
Hugging Face fast tokenizer passed in by the caller (or loaded by ``from_model_dir``). The
model step is the caller's: it runs the :class:`~packing.runtime.features.Features` and hands
back one :class:`~packing.runtime.features.Pooled` per sequence.
"""

from .classify import SCORE_FUNCTIONS, ClassifyPipeline, default_function, tei_function
from .embed import EmbedPipeline, cosine
from .sequences import SequenceTokenizer, first_problem, item_names, token_count

__all__ = [
    "SCORE_FUNCTIONS",
    "ClassifyPipeline",
    "EmbedPipeline",
    "SequenceTokenizer",
    "cosine",
    "default_function",
    "first_problem",
    "item_names",
    "tei_function",
    "token_count",
]
