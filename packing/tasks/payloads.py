"""The bodies of the embed, classify and HF question-answering routes, parsed (pure).

Each parser takes a JSON-decoded body (:func:`packing.qa.requests.decode_json`) and returns a
frozen request, or raises :class:`~packing.qa.requests.BadRequest` with one line that names
the field as the client wrote it and shows the bad value (an HTTP 400). The shapes are those
of the APIs the clients already speak:

* OpenAI ``POST /v1/embeddings`` (:func:`openai_embeddings`),
* text-embeddings-inference (TEI) ``POST /embed``, ``/similarity``, ``/predict``, ``/rerank``,
* the Hugging Face Inference API on ``POST /`` (what ``huggingface_hub.InferenceClient``
  sends): feature-extraction, sentence-similarity, text-classification, question-answering.

Every text is checked as a QA question or context is (:func:`~packing.qa.requests.check_text`:
a non-blank string of at most ``limits.max_text_chars`` code points, no control characters or
lone surrogates, NFC-normalised); a list holds 1 to ``limits.max_batch_items`` items. Unknown
fields are refused, and so are the reference APIs' options this app cannot honour (a prompt
name, left truncation, token-aligned word spans), each with what the app does instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packing.policy.checks import is_int
from packing.qa.requests import (
    BadRequest,
    Limits,
    QARequest,
    check_text,
    parse_payload,
    short_repr,
    type_name,
)

from .classify import SCORE_FUNCTIONS
from .fields import check_fields, choice, expect_object, flag, given, integer

MAX_TOP_K = 100
"""Most answers or labels one HF question-answering or text-classification request may ask
for (``top_k``)."""

HF_MAX_ANSWER_LEN = 15
"""The HF question-answering pipeline's default ``max_answer_len``, in tokens."""

ENCODING_FORMATS = ("float", "base64")

MAX_TOKEN_ID = 2**31 - 1
"""Largest token id a body may hold: a larger integer is refused here, before any array is
made of it (the model's own vocabulary is checked by the pipeline)."""

_TRUNCATION_DIRECTIONS = ("right", "Right", "left", "Left")  # TEI's spellings


@dataclass(frozen=True)
class EmbedRequest:
    """Texts (or token-id lists, used as given) to embed, and how."""

    inputs: tuple[str | tuple[int, ...], ...]  # at least one
    is_list: bool  # the body gave a list (the response is per item either way)
    truncate: bool  # cut inputs over seq_len tokens (else 413)
    normalize: bool | None = None  # L2-normalise; None: the model folder's own choice
    dimensions: int | None = None  # asked dimensions (must be the model's: check_dimensions)
    encoding_format: str = "float"  # "float" | "base64" (little-endian float32)


@dataclass(frozen=True)
class SimilarityRequest:
    """A source sentence compared with others (cosine of their embeddings)."""

    source_sentence: str
    sentences: tuple[str, ...]  # at least one
    truncate: bool


@dataclass(frozen=True)
class PredictRequest:
    """TEI ``/predict``: texts or (text, text_pair) pairs to classify."""

    inputs: tuple[str | tuple[str, str], ...]
    is_list: bool  # a batch: the response is a list per input
    truncate: bool
    raw_scores: bool  # logits instead of TEI's softmax / sigmoid


@dataclass(frozen=True)
class TextClassificationRequest:
    """HF text-classification: texts or ``{text, text_pair}`` pairs to classify."""

    inputs: tuple[str | tuple[str, str], ...]
    is_list: bool
    truncate: bool
    function: str | None  # one of SCORE_FUNCTIONS; None: the folder's default
    top_k: int | None  # most labels per input; None: all


@dataclass(frozen=True)
class RerankRequest:
    """TEI ``/rerank``: texts ranked by a cross-encoder for one query."""

    query: str
    texts: tuple[str, ...]  # at least one
    truncate: bool
    raw_scores: bool
    return_text: bool


@dataclass(frozen=True)
class QuestionAnsweringRequest:
    """HF question-answering: one question and its context, and how many answers."""

    request: QARequest
    top_k: int
    max_answer_len: int  # tokens
    handle_impossible_answer: bool


# --- shared pieces ------------------------------------------------------------------------------


