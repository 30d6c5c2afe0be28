"""Rivals of packing that the benchmark runs at their best setting.

* :func:`probe_batch_size` -- the batch size at which Sorted Dynamic Padding runs fastest,
  from a short timed probe on a small sorted subset of the workload.
* :class:`SortedPaddingServer` -- the online rival a user could write in an afternoon:
  collect requests for a moment, sort them by length, run them as dynamically padded
  sub-batches on the ``original`` graph.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from packing.model.prepared import ModelLike
from packing.policy.offline import plan_dynamic_padding
from packing.runners.model_runner import ModelRunner
from packing.runtime.executor import RunStats
from packing.runtime.features import Features, SpanLogits

BATCH_SIZES = (2, 4, 8, 16)  # sizes the probe tries, capped at the model's batch_size
PROBE_SAMPLES = 48  # requests the probe times at each size


def batch_size_candidates(max_batch_size: int, sizes: Sequence[int] = BATCH_SIZES) -> list[int]:
    """``sizes`` capped at ``max_batch_size``, deduplicated and sorted (e.g. [2, 4] for 4)."""
    return sorted({min(int(s), int(max_batch_size)) for s in sizes})


def probe_batch_size(
    runner: ModelRunner,
    data: Sequence[Features],
    candidates: Sequence[int],
    samples: int = PROBE_SAMPLES,
) -> tuple[int, dict[int, float]]:
    """The fastest of ``candidates`` for sorted dynamic padding, and samples/s at each.

    ``runner`` must pad to the longest sequence of each batch and sort
    (``ModelRunner(padding="longest", sort=True)``); its ``batch_size`` is set to each
    candidate in turn and restored afterwards. The first ``min(samples, len(data))``
    requests are run once as a warm-up, then once per candidate, timed. Ties go to the
    smaller size. Raises ValueError for no candidates or no data.
    """
    if not candidates or not data:
        raise ValueError("probe_batch_size needs candidates and data")
    subset = list(data[: min(samples, len(data))])
    keep = runner.batch_size
    rates: dict[int, float] = {}
    try:
        runner.batch_size = max(candidates)
        runner.run(subset)  # warm-up
        for bs in sorted(candidates):
            runner.batch_size = bs
            t0 = time.perf_counter()
            runner.run(subset)
            rates[bs] = len(subset) / (time.perf_counter() - t0)
    finally:
        runner.batch_size = keep
    return max(rates, key=lambda bs: (rates[bs], -bs)), rates


class SortedPaddingServer:
    """Online sorted dynamic padding: a thread that batches requests, sorts, pads, runs.

    :meth:`submit` queues one request and returns a Future, like ``PackRunner.submit``.
    A worker thread takes up to ``max_valid_num`` queued requests once that many wait or
    the oldest has waited ``timeout_s``, sorts them by length (longest first) and runs them
    as sub-batches of ``batch_size``, each padded to its own longest sequence
    (:func:`plan_dynamic_padding` on a ``ModelRunner``'s ``original`` graph). Each request
    is answered exactly once; if a model call raises, every request of that collected
    batch gets the exception. :meth:`close` answers everything still queued, then stops.
    ``backend`` and its options are passed to :class:`ModelRunner`.
    """

    def __init__(
        self,
        model_dir: ModelLike,
        batch_size: int,
        max_valid_num: int | None = None,
        timeout_s: float = 0.01,
        backend: str = "onnxruntime",
        **backend_options,
    ) -> None:
        self.runner = ModelRunner(
            model_dir, batch_size=batch_size, padding="longest", backend=backend, **backend_options
        )
        self.batch_size = self.runner.batch_size
        self.max_valid_num = max_valid_num or self.runner.manifest.max_valid_num
        if self.max_valid_num < 1:
            raise ValueError(f"max_valid_num must be >= 1, got {self.max_valid_num}")
        self.timeout_s = timeout_s
        self._queue: list[tuple[Features, Future, float]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="sorted-padding", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> RunStats:
        """Counters of the model calls made so far (batches, tokens, token slots)."""
        return self.runner.stats

    def reset_stats(self) -> None:
        """Start counting from zero (e.g. after a warm-up)."""
        self.runner.reset_stats()

    def submit(self, features: Features) -> Future[SpanLogits]:
        """Queue one request; the Future resolves to its logits or its batch's error.

        Bad input raises :class:`InvalidInput` here; a closed server raises RuntimeError.
        """
        f = self.runner.validate(features)
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("SortedPaddingServer is closed")
            self._queue.append((f, fut, time.monotonic()))
            self._cond.notify()
        return fut

    def close(self) -> None:
        """Answer every queued request, then stop the worker. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def __enter__(self) -> SortedPaddingServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_batch(self) -> list[tuple[Features, Future, float]]:
        """Wait for a batch to be due and take it; empty once closed and drained."""
        with self._cond:
            while True:
                if self._queue and (self._closed or len(self._queue) >= self.max_valid_num):
                    break
                if not self._queue:
                    if self._closed:
                        return []
                    self._cond.wait()
                    continue
                left = self._queue[0][2] + self.timeout_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = self._queue[: self.max_valid_num]
            del self._queue[: self.max_valid_num]
            return batch

    def _serve(self) -> None:
        while batch := self._next_batch():
            batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
            if not batch:
                continue
            feats = [f for f, _, _ in batch]
            try:
                plans = plan_dynamic_padding(
                    np.array([len(f) for f in feats]), self.batch_size, sort=True
                )
                outs = self.runner.run_plans(plans, feats)
            except BaseException as exc:  # noqa: BLE001 - every waiting request learns why
                for _, fut, _ in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut, _), out in zip(batch, outs):
                fut.set_result(out)
