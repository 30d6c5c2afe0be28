"""SQuAD-style model inputs for one (question, context) pair, and answer extraction.

:func:`make_windows` tokenizes the question with the context and, when the pair does not fit
in ``seq_len`` tokens, splits the context into overlapping windows (each window repeats the
question), exactly as Hugging Face's SQuAD example does. :func:`best_answer` takes the QA
head's start/end logits of every window and returns the best-scoring context span.

Character offsets are indices into the context string exactly as passed to
:func:`make_windows` (the NFC text returned by :func:`packing.qa.requests.parse_payload`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .requests import BadRequest

MIN_CONTEXT_TOKENS = 16  # a window must leave room for at least this many context tokens
DOC_STRIDE = 128  # default context tokens shared by consecutive windows (HF's SQuAD example)
MAX_QUERY_TOKENS = 64  # default longest question, in tokens
MAX_ANSWER_TOKENS = 30  # default longest answer span, in tokens


@dataclass(frozen=True)
class Window:
    """One model input: [CLS] question [SEP] context-slice [SEP] (for BERT)."""

    input_ids: np.ndarray  # [L] int64: token ids, L <= seq_len
    token_type_ids: (
        np.ndarray
    )  # [L] int64: segment ids from the tokenizer (BERT: 0 question, 1 context)
    context_mask: (
        np.ndarray
    )  # [L] bool: True for tokens of the context (not question, not specials)
    offsets: np.ndarray  # [L, 2] int64: [start, end) character offsets into the context for context tokens, -1 elsewhere
    window_index: int  # position of this window in the list make_windows returned (0-based)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Answer:
    """The best span found by :func:`best_answer`."""

    text: str  # context[start:end]
    score: float  # start logit + end logit of the chosen tokens
    start: int  # character offset of the first answer character in the context
    end: int  # character offset one past the last answer character (exclusive)
    window: int  # window_index of the window the span was found in

    def to_json(self) -> dict:
        """The answer as ``POST /v1/answer`` returns it: ``{answer, score, start, end}``."""
        return {"answer": self.text, "score": self.score, "start": self.start, "end": self.end}


def _specials(tokenizer: Any) -> int:
    """Number of special tokens a (question, context) pair gets ([CLS] + 2 x [SEP] for BERT)."""
    return int(tokenizer.num_special_tokens_to_add(pair=True))


def make_windows(
    tokenizer: Any,
    question: str,
    context: str,
    seq_len: int,
    doc_stride: int = DOC_STRIDE,
    max_query_tokens: int = MAX_QUERY_TOKENS,
) -> list[Window]:
    """Tokenize ``question`` + ``context`` into one or more windows of at most ``seq_len`` tokens.

    ``tokenizer`` is a Hugging Face fast tokenizer (``PreTrainedTokenizerFast``, e.g. from
    ``AutoTokenizer.from_pretrained(model_dir)``). The question comes first and is never
    truncated; only the context is split (``truncation="only_second"``,
    ``return_overflowing_tokens=True``).

    ``doc_stride`` keeps the Hugging Face *tokenizers* meaning of ``stride``: the number of
    context tokens that **overlap** between consecutive windows (not the step between
    window starts), as in HF's SQuAD example (``doc_stride=128``). Each window has room for
    ``C = seq_len - question_tokens - specials`` context tokens and the next window starts
    ``C - stride`` tokens later. The tokenizer requires ``stride < C``, so the stride used is
    ``min(doc_stride, C - 1)``: windows always advance by at least one token (with the default
    limits, ``C >= seq_len - 67``, so the clamp only matters for short ``seq_len``).

    Raises :class:`BadRequest` when the question has more than
    ``min(max_query_tokens, seq_len - specials - MIN_CONTEXT_TOKENS)`` tokens (message
    ``"question is N tokens; at most M fit"``), or when the question or the context has no
    tokens at all (e.g. only zero-width characters, which the tokenizer drops). Raises
    ``ValueError`` for bad ``seq_len`` / ``doc_stride`` / ``max_query_tokens`` (server config).

    Returns windows in context order with ``window_index`` 0, 1, ...; every window has at
    least one context token, consecutive windows overlap by ``min(doc_stride, C - 1)`` context
    tokens (except where the last window is shorter), and together they cover every context
    token. Not safe to call concurrently from several threads on one tokenizer (HF fast
    tokenizers set truncation state per call).
    """
    (out,) = make_windows_batch(
        tokenizer, [(question, context)], seq_len, doc_stride, max_query_tokens
    )
    if isinstance(out, BadRequest):
        raise out
    return out


def make_windows_batch(
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    seq_len: int,
    doc_stride: int = DOC_STRIDE,
    max_query_tokens: int = MAX_QUERY_TOKENS,
) -> list[list[Window] | BadRequest]:
    """:func:`make_windows` for many ``(question, context)`` pairs with the fast tokenizer's
    batch calls: one for all the pairs when every question that fits gets the same stride
    (always with the default limits), else one for the questions and one per distinct stride
    for the pairs.

    Returns, per pair and in order, its windows or the :class:`BadRequest` that
    :func:`make_windows` would raise for it; one bad pair does not affect the others. The
    windows are exactly those :func:`make_windows` returns for the pair alone. Raises
    ``ValueError`` for bad settings, as :func:`make_windows` does.
    """
    specials = _specials(tokenizer)
    room = seq_len - specials - MIN_CONTEXT_TOKENS  # most question tokens a window can hold
    if room < 1:
        raise ValueError(
            f"seq_len {seq_len} too small: needs >= {specials + MIN_CONTEXT_TOKENS + 1}"
        )
    if doc_stride < 0:
        raise ValueError(f"doc_stride must be >= 0, got {doc_stride}")
    if max_query_tokens < 1:
        raise ValueError(f"max_query_tokens must be >= 1, got {max_query_tokens}")
    results: list[list[Window] | BadRequest | None] = [None] * len(pairs)
    if not pairs:
        return []
    fit = min(max_query_tokens, room)
    if doc_stride < seq_len - specials - fit:
        # Every question that fits gets this same stride: encode the pairs in one call and
        # count each question's tokens from it, instead of encoding the questions first.
        enc = _encode_pairs(tokenizer, pairs, seq_len, doc_stride)
        if enc is not None:  # None: the tokenizer refused a pair (a question far too long)
            mapping = enc["overflow_to_sample_mapping"]
            for i, sample in enumerate(mapping):
                if i == 0 or mapping[i - 1] != sample:  # the pair's first window
                    results[sample] = _question_error(enc.sequence_ids(i).count(0), fit)
            _collect(enc, list(range(len(pairs))), results, seq_len)
            return results  # type: ignore[return-value]
    q_ids = tokenizer([q for q, _ in pairs], add_special_tokens=False)["input_ids"]
    by_stride: dict[int, list[int]] = {}
    for k, ids in enumerate(q_ids):
        results[k] = _question_error(len(ids), fit)
        if results[k] is None:
            capacity = seq_len - specials - len(ids)  # context tokens per window
            by_stride.setdefault(min(doc_stride, capacity - 1), []).append(k)
    for stride, members in by_stride.items():
        enc = _encode_pairs(tokenizer, [pairs[k] for k in members], seq_len, stride, refuse=False)
        _collect(enc, members, results, seq_len)
    return results  # type: ignore[return-value]


def _question_error(n_question: int, fit: int) -> BadRequest | None:
    """Why a question of ``n_question`` tokens gets no windows, or None when it fits."""
    if n_question > fit:
        return BadRequest(f"question is {n_question} tokens; at most {fit} fit")
    if n_question == 0:
        return BadRequest("question has no tokens (only characters the tokenizer ignores)")
    return None


def _encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], seq_len: int, stride: int, refuse: bool = True
) -> Any:
    """One batch encoding of ``pairs`` into windows (context truncated with overlap
    ``stride``, offsets kept); with ``refuse``, None where the tokenizer raises (it does when
    a question leaves no room for the context), else its error propagates."""
    try:
        return tokenizer(
            [q for q, _ in pairs],
            [c for _, c in pairs],
            truncation="only_second",
            max_length=seq_len,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
    except Exception:
        if not refuse:
            raise
        return None


def _collect(enc: Any, members: Sequence[int], results: list, seq_len: int) -> None:
    """Add the windows of batch encoding ``enc`` (of the pairs ``members``, in order) to
    ``results``, skipping pairs that already hold a BadRequest."""
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        k = members[sample]
        if isinstance(results[k], BadRequest):
            continue
        window = _window(enc, i, seq_len, 0 if results[k] is None else len(results[k]))
        if window is None:
            results[k] = BadRequest("context has no tokens (only characters the tokenizer ignores)")
        else:
            results[k] = (results[k] or []) + [window]


def _window(enc: Any, i: int, seq_len: int, index: int) -> Window | None:
    """Window ``i`` of a batch encoding, numbered ``index``; None if it has no context token."""
    ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
    if "token_type_ids" in enc:
        types = np.asarray(enc["token_type_ids"][i], dtype=np.int64)
    else:  # models without segment embeddings (e.g. RoBERTa)
        types = np.zeros_like(ids)
    mask = np.array([s == 1 for s in enc.sequence_ids(i)], dtype=bool)
    offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
    offsets = np.where(mask[:, None], offsets, -1)
    if not mask.any():
        return None
    assert ids.shape[0] <= seq_len, (ids.shape, seq_len)
    return Window(
        input_ids=ids, token_type_ids=types, context_mask=mask, offsets=offsets, window_index=index
    )


def _best_in_window(
    start: np.ndarray, end: np.ndarray, ctx: np.ndarray, max_answer_tokens: int, top_k: int | None
) -> tuple[float, int, int] | None:
    """Best (score, start_token, end_token) over context tokens ``ctx``, or None if no valid pair.

    Candidates are the ``top_k`` highest start and end logits among context tokens (all of
    them when ``top_k`` is None). Ties: lowest start token, then lowest end token.
    """
    s_vals = start[ctx].astype(np.float64)
    e_vals = end[ctx].astype(np.float64)
    k = len(ctx) if top_k is None else min(top_k, len(ctx))
    # Stable sort on the negated logits: equal logits keep the lower token first.
    s_pos = ctx[np.argsort(-s_vals, kind="stable")[:k]]
    e_pos = ctx[np.argsort(-e_vals, kind="stable")[:k]]
    scores = start[s_pos].astype(np.float64)[:, None] + end[e_pos].astype(np.float64)[None, :]
    length = e_pos[None, :] - s_pos[:, None] + 1
    valid = (length >= 1) & (length <= max_answer_tokens)
    if not valid.any():
        return None
    scores = np.where(valid, scores, -np.inf)
    best = scores.max()
    si, ei = np.nonzero(valid & (scores == best))
    # Lowest start token, then lowest end token among the tied pairs.
    order = np.lexsort((e_pos[ei], s_pos[si]))[0]
    return float(best), int(s_pos[si[order]]), int(e_pos[ei[order]])


def best_answer(
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    context: str,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    top_k: int = 20,
) -> Answer:
    """Return the highest-scoring context span over all windows.

    ``start_logits[i]`` / ``end_logits[i]`` are the QA head's ``[len(windows[i])]`` logits for
    window ``i``. Per window, candidates are the ``top_k`` highest start and ``top_k`` highest
    end logits over *context* tokens only; a pair is valid when ``end >= start`` and
    ``end - start + 1 <= max_answer_tokens`` (in tokens); its score is
    ``start_logit + end_logit``. The best valid pair over all windows wins; ties go to the
    lowest window, then the lowest start token, then the lowest end token. The answer's
    ``start``/``end`` are character offsets into ``context`` (end exclusive) and
    ``text == context[start:end]``.

    If no window has a valid pair among its top-k candidates (possible when, e.g., the best
    end tokens all precede the best start tokens), the search is repeated over all context
    tokens, so an answer is always returned when any window has a context token (which
    :func:`make_windows` guarantees). Raises ``ValueError`` when there are no windows, no
    context tokens at all, mismatched lengths, non-finite logits, or ``max_answer_tokens``/``top_k`` < 1.
    """
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not windows:
        raise ValueError("no windows")
    if not len(windows) == len(start_logits) == len(end_logits):
        raise ValueError(
            f"{len(windows)} windows but {len(start_logits)} start and "
            f"{len(end_logits)} end logit arrays"
        )
    prepared = []
    for w, s, e in zip(windows, start_logits, end_logits):
        s = np.asarray(s).reshape(-1)
        e = np.asarray(e).reshape(-1)
        if s.shape[0] != len(w) or e.shape[0] != len(w):
            raise ValueError(
                f"window {w.window_index} has {len(w)} tokens but "
                f"{s.shape[0]} start and {e.shape[0]} end logits"
            )
        if not (np.isfinite(s).all() and np.isfinite(e).all()):
            raise ValueError(f"window {w.window_index}: non-finite (NaN or inf) logits")
        prepared.append((w, s, e, np.flatnonzero(w.context_mask)))
    if not any(len(ctx) for *_, ctx in prepared):
        raise ValueError("no context tokens in any window")

    for k in (top_k, None):  # None: exhaustive fallback
        best: tuple[float, Window, int, int] | None = None
        for w, s, e, ctx in prepared:
            if len(ctx) == 0:
                continue
            found = _best_in_window(s, e, ctx, max_answer_tokens, k)
            if found is not None and (best is None or found[0] > best[0]):
                best = (found[0], w, found[1], found[2])
        if best is not None:
            score, w, ts, te = best
            start_char, end_char = int(w.offsets[ts, 0]), int(w.offsets[te, 1])
            return Answer(
                text=context[start_char:end_char],
                score=score,
                start=start_char,
                end=end_char,
                window=w.window_index,
            )
    raise AssertionError("unreachable: a single context token is always a valid span")


def answers_for(
    per_question: Sequence[Sequence[Window] | BadRequest],
    outputs: Sequence[Any],
    contexts: Sequence[str],
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> list[Answer | BadRequest]:
    """The :func:`best_answer` of every question, in order, from ``outputs``: the model's
    per-window results (anything with ``start_logits`` / ``end_logits``) for all windows of
    ``per_question`` laid end to end, a question that is a :class:`BadRequest` having none
    (it is passed through). Raises ValueError when ``outputs`` does not match the windows."""
    expected = sum(len(w) for w in per_question if not isinstance(w, BadRequest))
    if len(outputs) != expected:
        raise ValueError(f"{len(outputs)} outputs for {expected} windows")
    out: list[Answer | BadRequest] = []
    i = 0
    for wins, context in zip(per_question, contexts):
        if isinstance(wins, BadRequest):
            out.append(wins)
            continue
        mine = outputs[i : i + len(wins)]
        i += len(wins)
        out.append(
            best_answer(
                wins,
                [o.start_logits for o in mine],
                [o.end_logits for o in mine],
                context,
                max_answer_tokens,
            )
        )
    return out
