"""The batches a profile runs: a layout's fullest batches of the workload
(:func:`fullest_plans`), unpack/repack's at the token budget its setting resolves to
(:func:`budget_plans`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from packing.model.manifest import Manifest
from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.offline import (
    plan_offline_attention_mask,
    plan_offline_unpack_repack,
    plan_padded,
)
from packing.policy.plans import Plan
from packing.runtime.calibrate import resolve_max_tokens
from packing.runtime.features import Features
from packing.runtime.knobs import DEFAULT_MAX_TOKENS


def fullest_plans(
    kind: str,
    manifest: Manifest,
    lengths: np.ndarray,
    batches: int,
    max_tokens: int | None,
    attention_groups: int = ATTENTION_GROUPS,
) -> list[Plan]:
    """The ``batches`` fullest batches (most real tokens) of layout ``kind`` on sequences of
    ``lengths``: the spec's padded batches (``original``), offline SPFHP rows
    (``attention_mask``), tokens end to end within ``max_tokens`` (``unpack_repack``)."""
    m = manifest
    if kind == "original":
        plans: list = plan_padded(lengths, m.seq_len, m.batch_size)
    elif kind == "attention_mask":
        plans = plan_offline_attention_mask(lengths, m.seq_len, m.batch_size, m.max_valid_num)
    elif kind == "unpack_repack":
        plans = plan_offline_unpack_repack(
            lengths,
            m.seq_len,
            m.batch_size,
            m.max_valid_num,
            max_tokens=max_tokens,
            attention_groups=attention_groups,
        )
    else:
        raise ValueError(f"unknown layout {kind!r}")
    order = sorted(range(len(plans)), key=lambda i: -int(plans[i].lengths.sum()))
    return [plans[i] for i in sorted(order[:batches])]


def budget_plans(
    model_dir: ModelLike,
    kind: str,
    data: Sequence[Features],
    batches: int,
    options: dict,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
) -> tuple[list[Plan], int | None]:
    """``(plans, budget)``: the ``batches`` fullest batches of layout ``kind`` on ``data``
    (:func:`fullest_plans`), unpack/repack's at the token budget ``max_tokens`` resolves to for
    ONNX Runtime with ``options`` (``"auto"``: calibrated, as the bench's modes; the budget is
    None for the row layouts). ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`. Raises ValueError when the folder has no
    such graph."""
    model = PreparedModel.open(model_dir)
    model.graph_path(kind)  # ValueError naming the folder's graphs when it has no such graph
    budget = None
    if kind == "unpack_repack":
        budget, _ = resolve_max_tokens(max_tokens, model, "onnxruntime", options)
    lengths = np.array([len(f) for f in data])
    return fullest_plans(kind, model.manifest, lengths, batches, budget, attention_groups), budget
