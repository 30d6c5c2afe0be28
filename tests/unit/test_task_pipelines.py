"""The embed and classify pipelines (packing/tasks): texts, pairs and token ids -> model inputs
(one tokenizer batch call, truncation on and off), model results -> vectors, scores, ranks.
The tokenizer is the bundled bert-base-uncased one; model results are stand-in ``Pooled``."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from packing.model.task import TaskSpec
from packing.qa.requests import BadRequest, TooLarge
from packing.runtime.features import Features, Pooled
from packing.tasks import (
    ClassifyPipeline,
    EmbedPipeline,
    SequenceTokenizer,
    cosine,
    default_function,
    first_problem,
    item_names,
    tei_function,
    token_count,
)
from packing.tasks.classify import apply_function
from packing.tasks.sequences import input_chars

SEQ = 16
LONG = "word " * 40  # 40 word tokens + 2 specials
THREE = TaskSpec(task="classify", labels=("neg", "neu", "pos"))
RERANKER = TaskSpec(task="classify", labels=("LABEL_0",), problem_type="regression")


def pooled(*rows) -> list[Pooled]:
    return [Pooled(np.asarray(r, dtype=np.float32)) for r in rows]


def test_texts_become_one_sequence_each_with_special_tokens(tok):
    got = EmbedPipeline(tok, SEQ).encode(["Hello world", "a"], truncate=False)
    want = tok(["Hello world", "a"])
    assert [f.input_ids.tolist() for f in got] == want["input_ids"]
    assert all(f.token_type_ids.tolist() == [0] * len(f) for f in got)
    assert got[0].input_ids[0] == tok.cls_token_id and got[0].input_ids[-1] == tok.sep_token_id


def test_one_tokenizer_batch_call_per_encode(tok):
    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __call__(self, *args, **kwargs):
            calls.append(args[0])
            return self.inner(*args, **kwargs)

    pipe = ClassifyPipeline(Counting(tok), SEQ, THREE)
    pipe.encode(["a", ("q", "t"), "b c"], truncate=False)
    assert calls == [["a", ("q", "t"), "b c"]]
    pipe.encode([], truncate=False)  # nothing to tokenize: no call (the tokenizer refuses [])
    assert len(calls) == 1


def test_an_input_over_seq_len_is_413_without_truncate_and_cut_with_it(tok):
    pipe = EmbedPipeline(tok, SEQ)
    short, long_ = pipe.encode(["short", LONG], truncate=False)
    assert isinstance(short, Features) and isinstance(long_, TooLarge)
    assert str(long_) == f"input is 42 tokens; at most {SEQ} fit the model"
    cut = pipe.encode([LONG], truncate=True)[0]
    assert len(cut) == SEQ and cut.input_ids[-1] == tok.sep_token_id
    exact = "word " * (SEQ - 2)  # exactly seq_len tokens: fits without truncation
    assert len(pipe.encode([exact], truncate=False)[0]) == SEQ


def test_pairs_get_token_types_and_longest_first_truncation(tok):
    pipe = ClassifyPipeline(tok, SEQ, THREE)
    (pair,) = pipe.encode([("a query", "the text")], truncate=False)
    want = tok("a query", "the text")
    assert pair.input_ids.tolist() == want["input_ids"]
    assert pair.token_type_ids.tolist() == want["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    (big,) = pipe.encode([("a query", LONG)], truncate=False)
    assert str(big) == f"input (text and text_pair) is 45 tokens; at most {SEQ} fit the model"
    (cut,) = pipe.encode([("a query", LONG)], truncate=True)
    assert len(cut) == SEQ and cut.token_type_ids.tolist()[:4] == [0, 0, 0, 0]
    assert cut.input_ids[1:3].tolist() == tok("a query")["input_ids"][1:3]  # query kept whole


def test_token_ids_are_taken_as_given_within_the_vocabulary(tok):
    pipe = EmbedPipeline(tok, SEQ)
    ids, bad, empty, long_ = pipe.encode(
        [[5, 6, 7], [1, 40000], [], list(range(1, 30))], truncate=False
    )
    assert ids.input_ids.tolist() == [5, 6, 7] and ids.token_type_ids.tolist() == [0, 0, 0]
    assert str(bad) == "token id 40000 is outside the vocabulary [0, 30522)"
    assert isinstance(empty, BadRequest) and "empty list of token ids" in str(empty)
    assert isinstance(long_, TooLarge)
    assert pipe.encode([list(range(1, 30))], truncate=True)[0].input_ids.tolist() == list(
        range(1, SEQ + 1)
    )


def test_first_problem_names_the_item_and_the_route_hint(tok):
    pipe = EmbedPipeline(tok, SEQ)
    encoded = pipe.encode(["ok", LONG, [99999]], truncate=False)
    names = item_names("texts", 3, True)
    assert names == ["texts[0]", "texts[1]", "texts[2]"] and item_names("x", 1, False) is None
    with pytest.raises(TooLarge) as info:
        first_problem(encoded, names, hint="; send truncate")
    assert str(info.value) == (
        f"texts[1]: input is 42 tokens; at most {SEQ} fit the model; send truncate"
    )
    with pytest.raises(TooLarge, match=r"^input is 42 tokens.*fit the model$"):
        first_problem(encoded[1:2])
    with pytest.raises(BadRequest, match=r"^texts\[1\]: token id 99999") as info:
        first_problem([encoded[0], encoded[2]], names, hint="; never for a bad id")
    assert not isinstance(info.value, TooLarge) and "never" not in str(info.value)
    ok = first_problem(encoded[:1])
    assert token_count(ok) == 3 and input_chars(["ab", ("c", "de"), (1, 2, 3)]) == 8


def test_vectors_are_normalised_as_asked_or_as_the_folder_says(tok):
    outs = pooled([3, 4], [0, 0], [1e-20, 0])
    unit = EmbedPipeline(tok, SEQ, normalize=True)
    raw = EmbedPipeline(tok, SEQ, normalize=False)
    a, zero, tiny = unit.vectors(outs)
    assert a.dtype == np.float32 and np.allclose(a, [0.6, 0.8])
    assert zero.tolist() == [0, 0]  # the norm's floor: no division by zero
    assert np.allclose(tiny, [1e-8, 0])  # 1e-20 / NORM_EPS
    assert raw.vectors(outs)[0].tolist() == [3, 4]
    assert np.allclose(raw.vectors(outs, normalize=True)[0], [0.6, 0.8])
    assert unit.vectors(outs, normalize=False)[0].tolist() == [3, 4]
    with pytest.raises(ValueError, match="sequence 1: non-finite"):
        unit.vectors(pooled([1, 2], [np.nan, 0]))


def test_cosine_is_sentence_similarity():
    assert cosine(
        np.array([1.0, 0]),
        [np.array([2.0, 0]), np.array([0, 3.0]), np.array([-1.0, 0]), np.zeros(2)],
    ) == [1.0, 0.0, -1.0, 0.0]
    assert cosine(np.array([3.0, 4]), [np.array([4.0, 3])]) == pytest.approx([24 / 25])


@pytest.mark.parametrize(
    "spec, function",
    [
        (THREE, "softmax"),
        (
            TaskSpec(task="classify", labels=("a", "b"), problem_type="multi_label_classification"),
            "sigmoid",
        ),
        (RERANKER, "none"),  # problem_type regression: raw, as the HF pipeline
        (TaskSpec(task="classify", labels=("only",)), "sigmoid"),  # one output, not regression
    ],
)
def test_default_score_function_is_the_hf_pipelines(spec, function):
    assert default_function(spec) == function


def test_tei_score_function():
    assert tei_function(3, False) == "softmax" and tei_function(1, False) == "sigmoid"
    assert tei_function(3, True) == tei_function(1, True) == "none"


def test_score_functions():
    x = np.array([1.0, 2.0, 3.0])
    soft = apply_function(x, "softmax")
    assert soft.sum() == pytest.approx(1.0) and soft.argmax() == 2
    assert np.allclose(apply_function(x, "sigmoid"), 1 / (1 + np.exp(-x)))
    assert apply_function(x, "none").tolist() == [1.0, 2.0, 3.0]
    assert apply_function(np.array([1000.0, 0.0]), "softmax").tolist() == [1.0, 0.0]  # stable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        assert apply_function(np.array([-1000.0, 1000.0]), "sigmoid").tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="score function must be one of"):
        apply_function(x, "relu")


def test_predictions_are_sorted_by_score_per_input(tok):
    pipe = ClassifyPipeline(tok, SEQ, THREE)
    got = pipe.predictions(pooled([0.1, 2.0, -1.0], [5, 5, 1]))
    assert [p["label"] for p in got[0]] == ["neu", "neg", "pos"]
    assert [p["label"] for p in got[1]] == ["neg", "neu", "pos"]  # a tie keeps label order
    assert sum(p["score"] for p in got[0]) == pytest.approx(1.0)
    top = pipe.predictions(pooled([0.1, 2.0, -1.0]), "none", top_k=2)
    assert top == [[{"label": "neu", "score": 2.0}, {"label": "neg", "score": pytest.approx(0.1)}]]
    with pytest.raises(ValueError, match="sequence 0: 2 logits for 3 labels"):
        pipe.predictions(pooled([1, 2]))
    with pytest.raises(ValueError, match="non-finite"):
        pipe.predictions(pooled([1, np.inf, 2]))


def test_rerank_sorts_by_score_with_tei_scores(tok):
    pipe = ClassifyPipeline(tok, SEQ, RERANKER)
    assert pipe.is_reranker and not ClassifyPipeline(tok, SEQ, THREE).is_reranker
    outs = pooled([-1.0], [2.0], [0.5], [2.0])
    got = pipe.rerank(outs)
    assert [r["index"] for r in got] == [1, 3, 2, 0]  # ties: the lower index first
    assert got[0]["score"] == pytest.approx(1 / (1 + np.exp(-2.0))) and "text" not in got[0]
    raw = pipe.rerank(outs, raw_scores=True, texts=["a", "b", "c", "d"])
    assert raw[0] == {"index": 1, "score": 2.0, "text": "b"} and raw[-1]["score"] == -1.0
    with pytest.raises(ValueError, match="one output"):
        ClassifyPipeline(tok, SEQ, THREE).rerank(pooled([1, 2, 3]))


def test_pipelines_check_their_settings(tok):
    with pytest.raises(ValueError, match="seq_len must be an int >= 2"):
        SequenceTokenizer(tok, 1)
    with pytest.raises(ValueError, match="needs a classify task"):
        ClassifyPipeline(tok, SEQ, TaskSpec(task="embed"))


def test_encode_is_thread_safe(tok):
    """Concurrent calls on one pipeline give what each gives alone (calls are serialised:
    truncation is tokenizer state)."""
    pipe = EmbedPipeline(tok, SEQ)
    alone = [f.input_ids.tolist() for f in pipe.encode([LONG, "x y"], True)]
    errors = []

    def work(truncate):
        for _ in range(30):
            got = pipe.encode([LONG, "x y"], truncate)
            if truncate and [f.input_ids.tolist() for f in got] != alone:
                errors.append("truncated differently")
            if not truncate and not isinstance(got[0], TooLarge):
                errors.append("not refused")

    threads = [threading.Thread(target=work, args=(k % 2 == 0,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
