"""SQuAD v1.1 exact match and F1, with the official evaluation script's normalisation.

Pure functions: an answer is lower-cased, stripped of punctuation and of the articles
"a", "an", "the", and its whitespace collapsed, before comparing; each prediction scores
the best over the question's ground-truth answers; EM and F1 are means in percent.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, remove punctuation and articles, collapse whitespace (official v1.1)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    """Token-level F1 of the normalised strings (0.0 when they share no token)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def evaluate(answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict:
    """``{"exact_match", "f1", "count", "missing"}`` over the questions of ``answers`` (id ->
    ground-truth texts); a question without a prediction scores 0 and is counted in
    ``missing``. EM and F1 are percentages."""
    em = f1 = 0.0
    missing = 0
    for qid, truths in answers.items():
        if qid not in predictions:
            missing += 1
            continue
        pred = predictions[qid]
        em += max(exact_match(pred, t) for t in truths)
        f1 += max(f1_score(pred, t) for t in truths)
    n = len(answers)
    return {
        "exact_match": 100.0 * em / n if n else 0.0,
        "f1": 100.0 * f1 / n if n else 0.0,
        "count": n,
        "missing": missing,
    }
