"""Pure packing policy: lengths in, frozen batch plans out.

No model, no threads, no I/O: everything here is numpy and dataclasses, so it is
cheap to test exhaustively and safe to call from any runner.

* :mod:`.config` -- :class:`PackingConfig` (sizes, mode, heuristic, token budget).
* :mod:`.checks` -- declared range checks (:func:`~.checks.positive_int`, ...) for any layer.
* :mod:`.plans` -- the plan dataclasses a runner executes.
* :mod:`.heuristics` -- :class:`RowAllocator` (first/best/next fit rows).
* :mod:`.spfhp` -- :func:`pack_spfhp`, offline histogram packing.
* :mod:`.offline` -- whole-workload planners.
* :mod:`.online` -- :class:`OnlinePacker`, PackRunner-style placement of a stream of sequences.
* :mod:`.collate` -- :func:`collate`, the packing policy of online serving: windows -> plans.
* :mod:`.attention` -- :func:`plan_attention`, attention rows sized by their sequences.
* :mod:`.layouts` -- plans to model inputs and model outputs back.
"""

from .attention import ATTENTION_GROUPS, AttentionLayout, plan_attention
from .collate import collate
from .config import ALGORITHMS, DEFAULT_ALGORITHM, DEFAULT_MODE, MODES, PackingConfig
from .heuristics import RowAllocator
from .layouts import build_inputs, scatter_outputs, token_coordinates
from .offline import (
    plan_dynamic_padding,
    plan_offline_attention_mask,
    plan_offline_unpack_repack,
    plan_padded,
)
from .online import OnlinePacker
from .plans import AttentionMaskPlan, PaddedPlan, Plan, UnpackRepackPlan
from .spfhp import pack_spfhp, packing_efficiency, validate_lengths

__all__ = [
    "ALGORITHMS",
    "ATTENTION_GROUPS",
    "DEFAULT_ALGORITHM",
    "DEFAULT_MODE",
    "AttentionLayout",
    "MODES",
    "AttentionMaskPlan",
    "OnlinePacker",
    "PackingConfig",
    "PaddedPlan",
    "Plan",
    "RowAllocator",
    "UnpackRepackPlan",
    "build_inputs",
    "collate",
    "pack_spfhp",
    "packing_efficiency",
    "plan_dynamic_padding",
    "plan_offline_attention_mask",
    "plan_offline_unpack_repack",
    "plan_attention",
    "plan_padded",
    "scatter_outputs",
    "token_coordinates",
    "validate_lengths",
]
