"""Runners: execute batch plans on a backend and hand every request its own logits.

* :class:`ModelRunner` — padded batches on the ``original`` graph (the spec's 'Original',
  plus dynamic padding to the longest sequence of each batch).
* :class:`PackRunner` — packed batches on the ``attention_mask`` or ``unpack_repack``
  graph, offline (``run``: the whole dataset packed ahead of time) or online
  (``submit``: requests packed as they arrive by a background thread, sent when a batch
  is full or its oldest request has waited ``timeout_s``).

Both validate every request before it reaches a batch (:class:`InvalidInput` for bad
ones; the runner keeps serving), and return results in request order. A failed model
call fails exactly the requests of that batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from packing.model.manifest import Manifest
from packing.policy import layouts, offline
from packing.policy.config import PackingConfig
from packing.policy.online import OnlinePacker
from packing.policy.plans import AttentionMaskPlan, PaddedPlan, Plan, UnpackRepackPlan

from .backend import Backend, load_backend
from .features import Features, SpanLogits, validate_features


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
    """

    def __init__(self, backend: Backend, manifest: Manifest) -> None:
        self.backend = backend
        self.manifest = manifest
        self.stats = RunStats()
        self._lock = threading.Lock()  # backends take one call at a time

    def inputs(self, plan: Plan, feats: Sequence[Features]) -> tuple[dict[str, np.ndarray], int]:
        """Model inputs for ``plan`` and the number of token slots they hold."""
        ids = [f.input_ids for f in feats]
        types = [f.token_type_ids for f in feats]
        static = self.backend.static_shapes
        m = self.manifest
        if isinstance(plan, UnpackRepackPlan):
            pad = plan.capacity if static else None
            return layouts.build_inputs(plan, ids, types, pad_tokens_to=pad), pad or plan.real_tokens
        if isinstance(plan, AttentionMaskPlan):
            rows = m.batch_size if static else plan.n_rows
            return (layouts.build_inputs(plan, ids, types, pad_rows_to=rows if static else None),
                    rows * plan.seq_len)
        return layouts.build_inputs(plan, ids, types), plan.token_slots

    def execute(self, plan: Plan, feats: Sequence[Features]) -> list[SpanLogits]:
        """Run ``plan`` (``feats[k]`` is the plan's k-th sequence); results in plan order."""
        inputs, slots = self.inputs(plan, feats)
        try:
            with self._lock:
                out = self.backend.run(inputs)
        except Exception:
            self.stats.add(plan, slots, ok=False)
            raise
        starts = layouts.scatter_outputs(plan, out["start_logits"])
        ends = layouts.scatter_outputs(plan, out["end_logits"])
        self.stats.add(plan, slots, ok=True)
        return [SpanLogits(s, e) for s, e in zip(starts, ends)]


def _open(model_dir: str | Path, kind: str, backend: str, backend_options: dict,
          manifest: Manifest | None = None) -> tuple[Manifest, Backend]:
    manifest = manifest or Manifest.read(model_dir)
    if kind not in manifest.graphs:
        raise ValueError(f"{model_dir} has no {kind!r} graph; graphs: {sorted(manifest.graphs)}")
    return manifest, load_backend(backend, Path(model_dir) / manifest.graphs[kind], **backend_options)


class _Runner:
    """Shared parts: manifest, validation, offline execution of a list of plans."""

    def __init__(self, manifest: Manifest, backend: Backend, seq_len: int) -> None:
        self.manifest = manifest
        self.seq_len = seq_len
        self._exec = PlanExecutor(backend, manifest)

    @property
    def stats(self) -> RunStats:
        """Counters of everything this runner computed."""
        return self._exec.stats

    @property
    def backend(self) -> Backend:
        """The loaded model graph."""
        return self._exec.backend

    def reset_stats(self) -> None:
        """Start counting from zero (e.g. after a warm-up)."""
        self._exec.stats = RunStats()

    def validate(self, f: Features) -> Features:
        """Checked int64 copy of ``f`` or :class:`InvalidInput`."""
        d = self.manifest.dims
        return validate_features(f, self.seq_len, d.vocab_size, d.type_vocab_size)

    def _validate_all(self, dataset: Sequence[Features]) -> list[Features]:
        out = []
        for i, f in enumerate(dataset):
            try:
                out.append(self.validate(f))
            except ValueError as exc:
                raise type(exc)(f"request {i}: {exc}") from None
        return out

    def run_plans(self, plans: Sequence[Plan], dataset: Sequence[Features],
                  progress: bool = False, desc: str = "batches") -> list[SpanLogits]:
        """Execute ``plans`` whose ``seq_ids`` index ``dataset``; results in dataset order."""
        results: list[SpanLogits | None] = [None] * len(dataset)
        bar = _progress(len(plans), desc) if progress else None
        for plan in plans:
            outs = self._exec.execute(plan, [dataset[i] for i in plan.seq_ids])
            for sid, out in zip(plan.seq_ids, outs):
                if results[sid] is not None:
                    raise RuntimeError(f"request {sid} was placed twice")
                results[sid] = out
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{len(missing)} requests got no result, first {missing[:5]}")
        return results  # type: ignore[return-value]


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False)


class ModelRunner(_Runner):
    """Padded batches on the ``original`` graph.

    ``padding="max_length"``: every row padded to the manifest's ``seq_len`` (the spec's
    Original). ``padding="longest"``: each batch padded to its longest sequence (dynamic
    padding); with ``sort=True`` the dataset is sorted by length first (offline only).
    """

    def __init__(self, model_dir: str | Path, batch_size: int | None = None,
                 padding: str = "max_length", sort: bool = False,
                 backend: str = "onnxruntime", **backend_options) -> None:
        manifest, be = _open(model_dir, "original", backend, backend_options)
        super().__init__(manifest, be, manifest.seq_len)
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

    def run(self, dataset: Sequence[Features], progress: bool = False) -> list[SpanLogits]:
        """Logits for every request of ``dataset``, in order."""
        data = self._validate_all(dataset)
        if not data:
            return []
        lengths = np.array([len(f) for f in data])
        return self.run_plans(self.plans(lengths), data, progress, "padded batches")


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
        manifest, be = _open(model_dir, mode, backend, backend_options, manifest)
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
