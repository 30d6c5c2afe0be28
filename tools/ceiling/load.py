"""The load a ceiling run sends: the question pool and its JSON bodies (single questions and
lists), and the closed-loop asyncio + aiohttp client of one measured phase."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .procs import cpu_delta, self_cpu

LENGTH_RANGE = (24, 64)  # tokens per question + context, uniform
POOL_SIZE = 256  # distinct questions
POOL_SEED = 2022
FALLBACK_SENTENCES = (
    "The river runs through the old town and past the mill.",
    "Jane Austen wrote Pride and Prejudice in the early nineteenth century.",
    "The committee met on Tuesday to discuss the new budget for schools.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "The bridge was closed for repairs after the winter storms.",
    "Mount Everest is the highest mountain above sea level on Earth.",
    "The orchestra played a symphony by Beethoven to a full hall.",
    "Early computers filled whole rooms and used vacuum tubes.",
)
FALLBACK_QUESTIONS = (
    "Who wrote it?",
    "What happened on Tuesday?",
    "Where does the river run?",
    "What was closed?",
    "What is the highest mountain?",
    "What did they play?",
)


def load_tokenizer(model_dir: Path | None, model_source: str | None):
    """The app's tokenizer: its model folder's when prepared, else (for ``random:*`` sources,
    which use it) the bundled bert-base-uncased vocabulary; None when neither applies."""
    from transformers import AutoTokenizer, BertTokenizerFast

    if model_dir is not None and (model_dir / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(model_dir))
    if (model_source or "random:").startswith("random:"):
        from packing.model.weights import vocab_asset_path

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(vocab_asset_path(), Path(tmp) / "vocab.txt")
            return BertTokenizerFast.from_pretrained(tmp, do_lower_case=True)
    return None


def question_pool(
    tokenizer, n: int = POOL_SIZE, seed: int = POOL_SEED, lengths: tuple[int, int] = LENGTH_RANGE
) -> list[dict]:
    """``n`` ``{question, context}`` pairs of uniform random token lengths in ``lengths``
    (inclusive, fixed seed) built with ``tokenizer``; fixed English sentences without one."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(lengths[0], lengths[1] + 1, size=n)
    if tokenizer is not None:
        from ..loadtest import synthetic_questions

        return synthetic_questions(sizes, tokenizer, seed)
    out = []
    for i, size in enumerate(sizes):
        k = max(1, int(size) // 16)  # ~12-14 words per sentence, ~16 tokens
        picks = rng.choice(len(FALLBACK_SENTENCES), size=k)
        out.append(
            {
                "question": FALLBACK_QUESTIONS[i % len(FALLBACK_QUESTIONS)],
                "context": " ".join(FALLBACK_SENTENCES[j] for j in picks),
            }
        )
    return out


def encode_bodies(pool: Sequence[dict], list_size: int | None) -> list[bytes]:
    """JSON bodies: one per pool item (``list_size`` None), or lists of ``list_size`` items
    taken from the pool in order, cycling, as many lists as the pool has items / list_size
    (at least 1)."""
    if list_size is None:
        return [json.dumps(q).encode() for q in pool]
    count = max(1, len(pool) // list_size)
    return [
        json.dumps([pool[(k * list_size + j) % len(pool)] for j in range(list_size)]).encode()
        for k in range(count)
    ]


@dataclass
class Measurement:
    """What one measured phase saw (times in seconds)."""

    seconds: float
    latencies: list[float]  # of every response completed in the phase (any status)
    statuses: Counter  # status code -> count; 0 = no response (connection error, timeout)
    server_cpu_s: float
    client_cpu_s: float
    warmup_s: float

    @property
    def ok(self) -> int:
        """HTTP 200 responses."""
        return self.statuses.get(200, 0)


@dataclass
class _LoopState:
    phase: str = "warmup"  # warmup -> measure -> done
    answered_once: set = field(default_factory=set)
    latencies: list = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    measured: int = 0


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    warmup_s: float,
    duration_s: float | None,
    requests: int | None,
    sample_server: Callable[[], dict],
    progress: bool = False,
    label: str = "",
    max_warmup_s: float = 300.0,
    drain_s: float = 120.0,
) -> Measurement:
    """POST ``bodies`` (cycled) to ``url``/v1/answer from ``concurrency`` closed-loop clients.

    Warm-up lasts ``warmup_s`` and until every client has had one response (at most
    ``max_warmup_s``). The measured phase then lasts ``duration_s`` seconds, or until
    ``requests`` responses arrived when given; it counts responses completed inside it.
    ``sample_server()`` is called at both ends of the phase (CPU samples for
    :func:`cpu_delta`). In-flight requests are drained (``drain_s`` at most) before returning.
    """
    import aiohttp

    st = _LoopState()
    done_measure = asyncio.Event()
    counter = iter(range(1 << 62))
    target = url.rstrip("/") + "/v1/answer"
    headers = {"content-type": "application/json"}

    async def client(cid: int, session: aiohttp.ClientSession) -> None:
        while st.phase != "done":
            body = bodies[next(counter) % len(bodies)]
            t0 = time.perf_counter()
            try:
                async with session.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            st.answered_once.add(cid)
            if st.phase == "measure":
                st.latencies.append(time.perf_counter() - t0)
                st.statuses[status] += 1
                st.measured += 1
                if requests is not None and st.measured >= requests:
                    done_measure.set()

    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(concurrency)]
        t_warm = time.perf_counter()
        await asyncio.sleep(warmup_s)
        while len(st.answered_once) < concurrency and time.perf_counter() - t_warm < max_warmup_s:
            await asyncio.sleep(0.1)
        warmed = time.perf_counter() - t_warm
        server0, client0, t0 = sample_server(), self_cpu(), time.perf_counter()
        st.phase = "measure"
        ticker = asyncio.create_task(
            _progress(st, t0, duration_s, requests, label) if progress else asyncio.sleep(0)
        )
        if requests is not None:
            await done_measure.wait()
        else:
            await asyncio.sleep(duration_s)
        st.phase = "done"
        seconds = time.perf_counter() - t0
        server1, client1 = sample_server(), self_cpu()
        await ticker
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return Measurement(
        seconds, st.latencies, st.statuses, cpu_delta(server0, server1), client1 - client0, warmed
    )


async def _progress(
    st: _LoopState, t0: float, duration_s: float | None, requests: int | None, label: str
) -> None:
    from tqdm.auto import tqdm

    total = requests if requests is not None else duration_s
    unit = "req" if requests is not None else "s"
    with tqdm(total=total, unit=unit, desc=label, leave=False) as bar:
        while st.phase == "measure":
            await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - t0
            now = st.measured if requests is not None else min(elapsed, duration_s)
            bar.n = now
            bar.set_postfix(
                ok=st.statuses.get(200, 0),
                rps=f"{st.measured / max(elapsed, 1e-9):.1f}",
                refresh=False,
            )
            bar.refresh()
