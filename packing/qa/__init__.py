"""Pure question-answering helpers for the serving app: request validation, SQuAD-style
windows over long contexts, and best-span extraction from start/end logits.

No Ray or ONNX Runtime here; the only heavy dependency is a Hugging Face fast tokenizer,
passed in by the caller.
"""

from .requests import BadRequest, Limits, QARequest, parse_body, parse_payload
from .windows import MIN_CONTEXT_TOKENS, Answer, Window, best_answer, make_windows

__all__ = [
    "Answer",
    "BadRequest",
    "Limits",
    "MIN_CONTEXT_TOKENS",
    "QARequest",
    "Window",
    "best_answer",
    "make_windows",
    "parse_body",
    "parse_payload",
]
