"""Checks of single JSON fields, shared by the body parsers of every route (pure).

Each takes a JSON-decoded value and returns a Python value or raises
:class:`~packing.qa.requests.BadRequest` with one line that names the field as the client
wrote it (``where`` is a prefix such as ``"parameters."``) and shows the bad value. A field
that is absent or ``null`` is "not given" everywhere: clients differ in which of the two they
send for an unset option.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from packing.qa.requests import BadRequest, short_repr, type_name

__all__ = ["check_fields", "choice", "expect_object", "flag", "given", "integer"]


def expect_object(value: Any, what: str) -> dict:
    """``value`` if it is a JSON object, else BadRequest ``"<what> must be an object ..."``."""
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type_name(value)}")
    return value


def check_fields(
    obj: Mapping[str, Any], required: Collection[str], optional: Collection[str], where: str = ""
) -> None:
    """Every name of ``required`` is a key of ``obj`` and every key is in ``required`` or
    ``optional``; else one BadRequest listing the missing fields, then the unknown ones
    (five at most, each shown cut to 40 characters)."""
    problems = []
    missing = [f for f in required if f not in obj]
    if missing:
        problems.append(
            "missing field"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(repr(where + f) for f in missing)
        )
    unknown = [k for k in obj if k not in required and k not in optional]
    if unknown:
        names = ", ".join(short_repr(where + str(k)) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        known = ", ".join(sorted([*required, *optional]))
        problems.append(
            "unknown field"
            + ("s " if len(unknown) > 1 else " ")
            + names
            + more
            + f" (known: {known})"
        )
    if problems:
        raise BadRequest("; ".join(problems))


def given(obj: Mapping[str, Any], key: str) -> bool:
    """Whether ``key`` holds a value (present and not ``null``)."""
    return obj.get(key) is not None


def flag(obj: Mapping[str, Any], key: str, default: bool, where: str = "") -> bool:
    """``obj[key]`` as a bool, ``default`` when not given; BadRequest for any other type."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{where}{key} must be true or false, got {short_repr(value)}")
    return value


def integer(obj: Mapping[str, Any], key: str, lo: int, hi: int, where: str = "") -> int | None:
    """``obj[key]`` as an int in ``[lo, hi]``, None when not given; BadRequest otherwise
    (a bool or a float is not an int here)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}{key} must be an integer, got {short_repr(value)}")
    if not lo <= value <= hi:
        raise BadRequest(f"{where}{key} must be between {lo} and {hi}, got {value}")
    return value


def choice(
    obj: Mapping[str, Any], key: str, choices: Sequence[str], default: str | None, where: str = ""
) -> str | None:
    """``obj[key]``, one of ``choices`` (exact spelling), ``default`` when not given."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise BadRequest(f"{where}{key} must be one of {options}, got {short_repr(value)}")
    return value
