"""The ONNX Runtime install and device rules, on the CPU: one wheel per extra, a clear error
without one, ``device="cuda"`` refused when the session does not really run on CUDA (ONNX
Runtime's silent CPU fallback, reproduced by listing CUDA on a CPU-only build), ``auto``
falling back loudly, TF32 off in every CUDA session, and ``pytest -m gpu`` failing here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from packing.cli import main
from packing.model.manifest import Manifest
from packing.runtime import backend as be
from packing.runtime.backend import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OnnxRuntimeBackend,
    OnnxRuntimeMissing,
    cuda_problem,
    import_onnxruntime,
    resolve_device,
)

from factories import REPO

ort = pytest.importorskip("onnxruntime")
# the CPU-only build warns that the CUDA provider asked for is not there, then uses the CPU
pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
#: Tests that reproduce a host where CUDA does not work; where it does, the gpu tests
#: (tests/unit/test_slow_gpu.py) check the real thing.
no_cuda = pytest.mark.skipif(cuda_problem() is None, reason="CUDA works on this host")


@pytest.fixture(autouse=True)
def _fresh_probe():
    cuda_problem.cache_clear()
    yield
    cuda_problem.cache_clear()


@pytest.fixture
def cuda_listed(monkeypatch):
    """A host where onnxruntime lists CUDA but a session cannot get it: what onnxruntime-gpu
    does without its CUDA/cuDNN libraries, a driver or a device. The real CPU-only build
    ignores the CUDA provider it is asked for and makes the session on the CPU, as
    onnxruntime-gpu's fallback does."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)


@pytest.fixture
def graph(tiny_model_dir):
    return tiny_model_dir / Manifest.read(tiny_model_dir).graphs["unpack_repack"]


@pytest.fixture
def sessions(monkeypatch):
    """Every InferenceSession made, with the providers asked for (a spy around the real class)."""
    made = []
    real = ort.InferenceSession

    def spy(path, opts=None, providers=None, **kw):
        made.append(providers)
        return real(path, opts, providers=providers, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    return made


@no_cuda
def test_cuda_asked_but_the_session_got_the_cpu_raises(cuda_listed, graph, sessions):
    with pytest.raises(RuntimeError) as err:
        OnnxRuntimeBackend(graph, device="cuda")
    msg = str(err.value)
    assert "device='cuda'" in msg and f"session on {CPU_PROVIDER}" in msg
    assert ".[gpu]" in msg and "cuDNN" in msg  # what to do
    # asked with TF32 off, CUDA first
    assert sessions == [[(CUDA_PROVIDER, {"use_tf32": "0"}), CPU_PROVIDER]]


@no_cuda
def test_cuda_asked_without_the_provider_raises(monkeypatch, graph):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU_PROVIDER])
    with pytest.raises(RuntimeError, match=r"device='cuda'.*no CUDAExecutionProvider.*\[gpu\]"):
        OnnxRuntimeBackend(graph, device="cuda")


@no_cuda
def test_auto_falls_back_to_the_cpu_with_a_warning(cuda_listed, graph, caplog, tiny_model_dir):
    with caplog.at_level(logging.WARNING, logger=be.__name__):
        auto = OnnxRuntimeBackend(graph, device="auto")
    assert auto.provider == CPU_PROVIDER
    assert any("runs on the CPU, not CUDA" in r.getMessage() for r in caplog.records)
    cpu = OnnxRuntimeBackend(graph, device="cpu")
    from packing.runners import PackRunner
    from packing.runners.workloads import seed_lengths, synthetic_features

    data = synthetic_features(seed_lengths(6, 64), 30522)
    a = PackRunner(tiny_model_dir, mode="unpack_repack", backend=auto, max_tokens=None).run(data)
    c = PackRunner(tiny_model_dir, mode="unpack_repack", backend=cpu, max_tokens=None).run(data)
    assert all(np.array_equal(x.start_logits, y.start_logits) for x, y in zip(a, c))


@no_cuda
def test_resolve_device_checks_a_real_session(cuda_listed, caplog):
    problem = cuda_problem()
    assert problem and f"runs on {CPU_PROVIDER}" in problem and ".[gpu]" in problem
    with caplog.at_level(logging.WARNING, logger=be.__name__):
        assert resolve_device("auto") == "cpu"
    assert "using the CPU, not CUDA" in caplog.text
    assert resolve_device("cuda") == "cuda" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("gpu")


@no_cuda
def test_auto_precision_and_fingerprint_follow_the_real_device(cuda_listed, tiny_model_dir):
    """config's precision: auto and the calibration fingerprint resolve ``auto`` where a
    session really runs: the CPU here, although CUDA is listed."""
    from deployments.config import AppConfig
    from packing.runtime.calibrate import effective_options

    assert AppConfig(device="auto", prepare={"precision": "auto"}).precision() == "int8"
    assert effective_options("onnxruntime", {"device": "auto"})["device"] == "cpu"


@no_cuda
def test_the_matmul_limit_refuses_a_cpu_session_asked_on_cuda(cuda_listed):
    from packing.bench.limit import measure_matmul

    with pytest.raises(RuntimeError, match="asked on CUDA"):
        measure_matmul(8, 16, rows=[4], device="cuda")


