"""Make sure the model folder holds what the config asks, preparing it once per host when the
app may (:mod:`deployments.model_match`); never overwrite a folder the app may not."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from packing.model.manifest import Manifest
from packing.model.prepared import PreparedModel

from .model_match import ModelAsk, decide

log = logging.getLogger("ray.serve")


def ensure_model(model_dir: str, ask: ModelAsk) -> PreparedModel:
    """Return ``model_dir`` opened (:class:`~packing.model.prepared.PreparedModel`, its
    manifest read once) once it holds what ``ask`` asks for.

    The folder is prepared from ``ask`` (recorded as ``prepared_by: app``; for ``ask.task``
    when the app names one, else for the task its source infers) only when it is missing,
    empty or the app's own unfinished preparation, and prepared again, from the source and
    for the task, in the precision and shapes it records, only when the app prepared it and
    only its format is outdated. Anything else that differs raises
    :class:`~deployments.model_match.ModelFolderMismatch` before a file is written; a folder
    that matches (``auto`` precision: whatever it holds) is served as it is, untouched.

    Replicas on the same host serialise on a lock file beside the folder, so it is prepared
    once.
    """
    folder = Path(model_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        plan = decide(folder, ask)
        if plan is None:
            held = Manifest.provenance(folder)
            log.info("model folder %s: serving it as it is (%s)", folder, held.describe())
        else:
            log.warning(
                "model folder %s %s: preparing it from %s in %s for task %s",
                folder,
                plan.reason,
                plan.source,
                plan.precision,
                plan.task or "inferred from the source",
            )
            from packing.model.prepare import prepare

            prepare(
                plan.source,
                folder,
                seq_len=plan.seq_len,
                batch_size=plan.batch_size,
                max_valid_num=plan.max_valid_num,
                quiet=True,
                precision=plan.precision,
                prepared_by="app",
                task=plan.task,
            )
        # read here, under the lock: what the folder holds now, prepared above or as it was
        return PreparedModel.open(folder)
