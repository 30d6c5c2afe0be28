"""``packed-bert bench --profile``: where the time of one full batch goes, per kind of operator.

Each layout of a prepared folder (``original``: the spec's padded ``batch_size x seq_len``;
``attention_mask``: offline SPFHP rows; ``unpack_repack``: tokens end to end at the
calibrated token budget) runs a few of its fullest batches of the workload under ONNX
Runtime's profiler (:class:`~packing.runtime.backend.OnnxRuntimeBackend` ``profile=``). The
first batch warms up and is not counted. Every operator's time is put under one
:data:`CATEGORIES` entry by :func:`category`: from its ONNX Runtime op type where that says
it (a ``MatMulInteger`` is dense, a ``SkipLayerNormalization`` is LayerNorm), else from the
role the graph builder wrote into its node name (:data:`packing.model.graphs.ROLES`; ONNX
Runtime keeps it on the nodes it fuses). The table gives milliseconds per batch and the
share of the operators' time.

The package, by job: :mod:`~packing.bench.profile.categories` (:data:`CATEGORIES` and
:func:`category`), :mod:`~packing.bench.profile.trace` (the profiler trace read),
:mod:`~packing.bench.profile.summary` (:class:`LayoutProfile`, the sums and the table),
:mod:`~packing.bench.profile.batches` (the fullest batches at the token budget) and
:mod:`~packing.bench.profile.run` (the profiled runs); every public name is re-exported here.
"""

from __future__ import annotations

from .batches import budget_plans, fullest_plans
from .categories import CATEGORIES, category
from .run import profile_folders, profile_layout
from .summary import LayoutProfile, format_profile, summarize
from .trace import OpRun, read_trace

__all__ = [
    "CATEGORIES",
    "LayoutProfile",
    "OpRun",
    "budget_plans",
    "category",
    "format_profile",
    "fullest_plans",
    "profile_folders",
    "profile_layout",
    "read_trace",
    "summarize",
]
