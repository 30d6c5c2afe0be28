"""``packed-bert bench``: the spec's six run modes plus best_fit and three baselines.

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
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from packing.model.manifest import Manifest
from packing.runtime.features import Features, SpanLogits
from packing.runtime import ModelRunner, PackRunner
from packing.runtime.backend import backend_kwargs as runtime_backend_kwargs

from .modes import MODES



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
    max_abs_diff: float | None = None  # vs each checked request run alone
    skipped: str | None = None  # why the mode did not run


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
    modes: list[ModeResult] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def machine_info(threads: int | None, backend: str = "onnxruntime") -> dict:
    """Facts about the host that a reader of the figures needs.

    ``backend`` is the backend's ``describe()`` line (or name) the modes ran on.
    """
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads or os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "platform": platform.platform(), "backend": backend}


def _max_diff(got: Sequence[SpanLogits], ref: dict[int, SpanLogits]) -> float:
    worst = 0.0
    for i, r in ref.items():
        g = got[i]
        worst = max(worst, float(np.abs(g.start_logits - r.start_logits).max()),
                    float(np.abs(g.end_logits - r.end_logits).max()))
    return worst


def run_online(runner: PackRunner, data: Sequence[Features], concurrency: int,
               progress: bool = False) -> tuple[list[SpanLogits], np.ndarray]:
    """Drive ``runner.submit`` with ``concurrency`` closed-loop clients.

    Returns results in request order and each request's latency in seconds.
    """
    n = len(data)
    results: list[SpanLogits | None] = [None] * n
    latency = np.zeros(n)
    next_i = iter(range(n))
    lock = threading.Lock()
    errors: list[BaseException] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="online requests", unit="req", leave=False)

    def client() -> None:
        while True:
            with lock:
                i = next(next_i, None)
            if i is None or errors:
                return
            t0 = time.perf_counter()
            try:
                results[i] = runner.submit(data[i]).result()
            except BaseException as exc:  # surface in the caller
                errors.append(exc)
                return
            latency[i] = time.perf_counter() - t0
            if bar is not None:
                with lock:
                    bar.update(1)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bar is not None:
        bar.close()
    if errors:
        raise errors[0]
    return results, latency  # type: ignore[return-value]


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
            chunk = data[b:b + batch_size]
            width = max(len(f) for f in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            types = torch.zeros_like(ids)
            mask = torch.zeros_like(ids)
            for r, f in enumerate(chunk):
                ids[r, :len(f)] = torch.from_numpy(f.input_ids)
                types[r, :len(f)] = torch.from_numpy(f.token_type_ids)
                mask[r, :len(f)] = 1
            with torch.inference_mode():
                res = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            for r, f in enumerate(chunk):
                out.append(SpanLogits(res.start_logits[r, :len(f)].numpy().copy(),
                                      res.end_logits[r, :len(f)].numpy().copy()))
            stats["batches"] += 1
            stats["real"] += sum(len(f) for f in chunk)
            stats["slots"] += len(chunk) * width
        return out

    return run


def backend_kwargs(settings: dict) -> dict:
    """``backend=`` plus its options for ModelRunner / PackRunner, from the bench settings.

    ``intra_op_threads`` (from ``settings["threads"]``) is passed to onnxruntime only.
    """
    return runtime_backend_kwargs(settings.get("backend", "onnxruntime"),
                                  settings.get("backend_options"), settings.get("threads"))


def _runner_for(key: str, model_dir: str, settings: dict):
    opts = backend_kwargs(settings)
    if key == "original":
        return ModelRunner(model_dir, **opts)
    if key == "dynamic_padding":
        return ModelRunner(model_dir, padding="longest", **opts)
    if key == "sorted_dynamic_padding":
        return ModelRunner(model_dir, padding="longest", sort=True, **opts)
    mode = "unpack_repack" if "unpack_repack" in key else "attention_mask"
    algorithm = key.removeprefix("online_") if key.endswith("_fit") else "first_fit"
    return PackRunner(model_dir, mode=mode, algorithm=algorithm,
                      timeout_s=settings["timeout_s"], **opts)


_DYNAMIC_SHAPE_MODES = ("dynamic_padding", "sorted_dynamic_padding")


def _skip_reason(key: str, settings: dict) -> str | None:
    """Why ``key`` cannot run on the settings' backend, or None when it can."""
    backend = settings.get("backend", "onnxruntime")
    if key == "hf_pipeline" and backend != "onnxruntime":
        return f"runs transformers in torch, not on the {backend} backend"
    if key in _DYNAMIC_SHAPE_MODES and settings.get("static_shapes"):
        return (f"needs dynamic shapes; the {backend} backend has static shapes "
                "(every batch padded to batch_size x seq_len)")
    return None


def _solo_runner(model_dir: str, settings: dict) -> ModelRunner:
    """Batches of one request, padded to its own length (to seq_len on a static-shape backend)."""
    runner = ModelRunner(model_dir, batch_size=1, padding="max_length", **backend_kwargs(settings))
    if not runner.backend.static_shapes:
        runner.padding = "longest"
    return runner


