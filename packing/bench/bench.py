"""``packed-bert bench``: the spec's six run modes plus best_fit, against the rivals of packing.

Every mode runs the same workload on the same weights in one process, so the printed
ratios compare like with like. Throughput is samples / wall time and, as in the spec,
``Latency`` is wall time / samples. Online modes are driven by ``concurrency`` client
threads in a closed loop (each sends its next request when the last one is answered),
enough to keep batches full, and also report per-request p50 / p99 latency.

``backend`` picks the runtime every mode runs on (see :mod:`packing.runtime.backend`):
``onnxruntime`` (the default), or ``sim``, a simulated accelerator of a given speed
(:mod:`packing.runtime.sim`), which measures the packing and serving front end against
a known device time. Under a static-shape backend the dynamic-padding modes cannot run and
are skipped; the HF Pipeline baseline runs torch, not the backend, and is skipped under sim.

Packing is compared with every rival at its best setting (:mod:`packing.runners.rivals`):
Sorted Dynamic Padding at the batch size a short probe finds fastest, no batching at all,
and an online sorted-dynamic-padding server. The run ends with one line: the best packed
online mode against the best rival. The compute limit (:mod:`packing.bench.limit`), the
backend's dense MatMul rate at the model's shapes, is measured in the same run, and every
mode reports its useful GFLOP/s (the work each request needs alone, over its wall time)
and that rate's share of the limit.

The package, by job: :mod:`~packing.bench.report` (:class:`ModeResult`, :class:`BenchReport`
and its JSON, the host facts), :mod:`~packing.bench.measure` (running one mode, the batch size
probe, the MatMul limit), :mod:`~packing.bench.formatting` (the lines, the table, the summary,
the plot) and :mod:`~packing.bench.precisions` (one run over folders of several precisions);
this module runs them in order (:func:`bench`) and re-exports their public names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.attention import ATTENTION_GROUPS
from packing.runners.run_modes import BENCH_MODES, settings_backend, solo_runner
from packing.runtime.admission import DEFAULT_ADMISSION
from packing.runtime.calibrate import resolve_max_tokens
from packing.runtime.features import Features
from packing.runtime.host import features_line
from packing.runtime.knobs import DEFAULT_MAX_TOKENS

from .formatting import (
    best_vs_rival,
    format_detail,
    format_line,
    format_summary,
    format_table,
    plot,
)
from .limit import useful_flops
from .measure import _PROBED_MODES, _probe, _skip_reason, measure_limit, run_mode
from .precisions import best_packed, check_precisions, compare_precisions, format_precisions
from .report import BenchReport, ModeResult, length_stats, machine_info

__all__ = [
    "BenchReport",
    "ModeResult",
    "bench",
    "best_packed",
    "best_vs_rival",
    "check_precisions",
    "compare_precisions",
    "format_detail",
    "format_line",
    "format_precisions",
    "format_summary",
    "format_table",
    "length_stats",
    "machine_info",
    "measure_limit",
    "plot",
    "run_mode",
]


def bench(
    model_dir: ModelLike,
    data: Sequence[Features],
    workload: str,
    modes: Sequence[str] = tuple(BENCH_MODES),
    threads: int | None = None,
    concurrency: int | None = None,
    batch_wait_timeout_s: float = DEFAULT_ADMISSION.batch_wait_timeout_s,
    check_samples: int = 16,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    limit: bool = True,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
) -> BenchReport:
    """Run ``modes`` on ``data`` and return the report; prints each result as it lands.

    ``max_tokens`` is the packed modes' token budget (``"auto"``: calibrated for this
    backend, :func:`~packing.runtime.calibrate.resolve_max_tokens`; an int pins it; None is
    the full batch); ``attention_groups`` caps the unpack/repack attention width groups (1 =
    rows as wide as each batch's longest sequence). Both are printed in the header.

    ``backend`` / ``backend_options`` choose the runtime of every mode and of the solo
    reference runs (e.g. ``"sim", {"profile": "ipu"}``); the header and
    ``report.machine["backend"]`` say which one ran. ``limit``: measure the dense MatMul
    rate (:func:`measure_limit`; skipped under sim). When a best-batch-size rival is among
    ``modes``, Sorted Dynamic Padding's batch size is probed once first and used by both.
    Ends with the best packed online mode against the best rival (:func:`format_summary`).
    ``model_dir``: a path or a :class:`~packing.model.prepared.PreparedModel`, opened once
    for every mode.
    """
    unknown = [m for m in modes if m not in BENCH_MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {list(BENCH_MODES)}")
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    lengths = np.array([len(f) for f in data])
    settings = {
        "threads": threads,
        "batch_wait_timeout_s": batch_wait_timeout_s,
        "batch_size": manifest.batch_size,
        "seq_len": manifest.seq_len,
        "max_valid_num": manifest.max_valid_num,
        "concurrency": concurrency or 2 * manifest.max_valid_num,
        "backend": backend,
        "backend_options": dict(backend_options or {}),
        "attention_groups": attention_groups,
        "precision": manifest.precision,
    }
    # the packed modes' token budget, resolved once ("auto": calibrated for this backend)
    options = {k: v for k, v in settings_backend(settings).items() if k != "backend"}
    settings["max_tokens"], cal = resolve_max_tokens(
        max_tokens, model, backend, options, progress=progress
    )
    solo = solo_runner(model, settings)
    settings["static_shapes"] = solo.backend.static_shapes
    report = BenchReport(
        str(model),
        manifest.source,
        workload,
        len(data),
        float(len(data) * manifest.seq_len / lengths.sum()),
        machine_info(threads, solo.backend.describe()),
        settings,
        lengths=length_stats(lengths),
        useful_gflop=useful_flops(lengths, manifest.dims) / 1e9,
        precision=manifest.precision,
    )
    st = report.lengths
    echo(
        f"model {manifest.source} ({model}, {manifest.precision}), workload {workload}: "
        f"{len(data)} samples, "
        f"lengths mean {st['mean']:.1f}, median {st['median']:g}, min {st['min']}, "
        f"max {st['max']} of {manifest.seq_len}, ideal speed-up {report.ideal_speedup:.2f}x"
    )
    echo(
        f"machine: {report.machine['cpu']} ({features_line(report.machine['cpu_features'])}), "
        f"{report.machine['threads']} threads, onnxruntime {report.machine['onnxruntime']}; "
        f"backend {report.machine['backend']}"
    )
    budget = settings["max_tokens"] or manifest.batch_size * manifest.seq_len
    how = (
        f"calibrated ({'cached' if cal.from_cache else 'measured now'}, {cal.rule})"
        if cal
        else "pinned"
        if max_tokens is not None
        else "full batch"
    )
    echo(f"packed modes: token budget {budget} ({how}), attention groups <= {attention_groups}")
    echo(
        f"useful work: {report.useful_gflop:.2f} GFLOP "
        f"({report.useful_gflop / lengths.sum():.3g} GFLOP per token, each request alone)"
    )
    report.limit = measure_limit(manifest, settings, limit)
    if report.limit["skipped"]:
        echo(f"dense MatMul limit: {report.limit['skipped']}")
    else:
        lim = report.limit
        each = ", ".join(f"{r['rows']} rows {r['gflops']:.1f}" for r in lim["rates"])
        op, unit = (
            ("MatMulInteger u8 x s8", "GOP/s")
            if lim.get("precision") == "int8"
            else ("MatMul", "GFLOP/s")
        )
        echo(
            f"dense {op} limit ({lim['provider']}, {lim['threads'] or 'default'} threads, "
            f"H {lim['hidden']}, I {lim['intermediate']}): {each} {unit}; best "
            f"{lim['best_gflops']:.1f} {unit}"
        )
    rng = np.random.default_rng(0)
    check = sorted(rng.choice(len(data), size=min(check_samples, len(data)), replace=False))
    reference = {int(i): solo.run([data[i]])[0] for i in check}
    del solo
    if any(m in _PROBED_MODES and not _skip_reason(m, settings) for m in modes):
        report.sdp_probe = _probe(model, data, settings)
        settings["sdp_batch_size"] = report.sdp_probe["best"]
        rates = ", ".join(f"bs {bs} {v:.1f}" for bs, v in report.sdp_probe["throughput"].items())
        echo(
            f"Sorted Dynamic Padding batch size probe ({report.sdp_probe['samples']} requests):"
            f" {rates} samples/s; best bs {report.sdp_probe['best']}"
        )
    best_rate = report.limit.get("best_gflops")
    base = None
    for key in modes:
        r = run_mode(key, model, data, settings, reference, progress)
        if key == "original" and not r.skipped:
            base = r.throughput
        if not r.skipped:
            if base:
                r.speedup = r.throughput / base
            r.useful_gflops = report.useful_gflop / r.seconds
            if best_rate:
                r.limit_ratio = r.useful_gflops / best_rate
        report.modes.append(r)
        echo(format_line(r))
        detail = format_detail(r)
        if detail:
            echo(detail)
    echo("")
    echo(format_table(report))
    report.summary = best_vs_rival(report.modes)
    if report.summary:
        echo("")
        echo(format_summary(report))
    return report
