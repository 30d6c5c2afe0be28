"""Bigger checks, outside the default run: ``-m slow`` (bert-base) and ``-m gpu`` (CUDA).

The ``gpu`` tests fail, never skip, where ONNX Runtime cannot really run on CUDA (the rule is
in tests/conftest.py), and each checks that its sessions run on ``CUDAExecutionProvider``, so
a CPU fallback cannot pass for a GPU run. ``tools/gpu_check.sh`` runs them with a bench.
"""

from __future__ import annotations

import numpy as np
import pytest

from packing.model.manifest import Manifest
from packing.model.prepare import prepare
from packing.model.quantize import TOLERANCES
from packing.runners import ModelRunner, PackRunner
from packing.runners.workloads import seed_lengths, synthetic_features
from packing.runtime.backend import CUDA_PROVIDER, OnnxRuntimeBackend, resolve_device

MODES = ("attention_mask", "unpack_repack")


def _diff(a, b) -> float:
    """Largest |start or end logit difference| between two lists of SpanLogits."""
    return max(
        max(
            float(np.abs(x.start_logits - y.start_logits).max()),
            float(np.abs(x.end_logits - y.end_logits).max()),
        )
        for x, y in zip(a, b)
    )


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "model"
    prepare("random:base", out, quiet=True)  # fails itself above 1e-4 (on CUDA where it runs)
    return out


@pytest.fixture(scope="module")
def cuda_base_model_dir(tmp_path_factory):
    """random:base as a folder meant for CUDA: ``--kernels mha`` (this package's CPU kernels,
    packed_attention among the fp32 defaults, would run on the CPU between GPU kernels)."""
    out = tmp_path_factory.mktemp("base_cuda") / "model"
    prepare("random:base", out, quiet=True, kernels={"mha"})
    return out


@pytest.mark.slow
def test_bert_base_online_modes_match_solo(base_model_dir):
    data = synthetic_features(seed_lengths(48), 30522)
    solo = ModelRunner(base_model_dir, batch_size=1, padding="longest")
    ref = [solo.run([f])[0] for f in data]
    for mode in ("attention_mask", "unpack_repack"):
        with PackRunner(
            base_model_dir, mode=mode, batch_wait_timeout_s=0.05, max_tokens=None
        ) as runner:  # pinned: the full batch
            got = [f.result() for f in runner.submit_many(data)]
        worst = max(float(np.abs(g.start_logits - r.start_logits).max()) for g, r in zip(got, ref))
        assert worst <= 1e-4, (mode, worst)


# ---------------------------------------------------------------- CUDA (-m gpu)


@pytest.mark.gpu
def test_sessions_really_run_on_cuda_with_tf32_off(tiny_model_dir):
    """device cuda and auto both get CUDAExecutionProvider, with the provider option that
    keeps float32 MatMul out of TF32."""
    m = Manifest.read(tiny_model_dir)
    for device in ("cuda", "auto"):
        backend = OnnxRuntimeBackend(tiny_model_dir / m.graphs["unpack_repack"], device=device)
        assert backend.provider == CUDA_PROVIDER, (device, backend.describe())
        assert backend.provider_options[CUDA_PROVIDER]["use_tf32"] == "0"
    assert resolve_device("auto") == "cuda"


def _solo_and_packed_on_cuda(model_dir, data) -> tuple[list, dict]:
    """``data`` run on CUDA alone (ModelRunner, one at a time) and packed in every mode;
    each runner checked to really run on the CUDA provider."""
    solo = ModelRunner(model_dir, batch_size=1, padding="longest", device="cuda")
    assert CUDA_PROVIDER in solo.backend.describe()
    packed = {}
    for mode in MODES:
        runner = PackRunner(model_dir, mode=mode, device="cuda", max_tokens=None)
        assert CUDA_PROVIDER in runner.backend.describe()
        packed[mode] = runner.run(data)
    return solo.run(data), packed


@pytest.mark.gpu
def test_fp32_on_cuda_matches_the_cpu_bert_base(cuda_base_model_dir):
    """bert-base dimensions (K = 768 and 3072 sums, where TF32 would show): on CUDA, solo and
    both packed layouts agree with the CPU's solo run within fp32's 1e-4, and packed == solo
    on CUDA (prepare's check ran there already)."""
    base_model_dir = cuda_base_model_dir
    assert all(v <= TOLERANCES["fp32"] for v in Manifest.read(base_model_dir).max_abs_diff.values())
    data = synthetic_features(seed_lengths(32), 30522)
    cpu = ModelRunner(base_model_dir, batch_size=1, padding="longest", device="cpu").run(data)
    cuda_solo, packed_by_mode = _solo_and_packed_on_cuda(base_model_dir, data)
    assert _diff(cuda_solo, cpu) <= TOLERANCES["fp32"]
    for mode, packed in packed_by_mode.items():
        assert _diff(packed, cuda_solo) <= TOLERANCES["fp32"], mode
        assert _diff(packed, cpu) <= TOLERANCES["fp32"], mode


@pytest.mark.gpu
def test_fp16_on_cuda_packed_equals_solo_and_near_fp32_cpu(tmp_path, tiny_model_dir):
    """An fp16 folder on CUDA: packed == solo within the fp16 tolerance, and within it of
    the fp32 folder's logits on the CPU (random:tiny, the seed mix)."""
    fp16 = tmp_path / "fp16"
    prepare(
        "random:tiny", fp16, quiet=True, precision="fp16", seq_len=64, batch_size=4, max_valid_num=8
    )
    data = synthetic_features(seed_lengths(32, 64), 30522)
    fp32_cpu = ModelRunner(tiny_model_dir, batch_size=1, padding="longest", device="cpu").run(data)
    cuda_solo, packed_by_mode = _solo_and_packed_on_cuda(fp16, data)
    assert _diff(cuda_solo, fp32_cpu) <= TOLERANCES["fp16"]
    for mode, packed in packed_by_mode.items():
        assert _diff(packed, cuda_solo) <= TOLERANCES["fp16"], mode
