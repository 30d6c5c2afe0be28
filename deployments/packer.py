"""The packer deployment: ``@serve.batch`` admission, the packing-aware collate, runner dispatch.

Each window (one ``__call__``, or the k windows of an HTTP body in one ``many`` call, admitted
all or none against ``max_pending``) is one item of Ray Serve's ``@serve.batch`` (count path:
``max_batch_size``, ``batch_wait_timeout_s``, ``max_concurrent_batches``, from this
deployment's ``user_config``; changed live in :meth:`Packer.reconfigure`). The batch function
is the dispatch step, :meth:`~packing.runtime.dispatch.Dispatcher.run_batch`: whenever a
runner slot is free it packs everything admitted and waiting with the one packing policy,
:func:`packing.policy.collate.collate`, and sends each plan to a PlanExecutor replica with one
handle call; results go back to each window by index.

Why a dispatch step behind ``@serve.batch``: Serve closes batches on its timer whether or not
a runner can take them. Packed as they close, under load each would be a small plan; here
they wait together for the next free slot and leave as one full plan (``docs/serving.md``:
the overload run, with and without it).

Dispatch slots follow the runners: running PlanExecutor replicas x their
``max_ongoing_requests``, re-read from Serve every ``runner_poll_s`` seconds while the slots
are the limit (every ``runner_idle_poll_s`` otherwise), so autoscaling the runners scales the
packer's output with them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from ray import serve
from ray.serve.handle import DeploymentHandle

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.config import PackingConfig
from packing.policy.plans import Plan
from packing.runtime.admission import NeverAdmitted, Overloaded
from packing.runtime.dispatch import Dispatcher, Pending, admit_windows
from packing.runtime.features import Features, SpanLogits, validate_features

from .config import PackingKnobs
from .detach import detached
from .metrics import PackerMetrics
from .retry import retry_replica_lost

log = logging.getLogger("ray.serve")

WITHDRAWN_EARLY = 4096
"""``Packer.withdraw``: withdrawals of calls not seen yet that are kept (the oldest go first)."""

READY_FRESH_S = 10.0
"""``Packer.ready``: a plan that ran this recently shows the runners can run one."""

__all__ = ["Packer", "Overloaded", "running_replicas"]


def running_replicas(app: str, deployment: str) -> int | None:
    """Running replicas of ``deployment`` in ``app`` from Serve's status; None if unknown."""
    try:
        status = serve.status().applications[app].deployments[deployment]
    except Exception:  # noqa: BLE001 - controller busy or app not listed yet: keep the last value
        return None
    return sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))


