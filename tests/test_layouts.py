"""build_inputs / scatter_outputs: exact layouts and round trips for every plan kind."""

from __future__ import annotations

import time

import numpy as np
import pytest
from factories import make_lengths, make_sequences, tagged_sequences
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
from packing.policy.layouts import attention_rows, static_attention_rows

INPUT_NAMES = {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
UNPACK_NAMES = {"input_ids", "token_type_ids", "position_ids", "unpack_index", "segment_ids", "repack_index"}


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
        seq_len=6, n_rows=2, seq_ids=[5, 6, 7, 8], rows=[0, 0, 1, 1], starts=[0, 2, 0, 4], lengths=[2, 3, 4, 2]
    )
    ids, types = tagged_sequences(plan.lengths)
    out = build_inputs(plan, ids, types, pad_rows_to=3)
    assert set(out) == INPUT_NAMES and all(v.shape == (3, 6) and v.dtype == np.int64 for v in out.values())
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
    # attention rows, first-fit decreasing: the 4-token sequence fills row 0, then the
    # 2-token and 1-token sequences share row 1 as segments 1 and 2
    assert out["unpack_index"].tolist() == [[2, 3, 4, 5], [0, 1, 6, 0]]
    assert out["segment_ids"].tolist() == [[1, 1, 1, 1], [1, 1, 2, 0]]
    assert out["repack_index"].tolist() == [4, 5, 0, 1, 2, 3, 6, 0]
    with pytest.raises(ValueError, match="pad_tokens_to"):
        build_inputs(plan, ids, types, pad_tokens_to=6)


def test_unpack_repack_static_layout_exact():
    """pad_attention_to: rows of the given width (not the longest sequence), all-zero extra rows."""
    plan = UnpackRepackPlan(seq_len=6, capacity=12, seq_ids=[1, 2, 3], cu_seqlens=[0, 2, 6, 7], max_valid_num=3)
    ids, types = tagged_sequences(plan.lengths)
    assert static_attention_rows(6, 12, 3) == 3  # (12 + 1) // (6 // 2 + 1)
    out = build_inputs(plan, ids, types, pad_tokens_to=12, pad_attention_to=(3, 6))
    assert set(out) == UNPACK_NAMES and all(v.dtype == np.int64 for v in out.values())
    assert out["input_ids"].tolist() == [1000, 1001, 2000, 2001, 2002, 2003, 3000] + [0] * 5
    # rows of 6: the 4-token sequence, then the 2-token one fit in row 0; the last one too
    assert out["unpack_index"].tolist() == [[2, 3, 4, 5, 0, 1], [6, 0, 0, 0, 0, 0], [0] * 6]
    assert out["segment_ids"].tolist() == [[1, 1, 1, 1, 2, 2], [1, 0, 0, 0, 0, 0], [0] * 6]
    assert out["repack_index"].tolist() == [4, 5, 0, 1, 2, 3, 6] + [0] * 5
    with pytest.raises(ValueError, match="needs 2 attention rows of 4 slots, more than pad_attention_to rows=1"):
        build_inputs(plan, ids, types, pad_attention_to=(1, 4))
    with pytest.raises(ValueError, match="width 3 is less than the longest sequence"):
        build_inputs(plan, ids, types, pad_attention_to=(3, 3))


@pytest.mark.parametrize("seq_len,capacity,max_valid_num,want", [
    (256, 16 * 256, 40, 31),  # bert-base defaults
    (64, 4 * 64, 8, 7),  # tests' tiny model
    (64, 4 * 64, 5, 5),  # max_valid_num binds
    (7, 14, None, 3),  # odd width: T >= R * h with h = 4
    (8, 8, None, 1),
    (2, 10, None, 5),
])
def test_static_attention_rows_is_tight(seq_len, capacity, max_valid_num, want):
    """The bound, and a batch within the limits that needs exactly that many rows."""
    assert static_attention_rows(seq_len, capacity, max_valid_num) == want
    h = seq_len // 2 + 1
    worst = np.array([h] * (want - 1) + [seq_len - h + 1], dtype=np.int64) if want > 1 else np.array([seq_len])
    assert worst.sum() <= capacity and worst.size <= (max_valid_num or worst.size)
    row, _, _ = attention_rows(worst, seq_len)
    assert int(row.max()) + 1 == want


@settings(max_examples=300, deadline=None)
@given(seq_len=st.integers(2, 33), batch_size=st.integers(1, 6), max_valid_num=st.integers(1, 16),
       data=st.data())
def test_static_attention_rows_bounds_first_fit_decreasing(seq_len, batch_size, max_valid_num, data):
    """No batch within (capacity, seq_len, max_valid_num) needs more rows than the bound."""
    capacity = batch_size * seq_len
    lengths = data.draw(st.lists(st.integers(1, seq_len), min_size=1, max_size=max_valid_num))
    lengths = np.array(lengths, dtype=np.int64)
    lengths = lengths[np.cumsum(lengths) <= capacity]
    if lengths.size == 0:
        lengths = np.array([seq_len])
    row, _, _ = attention_rows(lengths, seq_len)
    assert int(row.max()) + 1 <= static_attention_rows(seq_len, capacity, max_valid_num)


