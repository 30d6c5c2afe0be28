"""The one QA pipeline (packing/qa/pipeline.py): questions -> windows -> model -> answers."""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from packing.qa import (
    BadRequest,
    QAPipeline,
    QASettings,
    best_answer,
    features_of,
    make_windows,
    window_count,
)
from packing.qa.windows import make_windows_batch

SEQ = 48
LONG = " ".join(f"w{i}" for i in range(60))  # two tokens per word: several windows at SEQ


def fake_model(features):
    """Logits that depend only on a window's own tokens (so any order or grouping of the
    windows gives the same answer): start peaks at the largest id, end one token later."""
    out = []
    for f in features:
        ids = np.asarray(f.input_ids, dtype=np.float64)
        s = ids / ids.max()
        out.append(SimpleNamespace(start_logits=s, end_logits=np.roll(s, 1)))
    return out


PAIRS = [
    ("what is it?", "red blue green"),
    ("who?", LONG),
    (" ".join(["why"] * 60), "too long a question"),
    ("\u200b", "no question tokens"),
    ("and this?", "Alice went home after the long day."),
]


def test_settings_are_validated_with_the_bad_value_in_the_message():
    assert QASettings(seq_len=SEQ).doc_stride == 128
    for bad, match in (
        ({"seq_len": 0}, "seq_len must be >= 1, got 0"),
        ({"seq_len": SEQ, "doc_stride": -1}, "doc_stride must be >= 0, got -1"),
        ({"seq_len": SEQ, "max_answer_tokens": 0}, "max_answer_tokens"),
        ({"seq_len": 48.0}, "seq_len must be an int, got 48.0"),
        ({"seq_len": True}, "must be an int"),
    ):
        with pytest.raises(ValueError, match=match):
            QASettings(**bad)


def test_settings_from_a_stats_block_ignore_other_keys():
    s = QASettings.from_mapping(
        {"seq_len": 64, "doc_stride": 16, "request_timeout_s": 30, "device": "cpu"}
    )
    assert s == QASettings(seq_len=64, doc_stride=16)
    with pytest.raises(TypeError):
        QASettings.from_mapping({"doc_stride": 16})  # seq_len is required


def test_answer_is_the_windows_and_spans_of_each_pair_alone(tok):
    qa = QAPipeline(
        tok, QASettings(seq_len=SEQ, doc_stride=8, max_query_tokens=30, max_answer_tokens=5)
    )
    got = qa.answer(PAIRS, fake_model)
    assert [isinstance(a, BadRequest) for a in got] == [False, False, True, True, False]
    for (q, c), a in zip(PAIRS, got):
        if isinstance(a, BadRequest):
            with pytest.raises(BadRequest, match=re.escape(str(a))):
                make_windows(tok, q, c, SEQ, doc_stride=8, max_query_tokens=30)
            continue
        windows = make_windows(tok, q, c, SEQ, doc_stride=8, max_query_tokens=30)
        outs = fake_model(features_of([windows]))
        want = best_answer(
            windows,
            [o.start_logits for o in outs],
            [o.end_logits for o in outs],
            c,
            max_answer_tokens=5,
        )
        assert a == want and a.text == c[a.start : a.end]
    assert got[0].to_json() == {
        "answer": got[0].text,
        "score": got[0].score,
        "start": got[0].start,
        "end": got[0].end,
    }


def test_the_model_runs_every_window_once_in_question_order(tok):
    qa = QAPipeline(tok, QASettings(seq_len=SEQ, doc_stride=8))
    calls = []

    def model(features):
        calls.append(features)
        return fake_model(features)

    qa.answer(PAIRS, model)
    per_q = make_windows_batch(tok, PAIRS, SEQ, doc_stride=8)
    (sent,) = calls
    assert (
        len(sent)
        == window_count(per_q)
        == sum(len(w) for w in per_q if not isinstance(w, BadRequest))
        > 3
    )
    flat = [w for wins in per_q if not isinstance(wins, BadRequest) for w in wins]
    for f, w in zip(sent, flat):
        np.testing.assert_array_equal(f.input_ids, w.input_ids)
        np.testing.assert_array_equal(f.token_type_ids, w.token_type_ids)


def test_no_model_call_when_no_pair_has_a_window(tok):
    qa = QAPipeline(tok, QASettings(seq_len=SEQ))

    def model(features):
        raise AssertionError("called")

    (a,) = qa.answer([PAIRS[3]], model)
    assert isinstance(a, BadRequest)


