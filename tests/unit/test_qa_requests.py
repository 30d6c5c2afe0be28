"""Request-body validation: every rejection kind, its message, NFC, and robustness."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.qa import BadRequest, Limits, QARequest, parse_body, parse_payload

L = Limits()
OK = {"question": "Who?", "context": "Alice went home."}


def reject(obj, limits: Limits = L) -> str:
    with pytest.raises(BadRequest) as info:
        parse_payload(obj, limits)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_single_and_list():
    assert parse_payload(OK, L) == ([QARequest("Who?", "Alice went home.")], False)
    reqs, is_list = parse_payload([OK, {"question": "Q", "context": "C"}], L)
    assert is_list and [r.question for r in reqs] == ["Who?", "Q"]


def test_tab_newline_cr_allowed():
    reqs, _ = parse_payload({"question": "a\tb", "context": "x\r\ny\n"}, L)
    assert reqs[0].context == "x\r\ny\n"


@pytest.mark.parametrize(
    "obj, name", [("text", "str"), (3, "int"), (None, "null"), (True, "bool"), (1.5, "float")]
)
def test_top_level_type(obj, name):
    msg = reject(obj)
    assert "body must be an object" in msg and msg.endswith(f"got {name}")


def test_empty_list():
    assert "empty list" in reject([])


def test_too_many_items():
    msg = reject([OK] * 4, Limits(max_batch_items=3))
    assert msg == "body has 4 items; at most 3 allowed"
    assert parse_payload([OK] * 3, Limits(max_batch_items=3))[1]


def test_item_not_dict():
    assert reject([OK, "x"]) == (
        "item 1: expected an object with 'question' and 'context', got str"
    )


@pytest.mark.parametrize("field", ["question", "context"])
def test_missing_field(field):
    item = dict(OK)
    del item[field]
    assert reject(item) == f"missing field '{field}'"
    assert reject([OK, OK, item]) == f"item 2: missing field '{field}'"


def test_missing_both_and_typo():
    assert reject({}) == "missing fields 'question', 'context'"
    msg = reject({"questoin": "Who?", "context": "c"})
    assert msg == "missing field 'question'; unknown field 'questoin'"


def test_unknown_fields():
    assert reject({**OK, "id": 1, "top_k": 3}) == "unknown fields 'id', 'top_k'"
    msg = reject({**OK, "x" * 1000: 1})
    assert len(msg) < 100


@pytest.mark.parametrize("field", ["question", "context"])
@pytest.mark.parametrize(
    "value, name",
    [(1, "int"), (None, "null"), (["a"], "list"), ({"a": 1}, "dict"), (False, "bool")],
)
def test_non_string(field, value, name):
    item = {**OK, field: value}
    assert reject(item) == f"{field} must be a string, got {name}"
    assert reject([OK, OK, OK, item]) == f"item 3: {field} must be a string, got {name}"


@pytest.mark.parametrize("field", ["question", "context"])
@pytest.mark.parametrize("blank", ["", " ", "\n\t \r", "\u3000\u00a0"])
def test_blank(field, blank):
    assert reject({**OK, field: blank}) == f"{field} is empty or whitespace only"


def test_too_long():
    limits = Limits(max_question_chars=5, max_context_chars=10)
    assert reject({"question": "abcdef", "context": "c"}, limits) == (
        "question is 6 characters; at most 5 allowed"
    )
    assert reject(
        [{"question": "q", "context": "c"}, {"question": "q", "context": "x" * 11}], limits
    ) == ("item 1: context is 11 characters; at most 10 allowed")
    assert parse_payload({"question": "abcde", "context": "x" * 10}, limits)


def test_too_long_after_nfc():
    # U+FB2C is a composition exclusion: NFC turns it into three code points.
    limits = Limits(max_question_chars=2)
    msg = reject({"question": "\ufb2c", "context": "c"}, limits)
    assert msg == "question is 3 characters after NFC normalisation; at most 2 allowed"


@pytest.mark.parametrize(
    "char", ["\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]
)
def test_control_characters(char):
    assert reject({"question": "abcde" + char, "context": "c"}) == (
        f"question contains control character U+{ord(char):04X} at position 5"
    )
    assert reject([{"question": "q", "context": char}]) == (
        f"item 0: context contains control character U+{ord(char):04X} at position 0"
    )


def test_nul_message():
    assert reject({"question": "Who\x00?", "context": "c"}) == (
        "question contains control character U+0000 at position 3"
    )


@pytest.mark.parametrize("char", ["\ud800", "\udbff", "\udc00", "\udfff"])
def test_lone_surrogate(char):
    msg = reject({"question": "q", "context": "ab" + char})
    assert msg == (
        f"context contains lone surrogate U+{ord(char):04X} at position 2 (not valid Unicode)"
    )


def test_lone_surrogate_from_json_escape():
    obj = json.loads('{"question": "q\\ud800", "context": "c"}')
    assert "lone surrogate U+D800 at position 1" in reject(obj)


def test_nfc_normalisation():
    decomposed = "Cafe\u0301 re\u0301sume\u0301"  # e + combining acute
    reqs, _ = parse_payload({"question": "n\u0303?", "context": decomposed}, L)
    assert reqs[0].context == "Café résumé" == unicodedata.normalize("NFC", decomposed)
    assert reqs[0].question == "ñ?"
    assert len(reqs[0].context) == 11


def test_astral_characters_allowed():
    reqs, _ = parse_payload({"question": "😀?", "context": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"}, L)
    assert reqs[0].question == "😀?"


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"max_question_chars": 0}, "Limits.max_question_chars must be >= 1, got 0"),
        ({"max_context_chars": -5}, "Limits.max_context_chars must be >= 1, got -5"),
        ({"max_batch_items": 2.5}, "Limits.max_batch_items must be an int, got float 2.5"),
        ({"max_body_bytes": True}, "Limits.max_body_bytes must be an int, got bool True"),
    ],
)
def test_limits_validated(kwargs, msg):
    with pytest.raises(ValueError) as info:
        Limits(**kwargs)
    assert str(info.value) == msg


def test_parse_body():
    body = json.dumps([OK]).encode()
    assert parse_body(body, L) == ([QARequest(OK["question"], OK["context"])], True)
    assert parse_body(b"\xef\xbb\xbf" + body, L)[1]
    with pytest.raises(BadRequest, match=r"^body is 11 bytes; at most 10 allowed$"):
        parse_body(b"x" * 11, Limits(max_body_bytes=10))
    with pytest.raises(BadRequest, match=r"^body is not valid UTF-8 \(byte 1\)$"):
        parse_body(b"[\xff]", L)
    with pytest.raises(BadRequest, match=r"^body is not valid JSON: .* line 1 column 2$"):
        parse_body(b"{", L)
    with pytest.raises(BadRequest, match="NaN is not allowed"):
        parse_body(b'{"question": NaN}', L)
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_body(b"[" * 100_000 + b"]" * 100_000, Limits(max_body_bytes=10**6))


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(["question", "context", "id"]) | st.text(max_size=3), kids, max_size=4
        )
    ),
    max_leaves=12,
)
item_like = st.fixed_dictionaries(
    {"question": st.text(max_size=10) | json_like, "context": st.text(max_size=10) | json_like}
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_like, item_like, st.lists(item_like | json_like, max_size=5)))
def test_arbitrary_objects_only_raise_bad_request(obj):
    limits = Limits(max_batch_items=3, max_question_chars=6, max_context_chars=8)
    try:
        reqs, is_list = parse_payload(obj, limits)
    except BadRequest as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert is_list == isinstance(obj, list)
    for r in reqs:
        for text in (r.question, r.context):
            assert isinstance(text, str) and text.strip()
            assert unicodedata.is_normalized("NFC", text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "replace")))
def test_arbitrary_bytes_only_raise_bad_request(body):
    try:
        parse_body(body, L)
    except BadRequest as exc:
        assert "\n" not in str(exc)
