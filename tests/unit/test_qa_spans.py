"""Answer spans scored as the HF question-answering pipeline scores them (packing/qa/spans.py),
checked against a line-by-line transcription of transformers' ``select_starts_ends`` and
``decode_spans`` (transformers/pipelines, checked against transformers 5.25's functions when
this was written), on the windows ``POST /v1/answer`` uses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from packing.qa.spans import ScoredSpan, probable_spans
from packing.qa.windows import make_windows

CONTEXT = " ".join(f"w{i}" for i in range(60))  # several windows at seq_len 48


def hf_reference(windows, outputs, cls_id, top_k, max_answer_len, handle_impossible):
    """transformers' pipeline: per window ``select_starts_ends`` (softmax over the context and
    [CLS], null score, [CLS] masked, ``decode_spans``), then all windows' answers sorted."""
    answers, null = [], 1e6
    for w, o in zip(windows, outputs):
        p_mask = (~w.context_mask).astype(int)
        p_mask[w.input_ids == cls_id] = 0
        undesired = np.abs(p_mask - 1)  # 1 where a token may be in the answer
        start = np.where(undesired == 0, -10000.0, o.start_logits)[None]
        end = np.where(undesired == 0, -10000.0, o.end_logits)[None]
        start = np.exp(start - start.max(axis=-1, keepdims=True))
        start = start / start.sum()
        end = np.exp(end - end.max(axis=-1, keepdims=True))
        end = end / end.sum()
        if handle_impossible:
            null = min(null, (start[0, 0] * end[0, 0]).item())
        start[0, 0] = end[0, 0] = 0.0
        candidates = np.tril(
            np.triu(np.matmul(start[..., None], end[:, None, :])), max_answer_len - 1
        )
        flat = candidates.flatten()
        if top_k == 1:
            order = [np.argmax(flat)]
        elif len(flat) <= top_k:
            order = np.argsort(-flat)
        else:
            idx = np.argpartition(-flat, top_k)[0:top_k]
            order = idx[np.argsort(-flat[idx])]
        starts, ends = np.unravel_index(order, candidates.shape)[1:]
        keep = np.isin(starts, undesired.nonzero()) & np.isin(ends, undesired.nonzero())
        for s, e in zip(starts[keep], ends[keep]):
            answers.append((float(candidates[0, s, e]), int(w.offsets[s, 0]), int(w.offsets[e, 1])))
    if handle_impossible:
        answers.append((null, 0, 0))
    return sorted(answers, key=lambda a: a[0], reverse=True)[:top_k]


@pytest.fixture(scope="module")
def case(tok):
    windows = make_windows(tok, "which one?", CONTEXT, 48, doc_stride=8)
    rng = np.random.default_rng(0)
    outputs = [
        SimpleNamespace(
            start_logits=rng.normal(size=len(w)) * 3, end_logits=rng.normal(size=len(w)) * 3
        )
        for w in windows
    ]
    return windows, outputs


@pytest.mark.parametrize(
    "top_k, max_answer_len, impossible",
    [(1, 15, False), (5, 15, False), (3, 4, True), (10, 2, True), (2, 1, False)],
)
def test_spans_are_the_hf_pipelines(tok, case, top_k, max_answer_len, impossible):
    windows, outputs = case
    assert len(windows) > 1
    got = probable_spans(windows, outputs, CONTEXT, top_k, max_answer_len, impossible)
    want = hf_reference(windows, outputs, tok.cls_token_id, top_k, max_answer_len, impossible)
    assert [(s.start, s.end) for s in got] == [(a, b) for _, a, b in want]
    assert np.allclose([s.score for s in got], [score for score, _, _ in want])
    for s in got:
        assert s.answer == CONTEXT[s.start : s.end] and 0 <= s.score <= 1
        assert s.to_json() == {"answer": s.answer, "score": s.score, "start": s.start, "end": s.end}


def test_a_sure_answer_has_a_probability_near_one(tok):
    (w,) = make_windows(tok, "who?", "Jane Austen wrote it.", 48)
    start = np.full(len(w), -10.0)
    end = np.full(len(w), -10.0)
    ctx = np.flatnonzero(w.context_mask)
    start[ctx[0]], end[ctx[1]] = 10.0, 10.0  # "jane austen"
    (best,) = probable_spans(
        [w], [SimpleNamespace(start_logits=start, end_logits=end)], "Jane Austen wrote it."
    )
    assert best.answer == "Jane Austen" and best.score == pytest.approx(1.0, abs=1e-6)
    start[0] = end[0] = 30.0  # the model says: no answer ([CLS])
    outs = [SimpleNamespace(start_logits=start, end_logits=end)]
    first, second = probable_spans(
        [w], outs, "Jane Austen wrote it.", top_k=2, handle_impossible_answer=True
    )
    assert first == ScoredSpan("", pytest.approx(1.0), 0, 0) and second.answer == "Jane Austen"


def test_bad_arguments_are_value_errors(case):
    windows, outputs = case
    with pytest.raises(ValueError, match="top_k and max_answer_len must be >= 1"):
        probable_spans(windows, outputs, CONTEXT, top_k=0)
    with pytest.raises(ValueError, match="windows but"):
        probable_spans(windows, outputs[:-1], CONTEXT)
    bad = [
        SimpleNamespace(start_logits=o.start_logits * np.nan, end_logits=o.end_logits)
        for o in outputs
    ]
    with pytest.raises(ValueError, match="non-finite"):
        probable_spans(windows, bad, CONTEXT)
