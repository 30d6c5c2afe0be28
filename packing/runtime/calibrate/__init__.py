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
  keeps rising up to the full batch, as on an accelerator, that is the full batch. Served,
  each batch's time counts ``plan_overhead_s`` more (:func:`~.curve.served_rates`: the hops
  a served plan pays beyond its model run), which moves the pick to bigger budgets where
  the in-process curve is flat.

:func:`load_or_calibrate` caches the result in ``calibration.json`` next to the model: a
dict of fingerprint -> entry. A calibration measured while other processes took more than
:data:`~.load.MAX_OTHERS_LOAD` of the host's CPU (:class:`~.load.OthersLoad`) is used for
the run only, not cached, so a busy start does not fix a budget for every later one. The
:func:`fingerprint` covers what changes the answer: the backend name and its effective
options (for onnxruntime: the resolved device, threads, version and available providers; for
sim: the resolved profile), the host's CPU model and core count, the model's shapes and
precision (one entry per precision: an int8 graph's best budget is not fp32's) and the SHA-256 of the ``unpack_repack`` graph from the manifest. A
matching entry is returned without measuring.

:func:`resolve_max_tokens` turns a runner's or packer's ``max_tokens`` setting (an int,
``None`` or ``"auto"``) into the budget to use.

The modules, by job: :mod:`.curve` (:class:`Calibration`, :func:`budgets_for`,
:func:`pick_budget`: the curve and the rule), :mod:`.key` (:func:`effective_options`,
:func:`fingerprint`, :class:`NotCalibratable`: the cache key), :mod:`.load`
(:class:`OthersLoad`: the host's other load while measuring), :mod:`.measure`
(:func:`calibrate`, :func:`measure_budget`: the measuring), :mod:`.cache`
(``calibration.json``, :func:`load_or_calibrate`, :func:`resolve_max_tokens`). Every public
name is importable from ``packing.runtime.calibrate`` itself.
"""

from __future__ import annotations

from .cache import AUTO, CACHE_FILE, cache_path, load_or_calibrate, resolve_max_tokens
from .curve import DEFAULT_THRESHOLD, Calibration, budgets_for, pick_budget
from .key import GRAPH, PROCEDURE_VERSION, NotCalibratable, effective_options, fingerprint
from .load import MAX_OTHERS_LOAD, OthersLoad, host_busy_seconds
from .measure import calibrate, measure_budget

__all__ = [
    "Calibration",
    "NotCalibratable",
    "budgets_for",
    "pick_budget",
    "effective_options",
    "fingerprint",
    "calibrate",
    "load_or_calibrate",
    "resolve_max_tokens",
    "measure_budget",
    "OthersLoad",
    "host_busy_seconds",
    "MAX_OTHERS_LOAD",
    "cache_path",
    "CACHE_FILE",
    "DEFAULT_THRESHOLD",
    "AUTO",
    "GRAPH",
    "PROCEDURE_VERSION",
]
