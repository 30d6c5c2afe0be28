"""Offline histogram packing of the SPFHP class.

Shortest-Pack-First Histogram Packing (Krell et al. 2021, "Efficient Sequence
Packing without Cross-contamination") packs a whole workload into rows of
``row_len`` slots without looking at individual sequences: it only needs the
histogram of lengths, so its cost depends on ``row_len`` and on the number of
distinct pack *strategies*, not on the number of sequences.

Idea, as implemented here:

1. Count the sequences of every length ``1 .. row_len``.
2. Keep open *strategies*: a strategy is a multiset of lengths (one pack
   pattern) together with how many packs follow it. Open strategies are
   bucketed by the space they have left.
3. Visit the lengths longest first. For the ``n`` sequences of length ``L``,
   repeatedly take the open strategy with the *most* space left that still
   fits ``L`` (the shortest pack: the paper's "shortest pack first" choice;
   ``choice="best"`` takes the least space left instead) and extend
   ``min(count, n)`` of its packs by ``L`` (splitting the strategy when only
   some of its packs are extended). When no open strategy fits, the remaining
   ``n`` sequences start new packs, each holding as many copies of ``L`` as fit
   (so a surplus of short sequences does not end up one per row).
4. A strategy is closed when it is full or holds ``max_per_row`` sequences.
5. Expand the strategies back to concrete sequence indices: each pack of a
   strategy takes the next unused sequence of each of its lengths.

Lengths are drawn from a small range, so there are few distinct strategies and
the whole workload (100k sequences) packs in well under a second.
"""

from __future__ import annotations

import bisect

import numpy as np

__all__ = ["pack_spfhp", "packing_efficiency", "validate_lengths"]


def validate_lengths(lengths: np.ndarray, seq_len: int | None) -> np.ndarray:
    """Return ``lengths`` as a 1-D int64 array; raise ``ValueError`` on a bad entry.

    Every length must be an integer in ``[1, seq_len]`` (no upper bound when
    ``seq_len`` is None). The message names the first offending index and value.
    """
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        bad = np.flatnonzero(as_int != arr)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"lengths[{i}] = {arr[i]!r} is not an integer")
        arr = as_int
    arr = arr.astype(np.int64, copy=False)
    hi = np.iinfo(np.int64).max if seq_len is None else int(seq_len)
    bad = np.flatnonzero((arr < 1) | (arr > hi))
    if bad.size:
        i = int(bad[0])
        bound = "1" if seq_len is None else f"1 and <= seq_len={seq_len}"
        raise ValueError(f"lengths[{i}] = {int(arr[i])} is out of range: must be >= {bound}")
    return arr


def packing_efficiency(lengths: np.ndarray, n_rows: int, row_len: int) -> float:
    """Fraction of the ``n_rows * row_len`` slots holding real tokens (1.0 when nothing is packed)."""
    if n_rows == 0:
        return 1.0
    return float(np.sum(lengths, dtype=np.int64)) / float(n_rows * row_len)


def _strategies(
    hist: np.ndarray, row_len: int, max_per_row: int, choice: str
) -> list[tuple[int, tuple[int, ...]]]:
    """Histogram -> list of ``(count, pack)``; ``pack`` is a tuple of lengths, longest first."""
    shortest_first = choice == "shortest"
    closed: list[tuple[int, tuple[int, ...]]] = []
    open_by_space: dict[int, list[list]] = {}  # space left -> [[count, pack], ...]
    spaces: list[int] = []  # sorted keys of open_by_space

    def add(count: int, pack: tuple[int, ...], space: int) -> None:
        if space == 0 or len(pack) >= max_per_row:
            closed.append((count, pack))
            return
        bucket = open_by_space.get(space)
        if bucket is None:
            open_by_space[space] = [[count, pack]]
            bisect.insort(spaces, space)
        else:
            bucket.append([count, pack])

    for length in range(row_len, 0, -1):
        n = int(hist[length])
        while n > 0:
            if not spaces or spaces[-1] < length:
                # Nothing open fits: new packs, each holding as many copies as fit.
                per_pack = min(row_len // length, max_per_row)
                full, rest = divmod(n, per_pack)
                if full:
                    add(full, (length,) * per_pack, row_len - per_pack * length)
                if rest:
                    add(1, (length,) * rest, row_len - rest * length)
                break
            if shortest_first:
                pos = len(spaces) - 1  # shortest pack: the most space left
            else:
                pos = bisect.bisect_left(spaces, length)  # best fit: least space that fits
            space = spaces[pos]
            bucket = open_by_space[space]
            count, pack = bucket[-1]
            take = min(count, n)
            if count > take:
                bucket[-1][0] = count - take
            else:
                bucket.pop()
                if not bucket:
                    del open_by_space[space]
                    del spaces[pos]
            add(take, pack + (length,), space - length)
            n -= take

    for space in spaces:
        closed.extend((count, pack) for count, pack in open_by_space[space])
    return closed


def pack_spfhp(
    lengths: np.ndarray,
    row_len: int,
    max_per_row: int | None = None,
    *,
    choice: str = "shortest",
) -> list[np.ndarray]:
    """Pack sequences into rows of ``row_len`` slots with SPFHP.

    Args:
        lengths: ``[n]`` sequence lengths, each in ``[1, row_len]``.
        row_len: slots per row.
        max_per_row: most sequences per row (None: unbounded).
        choice: which open strategy takes a length group: ``"shortest"`` (the
            paper's shortest pack first: the most space left) or ``"best"``
            (the least space left that still fits). Both land within a few rows
            of the Martello-Toth L2 lower bound on the 'seed' workload;
            ``"shortest"`` copes slightly better with a tight ``max_per_row``.

    Returns:
        Rows, each an int64 array of indices into ``lengths`` (longest sequence
        first). Every index appears in exactly one row; each row's total length
        is ``<= row_len`` and it holds at most ``max_per_row`` indices. The
        result is deterministic for given lengths.

    Raises:
        ValueError: for a length outside ``[1, row_len]`` or a bad argument.
    """
    if choice not in ("shortest", "best"):
        raise ValueError(f"choice must be 'shortest' or 'best', got {choice!r}")
    row_len = int(row_len)
    if row_len < 1:
        raise ValueError(f"row_len must be >= 1, got {row_len}")
    if max_per_row is None:
        max_per_row = row_len  # a row never holds more than row_len sequences
    elif int(max_per_row) < 1:
        raise ValueError(f"max_per_row must be >= 1 or None, got {max_per_row!r}")
    max_per_row = int(max_per_row)
    lengths = validate_lengths(lengths, row_len)
    if lengths.size == 0:
        return []

    hist = np.bincount(lengths, minlength=row_len + 1)
    strategies = _strategies(hist, row_len, max_per_row, choice)

    # Indices grouped by length; next_free[L] is the next unused position of length L.
    order = np.argsort(lengths, kind="stable")
    first = np.concatenate(([0], np.cumsum(hist)))  # order[first[L]:first[L+1]] have length L
    next_free = first[:-1].copy()

    rows: list[np.ndarray] = []
    for count, pack in strategies:
        cols = []
        for length in pack:
            lo = next_free[length]
            cols.append(order[lo : lo + count])
            next_free[length] = lo + count
        block = np.stack(cols, axis=1) if len(cols) > 1 else cols[0][:, None]
        rows.extend(block)
    return rows
