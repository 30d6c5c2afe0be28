"""The dispatch step behind admission (Dispatcher, admit_windows): exact plan limits, slots,
merging what waits, failures, withdrawn windows, and no collapse under overload.
Virtual time (looptime), no Ray, no model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.policy.collate import collate
from packing.policy.config import PackingConfig
from packing.policy.plans import AttentionMaskPlan, Plan
from packing.runtime.admission import CountAdmission
from packing.runtime.dispatch import Dispatcher, Pending, admit_windows
from packing.runtime.features import Features, SpanLogits

from factories import run_virtual

run = run_virtual


def make_features(lengths, tag0: int = 0) -> list[Features]:
    """One Features per length; token ids carry the window's number (tag0 + k + 1) so
    results can be traced back to the window that produced them."""
    return [Features.of(np.full(n, tag0 + k + 1, dtype=np.int64)) for k, n in enumerate(lengths)]


def make_windows(lengths, tag0: int = 0) -> list[Pending]:
    loop = asyncio.get_running_loop()
    return [Pending(f, loop.create_future(), 0.0) for f in make_features(lengths, tag0)]


def tag(out: SpanLogits) -> int:
    return int(out.start_logits[0])


class Recorder:
    """An executor that answers each window with its own ids and records every plan.

    ``hold``: plans wait for this event; ``fail_on``: a tag whose plan raises;
    ``cost``: virtual seconds a plan takes, ``cost(plan)``."""

    def __init__(
        self, hold: asyncio.Event | None = None, fail_on: int | None = None, cost=None
    ) -> None:
        self.plans: list[tuple[Plan, list[int]]] = []  # (plan, tag of each member)
        self.hold, self.fail_on, self.cost = hold, fail_on, cost
        self.running = self.max_running = 0

    async def __call__(self, plan: Plan, feats: list[Features]) -> list[SpanLogits]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            members = [int(f.input_ids[0]) for f in feats]
            self.plans.append((plan, members))
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.cost(plan) if self.cost else 0)
            if self.fail_on is not None and self.fail_on in members:
                raise RuntimeError("model call failed")
            return [
                SpanLogits(f.input_ids.astype(np.float32), -f.input_ids.astype(np.float32))
                for f in feats
            ]
        finally:
            self.running -= 1

    def sizes(self) -> list[int]:
        return [len(members) for _, members in self.plans]


def config(**kw) -> PackingConfig:
    base = dict(seq_len=64, batch_size=4, max_valid_num=5, mode="unpack_repack")
    return PackingConfig(**{**base, **kw})


async def settle():
    """Let every ready callback and task step run (no virtual time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_plans_close_at_exactly_max_valid_num():
    async def main():
        rec = Recorder()
        d = Dispatcher(config(max_valid_num=5), rec, slots=4)
        outs = await d.run_batch(make_windows([3] * 12))
        assert rec.sizes() == [5, 5, 2]
        s = d.stats
        assert (s.full_plans, s.budget_plans, s.rest_plans, s.merged_plans) == (2, 0, 1, 0)
        assert [tag(o) for o in outs] == list(range(1, 13))

    run(main())


def test_a_plan_closes_when_the_next_window_does_not_fit_the_token_budget():
    async def main():
        rec = Recorder()
        d = Dispatcher(config(max_tokens=100), rec, slots=4)
        await d.run_batch(make_windows([40, 40, 30, 20]))
        assert rec.sizes() == [2, 2]  # 40 + 40; the 30 would make 110 > 100
        assert rec.plans[0][0].real_tokens == 80
        assert d.stats.budget_plans == 1 and d.stats.rest_plans == 1

    run(main())


def test_attention_mask_plan_closes_when_no_row_has_room():
    async def main():
        rec = Recorder()
        d = Dispatcher(config(mode="attention_mask", batch_size=2, max_valid_num=10), rec, slots=4)
        await d.run_batch(make_windows([40, 40, 40]))
        plan = rec.plans[0][0]
        assert isinstance(plan, AttentionMaskPlan) and plan.n_seqs == 2 and plan.n_rows == 2
        assert rec.sizes() == [2, 1]

    run(main())


def test_batches_admitted_while_every_slot_is_busy_leave_as_one_plan():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(), rec, slots=1)
        first = asyncio.ensure_future(d.run_batch(make_windows([5])))
        await settle()
        assert rec.sizes() == [1]  # running, held
        later = [asyncio.ensure_future(d.run_batch(make_windows([5], tag0=k))) for k in (1, 2, 3)]
        await settle()
        assert rec.sizes() == [1] and d.waiting == 3
        hold.set()
        await asyncio.gather(first, *later)
        assert rec.sizes() == [1, 3] and rec.plans[1][1] == [2, 3, 4]
        assert d.stats.merged_plans == 1 and d.stats.admitted_batches == 4

    run(main())


