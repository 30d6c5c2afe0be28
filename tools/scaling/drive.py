"""The closed-loop clients of a scaling run: windows through the packer's handle
(``Packer.many``) and through the in-process runner's ``submit``, each keeping a number of
windows in flight."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import Sequence

from packing.runtime.features import Features, SpanLogits


async def _drive_handle(
    packer, data: Sequence[Features], per_call: int, outstanding: int, progress: bool
) -> tuple[list[SpanLogits], float]:
    """Closed loop: ``outstanding // per_call`` callers, each sending ``per_call`` windows at a
    time through ``packer.many``; returns results in order and the wall seconds."""
    results: list[SpanLogits | None] = [None] * len(data)
    chunks = [list(range(i, min(i + per_call, len(data)))) for i in range(0, len(data), per_call)]
    it = iter(chunks)
    bar = _bar(len(data), "served windows") if progress else None

    async def caller() -> None:
        for chunk in it:
            outs = await packer.many.remote([data[i] for i in chunk])
            for i, out in zip(chunk, outs):
                results[i] = out
            if bar is not None:
                bar.update(len(chunk))

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(max(1, outstanding // per_call))))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return results, seconds  # type: ignore[return-value]


def _drive_runner(
    runner, data: Sequence[Features], outstanding: int, progress: bool
) -> tuple[list[SpanLogits], float]:
    """Closed loop over ``runner.submit`` keeping ``outstanding`` windows in flight."""
    results: list[SpanLogits | None] = [None] * len(data)
    pending: dict[cf.Future, int] = {}
    bar = _bar(len(data), "in-process windows") if progress else None
    t0 = time.perf_counter()
    i = 0
    while i < len(data) or pending:
        while i < len(data) and len(pending) < outstanding:
            pending[runner.submit(data[i])] = i
            i += 1
        done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
        for fut in done:
            results[pending.pop(fut)] = fut.result()
        if bar is not None:
            bar.update(len(done))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return results, seconds  # type: ignore[return-value]


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", leave=False)