def _body(obj: Any) -> dict:
    return expect_object(obj, "body")


def _no_prompt_or_left(obj: Mapping[str, Any], where: str = "") -> None:
    """Refuse TEI's options this app does not have: a prompt name, left truncation."""
    if given(obj, "prompt_name"):
        raise BadRequest(
            f"{where}prompt_name is not supported: this app applies no prompt; "
            "put any prefix into the text"
        )
    direction = choice(obj, "truncation_direction", _TRUNCATION_DIRECTIONS, "right", where)
    if direction.lower() == "left":
        raise BadRequest(
            f"{where}truncation_direction 'left' is not supported: inputs are "
            "truncated on the right"
        )


def _token_ids(value: list, field: str, limits: Limits) -> tuple[int, ...]:
    if not value:
        raise BadRequest(f"{field} is an empty list of token ids")
    if len(value) > limits.max_text_chars:
        raise BadRequest(
            f"{field} has {len(value)} token ids; at most {limits.max_text_chars} allowed"
        )
    for k, x in enumerate(value):
        if not is_int(x) or not 0 <= x <= MAX_TOKEN_ID:
            raise BadRequest(
                f"{field}[{k}] must be a token id (an integer from 0 to "
                f"{MAX_TOKEN_ID}), got {short_repr(x)}"
            )
    return tuple(value)


def _count(n: int, field: str, limits: Limits) -> None:
    if n > limits.max_batch_items:
        raise BadRequest(f"{field} has {n} items; at most {limits.max_batch_items} allowed")


def _text(value: Any, field: str, limits: Limits) -> str:
    return check_text(value, field, limits.max_text_chars)


def _texts(
    value: Any, field: str, limits: Limits, ids: bool
) -> tuple[tuple[str | tuple[int, ...], ...], bool]:
    """A string, or a list of strings (with ``ids``: also one list of token ids, or a list
    mixing strings and token-id lists): ``(items, is_list)``."""
    shapes = (
        "a string, a list of strings, a list of token ids or a list of token-id lists"
        if ids
        else "a string or a list of strings"
    )
    if isinstance(value, str):
        return (_text(value, field, limits),), False
    if not isinstance(value, list):
        raise BadRequest(f"{field} must be {shapes}, got {type_name(value)}")
    if not value:
        raise BadRequest(f"{field} is an empty list; send at least one text")
    if ids and all(is_int(x) for x in value):
        return (_token_ids(value, field, limits),), False
    _count(len(value), field, limits)
    items: list[str | tuple[int, ...]] = []
    for k, x in enumerate(value):
        name = f"{field}[{k}]"
        if isinstance(x, str):
            items.append(_text(x, name, limits))
        elif ids and isinstance(x, list):
            items.append(_token_ids(x, name, limits))
        else:
            what = "a string or a list of token ids" if ids else "a string"
            raise BadRequest(f"{name} must be {what}, got {type_name(x)}")
    return tuple(items), True


def check_dimensions(dimensions: int | None, hidden_size: int) -> None:
    """Refuse (BadRequest) ``dimensions`` other than the model's ``hidden_size``: this app
    returns whole embeddings (no Matryoshka truncation)."""
    if dimensions is not None and dimensions != hidden_size:
        raise BadRequest(
            f"dimensions {dimensions} is not available: this model's embeddings "
            f"have {hidden_size} dimensions (send {hidden_size} or leave it out)"
        )


# --- embeddings ---------------------------------------------------------------------------------


def openai_embeddings(obj: Any, limits: Limits, auto_truncate: bool) -> EmbedRequest:
    """OpenAI's create-embeddings body: ``input`` (a string, a list of strings, a list of
    token ids or a list of token-id lists; required), ``model`` (a string; any id is taken,
    the response names the served one), ``encoding_format`` (``float`` default, or
    ``base64``), ``dimensions`` (an int >= 1), ``user`` (a string, unused). OpenAI's API has
    no truncation option: inputs are truncated when the app's ``auto_truncate`` is set, and
    the folder decides normalisation."""
    body = _body(obj)
    check_fields(body, ("input",), ("model", "encoding_format", "dimensions", "user"))
    for key in ("model", "user"):
        if given(body, key) and not isinstance(body[key], str):
            raise BadRequest(f"{key} must be a string, got {type_name(body[key])}")
    inputs, is_list = _texts(body["input"], "input", limits, ids=True)
    return EmbedRequest(
        inputs,
        is_list,
        truncate=auto_truncate,
        dimensions=integer(body, "dimensions", 1, 1 << 16),
        encoding_format=choice(body, "encoding_format", ENCODING_FORMATS, "float"),
    )


