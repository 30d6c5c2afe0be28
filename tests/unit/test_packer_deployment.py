"""The packer deployment's logic without a Ray cluster: batching, scatter, failures, knobs.

The deployment class runs on a plain asyncio loop with a stand-in runner handle that executes
plans on a real ONNX Runtime graph (random:tiny), so packed results are checked against solo
runs exactly as in the Serve app. The loop has virtual time (looptime): admission timers and the
stand-in's per-plan delays are exact and nothing really sleeps.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.config import PackingKnobs
from deployments.packer import Overloaded, Packer
from packing.model.manifest import Manifest
from packing.runners import ModelRunner
from packing.runners.workloads import synthetic_features
from packing.runtime import PlanExecutor
from packing.runtime.admission import CountAdmission
from packing.runtime.backend import load_backend
from packing.runtime.features import InvalidInput

from factories import make_lengths


@pytest.fixture()
def run():
    """A fresh event loop per test, as each Packer instance is used from one loop; its clock
    is virtual (starts at 0, jumps over idle waits), so batches form the same on any host."""
    import looptime

    loop = looptime.new_event_loop(start=0)
    yield loop.run_until_complete
    tasks = asyncio.all_tasks(loop)  # admission's forming loop, the runner watcher
    for task in tasks:
        task.cancel()
    if tasks:  # gather() of nothing would make a future on another loop
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


class FakeRunnerHandle:
    """Stands in for the PlanExecutor handle: ``execute.remote(plan, feats, demand)`` ->
    awaitable that takes ``delay_s`` of loop time; ``demands`` keeps the packer's demand sent
    with each plan."""

    def __init__(self, model_dir, fail_calls=(), delay_s: float = 0.0):
        m = Manifest.read(model_dir)
        self.executors = {
            kind: PlanExecutor(load_backend("onnxruntime", model_dir / f), m)
            for kind, f in m.graphs.items()
        }
        self.calls, self.fail_calls, self.delay_s = [], set(fail_calls), delay_s
        self.demands: list[int] = []
        self.parents: list = []  # Ray core's parent task id in force at each call
        self.execute = self

    def remote(self, plan, feats, demand_plans=None):
        import ray._raylet as raylet

        from deployments.runner import graph_for

        self.parents.append(raylet.async_task_id.get())

        async def run():
            self.calls.append(plan)
            self.demands.append(demand_plans)
            number = len(self.calls)  # 1-based call number
            await asyncio.sleep(self.delay_s)
            if number in self.fail_calls:
                raise RuntimeError("device lost")
            return self.executors[graph_for(plan)].execute(plan, feats)

        return run()


class LocalPacker(Packer.func_or_class):
    """The Packer class outside Serve: ``@serve.batch`` runs only in a replica, so admission
    is CountAdmission, which forms the same batches (test_admission.py); the Serve tests run
    the real decorator."""

    def make_admission(self, handler, max_batch_size, batch_wait_timeout_s, max_concurrent_batches):
        return CountAdmission(handler, max_batch_size, batch_wait_timeout_s, max_concurrent_batches)


def make_packer(model_dir, runner, slots: int = 2, **knobs):
    """A LocalPacker; ``slots`` stands in for runner replicas x their slots."""
    packer = LocalPacker(runner, str(model_dir))
    packer.reconfigure(PackingKnobs(**knobs).model_dump())
    packer.dispatcher.set_slots(slots)
    return packer


@pytest.fixture(scope="module")
def requests():
    return synthetic_features(make_lengths(60, seq_len=64, seed=4), vocab_size=30522, seed=4)


@pytest.fixture(scope="module")
def solo(tiny_model_dir, requests):
    runner = ModelRunner(tiny_model_dir, batch_size=1, padding="longest")
    return [runner.run([f])[0] for f in requests]


async def _clients(packer, requests, n_clients):
    results = [None] * len(requests)
    it = iter(range(len(requests)))

    async def client():
        for i in it:
            try:
                results[i] = await packer(requests[i])
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                results[i] = exc

    await asyncio.gather(*(client() for _ in range(n_clients)))
    return results


@pytest.mark.parametrize(
    "mode,algorithm",
    [
        ("attention_mask", "first_fit"),
        ("attention_mask", "best_fit"),
        ("unpack_repack", "first_fit"),
    ],
)
def test_every_caller_gets_its_own_logits(run, tiny_model_dir, requests, solo, mode, algorithm):
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=0.01)
    packer = make_packer(
        tiny_model_dir, runner, mode=mode, algorithm=algorithm, batch_wait_timeout_s=0.005
    )
    results = run(_clients(packer, requests, n_clients=24))
    for got, want in zip(results, solo):
        assert np.abs(got.start_logits - want.start_logits).max() <= 1e-4
        assert np.abs(got.end_logits - want.end_logits).max() <= 1e-4
    stats = run(packer.stats())
    assert stats["sequences"] == len(requests) and stats["failed_plans"] == 0
    cfg = packer.dispatcher.config
    for plan in runner.calls:
        assert plan.n_seqs <= cfg.max_valid_num and plan.real_tokens <= cfg.capacity_tokens
    # under load batches stay full: few, large batches
    assert stats["batches"] <= len(requests) / 4
    # every plan carries the packer's demand (the autoscaling signal): itself at least, and
    # under 24 clients more plans than the 2 dispatch slots at some point
    assert len(runner.demands) == len(runner.calls) and min(runner.demands) >= 1
    assert max(runner.demands) > 2


def test_plan_calls_are_children_of_no_caller(run, tiny_model_dir, requests):
    """Ray cancels a request's child calls with it (found through the async task id in the
    context); a plan carries many callers' windows, so it must be made as nobody's child, or
    one caller going away fails the plan for all."""
    import ray._raylet as raylet

    runner = FakeRunnerHandle(tiny_model_dir, delay_s=0.01)
    packer = make_packer(tiny_model_dir, runner, mode="unpack_repack", batch_wait_timeout_s=0.005)

    async def caller(k, features):
        raylet.async_task_id.set(f"caller-{k}")  # as in the replica task serving a call
        return await packer(features)

    async def scenario():
        return await asyncio.gather(*(caller(k, f) for k, f in enumerate(requests[:20])))

    run(scenario())
    assert runner.parents and set(runner.parents) == {None}, runner.parents


def test_failed_plan_fails_only_its_callers(run, tiny_model_dir, requests, solo):
    runner = FakeRunnerHandle(tiny_model_dir, fail_calls={1}, delay_s=0.01)
    packer = make_packer(tiny_model_dir, runner, mode="unpack_repack", batch_wait_timeout_s=0.005)
    results = run(_clients(packer, requests, n_clients=16))
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == runner.calls[0].n_seqs > 0
    assert all("device lost" in str(e) for e in errors)
    ok = [(r, s) for r, s in zip(results, solo) if not isinstance(r, Exception)]
    assert len(ok) == len(requests) - len(errors)
    assert all(np.abs(r.start_logits - s.start_logits).max() <= 1e-4 for r, s in ok)
    assert run(packer.stats())["failed_plans"] == 1


def test_reconfigure_changes_knobs_and_budget(tiny_model_dir):
    packer = make_packer(tiny_model_dir, FakeRunnerHandle(tiny_model_dir))
    packer.reconfigure(
        {
            "mode": "attention_mask",
            "algorithm": "next_fit",
            "max_valid_num": 3,
            "batch_wait_timeout_s": 0.2,
            "max_tokens": 100,
        }
    )
    cfg = packer.dispatcher.config
    assert (cfg.mode, cfg.algorithm) == ("attention_mask", "next_fit")
    assert cfg.max_valid_num == 3 and cfg.capacity_tokens == 100
    with pytest.raises(ValueError, match="algorithm"):
        packer.reconfigure({"algorithm": "worst_fit"})
    with pytest.raises(ValueError, match="extra"):
        packer.reconfigure({"batch": 3})
    with pytest.raises(ValueError, match="max_tokens"):  # more than the model's batch holds
        packer.reconfigure({"max_tokens": 10_000})
    assert packer.dispatcher.config is cfg  # a rejected change leaves the knobs as they were


def test_bad_input_and_overload(run, tiny_model_dir, requests):
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=0.2)
    packer = make_packer(tiny_model_dir, runner, max_pending=3, batch_wait_timeout_s=0.001)

    async def scenario():
        with pytest.raises(InvalidInput, match="longer than"):
            await packer(synthetic_features([65], 30522)[0])
        held = [asyncio.ensure_future(packer(r)) for r in requests[:3]]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="max_pending"):
            await packer(requests[3])
        await asyncio.gather(*held)
        return await packer(requests[3])  # room again

    assert run(scenario()).start_logits.shape == (len(requests[3]),)


def test_caller_that_went_away_is_not_computed(run, tiny_model_dir, requests, solo):
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=1.0)
    packer = make_packer(
        tiny_model_dir, runner, slots=1, mode="unpack_repack", batch_wait_timeout_s=0.05
    )

    async def scenario():
        first = asyncio.ensure_future(packer(requests[0]))
        while not runner.calls:  # until the first batch runs (it holds the only slot for 1 s)
            await asyncio.sleep(0.005)
        waiting = [asyncio.ensure_future(packer(r)) for r in requests[1:4]]
        while packer.dispatcher.waiting < 3:  # admitted, waiting for the busy slot
            await asyncio.sleep(0.005)
        waiting[1].cancel()  # goes away before its plan starts
        got = await asyncio.gather(first, waiting[0], waiting[2])
        return got

    got = run(scenario())
    for g, s in zip(got, [solo[0], solo[1], solo[3]]):
        assert np.abs(g.start_logits - s.start_logits).max() <= 1e-4
    computed = sum(p.n_seqs for p in runner.calls)
    assert computed == 3  # the one that went away was dropped before its batch started
    assert packer.dispatcher.stats.dropped == 1 and packer.pending == 0


def test_many_answers_every_window_of_a_request_in_order(run, tiny_model_dir, requests, solo):
    """``many`` (one handle call per request) gives the same logits as one call per window,
    and fails the whole request when one of its windows is invalid."""
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=0.01)
    packer = make_packer(tiny_model_dir, runner, mode="attention_mask", batch_wait_timeout_s=0.005)

    async def scenario():
        groups = [requests[0:5], requests[5:6], requests[6:20]]
        got = await asyncio.gather(*(packer.many(g) for g in groups))
        with pytest.raises(InvalidInput, match="longer than"):
            await packer.many([requests[0], synthetic_features([65], 30522)[0]])
        return [x for g in got for x in g]

    got = run(scenario())
    assert len(got) == 20
    for g, s in zip(got, solo[:20]):
        assert np.abs(g.start_logits - s.start_logits).max() <= 1e-4
    assert packer.pending == 0 and packer.dispatcher.inflight == 0


def test_reconfigure_changes_admission_live(run, tiny_model_dir, requests):
    """``max_batch_size`` / ``batch_wait_timeout_s`` go through the admission's setters (from
    the next batch); a new ``max_concurrent_batches`` starts a new admission queue; stats
    show what is in force."""
    runner = FakeRunnerHandle(tiny_model_dir)
    packer = make_packer(
        tiny_model_dir, runner, slots=8, batch_wait_timeout_s=0.05, max_batch_size=2
    )

    async def scenario():
        await asyncio.gather(*(packer(r) for r in requests[:6]))
        before = (await packer.stats())["admitted_batches"]
        packer.reconfigure({"batch_wait_timeout_s": 0.05, "max_batch_size": 3})
        await asyncio.gather(*(packer(r) for r in requests[6:12]))
        mid = await packer.stats()
        packer.reconfigure(
            {"batch_wait_timeout_s": 0.05, "max_batch_size": 3, "max_concurrent_batches": 1}
        )
        await asyncio.gather(*(packer(r) for r in requests[12:18]))
        return before, mid, await packer.stats()

    before, mid, after = run(scenario())
    assert before == 3  # 6 windows, 2 per admitted batch
    assert mid["admitted_batches"] - before == 2  # then 3 per batch
    assert mid["admission"] == {
        "max_batch_size": 3,
        "batch_wait_timeout_s": 0.05,
        "max_concurrent_batches": 4096,
    }
    assert after["admission"]["max_concurrent_batches"] == 1
    assert after["admitted_batches"] - mid["admitted_batches"] == 2
    assert after["sequences"] == 18 and after["pending"] == 0
    with pytest.raises(ValueError, match="batch_wait_timeout_s"):
        packer.reconfigure({"batch_wait_timeout_s": -1})
    assert packer.admission["max_batch_size"] == 3  # a refused change keeps what was in force


class CountedRunners(LocalPacker):
    """A LocalPacker that follows scripted runner replicas: ``script(t)`` is the count at
    loop time ``t``; ``reads`` keeps the loop time of every read of it."""

    def __init__(self, runner, model_dir, script):
        super().__init__(runner, model_dir)
        self.script, self.reads = script, []
        self.follow_runners = True

    async def read_runner_replicas(self):
        t = asyncio.get_running_loop().time()
        self.reads.append(t)
        return self.script(t)


class SlotsOf(FakeRunnerHandle):
    """The stand-in runner handle with ``slots.remote()`` (each replica's plans at once)."""

    deployment_name = "PlanExecutor"

    def __init__(self, model_dir, slots_per_replica: int, delay_s: float = 0.0):
        super().__init__(model_dir, delay_s=delay_s)
        per_replica = slots_per_replica

        class _Slots:
            @staticmethod
            async def remote():
                return per_replica

        self.slots = _Slots


def test_runner_replicas_are_read_rarely_while_the_slots_are_not_the_limit(run, tiny_model_dir):
    """Reading Serve's status is costly: with the slots never full it happens every
    runner_idle_poll_s, and a change of the replica count is still followed."""
    packer = CountedRunners(
        SlotsOf(tiny_model_dir, 2), str(tiny_model_dir), lambda t: 2 if t < 30 else 3
    )

    async def scenario():
        await packer.stats()  # starts following the runners
        await asyncio.sleep(29.5)
        at_29 = await packer.stats()
        await asyncio.sleep(30)
        return at_29, await packer.stats()

    at_29, at_60 = run(scenario())
    assert (at_29["runner_replicas"], at_29["dispatch_slots"]) == (2, 4)
    assert (at_60["runner_replicas"], at_60["dispatch_slots"]) == (3, 6)
    before_change = [t for t in packer.reads if t < 30]
    # t = 0 (1 -> 2: changed), 1 (settled), then every 5 s: 6, 11, 16, 21, 26
    assert len(before_change) == 7, packer.reads
    first_after = min(t for t in packer.reads if t >= 30)
    assert first_after <= 30 + packer.runner_idle_poll_s


def test_runner_replicas_are_read_every_poll_while_the_slots_are_full(
    run, tiny_model_dir, requests
):
    """Windows waiting with every slot busy: more runner replicas would take work at once,
    so the packer reads the count every runner_poll_s and uses new replicas within it."""
    runner = SlotsOf(tiny_model_dir, 1, delay_s=1.0)
    packer = CountedRunners(runner, str(tiny_model_dir), lambda t: 1 if t < 5 else 4)
    packer.reconfigure(PackingKnobs(max_valid_num=1, batch_wait_timeout_s=0.0).model_dump())

    async def scenario():
        await packer.stats()
        results = await asyncio.gather(*(packer(r) for r in requests[:30]))
        return results, await packer.stats()

    results, stats = run(scenario())
    assert len(results) == 30 and stats["dispatch_slots"] == 4
    early = [t for t in packer.reads if t < 5]
    assert len(early) >= 4, packer.reads  # t = 0, 1, 2, 3, 4: the slots were full each second
    assert any(5 <= t <= 6 for t in packer.reads), packer.reads
    assert stats["slots_full"] > 0


def test_withdrawn_windows_of_a_shared_call_are_not_computed(run, tiny_model_dir, requests, solo):
    """``withdraw(call_id, start, stop)``: windows of one body in a shared ``many`` call that
    have not started are dropped, never computed; the rest of the call is answered, the
    withdrawn windows' results are None."""
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=1.0)
    packer = make_packer(
        tiny_model_dir, runner, slots=1, mode="unpack_repack", batch_wait_timeout_s=0.05
    )

    async def scenario():
        first = asyncio.ensure_future(packer(requests[0]))
        while not runner.calls:  # the first plan holds the only slot for 1 s
            await asyncio.sleep(0.005)
        shared = asyncio.ensure_future(packer.many(requests[1:7], call_id="c1"))
        while packer.dispatcher.waiting < 6:
            await asyncio.sleep(0.005)
        assert await packer.withdraw("c1", 2, 5) == 3
        assert await packer.withdraw("unknown", 0, 9) == 0
        return await first, await shared

    first, shared = run(scenario())
    assert [x is None for x in shared] == [False, False, True, True, True, False]
    for g, s in zip([first] + shared[:2] + shared[5:], solo[0:3] + solo[6:7]):
        assert np.abs(g.start_logits - s.start_logits).max() <= 1e-4
    assert sum(p.n_seqs for p in runner.calls) == 4  # 1 + 6 - 3 withdrawn
    stats = run(packer.stats())
    assert stats["dropped"] == 3 and stats["discarded"] == 0 and packer.pending == 0
    assert stats["batch_invariant"] is True


