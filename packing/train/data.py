"""Labelled training windows from SQuAD questions (the split by article and the file reader
are :mod:`packing.qa.squad_file`; re-exported here for the training code)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..qa.requests import BadRequest
from ..qa.squad_file import HELD_OUT_TITLES, Question, read_questions
from ..qa.windows import DOC_STRIDE, make_windows_batch

__all__ = [
    "HELD_OUT_TITLES",
    "Question",
    "read_questions",
    "TrainWindow",
    "label_window",
    "training_windows",
]


@dataclass(frozen=True)
class TrainWindow:
    """One labelled model input."""

    input_ids: np.ndarray  # [L] int64 token ids
    token_type_ids: np.ndarray  # [L] int64 segment ids (0 question, 1 context)
    start: int  # token index (within this window) of the answer's first token; 0 ([CLS]) if the answer is not inside
    end: int  # token index of the answer's last token; 0 if the answer is not inside


def label_window(
    offsets: np.ndarray, context_mask: np.ndarray, char_start: int, char_end: int
) -> tuple[int, int]:
    """``(start, end)`` token indices of the answer ``[char_start, char_end)`` inside one
    window, or ``(0, 0)`` when the window does not hold the whole answer.

    ``offsets`` ``[L, 2]`` are the window's character offsets (``-1`` off the context),
    ``context_mask`` ``[L]`` marks context tokens."""
    ctx = np.flatnonzero(context_mask)
    if ctx.size == 0 or char_start < 0:
        return 0, 0
    if offsets[ctx[0], 0] > char_start or offsets[ctx[-1], 1] < char_end:
        return 0, 0
    starts = ctx[offsets[ctx, 0] <= char_start]
    ends = ctx[offsets[ctx, 1] >= char_end]
    if starts.size == 0 or ends.size == 0:
        return 0, 0
    s, e = int(starts[-1]), int(ends[0])
    return (s, e) if s <= e else (0, 0)


def training_windows(
    tokenizer: Any,
    questions: Sequence[Question],
    seq_len: int,
    doc_stride: int = DOC_STRIDE,
    chunk: int = 512,
) -> list[TrainWindow]:
    """Every window of every question (the same windows serving makes, via
    :func:`make_windows_batch`), labelled with the first reference answer. Questions the
    tokenizer rejects (a question too long for a window) are skipped."""
    out: list[TrainWindow] = []
    for i in range(0, len(questions), chunk):
        part = questions[i : i + chunk]
        results = make_windows_batch(
            tokenizer, [(q.question, q.context) for q in part], seq_len, doc_stride=doc_stride
        )
        for q, windows in zip(part, results):
            if isinstance(windows, BadRequest):
                continue
            a_end = q.answer_start + len(q.answers[0]) if q.answers else -1
            for w in windows:
                s, e = label_window(w.offsets, w.context_mask, q.answer_start, a_end)
                out.append(TrainWindow(w.input_ids, w.token_type_ids, s, e))
    return out
