"""The one report writer of the command line (``packed-bert`` and ``python -m tools``).

Every command that measures something prints its table or lines and, with ``--json PATH``,
writes the full report there; :func:`emit` does both, in that order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_json(
    path: str | Path, report: Any, *, default: Callable | None = None, announce: bool = True
) -> None:
    """Write ``report`` (a JSON-able object, or text already serialised) to ``path`` with a
    final newline; print ``wrote PATH`` unless ``announce`` is False."""
    body = report if isinstance(report, str) else json.dumps(report, indent=2, default=default)
    Path(path).write_text(body + "\n")
    if announce:
        print(f"wrote {path}")


def emit(
    report: Any,
    json_path: str | Path | None = None,
    *,
    table: str | None = None,
    default: Callable | None = None,
    announce: bool = True,
) -> None:
    """Print ``table`` (if any), then write ``report`` to ``json_path`` (if given: the
    command's ``--json``) with :func:`write_json`."""
    if table is not None:
        print(table)
    if json_path:
        write_json(json_path, report, default=default, announce=announce)
