"""Attention blocks of an unpack/repack batch: which attention rows of which width each sequence gets.

The unpack/repack graph runs its dense layers on the flat token axis (no padding at all)
and only attention on rows: per layer it gathers the Q/K/V projections of the tokens into
attention rows, runs masked attention on each row, and gathers the context back.
Attention work per row grows with its width squared, so one width for the whole batch (its
longest sequence) makes a 40-token sequence pay for a 250-token row.

:func:`plan_attention` splits the batch's sequences, sorted by length, into at most
:data:`ATTENTION_GROUPS` groups; each group has rows of its own width (the group's longest
sequence), and **each sequence gets a row of its own, starting at slot 0**. The split
minimises a cost model of the attention work (:func:`group_cost`) by dynamic programming
over a few candidate boundaries, so it takes well under a millisecond.

Why a row per sequence (batch invariance): ONNX Runtime's CPU Softmax and MatMul kernels
sum a row in SIMD lanes and K blocks counted from the row's first slot. A sequence placed
at slot ``s > 0`` of a shared row has its float32 sums grouped differently than alone, and
per-token int8 quantization turns that last-bit difference into whole int8 steps (score
changes of a few hundredths to tenths, seen over HTTP under load). At slot 0 with masked
slots only *after* it, the real values are summed in the same order whatever the row's
width and whatever runs in the other rows, so a request's logits are bit-identical alone
and in any batch (tested in ``tests/unit/test_batch_invariance.py``). Sharing rows saved
attention work on short sequences only; the width groups keep most of that.
:func:`attention_rows` (first-fit decreasing, several sequences per row) remains for
backends with static shapes, which need a bounded number of rows.

Pure: numpy in, a frozen :class:`AttentionLayout` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ATTENTION_GROUPS = 4
"""Attention groups the unpack/repack graph takes (inputs ``unpack_index_0 .. _3``)."""

SLOT_COST = 32
"""Cost of one attention slot that does not grow with the row's width (the gathers of its
Q/K/V and context, the mask), in units of one score element; see :func:`group_cost`."""

GROUP_COST = 64 * 64
"""Fixed cost of one more attention group (its extra kernels per layer), in score elements."""

BOUNDARIES = 16
"""Candidate group boundaries: lengths are bucketed into at most this many width classes."""


def _frozen(values) -> np.ndarray:
    arr = np.array(values, dtype=np.int64).reshape(-1)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class AttentionLayout:
    """Where each sequence of a batch sits in the attention rows (all arrays int64).

    Group ``g`` is a block of ``rows[g]`` rows of ``widths[g]`` slots. Sequence ``k`` sits
    in group ``group[k]``, row ``row[k]`` of that group, slots ``[start[k], start[k] +
    length_k)``, with 1-based segment id ``segment[k]`` within its row (the block-diagonal
    mask keeps segments apart). Groups are ordered widest first.
    """

    widths: np.ndarray  # [G] slots per attention row of group g (G <= ATTENTION_GROUPS)
    rows: np.ndarray  # [G] attention rows of group g (>= 1)
    group: np.ndarray  # [n] group of sequence k
    row: np.ndarray  # [n] row of sequence k within its group
    start: np.ndarray  # [n] first slot of sequence k within its row
    segment: np.ndarray  # [n] 1-based segment id of sequence k within its row

    def __post_init__(self) -> None:
        for name in ("widths", "rows", "group", "row", "start", "segment"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def n_groups(self) -> int:
        """Groups in use."""
        return int(self.widths.size)

    @property
    def slots(self) -> int:
        """Attention slots of all groups: sum of rows x width."""
        return int((self.rows * self.widths).sum())

    @property
    def score_elements(self) -> int:
        """Attention scores per head and layer: sum of rows x width**2."""
        return int((self.rows * self.widths * self.widths).sum())


def attention_rows(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack whole sequences into attention rows of ``width`` slots (first-fit decreasing).

    Returns ``(row, start, segment)`` per sequence: its row, first slot, and 1-based
    segment id within the row. Raises ``ValueError`` if a length exceeds ``width``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.size
    row = np.zeros(n, dtype=np.int64)
    start = np.zeros(n, dtype=np.int64)
    segment = np.zeros(n, dtype=np.int64)
    used: list[int] = []  # filled slots per open row
    count: list[int] = []  # sequences per open row
    for k in np.argsort(-lengths, kind="stable").tolist():
        length = int(lengths[k])
        if length > width:
            raise ValueError(f"sequence of {length} tokens does not fit attention rows of {width}")
        r = next((i for i, u in enumerate(used) if u + length <= width), len(used))
        if r == len(used):
            used.append(0)
            count.append(0)
        row[k], start[k] = r, used[r]
        used[r] += length
        count[r] += 1
        segment[k] = count[r]
    return row, start, segment


def group_cost(rows: int, width: int) -> int:
    """Modelled attention cost of one group: ``rows * width * (width + SLOT_COST) + GROUP_COST``.

    Score work (QK^T, softmax, PV) grows with ``width**2`` per row; gathering Q/K/V into
    the slots and the context back grows with the slots; each group adds fixed per-layer
    kernels. Units: one attention score element.
    """
    return int(rows) * int(width) * (int(width) + SLOT_COST) + GROUP_COST


def plan_attention(lengths: np.ndarray, max_groups: int = ATTENTION_GROUPS) -> AttentionLayout:
    """Attention layout for sequences of ``lengths`` (plan order), in at most ``max_groups`` groups.

    Contract: every sequence is placed exactly once, alone in its row at slot 0, in a group
    whose width is at least its length; every group has at least one row and one sequence;
    widths are strictly decreasing. With ``max_groups=1`` this is one group of rows as wide as the longest
    sequence. An empty batch gets one group of one row of width 1 and no sequences.

    The grouping: sort lengths longest first, bucket them into at most
    :data:`BOUNDARIES` width classes, and choose the split into contiguous groups that
    minimises the summed :func:`group_cost` (one row per sequence), by dynamic programming
    over the class boundaries. Every sequence then gets its own row of its group's width,
    at slot 0 with segment id 1 (rows in descending length order within the group).

    Raises ``ValueError`` for a length < 1 or ``max_groups`` < 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if max_groups < 1:
        raise ValueError(f"max_groups must be >= 1, got {max_groups}")
    n = lengths.size
    if n == 0:
        return AttentionLayout([1], [1], [], [], [], [])
    if int(lengths.min()) < 1:
        raise ValueError(f"sequence lengths must be >= 1, got {int(lengths.min())}")
    order = np.argsort(-lengths, kind="stable")
    srt = lengths[order]
    # candidate boundaries: where the width class changes (classes of ceil(max / BOUNDARIES))
    step = max(1, -(-int(srt[0]) // BOUNDARIES))
    cls = (srt + step - 1) // step
    cuts = [0] + (np.flatnonzero(cls[1:] != cls[:-1]) + 1).tolist() + [n]
    k = len(cuts) - 1
    groups = min(max_groups, k)
    inf = float("inf")
    cost = {}
    for a in range(k):
        for b in range(a + 1, k + 1):
            i, j = cuts[a], cuts[b]
            cost[a, b] = group_cost(j - i, int(srt[i]))  # one row per sequence
    best = [[inf] * (k + 1) for _ in range(groups + 1)]
    back = [[0] * (k + 1) for _ in range(groups + 1)]
    best[0][0] = 0.0
    for g in range(1, groups + 1):
        for b in range(1, k + 1):
            for a in range(g - 1, b):
                c = best[g - 1][a] + cost[a, b]
                if c < best[g][b]:
                    best[g][b], back[g][b] = c, a
    g = min(range(1, groups + 1), key=lambda m: best[m][k])
    bounds = [k]
    while g > 0:
        bounds.append(back[g][bounds[-1]])
        g -= 1
    bounds.reverse()
    widths, rows_per_group = [], []
    group = np.zeros(n, dtype=np.int64)
    row = np.zeros(n, dtype=np.int64)
    start = np.zeros(n, dtype=np.int64)
    segment = np.zeros(n, dtype=np.int64)
    for gi, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        members = order[cuts[a] : cuts[b]]
        width = int(srt[cuts[a]])
        # one sequence per row, at slot 0 (see the module docstring: batch invariance)
        group[members], row[members], start[members], segment[members] = (
            gi,
            np.arange(members.size),
            0,
            1,
        )
        widths.append(width)
        rows_per_group.append(int(members.size))
    return AttentionLayout(widths, rows_per_group, group, row, start, segment)
