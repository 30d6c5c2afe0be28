"""Validation of question-answering request bodies.

A request body is one JSON object ``{"question": str, "context": str}`` or a non-empty JSON
list of such objects. :func:`parse_payload` checks an already JSON-decoded body and returns
:class:`QARequest` objects; :func:`parse_body` also checks the raw bytes (size, UTF-8, JSON).
Every problem raises :class:`BadRequest` with a one-line message that names the field (and,
for list bodies, the item index) and the problem, suitable for an HTTP 400/422 response.

Both strings are returned in Unicode normalisation form NFC. Answer offsets produced later
(:mod:`packing.qa.windows`) are character offsets into the *NFC* context; the response does
not echo the client's original text, so clients that send non-NFC text should normalise it
themselves before using the offsets.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

FIELDS = ("question", "context")

# C0 controls except \t \n \r, DEL (U+007F), and C1 controls (U+0080..U+009F).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Lone UTF-16 surrogates: not Unicode scalar values (json.loads accepts "\ud800" escapes).
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadRequest(ValueError):
    """A client error; ``str(exc)`` is a one-line message naming the field and the problem."""


class TooLarge(BadRequest):
    """A request that is well formed but more work than the app takes at once (HTTP 413):
    sending it again cannot succeed, so it is never answered with a retryable 503."""


@dataclass(frozen=True)
class QARequest:
    """One validated question-answering request."""

    question: str  # NFC-normalised, non-blank, no control characters or lone surrogates
    context: str  # NFC-normalised, same rules; answer offsets index into this string


@dataclass(frozen=True)
class Limits:
    """Size limits on request bodies; each must be a positive int (checked on construction)."""

    max_question_chars: int = dataclasses.field(
        default=2_000,
        metadata={"description": "Most code points in a question (before and after NFC)."},
    )
    max_context_chars: int = dataclasses.field(
        default=100_000,
        metadata={"description": "Most code points in a context (before and after NFC)."},
    )
    max_batch_items: int = dataclasses.field(
        default=64,
        metadata={
            "description": "Most items in a list body: questions, texts to embed or classify, "
            "rerank texts, sentences compared (with the source sentence)."
        },
    )
    max_text_chars: int = dataclasses.field(
        default=100_000,
        metadata={
            "description": "Most code points in one text to embed or classify (before and after "
            "NFC); its tokens are limited by the model's `seq_len`."
        },
    )
    max_body_bytes: int = dataclasses.field(
        default=1_000_000, metadata={"description": "Largest raw body, in bytes (413 beyond)."}
    )
    max_windows_per_request: int = dataclasses.field(
        default=256,
        metadata={
            "description": "Most model windows one question's context may take (413 beyond; a "
            "100,000-character English context takes about 80 at seq_len 384, "
            "punctuation one token per character)."
        },
    )
    max_windows_per_body: int = dataclasses.field(
        default=1024,
        metadata={
            "description": "Most model windows all the questions of one body may take (413 "
            "beyond); at most the Packer's `max_pending`."
        },
    )

    def __post_init__(self) -> None:
        for name in (f.name for f in dataclasses.fields(self)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"Limits.{name} must be an int, got {type(value).__name__} {value!r}"
                )
            if value < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {value}")


def type_name(obj: Any) -> str:
    """JSON-flavoured type name for messages (``null`` rather than ``NoneType``)."""
    return "null" if obj is None else type(obj).__name__


def short_repr(obj: Any, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters; always one line (repr escapes newlines)."""
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_text(value: Any, field: str, max_chars: int, where: str = "") -> str:
    """``value`` NFC-normalised, or :class:`BadRequest` naming ``where`` + ``field``: it must be
    a string of at most ``max_chars`` code points (before and after NFC), without lone
    surrogates or control characters other than tab, newline and carriage return, and not
    blank. Every text field of every route is checked by this one function."""
    if not isinstance(value, str):
        raise BadRequest(f"{where}{field} must be a string, got {type_name(value)}")
    if len(value) > max_chars:
        raise BadRequest(f"{where}{field} is {len(value)} characters; at most {max_chars} allowed")
    m = _SURROGATE.search(value)
    if m:
        raise BadRequest(
            f"{where}{field} contains lone surrogate U+{ord(m.group()):04X} at "
            f"position {m.start()} (not valid Unicode)"
        )
    m = _CONTROL.search(value)
    if m:
        raise BadRequest(
            f"{where}{field} contains control character U+{ord(m.group()):04X} at "
            f"position {m.start()}"
        )
    value = unicodedata.normalize("NFC", value)
    if len(value) > max_chars:  # NFC can lengthen a few characters
        raise BadRequest(
            f"{where}{field} is {len(value)} characters after NFC normalisation; "
            f"at most {max_chars} allowed"
        )
    if not value.strip():
        raise BadRequest(f"{where}{field} is empty or whitespace only")
    return value


