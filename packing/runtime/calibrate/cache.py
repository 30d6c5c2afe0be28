"""The calibration cache, ``calibration.json`` next to the model, and the budget a setting asks for.

The cache is a dict of :func:`~packing.runtime.calibrate.key.fingerprint` -> entry (the
:class:`~packing.runtime.calibrate.curve.Calibration`'s fields plus the fingerprinted
facts). :func:`load_or_calibrate` returns a matching entry without measuring, else measures
and stores one; :func:`resolve_max_tokens` turns a runner's or packer's ``max_tokens``
setting (an int, ``None`` or ``"auto"``) into the budget to use.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from packing.model.manifest import CALIBRATION
from packing.model.prepared import ModelLike, PreparedModel

from .curve import DEFAULT_THRESHOLD, Calibration
from .key import NotCalibratable, fingerprint
from .load import MAX_OTHERS_LOAD
from .measure import calibrate

log = logging.getLogger(__name__)

CACHE_FILE = CALIBRATION  # "calibration.json"
AUTO = "auto"


def check_budget_word(max_tokens: str) -> str:
    """``max_tokens`` if it is the one word a budget may be (:data:`AUTO`), else ValueError
    naming the value (an int or None are the other budgets)."""
    if max_tokens != AUTO:
        raise ValueError(f"max_tokens must be an int, None or {AUTO!r}, got {max_tokens!r}")
    return max_tokens


def cache_path(model_dir: ModelLike) -> Path:
    """Where calibrations of ``model_dir`` are cached: ``model_dir/calibration.json`` (the
    manifest is not read)."""
    return Path(model_dir) / CACHE_FILE


def _read_cache(path: Path) -> dict:
    """The cache's entries; {} when absent, unreadable or not a JSON object."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_cache(path: Path, entries: dict) -> bool:
    """Write atomically (temp file in the same folder, then ``os.replace``); False on OSError."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(entries, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("could not write %s: %s (calibration not cached)", path, exc)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def load_or_calibrate(
    model_dir: ModelLike,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    plan_overhead_s: float = 0.0,
    force: bool = False,
    progress: bool | None = None,
    **measure,
) -> Calibration:
    """The cached calibration of ``model_dir`` (a :class:`~packing.model.prepared.PreparedModel`,
    or a folder opened here) on this backend and host, else a new one.

    Looks up :func:`fingerprint` in ``model_dir/calibration.json``; a matching, well-formed
    entry is returned (``from_cache=True``) without measuring, its budget re-picked from the
    stored curve with ``threshold`` and ``plan_overhead_s`` if either differs. Otherwise (or with ``force``) it
    runs :func:`calibrate` (``**measure``: its measuring keywords) and stores the entry under
    the fingerprint, keeping other entries; a corrupt or unreadable cache file is replaced.
    A calibration measured while other processes took more than :data:`MAX_OTHERS_LOAD` of
    the host's CPU is returned but not stored (a warning says so): the next call measures
    again. The write is atomic; a folder that cannot be written only loses the caching. Raises
    :class:`NotCalibratable` when the options cannot be fingerprinted or the folder is not
    fully prepared.
    """
    model = PreparedModel.open(model_dir)
    key, facts = fingerprint(model, backend, backend_options)
    path = cache_path(model)
    entries = _read_cache(path)
    if not force and key in entries:
        try:
            cached = Calibration.from_dict(entries[key])
            if cached.fingerprint != key:
                raise ValueError("fingerprint mismatch")
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("%s: ignoring a malformed entry %s (%s); measuring again", path, key, exc)
        else:
            return cached.repicked(threshold, plan_overhead_s)
    cal = calibrate(
        model,
        backend,
        backend_options,
        threshold=threshold,
        plan_overhead_s=plan_overhead_s,
        progress=progress,
        **measure,
    )
    if cal.others_load is not None and cal.others_load > MAX_OTHERS_LOAD:
        log.warning(
            "%s: other processes took %.0f%% of the host's CPU while the token budget was "
            "calibrated (more than %.0f%%): budget %d is used for this run only, not cached; "
            "it is measured again at the next start",
            path,
            100 * cal.others_load,
            100 * MAX_OTHERS_LOAD,
            cal.max_tokens,
        )
        return cal
    entries = _read_cache(path)  # re-read: another process may have added an entry meanwhile
    entries[key] = {**cal.to_dict(), "facts": facts}
    _write_cache(path, entries)
    return cal


def resolve_max_tokens(
    max_tokens: int | str | None,
    model_dir: ModelLike,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    *,
    progress: bool | None = None,
    plan_overhead_s: float = 0.0,
) -> tuple[int | None, Calibration | None]:
    """``(budget, calibration)`` for a ``max_tokens`` setting of the model ``model_dir`` (a
    :class:`~packing.model.prepared.PreparedModel`, or a folder, opened only for ``"auto"``).

    * an int: pinned, returned as is (``PackingConfig`` checks it lies in
      ``[seq_len, batch_size x seq_len]``); no calibration;
    * ``None``: the full batch, ``batch_size x seq_len`` (returned as None); no calibration;
    * ``"auto"``: :func:`load_or_calibrate` on this backend; its chosen budget
      (``plan_overhead_s``: seconds a batch costs beyond its model run, as served). When the
      backend cannot be calibrated (:class:`NotCalibratable`: options that are not plain data,
      such as an injected ``sleep`` whose wall time means nothing, or a folder still being
      prepared), the full batch (None, None).

    Raises ValueError for any other value, naming it.
    """
    if max_tokens is None:
        return None, None
    if isinstance(max_tokens, str):
        check_budget_word(max_tokens)
        try:
            cal = load_or_calibrate(
                model_dir,
                backend,
                backend_options,
                progress=progress,
                plan_overhead_s=plan_overhead_s,
            )
        except NotCalibratable as exc:
            log.info("max_tokens='auto': %s; using the full batch", exc)
            return None, None
        return cal.max_tokens, cal
    return max_tokens, None  # type: ignore[return-value]  # PackingConfig validates it
