"""ModelRunner: padded batches on the ``original`` graph (the spec's 'Original', and dynamic
padding to the longest sequence of each batch, in arrival order or sorted)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy import offline
from packing.policy.plans import PaddedPlan
from packing.runtime.backend import Backend
from packing.runtime.executor import open_graph
from packing.runtime.features import Features, Result

from .base import _Runner


class ModelRunner(_Runner):
    """Padded batches on the ``original`` graph.

    ``padding="max_length"``: every row padded to the manifest's ``seq_len`` (the spec's
    Original). ``padding="longest"``: each batch padded to its longest sequence (dynamic
    padding); with ``sort=True`` the dataset is sorted by length first (offline only).
    ``backend``: a registered backend name (options in ``backend_options``) or a loaded
    :class:`~packing.runtime.backend.Backend` on the ``original`` graph, used as it is.
    ``model_dir``: a prepared folder's path, or a
    :class:`~packing.model.prepared.PreparedModel` (its manifest is then not read again).
    """

    def __init__(
        self,
        model_dir: ModelLike,
        batch_size: int | None = None,
        padding: str = "max_length",
        sort: bool = False,
        backend: str | Backend = "onnxruntime",
        **backend_options,
    ) -> None:
        model = PreparedModel.open(model_dir)
        manifest, be = open_graph(model, "original", backend, backend_options)
        super().__init__(model, be, manifest.seq_len)
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        if padding == "longest" and be.static_shapes:
            raise ValueError(f"{be.describe()} needs static shapes; use padding='max_length'")
        self.batch_size = batch_size or manifest.batch_size
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.padding, self.sort = padding, sort

    def plans(self, lengths: np.ndarray) -> list[PaddedPlan]:
        """The batches this runner would compute for sequences of ``lengths``."""
        if self.padding == "max_length":
            return offline.plan_padded(lengths, self.seq_len, self.batch_size)
        return offline.plan_dynamic_padding(lengths, self.batch_size, sort=self.sort)

    def run(self, dataset: Sequence[Features], progress: bool = False) -> list[Result]:
        """The result of every request of ``dataset``, in order (span logits or a pooled
        vector, as the folder's task says)."""
        data = self._validate_all(dataset)
        if not data:
            return []
        lengths = np.array([len(f) for f in data])
        return self.run_plans(self.plans(lengths), data, progress, "padded batches")
