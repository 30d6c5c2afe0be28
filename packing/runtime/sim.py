"""A simulated accelerator: the ``sim`` backend.

:class:`SimBackend` stands in for a device this project has no access to (an IPU running
a PopRT graph, say). It takes the same inputs as the real graphs and returns logits of
the same names, dtype and shapes, but instead of computing BERT it

* holds the calling thread for the time the simulated device would take:
  ``overhead_s + input_ids.size / tokens_per_s`` (every token slot it is given, padding
  included), through an injectable ``sleep`` (``time.sleep`` by default, which releases
  the GIL and uses no CPU, so several simulated devices really run in parallel);
* returns logits that are a cheap, deterministic function of each token's id, position id
  and token type. Position ids restart at 0 for every sequence in every layout, so a
  request packed with others gets bit-identical logits to the same request run alone,
  while different requests get different logits: a crossed or misplaced answer is caught.
  For an embed or classify folder (its ``manifest.json`` says the task) it returns
  ``last_hidden_state`` instead, ``[..., hidden_size]`` values made the same way
  (:func:`sim_hidden`), which the runtime pools per sequence like a real graph's.

So the serving stack (packing, batching, Ray Serve, scaling) can be measured and tested
against a device of known speed on a CPU-only machine. A :class:`SimProfile` sets the
speed; :data:`PROFILES` holds named ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from packing.model.heads import HIDDEN_OUTPUT
from packing.model.manifest import MANIFEST
from packing.model.task import TaskSpec
from packing.policy.attention import ATTENTION_GROUPS

from .backend import Backend

# Inputs of each graph kind (see packing.model.graphs; tests/unit/test_sim.py checks the kinds).
_ROW_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
GRAPH_INPUTS: dict[str, tuple[str, ...]] = {
    "original": _ROW_INPUTS,
    "attention_mask": _ROW_INPUTS,
    "unpack_repack": ("input_ids", "token_type_ids", "position_ids", "repack_index")
    + tuple(
        f"{name}_{g}" for g in range(ATTENTION_GROUPS) for name in ("unpack_index", "segment_ids")
    ),
}

#: Options a real backend takes that the sim accepts and ignores, so a config or command
#: line can switch between ``onnxruntime`` and ``sim`` without changing anything else.
IGNORED_OPTIONS = frozenset({"device", "intra_op_threads", "inter_op_threads", "spin"})

_HASH_RANGE = 65536  # logits take 65536 evenly spaced values in [-4, 4)
_LOGIT_SCALE = 8.0 / _HASH_RANGE  # a power of two: the float32 logits are exact


@dataclass(frozen=True)
class SimProfile:
    """How fast a simulated device is."""

    name: str  # label shown by describe() and in benchmark headers
    tokens_per_s: (
        float  # token slots computed per second: every input_ids position, padding included
    )
    overhead_s: (
        float  # fixed time per batch (launch, host-device transfer), on top of the token time
    )
    static_shapes: (
        bool  # True: like a compiled IPU graph, runners pad every batch to the full shape
    )

    def __post_init__(self) -> None:
        if (
            not isinstance(self.tokens_per_s, (int, float))
            or isinstance(self.tokens_per_s, bool)
            or not math.isfinite(self.tokens_per_s)
            or self.tokens_per_s <= 0
        ):
            raise ValueError(
                f"sim profile {self.name!r}: tokens_per_s must be a finite number > 0, "
                f"got {self.tokens_per_s!r}"
            )
        if (
            not isinstance(self.overhead_s, (int, float))
            or isinstance(self.overhead_s, bool)
            or not math.isfinite(self.overhead_s)
            or self.overhead_s < 0
        ):
            raise ValueError(
                f"sim profile {self.name!r}: overhead_s must be a finite number >= 0, "
                f"got {self.overhead_s!r}"
            )
        if not isinstance(self.static_shapes, bool):
            raise ValueError(
                f"sim profile {self.name!r}: static_shapes must be True or False, "
                f"got {self.static_shapes!r}"
            )

    def batch_seconds(self, token_slots: int) -> float:
        """Device time of one batch of ``token_slots`` input positions."""
        return self.overhead_s + token_slots / self.tokens_per_s


PROFILES: dict[str, SimProfile] = {
    # Graphcore's PopRT PackRunner example runs the padded Original mode, batches of
    # 16 x 256 tokens, at 1,861 sequences/s on one IPU: 1,861 * 256 = 476,416 token slots/s.
    # Its fixed per-batch cost is folded into that figure, so overhead 0.
    "ipu": SimProfile("ipu", tokens_per_s=256 * 1861, overhead_s=0.0, static_shapes=True),
    # A full 16 x 256 batch takes 4096 / 32768 = 125 ms: ~128 padded or ~250 packed
    # sequences/s per replica. Slow enough that the serving front end is never the
    # bottleneck, for runner-scaling runs.
    "slow": SimProfile("slow", tokens_per_s=32768.0, overhead_s=0.0, static_shapes=True),
    # Never the bottleneck (a full batch in ~4 us): measures the serving front end alone.
    "fast": SimProfile("fast", tokens_per_s=1e9, overhead_s=0.0, static_shapes=False),
}


def sim_profile(
    name: str = "ipu",
    tokens_per_s: float | None = None,
    overhead_s: float | None = None,
    static_shapes: bool | None = None,
) -> SimProfile:
    """The named profile of :data:`PROFILES` with any non-None field overridden.

    Raises ValueError for an unknown name (listing the known ones) or a bad override.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown sim profile {name!r}; available: {sorted(PROFILES)}")
    base = PROFILES[name]
    overrides = {
        k: v
        for k, v in (
            ("tokens_per_s", tokens_per_s),
            ("overhead_s", overhead_s),
            ("static_shapes", static_shapes),
        )
        if v is not None
    }
    return replace(base, **overrides) if overrides else base