def _parse_item(item: Any, limits: Limits, where: str) -> QARequest:
    """Validate one ``{"question", "context"}`` object; ``where`` prefixes messages."""
    if not isinstance(item, dict):
        raise BadRequest(
            f"{where}expected an object with 'question' and 'context', got {type_name(item)}"
        )
    problems = []
    missing = [f for f in FIELDS if f not in item]
    if missing:
        problems.append(
            "missing field"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(repr(f) for f in missing)
        )
    unknown = [k for k in item if k not in FIELDS]
    if unknown:
        names = ", ".join(short_repr(k) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        problems.append("unknown field" + ("s " if len(unknown) > 1 else " ") + names + more)
    if problems:
        raise BadRequest(where + "; ".join(problems))
    question = check_text(item["question"], "question", limits.max_question_chars, where)
    context = check_text(item["context"], "context", limits.max_context_chars, where)
    return QARequest(question=question, context=context)


def parse_payload(obj: Any, limits: Limits) -> tuple[list[QARequest], bool]:
    """Validate a JSON-decoded request body and return ``(requests, is_list)``.

    ``obj`` is either one ``{"question": str, "context": str}`` dict (``is_list`` False,
    one request returned) or a non-empty list of at most ``limits.max_batch_items`` such
    dicts (``is_list`` True, requests in list order). Each item must have exactly those two
    fields; each string must be non-blank, at most ``max_question_chars`` /
    ``max_context_chars`` code points, free of lone surrogates and of control characters
    other than tab, newline and carriage return (C0, DEL and C1 are rejected). The returned
    strings are NFC-normalised; later answer offsets refer to the NFC context.

    Raises :class:`BadRequest` (and nothing else, whatever ``obj`` is) with a one-line
    message; for list bodies it starts with ``item N:`` (0-based index of the first bad item).
    """
    if isinstance(obj, dict):
        return [_parse_item(obj, limits, "")], False
    if not isinstance(obj, list):
        raise BadRequest(
            "body must be an object {'question', 'context'} or a list of them, "
            f"got {type_name(obj)}"
        )
    if not obj:
        raise BadRequest("body is an empty list; send at least one item")
    if len(obj) > limits.max_batch_items:
        raise BadRequest(f"body has {len(obj)} items; at most {limits.max_batch_items} allowed")
    return [_parse_item(item, limits, f"item {i}: ") for i, item in enumerate(obj)], True


# A JSON number longer than this is refused while parsing, before Python converts it (int() of
# a long digit string is slow, and over sys.get_int_max_str_digits() it raises a plain
# ValueError). No number is valid in a QA body (both fields are strings); the other tasks'
# bodies hold small ones (top_k, dimensions, token ids).
MAX_NUMBER_CHARS = 100


def _no_constant(name: str) -> Any:
    raise BadRequest(f"body is not valid JSON: {name} is not allowed")


def _number(convert, numbers: str = ""):
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise BadRequest(
                f"body has a JSON number of {len(text)} characters (at most "
                f"{MAX_NUMBER_CHARS}{numbers})"
            )
        return convert(text)

    return parse


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook``: an object as a dict, refusing a key given twice (which plain
    ``json.loads`` would resolve silently to the last value)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(f"body has the key {short_repr(key)} twice in one object")
        out[key] = value
    return out


def decode_json(body: bytes, max_body_bytes: int, numbers: str = "") -> Any:
    """Check raw request bytes and decode them as UTF-8 JSON (any JSON value).

    Rejects (with :class:`BadRequest`) bodies over ``max_body_bytes``, bytes that are not
    valid UTF-8, and text that is not JSON (NaN/Infinity literals included), an object with
    the same key twice, a number of more than :data:`MAX_NUMBER_CHARS` characters (the
    message ends with ``numbers``, e.g. why no number is valid in the body), and nesting
    deeper than the parser's recursion limit (about 1,000 levels). A leading UTF-8 byte-order
    mark is accepted and ignored. Raises nothing but :class:`BadRequest`, whatever the bytes.
    """
    if len(body) > max_body_bytes:
        raise BadRequest(f"body is {len(body)} bytes; at most {max_body_bytes} allowed")
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start})") from None

    try:
        return json.loads(
            text,
            parse_constant=_no_constant,
            parse_int=_number(int, numbers),
            parse_float=_number(float, numbers),
            object_pairs_hook=_unique_keys,
        )
    except BadRequest:
        raise
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None
    except ValueError:  # any other refusal of the decoder: never a 500, never its text
        raise BadRequest("body is not valid JSON") from None


def parse_body(body: bytes, limits: Limits) -> tuple[list[QARequest], bool]:
    """Check raw request bytes, decode them as UTF-8 JSON (:func:`decode_json`, within
    ``limits.max_body_bytes``; no number is valid here) and apply :func:`parse_payload`.
    Raises nothing but :class:`BadRequest`, whatever the bytes.
    """
    obj = decode_json(body, limits.max_body_bytes, "; question and context are strings")
    return parse_payload(obj, limits)
