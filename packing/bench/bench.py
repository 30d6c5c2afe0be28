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
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from packing.model.manifest import Manifest
from packing.model.quantize import TOLERANCES
from packing.policy.attention import ATTENTION_GROUPS
from packing.runners import ModelRunner, PackRunner
from packing.runners.drive import run_online
from packing.runners.rivals import (
    PROBE_SAMPLES,
    SortedPaddingServer,
    batch_size_candidates,
    probe_batch_size,
)
from packing.runners.run_modes import (
    BENCH_MODES,
    PACKED_ONLINE,
    RIVALS,
    max_logit_diff,
    runner_for,
    settings_backend,
    solo_runner,
)
from packing.runtime.admission import DEFAULT_ADMISSION
from packing.runtime.calibrate import resolve_max_tokens
from packing.runtime.features import Features, SpanLogits
from packing.runtime.host import cpu_features, cpu_model, features_line

from .limit import measure_matmul, row_counts, useful_flops


@dataclass
class ModeResult:
    """One mode's measurements."""

    key: str
    label: str
    samples: int = 0
    seconds: float = 0.0  # wall time of the timed run
    throughput: float = 0.0  # samples / s
    latency_ms: float = 0.0  # wall time / samples, as in the spec
    efficiency: float = 0.0  # real tokens / token slots the dense layers computed
    batches: int = 0
    speedup: float | None = None  # throughput / Original's throughput
    p50_ms: float | None = None  # per-request latency (online modes)
    p99_ms: float | None = None
    max_abs_diff: float | None = None  # vs each checked request run alone (packed modes: alone
    # through the same mode's graph; the rivals: alone through original)
    layout_diff: float | None = None  # packed modes: vs the same requests alone through original
    skipped: str | None = None  # why the mode did not run
    setting: str | None = None  # the rival's setting, e.g. "bs 4"
    useful_gflops: float | None = None  # useful flops of the workload / seconds, in GFLOP/s
    limit_ratio: float | None = None  # useful_gflops / the best dense MatMul rate
    tolerance: float | None = None  # the precision's packed == solo tolerance (quantize.TOLERANCES)


@dataclass
class BenchReport:
    """Everything one ``bench`` run measured."""

    model_dir: str
    source: str
    workload: str
    samples: int
    ideal_speedup: float  # padded token slots / real tokens of the workload
    machine: dict
    settings: dict
    precision: str = "fp32"  # the folder's (manifest)
    modes: list[ModeResult] = field(default_factory=list)
    lengths: dict = field(default_factory=dict)  # mean, median, min, max of the workload
    useful_gflop: float = 0.0  # work of the workload, each request alone (limit.useful_flops)
    limit: dict = field(default_factory=dict)  # limit.MatmulLimit fields, or {"skipped": why}
    sdp_probe: dict | None = None  # batch size probe of Sorted Dynamic Padding
    summary: dict | None = None  # best packed online mode vs best rival

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def machine_info(threads: int | None, backend: str = "onnxruntime") -> dict:
    """Facts about the host that a reader of the figures needs.

    ``backend`` is the backend's ``describe()`` line (or name) the modes ran on.
    """
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "threads": threads or os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
        "backend": backend,
    }


