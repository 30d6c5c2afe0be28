"""``python -m tools``: load, soak, ceiling, overload, scaling and multi-node drills.

Development tooling, apart from the product (``packed-bert``): these commands drive a running
app, start their own ``serve run`` processes or private Ray clusters, and measure them. They
reuse the product's argument helpers and report writer (:mod:`packing.cli`); no product
module imports anything here.
"""

from __future__ import annotations

import argparse

from packing.cli.common import run

from . import benchmarks, clusters, running_app, serve_drills
from .flags import PROG

__all__ = ["PROG", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The tools' command line: every command of :mod:`~tools.cli.running_app`,
    :mod:`~tools.cli.serve_drills`, :mod:`~tools.cli.clusters` and
    :mod:`~tools.cli.benchmarks`, in that order."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for group in (running_app, serve_drills, clusters, benchmarks):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    return run(build_parser(), argv)
