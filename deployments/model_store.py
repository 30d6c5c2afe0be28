"""Make sure a prepared model folder exists, preparing it once per host if needed."""

from __future__ import annotations

import fcntl
import json
import logging
from pathlib import Path

from packing.model.manifest import FORMAT_VERSION, MANIFEST, Manifest

log = logging.getLogger("ray.serve")


def ensure_model(model_dir: str, source: str, seq_len: int, batch_size: int,
                 max_valid_num: int, precision: str = "fp32") -> Manifest:
    """Return the folder's manifest, preparing it from ``source`` in ``precision`` first when
    it has none, one of an older format than this code builds, or one of another precision.

    Replicas on the same host serialise on a lock file, so the folder is prepared once.
    """
    folder = Path(model_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stale = _stale_format(folder) or _other_precision(folder, precision)
        if stale or not (folder / MANIFEST).exists():
            log.warning("model folder %s %s: preparing it from %s in %s", folder,
                        stale or "has no manifest", source, precision)
            from packing.model.prepare import prepare

            prepare(source, folder, seq_len=seq_len, batch_size=batch_size,
                    max_valid_num=max_valid_num, quiet=True, precision=precision)
        return Manifest.read(folder)


def _stale_format(folder: Path) -> str | None:
    """Why the folder's manifest is of an older format than this code builds, else None."""
    try:
        version = json.loads((folder / MANIFEST).read_text()).get("format_version")
    except (OSError, ValueError):
        return None
    if version != FORMAT_VERSION:
        return f"has format_version {version}, this code needs {FORMAT_VERSION}"
    return None


def _other_precision(folder: Path, precision: str) -> str | None:
    """Why the folder's manifest is of another precision than ``precision``, else None."""
    try:
        found = json.loads((folder / MANIFEST).read_text()).get("precision", "fp32")
    except (OSError, ValueError):
        return None
    if found != precision:
        return f"is {found}, the config asks for {precision}"
    return None
