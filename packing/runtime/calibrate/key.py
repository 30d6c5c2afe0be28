"""The key of a calibration: what changes the answer, hashed.

:func:`fingerprint` covers the backend name and its :func:`effective_options` (for
onnxruntime: the resolved device, threads, version and available providers; for sim: the
resolved profile), the host's CPU model and core count, the model's shapes and precision
(one entry per precision: an int8 graph's best budget is not fp32's), the SHA-256 of the
``unpack_repack`` graph from the manifest, and the measuring procedure's version.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

from packing.model.prepared import ModelLike, PreparedModel

from ..host import host_description

GRAPH = "unpack_repack"  # the graph measured: tokens laid end to end, no padding
# Version of the measuring procedure; part of the fingerprint, so a change re-measures.
PROCEDURE_VERSION = 1


class NotCalibratable(ValueError):
    """The backend options cannot be fingerprinted (an injected callable, say), or the
    model folder has no checksummed ``unpack_repack`` graph, so a result cannot be cached."""


def _plain(value) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def effective_options(backend: str, backend_options: dict | None) -> dict:
    """The backend options with defaults resolved, as they decide its speed.

    onnxruntime: the device actually used (``auto`` resolved by
    :func:`~packing.runtime.backend.resolve_device`: CUDA only when a session really gets
    it), intra/inter-op threads, the onnxruntime version and available providers.
    sim: the resolved profile's fields (a profile name and the same speed given explicitly
    are the same device); the onnxruntime options it ignores are dropped. Other backends:
    the options as given. Raises :class:`NotCalibratable` for an option that is not plain
    data (an injected ``sleep``, say).
    """
    opts = dict(backend_options or {})
    bad = sorted(k for k, v in opts.items() if not _plain(v))
    if bad:
        raise NotCalibratable(
            f"backend options {bad} are not plain data and cannot be fingerprinted"
        )
    if backend == "onnxruntime":
        from ..backend import disabled_optimizers_for, import_onnxruntime, resolve_device

        ort = import_onnxruntime()
        available = list(ort.get_available_providers())
        device = resolve_device(opts.pop("device", "auto"))  # auto: where a session really runs
        disabled = disabled_optimizers_for(device == "cuda", opts.pop("disabled_optimizers", None))
        # None is onnxruntime's default, one thread per core: the same device as that many
        out = {
            "device": device,
            "intra_op_threads": opts.pop("intra_op_threads", None) or os.cpu_count(),
            "inter_op_threads": opts.pop("inter_op_threads", 1),
            "disabled_optimizers": list(disabled),
            "onnxruntime": ort.__version__,
            "providers": available,
        }
        out.update(opts)  # anything else given decides too
        return out
    if backend == "sim":
        from ..sim import IGNORED_OPTIONS, sim_profile

        for k in IGNORED_OPTIONS:
            opts.pop(k, None)
        profile = sim_profile(
            opts.pop("profile", "ipu"),
            opts.pop("tokens_per_s", None),
            opts.pop("overhead_s", None),
            opts.pop("static_shapes", None),
        )
        return {"profile": asdict(profile), **opts}
    return opts


def fingerprint(
    model_dir: ModelLike,
    backend: str,
    backend_options: dict | None = None,
) -> tuple[str, dict]:
    """``(key, facts)``: a 16-hex-digit key of what changes a calibration, and those facts.

    ``model_dir``: a :class:`~packing.model.prepared.PreparedModel`, or a folder opened here.
    Facts: backend name and :func:`effective_options`, :func:`host_description`, the
    manifest's ``precision``, ``seq_len``, ``batch_size``, ``max_valid_num`` and the ``unpack_repack``
    graph file's SHA-256 (from ``Manifest.files``), and the procedure version. Raises
    :class:`NotCalibratable` when the options are not plain data or the manifest lists no
    checksum for that graph (a folder still being prepared).
    """
    model = PreparedModel.open(model_dir)
    manifest = model.manifest
    graph = manifest.graphs.get(GRAPH)
    if graph is None:
        raise NotCalibratable(f"{model} has no {GRAPH!r} graph to calibrate on")
    digest = manifest.files.get(graph)
    if not digest:
        raise NotCalibratable(
            f"{model}/manifest.json lists no checksum of {graph} (the folder is not fully prepared)"
        )
    facts = {
        "backend": backend,
        "options": effective_options(backend, backend_options),
        "host": host_description(),
        "graph_sha256": digest,
        "precision": manifest.precision,
        "shapes": {
            "seq_len": manifest.seq_len,
            "batch_size": manifest.batch_size,
            "max_valid_num": manifest.max_valid_num,
        },
        "procedure": PROCEDURE_VERSION,
    }
    blob = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16], facts
