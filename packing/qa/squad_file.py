"""A SQuAD-format file as :class:`Question` records, and the fixed split by article.

The split is by article so no held-out question shares a paragraph (or a topic) with the
training text: the articles of SQuAD v1.1 dev whose file index is 5, 11, 17, ... (every sixth,
:data:`HELD_OUT_TITLES`, 1,807 questions) are held out; the other 40 (8,763 questions) train
(``packed-bert train``) and the held-out ones are scored (``packed-bert eval``). Every reader
of SQuAD files in this project goes through :func:`read_questions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# every sixth article of squad-v1.1-dev.json (file indices 5, 11, ..., 47)
HELD_OUT_TITLES = (
    "Chloroplast",
    "Economic_inequality",
    "Geology",
    "Islamism",
    "Normans",
    "Rhine",
    "Teacher",
    "Yuan_dynasty",
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
                out.append(
                    Question(
                        id=qa["id"],
                        question=qa["question"],
                        context=para["context"],
                        answers=tuple(a["text"] for a in answers),
                        answer_start=int(answers[0]["answer_start"]) if answers else -1,
                        article=article["title"],
                    )
                )
    return out
