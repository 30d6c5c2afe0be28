"""A ceiling run: its :class:`Settings`, and :func:`run_ceiling`, which starts every app
(a fresh ``serve run`` per app and round, or all co-hosted in one), measures each body kind
against it and assembles the report."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from packing.jobs.local_cluster import free_port

from .load import LENGTH_RANGE, POOL_SEED, closed_loop, encode_bodies, load_tokenizer, question_pool
from .procs import server_pids, tree_cpu
from .report import (
    Row,
    add_ratios,
    format_header,
    format_summary,
    format_table,
    make_row,
    round_summary,
)
from .servers import (
    APPS,
    REPO,
    AppNotHealthy,
    ServeRun,
    app_model,
    app_routes,
    cohosted_config,
    floor_config,
    rewrite_app_config,
    serve_env,
)


@dataclass
class Settings:
    """What a ceiling run does (see :func:`run_ceiling`)."""

    apps: tuple[str, ...] = APPS
    config: Path = REPO / "configs" / "sim.yaml"
    concurrency: int = 64
    duration_s: float | None = 20.0
    requests: int | None = None
    warmup_s: float = 2.0
    list_size: int = 32
    env: dict = field(default_factory=dict)
    health_timeout_s: float = 300.0
    grace_s: float = 20.0
    progress: bool = True
    floor_max_ongoing: int | None = None  # echo/chain max_ongoing_requests (None: Serve default)
    rounds: int = 1  # times every app is measured, the order reversed in every other round
    cohosted: bool = False  # all apps in one serve run (else a fresh serve run per app and round)

    def __post_init__(self) -> None:
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, got {self.rounds!r}")

    @property
    def by_round(self) -> bool:
        """Whether rows carry their round and the report a per-round summary."""
        return self.rounds > 1 or self.cohosted


def _bodies_for(settings: Settings, app_cfg: dict | None) -> tuple[list[dict], str]:
    model_dir, source = app_model(app_cfg) if app_cfg else (None, None)
    tok = load_tokenizer(model_dir, source)
    pool = question_pool(tok)
    kind = "tokenizer" if tok is not None else "fixed English sentences (no tokenizer)"
    lo, hi = LENGTH_RANGE
    return pool, f"{len(pool)} questions of {lo}-{hi} tokens ({kind}, seed {POOL_SEED})"


def _measure(
    run: ServeRun,
    url: str,
    name: str,
    body_kind: str,
    items: int,
    payloads: list[bytes],
    settings: Settings,
    label: str,
    echo: Callable[[str], None],
) -> Row:
    """One measured phase of app ``name`` at ``url`` with ``payloads`` (``items`` questions
    each), the server CPU read from ``run``'s process tree."""
    m = asyncio.run(
        closed_loop(
            url,
            payloads,
            settings.concurrency,
            settings.warmup_s,
            settings.duration_s,
            settings.requests,
            lambda: tree_cpu(run.pid),
            settings.progress,
            f"{label} {body_kind}",
        )
    )
    echo(
        f"[{label} {body_kind}] {m.ok} answered in {m.seconds:.1f} s "
        f"(warm-up {m.warmup_s:.1f} s), {len(server_pids(run.pid))} server processes"
    )
    return make_row(name, body_kind, items, m)


def _measure_app(
    name: str,
    cfg: dict,
    settings: Settings,
    work: Path,
    bodies: list[tuple[str, int, list[bytes]]],
    echo: Callable[[str], None],
    label: str,
) -> list[Row]:
    """Start one app, measure each body kind against it (progress lines led by ``label``),
    stop it."""
    port = free_port()
    cfg = (
        rewrite_app_config(cfg, port)
        if name == "app"
        else floor_config(name, port, settings.floor_max_ongoing)
    )
    stem = label.replace(" ", "-")
    cfg_path = work / f"{stem}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = ServeRun(cfg_path, work / f"{stem}.log", serve_env(settings.env))
    url = f"http://127.0.0.1:{port}"
    rows = []
    run.start()
    try:
        waited = run.wait_healthy(url, settings.health_timeout_s)
        echo(f"[{label}] healthy on :{port} after {waited:.0f} s (log {run.log_path})")
        for body_kind, items, payloads in bodies:
            rows.append(_measure(run, url, name, body_kind, items, payloads, settings, label, echo))
    finally:
        run.stop(settings.grace_s)
    return rows


