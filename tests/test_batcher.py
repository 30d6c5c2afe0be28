"""The one online batcher (PackBatcher): batch limits with exact counts, dispatch slots,
failures and withdrawn requests. Plain asyncio, no Ray, no model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing.policy.config import PackingConfig
from packing.policy.plans import AttentionMaskPlan, Plan
from packing.runtime.batcher import Overloaded, PackBatcher
from packing.runtime.features import Features, SpanLogits


def make_features(lengths, tag0: int = 0) -> list[Features]:
    """One Features per length; token ids carry the request number (tag0 + k) so results
    can be traced back to the request that produced them."""
    return [Features.of(np.full(n, tag0 + k + 1, dtype=np.int64)) for k, n in enumerate(lengths)]


class Recorder:
    """An executor that answers each sequence with its own ids and records every plan."""

    def __init__(self, hold: asyncio.Event | None = None, fail_on: int | None = None) -> None:
        self.plans: list[tuple[Plan, list[int]]] = []  # (plan, first token id of each member)
        self.hold = hold
        self.fail_on = fail_on  # a token id whose plan raises
        self.running = 0
        self.max_running = 0

    async def __call__(self, plan: Plan, feats: list[Features]) -> list[SpanLogits]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            self.plans.append((plan, [int(f.input_ids[0]) for f in feats]))
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(0)
            if self.fail_on is not None and any(int(f.input_ids[0]) == self.fail_on for f in feats):
                raise RuntimeError("model call failed")
            return [SpanLogits(f.input_ids.astype(np.float32), -f.input_ids.astype(np.float32))
                    for f in feats]
        finally:
            self.running -= 1

    def sizes(self) -> list[int]:
        return [len(members) for _, members in self.plans]


def config(**kw) -> PackingConfig:
    base = dict(seq_len=64, batch_size=4, max_valid_num=5, timeout_s=10.0, mode="unpack_repack")
    return PackingConfig(**{**base, **kw})


def run(coro):
    return asyncio.run(coro)


def test_batch_closes_at_exactly_max_valid_num():
    async def main():
        rec = Recorder()
        b = PackBatcher(config(max_valid_num=5), rec, max_inflight_batches=4)
        feats = make_features([3] * 12)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in feats]
        await asyncio.sleep(0.05)  # far below the 10 s timeout
        assert rec.sizes() == [5, 5]
        await b.close()
        outs = await asyncio.gather(*tasks)
        assert rec.sizes() == [5, 5, 2]
        assert b.stats.closed_full == 2 and b.stats.closed_flush == 1
        assert [int(o.start_logits[0]) for o in outs] == list(range(1, 13))
    run(main())


def test_batch_closes_when_next_does_not_fit_the_token_budget():
    async def main():
        rec = Recorder()
        b = PackBatcher(config(max_tokens=100), rec, max_inflight_batches=4)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([40, 40, 30, 20])]
        await asyncio.sleep(0.05)
        assert rec.sizes() == [2]  # 40 + 40; the 30 would make 110 > 100
        assert rec.plans[0][0].real_tokens == 80
        await b.close()
        await asyncio.gather(*tasks)
        assert rec.sizes() == [2, 2] and b.stats.closed_no_room == 1
    run(main())


def test_attention_mask_batch_closes_when_no_row_has_room():
    async def main():
        rec = Recorder()
        cfg = config(mode="attention_mask", batch_size=2, max_valid_num=10)
        b = PackBatcher(cfg, rec, max_inflight_batches=4)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([40, 40, 40])]
        await asyncio.sleep(0.05)
        plan = rec.plans[0][0]
        assert isinstance(plan, AttentionMaskPlan) and plan.n_seqs == 2 and plan.n_rows == 2
        await b.close()
        await asyncio.gather(*tasks)
        assert rec.sizes() == [2, 1]
    run(main())


def test_timeout_sends_a_partial_batch():
    async def main():
        rec = Recorder()
        b = PackBatcher(config(timeout_s=0.02), rec, max_inflight_batches=1)
        outs = await asyncio.gather(*(b.submit(f) for f in make_features([5, 6, 7])))
        assert rec.sizes() == [3] and b.stats.closed_timeout == 1
        assert [len(o.start_logits) for o in outs] == [5, 6, 7]
        await b.close()
    run(main())


def test_overdue_batch_keeps_filling_while_every_slot_is_busy():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        b = PackBatcher(config(timeout_s=0.01), rec, max_inflight_batches=1)
        first = asyncio.ensure_future(b.submit(make_features([5])[0]))
        await asyncio.sleep(0.05)
        assert rec.sizes() == [1]  # running, held
        later = [asyncio.ensure_future(b.submit(f)) for f in make_features([5, 5], tag0=1)]
        await asyncio.sleep(0.05)  # overdue, but the only slot is busy
        assert rec.sizes() == [1] and b.queued_plans == 0
        later.append(asyncio.ensure_future(b.submit(make_features([5], tag0=3)[0])))
        await asyncio.sleep(0)
        hold.set()
        await asyncio.gather(first, *later)
        assert rec.sizes() == [1, 3]
        assert rec.plans[1][1] == [2, 3, 4]
        await b.close()
    run(main())


@pytest.mark.parametrize("slots", [1, 3])
def test_plans_in_flight_never_exceed_the_slots(slots):
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        b = PackBatcher(config(max_valid_num=1), rec, max_inflight_batches=slots)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([4] * 10)]
        await asyncio.sleep(0.05)
        assert rec.running == slots and b.queued_plans == 10 - slots
        hold.set()
        await asyncio.gather(*tasks)
        assert rec.max_running == slots and b.stats.max_inflight_seen == slots
        await b.close()
    run(main())


def test_raising_the_slots_dispatches_waiting_plans_at_once():
    async def main():
        hold = asyncio.Event()
        rec = Recorder(hold=hold)
        b = PackBatcher(config(max_valid_num=1), rec, max_inflight_batches=1)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([4] * 4)]
        await asyncio.sleep(0.02)
        assert rec.running == 1
        b.set_limits(max_inflight_batches=4)
        await asyncio.sleep(0.02)
        assert rec.running == 4
        hold.set()
        await asyncio.gather(*tasks)
        await b.close()
    run(main())


def test_failed_plan_fails_exactly_its_requests():
    async def main():
        rec = Recorder(fail_on=2)
        b = PackBatcher(config(max_valid_num=2), rec, max_inflight_batches=2)
        outs = await asyncio.gather(*(b.submit(f) for f in make_features([3] * 4)),
                                    return_exceptions=True)
        assert [isinstance(o, RuntimeError) for o in outs] == [True, True, False, False]
        assert "model call failed" in str(outs[0])
        assert b.stats.failed_plans == 1 and b.stats.sequences == 2
        await b.close()
    run(main())


def test_wrong_result_count_fails_the_plan():
    async def main():
        async def short(plan, feats):
            return []
        b = PackBatcher(config(max_valid_num=1), short)
        with pytest.raises(RuntimeError, match="returned 0 results for 1"):
            await b.submit(make_features([3])[0])
        await b.close()
    run(main())


def test_overloaded_beyond_max_pending_and_closed_batcher_refuses():
    async def main():
        rec = Recorder(hold=asyncio.Event())
        b = PackBatcher(config(), rec, max_pending=3)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([3] * 3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="max_pending=3"):
            await b.submit(make_features([3])[0])
        with pytest.raises(Overloaded):
            await b.submit_many(make_features([3]))
        rec.hold.set()
        await b.close()
        await asyncio.gather(*tasks)
        with pytest.raises(RuntimeError, match="closed"):
            await b.submit(make_features([3])[0])
    run(main())


def test_withdrawn_request_is_dropped_and_the_rest_replanned():
    async def main():
        rec = Recorder()
        b = PackBatcher(config(timeout_s=0.05), rec)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([3, 4, 5])]
        await asyncio.sleep(0)
        tasks[1].cancel()
        outs = await asyncio.gather(tasks[0], tasks[2])
        assert rec.plans[0][1] == [1, 3] and rec.plans[0][0].real_tokens == 8
        assert [int(o.start_logits[0]) for o in outs] == [1, 3]
        assert b.stats.dropped == 1 and b.pending == 0
        await b.close()
    run(main())


def test_reconfigure_closes_the_open_batch_under_old_knobs():
    async def main():
        rec = Recorder()
        b = PackBatcher(config(), rec)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features([3, 3])]
        await asyncio.sleep(0)
        b.set_config(config(max_valid_num=1))
        await asyncio.gather(*tasks)
        assert rec.sizes() == [2] and b.stats.closed_flush == 1
        outs = await asyncio.gather(*(b.submit(f) for f in make_features([3, 3])))
        assert len(outs) == 2 and rec.sizes() == [2, 1, 1]
        await b.close()
    run(main())


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), min_size=1, max_size=60),
       mode=st.sampled_from(["unpack_repack", "attention_mask"]),
       max_valid_num=st.integers(1, 8), slots=st.integers(1, 4),
       cancel=st.sets(st.integers(0, 59), max_size=5))
def test_every_request_gets_its_own_result_within_limits(lengths, mode, max_valid_num, slots,
                                                         cancel):
    async def main():
        rec = Recorder()
        cfg = config(mode=mode, max_valid_num=max_valid_num, timeout_s=0.001)
        b = PackBatcher(cfg, rec, max_inflight_batches=slots)
        tasks = [asyncio.ensure_future(b.submit(f)) for f in make_features(lengths)]
        for k in cancel:
            if k < len(tasks):
                tasks[k].cancel()
        outs = await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        for k, out in enumerate(outs):
            if isinstance(out, asyncio.CancelledError):
                assert k in cancel
                continue
            assert int(out.start_logits[0]) == k + 1 and len(out.start_logits) == lengths[k]
        seen = [m for _, members in rec.plans for m in members]
        assert len(seen) == len(set(seen))  # nobody computed twice
        for plan, members in rec.plans:
            assert plan.n_seqs == len(members) <= max_valid_num
            assert plan.real_tokens <= cfg.capacity_tokens
        assert rec.max_running <= slots and b.pending == 0
    run(main())
