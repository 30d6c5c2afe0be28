"""The text and the plot of a ``bench`` run: each mode's result lines, the side-by-side
table, the best packed online mode against the best rival, and the PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from packing.runners.run_modes import PACKED_ONLINE, RIVALS

from .report import BenchReport, ModeResult


def format_line(r: ModeResult) -> str:
    """The spec's result line for one mode (``[label] skipped: why`` when it did not run)."""
    if r.skipped:
        return f"[{r.label}] skipped: {r.skipped}"
    return f"[{r.label}] Throughput: {r.throughput} samples/s, Latency: {r.latency_ms} ms"


def format_detail(r: ModeResult) -> str:
    """Second line: setting, efficiency, speed-up, useful GFLOP/s and its share of the
    MatMul limit, per-request latency, logit check ("" for a skipped mode)."""
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
    """Write a PNG to ``path``: throughput and p99 latency per mode that ran (p99 0 for the
    offline modes), titled with the source, workload, threads, CPU and backend. Needs
    matplotlib (imported here, Agg backend)."""
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
