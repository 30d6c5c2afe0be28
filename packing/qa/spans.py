"""Answer spans scored as probabilities, the way the Hugging Face question-answering pipeline
scores them (the HF Inference API's question-answering on ``POST /``).

``POST /v1/answer`` scores a span by its start logit + end logit
(:func:`~packing.qa.windows.best_answer`). The HF pipeline instead, in each window on its
own, takes a softmax of the start logits and one of the end logits over the context tokens
and the window's first token ([CLS]), scores a span by ``p_start * p_end``, and ranks the
spans of all windows together; with ``handle_impossible_answer`` the empty answer competes
with the score ``p_start[0] * p_end[0]`` (the smallest over the windows). The windows are the
same (:meth:`~packing.qa.pipeline.QAPipeline.tokenize`); only the scoring differs.
Spans are token-aligned (the pipeline's ``align_to_words=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .windows import Window


@dataclass(frozen=True)
class ScoredSpan:
    """One answer of :func:`probable_spans`."""

    answer: str  # context[start:end]; "" for the impossible answer
    score: float  # probability (p_start * p_end)
    start: int  # character offset into the context
    end: int  # exclusive character offset

    def to_json(self) -> dict:
        """``{answer, score, start, end}``: the HF question-answering output element."""
        return {"answer": self.answer, "score": self.score, "start": self.start, "end": self.end}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _window_spans(
    w: Window, start: np.ndarray, end: np.ndarray, top_k: int, max_answer_len: int
) -> tuple[list[tuple[float, int, int]], float]:
    """The ``top_k`` best ``(score, start_token, end_token)`` of one window, and its null score."""
    allowed = w.context_mask.copy()
    allowed[0] = True  # the first token ([CLS]) takes part in the softmax, as in the pipeline
    s = _softmax(np.where(allowed, np.asarray(start, dtype=np.float64), -10000.0))
    e = _softmax(np.where(allowed, np.asarray(end, dtype=np.float64), -10000.0))
    null = float(s[0] * e[0])
    s[0] = e[0] = 0.0
    ctx = np.flatnonzero(w.context_mask)
    found: list[tuple[float, int, int]] = []
    # context tokens are contiguous in a window: spans of d + 1 tokens pair ctx[:-d] with ctx[d:]
    for d in range(min(max_answer_len, len(ctx))):
        starts, ends = ctx[: len(ctx) - d], ctx[d:]
        scores = s[starts] * e[ends]
        take = np.argsort(-scores, kind="stable")[:top_k]
        found.extend((float(scores[i]), int(starts[i]), int(ends[i])) for i in take)
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    return found[:top_k], null


def probable_spans(
    windows: Sequence[Window],
    outputs: Sequence[Any],
    context: str,
    top_k: int = 1,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
) -> list[ScoredSpan]:
    """The ``top_k`` most probable answers of one question, best first, scored as the HF
    question-answering pipeline scores them (module docstring): ``outputs`` are the model's
    results for ``windows`` (anything with ``start_logits`` / ``end_logits``), ``context``
    the string the windows' offsets index. A span has 1 to ``max_answer_len`` context tokens;
    ties go to the lower window, then the lower start and end token. With
    ``handle_impossible_answer`` the empty answer ``("", null score, 0, 0)`` is ranked with
    them. Fewer than ``top_k`` come back when the context has fewer spans. Raises ValueError
    for mismatched or non-finite logits, or ``top_k`` / ``max_answer_len`` < 1."""
    if top_k < 1 or max_answer_len < 1:
        raise ValueError(f"top_k and max_answer_len must be >= 1, got {top_k}, {max_answer_len}")
    if len(windows) != len(outputs):
        raise ValueError(f"{len(windows)} windows but {len(outputs)} outputs")
    ranked: list[tuple[float, int, int, int]] = []
    null = np.inf
    for k, (w, o) in enumerate(zip(windows, outputs)):
        start = np.asarray(o.start_logits).reshape(-1)
        end = np.asarray(o.end_logits).reshape(-1)
        if start.shape[0] != len(w) or end.shape[0] != len(w):
            raise ValueError(
                f"window {w.window_index} has {len(w)} tokens but "
                f"{start.shape[0]} start and {end.shape[0]} end logits"
            )
        if not (np.isfinite(start).all() and np.isfinite(end).all()):
            raise ValueError(f"window {w.window_index}: non-finite (NaN or inf) logits")
        spans, window_null = _window_spans(w, start, end, top_k, max_answer_len)
        null = min(null, window_null)
        ranked.extend((score, k, ts, te) for score, ts, te in spans)
    ranked.sort(key=lambda t: (-t[0], t[1], t[2], t[3]))
    out = []
    for score, k, ts, te in ranked[:top_k]:
        w = windows[k]
        a, b = int(w.offsets[ts, 0]), int(w.offsets[te, 1])
        out.append(ScoredSpan(context[a:b], score, a, b))
    if handle_impossible_answer and windows:
        out.append(ScoredSpan("", float(null), 0, 0))
        out = sorted(out, key=lambda x: -x.score)[:top_k]  # stable: spans before a tie
    return out
