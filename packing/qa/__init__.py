"""Question answering: request validation, SQuAD-style windows over long contexts, best-span
extraction from start/end logits, and :class:`QAPipeline`, which joins them into the one
questions -> windows -> answers path every caller (the Ingress, the batch job, eval, the
drills) uses.

No Ray or ONNX Runtime here; the only heavy dependency is a Hugging Face fast tokenizer,
passed in by the caller (or loaded from a model folder by :meth:`QAPipeline.from_model_dir`).
"""

from .pipeline import QAPipeline, QASettings, features_of, window_count
from .requests import BadRequest, Limits, QARequest, parse_body, parse_payload
from .windows import MIN_CONTEXT_TOKENS, Answer, Window, best_answer, make_windows

__all__ = [
    "Answer",
    "BadRequest",
    "Limits",
    "MIN_CONTEXT_TOKENS",
    "QAPipeline",
    "QARequest",
    "QASettings",
    "Window",
    "best_answer",
    "features_of",
    "make_windows",
    "parse_body",
    "parse_payload",
    "window_count",
]
