"""The model side of embed-quality: our runners on an embed folder (at their default knobs,
the packed modes' token budget calibrated), sentence-transformers (its batch size probed), the
folders' facts and the library versions. torch, sentence-transformers and the runners are
imported only inside the functions that use them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel


def _folder_facts(model_dir: ModelLike) -> dict:
    model = PreparedModel.open(model_dir)
    m = model.manifest
    if m.task.task != "embed":
        raise ValueError(f"{model} serves the {m.task.task} task, not embed")
    return {
        "model_dir": str(model),
        "source": m.source,
        "precision": m.precision,
        "seq_len": m.seq_len,
        "batch_size": m.batch_size,
        "max_valid_num": m.max_valid_num,
    }


def _runner(mode: str, model_dir: ModelLike, threads: int, progress: bool = False):
    """``(runner, calibration)``: the runner of ``mode`` on ``model_dir`` at its default
    knobs, ``threads`` intra-op threads. A packed mode's calibrated token budget is resolved
    first, with ``progress`` (measured on first use on this host, then read from the folder's
    cache); ``calibration`` is what that step found (None for ``original``). ``model_dir``: a
    path or a :class:`~packing.model.prepared.PreparedModel`, opened once."""
    from packing.runners import ModelRunner, PackRunner
    from packing.runtime.backend import backend_kwargs
    from packing.runtime.calibrate import AUTO, resolve_max_tokens

    model = PreparedModel.open(model_dir)
    opts = backend_kwargs("onnxruntime", None, threads)
    if mode == "original":
        return ModelRunner(model, padding="max_length", **opts), None
    _, cal = resolve_max_tokens(
        AUTO,
        model,
        opts["backend"],
        {k: v for k, v in opts.items() if k != "backend"},
        progress=progress,
    )
    return PackRunner(model, mode=mode, **opts), cal


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


def library_versions() -> dict:
    """``{distribution: version}`` of the libraries the figures depend on (onnxruntime, torch,
    sentence-transformers, transformers, tokenizers, numpy); None for one not installed
    (onnxruntime's from the module when only the gpu wheel, another distribution, is)."""
    from importlib.metadata import PackageNotFoundError, version

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
    return versions
