"""Handle calls lost with their replica are sent again; other errors are not."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorUnavailableError

from deployments.retry import retry_replica_lost


def test_lost_replica_is_retried_until_a_call_succeeds():
    calls = []

    async def call():
        calls.append(1)
        if len(calls) < 3:
            raise ActorUnavailableError("gone", None)
        return "ok"

    assert asyncio.run(retry_replica_lost(call, first_delay_s=0.001)) == "ok"
    assert len(calls) == 3


def test_gives_up_after_the_attempts_and_passes_other_errors_at_once():
    calls = []

    async def lost():
        calls.append(1)
        raise ActorUnavailableError("gone", None)

    with pytest.raises(ActorUnavailableError):
        asyncio.run(retry_replica_lost(lost, attempts=2, first_delay_s=0.001))
    assert len(calls) == 2

    async def bad():
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        asyncio.run(retry_replica_lost(bad, first_delay_s=0.001))
    assert len(calls) == 3