def tei_embed(obj: Any, limits: Limits, auto_truncate: bool) -> EmbedRequest:
    """TEI's ``/embed`` body: ``inputs`` (a string, a list of strings, token ids or token-id
    lists; required), ``normalize`` (default true, as in TEI), ``truncate`` (default: the app's
    ``auto_truncate``), ``dimensions`` (only the model's own), ``truncation_direction``
    (``right`` only), ``prompt_name`` (refused)."""
    body = _body(obj)
    check_fields(
        body,
        ("inputs",),
        ("normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"),
    )
    _no_prompt_or_left(body)
    inputs, is_list = _texts(body["inputs"], "inputs", limits, ids=True)
    return EmbedRequest(
        inputs,
        is_list,
        truncate=flag(body, "truncate", auto_truncate),
        normalize=flag(body, "normalize", True),
        dimensions=integer(body, "dimensions", 1, 1 << 16),
    )


def hf_feature_extraction(obj: Any, limits: Limits, auto_truncate: bool) -> EmbedRequest:
    """The HF Inference API's feature-extraction body, as ``InferenceClient.feature_extraction``
    sends it (options at the top level): ``inputs`` (a string or a list of strings;
    required), ``normalize`` (default: the folder's choice), ``truncate`` (default: the app's
    ``auto_truncate``), ``dimensions`` (only the model's own), ``encoding_format`` (``float``
    only: the client reads numbers), ``truncation_direction`` (``right`` only),
    ``prompt_name`` (refused)."""
    body = _body(obj)
    check_fields(
        body,
        ("inputs",),
        (
            "normalize",
            "truncate",
            "truncation_direction",
            "prompt_name",
            "dimensions",
            "encoding_format",
        ),
    )
    _no_prompt_or_left(body)
    if choice(body, "encoding_format", ENCODING_FORMATS, "float") != "float":
        raise BadRequest(
            "encoding_format 'base64' is served by POST /v1/embeddings; this route returns numbers"
        )
    inputs, is_list = _texts(body["inputs"], "inputs", limits, ids=False)
    return EmbedRequest(
        inputs,
        is_list,
        truncate=flag(body, "truncate", auto_truncate),
        normalize=flag(body, "normalize", None),  # type: ignore[arg-type]
        dimensions=integer(body, "dimensions", 1, 1 << 16),
    )


def similarity(obj: Any, limits: Limits, auto_truncate: bool) -> SimilarityRequest:
    """The sentence-similarity body of TEI's ``/similarity`` and of the HF Inference API:
    ``inputs: {source_sentence, sentences}`` (a string and a non-empty list of strings; with
    the source, at most ``max_batch_items`` texts) and optional ``parameters``
    (``truncate``, default the app's ``auto_truncate``; ``truncation_direction`` right only;
    ``prompt_name`` refused)."""
    body = _body(obj)
    check_fields(body, ("inputs",), ("parameters",))
    inputs = expect_object(body["inputs"], "inputs")
    check_fields(inputs, ("source_sentence", "sentences"), (), "inputs.")
    params = (
        {} if body.get("parameters") is None else expect_object(body["parameters"], "parameters")
    )
    check_fields(params, (), ("truncate", "truncation_direction", "prompt_name"), "parameters.")
    _no_prompt_or_left(params, "parameters.")
    source = _text(inputs["source_sentence"], "inputs.source_sentence", limits)
    sentences = inputs["sentences"]
    if not isinstance(sentences, list):
        raise BadRequest(f"inputs.sentences must be a list of strings, got {type_name(sentences)}")
    if not sentences:
        raise BadRequest("inputs.sentences is an empty list; send at least one sentence")
    _count(len(sentences) + 1, "inputs.sentences (with source_sentence)", limits)
    return SimilarityRequest(
        source,
        tuple(_text(s, f"inputs.sentences[{k}]", limits) for k, s in enumerate(sentences)),
        truncate=flag(params, "truncate", auto_truncate, "parameters."),
    )


