"""PackingConfig: defaults, validation messages, capacity_tokens."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from packing.policy import ALGORITHMS, DEFAULT_ALGORITHM, DEFAULT_MODE, MODES, PackingConfig
from packing.policy.shapes import DEFAULT_SHAPES


def test_defaults_match_poprt_example():
    cfg = PackingConfig()
    assert (cfg.seq_len, cfg.batch_size, cfg.max_valid_num) == (256, 16, 40)
    # one default mode everywhere (issue 18): the served app's unpack_repack, no longer the
    # attention_mask of PopRT's example
    assert cfg.mode == "unpack_repack" and cfg.algorithm == "first_fit"
    assert cfg.max_tokens is None
    assert cfg.capacity_tokens == 16 * 256


def test_defaults_are_the_constants():
    cfg = PackingConfig()
    assert (cfg.seq_len, cfg.batch_size, cfg.max_valid_num) == (
        DEFAULT_SHAPES.seq_len,
        DEFAULT_SHAPES.batch_size,
        DEFAULT_SHAPES.max_valid_num,
    )
    assert (cfg.mode, cfg.algorithm) == (DEFAULT_MODE, DEFAULT_ALGORITHM)
    assert DEFAULT_MODE in MODES and DEFAULT_ALGORITHM in ALGORITHMS


def test_constants():
    assert set(MODES) == {"attention_mask", "unpack_repack"}
    assert set(ALGORITHMS) == {"first_fit", "next_fit", "best_fit"}


def test_frozen_and_hashable():
    cfg = PackingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seq_len = 128  # type: ignore[misc]
    assert hash(cfg) == hash(PackingConfig())


def test_capacity_tokens_uses_max_tokens():
    cfg = PackingConfig(seq_len=8, batch_size=4, max_tokens=20)
    assert cfg.capacity_tokens == 20
    assert PackingConfig(seq_len=8, batch_size=4, max_tokens=8).capacity_tokens == 8
    assert PackingConfig(seq_len=8, batch_size=4, max_tokens=32).capacity_tokens == 32


def test_numpy_ints_are_normalised():
    cfg = PackingConfig(seq_len=np.int64(8), batch_size=np.int32(2), max_tokens=np.int64(10))
    assert type(cfg.seq_len) is int and type(cfg.batch_size) is int and type(cfg.max_tokens) is int


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"seq_len": 1}, "1"),
        ({"seq_len": 2.5}, "2.5"),
        ({"batch_size": 0}, "0"),
        ({"batch_size": True}, "True"),
        ({"max_valid_num": -3}, "-3"),
        ({"mode": "packed"}, "'packed'"),
        ({"algorithm": "worst_fit"}, "'worst_fit'"),
        ({"seq_len": 8, "batch_size": 4, "max_tokens": 7}, "7"),
        ({"seq_len": 8, "batch_size": 4, "max_tokens": 33}, "33"),
        ({"max_tokens": 300.0}, "300.0"),
    ],
)
def test_invalid_values_raise_with_value(kwargs, shown):
    with pytest.raises(ValueError) as info:
        PackingConfig(**kwargs)
    assert shown in str(info.value)
    assert next(iter(kwargs)) in str(info.value) or "max_tokens" in str(info.value)


def test_admission_timing_is_not_a_packing_knob():
    """When a batch is sent is admission's (AdmissionConfig, test_admission.py)."""
    with pytest.raises(TypeError, match="timeout_s"):
        PackingConfig(timeout_s=0.01)
