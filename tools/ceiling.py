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
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from packing.jobs.local_cluster import free_port

REPO = Path(__file__).resolve().parents[1]
APPS = ("echo", "chain", "app")
FLOOR_IMPORT = {"echo": "tools.floor_apps:echo_app", "chain": "tools.floor_apps:chain_app"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
LENGTH_RANGE = (24, 64)  # tokens per question + context, uniform
POOL_SIZE = 256  # distinct questions
POOL_SEED = 2022
FALLBACK_SENTENCES = (
    "The river runs through the old town and past the mill.",
    "Jane Austen wrote Pride and Prejudice in the early nineteenth century.",
    "The committee met on Tuesday to discuss the new budget for schools.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "The bridge was closed for repairs after the winter storms.",
    "Mount Everest is the highest mountain above sea level on Earth.",
    "The orchestra played a symphony by Beethoven to a full hall.",
    "Early computers filled whole rooms and used vacuum tubes.",
)
FALLBACK_QUESTIONS = (
    "Who wrote it?",
    "What happened on Tuesday?",
    "Where does the river run?",
    "What was closed?",
    "What is the highest mountain?",
    "What did they play?",
)


class AppNotHealthy(RuntimeError):
    """An app's ``serve run`` exited or did not answer ``GET /healthz`` with 200 in time."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.app = ""  # set by run_ceiling: which app failed
        self.rows: list = []  # set by run_ceiling: the rows measured before the failure
        self.log_dir = ""  # set by run_ceiling: where the serve logs were kept


# ---------------------------------------------------------------- /proc: CPU of a process tree


def read_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` from field 3 (state) on, or None if the process is gone.

    The command name (field 2) may hold spaces and parentheses, so the text is split after
    its last ``)``; field ``n`` (1-based, as in proc(5)) is ``result[n - 3]``.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rfind(")") + 2 :].split()


def children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from ``/proc/PID/task/*/children``; empty if it is gone)."""
    out: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in tasks:
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and all its live descendants (``root`` included only while it exists)."""
    seen: set[int] = set()
    todo = [root] if read_stat(root) is not None else []
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children(pid) - seen)
    return seen


def all_pids() -> list[int]:
    """Every process id visible in ``/proc``."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def session_members(sid: int) -> set[int]:
    """Live processes whose session id (stat field 6) is ``sid``."""
    out = set()
    for pid in all_pids():
        fields = read_stat(pid)
        if fields is not None and int(fields[3]) == sid:
            out.add(pid)
    return out


def server_pids(root: int) -> set[int]:
    """The processes a ``serve run`` started in its own session (pid = session id) owns:
    its process tree plus anything re-parented out of the tree but still in the session."""
    return process_tree(root) | session_members(root)


def cpu_times(pids: Iterable[int]) -> dict[tuple[int, int], float]:
    """utime + stime seconds (stat fields 14, 15) of each live pid, keyed by (pid, starttime)
    so that a reused pid is never mistaken for the process it replaced."""
    out = {}
    for pid in pids:
        f = read_stat(pid)
        if f is not None:
            out[(pid, int(f[19]))] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def cpu_delta(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """CPU seconds spent between two :func:`cpu_times` samples by the processes alive at the
    second (a process started in between counts whole; one that exited in between is lost)."""
    return sum(t - before.get(key, 0.0) for key, t in after.items())


def tree_cpu(root: int) -> dict[tuple[int, int], float]:
    """A :func:`cpu_times` sample of every process of ``root``'s serve run (:func:`server_pids`)."""
    return cpu_times(server_pids(root))


def self_cpu() -> float:
    """User + system CPU seconds of this process (its threads included)."""
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------- configs and serve run


def floor_config(kind: str, port: int, max_ongoing_requests: int | None = None) -> dict:
    """A Serve config file (as a dict) running floor app ``kind`` (echo or chain) on ``port``;
    ``max_ongoing_requests`` (None: Serve's default) goes to the builder's args."""
    app = {"name": f"floor-{kind}", "route_prefix": "/", "import_path": FLOOR_IMPORT[kind]}
    if max_ongoing_requests is not None:
        app["args"] = {"max_ongoing_requests": max_ongoing_requests}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [app],
    }


FLOOR_ROUTE = {"echo": "/echo", "chain": "/chain"}  # route prefixes when co-hosted


def cohosted_config(
    app_cfg: dict | None,
    apps: Sequence[str],
    port: int,
    floor_max_ongoing: int | None = None,
    repo: Path = REPO,
) -> dict:
    """One Serve config (a dict) running every app of ``apps`` at once on ``port``: the floor
    apps under :data:`FLOOR_ROUTE`'s prefixes, the real app (``app_cfg``, its model folder
    made absolute) at its own. Raises ValueError when ``app`` is asked for without a config."""
    if "app" in apps:
        if app_cfg is None:
            raise ValueError("the real app needs its config")
        out = rewrite_app_config(app_cfg, port, repo)
    else:
        out = {
            "proxy_location": "EveryNode",
            "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [],
        }
    for name in ("echo", "chain"):
        if name in apps:
            floor = floor_config(name, port, floor_max_ongoing)["applications"][0]
            out["applications"].append({**floor, "route_prefix": FLOOR_ROUTE[name]})
    return out


def app_routes(cfg: dict, apps: Sequence[str]) -> dict[str, str]:
    """Each of ``apps``' route prefix in a :func:`cohosted_config` (``""`` for ``/``): the
    floor apps' from :data:`FLOOR_ROUTE`, the real app's from its application, the first."""
    routes = dict(FLOOR_ROUTE)
    if "app" in apps:
        routes["app"] = cfg["applications"][0].get("route_prefix") or "/"
    return {name: routes[name].rstrip("/") for name in apps}


def rewrite_app_config(cfg: dict, port: int, repo: Path = REPO) -> dict:
    """A copy of Serve config ``cfg`` listening on ``port`` with every relative ``model_dir``
    made absolute against ``repo`` (the input is not changed)."""
    out = copy.deepcopy(cfg)
    http = out.setdefault("http_options", {}) or {}
    out["http_options"] = http
    http["port"] = port
    http.setdefault("host", "127.0.0.1")
    for app in out.get("applications", []):
        args = app.get("args") or {}
        if args.get("model_dir") and not Path(args["model_dir"]).is_absolute():
            args["model_dir"] = str((repo / args["model_dir"]).resolve())
    return out


def app_model(cfg: dict) -> tuple[Path | None, str | None]:
    """(``model_dir``, ``model_source``) of the first application's args, if given."""
    apps = cfg.get("applications") or [{}]
    args = apps[0].get("args") or {}
    md = args.get("model_dir")
    return (Path(md) if md else None), args.get("model_source")


def serve_env(extra: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a ``serve run``: ``base`` (default ``os.environ``) with usage stats and
    token auth off, ``RAY_ADDRESS`` removed (a private local cluster), then ``extra``."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ADDRESS", None)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
    env.update(extra)
    return env


def parse_env(items: Sequence[str] | None) -> dict[str, str]:
    """``["K=V", ...]`` as a dict; raises ValueError on an item without ``=`` or an empty key."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


class ServeRun:
    """One ``serve run CONFIG`` subprocess in a new session, its output in ``log_path``."""

    def __init__(
        self, config_path: Path, log_path: Path, env: dict[str, str], cwd: Path = REPO
    ) -> None:
        self.config_path, self.log_path, self.env, self.cwd = config_path, log_path, env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start ``serve run`` (its pid is its session and process-group id)."""
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from ray.serve.scripts import cli; cli()",
                    "run",
                    str(self.config_path),
                ],
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """Process id of ``serve run`` (after :meth:`start`)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the serve log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def wait_healthy(self, url: str, timeout_s: float) -> float:
        """Poll ``url``/healthz until 200; returns the seconds waited. Raises AppNotHealthy when
        the process exits or ``timeout_s`` passes first."""
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise AppNotHealthy(
                    f"serve run exited with {self.proc.returncode}", self.log_tail()
                )
            if _http_status(url + "/healthz") == 200:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise AppNotHealthy(f"{url}/healthz not 200 after {timeout_s:g} s", self.log_tail())
            time.sleep(1)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; then SIGKILL (by pid) any
        process of this run's tree or session still alive. Never touches other clusters."""
        if self.proc is None:
            return
        owned = cpu_times(server_pids(self.pid)).keys()
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + grace_s
        while _alive(owned) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid, _ in _alive(owned):
            _kill(pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(keys: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (pid, starttime) keys whose process still exists (and is not a zombie)."""
    out = []
    for pid, start in keys:
        f = read_stat(pid)
        if f is not None and int(f[19]) == start and f[0] != "Z":
            out.append((pid, start))
    return out


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- request bodies


def load_tokenizer(model_dir: Path | None, model_source: str | None):
    """The app's tokenizer: its model folder's when prepared, else (for ``random:*`` sources,
    which use it) the bundled bert-base-uncased vocabulary; None when neither applies."""
    from transformers import AutoTokenizer, BertTokenizerFast

    if model_dir is not None and (model_dir / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(model_dir))
    if (model_source or "random:").startswith("random:"):
        from packing.model.weights import vocab_asset_path

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(vocab_asset_path(), Path(tmp) / "vocab.txt")
            return BertTokenizerFast.from_pretrained(tmp, do_lower_case=True)
    return None


def question_pool(
    tokenizer, n: int = POOL_SIZE, seed: int = POOL_SEED, lengths: tuple[int, int] = LENGTH_RANGE
) -> list[dict]:
    """``n`` ``{question, context}`` pairs of uniform random token lengths in ``lengths``
    (inclusive, fixed seed) built with ``tokenizer``; fixed English sentences without one."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(lengths[0], lengths[1] + 1, size=n)
    if tokenizer is not None:
        from .loadtest import synthetic_questions

        return synthetic_questions(sizes, tokenizer, seed)
    out = []
    for i, size in enumerate(sizes):
        k = max(1, int(size) // 16)  # ~12-14 words per sentence, ~16 tokens
        picks = rng.choice(len(FALLBACK_SENTENCES), size=k)
        out.append(
            {
                "question": FALLBACK_QUESTIONS[i % len(FALLBACK_QUESTIONS)],
                "context": " ".join(FALLBACK_SENTENCES[j] for j in picks),
            }
        )
    return out


def encode_bodies(pool: Sequence[dict], list_size: int | None) -> list[bytes]:
    """JSON bodies: one per pool item (``list_size`` None), or lists of ``list_size`` items
    taken from the pool in order, cycling, as many lists as the pool has items / list_size
    (at least 1)."""
    if list_size is None:
        return [json.dumps(q).encode() for q in pool]
    count = max(1, len(pool) // list_size)
    return [
        json.dumps([pool[(k * list_size + j) % len(pool)] for j in range(list_size)]).encode()
        for k in range(count)
    ]


# ---------------------------------------------------------------- the closed-loop client


@dataclass
class Measurement:
    """What one measured phase saw (times in seconds)."""

    seconds: float
    latencies: list[float]  # of every response completed in the phase (any status)
    statuses: Counter  # status code -> count; 0 = no response (connection error, timeout)
    server_cpu_s: float
    client_cpu_s: float
    warmup_s: float

    @property
    def ok(self) -> int:
        """HTTP 200 responses."""
        return self.statuses.get(200, 0)


@dataclass
class _LoopState:
    phase: str = "warmup"  # warmup -> measure -> done
    answered_once: set = field(default_factory=set)
    latencies: list = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    measured: int = 0


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    warmup_s: float,
    duration_s: float | None,
    requests: int | None,
    sample_server: Callable[[], dict],
    progress: bool = False,
    label: str = "",
    max_warmup_s: float = 300.0,
    drain_s: float = 120.0,
) -> Measurement:
    """POST ``bodies`` (cycled) to ``url``/v1/answer from ``concurrency`` closed-loop clients.

    Warm-up lasts ``warmup_s`` and until every client has had one response (at most
    ``max_warmup_s``). The measured phase then lasts ``duration_s`` seconds, or until
    ``requests`` responses arrived when given; it counts responses completed inside it.
    ``sample_server()`` is called at both ends of the phase (CPU samples for
    :func:`cpu_delta`). In-flight requests are drained (``drain_s`` at most) before returning.
    """
    import aiohttp

    st = _LoopState()
    done_measure = asyncio.Event()
    counter = iter(range(1 << 62))
    target = url.rstrip("/") + "/v1/answer"
    headers = {"content-type": "application/json"}

    async def client(cid: int, session: aiohttp.ClientSession) -> None:
        while st.phase != "done":
            body = bodies[next(counter) % len(bodies)]
            t0 = time.perf_counter()
            try:
                async with session.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            st.answered_once.add(cid)
            if st.phase == "measure":
                st.latencies.append(time.perf_counter() - t0)
                st.statuses[status] += 1
                st.measured += 1
                if requests is not None and st.measured >= requests:
                    done_measure.set()

    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(concurrency)]
        t_warm = time.perf_counter()
        await asyncio.sleep(warmup_s)
        while len(st.answered_once) < concurrency and time.perf_counter() - t_warm < max_warmup_s:
            await asyncio.sleep(0.1)
        warmed = time.perf_counter() - t_warm
        server0, client0, t0 = sample_server(), self_cpu(), time.perf_counter()
        st.phase = "measure"
        ticker = asyncio.create_task(
            _progress(st, t0, duration_s, requests, label) if progress else asyncio.sleep(0)
        )
        if requests is not None:
            await done_measure.wait()
        else:
            await asyncio.sleep(duration_s)
        st.phase = "done"
        seconds = time.perf_counter() - t0
        server1, client1 = sample_server(), self_cpu()
        await ticker
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return Measurement(
        seconds, st.latencies, st.statuses, cpu_delta(server0, server1), client1 - client0, warmed
    )


async def _progress(
    st: _LoopState, t0: float, duration_s: float | None, requests: int | None, label: str
) -> None:
    from tqdm.auto import tqdm

    total = requests if requests is not None else duration_s
    unit = "req" if requests is not None else "s"
    with tqdm(total=total, unit=unit, desc=label, leave=False) as bar:
        while st.phase == "measure":
            await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - t0
            now = st.measured if requests is not None else min(elapsed, duration_s)
            bar.n = now
            bar.set_postfix(
                ok=st.statuses.get(200, 0),
                rps=f"{st.measured / max(elapsed, 1e-9):.1f}",
                refresh=False,
            )
            bar.refresh()


# ---------------------------------------------------------------- report


@dataclass
class Row:
    """One (app, body kind) measurement, reduced to the table's figures."""

    app: str
    body: str  # "single" or "list32" etc.
    items_per_request: int
    seconds: float
    answered: int  # HTTP 200
    non_200: int
    statuses: dict
    requests_per_s: float  # answered (200) requests per second
    questions_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_s: float
    client_cpu_s: float
    server_cpu_ms_per_q: float | None
    client_cpu_ms_per_q: float | None
    warmup_s: float
    ratio_to_chain: float | None = None
    round: int | None = None  # runs by round: the round it was measured in (1-based)


def make_row(app: str, body: str, items: int, m: Measurement) -> Row:
    """Reduce a measurement: rates count HTTP 200 only; latencies are of 200 and non-200 alike;
    CPU per question divides by answered questions (None when none were answered)."""
    questions = m.ok * items
    lat = np.asarray(m.latencies) * 1000
    per_q = (lambda s: s * 1000 / questions) if questions else (lambda s: None)
    return Row(
        app=app,
        body=body,
        items_per_request=items,
        seconds=m.seconds,
        answered=m.ok,
        non_200=sum(c for s, c in m.statuses.items() if s != 200),
        statuses={str(k): v for k, v in sorted(m.statuses.items())},
        requests_per_s=m.ok / m.seconds,
        questions_per_s=questions / m.seconds,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
        p99_ms=float(np.percentile(lat, 99)) if lat.size else None,
        server_cpu_s=m.server_cpu_s,
        client_cpu_s=m.client_cpu_s,
        server_cpu_ms_per_q=per_q(m.server_cpu_s),
        client_cpu_ms_per_q=per_q(m.client_cpu_s),
        warmup_s=m.warmup_s,
    )


def add_ratios(rows: Sequence[Row]) -> None:
    """Set each row's ``ratio_to_chain``: its requests/s over the chain row's of the same round
    (None without such a chain row or when the chain answered nothing)."""
    base = {r.round: r.requests_per_s for r in rows if r.app == "chain"}
    for r in rows:
        chain = base.get(r.round, 0.0)
        r.ratio_to_chain = r.requests_per_s / chain if chain > 0 else None


def round_summary(rows: Sequence[Row]) -> list[dict]:
    """Per (app, body) over the rounds of a run: the median, lowest and highest
    ratio to the chain, and for list bodies the median of their questions/s over the same
    round's single-question app rate (``list_over_single``). Rows need their ratios
    (:func:`add_ratios`); rows without a round are ignored."""
    single = {r.round: r.questions_per_s for r in rows if r.app == "app" and r.body == "single"}
    out = []
    for app, body in dict.fromkeys((r.app, r.body) for r in rows if r.round is not None):
        mine = [r for r in rows if (r.app, r.body) == (app, body) and r.round is not None]
        ratios = [r.ratio_to_chain for r in mine if r.ratio_to_chain is not None]
        over = [
            r.questions_per_s / single[r.round]
            for r in mine
            if body != "single" and single.get(r.round)
        ]
        out.append(
            {
                "app": app,
                "body": body,
                "rounds": len(mine),
                "median_ratio_to_chain": float(np.median(ratios)) if ratios else None,
                "min_ratio_to_chain": min(ratios) if ratios else None,
                "max_ratio_to_chain": max(ratios) if ratios else None,
                "median_list_over_single": float(np.median(over)) if over else None,
            }
        )
    return out


def format_summary(summary: Sequence[dict]) -> str:
    """The round summary as a Markdown table."""
    lines = [
        "| app | body | rounds | vs chain: median (min - max) | list over single: median |",
        "|---|---|---:|---:|---:|",
    ]
    for x in summary:
        ratio = (
            "-"
            if x["median_ratio_to_chain"] is None
            else f"{x['median_ratio_to_chain']:.2f}x ({x['min_ratio_to_chain']:.2f}x - "
            f"{x['max_ratio_to_chain']:.2f}x)"
        )
        over = _fmt(x["median_list_over_single"], ".1f") + (
            "x" if x["median_list_over_single"] is not None else ""
        )
        lines.append(f"| {x['app']} | {x['body']} | {x['rounds']} | {ratio} | {over} |")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_HEAD = (
    "| app | body | requests/s | questions/s | vs chain | p50 ms | p99 ms "
    "| server CPU ms/q | client CPU ms/q | non-200 |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)
ROUND_HEAD = "| round " + TABLE_HEAD.split("\n")[0] + "\n|---:" + TABLE_HEAD.split("\n")[1]


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table, one line per row (ratios as set by :func:`add_ratios`)."""
    rounds = any(r.round is not None for r in rows)
    lines = [ROUND_HEAD if rounds else TABLE_HEAD]
    for r in rows:
        ratio = "-" if r.ratio_to_chain is None else f"{r.ratio_to_chain:.2f}x"
        non200 = str(r.non_200) + (f" ({_status_text(r.statuses)})" if r.non_200 else "")
        lead = f"| {r.round} " if rounds else ""
        lines.append(
            f"{lead}| {r.app} | {r.body} | {r.requests_per_s:.1f} | {r.questions_per_s:.1f} "
            f"| {ratio} | {_fmt(r.p50_ms, '.0f')} | {_fmt(r.p99_ms, '.0f')} "
            f"| {_fmt(r.server_cpu_ms_per_q, '.2f')} "
            f"| {_fmt(r.client_cpu_ms_per_q, '.2f')} | {non200} |"
        )
    return "\n".join(lines)


def _status_text(statuses: dict) -> str:
    return ", ".join(f"{'conn' if k == '0' else k}: {v}" for k, v in statuses.items() if k != "200")


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


def format_header(s: Settings, workload: str) -> str:
    """One line naming the settings of a run."""
    phase = f"{s.requests} requests" if s.requests is not None else f"{s.duration_s:g} s"
    env = " ".join(f"{k}={v}" for k, v in s.env.items()) or "(none)"
    floor = "default" if s.floor_max_ongoing is None else s.floor_max_ongoing
    hosting = "co-hosted in one serve run" if s.cohosted else "one serve run per app"
    if s.by_round:
        hosting += f", {s.rounds} interleaved round{'s' if s.rounds > 1 else ''}"
    return (
        f"ceiling: apps {','.join(s.apps)} ({hosting}); config {_rel(s.config)}; concurrency "
        f"{s.concurrency}; warm-up {s.warmup_s:g} s + measured {phase}; list size "
        f"{s.list_size}; floor max_ongoing_requests {floor}; {workload}; env {env}; "
        f"{os.cpu_count()} CPUs"
    )


def resolve_config(path: str | Path) -> Path:
    """``path`` as given when it exists or is absolute, else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    return REPO / p


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- the run


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
