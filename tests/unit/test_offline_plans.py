"""Whole-workload planners: coverage, limits, layouts, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.policy import (
    AttentionMaskPlan,
    PaddedPlan,
    UnpackRepackPlan,
    plan_dynamic_padding,
    plan_offline_attention_mask,
    plan_offline_unpack_repack,
    plan_padded,
)

from factories import (
    all_ids,
    check_attention_plan,
    check_padded_plan,
    check_unpack_plan,
    make_lengths,
)


def test_padded_arrival_order():
    lengths = np.array([3, 8, 1, 5, 2])
    plans = plan_padded(lengths, 8, 2)
    assert [p.seq_ids.tolist() for p in plans] == [[0, 1], [2, 3], [4]]
    assert all(isinstance(p, PaddedPlan) and p.seq_len == 8 for p in plans)
    assert plans[1].lengths.tolist() == [1, 5]
    assert plans[2].token_slots == 8


def test_dynamic_padding_arrival_and_sorted():
    lengths = np.array([3, 8, 1, 5, 2])
    plans = plan_dynamic_padding(lengths, 2)
    assert [p.seq_ids.tolist() for p in plans] == [[0, 1], [2, 3], [4]]
    assert [p.seq_len for p in plans] == [8, 5, 2]
    plans = plan_dynamic_padding(lengths, 2, sort=True)
    assert [p.seq_ids.tolist() for p in plans] == [[1, 3], [0, 4], [2]]
    assert [p.seq_len for p in plans] == [8, 3, 1]


def test_dynamic_padding_sort_is_stable():
    plans = plan_dynamic_padding(np.array([4, 4, 4, 7]), 2, sort=True)
    assert [p.seq_ids.tolist() for p in plans] == [[3, 0], [1, 2]]


def test_seq_ids_argument():
    lengths = np.array([3, 8, 1])
    plans = plan_padded(lengths, 8, 2, seq_ids=[10, 20, 30])
    assert all_ids(plans).tolist() == [10, 20, 30]
    plans = plan_offline_unpack_repack(np.array([3, 4, 1]), 8, 1, 40, seq_ids=np.array([7, 6, 5]))
    assert [p.seq_ids.tolist() for p in plans] == [[7, 6, 5]]
    plans = plan_offline_unpack_repack(lengths, 8, 1, 40, seq_ids=np.array([7, 6, 5]))
    assert [p.seq_ids.tolist() for p in plans] == [[7], [6], [5]]
    with pytest.raises(ValueError, match="seq_ids"):
        plan_padded(lengths, 8, 2, seq_ids=[1, 2])


def test_unpack_repack_closes_on_capacity_and_count():
    lengths = np.array([5, 5, 5, 3, 1, 1, 1, 1])
    # capacity 2 * 8 = 16
    plans = plan_offline_unpack_repack(lengths, 8, 2, max_valid_num=3)
    assert [p.seq_ids.tolist() for p in plans] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    plans = plan_offline_unpack_repack(lengths, 8, 2, max_valid_num=40, max_tokens=12)
    assert [p.seq_ids.tolist() for p in plans] == [[0, 1], [2, 3, 4, 5, 6, 7]]  # 5+3+1+1+1+1 == 12
    assert all(isinstance(p, UnpackRepackPlan) and p.capacity == 12 for p in plans)
    assert plans[0].cu_seqlens.tolist() == [0, 5, 10]


def test_unpack_repack_fills_exactly_to_capacity():
    plans = plan_offline_unpack_repack(np.array([8, 8, 8, 8, 8]), 8, 2, 40)
    assert [p.n_seqs for p in plans] == [2, 2, 1]
    assert plans[0].real_tokens == 16


def test_unpack_repack_sequences_cross_rows():
    plans = plan_offline_unpack_repack(np.array([5, 6, 5]), 8, 2, 40)
    assert len(plans) == 1 and plans[0].cu_seqlens.tolist() == [0, 5, 11, 16]


def test_attention_mask_small_example():
    lengths = np.array([6, 2, 4, 4, 8])
    plans = plan_offline_attention_mask(lengths, 8, batch_size=4, max_valid_num=40)
    assert len(plans) == 1
    p = plans[0]
    check_attention_plan(p, 4, 40)
    assert p.n_rows == 3 and p.real_tokens == 24 and p.token_slots == 24
    assert all_ids(plans).tolist() == [0, 1, 2, 3, 4]


def test_attention_mask_seed_workload_is_efficient():
    lengths = make_lengths(1000, 256, seed=0)
    plans = plan_offline_attention_mask(lengths, 256, 16, 40)
    for p in plans:
        check_attention_plan(p, 16, 40)
    assert all_ids(plans).tolist() == list(range(1000))
    rows = sum(p.n_rows for p in plans)
    assert lengths.sum() / (rows * 256) >= 0.99
    # batch grouping reaches its own lower bound here
    assert len(plans) == max(-(-rows // 16), -(-1000 // 40))


@settings(max_examples=60, deadline=None)
@given(
    seq_len=st.integers(2, 48),
    batch_size=st.integers(1, 5),
    max_valid_num=st.integers(1, 12),
    data=st.data(),
)
def test_all_planners_cover_everything(seq_len, batch_size, max_valid_num, data):
    lengths = np.array(data.draw(st.lists(st.integers(1, seq_len), max_size=80)), dtype=np.int64)
    n = lengths.size
    full = batch_size * seq_len
    max_tokens = data.draw(st.one_of(st.none(), st.integers(seq_len, full)))

    padded = plan_padded(lengths, seq_len, batch_size)
    for p in padded:
        check_padded_plan(p, batch_size)
    assert all_ids(padded).tolist() == list(range(n))

    dyn = plan_dynamic_padding(lengths, batch_size, sort=data.draw(st.booleans()))
    for p in dyn:
        check_padded_plan(p, batch_size)
        assert p.seq_len == p.lengths.max()
    assert all_ids(dyn).tolist() == list(range(n))

    am = plan_offline_attention_mask(lengths, seq_len, batch_size, max_valid_num)
    for p in am:
        assert isinstance(p, AttentionMaskPlan)
        check_attention_plan(p, batch_size, max_valid_num)
        assert np.array_equal(p.lengths, lengths[p.seq_ids])
    assert all_ids(am).tolist() == list(range(n))

    ur = plan_offline_unpack_repack(lengths, seq_len, batch_size, max_valid_num, max_tokens)
    cap = max_tokens or full
    for p in ur:
        check_unpack_plan(p, max_valid_num, cap)
        assert np.array_equal(p.lengths, lengths[p.seq_ids])
    assert np.concatenate([p.seq_ids for p in ur]).tolist() == list(range(n)) if n else ur == []
    # greedy closing: a batch closed only because the next one did not fit or it was full
    for a, b in zip(ur, ur[1:]):
        assert a.n_seqs == max_valid_num or a.real_tokens + int(b.lengths[0]) > cap


@pytest.mark.parametrize(
    "call",
    [
        lambda L: plan_padded(L, 8, 2),
        lambda L: plan_dynamic_padding(L, 2, seq_len=8),
        lambda L: plan_offline_attention_mask(L, 8, 2, 40),
        lambda L: plan_offline_unpack_repack(L, 8, 2, 40),
    ],
)
@pytest.mark.parametrize(
    "bad, where", [([3, 0, 2], r"lengths\[1\] = 0"), ([1, 2, 9], r"lengths\[2\] = 9")]
)
def test_bad_lengths_name_index_and_value(call, bad, where):
    with pytest.raises(ValueError, match=where):
        call(np.array(bad))


def test_dynamic_padding_rejects_zero_without_seq_len():
    with pytest.raises(ValueError, match=r"lengths\[0\] = 0"):
        plan_dynamic_padding(np.array([0, 3]), 2)


def test_bad_sizes():
    with pytest.raises(ValueError, match="max_tokens"):
        plan_offline_unpack_repack(np.array([1]), 8, 2, 40, max_tokens=4)
    with pytest.raises(ValueError, match="batch_size"):
        plan_padded(np.array([1]), 8, 0)
    with pytest.raises(ValueError, match="max_valid_num"):
        plan_offline_attention_mask(np.array([1]), 8, 2, 0)


def test_empty_workload():
    empty = np.zeros(0, dtype=np.int64)
    assert plan_padded(empty, 8, 2) == []
    assert plan_dynamic_padding(empty, 2) == []
    assert plan_offline_attention_mask(empty, 8, 2, 4) == []
    assert plan_offline_unpack_repack(empty, 8, 2, 4) == []
