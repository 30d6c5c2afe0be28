"""Measuring a token budget calibration: throughput at each budget, on the device.

:func:`calibrate` runs the ``unpack_repack`` graph through
:class:`~packing.runtime.executor.PlanExecutor` (the code path every runner uses) on full
batches of synthetic ``seed``-mix sequences at each budget, interleaved over rounds;
:func:`measure_budget` times the batches of one budget. No cache here: see
:mod:`packing.runtime.calibrate.cache`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np

from packing.model.manifest import Manifest
from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.plans import UnpackRepackPlan

from .curve import DEFAULT_THRESHOLD, Calibration, _rule, budgets_for, pick_budget
from .key import GRAPH, NotCalibratable, fingerprint
from .load import OthersLoad


def measure_budget(
    executor,
    plans: Sequence[UnpackRepackPlan],
    features: Sequence,
    warmup: int = 0,
    min_repeats: int = 1,
    min_time_s: float = 0.0,
    max_repeats: int = 10_000,
    start: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Real tokens per second of each timed batch of ``plans`` run on ``executor``.

    ``features[i]`` is sequence ``i`` of the plans' ``seq_ids``. Batches cycle through
    ``plans`` from index ``start``: ``warmup`` untimed, then timed one by one until at least
    ``min_repeats`` are done and ``min_time_s`` seconds have passed (at most
    ``max_repeats``). Each sample is the batch's real tokens over its seconds on ``clock``
    (wall time by default; building the inputs included, as a runner pays it).
    """
    if not plans:
        raise ValueError("measure_budget needs at least one plan")
    i = start

    def run_one() -> float:
        nonlocal i
        plan = plans[i % len(plans)]
        i += 1
        feats = [features[s] for s in plan.seq_ids]
        t0 = clock()
        executor.execute(plan, feats)
        return plan.real_tokens / max(clock() - t0, 1e-9)

    for _ in range(warmup):
        run_one()
    rates: list[float] = []
    t_start = clock()
    while len(rates) < max(1, min_repeats) or (
        clock() - t_start < min_time_s and len(rates) < max_repeats
    ):
        rates.append(run_one())
    return rates


def _full_plans(manifest: Manifest, budget: int, lengths: np.ndarray) -> list[UnpackRepackPlan]:
    from packing.policy.offline import plan_offline_unpack_repack

    plans = plan_offline_unpack_repack(
        lengths, manifest.seq_len, manifest.batch_size, manifest.max_valid_num, max_tokens=budget
    )
    return plans[:-1] if len(plans) > 1 else plans  # the last batch is a remainder


def calibrate(
    model_dir: ModelLike,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    plan_overhead_s: float = 0.0,
    budgets: Sequence[int] | None = None,
    warmup: int = 1,
    min_repeats: int = 3,
    min_time_s: float = 1.0,
    rounds: int = 3,
    batches_per_budget: int = 8,
    seed: int = 2022,
    progress: bool | None = None,
    clock: Callable[[], float] = time.perf_counter,
    others_load: Callable[[], OthersLoad] | None = None,
) -> Calibration:
    """Measure the backend's throughput at each token budget and pick one; no cache.

    Loads the ``unpack_repack`` graph of ``model_dir`` (a
    :class:`~packing.model.prepared.PreparedModel`, or a folder opened here) on ``backend`` with
    ``backend_options`` (a fresh instance, released afterwards) and, for each of
    ``budgets`` (default :func:`budgets_for` the manifest's shapes; each must lie in
    ``[seq_len, batch_size x seq_len]``), times full batches of synthetic ``seed``-mix
    sequences (enough for ``batches_per_budget`` full batches at the largest budget) with
    :func:`measure_budget`: ``warmup`` untimed batches per budget, then ``rounds`` rounds
    that each visit every budget in turn for ``min_time_s / rounds`` seconds (and at least
    ``min_repeats / rounds`` batches), so each budget gets at least ``min_time_s`` seconds
    and ``min_repeats`` batches in all. A budget's throughput is the median of its batches'
    real tokens per second. Returns the curve with ``max_tokens`` chosen by
    :func:`pick_budget` at ``threshold`` and ``plan_overhead_s``. ``progress``: a tqdm bar over the budgets
    (None: only when stderr is a terminal). The fingerprint is ``""`` when the options
    cannot be fingerprinted. ``clock``: the seconds every timing reads (wall time; a test
    gives a virtual clock that an injected sim ``sleep`` advances). ``others_load`` (default
    :class:`~.load.OthersLoad`): made before the first batch and read after the last, it
    gives the calibration's ``others_load``, the share of the host's CPU other processes
    took meanwhile. Raises ValueError on a bad threshold or budget.
    """
    from tqdm.auto import tqdm

    from ..executor import PlanExecutor, open_graph
    from ..synthetic import seed_lengths, synthetic_features

    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    pick_budget([1], [1.0], threshold, plan_overhead_s)  # validates both before any work
    seq_len, full = manifest.seq_len, manifest.seq_len * manifest.batch_size
    budgets = sorted({int(b) for b in (budgets or budgets_for(seq_len, manifest.batch_size))})
    bad = [b for b in budgets if not seq_len <= b <= full]
    if bad:
        raise ValueError(
            f"budgets must lie in [seq_len={seq_len}, batch_size*seq_len={full}], got {bad}"
        )
    try:
        key = fingerprint(model, backend, backend_options)[0]
    except NotCalibratable:
        key = ""
    mean = seq_len / 2  # the seed mix's mean length, before clipping
    n = max(64, math.ceil(batches_per_budget * max(budgets) / mean) + 2 * manifest.max_valid_num)
    lengths = seed_lengths(n, seq_len, seed)
    dims = manifest.dims
    features = synthetic_features(lengths, dims.vocab_size, dims.type_vocab_size, seed)
    _, be = open_graph(model, GRAPH, backend, dict(backend_options or {}))
    executor = PlanExecutor(be, manifest, model)  # embed/classify: their heads are timed too
    plans = {b: _full_plans(manifest, b, lengths) for b in budgets}
    samples: dict[int, list[float]] = {b: [] for b in budgets}
    rounds = max(1, int(rounds))
    per_round = max(1, -(-int(min_repeats) // rounds))
    started = time.perf_counter()
    load = (others_load or OthersLoad)()
    bar = tqdm(
        total=rounds * len(budgets),
        desc="calibrating token budget",
        unit="budget",
        disable=None if progress is None else not progress,
        leave=False,
    )
    try:
        for r in range(rounds):  # interleaved, so a burst of other load hits every budget
            for b in budgets:
                bar.set_postfix_str(f"round {r + 1}/{rounds}, {b} tokens")
                samples[b] += measure_budget(
                    executor,
                    plans[b],
                    features,
                    warmup=warmup if r == 0 else 0,
                    min_repeats=per_round,
                    min_time_s=min_time_s / rounds,
                    start=len(samples[b]) + (warmup if r else 0),
                    clock=clock,
                )
                bar.update(1)
    finally:
        bar.close()
    others = load.share()
    rates = [float(statistics.median(samples[b])) for b in budgets]
    return Calibration(
        budgets=tuple(budgets),
        tokens_per_s=tuple(rates),
        max_tokens=pick_budget(budgets, rates, threshold, plan_overhead_s),
        threshold=threshold,
        rule=_rule(threshold, plan_overhead_s),
        fingerprint=key,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        backend=be.describe(),
        seconds=round(time.perf_counter() - started, 3),
        plan_overhead_s=plan_overhead_s,
        others_load=None if others is None else round(others, 3),
    )
