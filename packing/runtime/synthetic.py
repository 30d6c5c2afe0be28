"""Synthetic request features of set lengths (random words framed like a QA pair): what token
budget calibration times, and the ``seed`` and ``short`` workloads of the runners' benchmarks.

* ``seed`` lengths: N(seq_len/2, seq_len/2) rounded and clipped to [1, seq_len] with a fixed
  RNG seed (N(128, 128) for 256, as in the PopRT example);
* ``short`` lengths: log-normal with median 20 tokens, clipped to [8, 64].
"""

from __future__ import annotations

import numpy as np

from packing.policy.shapes import DEFAULT_SHAPES
from packing.runtime.features import Features

__all__ = ["DEFAULT_SEED", "SHORT_RANGE", "seed_lengths", "short_lengths", "synthetic_features"]

DEFAULT_SEED = 2022


def seed_lengths(
    n: int, seq_len: int = DEFAULT_SHAPES.seq_len, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """``n`` lengths from N(seq_len/2, seq_len/2), rounded and clipped to [1, seq_len]."""
    rng = np.random.default_rng(seed)
    half = seq_len / 2
    return np.clip(np.rint(rng.normal(half, half, size=n)), 1, seq_len).astype(np.int64)


SHORT_RANGE = (8, 64)  # tokens of the short-heavy mix, as search queries with a snippet are


def short_lengths(
    n: int, seq_len: int = DEFAULT_SHAPES.seq_len, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """``n`` short-heavy lengths: log-normal with median 20 tokens, rounded and clipped to
    [8, 64] (and to ``seq_len``); about two thirds fall under 25 tokens."""
    rng = np.random.default_rng(seed)
    lo, hi = SHORT_RANGE
    raw = np.rint(rng.lognormal(np.log(20.0), 0.6, size=n))
    return np.clip(raw, lo, min(hi, seq_len)).astype(np.int64)


def synthetic_features(
    lengths, vocab_size: int, type_vocab_size: int = 2, seed: int = DEFAULT_SEED
) -> list[Features]:
    """Random-word features of the given lengths framed like a QA pair.

    With a BERT vocabulary (>= 30522 ids) special tokens are [CLS]=101 and [SEP]=102
    and words come from ids >= 1000; the first quarter (at most 64 tokens) is the
    question (token type 0), the rest the context (type 1 when the model has it).
    """
    rng = np.random.default_rng(seed + 1)
    big = vocab_size >= 30522
    cls_id, sep_id = (101, 102) if big else (min(1, vocab_size - 1), min(2, vocab_size - 1))
    low = 1000 if big else min(3, vocab_size - 1)
    out = []
    for n in np.asarray(lengths, dtype=np.int64):
        n = int(n)
        ids = rng.integers(low, vocab_size, size=n)
        types = np.zeros(n, dtype=np.int64)
        ids[0] = cls_id
        q = min(64, max(1, n // 4))
        if n > 2:
            ids[q] = sep_id
            ids[-1] = sep_id
            if type_vocab_size > 1:
                types[q + 1 :] = 1
        out.append(Features(ids.astype(np.int64), types))
    return out
