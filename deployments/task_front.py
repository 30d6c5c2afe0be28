"""What the task routes need from an Ingress replica: the served model and its task, the
pipeline of that task, the settings the routes share, and the one way a body's sequences run.

A model folder serves one task (its manifest's :class:`~packing.model.task.TaskSpec`); a
route of another task is answered 404 with a message naming the app's task and its routes
(:meth:`TaskFront.refusal`). An embed or classify body is tokenized in one batch call
(:data:`BIG_BODY_CHARS` decides where) and its sequences go to the Packer in a
:class:`~deployments.packer_call.PackerCall` shared with the bodies tokenized in the same
event-loop turn (:class:`~deployments.packer_call.CallGatherer`), which withdraws them if the
client goes away.
The route adapters (``routes_openai``, ``routes_tei``, ``routes_hf``) only parse, call
:meth:`TaskFront.run` or ``qa_run`` and write the response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from packing.model.manifest import MANIFEST
from packing.model.prepared import ModelLike, PreparedModel
from packing.model.task import TaskSpec
from packing.qa.requests import Limits
from packing.runtime.features import Features
from packing.tasks.sequences import first_problem, input_chars

from .packer_call import CallGatherer

BIG_BODY_CHARS = 16_384
"""Bodies with more characters than this (QA questions and contexts; texts to embed or
classify) are tokenized apart, in a worker thread with a tokenizer of their own (QA: one
question at a time, stopping at the first over a limit); smaller bodies are tokenized on the
event loop. One tokenizer call on 16,384 characters takes about 30 ms at worst (punctuation,
one token per character)."""

ROUTE_TASKS: dict[str, str] = {
    "POST /v1/answer": "qa",
    "POST /v1/embeddings": "embed",
    "POST /embed": "embed",
    "POST /similarity": "embed",
    "POST /predict": "classify",
    "POST /rerank": "classify",
}
"""The model routes of one task; ``POST /`` serves the HF Inference API of every task."""

COMMON_ROUTES = (
    "GET /v1/models",
    "GET /info",
    "GET /health",
    "GET /healthz",
    "GET /v1/stats",
    "GET /docs",
)
"""The routes every app serves, whatever its task."""

TRUNCATE_HINT = '; send "truncate": true to truncate it'
PARAMETERS_TRUNCATE_HINT = '; send "parameters": {"truncate": true} to truncate it'
AUTO_TRUNCATE_HINT = "; this route truncates only when the app is started with auto_truncate: true"


def task_routes(task: str) -> tuple[str, ...]:
    """Every route an app of ``task`` serves (for messages and unknown-route 404s)."""
    return (*(r for r, t in ROUTE_TASKS.items() if t == task), "POST /", *COMMON_ROUTES)


@dataclass(frozen=True)
class ModelInfo:
    """The served model as the responses describe it, read once from its folder."""

    model_id: str  # the manifest's source: the id every response names
    spec: TaskSpec  # the folder's task
    seq_len: int  # most tokens in one sequence (TEI's max_input_length)
    hidden_size: int  # an embedding's dimensions
    precision: str  # fp32 | int8 | fp16
    max_valid_num: int  # most sequences in one model batch
    created: int  # Unix seconds the folder was prepared (its manifest's modification time)
    architecture: str = "bert"  # the source's encoder family (the manifest's architecture)

    @classmethod
    def read(cls, model_dir: ModelLike, model_id: str) -> ModelInfo:
        """The info of prepared folder ``model_dir`` (a path, or a
        :class:`~packing.model.prepared.PreparedModel`, whose manifest is not read again),
        served as ``model_id``."""
        model = PreparedModel.open(model_dir)
        manifest = model.manifest
        return cls(
            model_id,
            manifest.task,
            manifest.seq_len,
            manifest.dims.hidden_size,
            manifest.precision,
            manifest.max_valid_num,
            int((model.folder / MANIFEST).stat().st_mtime),
            manifest.architecture,
        )

    @property
    def task(self) -> str:
        """``qa``, ``embed`` or ``classify``."""
        return self.spec.task


class TaskFront:
    """The task routes' view of one Ingress replica.

    ``packer``: the Packer's handle; ``info``: the model; ``limits``: the request-size
    limits; ``settings``: the Ingress's settings (``auto_truncate``, ``max_inflight_requests``,
    ...); ``pipelines``: for embed and classify, two pipelines of the folder's task, one for
    the event loop and one for ``executor``'s worker thread (a tokenizer call is not
    reentrant); for qa, ``qa`` (the QA pipeline) and ``qa_run`` (the Ingress's
    windows-and-outputs path of ``POST /v1/answer``: ``(requests, is_list) -> (windows per
    request, model outputs)``)."""

    def __init__(
        self,
        packer: Any,
        info: ModelInfo,
        limits: Limits,
        settings: Mapping[str, Any],
        executor: Executor | None = None,
        pipelines: tuple[Any, Any] | None = None,
        qa: Any = None,
        qa_run: Callable[..., Awaitable[tuple[list, list]]] | None = None,
    ) -> None:
        if info.task in ("embed", "classify") and pipelines is None:
            raise ValueError(f"a {info.task} app needs its pipelines")
        if info.task == "qa" and (qa is None or qa_run is None):
            raise ValueError("a qa app needs its QA pipeline and qa_run")
        self.packer = packer
        # bodies tokenized in the same event-loop turn share one packer call
        self._calls = CallGatherer(packer, limits.max_windows_per_body)
        self.info = info
        self.limits = limits
        self.settings = dict(settings)
        self.auto_truncate = bool(self.settings.get("auto_truncate", False))
        self.executor = executor
        self.pipeline, self._pipeline_apart = pipelines or (None, None)
        self.qa = qa
        self.qa_run = qa_run

    def refusal(self, route: str) -> str | None:
        """Why this app does not serve ``route`` (``"METHOD /path"``: a 404's message, naming
        the app's task and its routes), or None when it does."""
        task = ROUTE_TASKS.get(route)
        mine = self.info.task
        if task is not None and task != mine:
            return (
                f"{route} serves the {task} task; this app serves {mine} "
                f"({self.info.model_id}): its routes are {', '.join(task_routes(mine))}"
            )
        if route == "POST /rerank" and self.info.spec.num_labels != 1:
            labels = ", ".join(self.info.spec.labels)
            return (
                f"{route} needs a reranker (a classify model with one output); this app's "
                f"model ({self.info.model_id}) has {self.info.spec.num_labels} labels "
                f"({labels}): use POST /predict"
            )
        return None

    async def run(
        self, inputs: Sequence[Any], truncate: bool, names: Sequence[str] | None, hint: str = ""
    ) -> tuple[list[Features], list]:
        """The model results of one body's inputs (texts, pairs or token ids), in order, and
        their features: tokenized in one batch call (on the event loop, or apart in the worker
        thread for a body over :data:`BIG_BODY_CHARS`), then a packer call shared with the
        bodies of the same event-loop turn.

        Raises the first input's BadRequest or TooLarge (prefixed with its name, ``names[k]``,
        as the body names it; ``hint`` after a TooLarge: how the route asks for truncation),
        or the packer call's error. If the caller is cancelled, the body's sequences are
        withdrawn from the packer."""
        if input_chars(inputs) > BIG_BODY_CHARS and self.executor is not None:
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(
                self.executor, self._pipeline_apart.encode, list(inputs), truncate
            )
        else:
            encoded = self.pipeline.encode(list(inputs), truncate)
        features = first_problem(encoded, names, hint)
        return features, await self._calls.run(features)
