"""Typed configuration of the Serve application, validated before anything starts.

``AppConfig`` is the ``args`` block of ``configs/*.yaml`` (read by :func:`deployments.app.build_app`);
``PackingKnobs`` is the packer deployment's ``user_config``: it can change while the app runs
(Serve calls ``reconfigure``) without restarting any replica. :func:`config_deployment_options`
reads a deployment's options (``max_ongoing_requests``, ...) from a config file, for code that
deploys from Python what the file deploys.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from packing.model.manifest import Manifest
from packing.model.task import TASKS
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.config import ALGORITHMS, DEFAULT_ALGORITHM, DEFAULT_MODE, MODES, PackingConfig
from packing.policy.shapes import DEFAULT_SHAPES
from packing.qa.requests import Limits
from packing.qa.windows import DOC_STRIDE, MAX_ANSWER_TOKENS, MAX_QUERY_TOKENS
from packing.runtime.admission import DEFAULT_ADMISSION, AdmissionConfig
from packing.runtime.calibrate.cache import AUTO
from packing.runtime.dispatch import DEFAULT_DISPATCH, DISPATCH
from packing.runtime.knobs import DEFAULT_MAX_TOKENS, DEFAULT_MAX_VALID_NUM, packing_config


class PackingKnobs(BaseModel):
    """How the packer admits windows and packs them (Packer ``user_config``)."""

    model_config = ConfigDict(extra="forbid")

    # Each default is written once, where the runtime reads it too (packing.runtime.knobs lists
    # them); choices are packing.policy.config's and dispatch's (Literal of a tuple: its
    # items). The upper caps (le=...) are the served app's own.
    mode: Literal[MODES] = Field(DEFAULT_MODE, description="Graph layout the plans are packed for.")
    algorithm: Literal[ALGORITHMS] = Field(
        DEFAULT_ALGORITHM, description="Row heuristic of the `attention_mask` layout."
    )
    max_batch_size: int | None = Field(
        DEFAULT_ADMISSION.max_batch_size,
        ge=1,
        le=65536,
        description="Admission (`@serve.batch`, count path): most windows per admitted batch; "
        "null: `max_valid_num` (one full plan).",
    )
    batch_wait_timeout_s: float = Field(
        DEFAULT_ADMISSION.batch_wait_timeout_s,
        ge=0.0,
        le=10.0,
        description="Admission (`@serve.batch`): a batch closes this long after its first "
        "window was taken.",
    )
    max_concurrent_batches: int | None = Field(
        DEFAULT_ADMISSION.max_concurrent_batches,
        ge=1,
        description="Admission (`@serve.batch`): admitted batches in the dispatch step at once; "
        "null: `max_pending`, so it never binds first.",
    )
    dispatch: Literal[DISPATCH] = Field(
        DEFAULT_DISPATCH,
        description="`merge`: each plan packs everything waiting for a runner slot (no collapse "
        "under load); `per_batch`: each admitted batch packed alone, as a plain "
        "`@serve.batch` batch function (comparison only).",
    )
    max_valid_num: int | None = Field(
        DEFAULT_MAX_VALID_NUM,
        ge=1,
        le=4096,
        description="Sequences per batch; null: the model folder's manifest "
        f"({DEFAULT_SHAPES.max_valid_num} for the default shapes).",
    )
    max_tokens: Annotated[int, Field(ge=1)] | Literal[AUTO] | None = Field(
        DEFAULT_MAX_TOKENS,
        description="Real tokens per batch. `auto`: the budget calibrated for the runners' "
        "device (measured once by `build_app` before any replica starts, cached in "
        "`model_dir/calibration.json`); an int pins it (`seq_len` .. "
        "`batch_size x seq_len`); null: the full batch, `batch_size x seq_len`.",
    )
    attention_groups: int = Field(
        ATTENTION_GROUPS,
        ge=1,
        le=ATTENTION_GROUPS,
        description="`unpack_repack` attention width groups per batch (1: rows as wide as the "
        "batch's longest sequence).",
    )
    max_pending: int = Field(
        4096,
        ge=1,
        description="Windows the packer holds before refusing more (503 + `Retry-After`).",
    )

    def admission(self) -> AdmissionConfig:
        """The admission knobs as the runtime's :class:`AdmissionConfig`."""
        return AdmissionConfig(
            self.max_batch_size, self.batch_wait_timeout_s, self.max_concurrent_batches
        )

    def packing_config(self, manifest: Manifest, calibrated: int | None) -> PackingConfig:
        """The packing knobs as the policy's :class:`PackingConfig` for a model folder's
        ``manifest``, built as the in-process runner builds it
        (:func:`packing.runtime.knobs.packing_config`): ``max_tokens: auto`` is
        ``calibrated``, the budget calibrated for the runners' device (None: the full batch).

        Raises:
            ValueError: a knob that does not fit the model, naming it and its value.
        """
        return packing_config(
            manifest,
            mode=self.mode,
            algorithm=self.algorithm,
            max_valid_num=self.max_valid_num,
            max_tokens=self.max_tokens,
            attention_groups=self.attention_groups,
            calibrated=calibrated,
        )