def _hf_runner(model_dir: str, batch_size: int, threads: int | None) -> Callable:
    import torch
    from transformers import BertForQuestionAnswering
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    model = BertForQuestionAnswering.from_pretrained(model_dir).eval()

    def run(data: Sequence[Features], stats: dict) -> list[SpanLogits]:
        out: list[SpanLogits] = []
        for b in range(0, len(data), batch_size):
            chunk = data[b : b + batch_size]
            width = max(len(f) for f in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            types = torch.zeros_like(ids)
            mask = torch.zeros_like(ids)
            for r, f in enumerate(chunk):
                ids[r, : len(f)] = torch.from_numpy(f.input_ids)
                types[r, : len(f)] = torch.from_numpy(f.token_type_ids)
                mask[r, : len(f)] = 1
            with torch.inference_mode():
                res = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            for r, f in enumerate(chunk):
                out.append(
                    SpanLogits(
                        res.start_logits[r, : len(f)].numpy().copy(),
                        res.end_logits[r, : len(f)].numpy().copy(),
                    )
                )
            stats["batches"] += 1
            stats["real"] += sum(len(f) for f in chunk)
            stats["slots"] += len(chunk) * width
        return out

    return run


_DYNAMIC_SHAPE_MODES = (
    "dynamic_padding",
    "sorted_dynamic_padding",
    "best_sorted_dynamic_padding",
    "no_batching",
    "online_sorted_dynamic_padding",
)
_PROBED_MODES = ("best_sorted_dynamic_padding", "online_sorted_dynamic_padding")


def _setting(key: str, settings: dict) -> str | None:
    """The batch size a rival runs at, as shown next to its result (None for the others)."""
    if key in _PROBED_MODES:
        return f"bs {settings['sdp_batch_size']}"
    if key == "no_batching":
        return "bs 1"
    if key in ("dynamic_padding", "sorted_dynamic_padding", "hf_pipeline"):
        return f"bs {settings['batch_size']}"
    return None


def _skip_reason(key: str, settings: dict) -> str | None:
    """Why ``key`` cannot run on the settings' backend, or None when it can."""
    backend = settings.get("backend", "onnxruntime")
    if key == "hf_pipeline" and backend != "onnxruntime":
        return f"runs transformers in torch, not on the {backend} backend"
    if key == "hf_pipeline" and settings.get("precision", "fp32") != "fp32":
        return (
            f"runs transformers in float32; the folder is {settings['precision']} "
            "(compare with the fp32 folder's run)"
        )
    if key in _DYNAMIC_SHAPE_MODES and settings.get("static_shapes"):
        return (
            f"needs dynamic shapes; the {backend} backend has static shapes "
            "(every batch padded to batch_size x seq_len)"
        )
    return None


def run_mode(
    key: str,
    model_dir: str,
    data: Sequence[Features],
    settings: dict,
    reference: dict[int, SpanLogits],
    progress: bool = False,
) -> ModeResult:
    """Run one mode (warm-up first, then the timed run) and measure it."""
    res = ModeResult(key, BENCH_MODES[key], samples=len(data))
    warm = data[: min(len(data), 8)]
    latency = mode_reference = None
    res.skipped = _skip_reason(key, settings)
    if res.skipped:
        return res
    res.setting = _setting(key, settings)
    if key == "hf_pipeline":
        try:
            run = _hf_runner(model_dir, settings["batch_size"], settings["threads"])
        except ImportError as exc:
            res.skipped = f"needs torch ({exc}); pip install 'packed-bert-serve[torch]'"
            return res
        stats = {"batches": 0, "real": 0, "slots": 0}
        run(warm, dict(stats))
        t0 = time.perf_counter()
        outs = run(data, stats)
        res.seconds = time.perf_counter() - t0
        res.batches, res.efficiency = stats["batches"], stats["real"] / stats["slots"]
    else:
        runner = runner_for(key, model_dir, settings)
        try:
            if key.startswith("online_"):
                run_online(runner, warm, settings["concurrency"])
                runner.reset_stats()
                t0 = time.perf_counter()
                outs, latency = run_online(runner, data, settings["concurrency"], progress)
                res.seconds = time.perf_counter() - t0
            else:
                runner.run(warm)
                runner.reset_stats()
                t0 = time.perf_counter()
                outs = runner.run(data, progress=progress)
                res.seconds = time.perf_counter() - t0
            res.batches, res.efficiency = runner.stats.batches, runner.stats.efficiency
            if isinstance(runner, PackRunner):  # solo = each checked request alone, same graph
                mode_reference = {i: runner.run([data[i]])[0] for i in reference}
        finally:
            if isinstance(runner, (PackRunner, SortedPaddingServer)):
                runner.close()
    res.throughput = len(data) / res.seconds
    res.latency_ms = 1000.0 * res.seconds / len(data)
    if latency is not None:
        res.p50_ms = float(np.percentile(latency, 50) * 1000)
        res.p99_ms = float(np.percentile(latency, 99) * 1000)
    if mode_reference is not None:
        res.layout_diff = max_logit_diff(outs, reference)
        reference = mode_reference
    res.max_abs_diff = max_logit_diff(outs, reference)
    res.tolerance = TOLERANCES[settings.get("precision", "fp32")]
    return res


def format_line(r: ModeResult) -> str:
    """The spec's result line for one mode."""
    if r.skipped:
        return f"[{r.label}] skipped: {r.skipped}"
    return f"[{r.label}] Throughput: {r.throughput} samples/s, Latency: {r.latency_ms} ms"


def format_detail(r: ModeResult) -> str:
    """Second line: setting, efficiency, speed-up, useful GFLOP/s and its share of the
    MatMul limit, per-request latency, logit check."""
    if r.skipped:
        return ""
    parts = [r.setting] if r.setting else []
    parts += [f"efficiency {r.efficiency:.3f}", f"batches {r.batches}"]
    if r.speedup is not None:
        parts.append(f"speed-up {r.speedup:.2f}x")
    if r.useful_gflops is not None:
        share = f" ({r.limit_ratio:.2f} of the MatMul limit)" if r.limit_ratio is not None else ""
        parts.append(f"useful {r.useful_gflops:.2f} GFLOP/s{share}")
    if r.p50_ms is not None:
        parts.append(f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms")
    check = ""
    if r.tolerance is not None:
        check = f" ({'within' if r.max_abs_diff <= r.tolerance else 'ABOVE'} {r.tolerance:g})"
    parts.append(f"max abs logit diff vs solo {r.max_abs_diff:.1e}{check}")
    if r.layout_diff is not None:
        parts.append(f"vs original alone {r.layout_diff:.1e}")
    return "    " + ", ".join(parts)


def format_table(report: BenchReport) -> str:
    """Side-by-side summary of every mode (markdown). ``of limit`` is useful GFLOP/s over
    the best dense MatMul rate ("-" when the limit was not measured)."""
    rows = [
        "| mode | setting | samples/s | speed-up | efficiency | useful GFLOP/s | of limit | "
        "p50 ms | p99 ms | max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.modes:
        if r.skipped:
            rows.append(f"| {r.label} | | skipped | | | | | | | |")
            continue
        p50 = f"{r.p50_ms:.0f}" if r.p50_ms is not None else "-"
        p99 = f"{r.p99_ms:.0f}" if r.p99_ms is not None else "-"
        sp = f"{r.speedup:.2f}x" if r.speedup is not None else "-"
        useful = f"{r.useful_gflops:.2f}" if r.useful_gflops is not None else "-"
        share = f"{r.limit_ratio:.3f}" if r.limit_ratio is not None else "-"
        rows.append(
            f"| {r.label} | {r.setting or '-'} | {r.throughput:.1f} | {sp} | "
            f"{r.efficiency:.3f} | {useful} | {share} | {p50} | {p99} | "
            f"{r.max_abs_diff:.1e} |"
        )
    return "\n".join(rows)


def best_vs_rival(modes: Sequence[ModeResult]) -> dict | None:
    """``{"packed", "rival", "ratio"}``: the fastest packed online mode that ran, the fastest
    rival that ran (:data:`~packing.runners.run_modes.RIVALS`), and the first's throughput over the
    second's; None when either is missing."""
    done = [r for r in modes if not r.skipped]
    packed = [r for r in done if r.key in PACKED_ONLINE]
    rivals = [r for r in done if r.key in RIVALS]
    if not packed or not rivals:
        return None
    p = max(packed, key=lambda r: r.throughput)
    q = max(rivals, key=lambda r: r.throughput)
    return {"packed": p.key, "rival": q.key, "ratio": p.throughput / q.throughput}


def format_summary(report: BenchReport) -> str:
    """One line naming both sides of ``report.summary`` (set, see :func:`best_vs_rival`)."""
    by = {r.key: r for r in report.modes}
    p, q = by[report.summary["packed"]], by[report.summary["rival"]]
    setting = f" [{q.setting}]" if q.setting else ""
    return (
        f"best packed online mode vs best rival: {report.summary['ratio']:.2f}x = "
        f"{p.label} {p.throughput:.1f} / {q.label}{setting} {q.throughput:.1f} samples/s"
    )


def plot(report: BenchReport, path: str | Path) -> None:
    """PNG: throughput and p99 latency per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in report.modes if not r.skipped]
    labels = [r.label.replace("Pack ", "").replace("AttentionMask", "AttnMask") for r in done]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    ax1.barh(labels, [r.throughput for r in done], color="tab:blue")
    ax1.set_xlabel("samples / s")
    ax1.set_title("Throughput")
    ax1.invert_yaxis()
    p99 = [r.p99_ms if r.p99_ms is not None else 0.0 for r in done]
    ax2.barh(labels, p99, color="tab:orange")
    ax2.set_xlabel("ms (online modes only)")
    ax2.set_title("Per-request p99 latency")
    ax2.invert_yaxis()
    fig.suptitle(
        f"{report.source}, {report.workload}, {report.samples} samples, "
        f"{report.machine['threads']} threads on {report.machine['cpu']}, "
        f"backend {report.machine.get('backend', 'onnxruntime')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def length_stats(lengths: np.ndarray) -> dict:
    """Mean, median, min and max of a workload's lengths (plain floats and ints)."""
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
    }


def measure_limit(manifest: Manifest, settings: dict, enabled: bool = True) -> dict:
    """The dense MatMul limit of the settings' backend at the model's dims, as a report dict
    (:class:`~packing.bench.limit.MatmulLimit` fields plus ``skipped: None``), or
    ``{"skipped": why}`` when it is not measured: ``enabled`` False (``--no-limit``), the
    sim backend (a simulated device has no MatMul rate), or another non-ONNX Runtime backend.
    Row counts: :func:`~packing.bench.limit.row_counts` up to batch_size * seq_len. An int8
    folder's limit is the dense ``MatMulInteger`` (uint8 x int8) rate.
    """
    backend = settings.get("backend", "onnxruntime")
    if not enabled:
        return {"skipped": "not measured (--no-limit)"}
    if backend == "sim":
        return {"skipped": "the device is simulated (sim backend): no MatMul rate to measure"}
    if backend != "onnxruntime":
        return {"skipped": f"measured on onnxruntime only, not the {backend} backend"}
    d = manifest.dims
    rows = row_counts(manifest.batch_size * manifest.seq_len)
    device = settings.get("backend_options", {}).get("device", "auto")
    return {
        **asdict(
            measure_matmul(
                d.hidden_size,
                d.intermediate_size,
                rows,
                threads=settings.get("threads"),
                device=device,
                precision=manifest.precision,
            )
        ),
        "skipped": None,
    }


def _probe(model_dir: str, data: Sequence[Features], settings: dict) -> dict:
    """Run :func:`~packing.runners.rivals.probe_batch_size` for Sorted Dynamic Padding; the
    report dict ``{"samples", "candidates", "throughput": {bs: samples/s}, "best"}``."""
    runner = ModelRunner(model_dir, padding="longest", sort=True, **settings_backend(settings))
    candidates = batch_size_candidates(settings["batch_size"])
    best, rates = probe_batch_size(runner, data, candidates)
    return {
        "samples": min(PROBE_SAMPLES, len(data)),
        "candidates": candidates,
        "throughput": rates,
        "best": best,
    }


def bench(
    model_dir: str | Path,
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
    max_tokens: int | str | None = "auto",
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
    """
    unknown = [m for m in modes if m not in BENCH_MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {list(BENCH_MODES)}")
    model_dir = str(model_dir)
    manifest = Manifest.read(model_dir)
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
        max_tokens, model_dir, backend, options, manifest=manifest, progress=progress
    )
    solo = solo_runner(model_dir, settings)
    settings["static_shapes"] = solo.backend.static_shapes
    report = BenchReport(
        model_dir,
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
        f"model {manifest.source} ({model_dir}, {manifest.precision}), workload {workload}: "
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
        report.sdp_probe = _probe(model_dir, data, settings)
        settings["sdp_batch_size"] = report.sdp_probe["best"]
        rates = ", ".join(f"bs {bs} {v:.1f}" for bs, v in report.sdp_probe["throughput"].items())
        echo(
            f"Sorted Dynamic Padding batch size probe ({report.sdp_probe['samples']} requests):"
            f" {rates} samples/s; best bs {report.sdp_probe['best']}"
        )
    best_rate = report.limit.get("best_gflops")
    base = None
    for key in modes:
        r = run_mode(key, model_dir, data, settings, reference, progress)
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


def check_precisions(
    model_dirs: Sequence[str | Path], precisions: Sequence[str] | None
) -> list[str]:
    """Each folder's precision (its manifest's). ``precisions``, when given, must name them in
    order (one per folder): ValueError naming the folder and both precisions otherwise. The
    folders must share the model's shapes (ValueError otherwise), so their runs compare."""
    manifests = [Manifest.read(d) for d in model_dirs]
    found = [m.precision for m in manifests]
    if precisions is not None:
        if len(precisions) != len(model_dirs):
            raise ValueError(
                f"--precision names {len(precisions)} precisions for "
                f"{len(model_dirs)} --model-dir folders; give one per folder"
            )
        for d, want, got in zip(model_dirs, precisions, found):
            if want != got:
                raise ValueError(
                    f"{d} is prepared in {got}, not {want}: prepare it with "
                    f"'packed-bert prepare --precision {want}' or drop --precision"
                )
    first = manifests[0]
    for d, m in zip(model_dirs[1:], manifests[1:]):
        if (m.dims, m.seq_len, m.batch_size) != (first.dims, first.seq_len, first.batch_size):
            raise ValueError(
                f"{d} has other shapes than {model_dirs[0]} (dims, seq_len, "
                "batch_size): prepare both from one source with the same shapes"
            )
    return found


def best_packed(report: BenchReport) -> ModeResult | None:
    """The fastest packed mode (online or offline) of ``report`` that ran, or None."""
    packed = [
        r
        for r in report.modes
        if not r.skipped and r.key.startswith(("online_", "offline_")) and r.key not in RIVALS
    ]
    return max(packed, key=lambda r: r.throughput) if packed else None


def compare_precisions(reports: Sequence[BenchReport]) -> dict:
    """Per precision: the best packed mode, the best rival and its limit; and for every
    report after the first, its best packed throughput over the first's (e.g. int8 / fp32)."""
    out: dict = {"runs": []}
    for rep in reports:
        bp = best_packed(rep)
        rivals = [r for r in rep.modes if not r.skipped and r.key in RIVALS]
        br = max(rivals, key=lambda r: r.throughput) if rivals else None
        out["runs"].append(
            {
                "precision": rep.precision,
                "model_dir": rep.model_dir,
                "best_packed": bp.key if bp else None,
                "best_packed_throughput": bp.throughput if bp else None,
                "best_rival": br.key if br else None,
                "best_rival_throughput": br.throughput if br else None,
                "limit": rep.limit.get("best_gflops"),
            }
        )
    base = out["runs"][0]
    for run in out["runs"][1:]:
        if run["best_packed_throughput"] and base["best_packed_throughput"]:
            run["best_packed_vs_first"] = (
                run["best_packed_throughput"] / base["best_packed_throughput"]
            )
    return out


def format_precisions(cmp: dict) -> str:
    """Lines of :func:`compare_precisions`: per precision its best packed mode, best rival and
    dense limit; then each later precision's best packed over the first's."""
    lines = []
    for run in cmp["runs"]:
        lim = f", dense limit {run['limit']:.0f} G(FL)OP/s" if run["limit"] else ""
        bp = (
            f"{BENCH_MODES[run['best_packed']]} {run['best_packed_throughput']:.1f}"
            if run["best_packed"]
            else "-"
        )
        br = (
            f"{BENCH_MODES[run['best_rival']]} {run['best_rival_throughput']:.1f}"
            if run["best_rival"]
            else "-"
        )
        lines.append(f"{run['precision']}: best packed {bp} samples/s; best rival {br}{lim}")
    first = cmp["runs"][0]
    for run in cmp["runs"][1:]:
        if "best_packed_vs_first" in run:
            lines.append(
                f"best packed {run['precision']} / best packed {first['precision']}: "
                f"{run['best_packed_vs_first']:.2f}x"
            )
    return "\n".join(lines)