def test_answers_refuse_outputs_that_do_not_match_the_windows(tok):
    qa = QAPipeline(tok, QASettings(seq_len=SEQ, doc_stride=8))
    per_q = qa.tokenize(PAIRS[:2])
    outs = fake_model(features_of(per_q))
    with pytest.raises(ValueError, match="outputs for"):
        qa.answers(per_q, outs[:-1], [c for _, c in PAIRS[:2]])


def test_tokenize_from_many_threads_gives_the_serial_windows(tok):
    qa = QAPipeline(tok, QASettings(seq_len=SEQ, doc_stride=8))
    want = [qa.tokenize([p]) for p in PAIRS]
    got: dict[int, list] = {}
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        got[k] = [qa.tokenize([p]) for p in PAIRS * 3]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        for a, b in zip(got[k], want * 3):
            (a,), (b,) = a, b
            if isinstance(b, BadRequest):
                assert str(a) == str(b)
                continue
            assert len(a) == len(b)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x.input_ids, y.input_ids)
                np.testing.assert_array_equal(x.offsets, y.offsets)


def test_from_model_dir_takes_seq_len_from_the_manifest(tiny_model_dir):
    from packing.model.manifest import Manifest

    seq_len = Manifest.read(tiny_model_dir).seq_len
    qa = QAPipeline.from_model_dir(tiny_model_dir, {"doc_stride": 16, "device": "cpu"})
    assert qa.settings == QASettings(seq_len=seq_len, doc_stride=16)
    assert (
        QAPipeline.from_model_dir(tiny_model_dir, {"seq_len": seq_len}).settings.seq_len == seq_len
    )
    with pytest.raises(ValueError, match=f"seq_len {seq_len + 1} but .* seq_len {seq_len}"):
        QAPipeline.from_model_dir(tiny_model_dir, {"seq_len": seq_len + 1})


def test_first_problem_names_the_limit_and_the_count(tok):
    from packing.qa.pipeline import first_problem
    from packing.qa.requests import Limits, TooLarge

    qa = QAPipeline(tok, QASettings(seq_len=SEQ, doc_stride=8, max_query_tokens=16))
    per_q = qa.tokenize(
        [
            ("what is it?", "red blue green"),
            ("who?", LONG),
            ("who?", "!" * 400),
            (" ".join(["why"] * 60), "too long"),
        ]
    )
    counts = [len(w) for w in per_q[:3]]
    assert counts[0] == 1 and 1 < counts[1] < counts[2]
    roomy = Limits(max_windows_per_request=counts[2], max_windows_per_body=sum(counts))
    assert first_problem(per_q[:3], roomy) is None
    k, error = first_problem(per_q, roomy)  # the question too long for its windows
    assert k == 3 and type(error) is BadRequest
    k, error = first_problem(
        per_q, Limits(max_windows_per_request=counts[2] - 1, max_windows_per_body=1000)
    )
    assert k == 2 and isinstance(error, TooLarge)
    assert str(error) == (
        f"the context takes {counts[2]} model windows; at most "
        f"{counts[2] - 1} allowed per question (max_windows_per_request)"
    )
    k, error = first_problem(
        per_q[:3],
        Limits(max_windows_per_request=counts[2], max_windows_per_body=counts[0] + counts[1]),
    )
    assert k is None and isinstance(error, TooLarge)
    assert f"take {sum(counts)} model windows; at most {counts[0] + counts[1]}" in str(error)


def test_window_limits_must_fit_the_packer():
    from pydantic import ValidationError

    from deployments.config import AppConfig

    with pytest.raises(
        ValidationError,
        match=r"max_windows_per_body \(5000\) must be <= "
        r"packing.max_pending \(4096\)",
    ):
        AppConfig(limits={"max_windows_per_body": 5000})
    with pytest.raises(
        ValidationError,
        match=r"max_windows_per_request \(300\) must be <= "
        r"limits.max_windows_per_body \(200\)",
    ):
        AppConfig(limits={"max_windows_per_request": 300, "max_windows_per_body": 200})
    with pytest.raises(ValueError, match="max_windows_per_body must be >= 1, got 0"):
        from packing.qa.requests import Limits

        Limits(max_windows_per_body=0)
