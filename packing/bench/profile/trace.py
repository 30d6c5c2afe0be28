"""Reading an ONNX Runtime profiler trace: its operator runs (:class:`OpRun`) and its model
runs' wall times, the warm-up runs left out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OpRun:
    """One operator run from a profiler trace."""

    node: str
    op: str
    dur_us: int
    input_shapes: tuple[tuple[int, ...], ...]


def _shapes(args: dict) -> tuple[tuple[int, ...], ...]:
    out = []
    for entry in args.get("input_type_shape", []):
        for shape in entry.values():
            out.append(tuple(int(x) for x in shape))
    return tuple(out)


def read_trace(path: str | Path, skip_runs: int = 1) -> tuple[list[OpRun], list[int]]:
    """The operator runs and the model runs' wall times (microseconds) of an ONNX Runtime
    profiler trace, without the first ``skip_runs`` model runs (warm-up). An operator run
    belongs to the model run whose time span holds its start."""
    events = json.loads(Path(path).read_text())
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    counted = runs[skip_runs:]
    ops = []
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(begin <= e["ts"] <= end for begin, end in counted):
            continue
        ops.append(
            OpRun(
                node=e["name"].removesuffix("_kernel_time"),
                op=e["args"]["op_name"],
                dur_us=int(e["dur"]),
                input_shapes=_shapes(e["args"]),
            )
        )
    return ops, [end - begin for begin, end in counted]
