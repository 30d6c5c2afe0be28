"""Execute one batch plan on a backend: build the model inputs, call it, cut the outputs back.

:class:`PlanExecutor` is the only code that turns a plan into a model call; the offline
runners, the online dispatch step and the Ray Serve runner replicas all go through it. A qa
folder's graphs give per-token span logits (:class:`~packing.runtime.features.SpanLogits`);
an embed or classify folder's give the last hidden state, which is cut per sequence and put
through the task's head (:mod:`packing.model.heads`) into one
:class:`~packing.runtime.features.Pooled` vector per request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from packing.model.heads import HIDDEN_OUTPUT, Head, load_head
from packing.model.manifest import Manifest
from packing.model.prepared import ModelLike, PreparedModel
from packing.policy import layouts
from packing.policy.plans import Plan, UnpackRepackPlan

from .backend import Backend, load_backend
from .features import Features, Pooled, Result, SpanLogits


@dataclass
class RunStats:
    """Counters of what a runner computed (for packing efficiency and metrics)."""

    batches: int = 0  # model calls
    sequences: int = 0  # requests answered
    real_tokens: int = 0  # tokens of the requests
    token_slots: int = 0  # token positions the dense layers computed
    failed_batches: int = 0  # model calls that raised
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def efficiency(self) -> float:
        """real_tokens / token_slots (1.0 = no compute spent on padding)."""
        return self.real_tokens / self.token_slots if self.token_slots else 0.0

    def add(self, plan: Plan, slots: int, ok: bool) -> None:
        with self.lock:
            self.batches += 1
            if ok:
                self.sequences += plan.n_seqs
                self.real_tokens += plan.real_tokens
                self.token_slots += slots
            else:
                self.failed_batches += 1


class PlanExecutor:
    """Turns one plan plus its sequences into a model call and per-request results.

    Thread-safe: model calls are serialised. Used by the runners here and by the
    Ray Serve runner replicas, which receive plans from the packer deployment.

    The folder's task (``manifest.task``) says what :meth:`execute` returns. ``model_dir`` is
    the prepared folder (a path or a :class:`~packing.model.prepared.PreparedModel`; its
    manifest is not read here), where a classify folder's head is read
    (``head.safetensors``); ``head`` gives a loaded :class:`~packing.model.heads.Head`
    instead. Raises ValueError when a classify folder comes with neither.
    """

    def __init__(
        self,
        backend: Backend,
        manifest: Manifest,
        model_dir: ModelLike | None = None,
        head: Head | None = None,
    ) -> None:
        self.backend = backend
        self.manifest = manifest
        self.head = head if head is not None else load_head(model_dir, manifest.task)
        self.stats = RunStats()
        self._lock = threading.Lock()  # backends take one call at a time

    def inputs(self, plan: Plan, feats: Sequence[Features]) -> tuple[dict[str, np.ndarray], int]:
        """Model inputs for ``plan`` and the number of token slots they hold."""
        ids = [f.input_ids for f in feats]
        types = [f.token_type_ids for f in feats]
        static = self.backend.static_shapes
        m = self.manifest
        if isinstance(plan, UnpackRepackPlan):
            if not static:
                return layouts.build_inputs(plan, ids, types), plan.real_tokens
            # Every shape from the packer's configuration only: [capacity] tokens and
            # [static_attention_rows, seq_len] attention rows (build_inputs raises if a
            # plan ever needs more rows than that bound).
            rows = layouts.static_attention_rows(plan.seq_len, plan.capacity, plan.max_valid_num)
            inputs = layouts.build_inputs(
                plan, ids, types, pad_tokens_to=plan.capacity, pad_attention_to=(rows, plan.seq_len)
            )
            return inputs, plan.capacity
        if static:  # row plans (padded or attention mask): exactly [batch_size, seq_len]
            return (
                layouts.build_inputs(plan, ids, types, pad_rows_to=m.batch_size),
                m.batch_size * plan.seq_len,
            )
        # dynamic shapes: attention-mask rows trimmed to the fullest row's used width
        inputs = layouts.build_inputs(plan, ids, types, trim_rows=True)
        return inputs, int(inputs["input_ids"].size)

    def execute(self, plan: Plan, feats: Sequence[Features]) -> list[Result]:
        """Run ``plan`` (``feats[k]`` is the plan's k-th sequence); results in plan order:
        :class:`SpanLogits` for a qa folder, :class:`Pooled` (the head's float32 vector of
        each sequence, computed from its own hidden states only) for embed and classify."""
        inputs, slots = self.inputs(plan, feats)
        try:
            with self._lock:
                out = self.backend.run(inputs)
        except Exception:
            self.stats.add(plan, slots, ok=False)
            raise
        if self.head is None:
            starts = layouts.scatter_outputs(plan, out["start_logits"])
            ends = layouts.scatter_outputs(plan, out["end_logits"])
            results: list[Result] = [SpanLogits(s, e) for s, e in zip(starts, ends)]
        else:
            hidden = layouts.scatter_outputs(plan, out[HIDDEN_OUTPUT])  # [len_k, H] each
            results = [Pooled(self.head(h)) for h in hidden]
        self.stats.add(plan, slots, ok=True)
        return results


def open_graph(
    model_dir: ModelLike,
    kind: str,
    backend: str | Backend,
    backend_options: dict,
) -> tuple[Manifest, Backend]:
    """``(manifest, backend)``: graph ``kind`` of a prepared model (a
    :class:`~packing.model.prepared.PreparedModel`, or a folder opened here) loaded on backend
    ``backend``; ValueError naming the folder's graphs when it has no such graph.

    ``backend`` may also be a loaded :class:`Backend` (already on graph ``kind``, e.g. a test's
    wrapper around ``open_graph(...)[1]``): it is used as it is, and takes no options."""
    model = PreparedModel.open(model_dir)
    path = model.graph_path(kind)
    if isinstance(backend, Backend):
        if backend_options:
            raise ValueError(
                f"backend options {sorted(backend_options)} apply to a backend "
                f"name, not to a loaded {type(backend).__name__}"
            )
        return model.manifest, backend
    return model.manifest, load_backend(backend, path, **backend_options)
