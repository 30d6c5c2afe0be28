"""Fixtures of the integration tier: one ``serve run`` of configs/test.yaml per test session
(:func:`serve_app`), its private Ray cluster stopped exactly at teardown, and :func:`solo`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.ceiling import free_port, read_stat  # free_port: 20000-29999

from factories import REPO


def _cluster_pids(
    marker: str, sid: int | None = None, known: dict[int, str] | None = None
) -> dict[int, str]:
    """The live processes of the test's own Ray cluster, as ``{pid: start time}``.

    A process is the cluster's when its environment carries ``marker`` (every process
    ``serve run`` starts inherits it, even one that left the process group or session or
    was re-parented), when it is in process session ``sid`` (pass only while the session
    leader lives, so the id cannot have been reused), or when it is in ``known`` with the
    same start time (not a reused pid). Never this test process or its ancestors; never a
    process of another cluster, which matches none of these.
    """
    import os

    spare, pid = {os.getpid()}, os.getpid()
    while pid > 1:  # this process's ancestors
        fields = read_stat(pid)
        if fields is None:
            break
        pid = int(fields[1])
        spare.add(pid)
    needle = marker.encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        pid = int(entry.name)
        fields = read_stat(pid)  # [0] state, [1] ppid, [3] session id, [19] start time
        if fields is None or fields[0] == "Z":  # gone, or a zombie: already dead
            continue
        try:
            start = fields[19]
            if (
                (sid is not None and int(fields[3]) == sid)
                or (known is not None and known.get(pid) == start)
                or needle in (entry / "environ").read_bytes()
            ):
                found[pid] = start
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def _stop_cluster(proc, marker: str, timeout_s: float = 30.0) -> dict[int, str]:
    """Stop the ``serve run`` started by :func:`serve_app` and its whole Ray cluster, and
    nothing else: note the cluster's processes (:func:`_cluster_pids`), SIGTERM to the
    ``serve run`` process group (a background ``serve run`` ignores SIGINT), a wait,
    SIGKILL to the group, then SIGKILL to every noted or marked survivor. Returns the
    processes still alive after that (empty when all went)."""
    import os
    import signal
    import subprocess
    import time

    # start_new_session: serve run leads its own session and process group (ids = its pid)
    known = _cluster_pids(marker, sid=proc.pid if proc.poll() is None else None)
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + timeout_s
    while True:
        left = _cluster_pids(marker, known=known)
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _gcs_address(ray_tmp: Path, deadline: float) -> str:
    """``host:port`` of the GCS of the cluster whose temp dir is ``ray_tmp``, from the port
    file Ray writes into its session dir (the cluster is found by its dir, not by
    ``address="auto"``, which could pick another cluster on this host)."""
    import time

    while True:
        found = sorted((ray_tmp / "ray").glob("session_*/gcs_server_port_*"))
        text = found[0].read_text().strip() if found else ""
        if text.isdigit():
            return f"127.0.0.1:{text}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"no GCS port file under {ray_tmp}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory):
    """``serve run configs/test.yaml`` in a subprocess (model folder and port made private).

    The Ray cluster ``serve run`` starts is private too: its own temp dir (``RAY_TMPDIR``),
    so ``serve run`` never joins another cluster on the host, and a marker in its
    environment; teardown stops exactly that cluster's processes (see
    :func:`_stop_cluster`), never another cluster on the same host.

    The packer's ``max_tokens`` is pinned to the model's full batch (not ``auto``, a budget
    measured on the host at start), so batch compositions do not depend on the host's load.

    Yields an object with ``url``, ``model_dir``, ``app`` (the application name),
    ``fault_file`` (touch it to make every model call fail; remove it to recover),
    ``ray_address`` (the cluster's GCS, for ``ray.init``) and ``dashboard_url`` (for
    ``serve deploy --address``).
    """
    import http.client
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    import uuid
    from types import SimpleNamespace

    import yaml

    work = tmp_path_factory.mktemp("serve")
    cfg = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
    app = cfg["applications"][0]
    app["args"]["model_dir"] = str(work / "model")
    # The packer's token budget pinned to the full batch of the test model instead of
    # max_tokens: auto, which calibrates on this host at start: tests that count how requests
    # share batches must not depend on how busy the machine is.
    shape = app["args"]["prepare"]
    for dep in app["deployments"]:
        if dep["name"] == "Packer":
            dep["user_config"]["max_tokens"] = shape["batch_size"] * shape["seq_len"]
    fault_file = work / "fail-model-calls"  # runners' model calls fail while it exists
    app["args"]["fault_file"] = str(fault_file)
    port = free_port()
    cfg["http_options"]["port"] = port
    config_path = work / "test.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    log_path = work / "serve.log"
    log = open(log_path, "w")
    # A short private dir (Ray's unix socket paths must stay under ~107 bytes) for the
    # session of this cluster alone.
    ray_tmp = Path(tempfile.mkdtemp(prefix="pbs-ray-", dir="/tmp"))
    marker = f"packed-bert-test-{uuid.uuid4().hex}"
    # Token auth off on this private loopback cluster, so `serve deploy` (the dashboard's REST
    # API) can update the app in the redeploy test.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_TMPDIR": str(ray_tmp),
        "PACKED_BERT_TEST_CLUSTER": marker,
        # The Serve settings docs/serving.md recommends, so the tests exercise them.
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    }
    previous_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # drivers of this test process must match
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ray.serve.scripts import cli; cli()", "run", str(config_path)],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"serve run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve run not healthy after 240 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        ray_address = _gcs_address(ray_tmp, time.monotonic() + 30)
        yield SimpleNamespace(
            url=url,
            model_dir=work / "model",
            app=app["name"],
            log=log_path,
            config=cfg,
            work=work,
            env=env,
            fault_file=fault_file,
            ray_address=ray_address,
            dashboard_url=_dashboard_url(ray_address),
            ray_tmp=ray_tmp,
            marker=marker,
            pid=proc.pid,
        )
    finally:
        left = _stop_cluster(proc, marker)
        log.close()
        if previous_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous_auth
        if not left:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert not left, f"processes of the test's Ray cluster survived teardown: {sorted(left)}"


def _dashboard_url(ray_address: str) -> str:
    """``http://host:port`` of the dashboard of the cluster at ``ray_address`` (8265 unless
    another cluster on this host holds that port)."""
    import ray

    ctx = ray.init(address=ray_address, namespace="serve", log_to_driver=False)
    try:
        url = ctx.dashboard_url
    finally:
        ray.shutdown()
    return url if url.startswith("http") else f"http://{url}"


@pytest.fixture(scope="session")
def solo(serve_app):
    """``solo(qa)``: the answer of one request computed in-process, each window run alone,
    with the app's own windowing settings (from ``/v1/stats``)."""
    import json
    import urllib.request

    from tools.soak import solo_answers

    with urllib.request.urlopen(serve_app.url + "/v1/stats") as r:
        answering = json.loads(r.read())["answering"]
    return lambda qa: solo_answers(serve_app.model_dir, [qa], answering)[0]