def test_slots_full_counts_only_dispatch_steps_that_leave_windows_waiting():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(), rec, slots=2)
        first = [asyncio.ensure_future(d.run_batch(make_windows([5], tag0=k))) for k in (0, 1)]
        await settle()
        assert d.inflight == 2 and d.waiting == 0 and d.stats.slots_full == 0  # busy, none waits
        later = asyncio.ensure_future(d.run_batch(make_windows([5], tag0=2)))
        await settle()
        assert d.waiting == 1 and d.stats.slots_full == 1
        hold.set()
        await asyncio.gather(*first, later)
        assert d.stats.slots_full == 1  # the freed slot took it: nothing else waited

    run(main())


def test_per_batch_dispatch_packs_each_admitted_batch_alone():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(), rec, slots=1, dispatch="per_batch")
        first = asyncio.ensure_future(d.run_batch(make_windows([5])))
        await settle()
        later = [asyncio.ensure_future(d.run_batch(make_windows([5], tag0=k))) for k in (1, 2, 3)]
        await settle()
        assert d.waiting == 3
        hold.set()
        await asyncio.gather(first, *later)
        assert rec.sizes() == [1, 1, 1, 1] and [m for _, m in rec.plans] == [[1], [2], [3], [4]]
        assert d.stats.merged_plans == 0

    run(main())


@pytest.mark.parametrize("dispatch", ["merge", "per_batch"])
@pytest.mark.parametrize("slots", [1, 3])
def test_plans_in_flight_never_exceed_the_slots(slots, dispatch):
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(max_valid_num=1), rec, slots=slots, dispatch=dispatch)
        task = asyncio.ensure_future(d.run_batch(make_windows([4] * 10)))
        await settle()
        assert rec.running == slots and d.inflight == slots and d.waiting == 10 - slots
        hold.set()
        await task
        assert rec.max_running == slots and d.stats.max_inflight_seen == slots

    run(main())


def test_raising_the_slots_starts_waiting_plans_at_once():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(max_valid_num=1), rec, slots=1)
        task = asyncio.ensure_future(d.run_batch(make_windows([4] * 4)))
        await settle()
        assert rec.running == 1
        d.set_slots(4)
        await settle()
        assert rec.running == 4
        hold.set()
        await task
        with pytest.raises(ValueError, match="got 0"):
            d.set_slots(0)

    run(main())


def test_a_failed_plan_fails_exactly_its_windows():
    async def main():
        rec = Recorder(fail_on=2)
        d = Dispatcher(config(max_valid_num=2), rec, slots=2)
        outs = await d.run_batch(make_windows([3] * 4))
        assert [isinstance(o, RuntimeError) for o in outs] == [True, True, False, False]
        assert "model call failed" in str(outs[0]) and [tag(o) for o in outs[2:]] == [3, 4]
        assert d.stats.failed_plans == 1 and d.stats.sequences == 2

    run(main())


def test_a_wrong_result_count_fails_the_plan():
    async def main():
        async def short(plan, feats):
            return []

        d = Dispatcher(config(max_valid_num=1), short)
        outs = await d.run_batch(make_windows([3]))
        assert isinstance(outs[0], RuntimeError) and "returned 0 results for 1" in str(outs[0])

    run(main())