def run_mode(key: str, model_dir: str, data: Sequence[Features], settings: dict,
             reference: dict[int, SpanLogits], progress: bool = False) -> ModeResult:
    """Run one mode (warm-up first, then the timed run) and measure it."""
    res = ModeResult(key, MODES[key], samples=len(data))
    warm = data[: min(len(data), 8)]
    latency = None
    res.skipped = _skip_reason(key, settings)
    if res.skipped:
        return res
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
        runner = _runner_for(key, model_dir, settings)
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
        finally:
            if isinstance(runner, PackRunner):
                runner.close()
    res.throughput = len(data) / res.seconds
    res.latency_ms = 1000.0 * res.seconds / len(data)
    if latency is not None:
        res.p50_ms = float(np.percentile(latency, 50) * 1000)
        res.p99_ms = float(np.percentile(latency, 99) * 1000)
    res.max_abs_diff = _max_diff(outs, reference)
    return res


def format_line(r: ModeResult) -> str:
    """The spec's result line for one mode."""
    if r.skipped:
        return f"[{r.label}] skipped: {r.skipped}"
    return f"[{r.label}] Throughput: {r.throughput} samples/s, Latency: {r.latency_ms} ms"


def format_detail(r: ModeResult) -> str:
    """Second line: efficiency, speed-up, per-request latency, logit check."""
    if r.skipped:
        return ""
    parts = [f"efficiency {r.efficiency:.3f}", f"batches {r.batches}"]
    if r.speedup is not None:
        parts.append(f"speed-up {r.speedup:.2f}x")
    if r.p50_ms is not None:
        parts.append(f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms")
    parts.append(f"max abs logit diff vs solo {r.max_abs_diff:.1e}")
    return "    " + ", ".join(parts)


def format_table(report: BenchReport) -> str:
    """Side-by-side summary of every mode (markdown)."""
    rows = ["| mode | samples/s | speed-up | efficiency | p50 ms | p99 ms | max abs diff |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report.modes:
        if r.skipped:
            rows.append(f"| {r.label} | skipped | | | | | |")
            continue
        p50 = f"{r.p50_ms:.0f}" if r.p50_ms is not None else "-"
        p99 = f"{r.p99_ms:.0f}" if r.p99_ms is not None else "-"
        sp = f"{r.speedup:.2f}x" if r.speedup is not None else "-"
        rows.append(f"| {r.label} | {r.throughput:.1f} | {sp} | {r.efficiency:.3f} | {p50} | "
                    f"{p99} | {r.max_abs_diff:.1e} |")
    return "\n".join(rows)


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
    fig.suptitle(f"{report.source}, {report.workload}, {report.samples} samples, "
                 f"{report.machine['threads']} threads on {report.machine['cpu']}, "
                 f"backend {report.machine.get('backend', 'onnxruntime')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench(model_dir: str | Path, data: Sequence[Features], workload: str,
          modes: Sequence[str] = tuple(MODES), threads: int | None = None,
          concurrency: int | None = None, timeout_s: float = 0.01, check_samples: int = 16,
          progress: bool = True, echo: Callable[[str], None] = print,
          backend: str = "onnxruntime", backend_options: dict | None = None) -> BenchReport:
    """Run ``modes`` on ``data`` and return the report; prints each result as it lands.

    ``backend`` / ``backend_options`` choose the runtime of every mode and of the solo
    reference runs (e.g. ``"sim", {"profile": "ipu"}``); the header and
    ``report.machine["backend"]`` say which one ran.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {list(MODES)}")
    model_dir = str(model_dir)
    manifest = Manifest.read(model_dir)
    lengths = np.array([len(f) for f in data])
    settings = {"threads": threads, "timeout_s": timeout_s, "batch_size": manifest.batch_size,
                "seq_len": manifest.seq_len, "max_valid_num": manifest.max_valid_num,
                "concurrency": concurrency or 2 * manifest.max_valid_num,
                "backend": backend, "backend_options": dict(backend_options or {})}
    solo = _solo_runner(model_dir, settings)
    settings["static_shapes"] = solo.backend.static_shapes
    report = BenchReport(model_dir, manifest.source, workload, len(data),
                         float(len(data) * manifest.seq_len / lengths.sum()),
                         machine_info(threads, solo.backend.describe()), settings)
    echo(f"model {manifest.source} ({model_dir}), workload {workload}: {len(data)} samples, "
         f"mean length {lengths.mean():.1f} of {manifest.seq_len}, "
         f"ideal speed-up {report.ideal_speedup:.2f}x")
    echo(f"machine: {report.machine['cpu']}, {report.machine['threads']} threads, "
         f"onnxruntime {report.machine['onnxruntime']}; backend {report.machine['backend']}")
    rng = np.random.default_rng(0)
    check = sorted(rng.choice(len(data), size=min(check_samples, len(data)), replace=False))
    reference = {int(i): solo.run([data[i]])[0] for i in check}
    del solo
    base = None
    for key in modes:
        r = run_mode(key, model_dir, data, settings, reference, progress)
        if key == "original" and not r.skipped:
            base = r.throughput
        if base and not r.skipped:
            r.speedup = r.throughput / base
        report.modes.append(r)
        echo(format_line(r))
        detail = format_detail(r)
        if detail:
            echo(detail)
    echo("")
    echo(format_table(report))
    return report
