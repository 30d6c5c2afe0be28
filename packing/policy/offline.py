"""Whole-workload planners: all lengths known up front, plans out.

Each planner takes the lengths of a whole workload and returns the list of
batch plans that covers it, every sequence exactly once. ``seq_ids`` in the
plans are indices into ``lengths``, or the matching entries of the optional
``seq_ids`` argument (same size as ``lengths``).

* :func:`plan_padded` -- the spec's "Original": arrival order, one sequence per
  row, every row padded to ``seq_len``.
* :func:`plan_dynamic_padding` -- one sequence per row, each batch padded only
  to its own longest sequence (optionally sorting by length first).
* :func:`plan_offline_attention_mask` -- SPFHP rows (a sequence never crosses a
  row), grouped into batches of at most ``batch_size`` rows and
  ``max_valid_num`` sequences.
* :func:`plan_offline_unpack_repack` -- arrival order, tokens end to end, a
  batch closes at its token capacity or at ``max_valid_num`` sequences.

All planners raise ``ValueError`` (naming the index and the value) for a
length ``< 1`` or ``> seq_len``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from .attention import ATTENTION_GROUPS
from .config import PackingConfig
from .plans import AttentionMaskPlan, PaddedPlan, UnpackRepackPlan
from .spfhp import pack_spfhp, validate_lengths

__all__ = [
    "plan_padded",
    "plan_dynamic_padding",
    "plan_offline_attention_mask",
    "plan_offline_unpack_repack",
]


def _ids(lengths: np.ndarray, seq_ids: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if seq_ids is None:
        return np.arange(lengths.size, dtype=np.int64)
    ids = np.asarray(seq_ids, dtype=np.int64).reshape(-1)
    if ids.size != lengths.size:
        raise ValueError(f"seq_ids has {ids.size} entries but lengths has {lengths.size}")
    return ids


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def plan_padded(
    lengths: np.ndarray,
    seq_len: int,
    batch_size: int,
    seq_ids: Sequence[int] | np.ndarray | None = None,
) -> list[PaddedPlan]:
    """Arrival-order batches of ``batch_size`` sequences, every row padded to ``seq_len``.

    The last batch may hold fewer sequences. Raises ``ValueError`` for a length
    outside ``[1, seq_len]``.
    """
    lengths = validate_lengths(lengths, int(seq_len))
    batch_size = _positive("batch_size", batch_size)
    ids = _ids(lengths, seq_ids)
    return [
        PaddedPlan(
            seq_len=int(seq_len),
            seq_ids=ids[i : i + batch_size],
            lengths=lengths[i : i + batch_size],
        )
        for i in range(0, lengths.size, batch_size)
    ]


def plan_dynamic_padding(
    lengths: np.ndarray,
    batch_size: int,
    sort: bool = False,
    seq_ids: Sequence[int] | np.ndarray | None = None,
    *,
    seq_len: int | None = None,
) -> list[PaddedPlan]:
    """Batches of ``batch_size`` sequences, each padded to its own longest sequence.

    Batches follow arrival order, or, with ``sort=True``, the sequences are
    first ordered longest first (stable, so equal lengths keep arrival order);
    that groups similar lengths and minimises padding. Each plan's ``seq_len``
    is the longest length in that batch. ``seq_len`` (optional) is the largest
    length accepted. Raises ``ValueError`` for a length ``< 1`` or ``> seq_len``.
    """
    lengths = validate_lengths(lengths, seq_len)
    batch_size = _positive("batch_size", batch_size)
    ids = _ids(lengths, seq_ids)
    if sort:
        order = np.argsort(-lengths, kind="stable")
        lengths, ids = lengths[order], ids[order]
    plans = []
    for i in range(0, lengths.size, batch_size):
        chunk = lengths[i : i + batch_size]
        plans.append(
            PaddedPlan(seq_len=int(chunk.max()), seq_ids=ids[i : i + batch_size], lengths=chunk)
        )
    return plans


def _group_rows(counts: np.ndarray, batch_size: int, max_valid_num: int) -> list[list[int]]:
    """Group rows (``counts[r]`` sequences each) into batches of <= batch_size rows
    and <= max_valid_num sequences, aiming at the fewest batches.

    Start with the lower bound ``max(ceil(rows / batch_size), ceil(seqs /
    max_valid_num))`` empty batches, visit rows fullest first and put each into
    the batch holding the fewest sequences that still has a free row (ties: the
    lowest batch id). That spreads many-sequence rows evenly, so neither limit
    binds early. If even that batch cannot take the row's sequences, a new batch
    is opened.
    """
    n_rows = int(counts.size)
    if n_rows == 0:
        return []
    n_batches = max(-(-n_rows // batch_size), -(-int(counts.sum()) // max_valid_num))
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    heap = [(0, b) for b in range(n_batches)]  # (sequences held, batch id), batches with a free row
    for row in np.argsort(-counts, kind="stable").tolist():
        c = int(counts[row])
        if heap and heap[0][0] + c <= max_valid_num:
            held, b = heapq.heappop(heap)
        else:
            held, b = 0, len(batches)
            batches.append([])
        batches[b].append(row)
        if len(batches[b]) < batch_size:
            heapq.heappush(heap, (held + c, b))
    return [b for b in batches if b]


def plan_offline_attention_mask(
    lengths: np.ndarray,
    seq_len: int,
    batch_size: int,
    max_valid_num: int,
    seq_ids: Sequence[int] | np.ndarray | None = None,
) -> list[AttentionMaskPlan]:
    """Pack the workload with SPFHP into rows, then group the rows into batches.

    Rows come from :func:`pack_spfhp` with ``max_per_row = max_valid_num``.
    Rows are grouped into batches of at most ``batch_size`` rows and at most
    ``max_valid_num`` sequences, fullest rows first, each into the batch
    holding the fewest sequences (see :func:`_group_rows`). Within a batch, rows are numbered ``0 .. n_rows-1`` and the
    sequences of a row are laid left to right from slot 0, row by row, so plan
    order equals ``(row, start)`` order. Raises ``ValueError`` for a length
    outside ``[1, seq_len]`` or a bad size argument.
    """
    cfg = PackingConfig(
        seq_len=seq_len, batch_size=batch_size, max_valid_num=max_valid_num, mode="attention_mask"
    )
    lengths = validate_lengths(lengths, cfg.seq_len)
    ids = _ids(lengths, seq_ids)
    rows = pack_spfhp(lengths, cfg.seq_len, max_per_row=cfg.max_valid_num)
    counts = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
    plans = []
    for batch in _group_rows(counts, cfg.batch_size, cfg.max_valid_num):
        members = [rows[r] for r in batch]
        idx = np.concatenate(members)
        lens = lengths[idx]
        row_of = np.repeat(np.arange(len(members), dtype=np.int64), counts[batch])
        # start = exclusive cumsum of lengths, restarted at each row
        ends = np.cumsum(lens)
        row_first = np.concatenate(([0], np.cumsum(counts[batch])[:-1]))
        row_base = (ends - lens)[row_first]
        starts = ends - lens - np.repeat(row_base, counts[batch])
        plans.append(
            AttentionMaskPlan(
                seq_len=cfg.seq_len,
                n_rows=len(members),
                seq_ids=ids[idx],
                rows=row_of,
                starts=starts,
                lengths=lens,
            )
        )
    return plans


def plan_offline_unpack_repack(
    lengths: np.ndarray,
    seq_len: int,
    batch_size: int,
    max_valid_num: int,
    max_tokens: int | None = None,
    seq_ids: Sequence[int] | np.ndarray | None = None,
    attention_groups: int = ATTENTION_GROUPS,
) -> list[UnpackRepackPlan]:
    """Arrival-order batches with the sequences' tokens laid end to end.

    A batch closes when the next sequence would take it past its capacity
    (``max_tokens`` or ``batch_size * seq_len`` real tokens) or when it holds
    ``max_valid_num`` sequences. A sequence may cross the boundary between two
    rows of ``seq_len``. Raises ``ValueError`` for a length outside
    ``[1, seq_len]`` or a bad size argument (``max_tokens`` must lie in
    ``[seq_len, batch_size * seq_len]``). ``attention_groups`` is passed to every
    plan (how many attention width groups its layout may use).
    """
    cfg = PackingConfig(
        seq_len=seq_len,
        batch_size=batch_size,
        max_valid_num=max_valid_num,
        mode="unpack_repack",
        max_tokens=max_tokens,
        attention_groups=attention_groups,
    )
    lengths = validate_lengths(lengths, cfg.seq_len)
    ids = _ids(lengths, seq_ids)
    capacity = cfg.capacity_tokens
    plans = []
    start = 0
    tokens = 0
    for i, length in enumerate(lengths.tolist()):
        if i > start and (tokens + length > capacity or i - start == cfg.max_valid_num):
            plans.append(_unpack_plan(cfg, ids[start:i], lengths[start:i]))
            start, tokens = i, 0
        tokens += length
    if lengths.size:
        plans.append(_unpack_plan(cfg, ids[start:], lengths[start:]))
    return plans


def _unpack_plan(cfg: PackingConfig, ids: np.ndarray, lens: np.ndarray) -> UnpackRepackPlan:
    cu = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=cu[1:])
    return UnpackRepackPlan(
        seq_len=cfg.seq_len,
        capacity=cfg.capacity_tokens,
        seq_ids=ids,
        cu_seqlens=cu,
        max_valid_num=cfg.max_valid_num,
        attention_groups=cfg.attention_groups,
    )
