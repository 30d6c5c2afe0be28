"""Bigger checks, outside the default run: ``-m slow`` (bert-base) and ``-m gpu`` (CUDA)."""

from __future__ import annotations

import numpy as np
import pytest

from packing.runtime.workloads import seed_lengths, synthetic_features
from packing.model.prepare import prepare
from packing.runtime import ModelRunner, PackRunner


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "model"
    prepare("random:base", out, quiet=True)  # fails itself above 1e-4
    return out


@pytest.mark.slow
def test_bert_base_online_modes_match_solo(base_model_dir):
    data = synthetic_features(seed_lengths(48), 30522)
    solo = ModelRunner(base_model_dir, batch_size=1, padding="longest")
    ref = [solo.run([f])[0] for f in data]
    for mode in ("attention_mask", "unpack_repack"):
        with PackRunner(base_model_dir, mode=mode, batch_wait_timeout_s=0.05,
                        max_tokens=None) as runner:  # pinned: the full batch
            got = [f.result() for f in runner.submit_many(data)]
        worst = max(float(np.abs(g.start_logits - r.start_logits).max()) for g, r in zip(got, ref))
        assert worst <= 1e-4, (mode, worst)


@pytest.mark.gpu
def test_cuda_provider_matches_cpu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA is not available")
    out = tmp_path / "m"
    prepare("random:tiny", out, quiet=True)
    data = synthetic_features(seed_lengths(64), 30522)
    # the same pinned budget (the full batch) on both: the same plans, not two calibrations
    cpu = PackRunner(out, mode="attention_mask", device="cpu", max_tokens=None).run(data)
    gpu = PackRunner(out, mode="attention_mask", device="cuda", max_tokens=None).run(data)
    assert all(np.abs(a.start_logits - b.start_logits).max() <= 1e-3 for a, b in zip(cpu, gpu))
