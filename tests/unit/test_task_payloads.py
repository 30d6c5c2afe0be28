"""The bodies of every task route (packing/tasks/payloads.py): good bodies parse to the request
the reference API means, bad ones are a BadRequest (HTTP 400) whose one line names the field
and shows the bad value."""

from __future__ import annotations

import pytest

from packing.qa.requests import BadRequest, Limits, QARequest, decode_json
from packing.tasks import payloads as p
from packing.tasks.payloads import (
    EmbedRequest,
    PredictRequest,
    QuestionAnsweringRequest,
    RerankRequest,
    SimilarityRequest,
    TextClassificationRequest,
)

L = Limits(max_batch_items=3, max_text_chars=20)
WINDOWS = {"doc_stride": 128, "max_question_len": 64, "max_seq_len": 384}


def qa(body):
    return p.hf_question_answering(body, L, 384, WINDOWS)


GOOD = [
    # OpenAI: a string, strings, token ids, token-id lists; model and user taken, unused
    (
        p.openai_embeddings,
        {"input": "a", "model": "any-id", "user": "u"},
        EmbedRequest(("a",), False, truncate=False),
    ),
    (
        p.openai_embeddings,
        {"input": ["a", "b"], "encoding_format": "base64", "dimensions": 384},
        EmbedRequest(("a", "b"), True, False, None, 384, "base64"),
    ),
    (p.openai_embeddings, {"input": [1, 2, 3]}, EmbedRequest(((1, 2, 3),), False, False)),
    (
        p.openai_embeddings,
        {"input": [[1, 2], "x"], "dimensions": None},
        EmbedRequest(((1, 2), "x"), True, False),
    ),
    (p.openai_embeddings, {"input": "e\u0301"}, EmbedRequest(("\u00e9",), False, False)),  # NFC
    # TEI /embed: normalize defaults to true, truncate to the app's auto_truncate
    (p.tei_embed, {"inputs": "a"}, EmbedRequest(("a",), False, False, True)),
    (
        p.tei_embed,
        {
            "inputs": ["a"],
            "normalize": False,
            "truncate": True,
            "truncation_direction": "Right",
            "prompt_name": None,
        },
        EmbedRequest(("a",), True, True, False),
    ),
    # HF feature-extraction: normalize defaults to the folder's (None)
    (
        p.hf_feature_extraction,
        {"inputs": ["a", "b"], "truncate": True, "encoding_format": "float"},
        EmbedRequest(("a", "b"), True, True, None),
    ),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}},
        SimilarityRequest("a", ("b", "c"), False),
    ),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncate": True}},
        SimilarityRequest("a", ("b",), True),
    ),
    # TEI /predict: a list starting with a string is ONE input (a pair), as in TEI
    (p.tei_predict, {"inputs": "a"}, PredictRequest(("a",), False, False, False)),
    (
        p.tei_predict,
        {"inputs": ["q", "t"], "raw_scores": True},
        PredictRequest((("q", "t"),), False, False, True),
    ),
    (p.tei_predict, {"inputs": ["only"]}, PredictRequest(("only",), False, False, False)),
    (
        p.tei_predict,
        {"inputs": [["a"], ["q", "t"]], "truncate": True},
        PredictRequest(("a", ("q", "t")), True, True, False),
    ),
    (
        p.tei_rerank,
        {"query": "q", "texts": ["a", "b"], "return_text": True},
        RerankRequest("q", ("a", "b"), False, False, True),
    ),
    (
        p.hf_text_classification,
        {"inputs": "a"},
        TextClassificationRequest(("a",), False, False, None, None),
    ),
    (
        p.hf_text_classification,
        {
            "inputs": [{"text": "q", "text_pair": "t"}, "b"],
            "parameters": {"top_k": 2, "function_to_apply": "none"},
        },
        TextClassificationRequest((("q", "t"), "b"), True, False, "none", 2),
    ),
    (
        p.hf_text_classification,
        {"inputs": {"text": "q"}, "parameters": {}},
        TextClassificationRequest(("q",), False, False, None, None),
    ),
]


@pytest.mark.parametrize("parse, body, want", GOOD)
def test_good_bodies(parse, body, want):
    assert parse(body, L, False) == want