def sim_logits(
    input_ids: np.ndarray, position_ids: np.ndarray, token_type_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic float32 (start, end) logits in [-4, 4), one per token, same shape as the ids.

    Each value depends only on that token's id, position id and token type (integer
    hashing, vectorised); start and end use different mixes.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    pos = np.asarray(position_ids, dtype=np.int64)
    types = np.asarray(token_type_ids, dtype=np.int64)
    start = (ids * 2654435761 + pos * 40503 + types * 97) % _HASH_RANGE
    end = ids * 2246822519 + pos * 3266489917 + types * 668265263 + 374761393
    end = (end ^ (end >> 17)) % _HASH_RANGE
    return _to_logits(start), _to_logits(end)


def sim_hidden(
    input_ids: np.ndarray, position_ids: np.ndarray, token_type_ids: np.ndarray, hidden_size: int
) -> np.ndarray:
    """Deterministic float32 hidden states in [-4, 4), shape ``input_ids.shape + (hidden_size,)``.

    Each token's vector depends only on its id, position id and token type, each component
    also on its index (integer hashing in uint64, vectorised), so like :func:`sim_logits` a
    request gets bit-identical values alone and packed. ValueError for ``hidden_size < 1``.
    """
    if int(hidden_size) < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    with np.errstate(over="ignore"):
        ids = np.asarray(input_ids, dtype=np.int64).astype(np.uint64)
        pos = np.asarray(position_ids, dtype=np.int64).astype(np.uint64)
        types = np.asarray(token_type_ids, dtype=np.int64).astype(np.uint64)
        token = ids * np.uint64(2654435761) + pos * np.uint64(40503) + types * np.uint64(97)
        dim = np.arange(int(hidden_size), dtype=np.uint64) * np.uint64(2246822519)
        h = token[..., None] * np.uint64(3266489917) + dim + np.uint64(374761393)
        h ^= h >> np.uint64(29)
        h *= np.uint64(668265263)
        h ^= h >> np.uint64(32)
    return _to_logits(h % np.uint64(_HASH_RANGE))


def _to_logits(h: np.ndarray) -> np.ndarray:
    return (h.astype(np.float32) * np.float32(_LOGIT_SCALE) - np.float32(4.0)).astype(np.float32)


