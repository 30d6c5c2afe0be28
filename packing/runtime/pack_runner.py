"""PackRunner: packed batches on the ``attention_mask`` or ``unpack_repack`` graph, offline or
online."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from packing.model.manifest import Manifest
from packing.policy import offline
from packing.policy.config import PackingConfig
from packing.policy.online import OnlinePacker
from packing.policy.plans import Plan

from .base import _Runner
from .executor import open_graph
from .features import Features, SpanLogits


_STOP = object()


class PackRunner(_Runner):
    """Packed batches: ``mode`` is ``attention_mask`` or ``unpack_repack``.

    Offline, :meth:`run` packs the whole dataset ahead of time (SPFHP histogram packing
    for attention_mask rows; end to end for unpack_repack). Online, :meth:`submit`
    queues one request and returns a Future; a background thread packs requests with
    ``algorithm`` (first_fit | next_fit | best_fit) and sends a batch when it holds
    ``max_valid_num`` sequences, when the next request does not fit, or when its oldest
    request has waited ``timeout_s``. Call :meth:`close` (or use ``with``) to stop it.
    """

    def __init__(self, model_dir: str | Path, mode: str = "attention_mask",
                 algorithm: str = "first_fit", max_valid_num: int | None = None,
                 timeout_s: float = 0.01, max_tokens: int | None = None,
                 backend: str = "onnxruntime", **backend_options) -> None:
        manifest = Manifest.read(model_dir)
        self.config = PackingConfig(
            seq_len=manifest.seq_len, batch_size=manifest.batch_size,
            max_valid_num=max_valid_num or manifest.max_valid_num, timeout_s=timeout_s,
            mode=mode, algorithm=algorithm, max_tokens=max_tokens,
        )
        manifest, be = open_graph(model_dir, mode, backend, backend_options, manifest)
        super().__init__(manifest, be, manifest.seq_len)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._start_lock = threading.Lock()
        self._next_id = 0

    # ----------------------------------------------------------------- offline
    def plans(self, lengths: np.ndarray) -> list[Plan]:
        """The batches offline packing makes for sequences of ``lengths``."""
        c = self.config
        if c.mode == "attention_mask":
            return offline.plan_offline_attention_mask(lengths, c.seq_len, c.batch_size, c.max_valid_num)
        return offline.plan_offline_unpack_repack(lengths, c.seq_len, c.batch_size, c.max_valid_num,
                                                  max_tokens=c.max_tokens)

    def run(self, dataset: Sequence[Features], progress: bool = False) -> list[SpanLogits]:
        """Offline: pack all of ``dataset`` ahead of time and run it; results in order."""
        data = self._validate_all(dataset)
        if not data:
            return []
        lengths = np.array([len(f) for f in data])
        return self.run_plans(self.plans(lengths), data, progress, f"packed {self.config.mode}")

    # ------------------------------------------------------------------ online
    def submit(self, features: Features) -> "Future[SpanLogits]":
        """Online: queue one request; the Future resolves to its logits or its batch's error.

        Bad input raises :class:`InvalidInput` here, before anything is queued.
        """
        f = self.validate(features)
        fut: Future = Future()
        with self._start_lock:
            if self._closed:
                raise RuntimeError("PackRunner is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="pack-runner", daemon=True)
                self._thread.start()
            self._queue.put((f, fut, time.monotonic()))
        return fut

    def submit_many(self, dataset: Iterable[Features]) -> list["Future[SpanLogits]"]:
        """:meth:`submit` each request; Futures in the same order."""
        return [self.submit(f) for f in dataset]

    def close(self) -> None:
        """Run what is still waiting, then stop the packing thread. Idempotent."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def __enter__(self) -> "PackRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        """Packing thread: never exits leaving a Future unresolved."""
        waiting: dict[int, tuple[Features, Future]] = {}
        try:
            self._pack_forever(waiting)
        except BaseException as exc:  # a bug here must not hang callers
            with self._start_lock:
                self._closed = True
            for _, fut in waiting.values():
                if not fut.done():
                    fut.set_exception(exc)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP and not item[1].done():
                    item[1].set_exception(exc)
            raise

    def _pack_forever(self, waiting: dict[int, tuple[Features, Future]]) -> None:
        packer = OnlinePacker(self.config)

        def send(plan: Plan | None) -> None:
            if plan is None:
                return
            items = [waiting.pop(int(i)) for i in plan.seq_ids]
            try:
                outs = self._exec.execute(plan, [f for f, _ in items])
            except Exception as exc:  # fail the whole batch, keep serving
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            for (_, fut), out in zip(items, outs):
                if not fut.done():
                    fut.set_result(out)

        def accept(item) -> bool:
            if item is _STOP:
                return False
            f, fut, arrival = item
            if not fut.set_running_or_notify_cancel():
                return True  # cancelled before it was packed: drop it
            sid = self._next_id
            self._next_id += 1
            waiting[sid] = (f, fut)
            for plan in packer.add(sid, len(f), arrival_s=arrival):
                send(plan)
            return True

        running = True
        while running:
            try:
                item = self._queue.get(timeout=packer.time_to_deadline())
            except queue.Empty:
                send(packer.poll())
                continue
            running = accept(item)
            # Drain what queued up while the last batch ran before judging timeouts,
            # so requests that waited behind a batch fill the next one.
            while running:
                try:
                    running = accept(self._queue.get_nowait())
                except queue.Empty:
                    break
            send(packer.poll())
        send(packer.flush())
