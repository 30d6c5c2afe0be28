"""What one ``bench`` run measured: :class:`ModeResult` (one mode), :class:`BenchReport` (the
run, and its JSON), and the facts of the host and the workload the report carries
(:func:`machine_info`, :func:`length_stats`)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from packing.runtime.host import cpu_features, cpu_model


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
        """The whole report (every field, the modes included) as indented JSON."""
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


def length_stats(lengths: np.ndarray) -> dict:
    """Mean, median, min and max of a workload's lengths (plain floats and ints)."""
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
    }
