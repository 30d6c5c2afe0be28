"""PackRunner: packed batches on the ``attention_mask`` or ``unpack_repack`` graph, offline or
online."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy import offline
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.checks import one_of, positive_int
from packing.policy.config import DEFAULT_ALGORITHM, DEFAULT_MODE
from packing.policy.plans import Plan
from packing.runtime.admission import DEFAULT_ADMISSION, AdmissionConfig, CountAdmission
from packing.runtime.backend import Backend
from packing.runtime.calibrate import AUTO, Calibration, resolve_max_tokens
from packing.runtime.dispatch import (
    DEFAULT_DISPATCH,
    DISPATCH,
    Dispatcher,
    DispatchStats,
    admit_windows,
)
from packing.runtime.executor import open_graph
from packing.runtime.features import Features, Result
from packing.runtime.knobs import DEFAULT_MAX_TOKENS, DEFAULT_MAX_VALID_NUM, packing_config

from .base import _Runner


class PackRunner(_Runner):
    """Packed batches: ``mode`` is ``attention_mask`` or ``unpack_repack`` (default
    :data:`~packing.policy.config.DEFAULT_MODE`).

    Offline, :meth:`run` packs the whole dataset ahead of time (SPFHP histogram packing
    for attention_mask rows; end to end for unpack_repack). Online, :meth:`submit`
    queues one request and returns a Future. Online requests go through the served
    Packer's pipeline, in-process: admission by ``@serve.batch``'s count rule
    (:class:`~packing.runtime.admission.CountAdmission`: ``max_batch_size`` windows, or
    ``batch_wait_timeout_s`` after a batch's first, ``max_concurrent_batches`` batches at
    once), then the dispatch step (:class:`~packing.runtime.dispatch.Dispatcher`), which
    packs everything waiting with the one packing policy
    (:func:`~packing.policy.collate.collate`; ``algorithm`` first_fit | next_fit |
    best_fit) whenever one of ``max_inflight_batches`` slots is free (default 2, as one
    served runner replica takes: one plan on the device while the next is prepared).
    Call :meth:`close` (or use ``with``) to stop it.

    ``max_tokens`` is the budget of real tokens per batch: an int pins it (it must lie in
    ``[seq_len, batch_size * seq_len]``), ``None`` is the full batch ``batch_size *
    seq_len``, and ``"auto"`` (the default) is the budget calibrated for this runner's
    backend and options on this host (:func:`~packing.runtime.calibrate.load_or_calibrate`:
    read from ``calibration.json`` in the model folder, measured there on first use; the
    full batch where the backend cannot be calibrated, e.g. an injected ``sleep`` or a loaded
    backend). ``backend`` is a registered backend name (its options are ``backend_options``)
    or a loaded :class:`~packing.runtime.backend.Backend` on this folder's ``mode`` graph, used
    as it is (the seam for wrapping one: fault injection, recording shapes).
    ``attention_groups`` (unpack_repack): most attention width groups per batch
    (:func:`~packing.policy.attention.plan_attention`; 1 = rows as wide as the batch's
    longest sequence). :attr:`calibration` holds the calibration used (None unless ``"auto"`` found one);
    ``config.max_tokens`` the budget in force. ``model_dir``: a prepared folder's path, or a
    :class:`~packing.model.prepared.PreparedModel`; either way the manifest is read at most
    once, here, and the calibration and graph loading use that reading.
    """

    def __init__(
        self,
        model_dir: ModelLike,
        mode: str = DEFAULT_MODE,
        algorithm: str = DEFAULT_ALGORITHM,
        max_valid_num: int | None = DEFAULT_MAX_VALID_NUM,
        max_batch_size: int | None = DEFAULT_ADMISSION.max_batch_size,
        batch_wait_timeout_s: float = DEFAULT_ADMISSION.batch_wait_timeout_s,
        max_concurrent_batches: int | None = DEFAULT_ADMISSION.max_concurrent_batches,
        max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
        max_inflight_batches: int = 2,
        attention_groups: int = ATTENTION_GROUPS,
        dispatch: str = DEFAULT_DISPATCH,
        backend: str | Backend = "onnxruntime",
        **backend_options,
    ) -> None:
        model = PreparedModel.open(model_dir)
        manifest = model.manifest
        self.calibration: Calibration | None = None
        knobs = dict(
            mode=mode,
            algorithm=algorithm,
            max_valid_num=max_valid_num,
            max_tokens=max_tokens,
            attention_groups=attention_groups,
        )
        # every knob checked before any measuring ("auto" with the full batch until calibrated)
        self.config = packing_config(manifest, **knobs)
        self.admission = AdmissionConfig(
            max_batch_size, batch_wait_timeout_s, max_concurrent_batches
        )
        self.dispatch = one_of("dispatch", dispatch, DISPATCH)
        self.max_inflight_batches = positive_int("max_inflight_batches", max_inflight_batches)
        if isinstance(max_tokens, str) and isinstance(backend, str):  # measured (or read from
            # the cache) before this runner loads its graph; a loaded Backend cannot be: full batch
            budget, self.calibration = resolve_max_tokens(AUTO, model, backend, backend_options)
            self.config = packing_config(manifest, **knobs, calibrated=budget)
        _, be = open_graph(model, mode, backend, backend_options)
        super().__init__(model, be, manifest.seq_len)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._dispatcher: Dispatcher | None = None
        self._admission: CountAdmission | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._start_lock = threading.Lock()
        self._submitting: set[asyncio.Task] = set()  # online requests not yet answered

    # ----------------------------------------------------------------- offline
    def plans(self, lengths: np.ndarray) -> list[Plan]:
        """The batches offline packing makes for sequences of ``lengths``."""
        c = self.config
        if c.mode == "attention_mask":
            return offline.plan_offline_attention_mask(
                lengths, c.seq_len, c.batch_size, c.max_valid_num
            )
        return offline.plan_offline_unpack_repack(
            lengths,
            c.seq_len,
            c.batch_size,
            c.max_valid_num,
            max_tokens=c.max_tokens,
            attention_groups=c.attention_groups,
        )

    def run(self, dataset: Sequence[Features], progress: bool = False) -> list[Result]:
        """Offline: pack all of ``dataset`` ahead of time and run it; results in order."""
        data = self._validate_all(dataset)
        if not data:
            return []
        lengths = np.array([len(f) for f in data])
        return self.run_plans(self.plans(lengths), data, progress, f"packed {self.config.mode}")

    # ------------------------------------------------------------------ online
    def submit(self, features: Features) -> Future[Result]:
        """Online: queue one request; the Future resolves to its result or its batch's error.

        Bad input raises :class:`InvalidInput` here, before anything is queued. Cancelling the
        Future before its batch starts withdraws the request.
        """
        f = self.validate(features)
        with self._start_lock:
            if self._closed:
                raise RuntimeError("PackRunner is closed")
            if self._loop is None:
                self._start_loop()
            assert self._loop is not None and self._admission is not None
            return asyncio.run_coroutine_threadsafe(self._submit(f), self._loop)

    async def _submit(self, features: Features) -> Result:
        assert self._admission is not None
        task = asyncio.current_task()
        self._submitting.add(task)  # its first step runs before close()'s drain starts
        try:
            return (await admit_windows(self._admission.submit, [features]))[0]
        finally:
            self._submitting.discard(task)

    def submit_many(self, dataset: Iterable[Features]) -> list[Future[Result]]:
        """:meth:`submit` each request; Futures in the same order."""
        return [self.submit(f) for f in dataset]

    @property
    def dispatch_stats(self) -> DispatchStats:
        """What the online path admitted and sent so far (zeros before the first submit)."""
        return self._dispatcher.stats if self._dispatcher is not None else DispatchStats()

    @property
    def inflight(self) -> int:
        """Online: plans running now."""
        return self._dispatcher.inflight if self._dispatcher is not None else 0

    @property
    def waiting(self) -> int:
        """Online: admitted requests not yet in a started plan."""
        return self._dispatcher.waiting if self._dispatcher is not None else 0

    def close(self) -> None:
        """Run what is still waiting (at once: not after ``batch_wait_timeout_s``), then stop
        the online path's thread. Idempotent."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._admission is None:
            return
        asyncio.run_coroutine_threadsafe(self._drain(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        if self._pool is not None:
            self._pool.shutdown()

    async def _drain(self) -> None:
        assert self._admission is not None and self._dispatcher is not None
        # Requests submitted before close() took their first step before this one (their
        # callbacks came first) and created the tasks that queue their windows; one yield
        # lets those queue them. Then admission hands over what it holds without waiting
        # for its batch timer, and they finish.
        await asyncio.sleep(0)
        await self._admission.close()
        await asyncio.gather(*list(self._submitting), return_exceptions=True)
        await self._dispatcher.close()

    def __enter__(self) -> PackRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_loop(self) -> None:
        """Start the event loop thread that hosts admission and dispatch (caller holds
        _start_lock)."""
        loop = asyncio.new_event_loop()
        pool = ThreadPoolExecutor(self.max_inflight_batches, thread_name_prefix="pack-exec")

        async def execute(plan: Plan, feats: list[Features]) -> list[Result]:
            return await loop.run_in_executor(pool, self._exec.execute, plan, feats)

        self._dispatcher = Dispatcher(
            self.config, execute, slots=self.max_inflight_batches, dispatch=self.dispatch
        )
        a = self.admission
        self._admission = CountAdmission(
            self._dispatcher.run_batch,
            a.batch_size(self.config.max_valid_num),
            a.batch_wait_timeout_s,
            a.concurrent_batches(1 << 30),
        )
        self._pool, self._loop = pool, loop
        self._thread = threading.Thread(target=loop.run_forever, name="pack-online", daemon=True)
        self._thread.start()
