"""Declared range checks: one line per setting instead of a hand-written ``if ... raise``.

Each check returns the value normalised (a numpy integer becomes an ``int``, a number a
``float``) or raises :class:`ValueError` with one message that names the setting, says what
it must be and shows the bad value as ``repr`` shows it::

    seq_len = at_least("seq_len", seq_len, 2)        # seq_len must be an int >= 2, got 1
    n = positive_int("max_batch_size", n, optional=True)
    # max_batch_size must be None or an int >= 1, got 0
    g = in_range("attention_groups", g, 1, 8)         # ... must be an int in [1, 8], got 9
    t = finite_at_least("batch_wait_timeout_s", t, 0)  # ... must be a finite number >= 0, got nan
    mode = one_of("mode", mode, MODES)                # mode must be one of (...), got 'x'

An int is an integral number that is not a bool (:func:`is_int`). Pure: the policy layer, so
every package of the product may use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

__all__ = ["at_least", "finite_at_least", "in_range", "is_int", "one_of", "positive_int"]


def is_int(value: object) -> bool:
    """An integral number (``int``, a numpy integer) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fail(name: str, what: str, value: object, optional: bool) -> ValueError:
    return ValueError(f"{name} must be {'None or ' if optional else ''}{what}, got {value!r}")


def at_least(name: str, value: object, lo: int, *, optional: bool = False) -> int | None:
    """``value`` as an int ``>= lo`` (``None`` passes when ``optional``)."""
    if optional and value is None:
        return None
    if not is_int(value) or value < lo:
        raise _fail(name, f"an int >= {lo}", value, optional)
    return int(value)


def positive_int(name: str, value: object, *, optional: bool = False) -> int | None:
    """``value`` as an int ``>= 1`` (``None`` passes when ``optional``)."""
    return at_least(name, value, 1, optional=optional)


def in_range(
    name: str,
    value: object,
    lo: int,
    hi: int,
    *,
    optional: bool = False,
    lo_name: str | None = None,
    hi_name: str | None = None,
) -> int | None:
    """``value`` as an int in ``[lo, hi]`` (``None`` passes when ``optional``). A bound with
    a name is shown as ``name=value`` (``[seq_len=8, batch_size*seq_len=32]``)."""
    if optional and value is None:
        return None
    if not is_int(value) or not lo <= value <= hi:
        shown_lo = lo if lo_name is None else f"{lo_name}={lo}"
        shown_hi = hi if hi_name is None else f"{hi_name}={hi}"
        raise _fail(name, f"an int in [{shown_lo}, {shown_hi}]", value, optional)
    return int(value)


def finite_at_least(name: str, value: object, lo: float) -> float:
    """``value`` as a finite float ``>= lo`` (an int or a float; not a bool)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < lo
    ):
        raise _fail(name, f"a finite number >= {lo:g}", value, False)
    return float(value)


def one_of(name: str, value: T, choices: Sequence[T]) -> T:
    """``value``, which must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
