"""A token budget fitted to the device: measure throughput against batch size, pick the knee.

How many real tokens one packed batch should carry depends on the device. On a CPU, ONNX
Runtime runs bert-base fastest at a few hundred to a thousand tokens per batch: bigger
batches push the activations out of cache and throughput falls again, while latency keeps
growing. An accelerator (or the ``sim`` backend, whose per-batch cost is fixed) wants the
largest batch it can get. :func:`calibrate` measures it:

* on the ``unpack_repack`` graph, through :class:`~packing.runtime.executor.PlanExecutor`
  (the code path every runner uses), it runs full batches of synthetic sequences whose
  lengths follow the ``seed`` mix (N(seq_len/2, seq_len/2) clipped to [1, seq_len]), made by
  :func:`~packing.policy.offline.plan_offline_unpack_repack` at token budgets ``seq_len x
  1, 2, 4, 8 ...`` up to ``batch_size x seq_len`` (that full budget is always measured);
* for each budget: ``warmup`` batches untimed, then batches until both ``min_repeats``
  batches and ``min_time_s`` seconds are done (spread over interleaved rounds, so a burst of
  other load on the host hits every budget alike); the budget's throughput is the median
  over those batches of real tokens / wall seconds (host-side input building included, as
  a runner pays it);
* the rule (:func:`pick_budget`): the **smallest budget whose throughput is at least
  ``threshold`` (default 0.95) times the best measured** -- where throughput stops rising,
  the smallest batch that gets (nearly) all of it, so latency stays low. When throughput
  keeps rising up to the full batch, as on an accelerator, that is the full batch.

:func:`load_or_calibrate` caches the result in ``calibration.json`` next to the model: a
dict of fingerprint -> entry. The :func:`fingerprint` covers what changes the answer: the
backend name and its effective options (for onnxruntime: the resolved device, threads,
version and available providers; for sim: the resolved profile), the host's CPU model and
core count, the model's shapes and precision (one entry per precision: an int8 graph's best
budget is not fp32's) and the SHA-256 of the ``unpack_repack`` graph from the manifest. A
matching entry is returned without measuring.

:func:`resolve_max_tokens` turns a runner's or packer's ``max_tokens`` setting (an int,
``None`` or ``"auto"``) into the budget to use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from packing.model.manifest import CALIBRATION, Manifest
from packing.policy.plans import UnpackRepackPlan

from .host import host_description

log = logging.getLogger(__name__)

CACHE_FILE = CALIBRATION  # "calibration.json"
GRAPH = "unpack_repack"  # the graph measured: tokens laid end to end, no padding
DEFAULT_THRESHOLD = 0.95
# Version of the measuring procedure; part of the fingerprint, so a change re-measures.
PROCEDURE_VERSION = 1
AUTO = "auto"

__all__ = [
    "Calibration",
    "NotCalibratable",
    "budgets_for",
    "pick_budget",
    "fingerprint",
    "calibrate",
    "load_or_calibrate",
    "resolve_max_tokens",
    "measure_budget",
    "CACHE_FILE",
    "DEFAULT_THRESHOLD",
    "AUTO",
]


class NotCalibratable(ValueError):
    """The backend options cannot be fingerprinted (an injected callable, say), or the
    model folder has no checksummed ``unpack_repack`` graph, so a result cannot be cached."""


@dataclass(frozen=True)
class Calibration:
    """One measured throughput curve and the budget chosen from it.

    Attributes:
        budgets: token budgets measured, ascending (``seq_len x 1, 2, 4 ...`` and
            ``batch_size x seq_len``).
        tokens_per_s: median real tokens per second at each budget (same order).
        max_tokens: the chosen budget, one of ``budgets``.
        threshold: the rule's fraction of the best throughput.
        rule: the rule in words.
        fingerprint: hex key of what was measured (see :func:`fingerprint`); ``""`` when the
            options could not be fingerprinted.
        measured_at: when it was measured (UTC, ISO 8601).
        backend: the measured backend's ``describe()`` line.
        seconds: wall time the measurement took.
        from_cache: True when returned from ``calibration.json`` without measuring (not stored).
    """

    budgets: tuple[int, ...]
    tokens_per_s: tuple[float, ...]
    max_tokens: int
    threshold: float
    rule: str
    fingerprint: str
    measured_at: str
    backend: str = ""
    seconds: float = 0.0
    from_cache: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        budgets = tuple(int(b) for b in self.budgets)
        rates = tuple(float(r) for r in self.tokens_per_s)
        if not budgets or len(budgets) != len(rates):
            raise ValueError(
                f"calibration needs one throughput per budget, got {len(budgets)} "
                f"budgets and {len(rates)} throughputs"
            )
        if list(budgets) != sorted(set(budgets)) or budgets[0] < 1:
            raise ValueError(f"calibration budgets must be ascending positive ints, got {budgets}")
        if not all(math.isfinite(r) and r >= 0 for r in rates):
            raise ValueError(f"calibration throughputs must be finite and >= 0, got {rates}")
        if int(self.max_tokens) not in budgets:
            raise ValueError(
                f"chosen max_tokens {self.max_tokens!r} is not a measured budget {budgets}"
            )
        object.__setattr__(self, "budgets", budgets)
        object.__setattr__(self, "tokens_per_s", rates)
        object.__setattr__(self, "max_tokens", int(self.max_tokens))
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def best_tokens_per_s(self) -> float:
        """The highest throughput measured."""
        return max(self.tokens_per_s)

    def to_dict(self) -> dict:
        """The cache entry: every field except ``from_cache``."""
        out = asdict(self)
        out.pop("from_cache")
        out["budgets"], out["tokens_per_s"] = list(self.budgets), list(self.tokens_per_s)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Calibration:
        """Inverse of :meth:`to_dict` (marks the result ``from_cache``); ValueError/TypeError
        /KeyError on a malformed entry."""
        fields = (
            "budgets",
            "tokens_per_s",
            "max_tokens",
            "threshold",
            "rule",
            "fingerprint",
            "measured_at",
            "backend",
            "seconds",
        )
        return cls(**{k: raw[k] for k in fields if k in raw}, from_cache=True)

    def table(self) -> str:
        """The curve as a text table: budget, tokens/s, ratio to the best, ``<-`` on the chosen."""
        best = self.best_tokens_per_s or 1.0
        lines = [f"{'budget':>8}  {'tokens/s':>12}  {'of best':>7}"]
        for b, r in zip(self.budgets, self.tokens_per_s):
            mark = "  <- max_tokens" if b == self.max_tokens else ""
            lines.append(f"{b:>8}  {r:>12,.0f}  {r / best:>7.3f}{mark}")
        return "\n".join(lines)


def _rule(threshold: float) -> str:
    return f"smallest budget with tokens/s >= {threshold:g} x the best measured"


def budgets_for(seq_len: int, batch_size: int) -> list[int]:
    """``seq_len x 1, 2, 4, 8 ...`` below ``batch_size x seq_len``, then that full budget."""
    full = int(seq_len) * int(batch_size)
    out, k = [], 1
    while seq_len * k < full:
        out.append(int(seq_len) * k)
        k *= 2
    out.append(full)
    return out


def pick_budget(
    budgets: Sequence[int], tokens_per_s: Sequence[float], threshold: float = DEFAULT_THRESHOLD
) -> int:
    """The smallest budget whose throughput is ``>= threshold x`` the best one.

    ``budgets`` ascending, ``tokens_per_s`` in the same order; ``threshold`` in (0, 1]
    (1.0 picks the fastest budget). ValueError on empty or mismatched input or a bad threshold.
    """
    if (
        not isinstance(threshold, (int, float))
        or isinstance(threshold, bool)
        or not 0 < threshold <= 1
    ):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if not budgets or len(budgets) != len(tokens_per_s):
        raise ValueError(
            f"need one throughput per budget, got {len(budgets)} budgets and "
            f"{len(tokens_per_s)} throughputs"
        )
    best = max(tokens_per_s)
    for b, r in zip(budgets, tokens_per_s):
        if r >= threshold * best:
            return int(b)
    raise AssertionError("unreachable: the best budget always qualifies")


# --------------------------------------------------------------------- fingerprint


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
        from .backend import CPU_DISABLED_OPTIMIZERS, import_onnxruntime, resolve_device

        ort = import_onnxruntime()
        available = list(ort.get_available_providers())
        device = resolve_device(opts.pop("device", "auto"))  # auto: where a session really runs
        disabled = opts.pop("disabled_optimizers", None)
        if disabled is None:  # the backend's default for the device
            disabled = CPU_DISABLED_OPTIMIZERS if device == "cpu" else ()
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
        from .sim import IGNORED_OPTIONS, sim_profile

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
    model_dir: str | Path,
    backend: str,
    backend_options: dict | None = None,
    manifest: Manifest | None = None,
) -> tuple[str, dict]:
    """``(key, facts)``: a 16-hex-digit key of what changes a calibration, and those facts.

    Facts: backend name and :func:`effective_options`, :func:`host_description`, the
    manifest's ``precision``, ``seq_len``, ``batch_size``, ``max_valid_num`` and the ``unpack_repack``
    graph file's SHA-256 (from ``Manifest.files``), and the procedure version. Raises
    :class:`NotCalibratable` when the options are not plain data or the manifest lists no
    checksum for that graph (a folder still being prepared).
    """
    manifest = manifest or Manifest.read(model_dir)
    graph = manifest.graphs.get(GRAPH)
    if graph is None:
        raise NotCalibratable(f"{model_dir} has no {GRAPH!r} graph to calibrate on")
    digest = manifest.files.get(graph)
    if not digest:
        raise NotCalibratable(
            f"{model_dir}/manifest.json lists no checksum of {graph} "
            "(the folder is not fully prepared)"
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


# ----------------------------------------------------------------------- measuring


def measure_budget(
    executor,
    plans: Sequence[UnpackRepackPlan],
    features: Sequence,
    warmup: int = 0,
    min_repeats: int = 1,
    min_time_s: float = 0.0,
    max_repeats: int = 10_000,
    start: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Real tokens per second of each timed batch of ``plans`` run on ``executor``.

    ``features[i]`` is sequence ``i`` of the plans' ``seq_ids``. Batches cycle through
    ``plans`` from index ``start``: ``warmup`` untimed, then timed one by one until at least
    ``min_repeats`` are done and ``min_time_s`` seconds have passed (at most
    ``max_repeats``). Each sample is the batch's real tokens over its seconds on ``clock``
    (wall time by default; building the inputs included, as a runner pays it).
    """
    if not plans:
        raise ValueError("measure_budget needs at least one plan")
    i = start

    def run_one() -> float:
        nonlocal i
        plan = plans[i % len(plans)]
        i += 1
        feats = [features[s] for s in plan.seq_ids]
        t0 = clock()
        executor.execute(plan, feats)
        return plan.real_tokens / max(clock() - t0, 1e-9)

    for _ in range(warmup):
        run_one()
    rates: list[float] = []
    t_start = clock()
    while len(rates) < max(1, min_repeats) or (
        clock() - t_start < min_time_s and len(rates) < max_repeats
    ):
        rates.append(run_one())
    return rates


