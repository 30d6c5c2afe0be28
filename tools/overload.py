"""``python -m tools overload``: the served app past its device's capacity, per dispatch setting.

One device-bound run per ``dispatch`` value (``merge``: the packer's dispatch step packs
everything admitted while the runner was busy into the next plan; ``per_batch``: each batch
``@serve.batch`` admitted becomes its own plans, as a plain batch function would), each in its
own ``serve run`` of ``--config`` (default ``configs/sim.yaml``) with:

* the ``sim`` device with static shapes (``--sim-profile slow``) at ``--tokens-per-s``, so a
  plan costs its full ``batch_size x seq_len`` slots whatever it holds;
* one PlanExecutor replica taking one plan at a time (one batch on the device);
* admission with ``--batch-wait-timeout-s`` (5 ms).

Capacity is then ``max_valid_num`` windows per full batch over its device time
(``batch_size x seq_len / tokens_per_s``). The load is open loop (Poisson arrivals at
``--rate``) of single short questions for ``--seconds``, driven and checked by
:func:`tools.soak.soak` (every answer against its solo answer: ``crossed`` must be 0).
The report puts the settings side by side: goodput (correct answers/s) and its ratio to the
capacity, statuses, latency, and what the packer did (windows per admitted batch, per plan).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from packing.model.prepared import PreparedModel
from packing.runtime.dispatch import DISPATCH

from .ceiling import ServeRun, free_port, resolve_config, rewrite_app_config, serve_env
from .loadtest import _get_json
from .soak import soak

__all__ = ["format_overload", "overload", "overload_config"]

COUNTERS = (
    "plans",
    "sequences",
    "admitted_batches",
    "admitted_windows",
    "merged_plans",
    "full_plans",
    "budget_plans",
    "rest_plans",
    "dropped",
)


def overload_config(
    cfg: dict,
    port: int,
    dispatch: str,
    profile: str,
    tokens_per_s: float,
    batch_wait_timeout_s: float,
) -> dict:
    """A copy of Serve config ``cfg`` for one overload run: on ``port``, ``device: sim`` with
    ``profile`` at ``tokens_per_s``, one PlanExecutor replica taking one plan at a time, the
    Packer with ``dispatch`` and ``batch_wait_timeout_s``."""
    out = rewrite_app_config(cfg, port)
    app = out["applications"][0]
    app["args"]["device"] = "sim"
    app["args"]["sim"] = {"profile": profile, "tokens_per_s": tokens_per_s}
    deps = {d["name"]: d for d in app.setdefault("deployments", [])}
    for name in ("Packer", "PlanExecutor"):
        if name not in deps:
            deps[name] = {"name": name}
            app["deployments"].append(deps[name])
    packer = deps["Packer"].setdefault("user_config", {})
    packer.update(dispatch=dispatch, batch_wait_timeout_s=batch_wait_timeout_s)
    runner = deps["PlanExecutor"]
    runner.pop("autoscaling_config", None)
    runner.update(num_replicas=1, max_ongoing_requests=1)
    return out


def _delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in COUNTERS}


def overload(
    config: str | Path = "configs/sim.yaml",
    dispatches: Sequence[str] = DISPATCH,
    rate: float = 30.0,
    seconds: float = 30.0,
    profile: str = "slow",
    tokens_per_s: float = 2048.0,
    batch_wait_timeout_s: float = 0.005,
    workload: str = "short",
    concurrency: int = 512,
    health_timeout_s: float = 300.0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the overload drill once per ``dispatches`` entry; the JSON-able report.

    Raises AppNotHealthy (with the serve log's tail) when an app does not come up."""
    base = yaml.safe_load(resolve_config(config).read_text())
    n = int(round(rate * seconds))
    rows = []
    work = Path(tempfile.mkdtemp(prefix="packed-bert-overload-"))
    for dispatch in dispatches:
        port = free_port()
        cfg = overload_config(base, port, dispatch, profile, tokens_per_s, batch_wait_timeout_s)
        path = work / f"{dispatch}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        run = ServeRun(path, work / f"{dispatch}.log", serve_env({}))
        url = f"http://127.0.0.1:{port}"
        run.start()
        try:
            waited = run.wait_healthy(url, health_timeout_s)
            echo(f"[{dispatch}] healthy on :{port} after {waited:.0f} s (log {run.log_path})")
            stats = _get_json(url + "/v1/stats")
            # the folder the app prepared (or found) at start, read once for the run below
            model = PreparedModel.open(cfg["applications"][0]["args"]["model_dir"])
            before = stats["packer"]
            report = soak(
                url,
                model,
                workload,
                n,
                concurrency,
                distinct=min(n, 500),
                slow_s=seconds,
                rate=rate,
                progress=progress,
                echo=echo,
                backend="sim",
                backend_options={"profile": "fast"},
            )
            after = _get_json(url + "/v1/stats")["packer"]
        finally:
            run.stop()
        d = _delta(after, before)
        m = model.manifest
        full_s = m.batch_size * m.seq_len / tokens_per_s  # static shapes: every plan's cost
        capacity = after["knobs"]["max_valid_num"] or m.max_valid_num
        rows.append(
            {
                "dispatch": dispatch,
                "offered": n,
                "ok": report["ok"],
                "crossed": report["crossed"],
                "lost": report["lost"],
                "failed": report["failed"],
                "failed_by_status": report["failed_by_status"],
                "seconds": report["seconds"],
                "goodput": report["ok_per_s"],
                "capacity": capacity / full_s,
                "p50_ms": report["p50_ms"],
                "p99_ms": report["p99_ms"],
                "mean_admitted": d["admitted_windows"] / d["admitted_batches"]
                if d["admitted_batches"]
                else 0.0,
                "mean_sequences": d["sequences"] / d["plans"] if d["plans"] else 0.0,
                "plans": d["plans"],
                "merged_plans": d["merged_plans"],
                "admission": after["admission"],
            }
        )
    return {
        "settings": {
            "config": str(config),
            "rate": rate,
            "seconds": seconds,
            "profile": profile,
            "tokens_per_s": tokens_per_s,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "workload": workload,
            "concurrency": concurrency,
        },
        "rows": rows,
        "logs": str(work),
    }


