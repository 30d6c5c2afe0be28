"""Benchmark workloads: lists of request features with realistic length mixes.

* ``seed`` — lengths from N(seq_len/2, seq_len/2) rounded and clipped to
  [1, seq_len] with a fixed RNG seed (N(128, 128) for 256, as in the PopRT example);
  token ids are random words framed as ``[CLS] question [SEP] context [SEP]``.
* ``squad:FILE`` — real SQuAD v1.1 JSON: question + context tokenized with the model's
  tokenizer, context truncated to the sequence length (no windows: one feature each).
* ``lengths:FILE`` — a JSON list of lengths, filled with random words like ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from packing.model.prepared import ModelLike
from packing.runtime.features import Features
from packing.runtime.synthetic import (
    DEFAULT_SEED,
    SHORT_RANGE,
    seed_lengths,
    short_lengths,
    synthetic_features,
)

__all__ = [
    "DEFAULT_SEED",
    "SHORT_RANGE",
    "load_workload",
    "read_lengths",
    "sample_squad",
    "seed_lengths",
    "short_lengths",
    "squad_features",
    "squad_questions",
    "synthetic_features",
]


def squad_questions(path: str | Path) -> list[tuple[str, str, str]]:
    """``(id, question, context)`` for every question of a SQuAD v1.1/v2 JSON file."""
    from packing.qa.squad_file import read_questions

    return [(q.id, q.question, q.context) for q in read_questions(path)]


def sample_squad(path: str | Path, n: int, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """``n`` ``(question, context)`` pairs sampled with a fixed seed from a SQuAD file
    (with replacement only when the file holds fewer than ``n``)."""
    qs = squad_questions(path)
    if not qs:
        raise ValueError(f"{path} holds no questions")
    picks = np.random.default_rng(seed).choice(len(qs), size=n, replace=n > len(qs))
    return [(qs[i][1], qs[i][2]) for i in picks]


def read_lengths(path: str | Path) -> np.ndarray:
    """The non-empty JSON list of lengths in ``path``, as int64."""
    lengths = np.asarray(json.loads(Path(path).read_text()), dtype=np.int64).reshape(-1)
    if lengths.size == 0:
        raise ValueError(f"{path}: empty list of lengths")
    return lengths


def squad_features(
    path: str | Path, model_dir: ModelLike, n: int, seq_len: int, seed: int = DEFAULT_SEED
) -> list[Features]:
    """``n`` questions sampled (fixed seed) from a SQuAD file, tokenized for ``model_dir`` (its
    tokenizer files; the manifest is not read)."""
    from transformers import AutoTokenizer

    pairs = sample_squad(path, n, seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    enc = tok(
        [q for q, _ in pairs],
        [c for _, c in pairs],
        truncation="only_second",
        max_length=seq_len,
        return_token_type_ids=True,
    )
    return [
        Features(np.array(ids, dtype=np.int64), np.array(tt, dtype=np.int64))
        for ids, tt in zip(enc["input_ids"], enc["token_type_ids"])
    ]


def load_workload(
    spec: str,
    n: int,
    model_dir: ModelLike,
    seq_len: int,
    vocab_size: int,
    type_vocab_size: int = 2,
    seed: int = DEFAULT_SEED,
) -> list[Features]:
    """Features for a workload spec: ``seed``, ``short`` (8-64 tokens, short-heavy),
    ``squad:FILE`` or ``lengths:FILE``."""
    if n < 1:
        raise ValueError(f"--samples must be >= 1, got {n}")
    if spec == "seed":
        return synthetic_features(seed_lengths(n, seq_len, seed), vocab_size, type_vocab_size, seed)
    if spec == "short":
        return synthetic_features(
            short_lengths(n, seq_len, seed), vocab_size, type_vocab_size, seed
        )
    kind, _, arg = spec.partition(":")
    if kind == "squad" and arg:
        return squad_features(arg, model_dir, n, seq_len, seed)
    if kind == "lengths" and arg:
        lengths = read_lengths(arg)
        bad = np.flatnonzero((lengths < 1) | (lengths > seq_len))
        if bad.size:
            raise ValueError(
                f"{arg}: length {lengths[bad[0]]} at index {bad[0]} is outside [1, {seq_len}]"
            )
        lengths = np.resize(lengths, n)  # repeat the list to n samples
        return synthetic_features(lengths, vocab_size, type_vocab_size, seed)
    raise ValueError(f"unknown workload {spec!r}; use seed, short, squad:FILE or lengths:FILE")
