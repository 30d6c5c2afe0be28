"""Online packer: requests arrive one by one, batches leave when full or overdue.

:class:`OnlinePacker` follows PopRT PackRunner's semantics. It keeps one
*current* batch and adds each arriving sequence to it:

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
(c) its oldest request has waited ``timeout_s`` (:meth:`OnlinePacker.poll`), or
(d) the caller flushes (:meth:`OnlinePacker.flush`).

``add`` never looks at the clock except to stamp an arrival without an explicit
``arrival_s``; timeouts are the caller's to poll (a runner's loop typically
waits ``time_to_deadline()`` for the next request, then polls). The packer is
pure state: no threads, no locks; callers serialise access.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable

import numpy as np

from .config import PackingConfig
from .heuristics import RowAllocator
from .plans import AttentionMaskPlan, Plan, UnpackRepackPlan

__all__ = ["OnlinePacker"]


class OnlinePacker:
    """Packs a stream of sequences into batch plans under ``config``.

    Args:
        config: sizes, mode, heuristic and timeout.
        clock: monotonic clock in seconds, used when ``arrival_s`` / ``now``
            are not given (inject a fake one in tests).
    """

    def __init__(self, config: PackingConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._capacity = config.capacity_tokens
        self._attention = config.mode == "attention_mask"
        self._alloc = RowAllocator(config.batch_size, config.seq_len, config.algorithm) if self._attention else None
        self._reset()

    def _reset(self) -> None:
        self._ids: list[int] = []
        self._lengths: list[int] = []
        self._rows: list[int] = []
        self._starts: list[int] = []
        self._tokens = 0
        self._oldest = math.inf
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

    @property
    def oldest_arrival(self) -> float | None:
        """Arrival time of the oldest pending request, or None when nothing is pending."""
        return self._oldest if self._ids else None

    # -- stream --------------------------------------------------------------

    def add(self, seq_id: int, length: int, arrival_s: float | None = None) -> list[Plan]:
        """Add one sequence; return the plans that became ready (usually ``[]`` or one).

        ``arrival_s`` is the request's arrival time on the packer's clock
        (default: ``clock()`` now). If the sequence does not fit in the current
        batch, that batch is returned first and the sequence starts a new one;
        a batch reaching ``max_valid_num`` sequences is returned at once. So the
        result holds at most two plans, in send order.

        Raises:
            ValueError: ``length`` is not an integer in ``[1, seq_len]``; the
                packer is left unchanged.
        """
        seq_len = self.config.seq_len
        if not isinstance(length, numbers.Integral) or isinstance(length, bool) or not 1 <= length <= seq_len:
            raise ValueError(f"sequence {seq_id!r} has length {length!r}; must be an integer in [1, seq_len={seq_len}]")
        length = int(length)
        t = float(self.clock() if arrival_s is None else arrival_s)

        ready: list[Plan] = []
        slot = self._try_place(length)
        if slot is None:
            ready.append(self._take())
            slot = self._try_place(length)
            assert slot is not None  # an empty batch takes any length <= seq_len (capacity >= seq_len)
        self._ids.append(int(seq_id))
        self._lengths.append(length)
        self._rows.append(slot[0])
        self._starts.append(slot[1])
        self._tokens += length
        if t < self._oldest:
            self._oldest = t
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

    def poll(self, now: float | None = None) -> Plan | None:
        """Return the current batch if its oldest request has waited ``>= timeout_s``, else None.

        ``now`` defaults to ``clock()``.
        """
        if not self._ids:
            return None
        now = self.clock() if now is None else now
        if now >= self._oldest + self.config.timeout_s:
            return self._take()
        return None

    def time_to_deadline(self, now: float | None = None) -> float | None:
        """Seconds until the oldest pending request times out.

        0.0 when already overdue, None when nothing is pending. ``now`` defaults
        to ``clock()``.
        """
        if not self._ids:
            return None
        now = self.clock() if now is None else now
        return max(0.0, self._oldest + self.config.timeout_s - now)

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
            plan: Plan = UnpackRepackPlan(seq_len=cfg.seq_len, capacity=self._capacity, seq_ids=ids,
                                          cu_seqlens=cu, max_valid_num=cfg.max_valid_num,
                                          attention_groups=cfg.attention_groups)
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
