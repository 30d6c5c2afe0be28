"""HTTP ingress and tokenizer deployment (FastAPI through ``serve.ingress``).

The model folder's task (its manifest's ``task``) decides which model routes answer; a route
of another task gets 404 naming the app's task (:meth:`TaskFront.refusal
<deployments.task_front.TaskFront.refusal>`):

* qa: ``POST /v1/answer`` (this app's own API) and the HF Inference API's question-answering
  on ``POST /``;
* embed: OpenAI's ``POST /v1/embeddings``, TEI's ``POST /embed`` and ``POST /similarity``, the
  HF Inference API's feature-extraction and sentence-similarity on ``POST /``;
* classify: TEI's ``POST /predict`` and ``POST /rerank`` (a model with one output), the HF
  Inference API's text-classification on ``POST /``;
* every app: ``GET /v1/models`` (OpenAI), ``GET /info`` and ``GET /health`` (TEI),
  ``GET /healthz``, ``GET /v1/stats``; OpenAPI at ``/docs`` and ``/openapi.json``.

For QA it validates each body, tokenizes it into windows (the bodies that queue up while the
event loop is busy are tokenized together with one fast-tokenizer batch call, gathered by
``@serve.batch``), sends the windows of all those bodies to the packer in one handle call,
and picks the best span, each step through the one QA pipeline
(:class:`packing.qa.pipeline.QAPipeline`); this module keeps only HTTP and the batching. Token
ids cross to the packer once; the character offsets needed to cut the answer stay here. The
other routes are one-line delegations to their adapters (``routes_openai``, ``routes_tei``,
``routes_hf``) over the task's pipeline (:mod:`packing.tasks`), one packer call per body;
every model route shares the body reading, the limits, the deadline, the in-flight cap and
the error mapping below.

Every error is JSON ``{"error": "<one line>"}`` (FastAPI's own 404/405/422 too:
``deployments/errors.py``) with a 4xx for the client's mistakes and a 5xx for the server's,
whose message names an incident id and never the exception's text (that goes to the log under
the id). With API keys set, requests need ``Authorization: Bearer <key>``
(``deployments/auth.py``).
"""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from packing.model.prepared import ModelLike, PreparedModel
from packing.qa.pipeline import (
    QAPipeline,
    QASettings,
    Windows,
    features_of,
    first_problem,
    window_count,
)
from packing.qa.requests import (
    BadRequest,
    Limits,
    QARequest,
    TooLarge,
    decode_json,
    parse_body,
    parse_payload,
)
from packing.runtime.admission import NeverAdmitted, Overloaded
from packing.runtime.features import InvalidInput
from packing.tasks import ClassifyPipeline, EmbedPipeline

from . import routes_hf, routes_openai, routes_tei
from .auth import install as install_auth
from .auth import use_keys
from .body import BodyError, read_body
from .errors import error_response, internal_error, use_routes
from .errors import install as install_errors
from .metrics import IngressMetrics
from .packer_call import PackerCall, share_calls
from .responses import VectorJSONResponse
from .task_front import BIG_BODY_CHARS, ModelInfo, TaskFront, task_routes

__all__ = ["BIG_BODY_CHARS", "Ingress", "api", "request_schema", "use_limits"]

_ANSWER = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "score": {"type": "number"},
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "model": {"type": "string"},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def request_schema(limits: Limits) -> dict:
    """JSON schema of a ``POST /v1/answer`` body under ``limits``: one ``{question, context}``
    object or a list of 1 to ``max_batch_items`` of them, each string within its limit in
    characters. The OpenAPI document shows the limits the app was configured with."""
    item = {
        "type": "object",
        "required": ["question", "context"],
        "additionalProperties": False,
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": limits.max_question_chars},
            "context": {"type": "string", "minLength": 1, "maxLength": limits.max_context_chars},
        },
    }
    return {
        "oneOf": [
            item,
            {"type": "array", "items": item, "minItems": 1, "maxItems": limits.max_batch_items},
        ]
    }


_OPENAPI = {
    # the schema is set from the configured Limits when the Ingress starts (use_limits)
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": request_schema(Limits())}},
    },
    "responses": {
        "200": {
            "description": "The best answer span (a list for a list body)",
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_ANSWER, {"type": "array", "items": _ANSWER}]}
                }
            },
        },
        **{
            code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
            for code, text in (
                ("400", "Malformed or invalid body"),
                ("401", "Missing or invalid API key (when keys are set)"),
                ("404", "The app's model is not a qa model"),
                ("408", "Body not received within body_read_timeout_s"),
                ("413", "Body too large, or more model windows than the limits allow"),
                ("415", "Not application/json"),
                ("503", "Overloaded; retry after Retry-After seconds"),
                ("504", "No answer within the deadline"),
                ("500", "The model call failed"),
            )
        },
    },
}


