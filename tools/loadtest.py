"""``python -m tools loadtest``: concurrent HTTP requests against a running app, compared with the
in-process PackRunner doing the same work (tokenize, pack, run, pick the answer) in one run.

Both sides run the same questions with the same number of closed-loop clients, the same
packing mode, heuristic and timeout (read from the app's ``/v1/stats``), so the ratio shows
what the serving layer (HTTP, Ray Serve, the deployment hops) costs. The in-process side
runs on ``backend`` (``onnxruntime`` by default, or ``sim``, a simulated accelerator of known
speed: see :mod:`packing.runtime.sim`); the report names it.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.runners.drive import drive
from packing.runners.workloads import (
    DEFAULT_SEED,
    read_lengths,
    sample_squad,
    seed_lengths,
    short_lengths,
)


@dataclass
class LoadResult:
    """One side of the comparison."""

    name: str
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    efficiency: float | None = None  # packing efficiency over the run (HTTP: as the app reported)
    backend: str | None = None  # the model runtime's describe() line (in-process side only)


def _single_token_words(tokenizer) -> list[str]:
    """Vocabulary words that the tokenizer maps to exactly one token."""
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 3]
    words.sort()
    return [w for w in words[:4000] if len(tokenizer.tokenize(w)) == 1][:2000]


def synthetic_questions(lengths: Sequence[int], tokenizer, seed: int = DEFAULT_SEED) -> list[dict]:
    """Question/context pairs whose tokenization has the given lengths (at least 5 tokens)."""
    rng = np.random.default_rng(seed)
    words = _single_token_words(tokenizer)
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    out = []
    for n in lengths:
        n = max(int(n), specials + 2)
        q = int(min(max(1, (n - specials) // 4), 30))
        c = n - specials - q
        out.append(
            {
                "question": " ".join(rng.choice(words, size=q)) + "",
                "context": " ".join(rng.choice(words, size=c)),
            }
        )
    return out


def load_questions(
    spec: str, n: int, tokenizer, seq_len: int, seed: int = DEFAULT_SEED
) -> list[dict]:
    """``n`` question/context pairs for a workload: seed, squad:FILE or lengths:FILE."""
    if spec == "seed":
        return synthetic_questions(seed_lengths(n, seq_len, seed), tokenizer, seed)
    if spec == "short":
        return synthetic_questions(short_lengths(n, seq_len, seed), tokenizer, seed)
    kind, _, arg = spec.partition(":")
    if kind == "squad" and arg:
        return [{"question": q, "context": c} for q, c in sample_squad(arg, n, seed)]
    if kind == "lengths" and arg:
        lengths = np.resize(read_lengths(arg), n)
        return synthetic_questions(np.clip(lengths, 1, seq_len), tokenizer, seed)
    raise ValueError(f"unknown workload {spec!r}; use seed, short, squad:FILE or lengths:FILE")


def _result(
    name: str,
    n: int,
    seconds: float,
    latency: np.ndarray,
    errors: int,
    efficiency: float | None = None,
) -> LoadResult:
    return LoadResult(
        name,
        n,
        seconds,
        n / seconds,
        float(np.percentile(latency, 50) * 1000),
        float(np.percentile(latency, 99) * 1000),
        errors,
        efficiency,
    )


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def http_load(
    url: str, items: Sequence[dict], concurrency: int, progress: bool = False
) -> LoadResult:
    """POST every item to ``url``/v1/answer; efficiency from the app's /v1/stats delta."""
    parsed = urllib.parse.urlsplit(url)
    local = threading.local()
    bodies = [json.dumps(it).encode() for it in items]

    def call(i: int) -> bool:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(
                parsed.hostname, parsed.port or 80, timeout=300
            )
        try:
            conn.request("POST", "/v1/answer", bodies[i], {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            local.conn = None
            conn.close()
            raise

    before = _get_json(url + "/v1/stats")["packer"]
    seconds, latency, errors = drive(len(items), concurrency, call, progress)
    after = _get_json(url + "/v1/stats")["packer"]
    slots = after["token_slots"] - before["token_slots"]
    eff = (after["real_tokens"] - before["real_tokens"]) / slots if slots else None
    return _result("HTTP app", len(items), seconds, latency, errors, eff)


def inprocess_load(
    model_dir: ModelLike,
    items: Sequence[dict],
    concurrency: int,
    knobs: dict,
    answering: dict | None = None,
    threads: int | None = None,
    progress: bool = False,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
) -> LoadResult:
    """The same questions through the QA pipeline and an in-process online PackRunner with
    the app's packer ``knobs`` and QA settings ``answering`` (its ``/v1/stats``; None: the
    defaults).

    The runner uses ``backend`` with ``backend_options``; ``threads`` sets onnxruntime's
    intra-op threads and is not passed to other backends. ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once for the pipeline and the runner.
    """
    from packing.qa.pipeline import QAPipeline
    from packing.qa.requests import BadRequest
    from packing.runners import PackRunner
    from packing.runtime.backend import backend_kwargs
    from packing.runtime.dispatch import DEFAULT_DISPATCH

    model = PreparedModel.open(model_dir)
    qa = QAPipeline.from_model_dir(model, answering)
    runner = PackRunner(
        model,
        mode=knobs["mode"],
        algorithm=knobs["algorithm"],
        max_batch_size=knobs.get("max_batch_size"),
        batch_wait_timeout_s=knobs["batch_wait_timeout_s"],
        max_concurrent_batches=knobs.get("max_concurrent_batches"),
        dispatch=knobs.get("dispatch", DEFAULT_DISPATCH),
        max_valid_num=knobs.get("max_valid_num"),
        max_tokens=knobs.get("max_tokens"),
        **backend_kwargs(backend, backend_options, threads),
    )

    def online(features: list) -> list:
        return [f.result() for f in runner.submit_many(features)]

    def call(i: int) -> bool:
        (answer,) = qa.answer([(items[i]["question"], items[i]["context"])], online)
        return not isinstance(answer, BadRequest)

    with runner:
        call(0)  # warm-up
        runner.reset_stats()
        seconds, latency, errors = drive(len(items), concurrency, call, progress)
        eff = runner.stats.efficiency
    res = _result("In-process PackRunner", len(items), seconds, latency, errors, eff)
    res.backend = runner.backend.describe()
    return res


def format_result(r: LoadResult) -> str:
    """One line per side."""
    eff = f", packing efficiency {r.efficiency:.3f}" if r.efficiency is not None else ""
    backend = f", backend {r.backend}" if r.backend else ""
    return (
        f"[{r.name}] {r.requests_per_s:.2f} requests/s, p50 {r.p50_ms:.0f} ms, "
        f"p99 {r.p99_ms:.0f} ms, errors {r.errors}/{r.requests}{eff}{backend}"
    )


def loadtest(
    url: str,
    model_dir: ModelLike | None,
    workload: str,
    samples: int,
    concurrency: int,
    inprocess: bool = True,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
) -> dict:
    """Run the HTTP side, then (optionally) the in-process side; returns a JSON-able report.

    ``backend`` / ``backend_options`` are the in-process side's runtime (the app runs on
    whatever its own config says); the report records them. ``model_dir``: the app's folder,
    a path or a :class:`~packing.model.prepared.PreparedModel`, opened once for both sides.
    """
    from transformers import AutoTokenizer

    url = url.rstrip("/")
    stats = _get_json(url + "/v1/stats")
    knobs = stats["packer"]["knobs"]
    if model_dir is None:
        raise ValueError("--model-dir is needed (the app's prepared folder) to build the workload")
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    if manifest.source != stats["model"]:
        raise ValueError(f"the app serves {stats['model']!r} but {model} holds {manifest.source!r}")
    tok = AutoTokenizer.from_pretrained(str(model))
    items = load_questions(workload, samples, tok, manifest.seq_len)
    echo(
        f"app {url} serving {stats['model']}; workload {workload}: {samples} questions, "
        f"concurrency {concurrency}; packer knobs {knobs}"
    )
    _get_json(url + "/healthz")
    http_load(url, items[: min(8, len(items))], min(8, concurrency))  # warm-up
    report = {
        "url": url,
        "workload": workload,
        "samples": samples,
        "concurrency": concurrency,
        "knobs": knobs,
        "inprocess_backend": backend,
        "inprocess_backend_options": dict(backend_options or {}),
    }
    h = http_load(url, items, concurrency, progress)
    echo(format_result(h))
    report["http"] = asdict(h)
    if inprocess:
        p = inprocess_load(
            model,
            items,
            concurrency,
            knobs,
            stats["answering"],
            threads=threads,
            progress=progress,
            backend=backend,
            backend_options=backend_options,
        )
        echo(format_result(p))
        report["inprocess"] = asdict(p)
        report["ratio"] = h.requests_per_s / p.requests_per_s
        echo(f"HTTP / in-process throughput: {report['ratio']:.2f}x")
    return report
