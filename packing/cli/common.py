"""Argument types, shared flags and the entry-point wrapper of the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def unit_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def budget(text: str) -> int | str | None:
    """--max-tokens: 'auto', 'full' (None: batch_size x seq_len) or a positive int."""
    if text in ("auto", "full"):
        return None if text == "full" else text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto, full or an int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def report_flags(
    p: argparse.ArgumentParser, json_help: str = "write the report here"
) -> argparse.ArgumentParser:
    """Add the report options every drill and benchmark command shares: ``--json PATH`` and
    ``--no-progress``; returns ``p``."""
    p.add_argument("--json", help=json_help)
    p.add_argument("--no-progress", action="store_true")
    return p


def backend_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--backend, onnxruntime's --device and the sim backend's options (see
    packing.runtime.sim)."""
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "sim"],
        default="onnxruntime",
        help="model runtime: onnxruntime, or sim (a simulated accelerator that "
        "sleeps for its device time and returns deterministic logits)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="onnxruntime's device (default auto: CUDA when a session really gets "
        "it, else the CPU); cuda fails unless the sessions run on "
        "CUDAExecutionProvider",
    )
    p.add_argument(
        "--sim-profile",
        default=None,
        metavar="NAME",
        help="sim device profile: ipu (default; static shapes, 1,861 padded "
        "16x256 sequences/s), slow (static, 125 ms per full batch) or fast "
        "(dynamic shapes, never the bottleneck)",
    )
    p.add_argument(
        "--sim-tokens-per-s",
        type=positive_float,
        default=None,
        metavar="N",
        help="override the sim profile's speed (token slots per second)",
    )
    return p


def backend_choice(args: argparse.Namespace) -> tuple[str, dict]:
    """(backend name, its options) from --backend / --device / --sim-profile /
    --sim-tokens-per-s.

    ``--device`` is onnxruntime's (``{"device": ...}``, absent when not given); the sim
    options need ``--backend sim``; a bad profile name or speed is a ValueError
    (one line, exit 2) raised by the sim itself.
    """
    device = getattr(args, "device", None)
    if args.backend != "sim":
        given = [
            flag
            for flag, value in (
                ("--sim-profile", args.sim_profile),
                ("--sim-tokens-per-s", args.sim_tokens_per_s),
            )
            if value is not None
        ]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise ValueError(f"{' and '.join(given)} {verb} --backend sim")
        return args.backend, ({} if device is None else {"device": device})
    if device is not None:
        raise ValueError(
            "--device chooses onnxruntime's device; it does not apply to --backend sim"
        )
    from packing.runtime.sim import sim_profile

    options = {"profile": args.sim_profile or "ipu"}
    if args.sim_tokens_per_s is not None:
        options["tokens_per_s"] = args.sim_tokens_per_s
    sim_profile(options["profile"], options.get("tokens_per_s"))  # fail before any work
    return "sim", options


def workload_of(args: argparse.Namespace) -> list:
    """The features of ``--workload`` / ``--samples`` / ``--seed`` for ``--model-dir`` (a path,
    or a :class:`~packing.model.prepared.PreparedModel` a command opened already)."""
    from packing.model.prepared import PreparedModel
    from packing.runners.workloads import load_workload

    model = PreparedModel.open(args.model_dir)
    manifest = model.manifest
    return load_workload(
        args.workload,
        args.samples,
        model,
        manifest.seq_len,
        manifest.dims.vocab_size,
        manifest.dims.type_vocab_size,
        args.seed,
    )


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print one line and exit 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