@no_cuda
def test_no_cuda_here_says_why():
    problem = cuda_problem()
    assert problem and ".[gpu]" in problem
    assert resolve_device("auto") == "cpu"


def test_onnxruntime_missing_names_the_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(OnnxRuntimeMissing, match=r"packed-bert-serve\[cpu\].*\[gpu\]") as err:
        import_onnxruntime()
    assert isinstance(err.value, RuntimeError)  # the CLI prints it as one line, exit 2
    monkeypatch.setitem(sys.modules, "onnxruntime", types.ModuleType("onnxruntime"))
    with pytest.raises(OnnxRuntimeMissing, match="incomplete"):
        import_onnxruntime()


def test_extras_install_exactly_one_onnxruntime_wheel():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def wheels(reqs):
        return [
            r
            for r in reqs
            if r.split("[")[0].split(">")[0].split("=")[0].strip()
            in ("onnxruntime", "onnxruntime-gpu")
        ]

    assert wheels(project["dependencies"]) == []
    extras = project["optional-dependencies"]
    assert [w.split(">")[0] for w in wheels(extras["cpu"])] == ["onnxruntime"]
    assert [w.split("[")[0].split(">")[0] for w in wheels(extras["gpu"])] == ["onnxruntime-gpu"]
    for name, reqs in extras.items():
        if name not in ("cpu", "gpu"):
            assert wheels(reqs) == [], name


@no_cuda
def test_bench_device_flag(tiny_model_dir, capsys):
    from packing.cli import build_parser
    from packing.cli.common import backend_choice

    parser = build_parser()
    args = parser.parse_args(["bench", "--model-dir", "m", "--device", "cuda"])
    assert backend_choice(args) == ("onnxruntime", {"device": "cuda"})
    assert backend_choice(parser.parse_args(["bench", "--model-dir", "m"])) == ("onnxruntime", {})
    with pytest.raises(ValueError, match="--device"):
        backend_choice(
            parser.parse_args(["bench", "--model-dir", "m", "--backend", "sim", "--device", "cpu"])
        )
    rc = main(
        [
            "bench",
            "--model-dir",
            str(tiny_model_dir),
            "--device",
            "cuda",
            "--samples",
            "4",
            "--no-progress",
            "--no-limit",
            "--max-tokens",
            "full",
            "--modes",
            "original",
        ]
    )
    assert rc == 2
    assert "CUDAExecutionProvider" in capsys.readouterr().err


@no_cuda
def test_pytest_m_gpu_fails_without_cuda():
    """``pytest -m gpu`` on a host without CUDA exits non-zero, each test erroring with why."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "gpu",
            "-p",
            "no:cacheprovider",
            "tests/unit/test_slow_gpu.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "3 errors" in run.stdout and "cannot run on CUDA" in run.stdout, run.stdout[-2000:]


@pytest.mark.parametrize("spin, entry", [(False, "0"), (True, "1"), (None, None)])
def test_spin_sets_onnxruntime_thread_spinning(monkeypatch, graph, spin, entry):
    seen = []
    real = ort.InferenceSession

    def config_entry(opts, key):
        try:
            return opts.get_session_config_entry(key)
        except Exception:  # noqa: BLE001 - onnxruntime raises when the key was never set
            return None

    def spy(path, opts=None, providers=None, **kw):
        got = {
            k: config_entry(opts, k)
            for k in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
        }
        seen.append({k: v for k, v in got.items() if v is not None})
        return real(path, opts, providers=providers, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    OnnxRuntimeBackend(graph, device="cpu", intra_op_threads=1, spin=spin)
    want = (
        {}
        if entry is None
        else {"session.intra_op.allow_spinning": entry, "session.inter_op.allow_spinning": entry}
    )
    assert seen == [want]


def test_served_runners_do_not_spin_by_default():
    from deployments.config import AppConfig

    backend, options = AppConfig(model_dir="/tmp/m", device="cpu").runner_backend()
    assert backend == "onnxruntime" and options["spin"] is False
    _, options = AppConfig(
        model_dir="/tmp/m", device="cpu", intra_op_spinning=True
    ).runner_backend()
    assert options["spin"] is True


def test_memory_options_reach_the_session_and_io_binding_gives_the_same_outputs(
    monkeypatch, tmp_path
):
    seen = []
    real = ort.InferenceSession

    def spy(path, opts=None, providers=None, **kw):
        seen.append((opts.enable_cpu_mem_arena, opts.enable_mem_pattern))
        return real(path, opts, providers=providers, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    path = tmp_path / "matmul.onnx"
    path.write_bytes(be._probe_graph())
    plain = OnnxRuntimeBackend(path, device="cpu", intra_op_threads=1)
    bound = OnnxRuntimeBackend(
        path,
        device="cpu",
        intra_op_threads=1,
        memory_arena=False,
        memory_pattern=False,
        io_binding=True,
    )
    assert seen == [(True, True), (False, False)]
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    want = x @ x
    for backend in (plain, bound):
        out = backend.run({"x": x})
        assert list(out) == ["y"] and np.array_equal(out["y"], want)
    with pytest.raises(ValueError, match="missing inputs"):
        bound.run({})
