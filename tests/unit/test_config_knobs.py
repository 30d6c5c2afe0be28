"""The packer's knobs are written once (issue 29): the served Packer's ``PackingKnobs`` and the
in-process ``PackRunner`` take the same defaults and build their PackingConfig the same way
(packing.runtime.knobs.packing_config)."""

from __future__ import annotations

import inspect

import pytest

from deployments.config import PackingKnobs
from packing.policy.config import PackingConfig
from packing.policy.shapes import DEFAULT_SHAPES, Shapes
from packing.runners.pack_runner import PackRunner
from packing.runtime.knobs import DEFAULT_MAX_TOKENS, DEFAULT_MAX_VALID_NUM, packing_config

SHARED = (
    "mode",
    "algorithm",
    "max_valid_num",
    "max_batch_size",
    "batch_wait_timeout_s",
    "max_concurrent_batches",
    "max_tokens",
    "attention_groups",
    "dispatch",
)


def test_served_knobs_and_runner_share_every_default():
    served = PackingKnobs()
    params = inspect.signature(PackRunner).parameters
    for name in SHARED:
        assert getattr(served, name) == params[name].default, name
    assert (served.max_tokens, served.max_valid_num) == (DEFAULT_MAX_TOKENS, DEFAULT_MAX_VALID_NUM)


@pytest.mark.parametrize(
    "knobs, calibrated",
    [
        ({}, None),
        ({}, 1024),
        ({"max_tokens": None, "max_valid_num": 12}, 1024),
        ({"max_tokens": 300, "mode": "attention_mask", "algorithm": "best_fit"}, None),
        ({"attention_groups": 1}, 512),
    ],
)
def test_served_knobs_build_the_runners_config(knobs, calibrated):
    served = PackingKnobs(**knobs).packing_config(DEFAULT_SHAPES, calibrated)
    assert served == packing_config(DEFAULT_SHAPES, **knobs, calibrated=calibrated)
    budget = calibrated if knobs.get("max_tokens", "auto") == "auto" else knobs["max_tokens"]
    assert served.max_tokens == budget
    assert served.max_valid_num == (knobs.get("max_valid_num") or DEFAULT_SHAPES.max_valid_num)


def test_packing_config_names_a_bad_knob():
    shapes = Shapes(seq_len=8, batch_size=4, max_valid_num=6)
    assert packing_config(shapes) == PackingConfig(seq_len=8, batch_size=4, max_valid_num=6)
    with pytest.raises(ValueError, match="max_tokens must be an int, None or 'auto', got 'full'"):
        packing_config(shapes, max_tokens="full")
    with pytest.raises(ValueError) as info:
        packing_config(shapes, calibrated=5)
    assert str(info.value) == (
        "max_tokens 'auto' (calibrated budget 5): max_tokens must be None or an int in "
        "[seq_len=8, batch_size*seq_len=32], got 5"
    )
    with pytest.raises(ValueError, match=r"max_tokens must be None or an int in .*got 33"):
        packing_config(shapes, max_tokens=33)
    with pytest.raises(ValueError, match="attention_groups must be an int in"):
        packing_config(shapes, attention_groups=0)
