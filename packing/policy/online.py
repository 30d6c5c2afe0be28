"""Online packer: sequences arrive one by one and are placed as they come.

:class:`OnlinePacker` follows PopRT PackRunner's placement. It keeps one *current* batch
and adds each arriving sequence to it:

* ``mode="attention_mask"``: a :class:`~packing.policy.heuristics.RowAllocator`
  (``batch_size`` rows of ``seq_len`` slots, ``config.algorithm``) places the
  sequence into a row; it fits when the allocator finds a row and the batch's
  real tokens stay within ``config.capacity_tokens``.
* ``mode="unpack_repack"``: tokens are laid end to end; it fits while the
  batch's real tokens stay within ``config.capacity_tokens``.

A batch is sent (returned as a plan) when

(a) it holds ``max_valid_num`` sequences (sent by the ``add`` that filled it), or
(b) an arriving sequence does not fit: the current batch is sent and the
    arriving sequence starts the next batch, or
(c) the caller flushes (:meth:`OnlinePacker.flush`).

*When* sequences arrive is admission's business (:mod:`packing.runtime.admission`:
``@serve.batch``'s count and timer); :func:`packing.policy.collate.collate` runs this packer
over what admission collected. The packer is pure state: no clock, no threads, no locks.
"""

from __future__ import annotations

import numbers

import numpy as np

from .config import PackingConfig
from .heuristics import RowAllocator
from .plans import AttentionMaskPlan, Plan, UnpackRepackPlan

__all__ = ["OnlinePacker"]


class OnlinePacker:
    """Packs a stream of sequences into batch plans under ``config``.

    Args:
        config: sizes, mode, heuristic and token budget.
    """

    def __init__(self, config: PackingConfig) -> None:
        self.config = config
        self._capacity = config.capacity_tokens
        self._attention = config.mode == "attention_mask"
        self._alloc = (
            RowAllocator(config.batch_size, config.seq_len, config.algorithm)
            if self._attention
            else None
        )
        self._reset()

    def _reset(self) -> None:
        self._ids: list[int] = []
        self._lengths: list[int] = []
        self._rows: list[int] = []
        self._starts: list[int] = []
        self._tokens = 0
        if self._alloc is not None:
            self._alloc.reset()

    # -- state ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Number of sequences in the current (unsent) batch."""
        return len(self._ids)

    @property
    def pending_tokens(self) -> int:
        """Real tokens in the current batch."""
        return self._tokens

    # -- stream --------------------------------------------------------------

    def add(self, seq_id: int, length: int) -> list[Plan]:
        """Add one sequence; return the plans that became ready (usually ``[]`` or one).

        If the sequence does not fit in the current
        batch, that batch is returned first and the sequence starts a new one;
        a batch reaching ``max_valid_num`` sequences is returned at once. So the
        result holds at most two plans, in send order.

        Raises:
            ValueError: ``length`` is not an integer in ``[1, seq_len]``; the
                packer is left unchanged.
        """
        seq_len = self.config.seq_len
        if (
            not isinstance(length, numbers.Integral)
            or isinstance(length, bool)
            or not 1 <= length <= seq_len
        ):
            raise ValueError(
                f"sequence {seq_id!r} has length {length!r}; must be an integer in [1, seq_len={seq_len}]"
            )
        length = int(length)

        ready: list[Plan] = []
        slot = self._try_place(length)
        if slot is None:
            ready.append(self._take())
            slot = self._try_place(length)
            assert (
                slot is not None
            )  # an empty batch takes any length <= seq_len (capacity >= seq_len)
        self._ids.append(int(seq_id))
        self._lengths.append(length)
        self._rows.append(slot[0])
        self._starts.append(slot[1])
        self._tokens += length
        if len(self._ids) >= self.config.max_valid_num:
            ready.append(self._take())
        return ready

    def _try_place(self, length: int) -> tuple[int, int] | None:
        """Reserve room for ``length`` in the current batch; None if it does not fit."""
        if self._tokens + length > self._capacity:
            return None
        if self._alloc is None:
            return (0, self._tokens)  # unpack/repack: flat offset
        return self._alloc.place(length)

    def flush(self) -> Plan | None:
        """Send whatever is pending now (None when nothing is)."""
        return self._take() if self._ids else None

    # -- plans ---------------------------------------------------------------

    def _take(self) -> Plan:
        cfg = self.config
        ids = np.array(self._ids, dtype=np.int64)
        lengths = np.array(self._lengths, dtype=np.int64)
        if self._alloc is None:
            cu = np.zeros(lengths.size + 1, dtype=np.int64)
            np.cumsum(lengths, out=cu[1:])
            plan: Plan = UnpackRepackPlan(
                seq_len=cfg.seq_len,
                capacity=self._capacity,
                seq_ids=ids,
                cu_seqlens=cu,
                max_valid_num=cfg.max_valid_num,
                attention_groups=cfg.attention_groups,
            )
        else:
            rows = np.array(self._rows, dtype=np.int64)
            starts = np.array(self._starts, dtype=np.int64)
            order = np.lexsort((starts, rows))
            plan = AttentionMaskPlan(
                seq_len=cfg.seq_len,
                n_rows=self._alloc.used_rows,
                seq_ids=ids[order],
                rows=rows[order],
                starts=starts[order],
                lengths=lengths[order],
            )
        self._reset()
        return plan

    def __repr__(self) -> str:
        return f"OnlinePacker({self.config!r}, pending={self.pending})"
