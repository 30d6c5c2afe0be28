"""The application builder: ``serve run configs/squad.yaml`` finds it through ``import_path``.

Graph: HTTP -> Ingress -> Tokenizer (windows) -> Packer (@serve.batch, packing) -> PackRunner
replicas. Handles are injected through each deployment's ``__init__``.
"""

from __future__ import annotations

from pathlib import Path

from ray.serve import Application

from packing.model.manifest import MANIFEST, Manifest

from .config import AppConfig
from .ingress import Ingress
from .packer import Packer
from .runner import PackRunnerDeployment
from .tokenizer import TokenizerDeployment


def build_app(args: dict | None = None) -> Application:
    """Build the Serve application from the config file's ``args`` (validated up front)."""
    cfg = AppConfig(**(args or {}))
    common = {"model_dir": cfg.model_dir, "model_source": cfg.model_source,
              "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
              "max_valid_num": cfg.max_valid_num}
    runner = PackRunnerDeployment.bind(**common, device=cfg.device,
                                       intra_op_threads=cfg.intra_op_threads,
                                       preload=(cfg.packing.mode,), fault_file=cfg.fault_file)
    packer = Packer.options(user_config=cfg.packing.model_dump()).bind(runner, **common)
    tokenizer = TokenizerDeployment.bind(**common, doc_stride=cfg.doc_stride,
                                         max_query_tokens=cfg.max_query_tokens)
    answering = {"seq_len": cfg.seq_len, "doc_stride": cfg.doc_stride,
                 "max_query_tokens": cfg.max_query_tokens,
                 "max_answer_tokens": cfg.max_answer_tokens,
                 "request_timeout_s": cfg.request_timeout_s,
                 "max_inflight_requests": cfg.max_inflight_requests}
    return Ingress.bind(tokenizer, packer, model_name(cfg), cfg.limits, answering)


def model_name(cfg: AppConfig) -> str:
    """What answers are labelled with: the prepared folder's source, else the configured one."""
    try:
        if (Path(cfg.model_dir) / MANIFEST).exists():
            return Manifest.read(cfg.model_dir).source
    except (OSError, ValueError):
        pass
    return cfg.model_source
