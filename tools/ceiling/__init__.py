"""``python -m tools ceiling``: the serving front end's ceiling against Ray Serve's own floor,
in one run.

Apps run one after another, each in its own ``serve run`` subprocess (a new session, a free
loopback port, a private local Ray cluster):

* ``echo``  — one FastAPI deployment returning the body (:func:`tools.floor_apps.echo_app`);
* ``chain`` — FastAPI ingress -> A -> B through handles (:func:`tools.floor_apps.chain_app`);
* ``app``   — the real application from ``--config``, once with single-question bodies and once
  with list bodies of ``--list-size`` questions.

With ``--rounds N`` the whole sequence runs N times, the order reversed in every other round,
each app in a fresh ``serve run`` each time, and the report adds per-round ratios and their
median: the host's speed drifts over minutes, so one pass ranks apps by when they ran as much as
by what they cost. With ``--cohosted`` every app runs in one ``serve run`` instead, measured in
the same interleaved rounds (cheaper, but each app's background work is then paid during every
app's phase).

Every app gets the same bodies from a closed-loop asyncio + aiohttp client in this process
(``--concurrency`` connections, a warm-up, then a measured phase). Server CPU is the
utime + stime of every process of the ``serve run`` process tree (plus any process left in its
session), read from ``/proc`` at the start and the end of the measured phase; client CPU is this
process's own ``os.times``.

The package, by job: :mod:`~tools.ceiling.procs` (CPU of a process tree from ``/proc``),
:mod:`~tools.ceiling.servers` (the apps' Serve configs and their ``serve run`` processes),
:mod:`~tools.ceiling.load` (the bodies and the closed-loop client),
:mod:`~tools.ceiling.report` (rows, ratios, summary and tables) and
:mod:`~tools.ceiling.run` (the settings and the run); every public name is re-exported here.
"""

from __future__ import annotations

from packing.jobs.local_cluster import free_port

from .load import (
    FALLBACK_QUESTIONS,
    FALLBACK_SENTENCES,
    LENGTH_RANGE,
    POOL_SEED,
    POOL_SIZE,
    Measurement,
    closed_loop,
    encode_bodies,
    load_tokenizer,
    question_pool,
)
from .procs import (
    CLK_TCK,
    all_pids,
    children,
    cpu_delta,
    cpu_times,
    process_tree,
    read_stat,
    self_cpu,
    server_pids,
    session_members,
    tree_cpu,
)
from .report import (
    ROUND_HEAD,
    TABLE_HEAD,
    Row,
    add_ratios,
    format_header,
    format_summary,
    format_table,
    make_row,
    round_summary,
)
from .run import (
    Settings,
    round_order,
    run_ceiling,
)
from .servers import (
    APPS,
    FLOOR_IMPORT,
    FLOOR_ROUTE,
    REPO,
    AppNotHealthy,
    ServeRun,
    app_model,
    app_routes,
    cohosted_config,
    floor_config,
    parse_env,
    resolve_config,
    rewrite_app_config,
    serve_env,
)

__all__ = [
    "APPS",
    "AppNotHealthy",
    "CLK_TCK",
    "FALLBACK_QUESTIONS",
    "FALLBACK_SENTENCES",
    "FLOOR_IMPORT",
    "FLOOR_ROUTE",
    "LENGTH_RANGE",
    "Measurement",
    "POOL_SEED",
    "POOL_SIZE",
    "REPO",
    "ROUND_HEAD",
    "Row",
    "ServeRun",
    "Settings",
    "TABLE_HEAD",
    "add_ratios",
    "all_pids",
    "app_model",
    "app_routes",
    "children",
    "closed_loop",
    "cohosted_config",
    "cpu_delta",
    "cpu_times",
    "encode_bodies",
    "floor_config",
    "format_header",
    "format_summary",
    "format_table",
    "free_port",
    "load_tokenizer",
    "make_row",
    "parse_env",
    "process_tree",
    "question_pool",
    "read_stat",
    "resolve_config",
    "rewrite_app_config",
    "round_order",
    "round_summary",
    "run_ceiling",
    "self_cpu",
    "serve_env",
    "server_pids",
    "session_members",
    "tree_cpu",
]
