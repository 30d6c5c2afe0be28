"""``python -m tools threads``: ONNX Runtime thread settings against replicas on this host.

A served app runs one or more runner replicas (processes) on the same cores as Serve's proxy,
Ingress and Packer. This drill measures, in-process and without Serve, what the thread
settings of a runner do when it has the cores to itself and when another runner shares them:
each **layout** ``PxT[:spin|:nospin]`` runs ``P`` processes at once, each a ``PackRunner``
(``--mode``, default unpack_repack) with ``T`` intra-op threads, ORT's idle threads spinning
(``spin``, ORT's default) or not (``nospin``; ``session.intra_op.allow_spinning`` 0). Every
process packs the same features (``--workload``, ``--samples``) offline, after a warm-up, and
starts when all have warmed up (a barrier). Reported per layout: sequences/s of all processes
together (samples x P over the slowest process's wall time), CPU ms per sequence, and the
ratio to the first layout.

Every layout packs with the same token budget (``--max-tokens``; ``auto``: the folder's
calibrated budget for ``T`` threads of the first layout, read once), so plans are equal and
only the threads differ. Prints the host's CPU model and features (AVX2, AVX-512F, VNNI). A
benchmark: run it on a quiet host.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import re
import time
from dataclasses import dataclass

from packing.model.prepared import ModelLike, PreparedModel
from packing.runtime.host import features_line

__all__ = ["Layout", "format_threads", "parse_layout", "threads"]

_LAYOUT = re.compile(r"^(\d+)x(\d+)(?::(spin|nospin))?$")


@dataclass(frozen=True)
class Layout:
    """``processes`` runners at once, each with ``threads`` intra-op threads; ``spin`` None is
    ORT's default (spinning)."""

    processes: int
    threads: int
    spin: bool | None = None

    @property
    def name(self) -> str:
        tail = "" if self.spin is None else (":spin" if self.spin else ":nospin")
        return f"{self.processes}x{self.threads}{tail}"


def parse_layout(text: str) -> Layout:
    """``PxT``, ``PxT:spin`` or ``PxT:nospin`` -> :class:`Layout`; ValueError otherwise (P, T
    >= 1)."""
    m = _LAYOUT.match(text.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(
            f"a layout is PxT[:spin|:nospin] with P, T >= 1, e.g. 2x1 or 1x2:nospin; got {text!r}"
        )
    spin = None if m.group(3) is None else m.group(3) == "spin"
    return Layout(int(m.group(1)), int(m.group(2)), spin)


def _child(
    model: PreparedModel,
    mode: str,
    workload: str,
    samples: int,
    warmup: int,
    max_tokens: int | None,
    layout: Layout,
    barrier,
    out,
) -> None:
    from packing.runners.pack_runner import PackRunner
    from packing.runners.workloads import load_workload

    m = model.manifest
    feats = load_workload(
        workload, samples, model, m.seq_len, m.dims.vocab_size, m.dims.type_vocab_size
    )
    opts: dict = {"intra_op_threads": layout.threads}
    if layout.spin is not None:
        opts["spin"] = layout.spin
    with PackRunner(model, mode=mode, max_tokens=max_tokens, **opts) as runner:
        runner.run(feats[:warmup])
        barrier.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        runner.run(feats)
        out.put((time.perf_counter() - t0, time.process_time() - c0, len(feats)))


def run_layout(
    model_dir: ModelLike,
    layout: Layout,
    *,
    mode: str,
    workload: str,
    samples: int,
    warmup: int,
    max_tokens: int | None,
    timeout_s: float = 1800.0,
) -> dict:
    """One layout's processes, started together; ``{"layout", "sequences_per_s",
    "cpu_ms_per_sequence", "walls_s"}``. ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened here and sent to every process."""
    model = PreparedModel.open(model_dir)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(layout.processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            args=(model, mode, workload, samples, warmup, max_tokens, layout, barrier, out),
        )
        for _ in range(layout.processes)
    ]
    for p in procs:
        p.start()
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < len(procs):
            try:
                got.append(out.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    barrier.abort()  # the others stop waiting for the one that died
                    why = f"exited with {dead}" if dead else f"ran past {timeout_s:g} s"
                    raise RuntimeError(
                        f"layout {layout.name}: a process {why} (its traceback is above)"
                    ) from None
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"layout {layout.name}: a process exited with {bad}")
    walls = [w for w, _, _ in got]
    done = sum(n for _, _, n in got)
    cpu = sum(c for _, c, _ in got)
    return {
        "layout": layout.name,
        "processes": layout.processes,
        "threads": layout.threads,
        "spin": layout.spin,
        "sequences_per_s": done / max(walls),
        "cpu_ms_per_sequence": 1e3 * cpu / done,
        "walls_s": walls,
    }


def threads(
    model_dir: ModelLike,
    layouts: list[str | Layout],
    *,
    mode: str = "unpack_repack",
    workload: str = "seed",
    samples: int = 1500,
    warmup: int = 200,
    max_tokens: str | int | None = "auto",
    echo=print,
) -> dict:
    """Every layout in turn (see the module docstring); the JSON-able report. ``model_dir``: a
    path or a :class:`~packing.model.prepared.PreparedModel`, opened once for every layout."""
    import numpy as np

    from packing.runtime.calibrate import resolve_max_tokens
    from packing.runtime.host import host_facts

    parsed = [x if isinstance(x, Layout) else parse_layout(x) for x in layouts]
    if not parsed:
        raise ValueError("give at least one layout")
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    if max_tokens == "auto":
        budget, _ = resolve_max_tokens(
            "auto", model, "onnxruntime", {"intra_op_threads": parsed[0].threads}
        )
    else:
        budget = None if max_tokens is None else int(max_tokens)
    rows = []
    for layout in parsed:
        echo(f"[threads] {layout.name} ...")
        rows.append(
            run_layout(
                model,
                layout,
                mode=mode,
                workload=workload,
                samples=samples,
                warmup=min(warmup, samples),
                max_tokens=budget,
            )
        )
    base = rows[0]["sequences_per_s"]
    for r in rows:
        r["ratio"] = r["sequences_per_s"] / base if base else None
    return {
        "host": host_facts(numpy=np.__version__),
        "settings": {
            "model_dir": str(model.folder.resolve()),
            "precision": manifest.precision,
            "task": getattr(getattr(manifest, "task", None), "task", "qa"),
            "mode": mode,
            "workload": workload,
            "samples": samples,
            "warmup": warmup,
            "max_tokens": budget,
            "cores": os.cpu_count(),
        },
        "rows": rows,
    }


def format_threads(report: dict) -> str:
    """The table, with the host and settings above it."""
    h, s = report["host"], report["settings"]
    flags = features_line(h["flags"])
    lines = [
        f"host: {h['date']}  {h['cpu']}  {h['cores']} cores  {flags}",
        f"{s['model_dir']} ({s['task']}, {s['precision']}), {s['mode']}, workload "
        f"{s['workload']}, {s['samples']} sequences per process, budget "
        f"{s['max_tokens']} tokens",
        "",
        "layout (processes x threads)   sequences/s   CPU ms/sequence   vs first",
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['layout']:<30} {r['sequences_per_s']:>11.1f}   "
            f"{r['cpu_ms_per_sequence']:>15.2f}   {r['ratio']:>7.2f}x"
        )
    return "\n".join(lines)
