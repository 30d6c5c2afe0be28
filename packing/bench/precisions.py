"""One ``bench`` over folders of several precisions (e.g. fp32 and int8 of one model):
the folders' check before the runs, the best packed mode of each run, and the comparison
of the runs with its lines."""

from __future__ import annotations

from collections.abc import Sequence

from packing.model.prepared import ModelLike, PreparedModel
from packing.runners.run_modes import BENCH_MODES, RIVALS

from .report import BenchReport, ModeResult


def check_precisions(
    model_dirs: Sequence[ModelLike], precisions: Sequence[str] | None
) -> list[str]:
    """Each folder's precision (its manifest's; a path is opened here, a
    :class:`~packing.model.prepared.PreparedModel` is not read again). ``precisions``, when
    given, must name them in order (one per folder): ValueError naming the folder and both
    precisions otherwise. The folders must share the model's shapes (ValueError otherwise), so
    their runs compare."""
    manifests = [PreparedModel.open(d).manifest for d in model_dirs]
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
