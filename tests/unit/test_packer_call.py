"""PackerCall: one packer call shared by several bodies; a body that leaves withdraws its
windows, the last one to leave cancels the call (virtual-time loop, a stand-in handle)."""

from __future__ import annotations

import asyncio

import pytest
from factories import run_virtual

from deployments.packer_call import PackerCall


class _Response:
    """A stand-in DeploymentResponse: awaitable, with ``cancel()``."""

    def __init__(self, coro):
        self.task = asyncio.ensure_future(coro)
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self.task.cancel()

    def __await__(self):
        return self.task.__await__()


class FakePacker:
    """``many.remote(features, call_id)`` answers ``features`` doubled after ``delay_s``;
    ``withdraw.remote(call_id, start, stop)`` is recorded."""

    def __init__(self, delay_s: float = 1.0):
        self.delay_s = delay_s
        self.responses: list[_Response] = []
        self.withdrawn: list[tuple] = []
        self.many, self.withdraw = self._Many(self), self._Withdraw(self)

    class _Many:
        def __init__(self, outer):
            self.outer = outer

        def remote(self, features, call_id):
            async def run():
                await asyncio.sleep(self.outer.delay_s)
                return [2 * f for f in features]
            response = _Response(run())
            self.outer.responses.append(response)
            return response

    class _Withdraw:
        def __init__(self, outer):
            self.outer = outer

        def remote(self, call_id, start, stop):
            self.outer.withdrawn.append((call_id, start, stop))

            async def done():
                return stop - start
            return done()


def test_each_body_gets_its_slice():
    async def scenario():
        packer = FakePacker()
        call = PackerCall(packer, [1, 2, 3, 4, 5], bodies=2)
        return await asyncio.gather(call.result(0, 2), call.result(2, 3)), packer

    (a, b), packer = run_virtual(scenario())
    assert a == [2, 4] and b == [6, 8, 10] and len(packer.responses) == 1
    assert not packer.withdrawn


def test_each_body_that_leaves_withdraws_its_windows_and_the_call_is_never_cancelled():
    """Leaving is the packer's bookkeeping (withdraw), never a cancellation of the Ray call,
    which would cancel the plan calls the packer made for other callers' windows too."""
    async def scenario():
        packer = FakePacker(delay_s=10.0)
        call = PackerCall(packer, [1, 2, 3, 4, 5], bodies=2)
        first = asyncio.ensure_future(call.result(0, 2))
        second = asyncio.ensure_future(call.result(2, 3))
        await asyncio.sleep(1.0)
        first.cancel()  # its client went away: the other still waits
        await asyncio.sleep(0.1)
        withdrawn_first = list(packer.withdrawn)
        second.cancel()  # the last one leaves too
        await asyncio.sleep(0.1)
        return withdrawn_first, packer, call

    withdrawn_first, packer, call = run_virtual(scenario())
    assert withdrawn_first == [(call.call_id, 0, 2)]
    assert packer.withdrawn == [(call.call_id, 0, 2), (call.call_id, 2, 5)]
    assert not packer.responses[0].cancelled and not call.task.cancelled()
    assert call.waiting == 0 and call.withdrawn == 5


def test_a_call_needs_a_body():
    async def scenario():
        PackerCall(FakePacker(), [1], bodies=0)

    with pytest.raises(ValueError, match="at least one body"):
        run_virtual(scenario())
