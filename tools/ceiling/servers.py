"""The apps a ceiling run measures and their ``serve run`` processes: the Serve config of each
(a floor app, the real app, or all of them co-hosted), the environment, and :class:`ServeRun`
(start, wait until healthy, stop the whole process tree)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from .procs import cpu_times, read_stat, server_pids

REPO = Path(__file__).resolve().parents[2]
APPS = ("echo", "chain", "app")
FLOOR_IMPORT = {"echo": "tools.floor_apps:echo_app", "chain": "tools.floor_apps:chain_app"}


class AppNotHealthy(RuntimeError):
    """An app's ``serve run`` exited or did not answer ``GET /healthz`` with 200 in time."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.app = ""  # set by run_ceiling: which app failed
        self.rows: list = []  # set by run_ceiling: the rows measured before the failure
        self.log_dir = ""  # set by run_ceiling: where the serve logs were kept


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


def resolve_config(path: str | Path) -> Path:
    """``path`` as given when it exists or is absolute, else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    return REPO / p