def test_auto_truncate_is_the_default_only_where_the_body_does_not_say():
    assert p.openai_embeddings({"input": "a"}, L, True).truncate
    assert p.tei_embed({"inputs": "a"}, L, True).truncate
    assert not p.tei_embed({"inputs": "a", "truncate": False}, L, True).truncate
    assert p.tei_predict({"inputs": "a"}, L, True).truncate
    assert p.tei_rerank({"query": "q", "texts": ["t"]}, L, True).truncate
    assert p.hf_text_classification({"inputs": "a"}, L, True).truncate


BAD = [
    (p.openai_embeddings, [], "body must be a JSON object, got list"),
    (p.openai_embeddings, {"model": "m"}, "missing field 'input'"),
    (
        p.openai_embeddings,
        {"input": "a", "foo": 1, "bar": 2},
        "unknown fields 'foo', 'bar' (known: dimensions, encoding_format, input, model, user)",
    ),
    (
        p.openai_embeddings,
        {"input": 5},
        "input must be a string, a list of strings, a list of "
        "token ids or a list of token-id lists, got int",
    ),
    (p.openai_embeddings, {"input": []}, "input is an empty list; send at least one text"),
    (p.openai_embeddings, {"input": ["a", "b", "c", "d"]}, "input has 4 items; at most 3 allowed"),
    (
        p.openai_embeddings,
        {"input": ["a", 5]},
        "input[1] must be a string or a list of token ids, got int",
    ),
    (p.openai_embeddings, {"input": ["a", " "]}, "input[1] is empty or whitespace only"),
    (
        p.openai_embeddings,
        {"input": ["a", "x" * 21]},
        "input[1] is 21 characters; at most 20 allowed",
    ),
    (
        p.openai_embeddings,
        {"input": "a\x00"},
        "input contains control character U+0000 at position 1",
    ),
    (
        p.openai_embeddings,
        {"input": [[1, -2]]},
        "input[0][1] must be a token id (an integer from 0 to 2147483647), got -2",
    ),
    (
        p.openai_embeddings,
        {"input": [[1, True]]},
        "input[0][1] must be a token id (an integer from 0 to 2147483647), got True",
    ),
    (
        p.openai_embeddings,
        {"input": [7, 10**30]},
        "input[1] must be a token id (an integer from 0 to 2147483647), got "
        "1000000000000000000000000000000",
    ),
    (p.openai_embeddings, {"input": [[]]}, "input[0] is an empty list of token ids"),
    (
        p.openai_embeddings,
        {"input": "a", "encoding_format": "bytes"},
        "encoding_format must be one of 'float', 'base64', got 'bytes'",
    ),
    (
        p.openai_embeddings,
        {"input": "a", "dimensions": 0},
        "dimensions must be between 1 and 65536, got 0",
    ),
    (
        p.openai_embeddings,
        {"input": "a", "dimensions": "384"},
        "dimensions must be an integer, got '384'",
    ),
    (p.openai_embeddings, {"input": "a", "model": 3}, "model must be a string, got int"),
    (
        p.tei_embed,
        {"inputs": "a", "normalize": "yes"},
        "normalize must be true or false, got 'yes'",
    ),
    (
        p.tei_embed,
        {"inputs": "a", "prompt_name": "query"},
        "prompt_name is not supported: this app applies no prompt; put any prefix into the text",
    ),
    (
        p.tei_embed,
        {"inputs": "a", "truncation_direction": "left"},
        "truncation_direction 'left' is not supported: inputs are truncated on the right",
    ),
    (
        p.tei_embed,
        {"inputs": "a", "truncation_direction": "up"},
        "truncation_direction must be one of 'right', 'Right', 'left', 'Left', got 'up'",
    ),
    (p.hf_feature_extraction, {"inputs": [1, 2]}, "inputs[0] must be a string, got int"),
    (
        p.hf_feature_extraction,
        {"inputs": "a", "encoding_format": "base64"},
        "encoding_format 'base64' is served by POST /v1/embeddings; this route returns numbers",
    ),
    (
        p.hf_feature_extraction,
        {"inputs": "a", "parameters": {}},
        "unknown field 'parameters' (known: dimensions, encoding_format, inputs, normalize, "
        "prompt_name, truncate, truncation_direction)",
    ),
    (p.similarity, {"inputs": "a"}, "inputs must be a JSON object, got str"),
    (p.similarity, {"inputs": {"source_sentence": "a"}}, "missing field 'inputs.sentences'"),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": "b"}},
        "inputs.sentences must be a list of strings, got str",
    ),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": []}},
        "inputs.sentences is an empty list; send at least one sentence",
    ),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": ["b", "c", "d"]}},
        "inputs.sentences (with source_sentence) has 4 items; at most 3 allowed",
    ),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncate": 1}},
        "parameters.truncate must be true or false, got 1",
    ),
    (
        p.similarity,
        {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": []},
        "parameters must be a JSON object, got list",
    ),
    (
        p.tei_predict,
        {"inputs": ["a", "b", "c"]},
        "inputs is a list of 3 items starting with a string: one input is [text] or "
        "[text, text_pair]; a batch is a list of such lists",
    ),
    (
        p.tei_predict,
        {"inputs": []},
        "inputs must be a string, a pair [text, text_pair], or a "
        "batch: a list of [text] or [text, text_pair] lists, got an "
        "empty list",
    ),
    (
        p.tei_predict,
        {"inputs": [["a"], ["a", "b", "c"]]},
        "inputs[1] must be [text] or [text, text_pair], got a list of 3",
    ),
    (
        p.tei_predict,
        {"inputs": [["a"], "b"]},
        "inputs[1] must be [text] or [text, text_pair], got str",
    ),
    (p.tei_predict, {"inputs": [["a"]] * 4}, "inputs has 4 items; at most 3 allowed"),
    (
        p.tei_predict,
        {"inputs": "a", "raw_scores": "no"},
        "raw_scores must be true or false, got 'no'",
    ),
    (p.tei_rerank, {"query": "q"}, "missing field 'texts'"),
    (
        p.tei_rerank,
        {"texts": ["t"], "top_n": 1},
        "missing field 'query'; unknown field 'top_n' (known: query, raw_scores, return_text, "
        "texts, truncate, truncation_direction)",
    ),
    (p.tei_rerank, {"query": "q", "texts": []}, "texts is an empty list; send at least one text"),
    (p.tei_rerank, {"query": "q", "texts": "t"}, "texts must be a list of strings, got str"),
    (p.tei_rerank, {"query": "", "texts": ["t"]}, "query is empty or whitespace only"),
    (p.tei_rerank, {"query": "q", "texts": ["t", None]}, "texts[1] must be a string, got null"),
    (
        p.hf_text_classification,
        {"inputs": 3},
        "inputs must be a string or an object {text, text_pair}, got int",
    ),
    (
        p.hf_text_classification,
        {"inputs": "a", "parameters": {"top_k": 0}},
        "parameters.top_k must be between 1 and 100, got 0",
    ),
    (
        p.hf_text_classification,
        {"inputs": "a", "parameters": {"function_to_apply": "relu"}},
        "parameters.function_to_apply must be one of 'softmax', 'sigmoid', 'none', got 'relu'",
    ),
    (
        p.hf_text_classification,
        {"inputs": {"text": "a", "pair": "b"}},
        "unknown field 'inputs.pair' (known: text, text_pair)",
    ),
    (p.hf_text_classification, {"inputs": []}, "inputs is an empty list; send at least one text"),
]


