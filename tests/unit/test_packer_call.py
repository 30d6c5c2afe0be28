"""PackerCall: one packer call shared by several bodies; a body that leaves withdraws its
windows, the call is never cancelled by a body and never a child of one (virtual-time loop, a
stand-in handle)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.packer_call import CallGatherer, PackerCall, PackerCallCancelled, share_calls

from factories import run_virtual


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
    """``many.remote(features, call_id)`` answers ``answer(f)`` (``f`` doubled unless told)
    for each of ``features`` after ``delay_s``; ``withdraw.remote(call_id, start, stop)`` is
    recorded."""

    def __init__(self, delay_s: float = 1.0, answer=lambda f: 2 * f):
        self.delay_s = delay_s
        self.answer = answer
        self.responses: list[_Response] = []
        self.sent: list[list] = []  # the features of each many call
        self.withdrawn: list[tuple] = []
        self.many, self.withdraw = self._Many(self), self._Withdraw(self)

    class _Many:
        def __init__(self, outer):
            self.outer = outer

        def remote(self, features, call_id):
            self.outer.sent.append(list(features))

            async def run():
                await asyncio.sleep(self.outer.delay_s)
                return [self.outer.answer(f) for f in features]

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


def test_a_call_cancelled_under_a_waiting_body_is_an_error_not_a_cancellation():
    """Were the shared call cancelled (say by Ray, with a request it was a child of), the
    bodies still waiting get an error the Ingress answers as a JSON 500, never a bare
    ``CancelledError`` that would leave the route unanswered."""

    async def scenario():
        packer = FakePacker(delay_s=10.0)
        call = PackerCall(packer, [1, 2, 3], bodies=1)
        waiting = asyncio.ensure_future(call.result(0, 3))
        await asyncio.sleep(1.0)
        call.task.cancel()
        with pytest.raises(PackerCallCancelled, match="cancelled"):
            await waiting
        return packer

    packer = run_virtual(scenario())
    assert not packer.withdrawn  # the body did not leave: nothing to withdraw


def test_the_call_is_made_without_the_parent_request_of_the_body_that_starts_it():
    """Ray cancels a request's children with it: found through Ray core's async task id and
    Serve's request context. The shared call must see neither (deployments.detach)."""
    import ray._raylet as raylet
    from ray.serve import context as serve_context

    seen = {}

    class Recording(FakePacker):
        def __init__(self):
            super().__init__(delay_s=0.0)
            many = self.many

            class _Many:
                def remote(_, features, call_id):
                    seen["task_id"] = raylet.async_task_id.get()
                    seen["request"] = serve_context._serve_request_context.get()
                    return many.remote(features, call_id)

            self.many = _Many()

    async def scenario():
        raylet.async_task_id.set("the-first-client's-task")
        serve_context._serve_request_context.set(
            serve_context._RequestContext(
                route="/v1/answer", request_id="r1", _internal_request_id="i1", app_name="app"
            )
        )
        call = PackerCall(Recording(), [1], bodies=1)
        out = await call.result(0, 1)
        # the caller's own context is untouched
        return out, raylet.async_task_id.get(), serve_context._serve_request_context.get()

    out, own_task, own_request = run_virtual(scenario())
    assert out == [2] and own_task == "the-first-client's-task" and own_request.request_id == "r1"
    assert seen["task_id"] is None
    assert seen["request"]._internal_request_id == "" and seen["request"].request_id == ""
    assert seen["request"].app_name == "app" and seen["request"].route == "/v1/answer"


def test_bodies_of_one_loop_turn_share_one_call_split_at_the_limit():
    """Bodies that reach the gatherer in the same event-loop turn share a call (each gets its
    own slice); a call never passes ``max_per_call`` sequences; a later turn gets its own."""

    async def scenario():
        packer = FakePacker(delay_s=1.0)
        gather = CallGatherer(packer, max_per_call=5)
        first = await asyncio.gather(gather.run([1, 2]), gather.run([3]), gather.run([4, 5, 6]))
        later = await gather.run([7])
        return first, later, packer, gather

    first, later, packer, gather = run_virtual(scenario())
    assert first == [[2, 4], [6], [8, 10, 12]] and later == [14]
    assert gather.calls == 3 and packer.sent == [[1, 2, 3], [4, 5, 6], [7]]


