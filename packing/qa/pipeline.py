"""The one question-answering pipeline: questions -> windows -> model inputs -> answers.

Every path that answers questions goes through :class:`QAPipeline`: the HTTP Ingress, the
offline batch job (``packed-bert batch``), ``packed-bert eval``, and the load and soak drills
in ``tools/``. Each of them only decides *how the windows run* (a Serve handle call, a packed
offline run, one window at a time); tokenization, the window layout and the span rules are
here, once, so a served answer and an offline one can be compared exactly.

The model step is the caller's: :meth:`QAPipeline.answer` takes it as a function from a list
of :class:`~packing.runtime.features.Features` to one result per window (anything with
``start_logits`` / ``end_logits``), and callers that must split the steps (the Ingress
tokenizes many bodies together and awaits the packer later; ``eval`` runs the same windows
through every mode) call :meth:`~QAPipeline.tokenize`, :func:`features_of` and
:meth:`~QAPipeline.answers` themselves.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packing.model.prepared import ModelLike, PreparedModel
from packing.runtime.features import Features

from .requests import BadRequest, Limits, TooLarge
from .windows import (
    DOC_STRIDE,
    MAX_ANSWER_TOKENS,
    MAX_QUERY_TOKENS,
    Answer,
    Window,
    answers_for,
    make_windows_batch,
)

#: One question's windows, or why it has none.
Windows = list[Window] | BadRequest


@dataclass(frozen=True)
class QASettings:
    """How questions become windows and logits become answers (validated on construction)."""

    seq_len: int  # tokens per window: the prepared model folder's manifest.seq_len
    doc_stride: int = DOC_STRIDE  # context tokens shared by consecutive windows of a long context
    max_query_tokens: int = MAX_QUERY_TOKENS  # longest question, in tokens (longer: BadRequest)
    max_answer_tokens: int = MAX_ANSWER_TOKENS  # longest answer span, in tokens

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"QASettings.{f.name} must be an int, got {value!r}")
        if self.doc_stride < 0:
            raise ValueError(f"QASettings.doc_stride must be >= 0, got {self.doc_stride}")
        for name in ("seq_len", "max_query_tokens", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"QASettings.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> QASettings:
        """The settings named in ``values`` (e.g. a running app's ``/v1/stats`` ``answering``
        block); other keys are ignored, missing ones take their defaults; ``seq_len`` is
        required (TypeError otherwise)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def features_of(per_question: Sequence[Windows]) -> list[Features]:
    """The model inputs of every window of ``per_question``, laid end to end in question
    order; a :class:`BadRequest` question contributes none. :meth:`QAPipeline.answers` takes
    the model's results in this same order."""
    return [
        Features(w.input_ids, w.token_type_ids)
        for wins in per_question
        if not isinstance(wins, BadRequest)
        for w in wins
    ]


def window_count(per_question: Sequence[Windows]) -> int:
    """How many model inputs :func:`features_of` gives for ``per_question``."""
    return sum(len(w) for w in per_question if not isinstance(w, BadRequest))


def first_problem(
    per_question: Sequence[Windows], limits: Limits
) -> tuple[int | None, BadRequest] | None:
    """Why the questions of one body cannot be answered, or None when they all can.

    In question order, the first question that is a :class:`BadRequest` or takes more than
    ``limits.max_windows_per_request`` windows gives ``(its index, the error)``; past that,
    more than ``limits.max_windows_per_body`` windows in all gives ``(None, TooLarge)``. Each
    message states the limit and the count. Works on a prefix of a body too (the count so
    far), so a caller tokenizing question by question can stop at the first problem."""
    total = 0
    for k, windows in enumerate(per_question):
        if isinstance(windows, BadRequest):
            return k, windows
        if len(windows) > limits.max_windows_per_request:
            return k, TooLarge(
                f"the context takes {len(windows)} model windows; at most "
                f"{limits.max_windows_per_request} allowed per question (max_windows_per_request)"
            )
        total += len(windows)
        if total > limits.max_windows_per_body:
            return None, TooLarge(
                f"the body's questions take {total}{'+' if k < len(per_question) - 1 else ''} "
                f"model windows; at most {limits.max_windows_per_body} allowed per body "
                f"(max_windows_per_body)"
            )
    return None


class QAPipeline:
    """Questions -> windows -> answers for one tokenizer and one :class:`QASettings`.

    ``tokenizer`` is a Hugging Face fast tokenizer. :meth:`tokenize` may be called from
    several threads at once (calls are serialised here: a fast tokenizer keeps truncation
    state per call); the other methods hold no state.
    """

    def __init__(self, tokenizer: Any, settings: QASettings) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self._lock = threading.Lock()

    @classmethod
    def from_model_dir(
        cls, model_dir: ModelLike, settings: Mapping[str, Any] | None = None
    ) -> QAPipeline:
        """The pipeline of a prepared model folder (a path, or a
        :class:`~packing.model.prepared.PreparedModel`, whose manifest is not read again): its
        tokenizer, ``seq_len`` from its manifest, and the :class:`QASettings` fields found in
        ``settings`` (``doc_stride``, ``max_query_tokens``, ``max_answer_tokens``; other keys
        are ignored, so a running app's ``/v1/stats`` ``answering`` block can be passed whole)
        over the defaults. Raises ValueError when ``settings`` names another ``seq_len`` than
        the folder's."""
        from transformers import AutoTokenizer

        model = PreparedModel.open(model_dir)
        seq_len = model.manifest.seq_len
        given = dict(settings or {})
        if given.setdefault("seq_len", seq_len) != seq_len:
            raise ValueError(
                f"settings give seq_len {given['seq_len']} but {model} was "
                f"prepared with seq_len {seq_len}"
            )
        return cls(AutoTokenizer.from_pretrained(str(model)), QASettings.from_mapping(given))

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[Windows]:
        """The windows of every ``(question, context)`` pair, in order, with one batch call of
        the tokenizer (:func:`~packing.qa.windows.make_windows_batch`): a pair that cannot be
        tokenized (question too long, nothing the tokenizer keeps) gets its
        :class:`BadRequest` instead, and does not affect the others."""
        s = self.settings
        with self._lock:
            return make_windows_batch(
                self.tokenizer, pairs, s.seq_len, s.doc_stride, s.max_query_tokens
            )

    def answers(
        self, per_question: Sequence[Windows], outputs: Sequence[Any], contexts: Sequence[str]
    ) -> list[Answer | BadRequest]:
        """The best span of every question (:func:`~packing.qa.windows.best_answer`), in
        order: ``outputs`` are the model's results for :func:`features_of` ``(per_question)``,
        ``contexts`` the questions' contexts; a :class:`BadRequest` question is passed through.
        Raises ValueError when ``outputs`` does not match the windows."""
        return answers_for(per_question, outputs, contexts, self.settings.max_answer_tokens)

    def answer(
        self, pairs: Sequence[tuple[str, str]], model: Callable[[list[Features]], Sequence[Any]]
    ) -> list[Answer | BadRequest]:
        """The whole pipeline: tokenize ``pairs``, run all their windows with one call of
        ``model`` (a list of inputs -> one result per input, in order; not called when no pair
        has a window) and return each pair's answer or :class:`BadRequest`."""
        per_question = self.tokenize(pairs)
        inputs = features_of(per_question)
        outputs = model(inputs) if inputs else []
        return self.answers(per_question, outputs, [c for _, c in pairs])