@pytest.mark.parametrize("parse, body, message", BAD)
def test_bad_bodies_are_one_line_naming_the_field(parse, body, message):
    with pytest.raises(BadRequest) as info:
        parse(body, L, False)
    assert str(info.value) == message


def test_hf_question_answering_bodies():
    body = {"inputs": {"question": "q", "context": "c"}}
    assert qa(body) == QuestionAnsweringRequest(QARequest("q", "c"), 1, p.HF_MAX_ANSWER_LEN, False)
    got = qa(
        {
            **body,
            "parameters": {
                "top_k": 3,
                "max_answer_len": 10,
                "doc_stride": 128,
                "max_seq_len": 384,
                "max_question_len": 64,
                "handle_impossible_answer": True,
                "align_to_words": False,
            },
        }
    )
    assert got == QuestionAnsweringRequest(QARequest("q", "c"), 3, 10, True)
    assert qa({**body, "parameters": {}}).top_k == 1


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": {"question": "q"}}, "inputs: missing field 'context'"),
        ({"inputs": "q"}, "inputs must be an object {question, context}, got str"),
        (
            {"inputs": {"question": "q", "context": "c"}, "parameters": {"align_to_words": True}},
            "parameters.align_to_words true is not supported: answer spans are aligned to tokens "
            "(send false or leave it out)",
        ),
        (
            {"inputs": {"question": "q", "context": "c"}, "parameters": {"doc_stride": 64}},
            "parameters.doc_stride 64 is not available: this app's windows are fixed when it starts "
            "(doc_stride 128)",
        ),
        (
            {"inputs": {"question": "q", "context": "c"}, "parameters": {"max_answer_len": 400}},
            "parameters.max_answer_len must be between 1 and 384, got 400",
        ),
        (
            {"inputs": {"question": "q", "context": "c"}, "parameters": {"top_k": 101}},
            "parameters.top_k must be between 1 and 100, got 101",
        ),
        (
            {"inputs": {"question": "q", "context": "c"}, "parameters": {"topk": 2}},
            "unknown field 'parameters.topk' (known: align_to_words, doc_stride, "
            "handle_impossible_answer, max_answer_len, max_question_len, max_seq_len, top_k)",
        ),
    ],
)
def test_bad_hf_question_answering_bodies(body, message):
    with pytest.raises(BadRequest) as info:
        qa(body)
    assert str(info.value) == message


