"""SQuAD-style windows over long contexts and best-span extraction from logits."""

from __future__ import annotations

import numpy as np
import pytest

from packing.qa import MIN_CONTEXT_TOKENS, Answer, BadRequest, Window, best_answer, make_windows

SEQ = 48
QUESTION = "what is it?"  # 4 tokens: [CLS] + 4 + [SEP] ... [SEP] leaves 41 context tokens
CAPACITY = SEQ - 3 - 4


def long_context(n: int = 60) -> str:
    return " ".join(f"w{i}" for i in range(n))  # "w12" -> "w", "##12": two tokens per word


def ctx_positions(w: Window) -> np.ndarray:
    return np.flatnonzero(w.context_mask)


def token_span(w: Window, start_char: int, end_char: int) -> tuple[int, int]:
    """First and last token of window ``w`` covering context characters [start, end)."""
    pos = ctx_positions(w)
    inside = pos[(w.offsets[pos, 0] >= start_char) & (w.offsets[pos, 1] <= end_char)]
    assert inside.size, (start_char, end_char)
    return int(inside[0]), int(inside[-1])


def one_window(tok, context: str):
    """The single window of ``QUESTION`` over a short ``context``, and zero start / end logits
    for it (the test then raises the ones it needs)."""
    (w,) = make_windows(tok, QUESTION, context, SEQ)
    return w, np.zeros(len(w)), np.zeros(len(w))


def peaked_logits(windows, spans: dict[int, tuple[int, int]], high: float = 10.0):
    """Zero logits everywhere except start/end peaks at ``spans[window] = (s, e)``."""
    starts, ends = [], []
    for w in windows:
        s = np.zeros(len(w), np.float32)
        e = np.zeros(len(w), np.float32)
        if w.window_index in spans:
            a, b = spans[w.window_index]
            s[a] = high
            e[b] = high
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_single_window_layout(tok):
    context = "Alice went home."
    (w,) = make_windows(tok, QUESTION, context, SEQ)
    toks = tok.convert_ids_to_tokens(w.input_ids.tolist())
    assert toks == [
        "[CLS]",
        "what",
        "is",
        "it",
        "?",
        "[SEP]",
        "alice",
        "went",
        "home",
        ".",
        "[SEP]",
    ]
    assert w.input_ids.dtype == np.int64 and w.token_type_ids.dtype == np.int64
    assert w.context_mask.dtype == bool and w.offsets.dtype == np.int64
    assert w.offsets.shape == (len(w), 2) and w.window_index == 0
    assert w.token_type_ids.tolist() == [0] * 6 + [1] * 5
    assert w.context_mask.tolist() == [False] * 6 + [True] * 4 + [False]
    assert (w.offsets[~w.context_mask] == -1).all()
    assert [context[a:b] for a, b in w.offsets[w.context_mask]] == ["Alice", "went", "home", "."]


def test_long_context_windows_overlap_and_cover(tok):
    context = long_context(60)
    stride = 10
    windows = make_windows(tok, QUESTION, context, SEQ, doc_stride=stride)
    assert len(windows) >= 3
    assert [w.window_index for w in windows] == list(range(len(windows)))
    covered = np.zeros(len(context), bool)
    all_tokens = tok(context, add_special_tokens=False, return_offsets_mapping=True)
    token_offsets = [tuple(o) for o in all_tokens["offset_mapping"]]
    for w in windows:
        assert len(w) <= SEQ
        assert w.input_ids[:6].tolist() == windows[0].input_ids[:6].tolist()  # question repeated
        for a, b in w.offsets[w.context_mask]:
            covered[a:b] = True
    # Every non-space character of the context lies in some window's context token.
    assert all(covered[i] or context[i] == " " for i in range(len(context)))
    # Windows are contiguous slices of the context's tokens, overlapping by exactly `stride`.
    first = []
    for w in windows:
        offs = [tuple(o) for o in w.offsets[w.context_mask].tolist()]
        i = token_offsets.index(offs[0])
        assert token_offsets[i : i + len(offs)] == offs
        first.append((i, len(offs)))
    for (i0, n0), (i1, _) in zip(first, first[1:]):
        assert n0 == CAPACITY
        assert i0 + n0 - i1 == stride  # overlap in tokens
    last_i, last_n = first[-1]
    assert last_i + last_n == len(token_offsets)


