"""The application builder: ``serve run configs/squad.yaml`` finds it through ``import_path``.

Graph: HTTP -> Ingress (tokenizer: QA windows, batched; one sequence per text for an embed or
classify folder, the task being its manifest's) -> Packer (``@serve.batch`` admission, the
packing-aware collate, dispatch to free runner slots) -> PlanExecutor replicas. Handles are
injected through each deployment's ``__init__``. The model
folder is checked here, once, before any replica starts, and prepared only when the app may
(missing, or app-made with only an outdated format: :mod:`deployments.model_match`); a folder
of another source or precision stops the app here. Replicas only read it, and every shape they
use comes from its manifest. The Packer's token budget for ``max_tokens: auto`` is
calibrated here too, once, on the runners' backend (see :func:`calibrated_budget`).
"""

from __future__ import annotations

from ray.serve import Application

from packing.model.prepared import ModelLike
from packing.runtime.calibrate import AUTO, resolve_max_tokens

from .auth import startup_keys
from .config import AppConfig
from .ingress import Ingress
from .model_match import model_ask
from .model_store import ensure_model
from .packer import Packer
from .runner import PlanExecutorDeployment


def calibrated_budget(
    model_dir: ModelLike, backend: str, options: dict, plan_overhead_s: float = 0.0
) -> int | None:
    """The token budget the Packer's ``max_tokens: auto`` stands for: the calibration of the
    runners' backend and options on this host, picked with ``plan_overhead_s`` seconds added
    to every batch (the app's ``plan_overhead_s``) (``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`), read from ``model_dir/calibration.json`` or
    measured and cached there now, once, before any replica starts (so replicas never measure
    concurrently); None (the full batch) where that backend cannot be calibrated.

    It is measured whatever the config's ``max_tokens`` says, since a pinned budget in the
    Packer's ``user_config`` may later be changed to ``auto`` without a rebuild."""
    return resolve_max_tokens(
        AUTO, model_dir, backend, options, progress=False, plan_overhead_s=plan_overhead_s
    )[0]


def build_app(args: dict | None = None) -> Application:
    """Build the Serve application from the config file's ``args`` (validated up front)."""
    return build_graph(AppConfig(**(args or {})))


def build_graph(
    cfg: AppConfig, runner_options: dict | None = None, front_options: dict | None = None
) -> Application:
    """The application for ``cfg``; ``runner_options`` are PlanExecutor ``.options(...)`` and
    ``front_options`` the Ingress and Packer ``.options(...)`` (for benchmarks and cluster
    checks that deploy from Python rather than from a config file's ``deployments``).
    Refuses (``ExposureRefused``) an app that Serve binds to a non-loopback host with no API
    key, unless ``cfg.allow_unauthenticated_public`` (deployments/auth.py)."""
    api_keys = startup_keys(cfg.api_keys, cfg.allow_unauthenticated_public)
    model = ensure_model(cfg.model_dir, model_ask(cfg))
    backend, options = cfg.runner_backend()
    calibrated = calibrated_budget(model, backend, options, cfg.plan_overhead_s)
    runner_cls = (
        PlanExecutorDeployment.options(**runner_options)
        if runner_options
        else PlanExecutorDeployment
    )
    # replicas get the folder's path and open it themselves, once each, on their own node
    runner = runner_cls.bind(cfg.model_dir, backend, options, cfg.fault_file)
    front = dict(front_options or {})
    packer = Packer.options(user_config=cfg.packing.model_dump(), **front).bind(
        runner, cfg.model_dir, calibrated_max_tokens=calibrated
    )
    answering = {
        "doc_stride": cfg.doc_stride,
        "max_query_tokens": cfg.max_query_tokens,
        "max_answer_tokens": cfg.max_answer_tokens,
        "auto_truncate": cfg.auto_truncate,
        "request_timeout_s": cfg.request_timeout_s,
        "max_inflight_requests": cfg.max_inflight_requests,
        "tokenize_batch_size": cfg.tokenize_batch_size,
        "device": cfg.device,
        "body_read_timeout_s": cfg.body_read_timeout_s,
    }
    ingress = Ingress.options(**front) if front else Ingress
    return ingress.bind(
        packer, cfg.model_dir, model.manifest.source, cfg.limits, answering, api_keys=api_keys
    )
