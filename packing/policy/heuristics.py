"""Online row-placement heuristics for attention-mask packing.

A batch has ``n_rows`` rows of ``row_len`` slots. Sequences arrive one at a time
and each is placed whole into one row (a sequence never crosses a row), right
after whatever that row already holds. :class:`RowAllocator` implements the
three classic online bin-packing rules PopRT's PackRunner offers:

* ``first_fit``: the lowest-index row that still has room;
* ``best_fit``: the row with the least room left that still fits (ties go to the
  lowest index);
* ``next_fit``: only the current row; when the sequence does not fit there the
  next row is opened and every earlier row is closed for good.

Rows open lazily: a row is *used* once something is placed in it. With all three
rules an unused row is chosen only when no used row fits, and rows are opened in
index order, so the used rows are always the prefix ``0 .. used_rows - 1``.

The allocator is plain Python over lists: with ~16 rows a Python loop is faster
than numpy's per-call overhead. ``place`` is O(used_rows).
"""

from __future__ import annotations

from .config import ALGORITHMS, DEFAULT_ALGORITHM


class RowAllocator:
    """Places sequences into ``n_rows`` rows of ``row_len`` slots with one heuristic.

    Args:
        n_rows: rows available (>= 1).
        row_len: slots per row (>= 1).
        algorithm: one of ``"first_fit"``, ``"best_fit"``, ``"next_fit"``
            (default :data:`~packing.policy.config.DEFAULT_ALGORITHM`).

    Raises:
        ValueError: on a bad argument.
    """

    __slots__ = ("n_rows", "row_len", "algorithm", "_free", "_used", "_find")

    def __init__(self, n_rows: int, row_len: int, algorithm: str = DEFAULT_ALGORITHM) -> None:
        if int(n_rows) < 1:
            raise ValueError(f"n_rows must be >= 1, got {n_rows!r}")
        if int(row_len) < 1:
            raise ValueError(f"row_len must be >= 1, got {row_len!r}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.n_rows = int(n_rows)
        self.row_len = int(row_len)
        self.algorithm = algorithm
        self._find = {
            "first_fit": self._first_fit,
            "best_fit": self._best_fit,
            "next_fit": self._next_fit,
        }[algorithm]
        self._free: list[int] = [self.row_len] * self.n_rows
        self._used = 0

    # -- state ---------------------------------------------------------------

    @property
    def used_rows(self) -> int:
        """Number of rows holding at least one sequence (they are rows ``0 .. used_rows-1``)."""
        return self._used

    @property
    def free(self) -> tuple[int, ...]:
        """Free slots of every row, ``n_rows`` entries (unused rows have ``row_len``)."""
        return tuple(self._free)

    @property
    def used_slots(self) -> int:
        """Slots taken in all rows together."""
        return self.n_rows * self.row_len - sum(self._free)

    def reset(self) -> None:
        """Empty every row (start a new batch)."""
        self._free = [self.row_len] * self.n_rows
        self._used = 0

    # -- placement -----------------------------------------------------------

    def find(self, length: int) -> int | None:
        """Return the row ``place(length)`` would choose, without placing anything.

        Returns ``None`` when the heuristic allows no row for it (including a
        ``length`` longer than ``row_len``). Raises ``ValueError`` if ``length < 1``.
        """
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length!r}")
        if length > self.row_len:
            return None
        return self._find(length)

    def place(self, length: int) -> tuple[int, int] | None:
        """Place a sequence of ``length`` slots; return ``(row, start)`` or ``None``.

        ``start`` is the first slot of the sequence within ``row`` (the row's
        previous fill). ``None`` means it fits in no row the heuristic allows;
        the allocator is then left unchanged. Raises ``ValueError`` if ``length < 1``.
        """
        row = self.find(length)
        if row is None:
            return None
        start = self.row_len - self._free[row]
        self._free[row] -= length
        if row >= self._used:
            self._used = row + 1
        return row, start

    def _first_fit(self, length: int) -> int | None:
        free = self._free
        for row in range(self._used):
            if free[row] >= length:
                return row
        return self._used if self._used < self.n_rows else None

    def _best_fit(self, length: int) -> int | None:
        free = self._free
        best = None
        best_free = self.row_len + 1
        for row in range(self._used):
            f = free[row]
            if length <= f < best_free:
                best, best_free = row, f
                if f == length:
                    break
        if best is not None:
            return best
        return self._used if self._used < self.n_rows else None

    def _next_fit(self, length: int) -> int | None:
        current = self._used - 1
        if current >= 0 and self._free[current] >= length:
            return current
        return self._used if self._used < self.n_rows else None

    def __repr__(self) -> str:
        return (
            f"RowAllocator(n_rows={self.n_rows}, row_len={self.row_len}, "
            f"algorithm={self.algorithm!r}, used_rows={self._used})"
        )
