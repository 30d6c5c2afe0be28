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

from dataclasses import dataclass

from .attention import ATTENTION_GROUPS
from .checks import at_least, in_range, one_of, positive_int
from .shapes import DEFAULT_SHAPES

MODES: tuple[str, ...] = ("attention_mask", "unpack_repack")
"""Packing layouts: rows with a segment-id attention mask, or flat tokens."""

DEFAULT_MODE = "unpack_repack"
"""The layout used where none is named (the served app's, the CLIs', the runners')."""

ALGORITHMS: tuple[str, ...] = ("first_fit", "next_fit", "best_fit")
"""Online row-placement heuristics for attention-mask mode."""

DEFAULT_ALGORITHM = "first_fit"
"""The row heuristic used where none is named."""

MIN_SEQ_LEN = 2
"""The shortest row a packing config accepts (``seq_len >= MIN_SEQ_LEN``)."""


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
        # Declared checks (packing.policy.checks); each stores the value normalised (numpy
        # scalars to plain Python numbers: hashable, JSON-friendly).
        seq_len = at_least("seq_len", self.seq_len, MIN_SEQ_LEN)
        batch_size = positive_int("batch_size", self.batch_size)
        checked = {
            "seq_len": seq_len,
            "batch_size": batch_size,
            "max_valid_num": positive_int("max_valid_num", self.max_valid_num),
            "mode": one_of("mode", self.mode, MODES),
            "algorithm": one_of("algorithm", self.algorithm, ALGORITHMS),
            "max_tokens": in_range(
                "max_tokens",
                self.max_tokens,
                seq_len,
                batch_size * seq_len,
                optional=True,
                lo_name="seq_len",
                hi_name="batch_size*seq_len",
            ),
            "attention_groups": in_range(
                "attention_groups", self.attention_groups, 1, ATTENTION_GROUPS
            ),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def capacity_tokens(self) -> int:
        """Real-token budget of one batch: ``max_tokens`` or ``batch_size * seq_len``."""
        if self.max_tokens is not None:
            return self.max_tokens
        return self.batch_size * self.seq_len