def test_a_withdrawal_that_comes_before_its_call_is_applied_when_it_comes(
    run, tiny_model_dir, requests, solo
):
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=0.1)
    packer = make_packer(tiny_model_dir, runner, mode="unpack_repack", batch_wait_timeout_s=0.005)

    async def scenario():
        assert await packer.withdraw("late", 1, 3) == 0  # the call has not arrived yet
        return await packer.many(requests[:4], call_id="late")

    got = run(scenario())
    assert [x is None for x in got] == [False, True, True, False]
    assert np.abs(got[3].start_logits - solo[3].start_logits).max() <= 1e-4
    assert sum(p.n_seqs for p in runner.calls) == 2 and packer.dispatcher.stats.dropped == 2


def test_results_of_a_running_plan_whose_caller_left_are_discarded(run, tiny_model_dir, requests):
    runner = FakeRunnerHandle(tiny_model_dir, delay_s=1.0)
    packer = make_packer(
        tiny_model_dir, runner, slots=1, mode="unpack_repack", batch_wait_timeout_s=0.001
    )

    async def scenario():
        task = asyncio.ensure_future(packer.many(requests[:3]))
        while not runner.calls:
            await asyncio.sleep(0.005)
        task.cancel()  # the plan is on the device: it finishes, its results are thrown away
        await asyncio.sleep(2.0)
        return await packer.stats()

    stats = run(scenario())
    assert stats["sequences"] == 3 and stats["discarded"] == 3 and stats["dropped"] == 0