def format_overload(report: dict) -> str:
    """The report as a Markdown table, goodput as a ratio to capacity and to the first row."""
    s = report["settings"]
    rows = report["rows"]
    lines = [
        f"sim {s['profile']} at {s['tokens_per_s']:g} token slots/s, 1 runner replica x 1 "
        f"plan; open loop {s['rate']:g} requests/s for {s['seconds']:g} s ({s['workload']} "
        f"single questions); batch_wait_timeout_s {s['batch_wait_timeout_s']}",
        "",
        "| dispatch | offered | ok | crossed | lost | failed (by status) | goodput /s | "
        "x capacity | x first row | p50 ms | p99 ms | windows / admitted batch | "
        "windows / plan | plans |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = rows[0]["goodput"] if rows else 0.0
    for r in rows:
        status = json.dumps(r["failed_by_status"]) if r["failed_by_status"] else "-"
        rel = f"{r['goodput'] / first:.2f}x" if first else "-"
        lines.append(
            f"| {r['dispatch']} | {r['offered']} | {r['ok']} | {r['crossed']} | "
            f"{r['lost']} | {r['failed']} {status} | {r['goodput']:.1f} | "
            f"{r['goodput'] / r['capacity']:.2f}x | {rel} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['mean_admitted']:.2f} | {r['mean_sequences']:.2f} "
            f"| {r['plans']} |"
        )
    if rows:
        lines += ["", f"capacity: {rows[0]['capacity']:.1f} windows/s (full plans)"]
    return "\n".join(lines)