def test_stride_clamped_so_windows_advance(tok):
    context = long_context(30)
    windows = make_windows(tok, QUESTION, context, SEQ, doc_stride=1000)
    assert len(windows) > 1
    starts = [int(w.offsets[w.context_mask][0, 0]) for w in windows]
    assert starts == sorted(set(starts))  # strictly advancing
    n_tokens = len(tok(context, add_special_tokens=False)["input_ids"])
    assert len(windows) == n_tokens - CAPACITY + 1  # stride C - 1: one token per step


def test_default_stride_with_short_seq_len_does_not_panic(tok):
    windows = make_windows(tok, QUESTION, long_context(40), SEQ)  # 128 > capacity 41
    assert all(len(w) <= SEQ for w in windows)


def test_question_too_long_for_max_query_tokens(tok):
    question = " ".join(["why"] * 11)
    with pytest.raises(BadRequest, match=r"^question is 11 tokens; at most 10 fit$"):
        make_windows(tok, question, "some context", SEQ, max_query_tokens=10)
    assert make_windows(tok, " ".join(["why"] * 10), "some context", SEQ, max_query_tokens=10)


def test_question_too_long_for_seq_len(tok):
    room = SEQ - 3 - MIN_CONTEXT_TOKENS
    with pytest.raises(BadRequest, match=rf"^question is {room + 1} tokens; at most {room} fit$"):
        make_windows(tok, " ".join(["why"] * (room + 1)), "context", SEQ, max_query_tokens=100)
    windows = make_windows(
        tok, " ".join(["why"] * room), long_context(20), SEQ, max_query_tokens=100
    )
    assert all(w.context_mask.sum() <= MIN_CONTEXT_TOKENS for w in windows)
    assert windows[0].context_mask.sum() == MIN_CONTEXT_TOKENS


def test_texts_without_tokens(tok):
    with pytest.raises(BadRequest, match="^context has no tokens"):
        make_windows(tok, QUESTION, "\u200b\u200b", SEQ)
    with pytest.raises(BadRequest, match="^question has no tokens"):
        make_windows(tok, "\u200b", "context", SEQ)


def test_bad_config(tok):
    with pytest.raises(ValueError, match="seq_len 19 too small"):
        make_windows(tok, "q", "c", 19)
    with pytest.raises(ValueError, match="doc_stride"):
        make_windows(tok, "q", "c", SEQ, doc_stride=-1)


def test_best_answer_in_second_window(tok):
    context = long_context(40) + " zebra " + long_context(40)
    windows = make_windows(tok, QUESTION, context, SEQ, doc_stride=8)
    start_char = context.index("zebra")
    # The word sits in window 1 and not in window 0.
    holder = [
        w.window_index for w in windows if (w.offsets[w.context_mask][:, 0] == start_char).any()
    ]
    assert holder[0] >= 1
    wi = holder[0]
    span = token_span(windows[wi], start_char, start_char + 5)
    starts, ends = peaked_logits(windows, {wi: span})
    ans = best_answer(windows, starts, ends, context)
    assert ans == Answer(text="zebra", score=20.0, start=start_char, end=start_char + 5, window=wi)


def test_tie_goes_to_lowest_window(tok):
    context = long_context(60)
    windows = make_windows(tok, QUESTION, context, SEQ, doc_stride=10)
    # A word in the overlap of windows 0 and 1, peaked identically in both.
    last0 = windows[0].offsets[windows[0].context_mask][-4]
    a, b = int(last0[0]), int(last0[1])
    spans = {0: token_span(windows[0], a, b), 1: token_span(windows[1], a, b)}
    starts, ends = peaked_logits(windows, spans)
    ans = best_answer(windows, starts, ends, context)
    assert ans.window == 0 and (ans.start, ans.end) == (a, b)
    starts[1][spans[1][0]] += 0.5  # now window 1 scores higher
    assert best_answer(windows, starts, ends, context).window == 1


def test_tie_within_window_lowest_start(tok):
    context = "red blue green"
    w, s, e = one_window(tok, context)
    pos = ctx_positions(w)
    s[pos] = 1.0
    e[pos] = 1.0  # every valid pair scores 2.0
    ans = best_answer([w], [s], [e], context)
    assert (ans.text, ans.start, ans.end) == ("red", 0, 3)