class PrepareShapes(BaseModel):
    """Shapes used only when ``model_dir`` has no manifest yet and is prepared at start; once
    prepared, every shape the app uses comes from the folder's manifest."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(DEFAULT_SHAPES.seq_len, ge=8, le=512, description="Tokens per row.")
    batch_size: int = Field(DEFAULT_SHAPES.batch_size, ge=1, description="Rows per batch.")
    max_valid_num: int = Field(
        DEFAULT_SHAPES.max_valid_num, ge=1, description="Sequences per packed batch."
    )
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "fp32",
        description="Graph precision (docs/precision.md). `auto`: a folder that exists is "
        "served in the precision it holds; a missing one is prepared in the best "
        "for the runners' device -- int8 on a CPU, fp16 on CUDA, fp32 under sim. "
        "A named precision must be the folder's: another stops the app at start "
        "(the folder is never prepared again in another precision).",
    )


class SimDevice(BaseModel):
    """The simulated accelerator (``device: sim``): each batch sleeps for its device time."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        "ipu", description="Named profile (`packing.runtime.sim.PROFILES`): `ipu`, `slow`, `fast`."
    )
    tokens_per_s: float | None = Field(
        None, gt=0, description="Override of the profile: token slots per second."
    )
    overhead_ms: float | None = Field(
        None, ge=0, description="Override of the profile: fixed time per batch, ms."
    )

    @model_validator(mode="after")
    def _known_profile(self) -> SimDevice:
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

    model_dir: str = Field(
        "models/squad-mini",
        description="Prepared model folder (relative to where `serve run` starts); prepared "
        "once at start when missing. A folder that exists is never overwritten: "
        "one of another source, task (when `task` names one) or precision stops "
        'the app at start with a message (docs/serving.md, "The model folder").',
    )
    model_source: str = Field(
        "builtin:squad-mini",
        description="What to prepare `model_dir` from when it is missing: `builtin:squad-mini`, "
        "`builtin:minilm-embed`, a model-hub id, a local transformers or "
        "sentence-transformers folder, `random:tiny` / `random:base`. A folder "
        "that exists must have been prepared from it, except that the default is "
        "not checked against a folder a user prepared (`packed-bert prepare`): "
        "that one is served as it is.",
    )
    task: Literal[TASKS] | None = Field(
        None,
        description="The task the app serves, which decides its routes: `qa` (`/v1/answer`), "
        "`embed` (`/v1/embeddings`, `/embed`, `/similarity`), `classify` "
        "(`/predict`, `/rerank`); the HF Inference API on `/` for each. null: the "
        "model folder's own (a missing folder is prepared for what `model_source` "
        "is made for). A folder of another task stops the app at start.",
    )
    prepare: PrepareShapes = Field(
        PrepareShapes(),
        description="Shapes used only when `model_dir` must be prepared; "
        "afterwards every shape comes from its manifest.",
    )
    doc_stride: int = Field(
        DOC_STRIDE, ge=1, description="Tokens of overlap between the windows of a long context."
    )
    max_query_tokens: int = Field(
        MAX_QUERY_TOKENS, ge=1, description="Longest question, in tokens."
    )
    max_answer_tokens: int = Field(
        MAX_ANSWER_TOKENS, ge=1, description="Longest answer span, in tokens."
    )
    auto_truncate: bool = Field(
        False,
        description="embed and classify apps: an input over the model's `seq_len` tokens is "
        "truncated to it when the request does not say (TEI's and the HF "
        "feature-extraction body's `truncate`), and always on the routes without "
        "such a field (OpenAI's `/v1/embeddings`, HF text-classification); false: "
        "such an input gets 413 with its token count.",
    )
    device: Literal["auto", "cpu", "cuda", "sim"] = Field(
        "auto",
        description="Runner replicas' device: ONNX Runtime on `cpu`, `cuda` (onnxruntime-gpu) "
        "or CUDA when available (`auto`), or the simulated accelerator (`sim`).",
    )
    sim: SimDevice = Field(
        SimDevice(), description="The simulated device, used with `device: sim`."
    )
    intra_op_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads per runner replica; null: all cores."
    )
    intra_op_spinning: bool = Field(
        False,
        description="Whether a runner replica's idle ONNX Runtime threads spin waiting "
        "for the next operator (`session.intra_op.allow_spinning`). Off: "
        "a served runner shares its cores with the proxy, the Ingress, the "
        "Packer and other runner replicas, whose CPU spinning threads take for "
        'no measured gain (docs/serving.md "Threads").',
    )
    plan_overhead_s: float = Field(
        0.01,
        ge=0,
        le=10,
        description="Seconds a served plan costs beyond its model run (the Packer -> "
        "PlanExecutor -> Packer hops), added to each calibrated batch time when "
        "`max_tokens: auto` picks the token budget: a small budget pays it more often per "
        "token. 0 picks as an in-process runner does "
        '(docs/serving.md "The token budget when served").',
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Per-request deadline; 504 after it."
    )
    max_inflight_requests: int = Field(
        256,
        ge=1,
        description="Requests each Ingress replica answers at once; 503 + `Retry-After` beyond.",
    )
    tokenize_batch_size: int = Field(
        64,
        ge=1,
        description="Most questions in one tokenizer batch call (at least "
        "`limits.max_batch_items`).",
    )
    packing: PackingKnobs = Field(
        PackingKnobs(),
        description="The Packer's initial `user_config` (the deployment's "
        "`user_config` in the config file overrides it).",
    )
    limits: Limits = Field(Limits(), description="Request-size limits of the HTTP ingress.")
    body_read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Most seconds a request body may take to arrive (408 beyond), so slow "
        "uploads cannot hold every in-flight slot.",
    )
    api_keys: list[SecretStr] | None = Field(
        None,
        description="Bearer keys accepted (`Authorization: Bearer <key>`; each 16+ characters "
        "of a bearer token's alphabet). Also read, comma-separated, from the "
        "environment variable `PACKED_BERT_API_KEYS` where the app is built; keys "
        "of both are accepted. Ray logs the app's args at start: prefer the "
        "variable. null and no variable: no key (allowed on a loopback host only).",
    )
    allow_unauthenticated_public: bool = Field(
        False,
        description="Start without an API key although `http_options.host` is not a loopback "
        "address (anyone who reaches the port can use the app).",
    )
    fault_file: str | None = Field(
        None,
        description="Drills and tests only: while this file exists on a runner's host, that "
        "runner's model calls fail (`InjectedFault`, a 500 for their callers); "
        "remove it and batches run again. null (the default) in production.",
    )

    @field_validator("api_keys", mode="plain")
    @classmethod
    def _usable_api_keys(cls, value):
        # plain: the checks never hand the raw value to pydantic, whose errors would print it
        from .auth import parse_keys

        keys = parse_keys(value)
        return None if keys is None else [SecretStr(k) for k in keys]

    @model_validator(mode="after")
    def _window_limits_fit(self) -> AppConfig:
        """A body the limits let through must fit the packer: otherwise it would get a 413
        from the packer instead of a clear limit, or wait for room that never comes."""
        lim, pending = self.limits, self.packing.max_pending
        if lim.max_windows_per_request > lim.max_windows_per_body:
            raise ValueError(
                f"limits.max_windows_per_request ({lim.max_windows_per_request}) "
                f"must be <= limits.max_windows_per_body "
                f"({lim.max_windows_per_body})"
            )
        if lim.max_batch_items > pending:
            raise ValueError(
                f"limits.max_batch_items ({lim.max_batch_items}) must be <= "
                f"packing.max_pending ({pending}): the sequences of a body of "
                f"that many texts go to the packer at once"
            )
        if lim.max_windows_per_body > pending:
            raise ValueError(
                f"limits.max_windows_per_body ({lim.max_windows_per_body}) must "
                f"be <= packing.max_pending ({pending}), the windows the packer "
                f"holds at once"
            )
        return self

    @field_validator("fault_file")
    @classmethod
    def _absolute_fault_file(cls, value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    def precision(self) -> str:
        """The precision a missing model folder is prepared in: ``prepare.precision``, with
        ``auto`` resolved for ``device`` (int8 on cpu, fp16 on cuda -- for ``auto``: on cuda
        when ONNX Runtime here has the CUDA provider --, fp32 under sim). For a folder that
        exists, ``auto`` takes the precision it holds (:func:`deployments.model_match.decide`)."""
        chosen = self.prepare.precision
        if chosen != "auto":
            return chosen
        if self.device == "sim":
            return "fp32"
        device = self.device
        if device == "auto":
            from packing.runtime.backend import resolve_device

            device = resolve_device("auto")  # cuda only when a session really gets CUDA
        return "fp16" if device == "cuda" else "int8"

    def runner_backend(self) -> tuple[str, dict]:
        """Backend name and options for the PlanExecutor replicas."""
        if self.device == "sim":
            return "sim", self.sim.backend_options()
        options: dict = {"device": self.device}
        if self.intra_op_threads:
            options["intra_op_threads"] = self.intra_op_threads
        options["spin"] = self.intra_op_spinning
        return "onnxruntime", options

    @field_validator("model_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # Replicas may run with another working directory: pin the path now.
        return str(Path(value).expanduser().resolve())


def config_deployment_options(path: str | Path, name: str) -> dict:
    """The options of deployment ``name`` in the first application of the Serve config file
    at ``path`` (its ``deployments:`` entry, a copy, without ``name``): what code deploying the
    same app from Python (``build_graph(..., runner_options=...)``) takes from the file, so
    that a setting such as the runners' ``max_ongoing_requests`` is written once, there.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file has no application, or its first has no deployment ``name``;
            the message names the file.
    """
    import yaml

    path = Path(path)
    config = yaml.safe_load(path.read_text()) or {}
    apps = config.get("applications") if isinstance(config, dict) else None
    if not apps:
        raise ValueError(f"{path}: no applications")
    entries = apps[0].get("deployments") or []
    for entry in entries:
        if entry.get("name") == name:
            return {k: copy.deepcopy(v) for k, v in entry.items() if k != "name"}
    names = [entry.get("name") for entry in entries]
    raise ValueError(
        f"{path}: application {apps[0].get('name')!r} has no deployment "
        f"{name!r} (its deployments: {names})"
    )
