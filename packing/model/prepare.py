"""``packed-bert prepare``: write a model folder with the three graphs, checked.

The folder holds ``model.safetensors`` + ``config.json`` (a valid transformers folder),
the fast-tokenizer files, ``original.onnx``, ``attention_mask.onnx`` and
``unpack_repack.onnx`` (weights shared through external data), and ``manifest.json``,
written last: a folder without a manifest is an unfinished preparation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from .graphs import KINDS, WEIGHTS_FILE, build_graph
from .manifest import CALIBRATION, MANIFEST, Manifest, sha256_file
from .weights import load_source, save_tokenizer

TOLERANCE = 1e-4


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[prepare] {msg}", flush=True)


def prepare(source: str, out: str | Path, seq_len: int = 256, batch_size: int = 16,
            max_valid_num: int = 40, seed: int = 0, check: bool = True,
            quiet: bool = False) -> Manifest:
    """Build and check a model folder at ``out`` from ``source``; returns its manifest.

    Raises ValueError for bad shapes and RuntimeError when a packed graph disagrees with
    ``original`` by more than 1e-4 on random packed batches.
    """
    from safetensors.numpy import save_file

    if seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2, got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if max_valid_num < 1:
        raise ValueError(f"--max-valid-num must be >= 1, got {max_valid_num}")
    out = Path(out)
    _log(f"loading {source}", quiet)
    dims, weights, tok_folder = load_source(source, seed=seed)
    if seq_len > dims.max_position_embeddings:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's max_position_embeddings "
                         f"{dims.max_position_embeddings}")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(dims.hf_config(), indent=2) + "\n")
    save_tokenizer(out, tok_folder)
    graphs = {}
    for kind in KINDS:
        _log(f"writing {kind}.onnx", quiet)
        model = build_graph(kind, dims, out / WEIGHTS_FILE)
        onnx.save(model, str(out / f"{kind}.onnx"))
        graphs[kind] = f"{kind}.onnx"
    manifest = Manifest(source=source, dims=dims, seq_len=seq_len, batch_size=batch_size,
                        max_valid_num=max_valid_num, graphs=graphs)
    manifest.write(out)  # provisional: the check below opens the folder through it
    diffs: dict[str, float] = {}
    if check:
        diffs = check_graphs(out, seed=seed)
        for kind, diff in diffs.items():
            _log(f"{kind}: max abs logit diff vs original {diff:.2e}", quiet)
        bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
        if bad:
            (out / MANIFEST).unlink()
            raise RuntimeError(f"packed graphs disagree with original beyond {TOLERANCE}: {bad}")
    # what prepare wrote: not the manifest, not caches written later (calibration.json), no temp files
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in (MANIFEST, CALIBRATION)
                   and not p.name.startswith("."))
    manifest = Manifest(source=source, dims=dims, seq_len=seq_len, batch_size=batch_size,
                        max_valid_num=max_valid_num, graphs=graphs,
                        files={name: sha256_file(out / name) for name in files},
                        max_abs_diff=diffs)
    manifest.write(out)
    _log(f"done: {out}", quiet)
    return manifest


def check_graphs(model_dir: Path, seed: int = 0, n: int = 12) -> dict[str, float]:
    """Max abs logit difference of each packed graph against ``original`` run alone.

    Random sequences of random lengths are run one at a time, unpadded, through
    ``original``, then packed (offline) through each packed graph.
    """
    from packing.runtime.features import Features
    from packing.runtime import ModelRunner, PackRunner

    manifest = Manifest.read(model_dir)
    rng = np.random.default_rng(seed + 1)
    lengths = rng.integers(1, manifest.seq_len + 1, size=n)
    lengths[:3] = [1, manifest.seq_len, max(1, manifest.seq_len // 2)]
    vocab, types = manifest.dims.vocab_size, manifest.dims.type_vocab_size
    data = [Features(rng.integers(0, vocab, size=int(n_)), rng.integers(0, types, size=int(n_)))
            for n_ in lengths]
    solo = ModelRunner(model_dir, batch_size=1, padding="longest").run(data)
    diffs = {}
    for mode in ("attention_mask", "unpack_repack"):
        packed = PackRunner(model_dir, mode=mode).run(data)
        diffs[mode] = max(
            float(max(np.abs(a.start_logits - b.start_logits).max(),
                      np.abs(a.end_logits - b.end_logits).max()))
            for a, b in zip(solo, packed)
        )
    return diffs
