"""The promise: a request's logits are the same, bit for bit, alone and in any batch.

A target sequence is run alone, then packed (by the one packing policy, ``collate``) among
random neighbours at a random position of the arrival order, with 1 to 4 attention width
groups, through the ``unpack_repack`` graph on ONNX Runtime's CPU provider with 2 threads
(as a served runner replica), in int8 and fp32. Its logits must be *equal*, not close: int8
quantizes each token's activations, so a last-bit float32 difference in attention becomes
whole int8 steps (see :mod:`packing.policy.attention`).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packing.model.prepare import prepare
from packing.policy.collate import collate
from packing.policy.config import PackingConfig
from packing.runtime.executor import PlanExecutor, open_graph
from packing.runtime.features import Features

SEQ_LEN = 128
SHAPE = {"seq_len": SEQ_LEN, "batch_size": 4, "max_valid_num": 16}


@pytest.fixture(scope="module", params=["int8", "fp32"])
def executor(request, tmp_path_factory) -> PlanExecutor:
    """A PlanExecutor on random:tiny's unpack_repack graph in the parametrised precision."""
    out = tmp_path_factory.mktemp(f"inv-{request.param}") / "model"
    prepare("random:tiny", out, quiet=True, precision=request.param, **SHAPE)
    manifest, backend = open_graph(out, "unpack_repack", "onnxruntime", {"intra_op_threads": 2})
    return PlanExecutor(backend, manifest)


def _features(rng: np.random.Generator, length: int, vocab: int) -> Features:
    ids = rng.integers(1000, vocab, length)
    types = np.zeros(length, dtype=np.int64)
    types[length // 3 :] = 1
    return Features(ids.astype(np.int64), types)


def _logits_of(ex: PlanExecutor, feats: list[Features], groups: int, k: int) -> np.ndarray:
    """Start and end logits of ``feats[k]`` when ``feats`` arrive in this order."""
    m = ex.manifest
    config = PackingConfig(
        seq_len=m.seq_len,
        batch_size=m.batch_size,
        max_valid_num=m.max_valid_num,
        mode="unpack_repack",
        algorithm="first_fit",
        max_tokens=None,
        attention_groups=groups,
    )
    for plan in collate([len(f) for f in feats], config):
        ids = [int(i) for i in plan.seq_ids]
        if k in ids:
            out = ex.execute(plan, [feats[i] for i in ids])[ids.index(k)]
            return np.concatenate([out.start_logits, out.end_logits])
    raise AssertionError("target not in any plan")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    target_len=st.integers(1, SEQ_LEN),
    neighbours=st.lists(st.integers(1, SEQ_LEN), min_size=1, max_size=15),
    position=st.integers(0, 15),
    groups=st.integers(1, 4),
)
def test_logits_alone_equal_logits_among_any_neighbours(
    executor, seed, target_len, neighbours, position, groups
):
    rng = np.random.default_rng(seed)
    vocab = executor.manifest.dims.vocab_size
    target = _features(rng, target_len, vocab)
    others = [_features(rng, n, vocab) for n in neighbours]
    k = min(position, len(others))
    crowd = others[:k] + [target] + others[k:]
    alone = _logits_of(executor, [target], groups, 0)
    assert np.array_equal(_logits_of(executor, crowd, groups, k), alone)
