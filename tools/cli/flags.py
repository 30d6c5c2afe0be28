"""What the tools' commands share: the program name and the flag groups of several commands."""

from __future__ import annotations

import argparse

from packing.cli.common import positive_float, positive_int, report_flags
from packing.runners.workloads import DEFAULT_SEED

PROG = "python -m tools"


def cluster_flags(p: argparse.ArgumentParser, samples: int) -> argparse.ArgumentParser:
    """Options of the commands that run the app on a local multi-node cluster of sim devices."""
    model_dir_flag(p)
    p.add_argument("--workers", type=positive_int, default=2, help="accelerator nodes")
    p.add_argument("--per-worker", type=positive_int, default=2, help="IPUs each node declares")
    p.add_argument("--sim-profile", default="slow", help="sim device profile of the runners")
    p.add_argument(
        "--sim-tokens-per-s",
        type=positive_float,
        default=None,
        metavar="N",
        help="the sim device's speed instead of the profile's",
    )
    workload_flags(p, samples)
    p.add_argument("--json", help="write the report here")
    return p


def workload_flags(p: argparse.ArgumentParser, samples: int) -> argparse.ArgumentParser:
    """``--samples`` (windows to send, default ``samples``), ``--workload`` and ``--seed`` of
    the drills that build their own request mix."""
    p.add_argument("--samples", type=positive_int, default=samples, help="windows to send")
    p.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="workload RNG seed")
    return p


def app_client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options shared by the commands that drive a running app."""
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model-dir", required=True, help="the app's prepared model folder")
    p.add_argument("--workload", default="seed", help="seed | short | squad:FILE | lengths:FILE")
    report_flags(p)
    return p


def command(sub, func, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand ``name`` whose parsed arguments go to ``func``; ``kwargs`` to add_parser."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=func)
    return p


def model_dir_flag(p: argparse.ArgumentParser) -> None:
    """The required ``--model-dir`` of the drills: a folder written by ``packed-bert prepare``."""
    p.add_argument("--model-dir", required=True, help="a folder written by 'prepare'")


def sim_admission_flags(p: argparse.ArgumentParser, profile_help: str) -> None:
    """``--sim-profile`` (default ``slow``) and ``--batch-wait-timeout-s`` (default 5 ms) of the
    drills that run the app on the sim device."""
    p.add_argument("--sim-profile", default="slow", help=profile_help)
    p.add_argument(
        "--batch-wait-timeout-s",
        type=float,
        default=0.005,
        help="packer admission: longest a batch stays open (as @serve.batch)",
    )
