"""Model inputs of one request, their validation, and the per-request result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class InvalidInput(ValueError):
    """A request the model cannot run; the message names the problem and the bad value."""


@dataclass(frozen=True)
class Features:
    """Token ids of one sequence (question + context window, special tokens included)."""

    input_ids: np.ndarray  # [length] int64: WordPiece ids
    token_type_ids: np.ndarray  # [length] int64: 0 for the question part, 1 for the context

    @classmethod
    def of(cls, input_ids, token_type_ids=None) -> Features:
        """Build from any int sequences; token types default to all zeros."""
        ids = np.asarray(input_ids)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        return cls(ids, types)

    def __len__(self) -> int:
        return int(np.size(self.input_ids))


@dataclass(frozen=True)
class SpanLogits:
    """What the QA head returns for one request, one value per input token."""

    start_logits: np.ndarray  # [length] float32
    end_logits: np.ndarray  # [length] float32


@dataclass(frozen=True)
class Pooled:
    """What the embed or classify head returns for one request: one vector per sequence.

    ``embed``: the pooled last hidden state (not normalised: normalisation is the response's
    choice); ``classify``: the classifier's raw outputs (logits), one per label."""

    values: np.ndarray  # [hidden_size] or [num_labels] float32


Result = SpanLogits | Pooled
"""What a runner returns for one request: :class:`SpanLogits` (qa) or :class:`Pooled`
(embed, classify), as the folder's task says."""


def validate_features(f: Features, seq_len: int, vocab_size: int, type_vocab_size: int) -> Features:
    """Return ``f`` as contiguous int64 arrays, or raise :class:`InvalidInput`.

    Checks: both arrays 1-D integer, same length, 1 <= length <= ``seq_len``, ids in
    ``[0, vocab_size)``, token types in ``[0, type_vocab_size)``.
    """
    if not isinstance(f, Features):
        raise InvalidInput(f"expected Features, got {type(f).__name__}")
    arrays = {}
    for name in ("input_ids", "token_type_ids"):
        arr = np.asarray(getattr(f, name))
        if arr.size == 0:
            raise InvalidInput(f"empty sequence: {name} has no tokens")
        if arr.dtype.kind not in "iu":
            raise InvalidInput(f"{name} must be integers, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise InvalidInput(f"{name} must be 1-D, got shape {arr.shape}")
        arrays[name] = arr
    ids, types = arrays["input_ids"], arrays["token_type_ids"]
    if ids.size != types.size:
        raise InvalidInput(f"input_ids has {ids.size} tokens but token_type_ids has {types.size}")
    if ids.size > seq_len:
        raise InvalidInput(
            f"sequence of {ids.size} tokens is longer than the model's seq_len {seq_len}; "
            "split long contexts into windows before packing"
        )
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise InvalidInput(f"token id {bad} is outside the vocabulary [0, {vocab_size})")
    tlo, thi = int(types.min()), int(types.max())
    if tlo < 0 or thi >= type_vocab_size:
        bad = tlo if tlo < 0 else thi
        raise InvalidInput(f"token type {bad} is outside [0, {type_vocab_size})")
    return Features(
        np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(types, dtype=np.int64)
    )
