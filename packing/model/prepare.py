"""``packed-bert prepare``: write a model folder with the three graphs, checked.

The folder holds the graphs' weights -- ``model.safetensors`` + ``config.json`` (a valid
transformers folder of the task's architecture; float16 tensors for ``--precision fp16``), or
for int8 ``model.int8.safetensors`` (quantized Linear weights, the rest float32) +
``config.json`` --, the fast-tokenizer files, ``original.onnx``, ``attention_mask.onnx`` and
``unpack_repack.onnx`` (weights shared through external data), and ``manifest.json``
(recording what the folder was prepared from: source, its encoder family, task, precision,
shapes, format version and who prepared it), written last: a folder without a manifest is an
unfinished preparation. A RoBERTa / XLM-RoBERTa source is written as the BERT folder that
computes the same outputs (:mod:`packing.model.roberta`); the manifest's ``architecture``
names the family it came from.

Per task (:mod:`packing.model.task`): a ``classify`` folder also holds ``head.safetensors``
(pooler and classifier, float32 whatever the precision; :mod:`packing.model.heads`); an
``embed`` folder also holds the sentence-transformers files (``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``: the source's, or written from the
task), so it is a sentence-transformers folder too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from packing.policy.shapes import DEFAULT_SHAPES

from .graphs import (
    DEFAULT_KERNELS,
    HOST_BUILT_KERNELS,
    KINDS,
    WEIGHTS_FILES,
    build_graph,
    check_kernels,
)
from .heads import HEAD_FILE, HEAD_TENSORS
from .manifest import CALIBRATION, MANIFEST, PREPARED_BY, PREPARING, Manifest, sha256_file
from .prepared import ModelLike, PreparedModel
from .quantize import LAYOUT_TOLERANCES, TOLERANCES, check_precision, fp16_weights, int8_weights
from .task import TaskSpec
from .weights import (
    SENTENCE_TRANSFORMERS_FILES,
    load_source,
    save_sentence_transformers,
    save_tokenizer,
    source_architecture,
)

TOLERANCE = TOLERANCES["fp32"]


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[prepare] {msg}", flush=True)


def default_kernels(precision: str) -> frozenset[str]:
    """The kernels :func:`prepare` writes unless told: :data:`DEFAULT_KERNELS` of
    ``precision``, less this package's CPU kernels (:data:`HOST_BUILT_KERNELS`) on a host with
    no C++ compiler to build them on (a warning says so; the folder then runs on any host)."""
    kernels = DEFAULT_KERNELS[check_precision(precision)]
    own = sorted(kernels & HOST_BUILT_KERNELS)
    if own:
        from packing.runtime.cpu_kernels import compiler

        if compiler() is None:
            import warnings

            warnings.warn(
                f"no C++ compiler (g++) here to build this package's CPU kernels "
                f"({', '.join(own)}): preparing the {precision} graphs without them (slower); "
                "install g++ and prepare again to use them",
                stacklevel=3,
            )
            kernels = kernels - HOST_BUILT_KERNELS
    return kernels


def prepare(
    source: str,
    out: str | Path,
    seq_len: int = DEFAULT_SHAPES.seq_len,
    batch_size: int = DEFAULT_SHAPES.batch_size,
    max_valid_num: int = DEFAULT_SHAPES.max_valid_num,
    seed: int = 0,
    check: bool = True,
    quiet: bool = False,
    precision: str = "fp32",
    prepared_by: str = "user",
    task: str | TaskSpec | None = None,
    kernels=None,
) -> Manifest:
    """Build and check a model folder at ``out`` from ``source`` in ``precision`` (fp32, int8
    or fp16) for ``task``; returns its manifest, which records the task and ``prepared_by``
    (one of :data:`~packing.model.manifest.PREPARED_BY`: ``user`` here, ``cli`` for
    ``packed-bert prepare``, ``app`` for the Serve app, which re-prepares only folders it made
    itself).

    ``task``: None infers it from the source (:func:`~packing.model.weights.load_source`:
    the checkpoint's architecture or sentence-transformers files; ``random:*`` is qa), a task
    name (``--task qa|embed|classify``) overrides the architecture, a :class:`TaskSpec` is
    taken as it is. ValueError when the source lacks the task's tensors. ``kernels``: the
    kernels the graphs use (a subset of :data:`~packing.model.graphs.KERNELS`; None:
    :func:`default_kernels` of the precision; empty: plain ONNX
    operators only, for runtimes other than ONNX Runtime); the manifest records them.

    Raises ValueError for bad shapes or an unknown precision, and RuntimeError when, on
    random packed batches (:func:`check_graphs`), a packed graph's packed run differs from the
    same requests run alone through it by more than ``TOLERANCES[precision]`` (packed ==
    solo), or from ``original`` run alone by more than ``LAYOUT_TOLERANCES[precision]`` (the
    graphs compute the same model). How many argmax starts/ends differ from ``original`` is
    logged, not gated: random weights give near-tied logits, and a difference within the
    tolerance may reorder two of them (real models: ``packed-bert eval`` compares answers).
    For embed and classify the compared values are each request's head output
    (:class:`~packing.runtime.features.Pooled`: pooled hidden state, or logits).
    fp16 graphs are checked on CUDA where it is available, else on the CPU provider through
    its casts (``allow_cpu_half``: slow, and not the arithmetic a GPU does; logged as such).
    """
    from safetensors.numpy import save_file

    if seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2, got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if max_valid_num < 1:
        raise ValueError(f"--max-valid-num must be >= 1, got {max_valid_num}")
    check_precision(precision)
    kernels = default_kernels(precision) if kernels is None else check_kernels(kernels, precision)
    if prepared_by not in PREPARED_BY:
        raise ValueError(f"prepared_by must be one of {PREPARED_BY}, got {prepared_by!r}")
    out = Path(out)
    _log(f"loading {source}", quiet)
    dims, weights, tok_folder, spec = load_source(source, seed=seed, task=task)
    architecture = source_architecture(tok_folder)
    if architecture != "bert":
        _log(f"{architecture} checkpoint: read as BERT (packing.model.roberta)", quiet)
    if seq_len > dims.max_position_embeddings:
        raise ValueError(
            f"--seq-len {seq_len} exceeds the model's max_position_embeddings "
            f"{dims.max_position_embeddings}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / PREPARING).write_text(prepared_by + "\n")  # removed once the manifest is final
    (out / MANIFEST).unlink(missing_ok=True)
    weights_file = WEIGHTS_FILES[precision]
    for stale in set(WEIGHTS_FILES.values()) - {weights_file}:  # another precision's, earlier
        (out / stale).unlink(missing_ok=True)
    (out / HEAD_FILE).unlink(missing_ok=True)  # another task's, earlier
    if spec.task == "classify":  # the head runs in numpy, float32 whatever the precision
        save_file(
            {n: weights[n] for n in HEAD_TENSORS}, str(out / HEAD_FILE), metadata={"format": "pt"}
        )
    if precision == "int8":
        _log("quantizing the Linear layers to int8 (per output channel)", quiet)
        weights = int8_weights(weights, dims.num_hidden_layers)
    elif precision == "fp16":
        weights = fp16_weights(weights)
    save_file(weights, str(out / weights_file), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(dims.hf_config(spec), indent=2) + "\n")
    save_tokenizer(out, tok_folder)
    module_files: list[str] = []  # files in subfolders (sentence-transformers modules)
    if spec.task == "embed":
        module_files = save_sentence_transformers(out, spec, dims, seq_len, tok_folder)
    else:  # an earlier embed preparation's: this folder is no sentence-transformers folder
        for stale in SENTENCE_TRANSFORMERS_FILES:
            (out / stale).unlink(missing_ok=True)
    graphs = {}
    for kind in KINDS:
        _log(f"writing {kind}.onnx ({spec.task}, {precision})", quiet)
        model = build_graph(kind, dims, out / weights_file, precision, spec, kernels)
        onnx.save(model, str(out / f"{kind}.onnx"))
        graphs[kind] = f"{kind}.onnx"
    manifest = Manifest(
        source=source,
        dims=dims,
        seq_len=seq_len,
        batch_size=batch_size,
        max_valid_num=max_valid_num,
        graphs=graphs,
        precision=precision,
        prepared_by=prepared_by,
        task=spec,
        kernels=tuple(sorted(kernels)),
        architecture=architecture,
    )
    manifest.write(out)  # provisional: the check below opens the folder through it
    diffs: dict[str, float] = {}
    if check:
        tol = TOLERANCES[precision]
        options = {}
        if precision == "fp16" and not cuda_available():
            _log(
                "fp16 without CUDA: checking on the CPU provider (casts, not GPU arithmetic)", quiet
            )
            options = {"device": "cpu", "allow_cpu_half": True}
        # by path: the check reads back the manifest just written, as any user of the folder will
        diffs, layout = check_graphs(out, seed=seed, with_spans=True, **options)
        what, argmaxes = _CHECKED[spec.task]
        for kind, diff in diffs.items():
            _log(
                f"{kind}: max abs {what} diff packed vs alone ({precision}) {diff:.2e}; "
                f"vs original alone {layout[kind][0]:.2e}"
                + (f", {layout[kind][1]} argmax {argmaxes} differ" if argmaxes else ""),
                quiet,
            )
        bad = {k: v for k, v in diffs.items() if not v <= tol}
        if bad:
            (out / MANIFEST).unlink()
            raise RuntimeError(
                f"{precision} packed runs disagree with the same requests run "
                f"alone beyond {tol}: {bad}"
            )
        layout_tol = LAYOUT_TOLERANCES[precision]
        bad = {k: v[0] for k, v in layout.items() if not v[0] <= layout_tol}
        if bad:
            (out / MANIFEST).unlink()
            raise RuntimeError(
                f"{precision} packed graphs disagree with original beyond {layout_tol}: {bad}"
            )
    # what prepare wrote: not the manifest, not caches written later (calibration.json), no
    # temp files; the sentence-transformers module files (1_Pooling/config.json) included
    files = sorted(
        [
            p.name
            for p in out.iterdir()
            if p.is_file() and p.name not in (MANIFEST, CALIBRATION) and not p.name.startswith(".")
        ]
        + [name for name in module_files if "/" in name]
    )
    manifest = Manifest(
        source=source,
        dims=dims,
        seq_len=seq_len,
        batch_size=batch_size,
        max_valid_num=max_valid_num,
        graphs=graphs,
        files={name: sha256_file(out / name) for name in files},
        max_abs_diff=diffs,
        precision=precision,
        prepared_by=prepared_by,
        task=spec,
        kernels=tuple(sorted(kernels)),
        architecture=architecture,
    )
    manifest.write(out)
    (out / PREPARING).unlink(missing_ok=True)
    _log(f"done: {out}", quiet)
    return manifest


def cuda_available() -> bool:
    """Whether ONNX Runtime here has the CUDA execution provider."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


_CHECKED = {
    "qa": ("logit", "starts/ends"),
    "embed": ("embedding", None),
    "classify": ("logit", "labels"),
}
"""Per task: what prepare's check compares, and what its argmax count counts (None: nothing)."""


def argmax_mismatches(a, b) -> int:
    """How many argmaxes differ between two lists of results: the start and end argmaxes of
    :class:`~packing.runtime.features.SpanLogits`, the argmax of the values of
    :class:`~packing.runtime.features.Pooled` (a classify folder's label)."""
    from packing.runtime.features import Pooled

    count = 0
    for x, y in zip(a, b):
        if isinstance(x, Pooled):
            count += int(np.argmax(x.values) != np.argmax(y.values))
        else:
            count += int(np.argmax(x.start_logits) != np.argmax(y.start_logits)) + int(
                np.argmax(x.end_logits) != np.argmax(y.end_logits)
            )
    return count


def check_graphs(
    model_dir: ModelLike,
    seed: int = 0,
    n: int = 12,
    with_spans: bool = False,
    **backend_options,
) -> dict[str, float] | tuple[dict[str, float], dict[str, int]]:
    """Max abs logit difference of each packed graph's packed run against the same requests
    run alone (same folder, so same precision); with ``with_spans`` also, against ``original``
    run alone, the max abs difference and the number of argmax start/end positions that differ
    (:func:`argmax_mismatches`), as ``(diffs, layout)`` with ``layout[kind] = (diff, spans)``.
    Every task: for embed and classify folders the values compared are each request's
    :class:`~packing.runtime.features.Pooled` vector (pooled hidden state, or logits; for
    classify ``spans`` counts differing argmax labels).

    Random sequences of random lengths are packed (offline) through each packed graph, and
    run one at a time through the same graph (solo) and, unpadded, through ``original``. In
    fp32 the graphs agree to rounding; in int8 each is batch-invariant (solo == packed) but two
    graphs' float32 attention rounds differently and per-token quantization amplifies it
    (docs/precision.md), so ``original`` is the layout comparison, not the gate.
    ``backend_options`` go to the onnxruntime backend of every run. ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once for every run.
    """
    from packing.runners import ModelRunner, PackRunner
    from packing.runners.run_modes import max_logit_diff
    from packing.runtime.features import Features

    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    rng = np.random.default_rng(seed + 1)
    lengths = rng.integers(1, manifest.seq_len + 1, size=n)
    lengths[:3] = [1, manifest.seq_len, max(1, manifest.seq_len // 2)]
    vocab, types = manifest.dims.vocab_size, manifest.dims.type_vocab_size
    data = [
        Features(rng.integers(0, vocab, size=int(n_)), rng.integers(0, types, size=int(n_)))
        for n_ in lengths
    ]
    solo = ModelRunner(model, batch_size=1, padding="longest", **backend_options).run(data)
    diffs, layout = {}, {}
    for mode in ("attention_mask", "unpack_repack"):
        runner = PackRunner(model, mode=mode, **backend_options)
        packed = runner.run(data)
        alone = [runner.run([f])[0] for f in data]
        diffs[mode] = max_logit_diff(packed, dict(enumerate(alone)))
        layout[mode] = (
            max_logit_diff(packed, dict(enumerate(solo))),
            argmax_mismatches(solo, packed),
        )
    return (diffs, layout) if with_spans else diffs
