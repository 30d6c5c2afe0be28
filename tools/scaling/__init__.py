"""``python -m tools scaling``: the serving graph on simulated accelerators, through Python handles.

For each runner replica count it deploys the app (``device: sim``) in a private local Ray
cluster, keeps ``--outstanding`` windows in flight with ``Packer.many`` handle calls of
``--windows-per-call`` windows each, and reports sequences/s, the packer's mean sequences
per batch and token fill, and how many answers differ from the same window run alone
(``crossed``; the sim's logits are exact, so any difference is a mix-up). Then it runs the
same windows through the in-process online ``PackRunner`` on the same sim device, with the
same number of windows outstanding and the dispatch slots of one runner replica, and prints
the served batches' fill against it.

The package, by job: :mod:`~tools.scaling.report` (rows from the packer's counters, crossed
answers, the Markdown report), :mod:`~tools.scaling.drive` (the closed-loop clients through
the packer's handle and the in-process runner) and :mod:`~tools.scaling.run` (the run);
every public name is re-exported here.
"""

from __future__ import annotations

from .report import (
    CLOSED,
    ScalingRow,
    count_crossed,
    counter_delta,
    format_report,
    scaling_row,
)
from .run import SIM_CONFIG, scaling

__all__ = [
    "CLOSED",
    "SIM_CONFIG",
    "ScalingRow",
    "count_crossed",
    "counter_delta",
    "format_report",
    "scaling",
    "scaling_row",
]
