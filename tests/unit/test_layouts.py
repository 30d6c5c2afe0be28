"""build_inputs / scatter_outputs: exact layouts and round trips for every plan kind."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.policy import (
    AttentionMaskPlan,
    OnlinePacker,
    PackingConfig,
    PaddedPlan,
    UnpackRepackPlan,
    build_inputs,
    plan_dynamic_padding,
    plan_offline_attention_mask,
    plan_offline_unpack_repack,
    plan_padded,
    scatter_outputs,
    token_coordinates,
)
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.layouts import attention_rows, static_attention_rows

from factories import make_lengths, make_sequences, python_lines, tagged_sequences

INPUT_NAMES = {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
UNPACK_NAMES = {"input_ids", "token_type_ids", "position_ids", "repack_index"} | {
    f"{n}_{g}" for g in range(ATTENTION_GROUPS) for n in ("unpack_index", "segment_ids")
}


def _groups(out: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(unpack_index_g, segment_ids_g) of every attention group, in group order."""
    return [(out[f"unpack_index_{g}"], out[f"segment_ids_{g}"]) for g in range(ATTENTION_GROUPS)]


def _flat_attention(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The groups' unpack_index and segment_ids flattened and concatenated, and each
    concatenated slot's row width (the [sum R_g * W_g] view repack_index points into)."""
    groups = _groups(out)
    idx = np.concatenate([i.reshape(-1) for i, _ in groups])
    seg = np.concatenate([s.reshape(-1) for _, s in groups])
    width = np.concatenate([np.full(i.size, i.shape[1]) for i, _ in groups])
    return idx, seg, width.tolist()


def test_token_coordinates():
    seq, pos, cu = token_coordinates(np.array([2, 3, 1]))
    assert seq.tolist() == [0, 0, 1, 1, 1, 2]
    assert pos.tolist() == [0, 1, 0, 1, 2, 0]
    assert cu.tolist() == [0, 2, 5, 6]


def test_padded_layout_exact():
    plan = PaddedPlan(seq_len=4, seq_ids=[7, 8], lengths=[2, 4])
    ids, types = tagged_sequences(plan.lengths)
    out = build_inputs(plan, ids, types)
    assert set(out) == INPUT_NAMES and all(v.dtype == np.int64 for v in out.values())
    assert out["input_ids"].tolist() == [[1000, 1001, 0, 0], [2000, 2001, 2002, 2003]]
    assert out["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert out["token_type_ids"].tolist() == [[1, 1, 0, 0], [2, 2, 2, 2]]
    assert out["position_ids"].tolist() == [[0, 1, 0, 0], [0, 1, 2, 3]]
    padded = build_inputs(plan, ids, types, pad_rows_to=3)
    assert all(v.shape == (3, 4) for v in padded.values())
    assert padded["attention_mask"][2].tolist() == [0, 0, 0, 0]
    assert np.array_equal(padded["input_ids"][:2], out["input_ids"])


def test_attention_mask_layout_exact():
    plan = AttentionMaskPlan(
        seq_len=6,
        n_rows=2,
        seq_ids=[5, 6, 7, 8],
        rows=[0, 0, 1, 1],
        starts=[0, 2, 0, 4],
        lengths=[2, 3, 4, 2],
    )
    ids, types = tagged_sequences(plan.lengths)
    out = build_inputs(plan, ids, types, pad_rows_to=3)
    assert set(out) == INPUT_NAMES and all(
        v.shape == (3, 6) and v.dtype == np.int64 for v in out.values()
    )
    assert out["input_ids"].tolist() == [
        [1000, 1001, 2000, 2001, 2002, 0],
        [3000, 3001, 3002, 3003, 4000, 4001],
        [0] * 6,
    ]
    assert out["attention_mask"].tolist() == [[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 2, 2], [0] * 6]
    assert out["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1], [0] * 6]
    assert out["token_type_ids"].tolist() == [[1, 1, 2, 2, 2, 0], [3, 3, 3, 3, 4, 4], [0] * 6]
    with pytest.raises(ValueError, match="pad_rows_to"):
        build_inputs(plan, ids, types, pad_rows_to=1)


def test_unpack_repack_layout_exact():
    plan = UnpackRepackPlan(seq_len=4, capacity=8, seq_ids=[1, 2, 3], cu_seqlens=[0, 2, 6, 7])
    ids, types = tagged_sequences(plan.lengths)
    out = build_inputs(plan, ids, types, pad_tokens_to=8)
    assert set(out) == UNPACK_NAMES and all(v.dtype == np.int64 for v in out.values())
    assert out["input_ids"].tolist() == [1000, 1001, 2000, 2001, 2002, 2003, 3000, 0]
    assert out["token_type_ids"].tolist() == [1, 1, 2, 2, 2, 2, 3, 0]
    assert out["position_ids"].tolist() == [0, 1, 0, 1, 2, 3, 0, 0]
    # one attention group (too few tokens for a second to pay), one row per sequence at
    # slot 0, longest first: the 4-token sequence in row 0, the 2-token one in row 1, the
    # 1-token one in row 2; the unused groups are one inert slot each
    assert plan.attention.widths.tolist() == [4] and plan.attention.rows.tolist() == [3]
    assert out["unpack_index_0"].tolist() == [[2, 3, 4, 5], [0, 1, 0, 0], [6, 0, 0, 0]]
    assert out["segment_ids_0"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    for g in range(1, ATTENTION_GROUPS):
        assert out[f"unpack_index_{g}"].tolist() == out[f"segment_ids_{g}"].tolist() == [[0]]
    assert out["repack_index"].tolist() == [4, 5, 0, 1, 2, 3, 8, 0]
    _check_unpack_inputs(plan, out, ids, 8)
    with pytest.raises(ValueError, match="pad_tokens_to"):
        build_inputs(plan, ids, types, pad_tokens_to=6)


def test_unpack_repack_static_layout_exact():
    """pad_attention_to: rows of the given width (not the longest sequence), all-zero extra rows."""
    plan = UnpackRepackPlan(
        seq_len=6, capacity=12, seq_ids=[1, 2, 3], cu_seqlens=[0, 2, 6, 7], max_valid_num=3
    )
    ids, types = tagged_sequences(plan.lengths)
    assert static_attention_rows(6, 12, 3) == 3  # (12 + 1) // (6 // 2 + 1)
    out = build_inputs(plan, ids, types, pad_tokens_to=12, pad_attention_to=(3, 6))
    assert set(out) == UNPACK_NAMES and all(v.dtype == np.int64 for v in out.values())
    assert out["input_ids"].tolist() == [1000, 1001, 2000, 2001, 2002, 2003, 3000] + [0] * 5
    # one group of rows of 6: the 4-token sequence, then the 2-token one fit in row 0; the
    # last one opens row 1; the other groups are one inert slot each
    assert out["unpack_index_0"].tolist() == [[2, 3, 4, 5, 0, 1], [6, 0, 0, 0, 0, 0], [0] * 6]
    assert out["segment_ids_0"].tolist() == [[1, 1, 1, 1, 2, 2], [1, 0, 0, 0, 0, 0], [0] * 6]
    for g in range(1, ATTENTION_GROUPS):
        assert out[f"unpack_index_{g}"].tolist() == out[f"segment_ids_{g}"].tolist() == [[0]]
    assert out["repack_index"].tolist() == [4, 5, 0, 1, 2, 3, 6] + [0] * 5
    with pytest.raises(
        ValueError, match="needs 2 attention rows of 4 slots, more than pad_attention_to rows=1"
    ):
        build_inputs(plan, ids, types, pad_attention_to=(1, 4))
    with pytest.raises(ValueError, match="width 3 is less than the longest sequence"):
        build_inputs(plan, ids, types, pad_attention_to=(3, 3))


@pytest.mark.parametrize(
    "seq_len,capacity,max_valid_num,want",
    [
        (256, 16 * 256, 40, 31),  # bert-base defaults
        (64, 4 * 64, 8, 7),  # tests' tiny model
        (64, 4 * 64, 5, 5),  # max_valid_num binds
        (7, 14, None, 3),  # odd width: T >= R * h with h = 4
        (8, 8, None, 1),
        (2, 10, None, 5),
    ],
)
def test_static_attention_rows_is_tight(seq_len, capacity, max_valid_num, want):
    """The bound, and a batch within the limits that needs exactly that many rows."""
    assert static_attention_rows(seq_len, capacity, max_valid_num) == want
    h = seq_len // 2 + 1
    worst = (
        np.array([h] * (want - 1) + [seq_len - h + 1], dtype=np.int64)
        if want > 1
        else np.array([seq_len])
    )
    assert worst.sum() <= capacity and worst.size <= (max_valid_num or worst.size)
    row, _, _ = attention_rows(worst, seq_len)
    assert int(row.max()) + 1 == want


@settings(max_examples=300, deadline=None)
@given(
    seq_len=st.integers(2, 33),
    batch_size=st.integers(1, 6),
    max_valid_num=st.integers(1, 16),
    data=st.data(),
)
def test_static_attention_rows_bounds_first_fit_decreasing(
    seq_len, batch_size, max_valid_num, data
):
    """No batch within (capacity, seq_len, max_valid_num) needs more rows than the bound."""
    capacity = batch_size * seq_len
    lengths = data.draw(st.lists(st.integers(1, seq_len), min_size=1, max_size=max_valid_num))
    lengths = np.array(lengths, dtype=np.int64)
    lengths = lengths[np.cumsum(lengths) <= capacity]
    if lengths.size == 0:
        lengths = np.array([seq_len])
    row, _, _ = attention_rows(lengths, seq_len)
    assert int(row.max()) + 1 <= static_attention_rows(seq_len, capacity, max_valid_num)


def _reference_unpack_attention(
    out: dict[str, np.ndarray], x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The unpack_repack graph's attention in numpy (graphs._unpack_graph / _segment_bias).

    ``x`` [tokens, 3, d] are per-token q/k/v. Returns ``(per_token, slots)``: the context
    gathered back to the token axis, and the context of every attention slot of every
    group, flattened and concatenated in group order.
    """
    from packing.model.graphs import MASK_VALUE

    flats = []
    for idx, seg in _groups(out):
        rows = x[idx]  # [R, W, 3, d]
        q, k, v = rows[:, :, 0], rows[:, :, 1], rows[:, :, 2]
        allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(x.shape[-1]) + np.where(
            allowed, 0.0, MASK_VALUE
        )
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        flats.append((probs @ v).reshape(-1, x.shape[-1]))  # [R * W, d]
    ctx = np.concatenate(flats)
    return ctx[out["repack_index"]], ctx


@settings(max_examples=60, deadline=None)
@given(
    seq_len=st.integers(2, 40),
    batch_size=st.integers(1, 4),
    max_valid_num=st.integers(1, 12),
    online=st.booleans(),
    data=st.data(),
)
def test_static_unpack_repack_shapes_and_inert_padding(
    seq_len, batch_size, max_valid_num, online, data
):
    """Static padding gives exactly [capacity] / [static_attention_rows, seq_len] for every plan
    of a packer, and leaves every real token's attention result as without padding."""
    lengths = np.array(
        data.draw(st.lists(st.integers(1, seq_len), min_size=1, max_size=40)), dtype=np.int64
    )
    max_tokens = data.draw(st.one_of(st.none(), st.integers(seq_len, batch_size * seq_len)))
    if online:
        packer = OnlinePacker(
            PackingConfig(
                seq_len=seq_len,
                batch_size=batch_size,
                max_valid_num=max_valid_num,
                mode="unpack_repack",
                max_tokens=max_tokens,
            )
        )
        plans = [pl for i, n in enumerate(lengths.tolist()) for pl in packer.add(i, n)]
        plans += [pl for pl in [packer.flush()] if pl is not None]
    else:
        plans = plan_offline_unpack_repack(lengths, seq_len, batch_size, max_valid_num, max_tokens)
    capacity = max_tokens or batch_size * seq_len
    rows = static_attention_rows(seq_len, capacity, max_valid_num)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for plan in plans:
        assert plan.max_valid_num == max_valid_num and plan.capacity == capacity
        ids, types = make_sequences(plan.lengths, seed=1)
        out = build_inputs(
            plan, ids, types, pad_tokens_to=capacity, pad_attention_to=(rows, seq_len)
        )
        for name in ("input_ids", "token_type_ids", "position_ids", "repack_index"):
            assert out[name].shape == (capacity,) and out[name].dtype == np.int64
        assert out["unpack_index_0"].shape == out["segment_ids_0"].shape == (rows, seq_len)
        for g in range(1, ATTENTION_GROUPS):
            assert out[f"unpack_index_{g}"].shape == out[f"segment_ids_{g}"].shape == (1, 1)
        _check_unpack_inputs(plan, out, ids, capacity, widths=[seq_len])
        # padded slots are inert: segment 0 and unpack_index 0, padded tokens' repack_index 0
        T = plan.real_tokens
        idx, seg, _ = _flat_attention(out)
        assert np.all(idx[seg == 0] == 0) and np.all(out["repack_index"][T:] == 0)
        seg0 = out["segment_ids_0"]
        used_rows = int(np.flatnonzero(seg0.any(axis=1)).max()) + 1
        assert np.all(seg0[used_rows:] == 0)
        # and the graph's attention over them: finite everywhere (all-padding rows too), and
        # every real token's context the same as with the unpadded, batch-shaped inputs
        x = rng.normal(size=(capacity, 3, 4))
        x[T:] = rng.normal(size=(capacity - T, 3, 4)) * 1e3  # junk at padded token slots
        got, all_rows = _reference_unpack_attention(out, x)
        assert np.all(np.isfinite(all_rows))
        want, _ = _reference_unpack_attention(build_inputs(plan, ids, types), x[:T])
        np.testing.assert_allclose(got[:T], want, rtol=0, atol=1e-12)


def test_input_validation():
    plan = PaddedPlan(seq_len=4, seq_ids=[0, 1], lengths=[2, 3])
    ids, types = tagged_sequences([2, 3])
    with pytest.raises(ValueError, match="got 3 sequences, plan has 2"):
        build_inputs(plan, ids[:1] + ids, types)
    with pytest.raises(ValueError, match=r"input_ids\[1\] has 2 tokens, plan says 3"):
        build_inputs(plan, [ids[0], ids[0]], types)
    with pytest.raises(ValueError, match="token_type_ids"):
        build_inputs(plan, ids, [types[1], types[1]])
    with pytest.raises(TypeError):
        build_inputs(object(), [], [])  # type: ignore[arg-type]


# -- properties on real planner output -----------------------------------------


def _check_block_diagonal(seg_row: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """mask = (seg_i == seg_j) & seg > 0 must be block diagonal with blocks exactly the sequences."""
    mask = (seg_row[:, None] == seg_row[None, :]) & (seg_row[:, None] > 0) & (seg_row[None, :] > 0)
    expected = np.zeros_like(mask)
    for s, n in zip(starts.tolist(), lengths.tolist()):
        expected[s : s + n, s : s + n] = True
    assert np.array_equal(mask, expected)


def _check_attention_inputs(plan: AttentionMaskPlan, out, ids, types) -> None:
    S = plan.seq_len
    for k in range(plan.n_seqs):
        r, s, n = int(plan.rows[k]), int(plan.starts[k]), int(plan.lengths[k])
        assert np.array_equal(out["input_ids"][r, s : s + n], ids[k])
        assert np.array_equal(out["token_type_ids"][r, s : s + n], types[k])
        assert np.array_equal(out["position_ids"][r, s : s + n], np.arange(n))
    real = out["attention_mask"] > 0
    assert real.sum() == plan.real_tokens
    for name in ("input_ids", "token_type_ids", "position_ids"):
        assert np.all(out[name][~real] == 0)
    for r in range(out["attention_mask"].shape[0]):
        in_row = plan.rows == r
        order = np.argsort(plan.starts[in_row])
        seg = out["attention_mask"][r]
        assert seg.max(initial=0) == in_row.sum()
        _check_block_diagonal(seg, plan.starts[in_row][order], plan.lengths[in_row][order])
    assert out["input_ids"].shape[1] == S


def _check_unpack_inputs(plan: UnpackRepackPlan, out, ids, pad_to, widths=None) -> None:
    """Check the flat tokens, the attention groups and repack_index of ``out``.

    ``widths``: the groups' row widths when padded (pad_attention_to: one group), else
    the plan's attention layout decides them, and each group must be exactly as wide as
    its longest sequence."""
    T = plan.real_tokens
    flat = out["input_ids"]
    assert flat.shape == ((pad_to or T),)
    assert np.array_equal(flat[:T], np.concatenate(ids))
    assert np.all(np.diff(plan.cu_seqlens) > 0)
    groups = _groups(out)
    for idx, seg in groups:
        assert seg.shape == idx.shape and seg.ndim == 2
    att = plan.attention
    if widths is None:
        widths = att.widths.tolist()
        assert att.n_groups <= ATTENTION_GROUPS and np.all(np.diff(att.widths) < 0)
        for g in range(att.n_groups):
            members = att.group == g
            assert members.any() and int(plan.lengths[members].max()) == widths[g]
            assert groups[g][0].shape == (int(att.rows[g]), widths[g])
    for g, w in enumerate(widths):
        assert groups[g][0].shape[1] == w
    idx, seg, slot_width = _flat_attention(out)
    assert np.count_nonzero(seg) == T
    # unpack: every sequence sits whole in one attention row as one segment
    unpacked = np.where(seg > 0, flat[idx], -1)
    repack = out["repack_index"]
    offsets = np.concatenate(([0], np.cumsum([i.size for i, _ in groups])))
    for k in range(plan.n_seqs):
        lo, hi = plan.cu_seqlens[k], plan.cu_seqlens[k + 1]
        slots = repack[lo:hi]
        g = int(np.searchsorted(offsets, slots[0], side="right")) - 1
        W = slot_width[slots[0]]
        local = slots - offsets[g]
        r = local[0] // W
        assert np.all(local // W == r) and np.array_equal(np.diff(slots), np.ones(hi - lo - 1))
        assert np.array_equal(unpacked[slots], ids[k])
        row_seg = groups[g][1][r, local % W]
        assert len(set(row_seg.tolist())) == 1
        assert np.count_nonzero(groups[g][1][r] == row_seg[0]) == hi - lo
        assert np.array_equal(out["position_ids"][lo:hi], np.arange(hi - lo))
    # repack: back to the flat order
    repacked = unpacked[repack]
    assert np.array_equal(repacked[:T], flat[:T])
    assert np.all(repack[T:] == 0)


def _tagged_output(plan, n_rows_or_tokens, trailing=()):
    """Model output holding value 1000*(k+1)+j at token j of sequence k; -1 elsewhere."""
    if isinstance(plan, UnpackRepackPlan):
        out = np.full((n_rows_or_tokens,) + trailing, -1.0)
        for k in range(plan.n_seqs):
            lo, hi = plan.cu_seqlens[k], plan.cu_seqlens[k + 1]
            out[lo:hi] = (1000 * (k + 1) + np.arange(hi - lo)).reshape((-1,) + (1,) * len(trailing))
        return out
    out = np.full((n_rows_or_tokens, plan.seq_len) + trailing, -1.0)
    for k in range(plan.n_seqs):
        n = int(plan.lengths[k])
        r = k if isinstance(plan, PaddedPlan) else int(plan.rows[k])
        s = 0 if isinstance(plan, PaddedPlan) else int(plan.starts[k])
        out[r, s : s + n] = (1000 * (k + 1) + np.arange(n)).reshape((-1,) + (1,) * len(trailing))
    return out


def _check_scatter(plan, output, trailing):
    got = scatter_outputs(plan, output)
    assert len(got) == plan.n_seqs
    for k, piece in enumerate(got):
        n = int(plan.lengths[k])
        assert piece.shape == (n,) + trailing
        want = (1000 * (k + 1) + np.arange(n)).reshape((-1,) + (1,) * len(trailing))
        assert np.all(piece == want)
    output[...] = -7  # results must not alias the output buffer
    assert all(np.all(p != -7) for p in got)


@settings(max_examples=40, deadline=None)
@given(
    seq_len=st.integers(2, 40),
    batch_size=st.integers(1, 4),
    max_valid_num=st.integers(1, 9),
    trailing=st.sampled_from([(), (2,)]),
    data=st.data(),
)
def test_round_trips_on_planner_output(seq_len, batch_size, max_valid_num, trailing, data):
    lengths = np.array(
        data.draw(st.lists(st.integers(1, seq_len), min_size=1, max_size=40)), dtype=np.int64
    )
    seed = data.draw(st.integers(0, 2**16))

    for plan in plan_padded(lengths, seq_len, batch_size) + plan_dynamic_padding(
        lengths, batch_size, sort=True
    ):
        ids, types = make_sequences(plan.lengths, seed=seed)
        out = build_inputs(plan, ids, types)
        assert out["input_ids"].shape == (plan.n_seqs, plan.seq_len)
        for k in range(plan.n_seqs):
            n = int(plan.lengths[k])
            assert np.array_equal(out["input_ids"][k, :n], ids[k])
            assert np.array_equal(out["position_ids"][k, :n], np.arange(n))
            assert out["attention_mask"][k].sum() == n
        _check_scatter(plan, _tagged_output(plan, plan.n_rows, trailing), trailing)

    for plan in plan_offline_attention_mask(lengths, seq_len, batch_size, max_valid_num):
        ids, types = make_sequences(plan.lengths, seed=seed)
        out = build_inputs(plan, ids, types, pad_rows_to=batch_size)
        assert out["input_ids"].shape == (batch_size, seq_len)
        _check_attention_inputs(plan, out, ids, types)
        _check_scatter(plan, _tagged_output(plan, batch_size, trailing), trailing)

    max_tokens = data.draw(st.one_of(st.none(), st.integers(seq_len, batch_size * seq_len)))
    for plan in plan_offline_unpack_repack(lengths, seq_len, batch_size, max_valid_num, max_tokens):
        ids, types = make_sequences(plan.lengths, seed=seed)
        pad_to = data.draw(st.one_of(st.none(), st.just(plan.capacity)))
        out = build_inputs(plan, ids, types, pad_tokens_to=pad_to)
        _check_unpack_inputs(plan, out, ids, pad_to)
        _check_scatter(plan, _tagged_output(plan, pad_to or plan.real_tokens, trailing), trailing)


@pytest.mark.parametrize("algorithm", ["first_fit", "best_fit", "next_fit"])
def test_online_attention_plans_give_block_diagonal_masks(algorithm):
    lengths = make_lengths(300, 64, seed=2)
    p = OnlinePacker(
        PackingConfig(
            seq_len=64, batch_size=4, max_valid_num=12, mode="attention_mask", algorithm=algorithm
        )
    )
    plans = [pl for i, n in enumerate(lengths.tolist()) for pl in p.add(i, n)] + [p.flush()]
    for plan in plans:
        ids, types = make_sequences(plan.lengths, seed=1)
        out = build_inputs(plan, ids, types)
        _check_attention_inputs(plan, out, ids, types)


def test_scatter_rejects_small_output():
    plan = UnpackRepackPlan(seq_len=4, capacity=8, seq_ids=[1], cu_seqlens=[0, 3])
    with pytest.raises(ValueError):
        scatter_outputs(plan, np.zeros(2))
    pplan = PaddedPlan(seq_len=4, seq_ids=[0, 1], lengths=[2, 3])
    with pytest.raises(ValueError):
        scatter_outputs(pplan, np.zeros((1, 4)))
    with pytest.raises(ValueError):
        scatter_outputs(pplan, np.zeros((2, 5)))


def test_empty_plan():
    plan = UnpackRepackPlan(seq_len=4, capacity=8, seq_ids=[], cu_seqlens=[0])
    assert scatter_outputs(plan, np.zeros(8)) == []


def test_hot_path_has_no_python_loop_per_token():
    """16 x 256 batch, up to 40 sequences: build and scatter run fewer Python lines than the
    batch has tokens, so neither loops over tokens in Python (the work per token is numpy's);
    counted, not timed."""
    lengths = make_lengths(400, 256, seed=0)
    plans = [
        plan_padded(lengths, 256, 16)[0],
        max(plan_offline_attention_mask(lengths, 256, 16, 40), key=lambda p: p.n_seqs),
        max(plan_offline_unpack_repack(lengths, 256, 16, 40), key=lambda p: p.n_seqs),
    ]
    for plan in plans:
        ids, types = make_sequences(plan.lengths)
        is_unpack = isinstance(plan, UnpackRepackPlan)
        kw = {"pad_tokens_to": plan.capacity} if is_unpack else {"pad_rows_to": 16}
        output = np.zeros((plan.capacity, 2) if is_unpack else (16, 256, 2), dtype=np.float32)
        tokens = int(sum(plan.lengths))
        assert tokens > 1000, tokens  # a batch big enough for the count to mean something
        built, _ = python_lines(build_inputs, plan, ids, types, **kw)
        scattered, _ = python_lines(scatter_outputs, plan, output)
        assert built < tokens and scattered < tokens, (
            type(plan).__name__,
            tokens,
            built,
            scattered,
        )


def test_attention_mask_rows_trimmed_to_their_used_width():
    """trim_rows: rows as wide as the fullest row's used slots; scatter reads them back."""
    plan = AttentionMaskPlan(
        seq_len=8, n_rows=2, seq_ids=[5, 6, 7], rows=[0, 0, 1], starts=[0, 2, 0], lengths=[2, 3, 4]
    )
    assert plan.used_width == 5
    ids, types = tagged_sequences(plan.lengths)
    out = build_inputs(plan, ids, types, trim_rows=True)
    assert all(v.shape == (2, 5) for v in out.values())
    assert out["attention_mask"].tolist() == [[1, 1, 2, 2, 2], [1, 1, 1, 1, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 0, 1, 2], [0, 1, 2, 3, 0]]
    full = build_inputs(plan, ids, types)
    assert (
        np.array_equal(full["input_ids"][:, :5], out["input_ids"])
        and not full["input_ids"][:, 5:].any()
    )
    _check_scatter(plan, _tagged_output_width(plan, 5), ())
    with pytest.raises(ValueError, match="does not match"):
        scatter_outputs(plan, np.zeros((2, 4)))  # narrower than the used width


def _tagged_output_width(plan: AttentionMaskPlan, width: int) -> np.ndarray:
    out = np.full((plan.n_rows, width), -1.0)
    for k in range(plan.n_seqs):
        r, s, n = int(plan.rows[k]), int(plan.starts[k]), int(plan.lengths[k])
        out[r, s : s + n] = 1000 * (k + 1) + np.arange(n)
    return out
