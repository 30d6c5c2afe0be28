"""SQuAD v1.1 text for fine-tuning: a fixed split by article, and labelled windows.

The split is by article so no held-out question shares a paragraph (or a topic) with the
training text: the articles of SQuAD v1.1 dev whose file index is 5, 11, 17, ... (every sixth,
:data:`HELD_OUT_TITLES`, 1,807 questions) are held out; the other 40 (8,763 questions) train.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..qa.requests import BadRequest
from ..qa.windows import make_windows_batch

# every sixth article of squad-v1.1-dev.json (file indices 5, 11, ..., 47)
HELD_OUT_TITLES = (
    "Chloroplast", "Economic_inequality", "Geology", "Islamism",
    "Normans", "Rhine", "Teacher", "Yuan_dynasty",
)


@dataclass(frozen=True)
class Question:
    """One SQuAD question with its paragraph and reference answers."""

    id: str  # SQuAD question id
    question: str  # question text
    context: str  # the paragraph, exactly as in the file (answer offsets index into it)
    answers: tuple[str, ...]  # reference answer texts (SQuAD dev has up to ~5, may repeat)
    answer_start: int  # character offset of the first reference answer in ``context``
    article: str  # title of the article the paragraph comes from


def read_questions(path: str | Path, split: str = "all") -> list[Question]:
    """Questions of the SQuAD v1.1 file at ``path`` in file order: ``split`` is ``"train"``
    (articles not in :data:`HELD_OUT_TITLES`), ``"heldout"`` (those) or ``"all"``.

    Raises ValueError for another split, or when a held-out title is not in the file (the
    split would silently change)."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be train, heldout or all, got {split!r}")
    data = json.loads(Path(path).read_text())["data"]
    titles = {a["title"] for a in data}
    missing = [t for t in HELD_OUT_TITLES if t not in titles]
    if missing and split != "all":
        raise ValueError(f"{path} lacks held-out articles {missing}: not SQuAD v1.1 dev?")
    out = []
    for article in data:
        held = article["title"] in HELD_OUT_TITLES
        if (split == "train" and held) or (split == "heldout" and not held):
            continue
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = qa.get("answers") or []
                out.append(Question(
                    id=qa["id"], question=qa["question"], context=para["context"],
                    answers=tuple(a["text"] for a in answers),
                    answer_start=int(answers[0]["answer_start"]) if answers else -1,
                    article=article["title"]))
    return out


@dataclass(frozen=True)
class TrainWindow:
    """One labelled model input."""

    input_ids: np.ndarray  # [L] int64 token ids
    token_type_ids: np.ndarray  # [L] int64 segment ids (0 question, 1 context)
    start: int  # token index (within this window) of the answer's first token; 0 ([CLS]) if the answer is not inside
    end: int  # token index of the answer's last token; 0 if the answer is not inside


def label_window(offsets: np.ndarray, context_mask: np.ndarray, char_start: int,
                 char_end: int) -> tuple[int, int]:
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


def training_windows(tokenizer: Any, questions: Sequence[Question], seq_len: int,
                     doc_stride: int = 128, chunk: int = 512) -> list[TrainWindow]:
    """Every window of every question (the same windows serving makes, via
    :func:`make_windows_batch`), labelled with the first reference answer. Questions the
    tokenizer rejects (a question too long for a window) are skipped."""
    out: list[TrainWindow] = []
    for i in range(0, len(questions), chunk):
        part = questions[i : i + chunk]
        results = make_windows_batch(tokenizer, [(q.question, q.context) for q in part],
                                     seq_len, doc_stride=doc_stride)
        for q, windows in zip(part, results):
            if isinstance(windows, BadRequest):
                continue
            a_end = q.answer_start + len(q.answers[0]) if q.answers else -1
            for w in windows:
                s, e = label_window(w.offsets, w.context_mask, q.answer_start, a_end)
                out.append(TrainWindow(w.input_ids, w.token_type_ids, s, e))
    return out