# --- classification -----------------------------------------------------------------------------


def _sequence(value: Any, field: str, limits: Limits) -> str | tuple[str, str]:
    """TEI's one input inside a batch: ``[text]`` or ``[text, text_pair]``."""
    if not isinstance(value, list) or not 1 <= len(value) <= 2:
        got = f"a list of {len(value)}" if isinstance(value, list) else type_name(value)
        raise BadRequest(f"{field} must be [text] or [text, text_pair], got {got}")
    texts = [_text(t, f"{field}[{k}]", limits) for k, t in enumerate(value)]
    return texts[0] if len(texts) == 1 else (texts[0], texts[1])


def tei_predict(obj: Any, limits: Limits, auto_truncate: bool) -> PredictRequest:
    """TEI's ``/predict`` body: ``inputs`` is a string, one pair ``[text, text_pair]`` (a list
    whose first item is a string is ONE input, as in TEI), or a batch: a list of ``[text]`` /
    ``[text, text_pair]`` lists; ``raw_scores`` (default false), ``truncate`` (default: the
    app's ``auto_truncate``), ``truncation_direction`` (``right`` only)."""
    body = _body(obj)
    check_fields(body, ("inputs",), ("truncate", "truncation_direction", "raw_scores"))
    _no_prompt_or_left(body)
    value = body["inputs"]
    shapes = (
        "a string, a pair [text, text_pair], or a batch: a list of [text] or "
        "[text, text_pair] lists"
    )
    if isinstance(value, str):
        inputs, is_list = (_text(value, "inputs", limits),), False
    elif not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type_name(value)
        raise BadRequest(f"inputs must be {shapes}, got {got}")
    elif isinstance(value[0], str):
        if len(value) > 2:
            raise BadRequest(
                f"inputs is a list of {len(value)} items starting with a string: "
                "one input is [text] or [text, text_pair]; a batch is a list of "
                "such lists"
            )
        inputs, is_list = (_sequence(value, "inputs", limits),), False
    else:
        _count(len(value), "inputs", limits)
        inputs = tuple(_sequence(x, f"inputs[{k}]", limits) for k, x in enumerate(value))
        is_list = True
    return PredictRequest(
        inputs,
        is_list,
        truncate=flag(body, "truncate", auto_truncate),
        raw_scores=flag(body, "raw_scores", False),
    )


def tei_rerank(obj: Any, limits: Limits, auto_truncate: bool) -> RerankRequest:
    """TEI's ``/rerank`` body: ``query`` (a string) and ``texts`` (a non-empty list of at most
    ``max_batch_items`` strings), both required; ``raw_scores``, ``return_text`` (default
    false), ``truncate`` (default: the app's ``auto_truncate``), ``truncation_direction``
    (``right`` only)."""
    body = _body(obj)
    check_fields(
        body, ("query", "texts"), ("truncate", "truncation_direction", "raw_scores", "return_text")
    )
    _no_prompt_or_left(body)
    query = _text(body["query"], "query", limits)
    texts = body["texts"]
    if not isinstance(texts, list):
        raise BadRequest(f"texts must be a list of strings, got {type_name(texts)}")
    if not texts:
        raise BadRequest("texts is an empty list; send at least one text")
    _count(len(texts), "texts", limits)
    return RerankRequest(
        query,
        tuple(_text(t, f"texts[{k}]", limits) for k, t in enumerate(texts)),
        truncate=flag(body, "truncate", auto_truncate),
        raw_scores=flag(body, "raw_scores", False),
        return_text=flag(body, "return_text", False),
    )


def _hf_text_input(value: Any, field: str, limits: Limits) -> str | tuple[str, str]:
    if isinstance(value, str):
        return _text(value, field, limits)
    if isinstance(value, dict):
        check_fields(value, ("text",), ("text_pair",), f"{field}.")
        text = _text(value["text"], f"{field}.text", limits)
        if value.get("text_pair") is None:
            return text
        return text, _text(value["text_pair"], f"{field}.text_pair", limits)
    raise BadRequest(
        f"{field} must be a string or an object {{text, text_pair}}, got {type_name(value)}"
    )