@pytest.mark.parametrize("dispatch", ["merge", "per_batch"])
def test_a_withdrawn_window_is_dropped_and_the_rest_repacked(dispatch):
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(), rec, slots=1, dispatch=dispatch)
        first = asyncio.ensure_future(d.run_batch(make_windows([2], tag0=10)))
        await settle()
        windows = make_windows([3, 4, 5])
        batch = asyncio.ensure_future(d.run_batch(windows))
        await settle()
        windows[1].future.cancel()  # its caller went away before its plan started
        hold.set()
        outs = await batch
        await first
        assert rec.plans[1][1] == [1, 3] and rec.plans[1][0].real_tokens == 8
        assert [tag(outs[0]), tag(outs[2])] == [1, 3]
        assert isinstance(outs[1], asyncio.CancelledError)
        assert d.stats.dropped == 1 and d.waiting == 0

    run(main())


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 64), min_size=1, max_size=80),
    max_plans=st.integers(1, 4),
    mode=st.sampled_from(["unpack_repack", "attention_mask"]),
    budget=st.sampled_from([None, 64, 100, 256]),
)
def test_the_first_plans_depend_only_on_the_windows_they_can_hold(lengths, max_plans, mode, budget):
    """What lets the dispatch step pack only a prefix of a long queue: collate's first
    ``max_plans`` plans are the same from ``max_plans x max_valid_num + 1`` windows as from
    all of them (same members, same order)."""
    cfg = config(mode=mode, max_tokens=budget)
    need = max_plans * cfg.max_valid_num + 1
    full = collate(lengths, cfg, max_plans)
    part = collate(lengths[:need], cfg, max_plans)
    assert [list(p.seq_ids) for p in part] == [list(p.seq_ids) for p in full]


def test_a_long_queue_is_packed_a_plan_at_a_time_not_all_at_once():
    async def main():
        seen = []

        def recording(lengths, cfg, max_plans=None):
            seen.append(len(lengths))
            return collate(lengths, cfg, max_plans)

        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(), rec, slots=1, collate=recording)
        first = asyncio.ensure_future(d.run_batch(make_windows([5])))
        await settle()
        later = [
            asyncio.ensure_future(d.run_batch(make_windows([5, 6, 7, 8], tag0=10 * k)))
            for k in range(1, 26)
        ]  # 100 windows wait behind the busy slot
        await settle()
        assert d.waiting == 100 and seen == [1]
        hold.set()
        outs = [await first] + [await t for t in later]
        # every pump packed at most one plan's worth (+1) of the queue, never all of it
        assert max(seen[1:]) <= config().max_valid_num + 1 and len(seen) > 10
        assert [tag(o) for batch in outs for o in batch] == [1] + [
            10 * k + j for k in range(1, 26) for j in range(1, 5)
        ]
        # the plans are those of collating the whole queue one plan at a time
        lengths = [5, 6, 7, 8] * 25
        want, i = [], 0
        while i < len(lengths):
            (p,) = collate(lengths[i:], config(), 1)
            want.append(p.n_seqs)
            i += p.n_seqs
        assert rec.sizes() == [1] + want

    run(main())


def test_a_failing_collate_fails_the_windows_it_packed_and_dispatch_goes_on():
    async def main():
        calls = []

        def flaky(lengths, cfg, max_plans=None):
            calls.append(list(lengths))
            if len(calls) == 1:
                raise ValueError("policy bug")
            return collate(lengths, cfg, max_plans)

        rec = Recorder()
        d = Dispatcher(config(), rec, slots=2, collate=flaky)
        outs = await d.run_batch(make_windows([3, 4]))
        assert all(isinstance(o, ValueError) for o in outs) and rec.plans == []
        outs = await d.run_batch(make_windows([5]))
        assert tag(outs[0]) == 1 and rec.sizes() == [1]

    run(main())


def test_a_collate_that_loses_a_window_fails_rather_than_hangs():
    async def main():
        def lossy(lengths, cfg, max_plans=None):
            return collate(list(lengths)[:-1], cfg, max_plans) if len(lengths) > 1 else []

        for dispatch in ("merge", "per_batch"):
            d = Dispatcher(config(), Recorder(), slots=2, dispatch=dispatch, collate=lossy)
            outs = await d.run_batch(make_windows([3, 4]))
            assert isinstance(outs[1], RuntimeError) and "exactly once" in str(outs[1])

    run(main())