def _measure_rounds(
    app_cfg: dict | None,
    order: Sequence[str],
    settings: Settings,
    work: Path,
    kinds: Callable[[str], list[tuple[str, int, list[bytes]]]],
    echo: Callable[[str], None],
) -> list[Row]:
    """Start the apps of ``order`` in one ``serve run`` and measure them in
    ``settings.rounds`` rounds (:func:`round_order`: drift over a round weighs on both ends
    alike); stop it. Rows in the order measured, each with its round."""
    port = free_port()
    cfg = cohosted_config(app_cfg, order, port, settings.floor_max_ongoing)
    cfg_path = work / "cohosted.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = ServeRun(cfg_path, work / "cohosted.log", serve_env(settings.env))
    base = f"http://127.0.0.1:{port}"
    urls = {name: base + prefix for name, prefix in app_routes(cfg, order).items()}
    rows: list[Row] = []
    run.start()
    try:
        for name in order:
            waited = run.wait_healthy(urls[name], settings.health_timeout_s)
            echo(f"[{name}] healthy at {urls[name]} after {waited:.0f} s (log {run.log_path})")
        for r in range(1, settings.rounds + 1):
            for name in round_order(order, r):
                for body_kind, items, payloads in kinds(name):
                    rows.append(
                        _measure(
                            run,
                            urls[name],
                            name,
                            body_kind,
                            items,
                            payloads,
                            settings,
                            f"round {r} {name}",
                            echo,
                        )
                    )
                    rows[-1].round = r
    finally:
        run.stop(settings.grace_s)
    return rows


def round_order(order: Sequence[str], r: int) -> list[str]:
    """The apps of round ``r`` (from 1): ``order`` in odd rounds, reversed in even ones."""
    return list(order if r % 2 else order[::-1])


def run_ceiling(settings: Settings, echo: Callable[[str], None] = print) -> dict:
    """Measure every app of ``settings.apps`` in ``settings.rounds`` rounds (echo, chain, app;
    reversed in even rounds), each app in its own ``serve run`` per round, or with
    ``settings.cohosted`` all in one; return the JSON-able report (``header``, ``settings``,
    ``rows``, ``table``, and by round ``summary``: :func:`round_summary`). Raises AppNotHealthy (with the log
    tail, the app's name, the rows measured before it and the kept log folder) when an app does
    not come up; raises FileNotFoundError when ``app`` is asked for and the config is missing."""
    app_cfg = None
    if Path(settings.config).exists():  # also read without "app": its tokenizer makes the bodies
        app_cfg = rewrite_app_config(yaml.safe_load(Path(settings.config).read_text()), 0)
    elif "app" in settings.apps:
        raise FileNotFoundError(f"config {settings.config} not found")
    pool, workload = _bodies_for(settings, app_cfg)
    header = format_header(settings, workload)
    echo(header)
    single = ("single", 1, encode_bodies(pool, None))
    listed = (
        f"list{settings.list_size}",
        settings.list_size,
        encode_bodies(pool, settings.list_size),
    )
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="ceiling-"))

    def kinds(name: str) -> list:
        return [single, listed] if name == "app" else [single]

    order = [n for n in APPS if n in settings.apps]
    if settings.cohosted:
        try:
            rows = _measure_rounds(app_cfg, order, settings, work, kinds, echo)
        except AppNotHealthy as exc:
            exc.app, exc.rows, exc.log_dir = "co-hosted apps", [], str(work)
            raise
    else:
        for r in range(1, settings.rounds + 1):
            for name in round_order(order, r):
                try:
                    new = _measure_app(
                        name,
                        app_cfg,
                        settings,
                        work,
                        kinds(name),
                        echo,
                        f"round {r} {name}" if settings.by_round else name,
                    )
                except AppNotHealthy as exc:
                    add_ratios(rows)
                    exc.app, exc.rows, exc.log_dir = name, rows, str(work)
                    raise
                for row in new:
                    row.round = r if settings.by_round else None
                rows += new
    rows.sort(key=lambda x: (x.round or 0, order.index(x.app)))
    shutil.rmtree(work, ignore_errors=True)
    add_ratios(rows)
    table = format_table(rows)
    report = {
        "header": header,
        "settings": {**asdict(settings), "config": str(settings.config)},
        "rows": [asdict(r) for r in rows],
        "table": table,
    }
    if settings.by_round:
        report["summary"] = round_summary(rows)
        report["table"] = table + "\n\n" + format_summary(report["summary"])
    return report
