"""The declared range checks (packing.policy.checks): values normalised, messages that name the
setting and show the bad value as repr shows it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from packing.policy.checks import at_least, finite_at_least, in_range, is_int, one_of, positive_int


def test_is_int():
    assert is_int(3) and is_int(np.int64(3)) and is_int(-1)
    assert not any(is_int(v) for v in (True, False, 3.0, "3", None, np.float32(3)))


def test_checks_return_the_value_normalised():
    n = positive_int("n", np.int32(4))
    assert n == 4 and type(n) is int
    assert positive_int("n", None, optional=True) is None
    assert at_least("seq_len", 2, 2) == 2
    assert in_range("g", np.int64(8), 1, 8) == 8 and type(in_range("g", np.int64(8), 1, 8)) is int
    assert in_range("m", None, 1, 8, optional=True) is None
    t = finite_at_least("t", 1, 0)
    assert t == 1.0 and type(t) is float
    assert one_of("mode", "b", ("a", "b")) == "b"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: positive_int("batch_size", 0), "batch_size must be an int >= 1, got 0"),
        (lambda: positive_int("batch_size", True), "batch_size must be an int >= 1, got True"),
        (
            lambda: positive_int("max_batch_size", 2.5, optional=True),
            "max_batch_size must be None or an int >= 1, got 2.5",
        ),
        (lambda: at_least("seq_len", 1, 2), "seq_len must be an int >= 2, got 1"),
        (
            lambda: in_range("attention_groups", 9, 1, 8),
            "attention_groups must be an int in [1, 8], got 9",
        ),
        (
            lambda: in_range(
                "max_tokens",
                7,
                8,
                32,
                optional=True,
                lo_name="seq_len",
                hi_name="batch_size*seq_len",
            ),
            "max_tokens must be None or an int in [seq_len=8, batch_size*seq_len=32], got 7",
        ),
        (
            lambda: finite_at_least("batch_wait_timeout_s", -0.1, 0),
            "batch_wait_timeout_s must be a finite number >= 0, got -0.1",
        ),
        (
            lambda: finite_at_least("batch_wait_timeout_s", math.inf, 0),
            "batch_wait_timeout_s must be a finite number >= 0, got inf",
        ),
        (
            lambda: finite_at_least("batch_wait_timeout_s", False, 0),
            "batch_wait_timeout_s must be a finite number >= 0, got False",
        ),
        (
            lambda: one_of("mode", "packed", ("attention_mask", "unpack_repack")),
            "mode must be one of ('attention_mask', 'unpack_repack'), got 'packed'",
        ),
    ],
)
def test_messages_name_the_setting_and_show_the_value(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
