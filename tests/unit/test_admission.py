"""CountAdmission: ``@serve.batch``'s count path in-process (count cap, timer from the first
window taken, setters from the next batch, failures). Virtual time (looptime), no Ray."""

from __future__ import annotations

import asyncio

import pytest

from packing.runtime.admission import AdmissionConfig, CountAdmission

from factories import run_virtual

run = run_virtual


class Handler:
    """Batch handler that records each batch (and the loop time it came) and echoes items."""

    def __init__(self, hold_s: float = 0.0, fail: set[int] = frozenset(), cancel: bool = False):
        self.batches: list[tuple[float, list]] = []
        self.hold_s, self.fail, self.cancel = hold_s, fail, cancel

    async def __call__(self, items: list) -> list:
        self.batches.append((asyncio.get_running_loop().time(), list(items)))
        number = len(self.batches)
        await asyncio.sleep(self.hold_s)
        if number in self.fail:
            raise RuntimeError(f"batch {number} failed")
        if self.cancel:
            raise asyncio.CancelledError()
        return [("done", x) for x in items]

    def sizes(self) -> list[int]:
        return [len(items) for _, items in self.batches]


async def arrive(admission, items, gaps_s):
    """Submit ``items[k]`` after ``gaps_s[k]`` seconds of virtual time each; results in order."""
    tasks = []
    for item, gap in zip(items, gaps_s):
        await asyncio.sleep(gap)
        tasks.append(asyncio.ensure_future(admission(item)))
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_a_batch_closes_at_max_batch_size():
    async def main():
        h = Handler()
        a = CountAdmission(h, max_batch_size=4, batch_wait_timeout_s=10.0)
        outs = await arrive(a, range(10), [0.0] * 10)
        assert h.sizes() == [4, 4, 2]
        assert [t for t, _ in h.batches][:2] == [0.0, 0.0]  # full batches never wait
        assert h.batches[2][0] == pytest.approx(10.0)  # the rest waits for the timer
        assert outs == [("done", k) for k in range(10)]
        await a.close()

    run(main())


def test_the_timer_starts_when_the_first_window_is_taken():
    async def main():
        h = Handler()
        a = CountAdmission(h, max_batch_size=40, batch_wait_timeout_s=0.005)
        await arrive(a, range(4), [0.0, 0.004, 0.0011, 0.003])  # at 0, 4, 5.1, 8.1 ms
        assert h.sizes() == [2, 2]
        assert h.batches[0][0] == pytest.approx(0.005)  # 5 ms after the first
        assert h.batches[1][0] == pytest.approx(0.0101)  # 5 ms after the third
        await a.close()

    run(main())


def test_forming_never_waits_for_a_busy_handler():
    """As in Ray Serve: with max_concurrent_batches 1 and a slow handler, batches still close
    on their timer (small) and wait for the handler, which is why the packer's dispatch step
    merges what waits (test_dispatch.py)."""

    async def main():
        h = Handler(hold_s=1.0)
        a = CountAdmission(
            h, max_batch_size=40, batch_wait_timeout_s=0.005, max_concurrent_batches=1
        )
        await arrive(a, range(6), [0.0, 0.1, 0.1, 0.1, 0.1, 0.1])
        assert h.sizes() == [1] * 6
        assert a.batches == 6
        await a.close()

    run(main())


def test_setters_apply_from_the_next_batch():
    async def main():
        h = Handler()
        a = CountAdmission(h, max_batch_size=2, batch_wait_timeout_s=1.0)
        first = asyncio.ensure_future(arrive(a, range(3), [0, 0, 0]))
        await asyncio.sleep(0.5)  # the third window's batch is open, waiting for its timer
        a.set_max_batch_size(5)
        a.set_batch_wait_timeout_s(0.1)
        await first
        assert h.sizes() == [2, 1] and h.batches[1][0] == pytest.approx(1.0)  # old timer
        await arrive(a, range(3, 10), [0] * 7)
        assert h.sizes() == [2, 1, 5, 2]
        assert h.batches[3][0] - h.batches[2][0] == pytest.approx(0.1)
        with pytest.raises(ValueError, match="max_batch_size"):
            a.set_max_batch_size(0)
        with pytest.raises(ValueError, match="batch_wait_timeout_s"):
            a.set_batch_wait_timeout_s(-1)
        await a.close()

    run(main())


def test_a_failing_batch_fails_its_windows_and_admission_goes_on():
    async def main():
        h = Handler(fail={1})
        a = CountAdmission(h, max_batch_size=2, batch_wait_timeout_s=0.01)
        outs = await arrive(a, range(4), [0, 0, 0, 0])
        assert [isinstance(o, RuntimeError) for o in outs] == [True, True, False, False]
        assert "batch 1 failed" in str(outs[0])
        await a.close()

    run(main())


def test_a_cancelled_error_in_the_handler_fails_its_windows_instead_of_hanging():
    async def main():
        a = CountAdmission(Handler(cancel=True), max_batch_size=2, batch_wait_timeout_s=0.01)
        outs = await asyncio.wait_for(arrive(a, range(3), [0, 0, 0]), timeout=5)
        assert all(isinstance(o, RuntimeError) and "cancelled" in str(o) for o in outs)
        await a.close()

    run(main())


def test_a_wrong_result_count_fails_the_batch():
    async def main():
        async def short(items):
            return items[:-1]

        a = CountAdmission(short, max_batch_size=3, batch_wait_timeout_s=0.01)
        outs = await arrive(a, range(3), [0, 0, 0])
        assert all(isinstance(o, RuntimeError) and "2 results for 3" in str(o) for o in outs)
        await a.close()

    run(main())


def test_a_withdrawn_window_is_not_handed_over():
    async def main():
        h = Handler()
        a = CountAdmission(h, max_batch_size=10, batch_wait_timeout_s=0.01)
        tasks = [asyncio.ensure_future(a(k)) for k in range(3)]
        await asyncio.sleep(0.001)
        tasks[1].cancel()
        await asyncio.gather(tasks[0], tasks[2])
        assert h.batches[0][1] == [0, 2]
        await a.close()

    run(main())


def test_close_handles_what_is_queued_then_refuses():
    async def main():
        h = Handler(hold_s=0.5)
        a = CountAdmission(h, max_batch_size=2, batch_wait_timeout_s=0.01)
        tasks = [asyncio.ensure_future(a(k)) for k in range(5)]
        await asyncio.sleep(0)
        await a.close()
        assert all(t.done() for t in tasks) and h.sizes() == [2, 2, 1]
        with pytest.raises(RuntimeError, match="closed"):
            await a(9)

    run(main())


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"batch_wait_timeout_s": -0.1}, "batch_wait_timeout_s"),
        ({"batch_wait_timeout_s": float("nan")}, "batch_wait_timeout_s"),
        ({"max_concurrent_batches": 0}, "max_concurrent_batches"),
        ({"max_concurrent_batches": True}, "max_concurrent_batches"),
    ],
)
def test_config_names_the_bad_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        AdmissionConfig(**kwargs)


def test_config_resolves_its_none_defaults():
    cfg = AdmissionConfig()
    assert cfg.batch_size(40) == 40 and cfg.concurrent_batches(4096) == 4096
    cfg = AdmissionConfig(max_batch_size=8, max_concurrent_batches=3)
    assert cfg.batch_size(40) == 8 and cfg.concurrent_batches(4096) == 3