def hf_text_classification(
    obj: Any, limits: Limits, auto_truncate: bool
) -> TextClassificationRequest:
    """The HF Inference API's text-classification body, as
    ``InferenceClient.text_classification`` sends it: ``inputs`` (a string; also an object
    ``{text, text_pair}`` or a list of either), ``parameters.function_to_apply``
    (``softmax``, ``sigmoid`` or ``none``; default: the folder's, as the HF pipeline picks it),
    ``parameters.top_k`` (1 to :data:`MAX_TOP_K`; default: every label). Inputs over
    ``seq_len`` tokens are truncated when the app's ``auto_truncate`` is set."""
    body = _body(obj)
    check_fields(body, ("inputs",), ("parameters",))
    params = (
        {} if body.get("parameters") is None else expect_object(body["parameters"], "parameters")
    )
    check_fields(params, (), ("function_to_apply", "top_k"), "parameters.")
    value = body["inputs"]
    if isinstance(value, list):
        if not value:
            raise BadRequest("inputs is an empty list; send at least one text")
        _count(len(value), "inputs", limits)
        inputs = tuple(_hf_text_input(x, f"inputs[{k}]", limits) for k, x in enumerate(value))
        is_list = True
    else:
        inputs, is_list = (_hf_text_input(value, "inputs", limits),), False
    return TextClassificationRequest(
        inputs,
        is_list,
        truncate=auto_truncate,
        function=choice(params, "function_to_apply", SCORE_FUNCTIONS, None, "parameters."),
        top_k=integer(params, "top_k", 1, MAX_TOP_K, "parameters."),
    )


# --- question answering (HF) --------------------------------------------------------------------


def hf_question_answering(
    obj: Any, limits: Limits, seq_len: int, windows: Mapping[str, int]
) -> QuestionAnsweringRequest:
    """The HF Inference API's question-answering body, as
    ``InferenceClient.question_answering`` sends it: ``inputs: {question, context}`` (checked
    as ``POST /v1/answer`` checks them) and optional ``parameters``: ``top_k`` (1 to
    :data:`MAX_TOP_K`, default 1), ``max_answer_len`` (1 to ``seq_len`` tokens, default
    :data:`HF_MAX_ANSWER_LEN`), ``handle_impossible_answer`` (default false),
    ``align_to_words`` (false only: spans are token-aligned), and ``doc_stride``,
    ``max_question_len``, ``max_seq_len``, accepted only at the app's own values
    (``windows``: the window settings it started with, by these names)."""
    body = _body(obj)
    check_fields(body, ("inputs",), ("parameters",))
    params = (
        {} if body.get("parameters") is None else expect_object(body["parameters"], "parameters")
    )
    fixed = ("doc_stride", "max_question_len", "max_seq_len")
    check_fields(
        params,
        (),
        ("top_k", "max_answer_len", "handle_impossible_answer", "align_to_words", *fixed),
        "parameters.",
    )
    if not isinstance(body["inputs"], dict):
        raise BadRequest(
            f"inputs must be an object {{question, context}}, got {type_name(body['inputs'])}"
        )
    try:
        (request,), _ = parse_payload(body["inputs"], limits)
    except BadRequest as exc:
        raise BadRequest(f"inputs: {exc}") from None
    if flag(params, "align_to_words", False, "parameters."):
        raise BadRequest(
            "parameters.align_to_words true is not supported: answer spans are "
            "aligned to tokens (send false or leave it out)"
        )
    for name in fixed:
        value = integer(params, name, 0, 1 << 20, "parameters.")
        if value is not None and value != windows[name]:
            raise BadRequest(
                f"parameters.{name} {value} is not available: this app's windows "
                f"are fixed when it starts ({name} {windows[name]})"
            )
    return QuestionAnsweringRequest(
        request,
        top_k=integer(params, "top_k", 1, MAX_TOP_K, "parameters.") or 1,
        max_answer_len=(
            integer(params, "max_answer_len", 1, seq_len, "parameters.") or HF_MAX_ANSWER_LEN
        ),
        handle_impossible_answer=flag(params, "handle_impossible_answer", False, "parameters."),
    )