def test_max_answer_tokens(tok):
    context = "one two three four five six seven eight"
    w, s, e = one_window(tok, context)
    pos = ctx_positions(w)
    s[pos[1]] = 5.0  # "two"
    e[pos[6]] = 5.0  # "seven": a 6-token span
    assert best_answer([w], [s], [e], context).text == "two three four five six seven"
    ans = best_answer([w], [s], [e], context, max_answer_tokens=5)
    assert ans.score == 5.0
    span_tokens = [i for i in pos if w.offsets[i, 0] >= ans.start and w.offsets[i, 1] <= ans.end]
    assert 1 <= len(span_tokens) <= 5
    assert ans.text == context[ans.start : ans.end]


def test_non_context_tokens_ignored(tok):
    context = "Alice went home."
    w, s, e = one_window(tok, context)
    s[~w.context_mask] = 100.0  # [CLS], question and [SEP]
    e[~w.context_mask] = 100.0
    pos = ctx_positions(w)
    s[pos[1]] = 1.0
    e[pos[2]] = 1.0
    ans = best_answer([w], [s], [e], context)
    assert ans.text == "went home" and ans.score == 2.0


def test_fallback_when_top_k_has_no_valid_pair(tok):
    context = "one two three four"
    w, s, e = one_window(tok, context)
    pos = ctx_positions(w)
    s[pos[3]] = 9.0  # best start after best end
    e[pos[0]] = 8.0
    ans = best_answer([w], [s], [e], context, top_k=1)
    assert ans.text == "four" and ans.score == 9.0  # exhaustive: start "four", end "four"


def test_accented_context_offsets(tok):
    context = "Her résumé was naïve and well-written."
    (w,) = make_windows(tok, QUESTION, context, SEQ)
    a = context.index("naïve")
    starts, ends = peaked_logits([w], {0: token_span(w, a, a + 5)})
    assert best_answer([w], starts, ends, context).text == "naïve"


def test_best_answer_input_checks(tok):
    (w,) = make_windows(tok, QUESTION, "Alice went home.", SEQ)
    z = np.zeros(len(w))
    with pytest.raises(ValueError, match="no windows"):
        best_answer([], [], [], "x")
    with pytest.raises(ValueError, match="1 windows but 2 start"):
        best_answer([w], [z, z], [z], "x")
    with pytest.raises(ValueError, match="has 11 tokens but 10 start"):
        best_answer([w], [z[:-1]], [z], "x")
    with pytest.raises(ValueError, match="non-finite"):
        best_answer([w], [np.full(len(w), np.nan)], [z], "x")
    with pytest.raises(ValueError, match="max_answer_tokens"):
        best_answer([w], [z], [z], "x", max_answer_tokens=0)
    with pytest.raises(ValueError, match="top_k"):
        best_answer([w], [z], [z], "x", top_k=0)


