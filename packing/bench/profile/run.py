"""A profile run: :func:`profile_layout` runs one graph of a folder on its fullest batches
under ONNX Runtime's profiler, :func:`profile_folders` every graph of every folder."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.attention import ATTENTION_GROUPS
from packing.runtime.backend import OnnxRuntimeBackend, backend_kwargs
from packing.runtime.executor import PlanExecutor
from packing.runtime.features import Features
from packing.runtime.knobs import DEFAULT_MAX_TOKENS

from .batches import budget_plans
from .summary import LayoutProfile, summarize
from .trace import read_trace


def profile_layout(
    model_dir: ModelLike,
    kind: str,
    data: Sequence[Features],
    batches: int = 4,
    threads: int | None = None,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
    backend_options: dict | None = None,
) -> LayoutProfile:
    """Profile graph ``kind`` of the folder on its ``batches`` fullest batches of ``data``
    (one more batch, run first, warms up and is not counted), on ONNX Runtime with
    ``backend_options`` (e.g. ``device``) and ``threads`` intra-op threads. ``max_tokens`` is
    the unpack/repack token budget (``"auto"``: calibrated for these options, as the bench's
    modes). ``model_dir``: a path or a :class:`~packing.model.prepared.PreparedModel`. Raises
    ValueError when the folder has no such graph or ``batches`` < 1."""
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    options = backend_kwargs("onnxruntime", backend_options, threads)
    options.pop("backend")
    plans, _ = budget_plans(model, kind, data, batches + 1, options, max_tokens, attention_groups)
    with tempfile.TemporaryDirectory(prefix="pbs-profile-") as tmp:
        backend = OnnxRuntimeBackend(
            model.graph_path(kind), profile=str(Path(tmp) / kind), **options
        )
        executor = PlanExecutor(backend, manifest, model)
        tokens, slots = [], []
        for i, plan in enumerate(plans):
            feats = [data[k] for k in plan.seq_ids]
            inputs, n_slots = executor.inputs(plan, feats)
            backend.run(inputs)
            if i:
                tokens.append(int(plan.lengths.sum()))
                slots.append(n_slots)
        ops, run_us = read_trace(backend.end_profiling(), skip_runs=1)
    return summarize(kind, manifest.precision, ops, run_us, tokens, slots)


def profile_folders(
    model_dirs: Sequence[ModelLike],
    data: Sequence[Features],
    batches: int = 4,
    threads: int | None = None,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
    backend_options: dict | None = None,
    echo=print,
) -> list[LayoutProfile]:
    """:func:`profile_layout` of every graph of every folder (in the folders' order, layouts
    as :data:`~packing.model.graphs.KINDS`), echoing one line per layout as it lands. Each
    folder given as a path is opened once, for all its layouts."""
    from packing.model.graphs import KINDS

    out = []
    for model_dir in model_dirs:
        model = PreparedModel.open(model_dir)
        for kind in (k for k in KINDS if k in model.manifest.graphs):
            p = profile_layout(
                model,
                kind,
                data,
                batches=batches,
                threads=threads,
                max_tokens=max_tokens,
                attention_groups=attention_groups,
                backend_options=backend_options,
            )
            echo(
                f"[profile] {model} {kind} {p.precision}: {p.run_ms:.1f} ms per batch of "
                f"{p.tokens:.0f} real tokens ({p.batches} batches)"
            )
            out.append(p)
    return out