def test_a_body_gone_before_its_turn_ends_is_never_sent():
    async def scenario():
        packer = FakePacker(delay_s=1.0)
        gather = CallGatherer(packer, max_per_call=64)
        gone = asyncio.ensure_future(gather.run([1, 2]))
        kept = asyncio.ensure_future(gather.run([3]))
        await asyncio.sleep(0)  # both queued, the flush not yet run
        gone.cancel()
        return await kept, gone, packer

    kept, gone, packer = run_virtual(scenario())
    assert kept == [6] and gone.cancelled() and packer.sent == [[3]]


def test_share_calls_groups_bodies_in_order_split_at_the_limit():
    """The one grouping (CallGatherer and the QA route's tokenizer batch): bodies share calls
    in order, a call never passes ``max_per_call`` unless one body alone does, a ``None``
    body is not sent; each body gets its call and its offset there."""

    async def scenario():
        packer = FakePacker(delay_s=1.0)
        bodies = [[1, 2], None, [3], [4, 5, 6], [7, 8, 9, 10, 11, 12], [13]]
        placed = share_calls(packer, bodies, max_per_call=5)
        outs = [
            None if where is None else await where[0].result(where[1], len(mine))
            for mine, where in zip(bodies, placed)
        ]
        return placed, outs, packer

    placed, outs, packer = run_virtual(scenario())
    assert packer.sent == [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11, 12], [13]]
    assert placed[1] is None and [where[1] for where in placed if where] == [0, 2, 0, 0, 0]
    assert placed[0][0] is placed[2][0] and placed[0][0].waiting == 2
    assert outs == [[2, 4], None, [6], [8, 10, 12], [14, 16, 18, 20, 22, 24], [26]]
    with pytest.raises(ValueError, match="max_per_call"):
        share_calls(packer, [[1]], max_per_call=0)


def test_the_qa_tokenizer_batch_shares_calls_as_the_gatherer_does():
    """``Ingress._submit`` (the QA route's tokenizer batch, without Ray): a body with a
    problem gets it and no call; the others share calls split at ``max_windows_per_body``,
    each reading its own windows' results from its offset."""
    from types import SimpleNamespace

    from deployments.ingress import Ingress, _Sent
    from packing.qa.pipeline import window_count
    from packing.qa.requests import BadRequest, Limits, QARequest

    class Tokenizer:
        """A question ``"n"`` has ``n`` windows (input ids 10 n + k); ``"bad"`` is bad."""

        def tokenize(self, pairs):
            return [
                BadRequest("a bad question")
                if q == "bad"
                else [
                    SimpleNamespace(input_ids=10 * int(q) + k, token_type_ids=0)
                    for k in range(int(q))
                ]
                for q, _ in pairs
            ]

    def body(*questions):
        return [QARequest(q, "context") for q in questions]

    async def scenario():
        packer = FakePacker(delay_s=1.0, answer=lambda f: f.input_ids)
        fake = SimpleNamespace(qa=Tokenizer(), packer=packer, limits=Limits(max_windows_per_body=5))
        items = [
            (body("2"), _Sent()),
            (body("1", "bad"), _Sent()),
            (body("1"), _Sent()),
            (body("3"), _Sent()),
            (body("1"), _Sent()),
        ]
        assert await Ingress.func_or_class._submit.__wrapped__(fake, items) == [None] * 5
        sents = [sent for _, sent in items]
        outs = [
            None
            if sent.call is None
            else await sent.call.result(sent.offset, window_count(sent.windows))
            for sent in sents
        ]
        return sents, outs, packer

    sents, outs, packer = run_virtual(scenario())
    assert [[f.input_ids for f in call] for call in packer.sent] == [[20, 21, 10], [30, 31, 32, 10]]
    assert sents[1].call is None and sents[1].problem[0] == 1
    assert sents[0].call is sents[2].call and sents[3].call is sents[4].call
    assert [s.offset for s in sents if s.call] == [0, 2, 0, 3]
    assert outs == [[20, 21], None, [10], [30, 31, 32], [10]]
