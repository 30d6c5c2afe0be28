"""``packed-bert``: prepare model folders and benchmark the run modes."""

from __future__ import annotations

import argparse
import sys

from . import batch, bench, calibrate, prepare, train
from . import eval as eval_
from .common import run

PROG = "packed-bert"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: one module of this package per command group."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    prepare.register(sub)
    train.register(sub)
    eval_.register(sub)
    bench.register(sub)
    bench.register_efficiency(sub)
    batch.register(sub)
    calibrate.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
