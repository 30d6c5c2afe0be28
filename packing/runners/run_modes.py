"""The run modes ``bench`` and ``eval`` compare: their names, and the runner of each.

:data:`BENCH_MODES`: CLI key -> label printed in the spec's format. Order: Original, the packed
modes, then the rivals of packing (:data:`RIVALS`). Not the packing layouts of
:data:`packing.policy.config.MODES` (``attention_mask`` / ``unpack_repack``), which the packed
modes here run on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from packing.model.prepared import ModelLike
from packing.policy.config import DEFAULT_ALGORITHM
from packing.runtime.backend import backend_kwargs
from packing.runtime.features import Pooled, Result

from .model_runner import ModelRunner
from .pack_runner import PackRunner
from .rivals import SortedPaddingServer

BENCH_MODES: dict[str, str] = {
    "original": "Original",
    "offline_unpack_repack": "Pack Offline Unpack Repack",
    "online_unpack_repack": "Pack Online Unpack Repack",
    "offline_attention_mask": "Pack Offline AttentionMask",
    "online_first_fit": "Pack Online AttentionMask(first_fit)",
    "online_next_fit": "Pack Online AttentionMask(next_fit)",
    "online_best_fit": "Pack Online AttentionMask(best_fit)",
    "dynamic_padding": "Dynamic Padding",
    "sorted_dynamic_padding": "Sorted Dynamic Padding",
    "best_sorted_dynamic_padding": "Sorted Dynamic Padding (best batch size)",
    "no_batching": "No Batching",
    "online_sorted_dynamic_padding": "Online Sorted Dynamic Padding",
    "hf_pipeline": "HF Pipeline",
}

#: Packed modes that take requests one at a time as they arrive.
PACKED_ONLINE: tuple[str, ...] = (
    "online_unpack_repack",
    "online_first_fit",
    "online_next_fit",
    "online_best_fit",
)

#: Ways to serve without packing, each at its setting (best SDP: its best batch size).
RIVALS: tuple[str, ...] = (
    "dynamic_padding",
    "sorted_dynamic_padding",
    "best_sorted_dynamic_padding",
    "no_batching",
    "online_sorted_dynamic_padding",
    "hf_pipeline",
)


def max_logit_diff(got: Sequence[Result], ref: dict[int, Result]) -> float:
    """Largest absolute difference between ``got[i]`` and ``ref[i]`` over the indices of
    ``ref``: of the start or end logits (:class:`~packing.runtime.features.SpanLogits`), or of
    the values (:class:`~packing.runtime.features.Pooled`: pooled hidden state or classifier
    logits). ValueError when two results differ in kind or shape."""
    worst = 0.0
    for i, r in ref.items():
        g = got[i]
        if isinstance(r, Pooled) or isinstance(g, Pooled):
            pairs = [(getattr(g, "values", None), getattr(r, "values", None))]
        else:
            pairs = [(g.start_logits, r.start_logits), (g.end_logits, r.end_logits)]
        for a, b in pairs:
            if a is None or b is None or np.shape(a) != np.shape(b):
                raise ValueError(
                    f"request {i}: results differ in kind or shape "
                    f"({type(g).__name__} {np.shape(a)} vs "
                    f"{type(r).__name__} {np.shape(b)})"
                )
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def settings_backend(settings: dict) -> dict:
    """:func:`~packing.runtime.backend.backend_kwargs` of the bench / eval ``settings``
    (``backend``, ``backend_options``, ``threads``: intra-op threads, onnxruntime only)."""
    return backend_kwargs(
        settings.get("backend", "onnxruntime"),
        settings.get("backend_options"),
        settings.get("threads"),
    )


def runner_for(key: str, model_dir: ModelLike, settings: dict):
    """The runner of mode ``key`` (a :data:`BENCH_MODES` key other than ``hf_pipeline``) on
    ``model_dir`` (a path, or a :class:`~packing.model.prepared.PreparedModel` the runner
    takes as it is). ``settings``: ``threads``, ``batch_wait_timeout_s``, ``max_tokens``,
    ``attention_groups``, backend keys, and ``sdp_batch_size`` for the probed rivals."""
    opts = settings_backend(settings)
    if key == "original":
        return ModelRunner(model_dir, **opts)
    if key == "dynamic_padding":
        return ModelRunner(model_dir, padding="longest", **opts)
    if key == "sorted_dynamic_padding":
        return ModelRunner(model_dir, padding="longest", sort=True, **opts)
    if key == "best_sorted_dynamic_padding":
        return ModelRunner(
            model_dir, batch_size=settings["sdp_batch_size"], padding="longest", sort=True, **opts
        )
    if key == "no_batching":  # each request alone at its own length, as the solo references
        return solo_runner(model_dir, settings)
    if key == "online_sorted_dynamic_padding":
        return SortedPaddingServer(
            model_dir,
            settings["sdp_batch_size"],
            timeout_s=settings["batch_wait_timeout_s"],
            **opts,
        )
    mode = "unpack_repack" if "unpack_repack" in key else "attention_mask"
    algorithm = key.removeprefix("online_") if key.endswith("_fit") else DEFAULT_ALGORITHM
    return PackRunner(
        model_dir,
        mode=mode,
        algorithm=algorithm,
        batch_wait_timeout_s=settings["batch_wait_timeout_s"],
        max_tokens=settings["max_tokens"],
        attention_groups=settings["attention_groups"],
        **opts,
    )


def solo_runner(model_dir: ModelLike, settings: dict) -> ModelRunner:
    """Batches of one request, padded to its own length (to seq_len on a static-shape backend)."""
    runner = ModelRunner(
        model_dir, batch_size=1, padding="max_length", **settings_backend(settings)
    )
    if not runner.backend.static_shapes:
        runner.padding = "longest"
    return runner
