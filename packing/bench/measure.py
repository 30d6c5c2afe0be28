"""Running one mode of ``bench`` and the measurements around it: :func:`run_mode` (warm-up,
timed run, the logit check against solo runs), which modes a backend cannot run and the
rivals' settings, the HF Pipeline baseline (torch, imported only when it runs), the batch
size probe of Sorted Dynamic Padding, and the dense MatMul limit (:func:`measure_limit`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np

from packing.model.manifest import Manifest
from packing.model.prepared import ModelLike
from packing.model.quantize import TOLERANCES
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
    max_logit_diff,
    runner_for,
    settings_backend,
)
from packing.runtime.features import Features, SpanLogits

from .limit import measure_matmul, row_counts
from .report import ModeResult


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
    model_dir: ModelLike,
    data: Sequence[Features],
    settings: dict,
    reference: dict[int, SpanLogits],
    progress: bool = False,
) -> ModeResult:
    """Run one mode (warm-up first, then the timed run) and measure it. ``model_dir``: a path
    or a :class:`~packing.model.prepared.PreparedModel`, which the mode's runner takes as it
    is."""
    res = ModeResult(key, BENCH_MODES[key], samples=len(data))
    warm = data[: min(len(data), 8)]
    latency = mode_reference = None
    res.skipped = _skip_reason(key, settings)
    if res.skipped:
        return res
    res.setting = _setting(key, settings)
    if key == "hf_pipeline":
        try:
            run = _hf_runner(str(model_dir), settings["batch_size"], settings["threads"])
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


def _probe(model_dir: ModelLike, data: Sequence[Features], settings: dict) -> dict:
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
