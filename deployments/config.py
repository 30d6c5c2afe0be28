"""Typed configuration of the Serve application, validated before anything starts.

``AppConfig`` is the ``args`` block of ``configs/*.yaml`` (read by :func:`deployments.app.build_app`);
``PackingKnobs`` is the packer deployment's ``user_config``: it can change while the app runs
(Serve calls ``reconfigure``) without restarting any replica.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from packing.qa.requests import Limits


class PackingKnobs(BaseModel):
    """How the packer forms batches (Packer ``user_config``)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["attention_mask", "unpack_repack"] = "unpack_repack"  # graph layout
    algorithm: Literal["first_fit", "next_fit", "best_fit"] = "first_fit"  # row heuristic
    timeout_s: float = Field(0.01, ge=0.0, le=10.0)  # max wait of the oldest request
    max_valid_num: int | None = Field(None, ge=1, le=4096)  # sequences per batch (None: manifest)
    max_tokens: int | None = Field(None, ge=1)  # token budget per batch (None: batch x seq_len)
    max_pending: int = Field(4096, ge=1)  # requests the packer holds before refusing more


class AppConfig(BaseModel):
    """Arguments of the application builder."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = "models/random-base"  # prepared folder; prepared at start if missing
    model_source: str = "random:base"  # what to prepare from when model_dir is missing
    seq_len: int = Field(256, ge=8, le=512)  # used when preparing
    batch_size: int = Field(16, ge=1)  # used when preparing
    max_valid_num: int = Field(40, ge=1)  # used when preparing
    doc_stride: int = Field(128, ge=1)  # overlapping tokens between context windows
    max_query_tokens: int = Field(64, ge=1)
    max_answer_tokens: int = Field(30, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # runner replicas' ORT device
    intra_op_threads: int | None = Field(None, ge=1)  # ORT threads per runner replica
    request_timeout_s: float = Field(30.0, gt=0, le=3600)  # per-request deadline -> 504
    max_inflight_requests: int = Field(256, ge=1)  # answered concurrently; more -> 503
    packing: PackingKnobs = PackingKnobs()
    limits: Limits = Limits()  # request-size limits of the HTTP ingress
    # Drills and tests only: while this file exists on a runner's host, that runner's model
    # calls fail (InjectedFault -> 500 for their callers). None (the default) in production.
    fault_file: str | None = None

    @field_validator("fault_file")
    @classmethod
    def _absolute_fault_file(cls, value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    @field_validator("model_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # Replicas may run with another working directory: pin the path now.
        return str(Path(value).expanduser().resolve())
