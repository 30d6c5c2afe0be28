"""Packing configuration: the knobs of a packer, validated once.

:class:`PackingConfig` is a frozen dataclass shared by the online packer and the
runners. It describes the model's static shape (``batch_size`` rows of
``seq_len`` slots), how many sequences one batch may carry (``max_valid_num``,
PopRT's name), which packing layout is used (``mode``) and which online row-placement heuristic
(``algorithm``) places sequences into rows in attention-mask mode. Defaults: the shapes of
:data:`packing.policy.shapes.DEFAULT_SHAPES`, :data:`DEFAULT_MODE` and :data:`DEFAULT_ALGORITHM`,
the one place each is written.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from .attention import ATTENTION_GROUPS
from .shapes import DEFAULT_SHAPES

MODES: tuple[str, ...] = ("attention_mask", "unpack_repack")
"""Packing layouts: rows with a segment-id attention mask, or flat tokens."""

DEFAULT_MODE = "unpack_repack"
"""The layout used where none is named (the served app's, the CLIs', the runners')."""

ALGORITHMS: tuple[str, ...] = ("first_fit", "next_fit", "best_fit")
"""Online row-placement heuristics for attention-mask mode."""

DEFAULT_ALGORITHM = "first_fit"
"""The row heuristic used where none is named."""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class PackingConfig:
    """How to pack sequences into fixed-shape batches.

    Attributes:
        seq_len: slots per row, i.e. the longest sequence accepted (>= 2).
        batch_size: rows per batch (>= 1).
        max_valid_num: most sequences one batch may carry (>= 1).
        mode: ``"attention_mask"`` (sequences never cross a row) or
            ``"unpack_repack"`` (tokens laid end to end); default :data:`DEFAULT_MODE`.
        algorithm: row-placement heuristic for attention-mask mode, one of
            :data:`ALGORITHMS`; default :data:`DEFAULT_ALGORITHM`.
        max_tokens: optional budget of real tokens per batch; ``None`` means
            ``batch_size * seq_len``. Must lie in ``[seq_len, batch_size * seq_len]``.
        attention_groups: most attention width groups an unpack/repack plan may use
            (1 ..= ``ATTENTION_GROUPS``; 1 = rows as wide as the batch's longest sequence;
            see :func:`packing.policy.attention.plan_attention`).

    Raises:
        ValueError: on any invalid field, with the offending value in the message.
    """

    seq_len: int = DEFAULT_SHAPES.seq_len
    batch_size: int = DEFAULT_SHAPES.batch_size
    max_valid_num: int = DEFAULT_SHAPES.max_valid_num
    mode: str = DEFAULT_MODE
    algorithm: str = DEFAULT_ALGORITHM
    max_tokens: int | None = None
    attention_groups: int = ATTENTION_GROUPS

    def __post_init__(self) -> None:
        if not _is_int(self.seq_len) or self.seq_len < 2:
            raise ValueError(f"seq_len must be an int >= 2, got {self.seq_len!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not _is_int(self.max_valid_num) or self.max_valid_num < 1:
            raise ValueError(f"max_valid_num must be an int >= 1, got {self.max_valid_num!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.max_tokens is not None:
            full = self.batch_size * self.seq_len
            if not _is_int(self.max_tokens) or not (self.seq_len <= self.max_tokens <= full):
                raise ValueError(
                    f"max_tokens must be None or an int in [seq_len={self.seq_len}, "
                    f"batch_size*seq_len={full}], got {self.max_tokens!r}"
                )
        if not _is_int(self.attention_groups) or not 1 <= self.attention_groups <= ATTENTION_GROUPS:
            raise ValueError(
                f"attention_groups must be an int in [1, {ATTENTION_GROUPS}], "
                f"got {self.attention_groups!r}"
            )
        # Normalise numpy scalars to plain Python numbers (hashable, JSON-friendly).
        for name in ("seq_len", "batch_size", "max_valid_num", "attention_groups"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.max_tokens is not None:
            object.__setattr__(self, "max_tokens", int(self.max_tokens))

    @property
    def capacity_tokens(self) -> int:
        """Real-token budget of one batch: ``max_tokens`` or ``batch_size * seq_len``."""
        if self.max_tokens is not None:
            return self.max_tokens
        return self.batch_size * self.seq_len
