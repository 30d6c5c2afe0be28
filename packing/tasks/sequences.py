"""One model sequence per input: the tokenizer call the embed and classify pipelines share.

A text (or a pair of texts, or token ids given by the client) becomes one
:class:`~packing.runtime.features.Features` of at most ``seq_len`` tokens, special tokens
included. An input over ``seq_len`` tokens is cut to it when ``truncate`` is true (the
tokenizer's ``longest_first`` rule for a pair), and is a :class:`TooLarge` naming its token
count and the limit otherwise. One bad input does not affect the others; the caller reports
the first (:func:`first_problem`), named as the body names it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from packing.qa.requests import BadRequest, TooLarge
from packing.runtime.features import Features

#: What one input became: its model input, or why it has none.
Encoded = Features | BadRequest

#: One input: a text, a (text, text_pair) pair, or token ids (used as given, no special
#: tokens added).
Input = str | tuple[str, str] | tuple[int, ...]


class SequenceTokenizer:
    """Inputs -> :class:`Features`, one fast-tokenizer batch call per :meth:`encode`.

    ``tokenizer`` is a Hugging Face fast tokenizer; ``seq_len`` the model folder's
    ``manifest.seq_len``. :meth:`encode` may be called from several threads at once (calls
    are serialised: a fast tokenizer keeps truncation state per call)."""

    def __init__(self, tokenizer: Any, seq_len: int) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.vocab_size = len(tokenizer)
        self._lock = threading.Lock()

    def encode(self, inputs: Sequence[Input], truncate: bool) -> list[Encoded]:
        """The model input of every item of ``inputs``, in order: texts and pairs are
        tokenized together in one batch call (special tokens added; a pair's second text gets
        token type 1 where the tokenizer gives types); token ids are taken as given (ids in
        ``[0, vocab_size)``, token types 0). An item over ``seq_len`` tokens is cut to
        ``seq_len`` with ``truncate``, else it is a :class:`TooLarge`
        (``"input is N tokens; at most M fit the model"``); an item that tokenizes to nothing
        but special tokens is kept (the model still sees them)."""
        out: list[Encoded | None] = [None] * len(inputs)
        texts = [(k, x) for k, x in enumerate(inputs) if isinstance(x, str) or _is_pair(x)]
        if texts:
            with self._lock:
                enc = self.tokenizer(
                    [x for _, x in texts],
                    truncation=bool(truncate),
                    max_length=self.seq_len if truncate else None,
                    return_attention_mask=False,
                    verbose=False,
                )
            types = enc.get("token_type_ids")
            for i, (k, x) in enumerate(texts):
                ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
                tt = np.zeros_like(ids) if types is None else np.asarray(types[i], dtype=np.int64)
                out[k] = self._fit(ids, tt, truncate, pair=_is_pair(x))
        for k, x in enumerate(inputs):
            if out[k] is None:
                out[k] = self._ids(x, truncate)
        return out  # type: ignore[return-value]

    def _ids(self, ids: Sequence[int], truncate: bool) -> Encoded:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim != 1 or arr.size == 0:
            return BadRequest("input is an empty list of token ids")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            return BadRequest(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        return self._fit(arr, np.zeros_like(arr), truncate, pair=False)

    def _fit(self, ids: np.ndarray, types: np.ndarray, truncate: bool, pair: bool) -> Encoded:
        n = int(ids.size)
        if n > self.seq_len:
            if not truncate:
                what = "input (text and text_pair)" if pair else "input"
                return TooLarge(f"{what} is {n} tokens; at most {self.seq_len} fit the model")
            ids, types = ids[: self.seq_len], types[: self.seq_len]  # token ids given as such
        return Features(ids, types)


def _is_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and all(isinstance(t, str) for t in x)


def first_problem(
    encoded: Sequence[Encoded], names: Sequence[str] | None = None, hint: str = ""
) -> list[Features]:
    """The features of ``encoded``, or the first item's error raised again: prefixed with the
    item's name as the body wrote it (``names[k]``, e.g. ``"texts[2]: "``; None: a body of
    one input, no prefix), followed by ``hint`` for a :class:`TooLarge` (how the route asks
    for truncation)."""
    for k, item in enumerate(encoded):
        if isinstance(item, BadRequest):
            text = str(item) if names is None else f"{names[k]}: {item}"
            raise type(item)(text + (hint if isinstance(item, TooLarge) else ""))
    return list(encoded)  # type: ignore[arg-type]


def item_names(field: str, count: int, is_list: bool) -> list[str] | None:
    """``field[0]`` .. ``field[count - 1]`` for a list body, None for a body of one input:
    the ``names`` of :func:`first_problem`."""
    return [f"{field}[{k}]" for k in range(count)] if is_list else None


def token_count(features: Sequence[Features]) -> int:
    """Tokens the model computes for ``features`` (special tokens included): the usage a
    response reports."""
    return sum(len(f) for f in features)


def input_chars(inputs: Sequence[Input]) -> int:
    """Characters (or token ids) in ``inputs``: the size that decides whether a body is
    tokenized on the event loop or apart."""
    return sum(
        len(x) if isinstance(x, str) else sum(len(t) for t in x) if _is_pair(x) else len(x)
        for x in inputs
    )
