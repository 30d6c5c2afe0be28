"""Typed configuration of the Serve application, validated before anything starts.

``AppConfig`` is the ``args`` block of ``configs/*.yaml`` (read by :func:`deployments.app.build_app`);
``PackingKnobs`` is the packer deployment's ``user_config``: it can change while the app runs
(Serve calls ``reconfigure``) without restarting any replica.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from packing.qa.requests import Limits
from packing.runtime.admission import DEFAULT_ADMISSION, AdmissionConfig


class PackingKnobs(BaseModel):
    """How the packer admits windows and packs them (Packer ``user_config``)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["attention_mask", "unpack_repack"] = "unpack_repack"  # graph layout
    algorithm: Literal["first_fit", "next_fit", "best_fit"] = "first_fit"  # row heuristic
    # Admission (@serve.batch, count path). Windows per admitted batch (None: max_valid_num).
    max_batch_size: int | None = Field(DEFAULT_ADMISSION.max_batch_size, ge=1, le=65536)
    # Longest a batch stays open after its first window was taken.
    batch_wait_timeout_s: float = Field(DEFAULT_ADMISSION.batch_wait_timeout_s, ge=0.0, le=10.0)
    # Admitted batches in the dispatch step at once (None: max_pending, so it never binds first).
    max_concurrent_batches: int | None = Field(DEFAULT_ADMISSION.max_concurrent_batches, ge=1)
    # merge: the next plan packs everything waiting for a runner slot (no collapse under load);
    # per_batch: each admitted batch packed alone, as a plain @serve.batch (comparison only).
    dispatch: Literal["merge", "per_batch"] = "merge"
    max_valid_num: int | None = Field(None, ge=1, le=4096)  # sequences per batch (None: manifest)
    # Real tokens per batch: "auto" = the budget calibrated for the runners' device (measured
    # once by build_app, cached in the model folder's calibration.json); an int pins it
    # (within [seq_len, batch_size x seq_len]); None = the full batch, batch_size x seq_len.
    max_tokens: Annotated[int, Field(ge=1)] | Literal["auto"] | None = "auto"
    attention_groups: int = Field(4, ge=1, le=4)  # unpack_repack attention width groups (1: longest)
    max_pending: int = Field(4096, ge=1)  # windows the packer holds before refusing more (503)

    def admission(self) -> AdmissionConfig:
        """The admission knobs as the runtime's :class:`AdmissionConfig`."""
        return AdmissionConfig(self.max_batch_size, self.batch_wait_timeout_s,
                               self.max_concurrent_batches)


class PrepareShapes(BaseModel):
    """Shapes used only when ``model_dir`` has no manifest yet and is prepared at start; once
    prepared, every shape the app uses comes from the folder's manifest."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(384, ge=8, le=512)  # tokens per row
    batch_size: int = Field(16, ge=1)  # rows per batch
    max_valid_num: int = Field(40, ge=1)  # sequences per packed batch
    # Graph precision (docs/precision.md). auto: the best on the runners' device -- int8 on a
    # CPU, fp16 on CUDA, fp32 under sim. A folder prepared in another precision is prepared
    # again at start.
    precision: Literal["auto", "fp32", "int8", "fp16"] = "fp32"


class SimDevice(BaseModel):
    """The simulated accelerator (``device: sim``): each batch sleeps for its device time."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "ipu"  # named profile (packing.runtime.sim.PROFILES)
    tokens_per_s: float | None = Field(None, gt=0)  # override: token slots per second
    overhead_ms: float | None = Field(None, ge=0)  # override: fixed time per batch

    @model_validator(mode="after")
    def _known_profile(self) -> "SimDevice":
        from packing.runtime.sim import sim_profile

        sim_profile(self.profile, tokens_per_s=self.tokens_per_s)  # ValueError names the bad one
        return self

    def backend_options(self) -> dict:
        """Keyword options of the ``sim`` backend."""
        out: dict = {"profile": self.profile}
        if self.tokens_per_s is not None:
            out["tokens_per_s"] = self.tokens_per_s
        if self.overhead_ms is not None:
            out["overhead_s"] = self.overhead_ms / 1000.0
        return out


class AppConfig(BaseModel):
    """Arguments of the application builder."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = "models/squad-mini"  # prepared folder; prepared at start if missing
    model_source: str = "builtin:squad-mini"  # what to prepare from when model_dir is missing
    prepare: PrepareShapes = PrepareShapes()  # shapes for that preparation only
    doc_stride: int = Field(128, ge=1)  # overlapping tokens between context windows
    max_query_tokens: int = Field(64, ge=1)
    max_answer_tokens: int = Field(30, ge=1)
    # Runner replicas' device: ONNX Runtime on cpu / cuda / auto, or the simulated accelerator.
    device: Literal["auto", "cpu", "cuda", "sim"] = "auto"
    sim: SimDevice = SimDevice()  # used when device is sim
    intra_op_threads: int | None = Field(None, ge=1)  # ORT threads per runner replica
    request_timeout_s: float = Field(30.0, gt=0, le=3600)  # per-request deadline -> 504
    max_inflight_requests: int = Field(256, ge=1)  # answered concurrently per Ingress replica
    tokenize_batch_size: int = Field(64, ge=1)  # most questions in one tokenizer batch call
    packing: PackingKnobs = PackingKnobs()
    limits: Limits = Limits()  # request-size limits of the HTTP ingress
    # Drills and tests only: while this file exists on a runner's host, that runner's model
    # calls fail (InjectedFault -> 500 for their callers). None (the default) in production.
    fault_file: str | None = None

    @field_validator("fault_file")
    @classmethod
    def _absolute_fault_file(cls, value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    def precision(self) -> str:
        """The precision the model folder must have: ``prepare.precision``, with ``auto``
        resolved for ``device`` (int8 on cpu, fp16 on cuda -- for ``auto``: on cuda when ONNX
        Runtime here has the CUDA provider --, fp32 under sim)."""
        chosen = self.prepare.precision
        if chosen != "auto":
            return chosen
        if self.device == "sim":
            return "fp32"
        device = self.device
        if device == "auto":
            import onnxruntime as ort

            device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        return "fp16" if device == "cuda" else "int8"

    def runner_backend(self) -> tuple[str, dict]:
        """Backend name and options for the PlanExecutor replicas."""
        if self.device == "sim":
            return "sim", self.sim.backend_options()
        options: dict = {"device": self.device}
        if self.intra_op_threads:
            options["intra_op_threads"] = self.intra_op_threads
        return "onnxruntime", options

    @field_validator("model_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # Replicas may run with another working directory: pin the path now.
        return str(Path(value).expanduser().resolve())
