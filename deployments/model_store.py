"""Make sure a prepared model folder exists, preparing it once per host if needed."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from packing.model.manifest import MANIFEST, Manifest

log = logging.getLogger("ray.serve")


def ensure_model(model_dir: str, source: str, seq_len: int, batch_size: int,
                 max_valid_num: int) -> Manifest:
    """Return the folder's manifest, preparing it from ``source`` first when it has none.

    Replicas on the same host serialise on a lock file, so the folder is prepared once.
    """
    folder = Path(model_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / MANIFEST).exists():
            log.warning("model folder %s has no manifest: preparing it from %s", folder, source)
            from packing.model.prepare import prepare

            prepare(source, folder, seq_len=seq_len, batch_size=batch_size,
                    max_valid_num=max_valid_num, quiet=True)
        return Manifest.read(folder)