def test_a_cancelled_batch_function_fails_its_windows_with_a_runtime_error():
    async def main():
        d = Dispatcher(config(), Recorder(hold=asyncio.Event()), slots=1)
        windows = make_windows([3, 4])
        task = asyncio.ensure_future(d.run_batch(windows))
        await settle()
        task.cancel()
        with pytest.raises(RuntimeError, match="cancelled"):
            await task  # not a CancelledError: @serve.batch would leave its callers waiting
        assert all(isinstance(w.future.exception(), RuntimeError) for w in windows)

    run(main())


def test_new_knobs_apply_to_the_next_plan_and_a_closed_dispatcher_refuses():
    async def main():
        rec = Recorder()
        d = Dispatcher(config(), rec, slots=1)
        await d.run_batch(make_windows([3, 3]))
        d.set_config(config(max_valid_num=1))
        await d.run_batch(make_windows([3, 3]))
        assert rec.sizes() == [2, 1, 1]
        with pytest.raises(ValueError, match="worst"):
            d.set_dispatch("worst")
        await d.close()
        outs = await d.run_batch(make_windows([3]))
        assert isinstance(outs[0], RuntimeError) and "closed" in str(outs[0])

    run(main())


def test_plans_for_is_a_lower_bound_on_the_plans_needed():
    d = Dispatcher(config(max_valid_num=5, max_tokens=100), Recorder())
    assert d.plans_for(0, 0) == 0
    assert d.plans_for(12, 36) == 3  # by count
    assert d.plans_for(2, 150) == 2  # by tokens
    lengths = [40, 40, 30, 20, 64, 1, 1]
    assert d.plans_for(len(lengths), sum(lengths)) <= len(collate(lengths, d.config))


# ------------------------------------------------------------- admit_windows + admission
def test_each_window_gets_its_result_when_its_own_plan_ends():
    async def main():
        rec = Recorder(cost=lambda plan: 1.0 if 1 in [int(t) for t in plan.seq_ids] else 5.0)
        d = Dispatcher(config(max_valid_num=1), rec, slots=2)
        a = CountAdmission(d.run_batch, max_batch_size=2, batch_wait_timeout_s=0.0)
        loop = asyncio.get_running_loop()
        feats = make_features([3, 3])
        windows = [Pending(f, loop.create_future(), 0.0) for f in feats]
        tasks = [asyncio.ensure_future(a(w)) for w in windows]
        await windows[1].future  # plan of seq_id 1 takes 1 s
        assert loop.time() == pytest.approx(1.0) and not windows[0].future.done()
        await asyncio.gather(*tasks)
        await a.close()

    run(main())


def test_admit_windows_answers_in_order_and_raises_the_first_error():
    async def main():
        rec = Recorder(fail_on=13)
        d = Dispatcher(config(max_valid_num=2), rec, slots=2)
        a = CountAdmission(d.run_batch, max_batch_size=8, batch_wait_timeout_s=0.001)
        outs = await admit_windows(a, make_features([3, 4, 5]))
        assert [tag(o) for o in outs] == [1, 2, 3]
        with pytest.raises(RuntimeError, match="model call failed"):
            await admit_windows(a, make_features([3, 4, 5], tag0=10))
        assert [m for _, m in rec.plans[2:]] == [[11, 12], [13]]  # [11, 12] ran, [13] failed
        await a.close()

    run(main())


def test_an_admission_error_reaches_every_window_instead_of_hanging():
    async def main():
        async def broken(items):
            raise RuntimeError("batch function crashed")

        a = CountAdmission(broken, max_batch_size=4, batch_wait_timeout_s=0.001)
        with pytest.raises(RuntimeError, match="crashed"):
            await admit_windows(a, make_features([3, 4]))
        await a.close()

    run(main())


