"""What the app may do with its model folder at start: serve it, prepare it, or stop.

The rule (docs/serving.md, "The model folder"): the app prepares ``model_dir`` only when it
is missing (or holds the app's own unfinished preparation), and re-prepares it only when the
app itself prepared it from the same source and only its format is outdated. Every other
difference between the folder and the config stops the app at start with one
:class:`ModelFolderMismatch` message; nothing is written. For a folder that exists:

* ``prepare.precision: auto`` takes the precision the folder holds (``auto`` picks a
  precision for the device only when the folder is prepared); a named precision must match.
* ``model_source`` must match the source the folder was prepared from, except that the default
  ``builtin:squad-mini`` is not checked against a folder a user prepared (``packed-bert
  prepare``, ``prepare()``, or a manifest from before ``prepared_by``): pointing ``model_dir``
  at a folder of one's own serves it as it is.
* the precision served must run on the runners' device (fp16 has no CPU kernels).
* the task (``qa``, ``embed``, ``classify``; ``manifest.json``'s ``task``, qa for manifests
  before tasks) must be the one the app serves, when the app names one (``ModelAsk.task``),
  whoever prepared the folder: a folder of another task is never served under this app's
  routes. A folder the app prepares is prepared for that task.

Shapes are not compared: they are used only when a folder is prepared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packing.model.manifest import (
    FORMAT_VERSION,
    Manifest,
    Provenance,
    preparer_words,
    unfinished_preparer,
)
from packing.model.task import TASKS
from packing.runtime.backend import HALF_PRECISIONS, resolve_device

from .config import AppConfig


class ModelFolderMismatch(ValueError):
    """``model_dir`` cannot be served as the config asks, and the app will not change it."""


@dataclass(frozen=True)
class ModelAsk:
    """What the config asks of ``model_dir`` (:func:`model_ask`)."""

    source: str  # model_source
    precision: str  # prepare.precision: fp32 | int8 | fp16 | auto
    prepare_precision: str  # the precision a missing folder is prepared in (auto resolved)
    device: str  # the runners' device, resolved: cpu | cuda | sim
    seq_len: int  # shapes of a folder the app prepares
    batch_size: int
    max_valid_num: int
    default_source: bool = False  # model_source is the default: not checked on a user's folder
    task: str | None = None  # the task the app serves (TASKS); None: whatever the folder holds


@dataclass(frozen=True)
class Preparation:
    """What the app prepares the folder from, and why (for the log)."""

    source: str
    precision: str
    seq_len: int
    batch_size: int
    max_valid_num: int
    reason: str
    task: str | None = None  # prepare's task: None infers it from the source


def serving_device(device: str) -> str:
    """The runners' device for the config's ``device``: ``sim`` stays ``sim``; ``auto`` is
    ``cuda`` or ``cpu`` as :func:`packing.runtime.backend.resolve_device` finds here."""
    return "sim" if device == "sim" else resolve_device(device)


def model_ask(cfg: AppConfig, task: str | None = None) -> ModelAsk:
    """What ``cfg`` asks of its model folder. ``task``: the task the app serves (default: the
    config's ``task`` field where it has one; None: whatever the folder holds). ValueError
    for a task not in :data:`~packing.model.task.TASKS`."""
    shapes = cfg.prepare
    default = AppConfig.model_fields["model_source"].default
    task = task if task is not None else getattr(cfg, "task", None)
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return ModelAsk(
        source=cfg.model_source,
        precision=shapes.precision,
        prepare_precision=cfg.precision(),
        device=serving_device(cfg.device),
        seq_len=shapes.seq_len,
        batch_size=shapes.batch_size,
        max_valid_num=shapes.max_valid_num,
        default_source=cfg.model_source == default,
        task=task,
    )


def decide(folder: Path, ask: ModelAsk) -> Preparation | None:
    """None when ``folder`` is to be served as it is; a :class:`Preparation` when the app may
    (re)prepare it (missing, empty, the app's unfinished preparation, or app-made from
    ``ask.source`` with only an outdated format).

    Raises ModelFolderMismatch, naming the folder, what it holds, what the config asks and
    the two ways out, in every other case (module docstring). Reads the folder, writes nothing.
    """
    if folder.exists() and not folder.is_dir():
        raise ModelFolderMismatch(
            f"model_dir {folder} is a file, not a folder: point model_dir "
            "at a folder (a new one is prepared at start)"
        )
    try:
        held = Manifest.provenance(folder) if folder.is_dir() else None
    except ValueError as err:
        raise ModelFolderMismatch(
            f"model_dir {folder} has a manifest this code cannot read ({err}); the app never "
            f"overwrites a model folder. Two ways out: (1) point model_dir at a new folder, "
            f"which the app prepares from {ask.source!r} in {ask.prepare_precision}; or "
            "(2) delete this folder yourself, and the app prepares it again"
        ) from err
    if held is None:
        return _without_manifest(folder, ask)
    return _with_manifest(folder, held, ask)


def _without_manifest(folder: Path, ask: ModelAsk) -> Preparation | None:
    """A missing or empty folder, or one with files and no manifest."""
    _check_runs(folder, ask.prepare_precision, ask)
    who = unfinished_preparer(folder) if folder.exists() else None
    reason = (
        "is missing"
        if not folder.exists()
        else "is empty"
        if not any(folder.iterdir())
        else "holds the app's unfinished preparation"
        if who == "app"
        else None
    )
    if reason:
        return Preparation(
            ask.source,
            ask.prepare_precision,
            ask.seq_len,
            ask.batch_size,
            ask.max_valid_num,
            reason,
            task=ask.task,
        )
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    what = (
        f"an unfinished preparation by {preparer_words(who)}"
        if who
        else "files but no manifest.json: not a prepared model folder"
    )
    raise ModelFolderMismatch(
        f"model_dir {folder} holds {what} ({shown}); the app never overwrites a model folder. "
        f"Two ways out: (1) point model_dir at a new folder, which the app prepares from "
        f"{ask.source!r}{_for_task(ask.task)} in {ask.prepare_precision}; or (2) finish or "
        f"delete this folder yourself (`packed-bert prepare --model SOURCE"
        f"{_task_flag(ask.task)} --out {folder}`)"
    )


def _with_manifest(folder: Path, held: Provenance, ask: ModelAsk) -> Preparation | None:
    """A prepared folder: serve it, re-prepare it (app-made, format only) or stop."""
    precision = held.precision if ask.precision == "auto" else ask.precision
    problems: list[str] = []
    keep: list[str] = []  # what makes the config take the folder as it is
    if held.source != ask.source and (held.app_made or not ask.default_source):
        problems.append(
            f"it was prepared from {held.source!r}, the config's model_source is {ask.source!r}"
        )
        keep.append(f"set model_source: {held.source}")
    if precision != held.precision:
        problems.append(
            f"it holds {held.precision}, the config's prepare.precision is {ask.precision}"
        )
        keep.append(f"set prepare.precision: {held.precision} (or auto)")
    if ask.task is not None and held.task != ask.task:
        problems.append(f"it serves task {held.task}, the app serves task {ask.task}")
        keep.append(f"serve it from an app of task {held.task}")
    if not _runs(held.precision, ask.device):
        problems.append(
            f"it holds {held.precision}, which the runners' device {ask.device} has no kernels for"
        )
        keep.append("set device: cuda (onnxruntime-gpu)")
    stale = held.format_version != FORMAT_VERSION
    if stale and not problems and held.app_made:
        return Preparation(
            held.source,
            held.precision,
            held.seq_len or ask.seq_len,
            held.batch_size or ask.batch_size,
            held.max_valid_num or ask.max_valid_num,
            f"has format_version {held.format_version}, this code reads "
            f"{FORMAT_VERSION} (the app prepared it; same source and precision)",
            task=held.task,
        )
    if stale and not held.app_made:
        problems.append(
            f"its format_version {held.format_version} is not the "
            f"{FORMAT_VERSION} this code reads, and the app re-prepares only "
            "folders it prepared itself"
        )
        keep.append("prepare it again yourself: " + _prepare_command(folder, held))
    if not problems:
        return None
    asked = ask.precision + (
        f" ({ask.prepare_precision} for a new folder on {ask.device})"
        if ask.precision == "auto"
        else ""
    )
    raise ModelFolderMismatch(
        f"model_dir {folder} does not hold what the config asks: {'; '.join(problems)}. "
        f"The folder holds {held.describe()}; the config asks for model_source {ask.source!r}"
        f"{_for_task(ask.task)} in precision {asked} on device {ask.device}. The app never "
        "overwrites a model folder it did not prepare, nor one of another source, task or "
        "precision. Two ways out: (1) point "
        f"model_dir at a new folder, which the app prepares from {ask.source!r}"
        f"{_for_task(ask.task)} in "
        f"{ask.prepare_precision}; or (2) keep this folder: {' and '.join(keep)}. To rebuild "
        "it from the config instead, delete it yourself; the app then prepares it at start"
    )


def _runs(precision: str, device: str) -> bool:
    """Whether the runners on ``device`` run graphs of ``precision`` (sim runs no graph)."""
    return not (device == "cpu" and precision in HALF_PRECISIONS)


def _check_runs(folder: Path, precision: str, ask: ModelAsk) -> None:
    """ModelFolderMismatch before preparing a folder in a precision the device cannot run."""
    if not _runs(precision, ask.device):
        raise ModelFolderMismatch(
            f"model_dir {folder} would be prepared in {precision}, which the runners' device "
            f"{ask.device} has no kernels for: set prepare.precision: auto (int8 on a CPU), "
            "int8 or fp32, or device: cuda (onnxruntime-gpu)"
        )


def _for_task(task: str | None) -> str:
    """`` for task X`` in a message, or nothing when the app names no task."""
    return "" if task is None else f" for task {task}"


def _task_flag(task: str | None) -> str:
    """`` --task X`` of a ``packed-bert prepare`` command, or nothing (inferred, qa before
    tasks)."""
    return "" if task is None or task == "qa" else f" --task {task}"


def _prepare_command(folder: Path, held: Provenance) -> str:
    """The ``packed-bert prepare`` command that rebuilds ``held`` at ``folder``."""
    shapes = "".join(
        f" --{flag} {value}"
        for flag, value in (
            ("seq-len", held.seq_len),
            ("batch-size", held.batch_size),
            ("max-valid-num", held.max_valid_num),
        )
        if value is not None
    )
    return (
        f"`packed-bert prepare --model {held.source}{_task_flag(held.task)} --precision "
        f"{held.precision}{shapes} --out {folder}`"
    )