def test_batch_windows_equal_one_pair_at_a_time(tok):
    """One batch call gives every pair exactly its own windows or its own error, whatever
    else is in the batch (long and short contexts, questions with different strides)."""
    from packing.qa.windows import make_windows_batch

    long_q = " ".join(["why"] * 40)  # too many tokens for SEQ
    mid_q = " ".join(["who"] * 20)  # room for 48-3-20 = 25 context tokens: stride clamps to 24
    pairs = [
        (QUESTION, long_context(60)),
        (long_q, "short"),
        (QUESTION, "tiny context"),
        ("\u200b", "zero-width question"),
        (mid_q, long_context(40)),
        (QUESTION, "\u200b"),
        ("where?", long_context(90)),
    ]
    got = make_windows_batch(tok, pairs, SEQ, doc_stride=30, max_query_tokens=30)
    assert len(got) == len(pairs)
    for (q, c), out in zip(pairs, got):
        try:
            want = make_windows(tok, q, c, SEQ, doc_stride=30, max_query_tokens=30)
        except BadRequest as exc:
            assert isinstance(out, BadRequest) and str(out) == str(exc)
            continue
        assert [w.window_index for w in out] == list(range(len(want)))
        for a, b in zip(out, want):
            for name in ("input_ids", "token_type_ids", "context_mask", "offsets"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert sum(isinstance(o, BadRequest) for o in got) == 3
    assert len(got[0]) > 1 and len(got[4]) > 1


def test_answers_for_splits_flat_outputs_per_question(tok):
    from types import SimpleNamespace

    from packing.qa.windows import answers_for

    c1, c2 = "red blue green", long_context()
    w1 = make_windows(tok, QUESTION, c1, SEQ)
    w2 = make_windows(tok, QUESTION, c2, SEQ)
    assert len(w2) > 1
    bad = BadRequest("question too long")

    def out(w, at):  # logits pointing at context token number ``at`` of window ``w``
        s = np.zeros(len(w))
        s[ctx_positions(w)[at]] = 5.0
        return SimpleNamespace(start_logits=s, end_logits=s.copy())

    outputs = [out(w1[0], 1)] + [out(w, 0) for w in w2]
    got = answers_for([w1, bad, w2], outputs, [c1, "unused", c2])
    assert got[0].text == "blue" and got[1] is bad
    want = best_answer(
        w2, [o.start_logits for o in outputs[1:]], [o.end_logits for o in outputs[1:]], c2
    )
    assert got[2] == want
    with pytest.raises(ValueError, match="outputs for"):
        answers_for([w1, w2], outputs[:-1], [c1, c2])


def reference_windows(
    tok, question: str, context: str, seq_len: int, doc_stride: int, max_query_tokens: int
):
    """Windows of one pair straight from the tokenizer, the stride from the question's own
    token count (the two-call rule), or the BadRequest text: an independent reference."""
    n = len(tok(question, add_special_tokens=False)["input_ids"])
    fit = min(max_query_tokens, seq_len - 3 - MIN_CONTEXT_TOKENS)
    if n > fit:
        return f"question is {n} tokens; at most {fit} fit"
    if n == 0:
        return "question has no tokens (only characters the tokenizer ignores)"
    enc = tok(
        question,
        context,
        truncation="only_second",
        max_length=seq_len,
        stride=min(doc_stride, seq_len - 3 - n - 1),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    out = []
    for i in range(len(enc["input_ids"])):
        mask = np.array([s == 1 for s in enc.sequence_ids(i)])
        offsets = np.where(mask[:, None], np.asarray(enc["offset_mapping"][i]), -1)
        out.append((np.asarray(enc["input_ids"][i]), mask, offsets))
    return out if all(m.any() for _, m, _ in out) else "context has no tokens"


@pytest.mark.parametrize("doc_stride,max_query_tokens", [(5, 10), (12, 29), (30, 30)])
def test_batch_windows_equal_the_tokenizer_pair_by_pair(tok, doc_stride, max_query_tokens):
    """Whichever way the batch is encoded (one call for all pairs when every question that
    fits shares the stride, as with (5, 10) and (12, 29); questions first otherwise), each
    pair gets the windows the tokenizer gives it alone, or its own error, also next to a
    question so long that the tokenizer refuses the whole one-call batch."""
    from packing.qa.windows import make_windows_batch

    pairs = [
        (QUESTION, long_context(60)),
        (" ".join(["why"] * 11), long_context(30)),
        (" ".join(["why"] * 60), "short"),
        (QUESTION, "tiny context"),
        ("\u200b", "zero-width question"),
        (QUESTION, "\u200b"),
        (" ".join(["who"] * 9), long_context(45)),
        ("where?", long_context(90)),
    ]
    for batch in (pairs, [p for k, p in enumerate(pairs) if k != 2]):  # with and without
        got = make_windows_batch(tok, batch, SEQ, doc_stride, max_query_tokens)
        for (q, c), out in zip(batch, got):
            want = reference_windows(tok, q, c, SEQ, doc_stride, max_query_tokens)
            if isinstance(want, str):
                assert isinstance(out, BadRequest) and str(out).startswith(want), (q, out)
                continue
            assert [w.window_index for w in out] == list(range(len(want))), q
            for w, (ids, mask, offsets) in zip(out, want):
                np.testing.assert_array_equal(w.input_ids, ids)
                np.testing.assert_array_equal(w.context_mask, mask)
                np.testing.assert_array_equal(w.offsets, offsets)
