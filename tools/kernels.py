"""``python -m tools kernels``: each kernel of the graph builder (ONNX Runtime's contrib kernels,
this package's ``fused_int8``, ``fused_fp32`` and ``packed_attention``) and ONNX Runtime's
session options, alone or combined, against the plain graph, in one run.

For a prepared folder and one layout, the builder writes the layout's graph once per
**variant** (a set of :data:`packing.model.graphs.KERNELS`; ``plain`` is none of them) into a
temporary copy of the folder, each reading the same weights. Every variant runs the same
fullest batches of the workload (:func:`packing.bench.profile.fullest_plans`, at the folder's
calibrated token budget for unpack/repack, or ``max_tokens``), after a warm-up, in
interleaved rounds (variant 1, 2, ... then again), so a busy moment of the host hits all of
them. Reported per variant:
the median time of a round, the speed over the first variant, and the largest absolute
difference of its outputs from the first variant's on those batches (each kernel is kept only
if it is faster **and** keeps the numbers: the contrib kernels give the same, this package's
the same within float32's last bits, int8's within its last-bit rounding).

A variant may also name session options (:data:`OPTIONS`), which change how ONNX Runtime runs
the same graph: ``ort_skipln`` leaves ONNX Runtime's SkipLayerNormalization rewrite on (the
backend turns it off on the CPU, :data:`~packing.runtime.backend.CPU_DISABLED_OPTIMIZERS`);
``no_arena`` and ``no_mem_pattern`` turn off its CPU memory arena and memory-pattern
planning; ``io_binding`` runs through an IO binding (the backend's options of the same
names). Prints the host's CPU model and features. A benchmark: run it on a quiet host.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel

__all__ = ["format_kernels", "kernels", "parse_variant"]


ORT_SKIPLN = "ort_skipln"
"""A variant token that is no kernel: ONNX Runtime's ``SkipLayerNormFusion`` left on (the
backend turns it off on the CPU, :data:`~packing.runtime.backend.CPU_DISABLED_OPTIMIZERS`)."""

OPTIONS: dict[str, dict] = {
    ORT_SKIPLN: {"disabled_optimizers": ()},
    "no_arena": {"memory_arena": False},
    "no_mem_pattern": {"memory_pattern": False},
    "io_binding": {"io_binding": True},
}
"""The variant tokens that are no kernel but session options, and the
:class:`~packing.runtime.backend.OnnxRuntimeBackend` arguments each sets."""


def parse_variant(text: str) -> frozenset[str]:
    """``plain`` -> no kernel; ``mha+int8_to_float`` -> those two; ``plain+ort_skipln``,
    ``mha+no_arena``: also those session options (:data:`OPTIONS`). ValueError for an unknown
    token, naming it."""
    from packing.model.graphs import check_kernels

    tokens = set(text.split("+")) - {"plain"}
    check_kernels(tokens - set(OPTIONS))
    return frozenset(tokens)


def _name(variant: frozenset[str]) -> str:
    kernels = "+".join(sorted(variant - set(OPTIONS))) or "plain"
    return "+".join([kernels, *sorted(variant & set(OPTIONS))])


def kernels(
    model_dir: ModelLike,
    variants: Sequence[str],
    layout: str = "unpack_repack",
    workload: str = "seed",
    samples: int = 128,
    batches: int = 3,
    rounds: int = 5,
    threads: int | None = None,
    max_tokens: int | str = "auto",
) -> dict:
    """Time ``variants`` (``plain``, ``mha``, ``int8_to_float``, ``a+b``) of ``layout`` of the
    folder on its ``batches`` fullest batches of the workload, ``rounds`` interleaved rounds
    after one warm-up round; the report dict (``rows``: variant, median_ms, speed,
    max_abs_diff; ``host``; the settings). The first variant is the base. ValueError for an
    unknown variant or layout, or fewer than two variants. ``max_tokens``: unpack/repack's
    token budget (``"auto"``: calibrated, as the bench's modes). ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once."""
    import onnx

    from packing.bench.profile import budget_plans
    from packing.model.graphs import WEIGHTS_FILES, build_graph
    from packing.runners.workloads import load_workload
    from packing.runtime.backend import OnnxRuntimeBackend
    from packing.runtime.executor import PlanExecutor
    from packing.runtime.host import host_facts

    parsed = [parse_variant(v) for v in variants]
    if len(parsed) < 2:
        raise ValueError(f"give at least two variants to compare, got {list(variants)}")
    model = PreparedModel.open(model_dir)
    m = model.manifest
    options = {"device": "cpu", **({"intra_op_threads": threads} if threads else {})}
    data = load_workload(workload, samples, model, m.seq_len, m.dims.vocab_size)
    plans, budget = budget_plans(model, layout, data, batches, options, max_tokens)
    weights = WEIGHTS_FILES[m.precision]
    with tempfile.TemporaryDirectory(prefix="pbs-kernels-") as tmp:
        folder = Path(tmp)
        shutil.copy(model.folder / weights, folder / weights)
        backends = []
        for v in parsed:
            graph = build_graph(
                layout, m.dims, folder / weights, m.precision, m.task, v - set(OPTIONS)
            )
            onnx.save(graph, str(folder / f"{_name(v)}.onnx"))
            session = {k: a for t in sorted(v & set(OPTIONS)) for k, a in OPTIONS[t].items()}
            backends.append(OnnxRuntimeBackend(folder / f"{_name(v)}.onnx", **options, **session))
        executor = PlanExecutor(backends[0], m, model)  # every variant takes the same feeds
        feeds = [executor.inputs(p, [data[k] for k in p.seq_ids])[0] for p in plans]
        outputs = [[b.run(f) for f in feeds] for b in backends]  # also the warm-up round
        times: list[list[float]] = [[] for _ in backends]
        for _ in range(rounds):
            for i, backend in enumerate(backends):
                start = time.perf_counter()
                for f in feeds:
                    backend.run(f)
                times[i].append(time.perf_counter() - start)
    medians = [statistics.median(t) for t in times]
    rows = []
    for v, med, outs in zip(parsed, medians, outputs):
        diff = max(float(np.abs(a[k] - b[k]).max()) for a, b in zip(outputs[0], outs) for k in a)
        rows.append(
            {
                "variant": _name(v),
                "median_ms": 1000 * med,
                "speed": medians[0] / med,
                "max_abs_diff": diff,
            }
        )
    return {
        "model_dir": str(model),
        "precision": m.precision,
        "layout": layout,
        "workload": workload,
        "batches": len(plans),
        "tokens": int(sum(int(p.lengths.sum()) for p in plans)),
        "token_budget": budget,
        "rounds": rounds,
        "threads": threads,
        "host": host_facts(),
        "rows": rows,
    }


def format_kernels(report: dict) -> str:
    """The report as a header line (folder, layout, batches, host) and a markdown table."""
    from packing.runtime.host import features_line

    h = report["host"]
    head = (
        f"{report['model_dir']} {report['precision']} {report['layout']}: "
        f"{report['batches']} batches, {report['tokens']} real tokens, median of "
        f"{report['rounds']} rounds; {h['cpu']}, {features_line(h['flags'])}, "
        f"{report['threads'] or 'all'} intra-op threads"
    )
    rows = [
        head,
        "",
        "| variant | ms per round | speed | max abs diff vs first |",
        "|---|---:|---:|---:|",
    ]
    for r in report["rows"]:
        rows.append(
            f"| {r['variant']} | {r['median_ms']:.1f} | {r['speed']:.3f}x | "
            f"{r['max_abs_diff']:.1e} |"
        )
    return "\n".join(rows)
