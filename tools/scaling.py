"""``python -m tools scaling``: the serving graph on simulated accelerators, through Python handles.

For each runner replica count it deploys the app (``device: sim``) in a private local Ray
cluster, keeps ``--outstanding`` windows in flight with ``Packer.many`` handle calls of
``--windows-per-call`` windows each, and reports sequences/s, the packer's mean sequences
per batch and token fill, and how many answers differ from the same window run alone
(``crossed``; the sim's logits are exact, so any difference is a mix-up). Then it runs the
same windows through the in-process online ``PackRunner`` on the same sim device, with the
same number of windows outstanding and the dispatch slots of one runner replica, and prints
the served batches' fill against it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.config import DEFAULT_MODE
from packing.runtime.features import Features, SpanLogits

from .ceiling import resolve_config

SIM_CONFIG = "configs/sim.yaml"  # the runners' slots (max_ongoing_requests) come from it


@dataclass
class ScalingRow:
    """One measured configuration."""

    name: str  # "served, N runner replicas" or "in-process PackRunner"
    replicas: int | None  # runner replicas (None in-process)
    dispatch_slots: int  # plans allowed in flight
    sequences: int  # windows answered in the measured phase
    seconds: float  # measured phase
    sequences_per_s: float
    mean_sequences: float  # sequences per batch (model call)
    fill: float  # real tokens / token slots computed
    crossed: int  # answers that differ from the window's solo answer
    batches: int  # model calls in the measured phase
    closed: dict = field(default_factory=dict)  # why plans closed: full / budget / rest
    mean_admitted: float = 0.0  # windows per batch @serve.batch admitted


CLOSED = ("full", "budget", "rest")  # why a plan closed (DispatchStats.<why>_plans)


def counter_delta(after: dict, before: dict) -> dict:
    """The packer counters (``/v1/stats``, or the in-process dispatcher's) that a run moved:
    ``after - before`` for each counter a :class:`ScalingRow` is computed from."""
    keys = (
        "plans",
        "failed_plans",
        "sequences",
        "real_tokens",
        "token_slots",
        "admitted_batches",
        "admitted_windows",
        *(f"{k}_plans" for k in CLOSED),
    )
    return {k: after[k] - before[k] for k in keys}


def scaling_row(
    name: str, replicas: int | None, slots: int, d: dict, seconds: float, crossed: int
) -> ScalingRow:
    """One table row from the counter deltas ``d`` (:func:`counter_delta`) of a run that
    took ``seconds`` on ``slots`` dispatch slots; ``crossed``: answers not equal to the
    reference's."""
    ok = d["plans"] - d["failed_plans"]
    return ScalingRow(
        name=name,
        replicas=replicas,
        dispatch_slots=slots,
        sequences=d["sequences"],
        seconds=seconds,
        sequences_per_s=d["sequences"] / seconds if seconds else 0.0,
        mean_sequences=d["sequences"] / ok if ok else 0.0,
        fill=d["real_tokens"] / d["token_slots"] if d["token_slots"] else 0.0,
        crossed=crossed,
        batches=d["plans"],
        closed={k: d[f"{k}_plans"] for k in CLOSED},
        mean_admitted=(
            d["admitted_windows"] / d["admitted_batches"] if d["admitted_batches"] else 0.0
        ),
    )


def count_crossed(got: Sequence[SpanLogits], want: Sequence[SpanLogits]) -> int:
    """Answers whose logits are not exactly the reference's."""
    return sum(
        not (
            np.array_equal(g.start_logits, w.start_logits)
            and np.array_equal(g.end_logits, w.end_logits)
        )
        for g, w in zip(got, want)
    )


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


def scaling(
    model_dir: ModelLike,
    data: Sequence[Features],
    replicas: Sequence[int] = (1, 2, 4),
    profile: str = "slow",
    mode: str = DEFAULT_MODE,
    batch_wait_timeout_s: float = 0.005,
    outstanding: int = 1024,
    per_call: int = 32,
    warmup: int = 256,
    progress: bool = True,
) -> dict:
    """Measure the served graph at each runner replica count, then the in-process runner.

    Starts (and at the end shuts down) its own local Ray cluster. Returns a report dict with
    ``rows`` (:class:`ScalingRow` as dicts), ``speedup`` (sequences/s over the first replica
    count) and ``fill_ratio`` / ``mean_sequences_ratio`` (served with one replica over
    in-process). ``model_dir``: a path or a :class:`~packing.model.prepared.PreparedModel`,
    opened once here (the app's replicas open the folder themselves).
    """
    import ray
    from ray import serve

    from deployments.config import AppConfig, config_deployment_options
    from packing.runners import PackRunner

    slots = config_deployment_options(resolve_config(SIM_CONFIG), "PlanExecutor")[
        "max_ongoing_requests"
    ]
    model = PreparedModel.open(model_dir)
    reference = PackRunner(model, mode=mode, backend="sim", profile="fast").run(data)
    cfg = AppConfig(
        model_dir=str(model),
        model_source=model.manifest.source,  # the folder as it is
        device="sim",
        sim={"profile": profile},
        packing={
            "mode": mode,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "max_pending": 1 << 20,
        },
    )
    rows: list[ScalingRow] = []
    ray.init(include_dashboard=False, log_to_driver=False, namespace="packed-bert-scaling")
    try:
        serve.start(proxy_location="Disabled")
        rows += asyncio.run(
            _served_runs(
                cfg, replicas, slots, data, reference, per_call, outstanding, warmup, progress
            )
        )
    finally:
        ray.shutdown()
    with PackRunner(
        model,
        mode=mode,
        batch_wait_timeout_s=batch_wait_timeout_s,
        backend="sim",
        profile=profile,
        max_inflight_batches=slots,
    ) as runner:
        _drive_runner(runner, data[:warmup], outstanding, False)
        before = runner.dispatch_stats.as_dict()
        got, seconds = _drive_runner(runner, data, outstanding, progress)
        after = runner.dispatch_stats.as_dict()
    rows.append(
        scaling_row(
            "in-process PackRunner",
            None,
            slots,
            counter_delta(after, before),
            seconds,
            count_crossed(got, reference),
        )
    )
    base = rows[0].sequences_per_s
    served1 = next((r for r in rows if r.replicas == 1), None)
    inproc = rows[-1]
    return {
        "settings": {
            "profile": profile,
            "mode": mode,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "outstanding": outstanding,
            "windows_per_call": per_call,
            "sequences": len(data),
            "model_dir": str(model),
        },
        "rows": [asdict(r) for r in rows],
        "speedup": {str(r.replicas): r.sequences_per_s / base for r in rows if r.replicas},
        "fill_ratio": served1.fill / inproc.fill if served1 and inproc.fill else None,
        "mean_sequences_ratio": (
            served1.mean_sequences / inproc.mean_sequences
            if served1 and inproc.mean_sequences
            else None
        ),
    }


async def _served_runs(
    cfg,
    replicas: Sequence[int],
    slots: int,
    data: Sequence[Features],
    reference: Sequence[SpanLogits],
    per_call: int,
    outstanding: int,
    warmup: int,
    progress: bool,
) -> list[ScalingRow]:
    """Deploy and measure each replica count in turn, all in one event loop (Serve's handles
    stay bound to the loop they were first used in); each runner replica takes ``slots``
    plans at once."""
    from ray import serve

    from deployments.app import build_graph

    rows = []
    for n in replicas:
        name = f"scaling-{n}"
        app = build_graph(
            cfg,
            runner_options={
                "num_replicas": n,
                "max_ongoing_requests": slots,
                "ray_actor_options": {"num_cpus": 0},
            },
        )
        await asyncio.to_thread(serve.run, app, name=name, route_prefix=None)
        seen, d, seconds, got = await _measure_served(
            name, slots * n, data, per_call, outstanding, warmup, progress
        )
        rows.append(
            scaling_row(
                f"served, {n} runner replica{'s' if n > 1 else ''}",
                n,
                seen,
                d,
                seconds,
                count_crossed(got, reference),
            )
        )
        await asyncio.to_thread(serve.delete, name)
    await serve.shutdown_async()  # inside the loop its routers are bound to
    return rows


async def _measure_served(
    app: str,
    want_slots: int,
    data: Sequence[Features],
    per_call: int,
    outstanding: int,
    warmup: int,
    progress: bool,
) -> tuple[int, dict, float, list[SpanLogits]]:
    """Inside one event loop (handles need one with Serve's throughput settings): wait for
    the packer to see every runner replica, warm up, measure. Returns the dispatch slots, the
    packer's counter deltas, the seconds and the results."""
    from ray import serve

    packer = serve.get_deployment_handle("Packer", app)
    deadline = time.monotonic() + 60
    while True:
        slots = (await packer.stats.remote())["dispatch_slots"]
        if slots >= want_slots or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await _drive_handle(packer, data[:warmup], per_call, outstanding, False)
    before = await packer.stats.remote()
    got, seconds = await _drive_handle(packer, data, per_call, outstanding, progress)
    after = await packer.stats.remote()
    return slots, counter_delta(after, before), seconds, got


def format_report(report: dict) -> str:
    """The report as a Markdown table plus the two ratios."""
    s = report["settings"]
    lines = [
        f"sim profile {s['profile']}, mode {s['mode']}, batch_wait_timeout_s "
        f"{s['batch_wait_timeout_s']} s, "
        f"{s['sequences']} windows, {s['outstanding']} outstanding "
        f"({s['windows_per_call']} per handle call)",
        "",
        "| run | dispatch slots | sequences/s | speed-up | admitted/batch | seqs/plan | "
        "token fill | plans (full / budget / rest) | crossed |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    base = report["rows"][0]["sequences_per_s"]
    for r in report["rows"]:
        c = r["closed"]
        speed = f"{r['sequences_per_s'] / base:.2f}x" if r["replicas"] else "-"
        lines.append(
            f"| {r['name']} | {r['dispatch_slots']} | {r['sequences_per_s']:.1f} | "
            f"{speed} | {r['mean_admitted']:.2f} | {r['mean_sequences']:.2f} | "
            f"{r['fill']:.3f} | {r['batches']} "
            f"({c['full']} / {c['budget']} / {c['rest']}) | {r['crossed']} |"
        )
    if report["fill_ratio"] is not None:
        lines += [
            "",
            f"served (1 replica) over in-process: sequences per plan "
            f"{report['mean_sequences_ratio']:.3f}x, token fill {report['fill_ratio']:.3f}x",
        ]
    return "\n".join(lines)
