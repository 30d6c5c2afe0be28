"""Batch plans: where each sequence of a batch goes, as frozen dataclasses.

A plan is the whole contract between a packer (pure policy) and a runner (which
owns the model). Plans hold only integers describing the layout; the runner
turns a plan plus the sequences' token arrays into model inputs with
:mod:`packing.policy.layouts`, runs the model, and scatters the outputs back to
the callers with the same plan.

Every plan carries ``seq_ids``: the caller's identifier (an ``int``, typically an
index into the workload or a request counter) of every sequence in the batch,
in slot order. Outputs are returned in that order, so scattering back is
``results[seq_ids[k]] = outputs[k]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .attention import ATTENTION_GROUPS, AttentionLayout, plan_attention


def _frozen_int_array(values) -> np.ndarray:
    arr = np.array(values, dtype=np.int64).reshape(-1)
    arr.flags.writeable = False
    return arr


class _Counts:
    """Counts shared by every plan (which has ``seq_ids`` and ``lengths``)."""

    seq_ids: np.ndarray
    lengths: np.ndarray

    @property
    def n_seqs(self) -> int:
        """Number of sequences in the batch."""
        return int(self.seq_ids.size)

    @property
    def real_tokens(self) -> int:
        """Sum of the sequences' lengths."""
        return int(self.lengths.sum())


@dataclass(frozen=True)
class PaddedPlan(_Counts):
    """One sequence per row, each row padded to ``seq_len`` (the spec's 'Original').

    Sequence ``k`` occupies row ``k``, slots ``[0, lengths[k])``.
    """

    seq_len: int  # tokens per row (the model's sequence length, e.g. 256)
    seq_ids: np.ndarray  # [n] int64: caller id of the sequence in row k
    lengths: np.ndarray  # [n] int64: real tokens of sequence k (1 <= length <= seq_len)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq_ids", _frozen_int_array(self.seq_ids))
        object.__setattr__(self, "lengths", _frozen_int_array(self.lengths))

    @property
    def n_rows(self) -> int:
        """Rows the model computes: one per sequence."""
        return self.n_seqs

    @property
    def token_slots(self) -> int:
        """Token positions the dense layers compute (rows x seq_len)."""
        return self.n_rows * self.seq_len


@dataclass(frozen=True)
class AttentionMaskPlan(_Counts):
    """Sequences packed into rows of ``seq_len`` slots; a sequence never crosses a row.

    Sequence ``k`` occupies row ``rows[k]``, slots ``[starts[k], starts[k] + lengths[k])``.
    Within a row, sequences are numbered 1, 2, 3 ... in slot order (the row's
    segment ids); slot order within a row equals plan order.
    """

    seq_len: int  # slots per row
    n_rows: int  # rows the batch uses (<= the model's batch size)
    seq_ids: np.ndarray  # [n] int64: caller id of each packed sequence
    rows: np.ndarray  # [n] int64: row that sequence k sits in, 0 <= row < n_rows
    starts: np.ndarray  # [n] int64: first slot of sequence k within its row
    lengths: np.ndarray  # [n] int64: real tokens of sequence k

    def __post_init__(self) -> None:
        for name in ("seq_ids", "rows", "starts", "lengths"):
            object.__setattr__(self, name, _frozen_int_array(getattr(self, name)))

    @property
    def token_slots(self) -> int:
        """Token positions the dense layers compute (n_rows x seq_len)."""
        return self.n_rows * self.seq_len

    @property
    def used_width(self) -> int:
        """Slots up to the end of the fullest row (``max(starts + lengths)``; 1 when empty):
        the width rows can be trimmed to on a backend with dynamic shapes."""
        return int((self.starts + self.lengths).max()) if self.n_seqs else 1


@dataclass(frozen=True)
class UnpackRepackPlan(_Counts):
    """Tokens of all sequences laid end to end on one flat token axis.

    The batch has ``capacity`` slots (the model's ``batch_size * seq_len``);
    sequence ``k`` occupies flat slots ``[cu_seqlens[k], cu_seqlens[k + 1])``, so a
    sequence may cross the boundary between two rows of ``seq_len``. Dense layers
    see only the ``real_tokens`` used slots; attention runs per sequence, in the
    attention rows that :attr:`attention` lays out (groups of rows sized by the
    sequences they hold).

    ``seq_len``, ``capacity`` and ``max_valid_num`` are the packer's configuration, the
    same for every plan it makes, so a backend with static shapes can size the
    attention rows from them alone (:func:`packing.policy.layouts.static_attention_rows`).
    """

    seq_len: int  # longest allowed sequence (attention window per sequence)
    capacity: int  # token slots of one batch (batch_size * seq_len, or the packer's max_tokens)
    seq_ids: np.ndarray  # [n] int64: caller id of each packed sequence
    cu_seqlens: np.ndarray  # [n + 1] int64: cumulative lengths, cu_seqlens[0] == 0
    max_valid_num: int | None = (
        None  # packer's most sequences per batch (None: only capacity limits)
    )
    attention_groups: int = ATTENTION_GROUPS  # most attention width groups (1: rows of the longest)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq_ids", _frozen_int_array(self.seq_ids))
        object.__setattr__(self, "cu_seqlens", _frozen_int_array(self.cu_seqlens))
        if self.max_valid_num is not None:
            object.__setattr__(self, "max_valid_num", int(self.max_valid_num))

    @property
    def lengths(self) -> np.ndarray:
        """[n] int64: real tokens of each sequence."""
        return np.diff(self.cu_seqlens)

    @property
    def real_tokens(self) -> int:
        """Total tokens in the batch (== cu_seqlens[-1])."""
        return int(self.cu_seqlens[-1])

    @property
    def token_slots(self) -> int:
        """Token positions the dense layers compute: only the used slots."""
        return self.real_tokens

    @cached_property
    def attention(self) -> AttentionLayout:
        """Which sequences share attention rows of which width
        (:func:`packing.policy.attention.plan_attention`, computed once per plan)."""
        return plan_attention(self.lengths, self.attention_groups)


Plan = PaddedPlan | AttentionMaskPlan | UnpackRepackPlan
