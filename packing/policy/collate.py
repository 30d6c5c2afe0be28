"""Pack one already-collected batch of requests (the Ray Serve packer's collate step)."""

from __future__ import annotations

from collections.abc import Sequence

from .config import PackingConfig
from .online import OnlinePacker
from .plans import Plan


def pack_batch(lengths: Sequence[int], config: PackingConfig) -> list[Plan]:
    """Plans for a batch that arrived together, placed in arrival order.

    Uses the online packer's rules (``config.mode`` and ``config.algorithm``, at most
    ``max_valid_num`` sequences and ``capacity_tokens`` tokens a plan), without timeouts.
    ``seq_ids`` in the plans index ``lengths``; every index appears in exactly one plan.
    Usually one plan; more when the batch does not fit one model batch.
    Raises ValueError for a length outside ``[1, seq_len]``.
    """
    packer = OnlinePacker(config, clock=lambda: 0.0)
    plans: list[Plan] = []
    for i, length in enumerate(lengths):
        plans.extend(packer.add(i, int(length), arrival_s=0.0))
    last = packer.flush()
    if last is not None:
        plans.append(last)
    return plans
