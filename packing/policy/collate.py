"""The packing-aware collate: the windows an admitted batch collected -> batch plans.

This is the one packing policy of online serving. The served ``Packer`` (behind
``@serve.batch``) and the in-process online ``PackRunner`` both call it, through
:class:`~packing.runtime.dispatch.Dispatcher`, on the windows waiting for a runner slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import PackingConfig
from .online import OnlinePacker
from .plans import Plan

__all__ = ["collate"]


def collate(
    lengths: Sequence[int], config: PackingConfig, max_plans: int | None = None
) -> list[Plan]:
    """Plans for sequences of ``lengths`` that arrived in this order.

    Sequences are placed in arrival order by :class:`OnlinePacker`'s rules (``config.mode``
    and ``config.algorithm``); a plan holds at most ``config.max_valid_num`` sequences and
    ``config.capacity_tokens`` real tokens, and closes when full or when the next sequence
    does not fit (that sequence opens the next plan), so every plan holds a contiguous run of
    the arrival order. ``seq_ids`` in the plans index ``lengths``.

    With ``max_plans``, packing stops once that many plans are formed: they cover a prefix
    ``lengths[:n]`` (``n`` = the plans' total ``n_seqs``) and the rest is left out, for the
    caller to pack again later; otherwise every index appears in exactly one plan.

    Raises ValueError for a length outside ``[1, seq_len]`` or ``max_plans < 1``.
    """
    if max_plans is not None and max_plans < 1:
        raise ValueError(f"max_plans must be None or >= 1, got {max_plans!r}")
    packer = OnlinePacker(config)
    plans: list[Plan] = []
    for i, length in enumerate(lengths):
        plans.extend(packer.add(i, int(length)))
        if max_plans is not None and len(plans) >= max_plans:
            return plans[:max_plans]  # add() may close two at once: the second is left out
    last = packer.flush()
    if last is not None:
        plans.append(last)
    return plans
