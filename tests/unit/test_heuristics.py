"""RowAllocator: first_fit / best_fit / next_fit on hand-made cases, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.policy import ALGORITHMS, RowAllocator


def place_all(alloc: RowAllocator, lengths):
    return [alloc.place(length) for length in lengths]


def test_first_fit_takes_lowest_row_with_room():
    a = RowAllocator(3, 10, "first_fit")
    assert place_all(a, [6, 7, 3, 3, 1]) == [(0, 0), (1, 0), (0, 6), (1, 7), (0, 9)]
    assert a.free == (0, 0, 10)
    assert a.used_rows == 2


def test_best_fit_takes_tightest_row():
    # rows after [6, 7]: free (4, 3). A 3 fits both: first_fit -> row 0, best_fit -> row 1.
    ff = RowAllocator(3, 10, "first_fit")
    bf = RowAllocator(3, 10, "best_fit")
    place_all(ff, [6, 7])
    place_all(bf, [6, 7])
    assert ff.place(3) == (0, 6)
    assert bf.place(3) == (1, 7)
    assert bf.free == (4, 0, 10)
    # then a 4: best_fit still has row 0 with exactly 4; first_fit has only row 1 (3 free) -> new row
    assert bf.place(4) == (0, 6)
    assert ff.place(4) == (2, 0)


def test_best_fit_ties_go_to_lowest_row():
    a = RowAllocator(3, 10, "best_fit")
    place_all(a, [7, 7, 7])  # free (3, 3, 3)
    assert a.place(2) == (0, 7)
    assert a.place(2) == (1, 7)  # row 0 now has 1 free; rows 1, 2 have 3


def test_best_fit_prefers_used_row_over_fresh_row():
    a = RowAllocator(2, 10, "best_fit")
    a.place(1)  # row 0 free 9
    assert a.place(9) == (0, 1)
    assert a.used_rows == 1


def test_next_fit_never_goes_back():
    a = RowAllocator(3, 10, "next_fit")
    assert place_all(a, [6, 7, 3, 3, 1]) == [(0, 0), (1, 0), (1, 7), (2, 0), (2, 3)]
    # row 0 still has 4 free but is closed for good
    assert a.free == (4, 0, 6)
    assert a.place(7) is None
    assert a.free == (4, 0, 6)  # unchanged after a failed place


def test_next_fit_none_when_rows_run_out():
    a = RowAllocator(2, 10, "next_fit")
    assert place_all(a, [8, 8, 8]) == [(0, 0), (1, 0), None]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_full_batch_returns_none_and_keeps_state(algorithm):
    a = RowAllocator(2, 5, algorithm)
    assert place_all(a, [5, 5]) == [(0, 0), (1, 0)]
    assert a.place(1) is None
    assert a.free == (0, 0) and a.used_rows == 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_too_long_is_none_zero_raises(algorithm):
    a = RowAllocator(2, 5, algorithm)
    assert a.place(6) is None and a.find(6) is None
    with pytest.raises(ValueError, match="0"):
        a.place(0)
    assert a.used_rows == 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reset(algorithm):
    a = RowAllocator(2, 5, algorithm)
    place_all(a, [3, 4])
    a.reset()
    assert a.used_rows == 0 and a.free == (5, 5) and a.used_slots == 0


def test_find_does_not_place():
    a = RowAllocator(2, 5, "first_fit")
    assert a.find(3) == 0
    assert a.used_rows == 0 and a.free == (5, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="worst_fit"):
        RowAllocator(2, 5, "worst_fit")
    with pytest.raises(ValueError, match="0"):
        RowAllocator(0, 5)
    with pytest.raises(ValueError, match="0"):
        RowAllocator(2, 0)


def _reference(algorithm, n_rows, row_len, lengths):
    """Straightforward restatement of the three rules, for comparison."""
    free = [row_len] * n_rows
    used = 0
    out = []
    for length in lengths:
        cands = [r for r in range(n_rows) if free[r] >= length]
        if algorithm == "first_fit":
            row = cands[0] if cands else None
        elif algorithm == "best_fit":
            row = min(cands, key=lambda r: (free[r], r)) if cands else None
        else:
            cur = used - 1
            if cur >= 0 and free[cur] >= length:
                row = cur
            else:
                row = used if used < n_rows and free[used] >= length else None
        if row is None:
            out.append(None)
            continue
        out.append((row, row_len - free[row]))
        free[row] -= length
        used = max(used, row + 1)
    return out


@settings(max_examples=150, deadline=None)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    n_rows=st.integers(1, 6),
    row_len=st.integers(1, 24),
    data=st.data(),
)
def test_matches_reference_and_invariants(algorithm, n_rows, row_len, data):
    lengths = data.draw(st.lists(st.integers(1, row_len), max_size=30))
    a = RowAllocator(n_rows, row_len, algorithm)
    got = place_all(a, lengths)
    assert got == _reference(algorithm, n_rows, row_len, lengths)
    # no overlap, rows in range, used rows are a prefix
    spans: dict[int, list[tuple[int, int]]] = {}
    for length, slot in zip(lengths, got):
        if slot is None:
            continue
        row, start = slot
        assert 0 <= row < a.used_rows <= n_rows
        assert start + length <= row_len
        spans.setdefault(row, []).append((start, start + length))
    assert sorted(spans) == list(range(a.used_rows))
    for row, items in spans.items():
        items.sort()
        assert items[0][0] == 0
        for (_s0, e0), (s1, _e1) in zip(items, items[1:]):
            assert s1 == e0, "sequences are laid back to back"
        assert a.free[row] == row_len - items[-1][1]