def use_limits(limits: Limits) -> None:
    """Make this process's OpenAPI document (``/openapi.json``, ``/docs``) describe
    ``limits``: the body schema of ``POST /v1/answer`` is rebuilt and the cached document
    dropped, so the next request for it is generated again."""
    _OPENAPI["requestBody"]["content"]["application/json"]["schema"] = request_schema(limits)
    api.openapi_schema = None


api = FastAPI(
    title="packed-bert-serve",
    version="0.1.0",
    description="BERT-family encoders served with packed batches: extractive question "
    "answering, embeddings, classification and reranking (the model "
    "folder's task decides which routes answer).",
)
install_auth(api)  # optional bearer keys (deployments/auth.py)
install_errors(api)  # every error as {"error": ...}; outermost (deployments/errors.py)


def _root_cause(exc: BaseException) -> BaseException:
    """The user-level exception inside Ray's wrappers (RayTaskError keeps it as ``cause``)."""
    seen = 0
    while getattr(exc, "cause", None) is not None and seen < 8:
        exc, seen = exc.cause, seen + 1
    return exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


async def _json_body(request: Request, limits: Limits, timeout_s: float) -> bytes | JSONResponse:
    """The raw body of a model route's request, or the error response that refuses it: 415
    unless ``application/json``, 413 for a declared or actual size over
    ``limits.max_body_bytes``, 408 when it has not all arrived within ``timeout_s``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return error_response(
            415, f"content-type must be application/json, got {ctype or 'none'!r}"
        )
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return error_response(413, f"body is {declared} bytes; at most {limit} allowed")
    try:
        return bytes(await read_body(request.stream(), limit, timeout_s))
    except BodyError as exc:
        return error_response(exc.status, str(exc))


def _failure(exc: BaseException) -> JSONResponse:
    """The response for a model route's exception (its deadline aside): 413 for work no retry
    can get done, 400 for bad input, 503 + ``Retry-After`` when overloaded, else a 500 naming
    an incident (the cause logged, never echoed)."""
    cause = _root_cause(exc)
    if isinstance(cause, (TooLarge, NeverAdmitted)):  # a retry cannot succeed
        return error_response(413, _one_line(cause))
    if isinstance(cause, (BadRequest, InvalidInput)):
        return error_response(400, _one_line(cause))
    if isinstance(cause, Overloaded):
        return error_response(503, _one_line(cause), {"Retry-After": "1"})
    return internal_error(cause, "the model call")


@dataclass
class _Sent:
    """One body's part of a tokenizer batch, filled in by ``Ingress._submit``: its windows,
    why it cannot be answered (:func:`~packing.qa.pipeline.first_problem`) or else the packer
    call its windows went in and where they start. The caller holds it before the batch runs,
    so it can withdraw its windows even if it is cancelled before it reads the result."""

    windows: list[Windows] | None = None
    problem: tuple | None = None
    call: PackerCall | None = None
    offset: int = 0


def _questions(items: list) -> int:
    """``batch_size_fn`` of the tokenizer batch: questions in the gathered bodies. Never raises."""
    try:
        return sum(len(body) for body, _ in items)
    except Exception:  # noqa: BLE001 - an exception here would stall Serve's batch loop
        return len(items)


@serve.deployment(name="Ingress", max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    """The tokenizer deployment, serving HTTP: validates bodies, tokenizes them (QA bodies in
    batches, sending the windows of the bodies tokenized together to the packer in one call;
    an embed or classify body in one call of its own, :class:`TaskFront`), and writes the
    answers, vectors or scores in the shape of the route's API."""

    def __init__(
        self,
        packer: DeploymentHandle,
        model_dir: ModelLike,
        model_name: str,
        limits: Limits,
        answering: dict,
        api_keys=None,
    ) -> None:
        from transformers import AutoTokenizer

        # Batches here are a few bodies: the fast tokenizer's worker threads would add CPU
        # (spinning between batches) and no speed; replicas are the parallelism. A value
        # set in the replica's environment wins.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.packer = packer
        model = PreparedModel.open(model_dir)  # its manifest read once, for all below
        info = ModelInfo.read(model, model_name)  # the folder's task, shapes, id
        # seq_len: the manifest is the one source of the window size; echoed by /v1/stats
        self.answering = {**answering, "seq_len": info.seq_len}
        # Big bodies: their own tokenizer (a tokenizer call is not reentrant) in one thread.
        self._apart = ThreadPoolExecutor(1, thread_name_prefix="tokenize-big")
        if info.task == "qa":
            settings = QASettings.from_mapping(self.answering)
            self.qa = QAPipeline(AutoTokenizer.from_pretrained(str(model)), settings)
            self.qa_apart = QAPipeline(AutoTokenizer.from_pretrained(str(model)), settings)
            self.front = TaskFront(
                packer,
                info,
                limits,
                self.answering,
                self._apart,
                qa=self.qa,
                qa_run=self._windows_and_outputs,
            )
        else:
            self.qa = self.qa_apart = None
            pipeline = EmbedPipeline if info.task == "embed" else ClassifyPipeline
            self.front = TaskFront(
                packer,
                info,
                limits,
                self.answering,
                self._apart,
                pipelines=(pipeline.from_model_dir(model), pipeline.from_model_dir(model)),
            )
        self.model_name = model_name
        self.limits = limits
        use_limits(limits)
        use_routes(api, task_routes(info.task))  # what an unknown route's 404 lists
        use_keys(api_keys)  # None: no key asked (build_app allowed it)
        self.body_read_timeout_s = answering.get("body_read_timeout_s", 10.0)
        self.deadline_s = answering["request_timeout_s"]
        self.max_inflight = answering["max_inflight_requests"]
        # A body of max_batch_items questions must fit one tokenizer batch.
        self._submit.set_max_batch_size(
            max(answering["tokenize_batch_size"], limits.max_batch_items)
        )
        self.inflight = 0
        self.metrics = IngressMetrics()

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, batch_size_fn=_questions)
    async def _submit(self, items: list[tuple[list[QARequest], _Sent]]) -> list[None]:
        """Tokenize the bodies queued right now in one batch call, and send the windows of the
        bodies that can be answered to the packer, in as few handle calls as
        ``limits.max_windows_per_body`` windows per call allow (usually one).

        Each item is ``(body, sent)``; the batch fills in ``sent`` (:class:`_Sent`): a body with
        a bad or too large request gets its ``problem`` and no call, and does not affect the
        others; the others share a :class:`~deployments.packer_call.PackerCall`, their windows
        from ``offset`` (grouped by :func:`~deployments.packer_call.share_calls`, as the task
        routes' :class:`~deployments.packer_call.CallGatherer` groups its bodies). Runs on the
        event loop without awaiting, so tokenizer calls never overlap, and returns before the
        packer answers."""
        flat = self.qa.tokenize([(r.question, r.context) for body, _ in items for r in body])
        sendable: list[list | None] = []  # per body: its windows' features, None if not sent
        k = 0
        for body, sent in items:
            sent.windows = flat[k : k + len(body)]
            k += len(body)
            sent.problem = first_problem(sent.windows, self.limits)
            sendable.append(None if sent.problem is not None else features_of(sent.windows))
        placed = share_calls(self.packer, sendable, self.limits.max_windows_per_body)
        for (_, sent), where in zip(items, placed):
            if where is not None:
                sent.call, sent.offset = where
        return [None] * len(items)

    async def _tokenize_apart(self, reqs: list[QARequest], sent: _Sent) -> None:
        """Fill in ``sent`` for a big body: its questions' windows, one question at a time in
        the worker thread (the event loop serves other requests meanwhile), stopping after the
        first question that is bad or over a limit (``sent.problem``). Cancelling the caller
        stops it after the question being tokenized."""
        loop = asyncio.get_running_loop()
        sent.windows = []
        for r in reqs:
            sent.windows += await loop.run_in_executor(
                self._apart, self.qa_apart.tokenize, [(r.question, r.context)]
            )
            sent.problem = first_problem(sent.windows, self.limits)
            if sent.problem is not None:
                return

    async def _windows_and_outputs(
        self, reqs: list[QARequest], is_list: bool
    ) -> tuple[list[Windows], list]:
        """The windows of one body's questions and the model's results for them, laid end to
        end. A small body's windows share a packer call with the bodies tokenized with it; a
        big one (over :data:`BIG_BODY_CHARS`) is tokenized apart and gets a call of its own.
        Raises BadRequest, or TooLarge (413) for a body over the window limits; if the caller
        goes away, its windows are withdrawn."""
        sent = _Sent()
        if sum(len(r.question) + len(r.context) for r in reqs) > BIG_BODY_CHARS:
            await self._tokenize_apart(reqs, sent)
            if sent.problem is None:
                sent.call = PackerCall(self.packer, features_of(sent.windows), 1)
        else:
            try:
                await self._submit((reqs, sent))
            except asyncio.CancelledError:  # gone, maybe after the batch sent its windows
                if sent.call is not None:
                    sent.call.leave(sent.offset, window_count(sent.windows))
                raise
        if sent.problem is not None:
            k, error = sent.problem
            raise type(error)(f"item {k}: {error}" if is_list and k is not None else str(error))
        per_request = sent.windows
        return per_request, await sent.call.result(sent.offset, window_count(per_request))

    async def _answer_all(self, reqs: list[QARequest], is_list: bool) -> list[dict]:
        """Answers of one body's requests (:meth:`_windows_and_outputs`, then the best span of
        each). Raises as :meth:`_windows_and_outputs` does."""
        per_request, mine = await self._windows_and_outputs(reqs, is_list)
        return [
            {**ans.to_json(), "model": self.model_name}
            for ans in self.qa.answers(per_request, mine, [r.context for r in reqs])
        ]

    async def ask(self, question: str, context: str) -> dict:
        """Python handle entry point: the answer to one question, as the HTTP route returns it.

        Raises ``BadRequest`` for invalid input (the same checks as HTTP), or when the app's
        model is not a qa model.
        """
        why = self.front.refusal("POST /v1/answer")
        if why:
            raise BadRequest(why)
        reqs, _ = parse_payload({"question": question, "context": context}, self.limits)
        return (await self._answer_all(reqs, False))[0]

    async def embed(
        self, inputs: str | list[str], normalize: bool = True, truncate: bool = False
    ) -> list[list[float]]:
        """Python handle entry point (embed apps): one vector per input, as TEI's ``POST
        /embed`` returns them (lists of the same float32 numbers). Raises ``BadRequest`` /
        ``TooLarge`` as that route answers 4xx, or ``BadRequest`` when the app's model is not
        an embed model."""
        why = self.front.refusal("POST /embed")
        if why:
            raise BadRequest(why)
        vectors = await routes_tei.embed(
            self.front, {"inputs": inputs, "normalize": normalize, "truncate": truncate}
        )
        return [v.tolist() for v in vectors]

    async def predict(self, inputs: Any, raw_scores: bool = False, truncate: bool = False) -> list:
        """Python handle entry point (classify apps): labels and scores per input, as TEI's
        ``POST /predict`` returns them (a text, a ``[text, pair]``, or a list of those).
        Raises ``BadRequest`` / ``TooLarge`` as that route answers 4xx, or ``BadRequest`` when
        the app's model is not a classify model."""
        why = self.front.refusal("POST /predict")
        if why:
            raise BadRequest(why)
        return await routes_tei.predict(
            self.front, {"inputs": inputs, "raw_scores": raw_scores, "truncate": truncate}
        )

    @api.post("/v1/answer", openapi_extra=_OPENAPI)
    async def answer(self, request: Request) -> JSONResponse:
        """Answer one ``{question, context}`` or a list of them (qa apps)."""
        return await self._observed(request, "POST /v1/answer", self._checked)

    async def _observed(
        self, request: Request, route: str, checked: Callable[[Request], Awaitable[JSONResponse]]
    ) -> JSONResponse:
        """One model route's request: 404 when the app's task does not serve ``route``, else
        ``checked(request)`` within the in-flight cap, counted by outcome and timed."""
        why = self.front.refusal(route)
        if why:
            return error_response(404, why)
        t0 = time.monotonic()
        outcome, response = "error", None
        try:
            response = await self._handle(request, checked)
            outcome = "ok" if response.status_code == 200 else f"http_{response.status_code}"
            return response
        finally:
            self.metrics.requests.inc(tags={"outcome": outcome})
            if outcome == "ok":
                self.metrics.latency.observe(time.monotonic() - t0)

    async def _handle(
        self, request: Request, checked: Callable[[Request], Awaitable[JSONResponse]]
    ) -> JSONResponse:
        if self.inflight >= self.max_inflight:
            return error_response(
                503,
                f"server busy: {self.inflight} requests in flight; retry later",
                {"Retry-After": "1"},
            )
        self.inflight += 1
        try:
            return await checked(request)
        finally:
            self.inflight -= 1

    async def _checked(self, request: Request) -> JSONResponse:
        body = await _json_body(request, self.limits, self.body_read_timeout_s)
        if isinstance(body, JSONResponse):
            return body
        try:
            reqs, is_list = parse_body(body, self.limits)
            answers = await asyncio.wait_for(
                self._answer_all(reqs, is_list), timeout=self.deadline_s
            )
        except asyncio.TimeoutError:
            return error_response(504, f"no answer within the {self.deadline_s:g} s deadline")
        except Exception as exc:  # noqa: BLE001 - mapped to a status by _failure
            return _failure(exc)
        return JSONResponse(answers if is_list else answers[0])

    async def _run_task(
        self, request: Request, handler: Callable[[TaskFront, Any], Awaitable[Any]]
    ) -> JSONResponse:
        """A task route's body read and decoded (any JSON value), then ``handler(front,
        body)`` within the deadline; its result is the JSON response (float32 vectors as
        float32 numbers: :class:`~deployments.responses.VectorJSONResponse`), its exception
        mapped as ``POST /v1/answer`` maps them (:func:`_failure`)."""
        body = await _json_body(request, self.limits, self.body_read_timeout_s)
        if isinstance(body, JSONResponse):
            return body
        try:
            obj = decode_json(body, self.limits.max_body_bytes)
            result = await asyncio.wait_for(handler(self.front, obj), timeout=self.deadline_s)
        except asyncio.TimeoutError:
            return error_response(504, f"no answer within the {self.deadline_s:g} s deadline")
        except Exception as exc:  # noqa: BLE001 - mapped to a status by _failure
            return _failure(exc)
        return VectorJSONResponse(result)

    def _serve_task(
        self, request: Request, route: str, handler: Callable[[TaskFront, Any], Awaitable[Any]]
    ) -> Awaitable[JSONResponse]:
        """A task route's request (:meth:`_observed` around :meth:`_run_task`)."""
        return self._observed(request, route, lambda r: self._run_task(r, handler))

    # --- the task routes: one-line delegations to their adapters ------------------------------

    @api.post("/", openapi_extra=routes_hf.ROOT_OPENAPI)
    async def hf_inference(self, request: Request) -> JSONResponse:
        """The Hugging Face Inference API of the app's task (``InferenceClient``)."""
        return await self._serve_task(request, "POST /", routes_hf.root)

    @api.post("/v1/embeddings", openapi_extra=routes_openai.EMBEDDINGS_OPENAPI)
    async def openai_embeddings(self, request: Request) -> JSONResponse:
        """OpenAI's create embeddings (embed apps); errors in OpenAI's shape."""
        return routes_openai.openai_error(
            await self._serve_task(request, "POST /v1/embeddings", routes_openai.embeddings)
        )

    @api.post("/embed", openapi_extra=routes_tei.EMBED_OPENAPI)
    async def tei_embed(self, request: Request) -> JSONResponse:
        """TEI's embed (embed apps)."""
        return await self._serve_task(request, "POST /embed", routes_tei.embed)

    @api.post("/similarity", openapi_extra=routes_tei.SIMILARITY_OPENAPI)
    async def tei_similarity(self, request: Request) -> JSONResponse:
        """TEI's sentence similarity (embed apps)."""
        return await self._serve_task(request, "POST /similarity", routes_tei.similarity)

    @api.post("/predict", openapi_extra=routes_tei.PREDICT_OPENAPI)
    async def tei_predict(self, request: Request) -> JSONResponse:
        """TEI's predict (classify apps)."""
        return await self._serve_task(request, "POST /predict", routes_tei.predict)

    @api.post("/rerank", openapi_extra=routes_tei.RERANK_OPENAPI)
    async def tei_rerank(self, request: Request) -> JSONResponse:
        """TEI's rerank (classify apps whose model has one output)."""
        return await self._serve_task(request, "POST /rerank", routes_tei.rerank)

    @api.get("/v1/models", openapi_extra=routes_openai.MODELS_OPENAPI)
    async def openai_models(self) -> dict:
        """OpenAI's list models: the served model."""
        return routes_openai.models(self.front)

    @api.get("/info", openapi_extra=routes_tei.INFO_OPENAPI)
    async def tei_info(self) -> dict:
        """TEI's info: the model and the router's limits."""
        return await routes_tei.info(self.front)

    @api.get("/health")
    async def health(self) -> JSONResponse:
        """TEI's health: the same readiness as ``GET /healthz``."""
        return await self.healthz()

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """Readiness: 200 when a plan can run (this replica, the packer and at least one
        runner replica answer; :meth:`Packer.ready`), else 503 with the reason."""
        try:
            why = await asyncio.wait_for(self.packer.ready.remote(), timeout=8)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            why = f"packer did not answer: {type(_root_cause(exc)).__name__}"
        if why:
            return error_response(503, f"not ready: {why}")
        return JSONResponse({"status": "ok", "model": self.model_name})

    @api.get("/v1/stats")
    async def stats(self) -> dict:
        """The packer's cumulative batch counters (efficiency = real tokens / token slots)."""
        return {
            "model": self.model_name,
            "answering": self.answering,
            "packer": await self.packer.stats.remote(),
        }