def test_a_call_over_max_pending_is_refused_for_good(run, tiny_model_dir, requests):
    from packing.runtime.admission import NeverAdmitted

    packer = make_packer(tiny_model_dir, FakeRunnerHandle(tiny_model_dir), max_pending=4)
    with pytest.raises(NeverAdmitted, match="5 windows in one call.*max_pending=4"):
        run(packer.many(requests[:5]))
    assert packer.pending == 0 and packer.calls == 0


class _SlotsHandle:
    """A runner handle whose ``slots.remote()`` answers after ``delay_s`` (loop time)."""

    def __init__(self, delay_s: float):
        self.delay_s, self.slots, self.asked = delay_s, self, 0

    def remote(self):
        async def answer():
            self.asked += 1
            await asyncio.sleep(self.delay_s)
            return 2

        return answer()


@pytest.mark.parametrize("delay_s,ready", [(0.1, True), (30.0, False)])
def test_ready_only_when_a_runner_replica_answers(run, tiny_model_dir, delay_s, ready):
    handle = _SlotsHandle(delay_s)
    packer = make_packer(tiny_model_dir, handle)
    why = run(packer.ready(timeout_s=5.0))
    assert (why is None) is ready and handle.asked == 1
    if not ready:
        assert why == "no runner replica answered within 5 s"
