"""One embed-http run (:func:`embed_http`): the texts sampled once, then every server in turn
at every request size: a quiet host, a warm-up, the measured phase."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from packing.runtime.host import host_facts
from tools.embed_quality import DEFAULT_SQUAD, squad_pairs

from .client import (
    Client,
    Server,
    check_encoding,
    check_servers,
    find_endpoint,
    parse_server,
    served_model,
)
from .load import run_phase, settle
from .report import best_rows, latency_summary, ratios, vector_agreement
from .texts import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PARAGRAPH_SHARE,
    Sample,
    WordPieceCounter,
    default_vocab,
    sample_texts,
)


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
    encoding_format: str = "float",
) -> dict:
    """Measure every server in turn on the same texts, once per ``texts_per_request`` size
    (texts in one request); the report :func:`format_report` prints (see the module
    docstring). ``encoding_format``: how the vectors are asked for (:data:`~.client.ENCODINGS`)."""
    check_encoding(encoding_format)
    servers = check_servers([s if isinstance(s, Server) else parse_server(s) for s in servers])
    if concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {concurrency}")
    sizes = list(dict.fromkeys(int(k) for k in texts_per_request))
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--texts-per-request takes sizes >= 1, got {list(texts_per_request)}")
    squad_path = Path(squad)
    if not squad_path.is_absolute() and not squad_path.exists():
        squad_path = Path(__file__).resolve().parents[2] / squad
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
        "encoding_format": encoding_format,
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
        url, dims = find_endpoint(server, api, served, timeout_s, encoding_format)
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
                encoding_format,
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
        "host": host_facts(numpy=np.__version__),
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
    encoding_format: str = "float",
) -> tuple[dict, np.ndarray | None]:
    """One server at ``k`` texts per request: the wait for a quiet host (:func:`settle` with
    ``quiet``), warm-up, measured run."""
    busy, waited = settle(*quiet)
    label = f"{server.name} x{k}"
    bar = _bar(len(sample.warmup), f"{label} warm-up", progress)
    warm = run_phase(
        sample.warmup,
        concurrency,
        lambda: Client(url, served, timeout_s, encoding_format),
        bar.update if bar else None,
        per_request=k,
    )
    if bar:
        bar.close()
    bar = _bar(len(sample.texts), label, progress)
    phase = run_phase(
        sample.texts,
        concurrency,
        lambda: Client(url, served, timeout_s, encoding_format),
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
