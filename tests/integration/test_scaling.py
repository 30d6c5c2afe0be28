"""``packed-bert scaling``: one small end-to-end run on Ray (slow); the report arithmetic is in
tests/unit/test_scaling.py."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_scaling_end_to_end(tiny_model_dir):
    from packing.runners.workloads import synthetic_features
    from tools.scaling import scaling

    data = synthetic_features(np.random.default_rng(0).integers(1, 65, 300), 30522, seed=1)
    report = scaling(
        str(tiny_model_dir),
        data,
        replicas=(1,),
        profile="fast",
        outstanding=64,
        per_call=8,
        warmup=16,
        progress=False,
    )
    assert [r["crossed"] for r in report["rows"]] == [0, 0]
    assert report["rows"][0]["sequences"] == 300