def test_a_caller_going_away_withdraws_its_waiting_windows():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        d = Dispatcher(config(), rec, slots=1)
        a = CountAdmission(d.run_batch, max_batch_size=8, batch_wait_timeout_s=0.001)
        first = asyncio.ensure_future(admit_windows(a, make_features([2], tag0=10)))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(admit_windows(a, make_features([3, 4])))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        hold.set()
        await first
        assert rec.sizes() == [1] and d.stats.dropped == 2 and d.waiting == 0
        await a.close()

    run(main())


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 64), min_size=1, max_size=60),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.0005, 0.003, 0.02]), min_size=60, max_size=60),
    mode=st.sampled_from(["unpack_repack", "attention_mask"]),
    dispatch=st.sampled_from(["merge", "per_batch"]),
    max_valid_num=st.integers(1, 8),
    slots=st.integers(1, 4),
    max_batch_size=st.integers(1, 10),
    cancel=st.sets(st.integers(0, 59), max_size=5),
)
def test_every_window_gets_its_own_result_within_limits(
    lengths, gaps, mode, dispatch, max_valid_num, slots, max_batch_size, cancel
):
    async def main():
        rec = Recorder(cost=lambda plan: 0.001 + plan.real_tokens * 1e-5)
        cfg = config(mode=mode, max_valid_num=max_valid_num)
        d = Dispatcher(cfg, rec, slots=slots, dispatch=dispatch)
        a = CountAdmission(d.run_batch, max_batch_size, batch_wait_timeout_s=0.002)
        feats = make_features(lengths)
        tasks = []
        for k, f in enumerate(feats):
            await asyncio.sleep(gaps[k])
            tasks.append(asyncio.ensure_future(admit_windows(a, [f])))
        for k in cancel:
            if k < len(tasks):
                tasks[k].cancel()
        outs = await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await d.close()
        for k, out in enumerate(outs):
            if isinstance(out, asyncio.CancelledError):
                assert k in cancel
                continue
            assert tag(out[0]) == k + 1 and len(out[0].start_logits) == lengths[k]
        seen = [m for _, members in rec.plans for m in members]
        assert len(seen) == len(set(seen))  # nobody computed twice
        for plan, members in rec.plans:
            assert plan.n_seqs == len(members) <= max_valid_num
            assert plan.real_tokens <= cfg.capacity_tokens
        assert rec.max_running <= slots and d.inflight == d.waiting == 0

    run(main())


def overload(dispatch: str, rate_per_s: float = 30.0, seconds: float = 20.0) -> dict:
    """Open-loop Poisson arrivals of short single windows into one runner slot whose plans
    cost 50 ms + 1/2048 s per token (a slow accelerator: ~20 windows/s one at a time);
    admission with a 5 ms timer. Virtual time: the outcome depends on nothing measured."""

    async def main():
        rng = np.random.default_rng(0)
        n = int(rate_per_s * seconds)
        arrivals = np.cumsum(rng.exponential(1 / rate_per_s, n))
        lengths = rng.integers(20, 40, n)
        rec = Recorder(cost=lambda plan: 0.05 + plan.real_tokens / 2048)
        d = Dispatcher(
            config(seq_len=256, batch_size=4, max_valid_num=16), rec, slots=1, dispatch=dispatch
        )
        a = CountAdmission(d.run_batch, max_batch_size=16, batch_wait_timeout_s=0.005)
        loop = asyncio.get_running_loop()
        done_at = [None] * n

        async def client(k, f):
            out = await admit_windows(a, [f])
            assert tag(out[0]) == k + 1
            done_at[k] = loop.time()

        tasks = []
        for k, (t, f) in enumerate(zip(arrivals, make_features(lengths))):
            await asyncio.sleep(max(0.0, t - loop.time()))
            tasks.append(asyncio.ensure_future(client(k, f)))
        await asyncio.sleep(seconds - loop.time())
        answered = sum(x is not None for x in done_at)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await d.close()
        return {
            "answered_in_time": answered,
            "offered": n,
            "mean_sequences": d.stats.mean_sequences,
            "mean_admitted": d.stats.mean_admitted,
        }

    return run(main())


def test_merging_keeps_up_under_overload_where_per_batch_plans_collapse():
    """The reason for the dispatch step: with a busy runner, admission still closes small
    batches on its 5 ms timer. Packed alone (per_batch) each is a small plan, the runner
    falls behind the 30/s offered and the backlog grows; merged, each plan takes everything
    that waited and the same runner keeps up."""
    merge, per_batch = overload("merge"), overload("per_batch")
    assert merge["mean_admitted"] < 3 and per_batch["mean_admitted"] < 3  # small batches
    assert merge["mean_sequences"] >= 2 * per_batch["mean_sequences"]
    assert merge["answered_in_time"] >= 0.95 * merge["offered"]
    assert per_batch["answered_in_time"] <= 0.8 * per_batch["offered"]
