"""embed-quality's figures from vectors and timings, pure numpy: cosines per text and their
summary, retrieval recall@1 / MRR@k, and the speed ratios."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Run modes of our side: key -> label.
MODES: dict[str, str] = {
    "unpack_repack": "packed unpack_repack (PackRunner)",
    "attention_mask": "packed attention_mask (PackRunner)",
    "original": "padded original (ModelRunner)",
}
RETRIEVAL_MODE = "unpack_repack"  # the mode whose vectors the retrieval scores use
COSINE_THRESHOLDS = (0.99999, 0.995)


MRR_K = 10


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of ``a[i]`` with ``b[i]`` for every row, in float64 (0 where a row is zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two [n, d] arrays of one shape, got {a.shape} and {b.shape}")
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)


def cosine_summary(
    cos: Sequence[float] | np.ndarray, thresholds: Sequence[float] = COSINE_THRESHOLDS
) -> dict:
    """``{"n", "mean", "min", "ge_<t>" ...}``: the mean and worst cosine and, for each
    threshold ``t``, the fraction of texts whose cosine is >= ``t``. ValueError when empty."""
    c = np.asarray(cos, dtype=np.float64).reshape(-1)
    if c.size == 0:
        raise ValueError("no cosines to summarise")
    out = {
        "n": int(c.size),
        "mean": float(c.mean()),
        "min": float(c.min()),
        "argmin": int(c.argmin()),
    }
    for t in thresholds:
        out[f"ge_{t:g}"] = float((c >= t).mean())
    return out


def retrieval_scores(sim: np.ndarray, gold: Sequence[int], k: int = MRR_K) -> dict:
    """``{"recall@1", "mrr@k", "mean_rank", "n"}`` of a ``[questions, paragraphs]``
    similarity matrix whose right paragraph for question ``i`` is ``gold[i]``.

    A question's rank is 1 + the paragraphs scoring higher + the *other* paragraphs scoring
    the same (ties count against it). recall@1: the fraction ranked 1; MRR@k: the mean of
    1/rank, 0 for ranks over ``k``. ValueError for mismatched shapes or an empty matrix."""
    s = np.asarray(sim, dtype=np.float64)
    g = np.asarray(gold, dtype=np.int64)
    if s.ndim != 2 or s.shape[0] != g.size or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(
            f"need a [questions, paragraphs] matrix with one gold index per "
            f"question, got {s.shape} and {g.size} indices"
        )
    if g.min() < 0 or g.max() >= s.shape[1]:
        raise ValueError(f"gold indices must lie in [0, {s.shape[1]})")
    right = s[np.arange(s.shape[0]), g][:, None]
    rank = 1 + (s > right).sum(axis=1) + (s == right).sum(axis=1) - 1
    return {
        "n": int(s.shape[0]),
        "recall@1": float((rank == 1).mean()),
        f"mrr@{k}": float(np.where(rank <= k, 1.0 / rank, 0.0).mean()),
        "mean_rank": float(rank.mean()),
    }


def speed_ratios(speed: Sequence[dict], st_texts_per_s: float) -> list[dict]:
    """Ratios of the speed rows (``model_dir``, ``precision``, ``mode``, ``texts_per_s``):
    per folder, ``unpack_repack`` and the best other mode over sentence-transformers' best,
    and over the same mode of the first fp32 folder (the first folder when none is fp32)."""
    folders = list(dict.fromkeys(r["model_dir"] for r in speed))
    if not folders:
        return []
    by = {(r["model_dir"], r["mode"]): r for r in speed}
    fp32 = [d for d in folders if by_first(speed, d)["precision"] == "fp32"]
    base = fp32[0] if fp32 else folders[0]
    out = []
    for d in folders:
        rows = [r for r in speed if r["model_dir"] == d]
        picks = [r for r in rows if r["mode"] == RETRIEVAL_MODE]
        others = [r for r in rows if r["mode"] != RETRIEVAL_MODE]
        if others:
            picks.append(max(others, key=lambda r: r["texts_per_s"]))
        for r in picks:
            ref = by.get((base, r["mode"]))
            out.append(
                {
                    "model_dir": d,
                    "precision": r["precision"],
                    "mode": r["mode"],
                    "best_other": r["mode"] != RETRIEVAL_MODE,
                    "texts_per_s": r["texts_per_s"],
                    "vs_sentence_transformers": r["texts_per_s"] / st_texts_per_s,
                    "base_precision": by_first(speed, base)["precision"],
                    "vs_base": (
                        r["texts_per_s"] / ref["texts_per_s"]
                        if ref is not None and d != base
                        else None
                    ),
                }
            )
    return out


def by_first(rows: Sequence[dict], model_dir: str) -> dict:
    """The first row of ``rows`` for ``model_dir``."""
    return next(r for r in rows if r["model_dir"] == model_dir)


def _retrieval(vectors: np.ndarray, nq: int, gold: Sequence[int]) -> dict:
    """Retrieval scores of normalised ``vectors`` (questions first, then paragraphs)."""
    v = np.asarray(vectors, dtype=np.float64)
    return retrieval_scores(v[:nq] @ v[nq:].T, gold)