def _full_plans(manifest: Manifest, budget: int, lengths: np.ndarray) -> list[UnpackRepackPlan]:
    from packing.policy.offline import plan_offline_unpack_repack

    plans = plan_offline_unpack_repack(
        lengths, manifest.seq_len, manifest.batch_size, manifest.max_valid_num, max_tokens=budget
    )
    return plans[:-1] if len(plans) > 1 else plans  # the last batch is a remainder


def calibrate(
    model_dir: str | Path,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    budgets: Sequence[int] | None = None,
    warmup: int = 1,
    min_repeats: int = 3,
    min_time_s: float = 1.0,
    rounds: int = 3,
    batches_per_budget: int = 8,
    seed: int = 2022,
    progress: bool | None = None,
    manifest: Manifest | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Calibration:
    """Measure the backend's throughput at each token budget and pick one; no cache.

    Loads the ``unpack_repack`` graph of ``model_dir`` on ``backend`` with
    ``backend_options`` (a fresh instance, released afterwards) and, for each of
    ``budgets`` (default :func:`budgets_for` the manifest's shapes; each must lie in
    ``[seq_len, batch_size x seq_len]``), times full batches of synthetic ``seed``-mix
    sequences (enough for ``batches_per_budget`` full batches at the largest budget) with
    :func:`measure_budget`: ``warmup`` untimed batches per budget, then ``rounds`` rounds
    that each visit every budget in turn for ``min_time_s / rounds`` seconds (and at least
    ``min_repeats / rounds`` batches), so each budget gets at least ``min_time_s`` seconds
    and ``min_repeats`` batches in all. A budget's throughput is the median of its batches'
    real tokens per second. Returns the curve with ``max_tokens`` chosen by
    :func:`pick_budget` at ``threshold``. ``progress``: a tqdm bar over the budgets
    (None: only when stderr is a terminal). The fingerprint is ``""`` when the options
    cannot be fingerprinted. ``clock``: the seconds every timing reads (wall time; a test
    gives a virtual clock that an injected sim ``sleep`` advances). Raises ValueError on a
    bad threshold or budget.
    """
    from tqdm.auto import tqdm

    from .executor import PlanExecutor, open_graph
    from .synthetic import seed_lengths, synthetic_features

    manifest = manifest or Manifest.read(model_dir)
    pick_budget([1], [1.0], threshold)  # validates threshold before any work
    seq_len, full = manifest.seq_len, manifest.seq_len * manifest.batch_size
    budgets = sorted({int(b) for b in (budgets or budgets_for(seq_len, manifest.batch_size))})
    bad = [b for b in budgets if not seq_len <= b <= full]
    if bad:
        raise ValueError(
            f"budgets must lie in [seq_len={seq_len}, batch_size*seq_len={full}], got {bad}"
        )
    try:
        key = fingerprint(model_dir, backend, backend_options, manifest)[0]
    except NotCalibratable:
        key = ""
    mean = seq_len / 2  # the seed mix's mean length, before clipping
    n = max(64, math.ceil(batches_per_budget * max(budgets) / mean) + 2 * manifest.max_valid_num)
    lengths = seed_lengths(n, seq_len, seed)
    dims = manifest.dims
    features = synthetic_features(lengths, dims.vocab_size, dims.type_vocab_size, seed)
    _, be = open_graph(model_dir, GRAPH, backend, dict(backend_options or {}), manifest)
    executor = PlanExecutor(be, manifest, model_dir)  # embed/classify: their heads are timed too
    plans = {b: _full_plans(manifest, b, lengths) for b in budgets}
    samples: dict[int, list[float]] = {b: [] for b in budgets}
    rounds = max(1, int(rounds))
    per_round = max(1, -(-int(min_repeats) // rounds))
    started = time.perf_counter()
    bar = tqdm(
        total=rounds * len(budgets),
        desc="calibrating token budget",
        unit="budget",
        disable=None if progress is None else not progress,
        leave=False,
    )
    try:
        for r in range(rounds):  # interleaved, so a burst of other load hits every budget
            for b in budgets:
                bar.set_postfix_str(f"round {r + 1}/{rounds}, {b} tokens")
                samples[b] += measure_budget(
                    executor,
                    plans[b],
                    features,
                    warmup=warmup if r == 0 else 0,
                    min_repeats=per_round,
                    min_time_s=min_time_s / rounds,
                    start=len(samples[b]) + (warmup if r else 0),
                    clock=clock,
                )
                bar.update(1)
    finally:
        bar.close()
    rates = [float(statistics.median(samples[b])) for b in budgets]
    return Calibration(
        budgets=tuple(budgets),
        tokens_per_s=tuple(rates),
        max_tokens=pick_budget(budgets, rates, threshold),
        threshold=threshold,
        rule=_rule(threshold),
        fingerprint=key,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        backend=be.describe(),
        seconds=round(time.perf_counter() - started, 3),
    )


# -------------------------------------------------------------------------- cache


def cache_path(model_dir: str | Path) -> Path:
    """Where calibrations of ``model_dir`` are cached: ``model_dir/calibration.json``."""
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
    model_dir: str | Path,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    force: bool = False,
    progress: bool | None = None,
    manifest: Manifest | None = None,
    **measure,
) -> Calibration:
    """The cached calibration of ``model_dir`` on this backend and host, else a new one.

    Looks up :func:`fingerprint` in ``model_dir/calibration.json``; a matching, well-formed
    entry is returned (``from_cache=True``) without measuring, its budget re-picked with
    ``threshold`` from the stored curve if that differs. Otherwise (or with ``force``) it
    runs :func:`calibrate` (``**measure``: its measuring keywords) and stores the entry under
    the fingerprint, keeping other entries; a corrupt or unreadable cache file is replaced.
    The write is atomic; a folder that cannot be written only loses the caching. Raises
    :class:`NotCalibratable` when the options cannot be fingerprinted or the folder is not
    fully prepared.
    """
    manifest = manifest or Manifest.read(model_dir)
    key, facts = fingerprint(model_dir, backend, backend_options, manifest)
    path = cache_path(model_dir)
    entries = _read_cache(path)
    if not force and key in entries:
        try:
            cached = Calibration.from_dict(entries[key])
            if cached.fingerprint != key:
                raise ValueError("fingerprint mismatch")
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("%s: ignoring a malformed entry %s (%s); measuring again", path, key, exc)
        else:
            if cached.threshold != float(threshold):
                cached = replace(
                    cached,
                    threshold=float(threshold),
                    rule=_rule(threshold),
                    max_tokens=pick_budget(cached.budgets, cached.tokens_per_s, threshold),
                )
            return cached
    cal = calibrate(
        model_dir,
        backend,
        backend_options,
        threshold=threshold,
        progress=progress,
        manifest=manifest,
        **measure,
    )
    entries = _read_cache(path)  # re-read: another process may have added an entry meanwhile
    entries[key] = {**cal.to_dict(), "facts": facts}
    _write_cache(path, entries)
    return cal


def resolve_max_tokens(
    max_tokens: int | str | None,
    model_dir: str | Path,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    *,
    manifest: Manifest | None = None,
    progress: bool | None = None,
) -> tuple[int | None, Calibration | None]:
    """``(budget, calibration)`` for a ``max_tokens`` setting.

    * an int: pinned, returned as is (``PackingConfig`` checks it lies in
      ``[seq_len, batch_size x seq_len]``); no calibration;
    * ``None``: the full batch, ``batch_size x seq_len`` (returned as None); no calibration;
    * ``"auto"``: :func:`load_or_calibrate` on this backend; its chosen budget. When the
      backend cannot be calibrated (:class:`NotCalibratable`: options that are not plain data,
      such as an injected ``sleep`` whose wall time means nothing, or a folder still being
      prepared), the full batch (None, None).

    Raises ValueError for any other value, naming it.
    """
    if max_tokens is None:
        return None, None
    if isinstance(max_tokens, str):
        if max_tokens != AUTO:
            raise ValueError(f"max_tokens must be an int, None or 'auto', got {max_tokens!r}")
        try:
            cal = load_or_calibrate(
                model_dir, backend, backend_options, manifest=manifest, progress=progress
            )
        except NotCalibratable as exc:
            log.info("max_tokens='auto': %s; using the full batch", exc)
            return None, None
        return cal.max_tokens, cal
    return max_tokens, None  # type: ignore[return-value]  # PackingConfig validates it
