"""The texts embed-quality embeds: SQuAD v1.1 dev questions and paragraphs, sampled so that
every question's own paragraph is among the paragraphs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: SQuAD v1.1 dev, relative to the repository root (never copied into the repository).
DEFAULT_SQUAD = "../shared/data/squad-v1.1-dev.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Texts:
    """The sampled texts: ``questions[i]``'s own paragraph is ``paragraphs[gold[i]]``."""

    questions: list[str]
    paragraphs: list[str]
    gold: list[int]
    available: dict = field(default_factory=dict)  # questions / paragraphs in the file


def squad_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``(question, paragraph)`` of every question of the SQuAD file at ``path``, in file
    order (through :func:`packing.qa.squad_file.read_questions`)."""
    from packing.qa.squad_file import read_questions

    return [(q.question, q.context) for q in read_questions(path)]


def sample_texts(
    pairs: Sequence[tuple[str, str]], n_questions: int, n_paragraphs: int, seed: int = 0
) -> Texts:
    """Up to ``n_questions`` questions and exactly ``min(n_paragraphs, unique paragraphs)``
    paragraphs of ``pairs`` (``(question, paragraph)``), seeded.

    Questions are taken in a seeded random order; one is kept while its paragraph is already
    kept or fewer than ``n_paragraphs`` are, so every kept question's own paragraph is among
    the paragraphs (with few paragraphs, the questions come from those). The paragraph slots
    left are filled with other paragraphs of the file (distractors), drawn with the same RNG.
    Paragraphs are in file order, questions in sampled order. ValueError when a count is < 1.
    """
    if n_questions < 1 or n_paragraphs < 1:
        raise ValueError(
            f"need at least one question and one paragraph, got {n_questions} and {n_paragraphs}"
        )
    contexts = list(dict.fromkeys(c for _, c in pairs))  # unique, file order
    index = {c: i for i, c in enumerate(contexts)}
    rng = np.random.default_rng(seed)
    kept_q: list[int] = []
    kept_p: set[int] = set()
    for qi in rng.permutation(len(pairs)):
        if len(kept_q) == n_questions:
            break
        p = index[pairs[qi][1]]
        if p in kept_p or len(kept_p) < n_paragraphs:
            kept_p.add(p)
            kept_q.append(int(qi))
    need = min(n_paragraphs, len(contexts)) - len(kept_p)
    if need > 0:
        others = [int(p) for p in rng.permutation(len(contexts)) if int(p) not in kept_p]
        kept_p.update(others[:need])
    order = sorted(kept_p)
    pos = {p: k for k, p in enumerate(order)}
    return Texts(
        questions=[pairs[qi][0] for qi in kept_q],
        paragraphs=[contexts[p] for p in order],
        gold=[pos[index[pairs[qi][1]]] for qi in kept_q],
        available={"questions": len(pairs), "paragraphs": len(contexts)},
    )
