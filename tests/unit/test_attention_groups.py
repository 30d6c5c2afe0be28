"""plan_attention: attention rows sized by the sequences they hold (pure policy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.policy.attention import ATTENTION_GROUPS, AttentionLayout, group_cost, plan_attention

from factories import make_lengths


def check_layout(
    att: AttentionLayout, lengths: np.ndarray, max_groups: int = ATTENTION_GROUPS
) -> None:
    """The contract of plan_attention, checked slot by slot."""
    n = lengths.size
    assert 1 <= att.n_groups <= max_groups
    assert att.group.shape == att.row.shape == att.start.shape == att.segment.shape == (n,)
    assert np.all(np.diff(att.widths) < 0)  # widest first, distinct
    occupied = {}
    for g in range(att.n_groups):
        members = np.flatnonzero(att.group == g)
        assert members.size >= 1
        assert int(lengths[members].max()) == int(att.widths[g])  # width = what the group needs
        assert int(att.row[members].max()) + 1 == int(att.rows[g])  # every row used
    for k in range(n):
        g, r, s, length = int(att.group[k]), int(att.row[k]), int(att.start[k]), int(lengths[k])
        assert 0 <= s and s + length <= int(att.widths[g])  # the sequence fits its row
        for slot in range(s, s + length):
            assert (g, r, slot) not in occupied  # no two sequences share a slot
            occupied[g, r, slot] = k
    assert len(occupied) == int(lengths.sum())  # every token placed exactly once
    for g in range(att.n_groups):  # segments 1, 2, 3 ... in slot order within each row
        for r in range(int(att.rows[g])):
            in_row = np.flatnonzero((att.group == g) & (att.row == r))
            order = in_row[np.argsort(att.start[in_row])]
            assert att.segment[order].tolist() == list(range(1, in_row.size + 1))


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 384), min_size=1, max_size=120),
    max_groups=st.integers(1, ATTENTION_GROUPS),
)
def test_every_sequence_once_and_widths_respected(lengths, max_groups):
    lengths = np.array(lengths, dtype=np.int64)
    check_layout(plan_attention(lengths, max_groups), lengths, max_groups)


def test_one_group_is_rows_of_the_longest():
    lengths = np.array([5, 9, 3, 9, 2])
    att = plan_attention(lengths, max_groups=1)
    assert att.widths.tolist() == [9] and set(att.group.tolist()) == {0}
    check_layout(att, lengths, 1)


def test_long_and_short_sequences_get_their_own_widths():
    """One 250-token sequence and many of 20: the short ones must not pay for 250-wide rows."""
    lengths = np.array([250] + [20] * 30)
    att = plan_attention(lengths)
    check_layout(att, lengths)
    assert att.widths.tolist() == [250, 20]
    assert att.rows.tolist() == [1, 30]
    one = plan_attention(lengths, max_groups=1)
    assert att.score_elements * 3 < one.score_elements  # 74,500 against 250,000


@pytest.mark.parametrize("seq_len", [64, 256, 384])
def test_grouping_lowers_the_modelled_cost_on_real_mixes(seq_len):
    """On seed-like mixes, the chosen grouping's modelled cost is no worse than one group's."""
    for seed in range(5):
        lengths = make_lengths(40, seq_len, seed=seed)
        att, one = plan_attention(lengths), plan_attention(lengths, max_groups=1)
        check_layout(att, lengths)
        cost = sum(group_cost(r, w) for r, w in zip(att.rows.tolist(), att.widths.tolist()))
        assert cost <= group_cost(int(one.rows[0]), int(one.widths[0]))
        assert att.score_elements <= one.score_elements


def test_empty_and_bad_input():
    att = plan_attention(np.array([], dtype=np.int64))
    assert att.widths.tolist() == [1] and att.rows.tolist() == [1] and att.group.size == 0
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        plan_attention(np.array([3, 0]))
    with pytest.raises(ValueError, match="max_groups"):
        plan_attention(np.array([3]), max_groups=0)


def test_plans_carry_their_layout():
    from packing.policy import plan_offline_unpack_repack

    lengths = make_lengths(200, 256, seed=3)
    for plan in plan_offline_unpack_repack(lengths, 256, 16, 40, max_tokens=1024):
        check_layout(plan.attention, plan.lengths)
        assert plan.attention is plan.attention  # computed once per plan


def test_packers_pass_their_attention_groups_to_every_plan():
    from packing.policy import OnlinePacker, PackingConfig, plan_offline_unpack_repack

    lengths = make_lengths(120, 256, seed=4)
    for groups in (1, 2, ATTENTION_GROUPS):
        plans = plan_offline_unpack_repack(lengths, 256, 16, 40, attention_groups=groups)
        packer = OnlinePacker(PackingConfig(mode="unpack_repack", attention_groups=groups))
        plans += [p for i, n in enumerate(lengths.tolist()) for p in packer.add(i, n)]
        for plan in plans:
            assert plan.attention_groups == groups and plan.attention.n_groups <= groups
            check_layout(plan.attention, plan.lengths, groups)
        if groups == 1:
            assert all(p.attention.widths.tolist() == [int(p.lengths.max())] for p in plans)


@pytest.mark.parametrize("bad", [0, ATTENTION_GROUPS + 1, 1.5, True])
def test_attention_groups_validated(bad):
    from packing.policy import PackingConfig

    with pytest.raises(
        ValueError,
        match=f"attention_groups must be an int in \\[1, {ATTENTION_GROUPS}\\], got {bad!r}",
    ):
        PackingConfig(attention_groups=bad)