class SimBackend(Backend):
    """Simulated device running one graph kind at a :class:`SimProfile`'s speed.

    ``model_path`` is the graph file a real backend would load (``DIR/unpack_repack.onnx``):
    the sim never reads it, but its folder must exist and its stem names the graph kind
    (original, attention_mask or unpack_repack), which fixes the inputs it expects. The
    folder's ``manifest.json``, when it has one, gives the task (:attr:`task`) and so the
    outputs: span logits for qa (and a folder without a manifest), ``last_hidden_state`` of
    the manifest's ``hidden_size`` for embed and classify.
    ``profile`` names an entry of :data:`PROFILES`; ``tokens_per_s``, ``overhead_s`` and
    ``static_shapes`` override its fields. ``sleep`` is called with each batch's device
    seconds (inject a recorder in tests). Options of real backends (:data:`IGNORED_OPTIONS`:
    ``device``, ``intra_op_threads``, ``inter_op_threads``) are accepted and ignored; any
    other keyword is a TypeError, so a misspelt option is not silently dropped.

    Counters ``batches`` and ``device_seconds_total`` count every call; like every backend,
    ``run`` expects one call at a time (the runners serialise calls).
    """

    def __init__(
        self,
        model_path: str | Path,
        profile: str = "ipu",
        tokens_per_s: float | None = None,
        overhead_s: float | None = None,
        static_shapes: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **ignored_options,
    ) -> None:
        unknown = set(ignored_options) - IGNORED_OPTIONS
        if unknown:
            raise TypeError(
                f"sim backend: unknown options {sorted(unknown)}; it takes profile, "
                f"tokens_per_s, overhead_s, static_shapes, sleep and ignores "
                f"{sorted(IGNORED_OPTIONS)}"
            )
        self.model_path = Path(model_path)
        self.kind = _graph_kind(self.model_path)
        self.task, self.hidden_size = _folder_task(self.model_path.parent)
        self.profile = sim_profile(profile, tokens_per_s, overhead_s, static_shapes)
        self.static_shapes = self.profile.static_shapes
        self._sleep = sleep
        self.batches = 0  # calls of run()
        self.device_seconds_total = 0.0  # simulated device time of those calls

    def device_seconds(self, inputs: dict[str, np.ndarray]) -> float:
        """Simulated device time of one call: ``overhead_s + input_ids.size / tokens_per_s``."""
        return self.profile.batch_seconds(int(np.size(inputs["input_ids"])))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the inputs, hold the caller for the device time, return the outputs.

        Outputs have the real graph's names and shapes: qa ``start_logits`` / ``end_logits``
        ``[rows, seq]`` for the row graphs and ``[tokens]`` for unpack_repack (the shape of
        ``input_ids`` in both cases); embed and classify ``last_hidden_state``, that shape
        plus ``[hidden_size]``.
        """
        self._check(inputs)
        seconds = self.device_seconds(inputs)
        self._sleep(seconds)
        self.batches += 1
        self.device_seconds_total += seconds
        if self.task.task != "qa":
            return {
                HIDDEN_OUTPUT: sim_hidden(
                    inputs["input_ids"],
                    inputs["position_ids"],
                    inputs["token_type_ids"],
                    self.hidden_size,
                )
            }
        start, end = sim_logits(
            inputs["input_ids"], inputs["position_ids"], inputs["token_type_ids"]
        )
        return {"start_logits": start, "end_logits": end}

    def describe(self) -> str:
        """E.g. ``sim ipu (static shapes, 476416 token slots/s) unpack_repack``."""
        p = self.profile
        shapes = "static shapes" if p.static_shapes else "dynamic shapes"
        overhead = f", {p.overhead_s * 1000:g} ms per batch" if p.overhead_s else ""
        return f"sim {p.name} ({shapes}, {_number(p.tokens_per_s)} token slots/s{overhead}) {self.kind}"

    def _check(self, inputs: dict[str, np.ndarray]) -> None:
        """The inputs the real graph would need, with matching token shapes and ranks."""
        missing = set(GRAPH_INPUTS[self.kind]) - inputs.keys()
        if missing:
            raise ValueError(f"{self.model_path.name}: missing inputs {sorted(missing)}")
        shape = np.shape(inputs["input_ids"])
        rank = 1 if self.kind == "unpack_repack" else 2
        if len(shape) != rank:
            raise ValueError(
                f"{self.model_path.name}: input_ids must be {rank}-D, got shape {shape}"
            )
        for name in ("token_type_ids", "position_ids"):
            if np.shape(inputs[name]) != shape:
                raise ValueError(
                    f"{self.model_path.name}: {name} has shape "
                    f"{np.shape(inputs[name])}, input_ids has {shape}"
                )


def _graph_kind(model_path: Path) -> str:
    """Graph kind from the file's stem; the folder must exist like a real graph's would."""
    if not model_path.parent.is_dir():
        raise FileNotFoundError(
            f"model folder not found: {model_path.parent} "
            f"(the sim backend does not read the graph, but its folder must exist)"
        )
    if model_path.stem not in GRAPH_INPUTS:
        raise ValueError(
            f"sim backend: cannot tell the graph kind of {model_path.name}; "
            f"expected one of {[k + '.onnx' for k in GRAPH_INPUTS]}"
        )
    return model_path.stem


def _folder_task(folder: Path) -> tuple[TaskSpec, int]:
    """``(task, hidden_size)`` of the prepared folder the sim stands in for, from its
    ``manifest.json`` (any format version); qa when the folder has none (a bare folder, as
    tests give). ValueError naming the file when it is unreadable."""
    import json

    path = folder / MANIFEST
    if not path.exists():
        return TaskSpec(), 0
    try:
        raw = json.loads(path.read_text())
        return TaskSpec.from_dict(raw.get("task")), int(raw["dims"]["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"sim backend: cannot read the task of {path} ({err})") from err


def _number(x: float) -> str:
    """476416 for integral values, 1.5e+09 style otherwise."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"
