"""Session-wide fixtures: small prepared models with random weights (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from packing.model.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "data" / "squad-v1.1-dev.json"

# Small shapes so batches fill, rows overflow and sequences cross row boundaries
# with only a few dozen requests.
TINY_SHAPE = {"seq_len": 64, "batch_size": 4, "max_valid_num": 8}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """random:tiny prepared with seq_len 64, batch_size 4, max_valid_num 8 (checked)."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    prepare("random:tiny", out, quiet=True, **TINY_SHAPE)
    return out


@pytest.fixture(scope="session")
def squad_path() -> Path:
    """The shared SQuAD v1.1 dev file; tests that need it skip where it is absent."""
    if not SQUAD.exists():
        pytest.skip(f"{SQUAD} not found")
    return SQUAD


def _free_port(socket) -> int:
    """A free port in 20000-29999: outside the OS ephemeral range and Ray's worker ports
    (10002-19999), so none of Ray's own randomly placed services can take it first."""
    import random

    for port in random.sample(range(20000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory):
    """``serve run configs/test.yaml`` in a subprocess (model folder and port made private).

    Yields an object with ``url``, ``model_dir``, ``app`` (the application name) and
    ``fault_file`` (touch it to make every model call fail; remove it to recover).
    """
    import http.client
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from types import SimpleNamespace

    import yaml

    work = tmp_path_factory.mktemp("serve")
    cfg = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
    app = cfg["applications"][0]
    app["args"]["model_dir"] = str(work / "model")
    fault_file = work / "fail-model-calls"  # runners' model calls fail while it exists
    app["args"]["fault_file"] = str(fault_file)
    port = _free_port(socket)
    cfg["http_options"]["port"] = port
    config_path = work / "test.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    log_path = work / "serve.log"
    log = open(log_path, "w")
    # Token auth off on this private loopback cluster, so `serve deploy` (the dashboard's REST
    # API) can update the app in the redeploy test.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    previous_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # drivers of this test process must match
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ray.serve.scripts import cli; cli()", "run", str(config_path)],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve run not healthy after 240 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield SimpleNamespace(url=url, model_dir=work / "model", app=app["name"], log=log_path,
                              config=cfg, work=work, env=env, fault_file=fault_file)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
                       capture_output=True, timeout=60)
        log.close()
        if previous_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous_auth


@pytest.fixture(scope="session")
def solo(serve_app):
    """``solo(qa)``: the answer of one request computed in-process, each window run alone,
    with the app's own windowing settings (from ``/v1/stats``)."""
    import json
    import urllib.request

    from packing.bench.soak import solo_answers

    with urllib.request.urlopen(serve_app.url + "/v1/stats") as r:
        answering = json.loads(r.read())["answering"]
    return lambda qa: solo_answers(serve_app.model_dir, [qa], answering)[0]
