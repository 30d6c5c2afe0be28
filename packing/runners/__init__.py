"""The in-process runners: ``PackRunner`` (packed batches, offline or online, through the
served Packer's admission and dispatch steps), ``ModelRunner`` (padded batches, the spec's
Original mode), the rivals the benchmark compares against (sorted dynamic padding), the run
modes of ``bench`` and ``eval``, the benchmark workloads and the closed/open-loop load driver.
Built on the serving core (:mod:`packing.runtime`); the serving core never imports this."""

from .model_runner import ModelRunner
from .pack_runner import PackRunner

__all__ = ["ModelRunner", "PackRunner"]