def test_dimensions_must_be_the_models():
    p.check_dimensions(None, 384)
    p.check_dimensions(384, 384)
    with pytest.raises(
        BadRequest,
        match=r"^dimensions 256 is not available: this model's "
        r"embeddings have 384 dimensions \(send 384 or leave "
        r"it out\)$",
    ):
        p.check_dimensions(256, 384)


def test_bodies_with_numbers_decode():
    """Numbers are valid in these bodies (top_k, dimensions, token ids); over-long ones and
    duplicate keys are refused as in a QA body."""
    assert decode_json(b'{"input": [101, 7592, 102], "dimensions": 384}', 1000) == {
        "input": [101, 7592, 102],
        "dimensions": 384,
    }
    with pytest.raises(BadRequest, match=r"JSON number of 101 characters \(at most 100\)$"):
        decode_json(b'{"top_k": ' + b"1" * 101 + b"}", 1000)
    with pytest.raises(BadRequest, match="'inputs' twice"):
        decode_json(b'{"inputs": "a", "inputs": "b"}', 1000)
    with pytest.raises(BadRequest, match="body is 13 bytes; at most 10 allowed"):
        decode_json(b'{"inputs": 1}', 10)


def _json_values():
    from hypothesis import strategies as st

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-5, 40000)
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=12,
    )


_KEYS = [
    "input",
    "inputs",
    "model",
    "encoding_format",
    "dimensions",
    "normalize",
    "truncate",
    "truncation_direction",
    "prompt_name",
    "raw_scores",
    "query",
    "texts",
    "return_text",
    "parameters",
    "source_sentence",
    "sentences",
    "question",
    "context",
    "top_k",
    "function_to_apply",
    "text",
    "text_pair",
    "user",
]


def test_any_json_body_parses_or_is_a_bad_request():
    """Whatever the JSON (the routes' own field names with values of any type), a parser
    returns its request or raises BadRequest, never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = _json_values()
    bodies = st.dictionaries(st.sampled_from(_KEYS), values, max_size=5) | values
    parsers = [
        lambda b: p.openai_embeddings(b, L, False),
        lambda b: p.tei_embed(b, L, True),
        lambda b: p.hf_feature_extraction(b, L, False),
        lambda b: p.similarity(b, L, False),
        lambda b: p.tei_predict(b, L, False),
        lambda b: p.tei_rerank(b, L, False),
        lambda b: p.hf_text_classification(b, L, False),
        qa,
    ]

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(body=bodies, nested=st.booleans())
    def check(body, nested):
        if nested and isinstance(body, dict):  # the nested objects of similarity and QA
            body = {"inputs": body, "parameters": body}
        for parse in parsers:
            try:
                parse(body)
            except BadRequest as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 500

    check()