def _reference_unpack_attention(out: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unpack_repack graph's attention in numpy (graphs._unpack_graph / _segment_bias).

    ``x`` [tokens, 3, d] are per-token q/k/v. Returns ``(per_token, rows)``: the context
    gathered back to the token axis, and the whole [R, W, d] context of the attention rows.
    """
    from packing.model.graphs import MASK_VALUE

    seg, idx = out["segment_ids"], out["unpack_index"]
    rows = x[idx]  # [R, W, 3, d]
    q, k, v = rows[:, :, 0], rows[:, :, 1], rows[:, :, 2]
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(x.shape[-1]) + np.where(allowed, 0.0, MASK_VALUE)
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    ctx = probs @ v  # [R, W, d]
    return ctx.reshape(-1, x.shape[-1])[out["repack_index"]], ctx


@settings(max_examples=60, deadline=None)
@given(
    seq_len=st.integers(2, 40),
    batch_size=st.integers(1, 4),
    max_valid_num=st.integers(1, 12),
    online=st.booleans(),
    data=st.data(),
)
def test_static_unpack_repack_shapes_and_inert_padding(seq_len, batch_size, max_valid_num, online, data):
    """Static padding gives exactly [capacity] / [static_attention_rows, seq_len] for every plan
    of a packer, and leaves every real token's attention result as without padding."""
    lengths = np.array(data.draw(st.lists(st.integers(1, seq_len), min_size=1, max_size=40)), dtype=np.int64)
    max_tokens = data.draw(st.one_of(st.none(), st.integers(seq_len, batch_size * seq_len)))
    if online:
        packer = OnlinePacker(PackingConfig(seq_len=seq_len, batch_size=batch_size, max_valid_num=max_valid_num,
                                            mode="unpack_repack", max_tokens=max_tokens))
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
        out = build_inputs(plan, ids, types, pad_tokens_to=capacity, pad_attention_to=(rows, seq_len))
        for name in ("input_ids", "token_type_ids", "position_ids", "repack_index"):
            assert out[name].shape == (capacity,) and out[name].dtype == np.int64
        assert out["unpack_index"].shape == out["segment_ids"].shape == (rows, seq_len)
        _check_unpack_inputs(plan, out, ids, capacity, width=seq_len)
        # padded slots are inert: segment 0 and unpack_index 0, padded tokens' repack_index 0
        T = plan.real_tokens
        pad_slots = out["segment_ids"] == 0
        assert np.all(out["unpack_index"][pad_slots] == 0) and np.all(out["repack_index"][T:] == 0)
        used_rows = int(np.flatnonzero(out["segment_ids"].any(axis=1)).max()) + 1
        assert np.all(out["segment_ids"][used_rows:] == 0)
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


def _check_unpack_inputs(plan: UnpackRepackPlan, out, ids, pad_to, width=None) -> None:
    """``width``: the attention rows' width when padded (pad_attention_to), else the longest sequence."""
    T, W = plan.real_tokens, width or int(plan.lengths.max())
    flat = out["input_ids"]
    assert flat.shape == ((pad_to or T),)
    assert np.array_equal(flat[:T], np.concatenate(ids))
    assert np.all(np.diff(plan.cu_seqlens) > 0)
    seg, idx = out["segment_ids"], out["unpack_index"]
    assert seg.shape == idx.shape and seg.shape[1] == W
    assert np.count_nonzero(seg) == T
    used_rows = int(np.flatnonzero(seg.any(axis=1)).max()) + 1
    assert used_rows * W < T + W * max(1, plan.n_seqs // 2) + W  # rows are really packed
    # unpack: every sequence sits whole in one attention row as one segment
    unpacked = np.where(seg > 0, flat[idx], -1)
    repack = out["repack_index"]
    for k in range(plan.n_seqs):
        lo, hi = plan.cu_seqlens[k], plan.cu_seqlens[k + 1]
        slots = repack[lo:hi]
        r = slots[0] // W
        assert np.all(slots // W == r) and np.array_equal(np.diff(slots), np.ones(hi - lo - 1))
        assert np.array_equal(unpacked.reshape(-1)[slots], ids[k])
        row_seg = seg[r, slots % W]
        assert len(set(row_seg.tolist())) == 1 and np.count_nonzero(seg[r] == row_seg[0]) == hi - lo
        assert np.array_equal(out["position_ids"][lo:hi], np.arange(hi - lo))
    # repack: back to the flat order
    repacked = unpacked.reshape(-1)[repack]
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
    lengths = np.array(data.draw(st.lists(st.integers(1, seq_len), min_size=1, max_size=40)), dtype=np.int64)
    seed = data.draw(st.integers(0, 2**16))

    for plan in plan_padded(lengths, seq_len, batch_size) + plan_dynamic_padding(lengths, batch_size, sort=True):
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
    p = OnlinePacker(PackingConfig(seq_len=64, batch_size=4, max_valid_num=12, algorithm=algorithm))
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


def test_hot_path_speed():
    """16 x 256 batch, up to 40 sequences: build + scatter well under a millisecond each."""
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
        build_inputs(plan, ids, types, **kw)
        scatter_outputs(plan, output)
        reps = 50
        t0 = time.perf_counter()
        for _ in range(reps):
            build_inputs(plan, ids, types, **kw)
        t1 = time.perf_counter()
        for _ in range(reps):
            scatter_outputs(plan, output)
        t2 = time.perf_counter()
        # generous bound for a loaded 2-core CI box; typical is ~0.05-0.1 ms
        assert (t1 - t0) / reps < 1e-3 and (t2 - t1) / reps < 1e-3, (type(plan).__name__, t1 - t0, t2 - t1)