# max_ongoing_requests: handle calls at once (each carries >= 1 window). The packer's own
# bound is max_pending windows; this is set high enough that Serve never refuses first and
# that @serve.batch's max_batch_size x max_concurrent_batches check holds at the defaults.
@serve.deployment(name="Packer", max_ongoing_requests=1 << 18, ray_actor_options={"num_cpus": 0})
class Packer:
    """``__call__(features) -> SpanLogits`` for one window; ``many([features, ...])`` for all
    windows of a request body, in order, in one call."""

    def __init__(
        self,
        runner: DeploymentHandle,
        model_dir: ModelLike,
        runner_poll_s: float = 1.0,
        calibrated_max_tokens: int | None = None,
        runner_idle_poll_s: float = 5.0,
    ) -> None:
        """``calibrated_max_tokens``: the budget the ``max_tokens: auto`` knob stands for,
        calibrated once by :func:`deployments.app.build_graph` for the runners' device (so
        replicas never measure); None means the full batch, ``batch_size x seq_len``.

        Runner replicas are re-read from Serve every ``runner_poll_s`` seconds while the
        dispatch slots have been the limit (windows waited with every slot busy) since the
        last read, else every ``runner_idle_poll_s`` seconds (each read of ``serve.status()``
        costs this replica, the controller and the GCS tens of milliseconds of CPU)."""
        self.runner = runner
        self.manifest = PreparedModel.open(model_dir).manifest  # the one source of every shape
        self.calibrated_max_tokens = calibrated_max_tokens
        self.metrics = PackerMetrics()
        self.runner_poll_s = runner_poll_s
        self.runner_idle_poll_s = max(runner_idle_poll_s, runner_poll_s)
        self.runner_replicas = 1  # last count read from Serve
        self.runner_slots: int | None = None  # max_ongoing_requests of a runner replica, once read
        self.pending = 0  # windows submitted and not yet answered
        self.pending_tokens = 0  # their real tokens
        self.calls = 0  # handle calls admitted (each with >= 1 window)
        self._watcher: asyncio.Task | None = None
        try:  # outside a replica there are no runner replicas to follow
            self._app: str | None = serve.get_replica_context().app_name
        except Exception:  # noqa: BLE001
            self._app = None
        self.follow_runners = self._app is not None  # keep the slots at the runners' count
        knobs = PackingKnobs()
        self.dispatcher = Dispatcher(
            self._config(knobs),
            self._execute,
            slots=1,
            on_plan=self._observe,
            on_drop=self._observe_drop,
        )
        self._calls: dict[str, list[Pending]] = {}  # windows of the calls that gave a call_id
        # withdrawals that came before their call (handle calls are not ordered): applied
        # when it registers; the oldest forgotten past WITHDRAWN_EARLY entries
        self._early: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()
        self._last_ok_s = -math.inf  # time.monotonic() of the last plan that ran
        self.knobs: PackingKnobs | None = None
        self.admission: dict = {}
        self._admit: Callable | None = None
        self.reconfigure(knobs.model_dump())

    def _config(self, knobs: PackingKnobs) -> PackingConfig:
        """The packing policy's config for ``knobs``: ``max_tokens: auto`` is the calibrated
        budget, an int is pinned; PackingConfig's ValueError names a value that does not fit."""
        return knobs.packing_config(self.manifest, self.calibrated_max_tokens)

    def reconfigure(self, user_config: dict | None) -> None:
        """Apply new knobs (Serve calls this on ``user_config`` changes, without a restart).

        Packing knobs apply to the next plan; ``max_batch_size`` and ``batch_wait_timeout_s``
        to the next admitted batch (``@serve.batch``'s setters). Serve has no setter for
        ``max_concurrent_batches``: a new value starts a new admission queue, and batches
        already admitted finish on the old one. A bad value raises ValueError and changes
        nothing."""
        knobs = PackingKnobs(**(user_config or {}))
        config = self._config(knobs)  # ValueError names a knob that does not fit the model
        size = knobs.admission().batch_size(config.max_valid_num)
        wait = knobs.batch_wait_timeout_s
        concurrent = knobs.admission().concurrent_batches(knobs.max_pending)
        if self._admit is None or concurrent != self.admission["max_concurrent_batches"]:
            self._admit = self.make_admission(self._dispatch, size, wait, concurrent)
        else:
            self._admit.set_max_batch_size(size)
            self._admit.set_batch_wait_timeout_s(wait)
        self.admission = {
            "max_batch_size": size,
            "batch_wait_timeout_s": wait,
            "max_concurrent_batches": concurrent,
        }  # in force, as resolved
        self.dispatcher.set_config(config)
        self.dispatcher.set_dispatch(knobs.dispatch)
        self.knobs = knobs

    def make_admission(
        self,
        handler: Callable,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_concurrent_batches: int,
    ) -> Callable:
        """The admission wrapper around ``handler`` (the batch function): ``await admit(window)``
        returns ``handler(batch)[k]`` for the batch the window was admitted in; it has Serve's
        ``set_max_batch_size`` / ``set_batch_wait_timeout_s`` setters.

        Here: Ray Serve's ``@serve.batch`` (count path). It works only inside a replica; a
        Packer run on a plain event loop (unit tests) overrides this with
        :class:`~packing.runtime.admission.CountAdmission`, which forms the same batches."""
        return serve.batch(
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=batch_wait_timeout_s,
            max_concurrent_batches=max_concurrent_batches,
        )(handler)

    async def _dispatch(self, windows: list[Pending]) -> list:
        """The ``@serve.batch`` batch function: the admitted windows go to the dispatch step,
        which packs them (with whatever else waits) by the packing-aware collate as soon as a
        runner slot is free. Returns once every window is answered; never raises a
        ``CancelledError`` (see :meth:`Dispatcher.run_batch`)."""
        return await self.dispatcher.run_batch(windows)

    # --------------------------------------------------------------- requests
    def _validated(self, features: Features) -> Features:
        d = self.manifest.dims
        return validate_features(features, self.manifest.seq_len, d.vocab_size, d.type_vocab_size)

    async def __call__(self, features: Features) -> SpanLogits:
        """Logits of one window; raises InvalidInput, Overloaded or its plan's error."""
        return (await self.many([features]))[0]

    async def many(
        self, features: list[Features], call_id: str | None = None
    ) -> list[SpanLogits | None]:
        """Logits of every window of one or more request bodies, in order (one handle call
        instead of one per window); each window is packed as its own sequence.

        Raises InvalidInput before anything is admitted, NeverAdmitted for more windows than
        ``max_pending``, Overloaded when the windows would take the packer past
        ``max_pending`` now (none is admitted then), or, once every window has finished, the
        first failing window's error. A caller that goes away (the handle call is cancelled)
        withdraws its windows that have not started. With ``call_id``, :meth:`withdraw` can
        withdraw a range of them while the call goes on (what the Ingress does when the client
        of one body in the call leaves); a withdrawn window's result is ``None``."""
        checked = [self._validated(f) for f in features]
        k, tokens = len(checked), sum(len(f) for f in checked)
        if k > self.knobs.max_pending:
            raise NeverAdmitted(
                f"{k} windows in one call; the packer holds at most "
                f"max_pending={self.knobs.max_pending}"
            )
        if self.pending + k > self.knobs.max_pending:
            raise Overloaded(
                f"packer holds {self.pending} windows; {k} more would pass "
                f"max_pending={self.knobs.max_pending}"
            )
        self._watch()
        self.calls += 1
        self.pending += k
        self.pending_tokens += tokens
        register = None if call_id is None else (lambda windows: self._register(call_id, windows))
        try:
            return await admit_windows(self._admit, checked, register)
        finally:
            self.pending -= k
            self.pending_tokens -= tokens
            if call_id is not None:
                self._calls.pop(call_id, None)

    async def withdraw(self, call_id: str, start: int, stop: int) -> int:
        """Withdraw windows ``start:stop`` of the :meth:`many` call ``call_id``: those whose
        plan has not started are never computed, the others' results are discarded. A
        withdrawal that arrives before its call is kept and applied when the call comes.
        Returns how many were still waiting for a result (0 for a call not seen yet or
        finished)."""
        windows = self._calls.get(call_id)
        if windows is None:
            self._early.setdefault(call_id, []).append((int(start), int(stop)))
            self._early.move_to_end(call_id)
            while len(self._early) > WITHDRAWN_EARLY:
                self._early.popitem(last=False)
            return 0
        return self._cancel(windows, start, stop)

    @staticmethod
    def _cancel(windows: list[Pending], start: int, stop: int) -> int:
        return sum(1 for w in windows[max(0, int(start)) : max(0, int(stop))] if w.future.cancel())

    def _register(self, call_id: str, windows: list[Pending]) -> None:
        """Note the windows of call ``call_id``, applying any withdrawal that came first."""
        self._calls[call_id] = windows
        for start, stop in self._early.pop(call_id, ()):
            self._cancel(windows, start, stop)

    def demand_plans(self) -> int:
        """The autoscaling signal: plans running plus the plans the windows admitted and not
        yet running need at least (:meth:`Dispatcher.plans_for`)."""
        d = self.dispatcher
        return d.inflight + d.plans_for(
            self.pending - d.running_windows, self.pending_tokens - d.running_tokens
        )

    async def _execute(self, plan: Plan, features: list[Features]) -> list[SpanLogits]:
        demand = self.demand_plans()
        # detached: a plan carries the windows of many calls; it is no child of any of them
        return await retry_replica_lost(
            lambda: detached(self.runner.execute.remote, plan, features, demand)
        )

    def _observe_drop(self, dropped: int, discarded: int) -> None:
        if dropped:
            self.metrics.dropped.inc(dropped)
        if discarded:
            self.metrics.discarded.inc(discarded)

    def _observe(
        self, plan: Plan, seconds: float, error: BaseException | None, waits: list[float]
    ) -> None:
        for wait in waits:
            self.metrics.wait.observe(wait)
        if error is not None:
            return
        self._last_ok_s = time.monotonic()
        tags = {"mode": self.knobs.mode}
        self.metrics.efficiency.observe(plan.real_tokens / plan.token_slots, tags=tags)
        self.metrics.sequences.observe(plan.n_seqs, tags=tags)
        self.metrics.tokens.observe(plan.real_tokens, tags=tags)
        self.metrics.batch_seconds.observe(seconds, tags=tags)

    # ------------------------------------------------------------ dispatch slots
    def _watch(self) -> None:
        if not self.follow_runners:
            return
        if self._watcher is None or self._watcher.done():
            self._watcher = detached(asyncio.get_running_loop().create_task, self._follow_runners())

    async def _follow_runners(self) -> None:
        """Keep the dispatch slots at running runner replicas x their slots. Serve's status is
        read every ``runner_poll_s`` while it matters (the slots were full since the last
        read, so more replicas would take work at once, or the last read found the replicas
        changing or none running), else every ``runner_idle_poll_s``."""
        clock = asyncio.get_running_loop().time
        last_read, full_at_read, settled = -math.inf, 0, False
        while True:
            full = self.dispatcher.stats.slots_full
            quiet = settled and full == full_at_read
            if clock() - last_read >= (self.runner_idle_poll_s if quiet else self.runner_poll_s):
                last_read, full_at_read = clock(), full
                settled = await self._read_runners()
            await asyncio.sleep(self.runner_poll_s)

    async def read_runner_replicas(self) -> int | None:
        """Running PlanExecutor replicas of this app now, from ``serve.status()`` (read in a
        thread: it builds the whole Serve status); None when unknown."""
        return await asyncio.to_thread(running_replicas, self._app, self.runner.deployment_name)

    async def _read_runners(self) -> bool:
        """Read the running runner replicas once and set the dispatch slots; True when the
        count was read and unchanged."""
        try:
            n = await self.read_runner_replicas()
            changed = bool(n) and n != self.runner_replicas
            # Slots are per deployment config: read again only when the replicas change.
            if self.runner_slots is None or changed:
                self.runner_slots = max(1, int(await self.runner.slots.remote()))
            if n:  # 0 while replicas restart: keep the last count, calls queue in Serve
                self.runner_replicas = n
            self.dispatcher.set_slots(self.runner_replicas * self.runner_slots)
            return bool(n) and not changed
        except Exception as exc:  # noqa: BLE001 - keep serving with the last known slots
            log.warning("packer: could not read runner replicas: %s", exc)
            return False

    async def ready(self, fresh_s: float = READY_FRESH_S, timeout_s: float = 5.0) -> str | None:
        """None when a plan can run now, else why not (``GET /healthz``).

        Ready when a plan ran in the last ``fresh_s`` seconds (the runners are working), or
        a runner replica answers a call within ``timeout_s`` (Serve routes it to a running
        replica; with none running it waits for one, and the wait times out)."""
        if time.monotonic() - self._last_ok_s <= fresh_s:
            return None
        try:
            await asyncio.wait_for(self.runner.slots.remote(), timeout=timeout_s)
        except asyncio.TimeoutError:
            return f"no runner replica answered within {timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"runner replica failed: {type(exc).__name__}"
        return None

    async def stats(self) -> dict:
        """Cumulative counters, dispatch slots and the current knobs (``GET /v1/stats``)."""
        self._watch()
        d = self.dispatcher
        s = d.stats.as_dict()
        s.update(
            batches=s["plans"],
            calls=self.calls,
            pending=self.pending,
            waiting=d.waiting,
            inflight=d.inflight,
            demand_plans=self.demand_plans(),
            dispatch_slots=d.slots,
            runner_replicas=self.runner_replicas,
            runner_slots=self.runner_slots,
            knobs=self.knobs.model_dump(),
            token_budget=d.config.capacity_tokens,
            admission=dict(self.admission),
            calibrated_max_tokens=self.calibrated_max_tokens,
            # unpack_repack gives each window a bit-identical result alone or in any
            # plan; attention_mask shares rows, so float32 sums (and int8 steps) move
            batch_invariant=self.knobs.mode == "unpack_repack",
            time_s=time.time(),
        )
        return s
