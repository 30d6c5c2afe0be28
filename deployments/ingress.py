"""HTTP ingress and tokenizer deployment (FastAPI through ``serve.ingress``): ``POST /v1/answer``,
``GET /healthz``, ``GET /v1/stats``; OpenAPI at ``/docs`` and ``/openapi.json``.

It validates each body, tokenizes it into windows (the bodies that queue up while the event
loop is busy are tokenized together with one fast-tokenizer batch call, gathered by
``@serve.batch``), sends the windows of all those bodies to the packer in one handle call,
and picks the best span, each step through the one QA pipeline
(:class:`packing.qa.pipeline.QAPipeline`); this module keeps only HTTP and the batching. Token
ids cross to the packer once; the character offsets needed to cut the answer stay here.

Every error is JSON ``{"error": "<one line>"}`` (FastAPI's own 404/405/422 too:
``deployments/errors.py``) with a 4xx for the client's mistakes and a 5xx for the server's,
whose message names an incident id and never the exception's text (that goes to the log under
the id). With API keys set, requests need ``Authorization: Bearer <key>``
(``deployments/auth.py``).
"""


import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from packing.model.manifest import Manifest
from packing.qa.pipeline import (QAPipeline, QASettings, Windows, features_of, first_problem,
                                 window_count)
from packing.qa.requests import BadRequest, Limits, QARequest, TooLarge, parse_body, parse_payload
from packing.runtime.admission import NeverAdmitted, Overloaded
from packing.runtime.features import InvalidInput

from .auth import install as install_auth, use_keys
from .body import BodyError, read_body
from .errors import install as install_errors, internal_error
from .metrics import IngressMetrics
from .packer_call import PackerCall

BIG_BODY_CHARS = 16_384
"""Bodies with more characters than this (questions and contexts) are tokenized apart, one
question at a time in a worker thread with a tokenizer of their own, stopping at the first
question over a limit; smaller bodies are tokenized together on the event loop. One tokenizer
call on 16,384 characters takes about 30 ms at worst (punctuation, one token per character)."""

_ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": "number"},
                   "start": {"type": "integer"}, "end": {"type": "integer"},
                   "model": {"type": "string"}},
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
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1,
                             "maxItems": limits.max_batch_items}]}


_OPENAPI = {
    # the schema is set from the configured Limits when the Ingress starts (use_limits)
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": request_schema(Limits())}}},
    "responses": {
        "200": {"description": "The best answer span (a list for a list body)",
                "content": {"application/json": {"schema": {
                    "oneOf": [_ANSWER, {"type": "array", "items": _ANSWER}]}}}},
        **{code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
           for code, text in (("400", "Malformed or invalid body"),
                              ("401", "Missing or invalid API key (when keys are set)"),
                              ("408", "Body not received within body_read_timeout_s"),
                              ("413", "Body too large, or more model windows than the limits allow"),
                              ("415", "Not application/json"),
                              ("503", "Overloaded; retry after Retry-After seconds"),
                              ("504", "No answer within the deadline"),
                              ("500", "The model call failed"))},
    },
}


def use_limits(limits: Limits) -> None:
    """Make this process's OpenAPI document (``/openapi.json``, ``/docs``) describe
    ``limits``: the body schema of ``POST /v1/answer`` is rebuilt and the cached document
    dropped, so the next request for it is generated again."""
    _OPENAPI["requestBody"]["content"]["application/json"]["schema"] = request_schema(limits)
    api.openapi_schema = None


api = FastAPI(title="packed-bert-serve", version="0.1.0",
              description="Extractive question answering with packed BERT batches.")
install_auth(api)  # optional bearer keys (deployments/auth.py)
install_errors(api)  # every error as {"error": ...}; outermost (deployments/errors.py)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _root_cause(exc: BaseException) -> BaseException:
    """The user-level exception inside Ray's wrappers (RayTaskError keeps it as ``cause``)."""
    seen = 0
    while getattr(exc, "cause", None) is not None and seen < 8:
        exc, seen = exc.cause, seen + 1
    return exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


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
    """The tokenizer deployment, serving HTTP: validates bodies, tokenizes them in batches,
    sends the windows of the bodies tokenized together to the packer in one call, picks the
    best spans."""

    def __init__(self, packer: DeploymentHandle, model_dir: str, model_name: str,
                 limits: Limits, answering: dict, api_keys=None) -> None:
        from transformers import AutoTokenizer

        # Batches here are a few bodies: the fast tokenizer's worker threads would add CPU
        # (spinning between batches) and no speed; replicas are the parallelism. A value
        # set in the replica's environment wins.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.packer = packer
        # seq_len: the manifest is the one source of the window size; echoed by /v1/stats
        self.answering = {**answering, "seq_len": Manifest.read(model_dir).seq_len}
        settings = QASettings.from_mapping(self.answering)
        self.qa = QAPipeline(AutoTokenizer.from_pretrained(model_dir), settings)
        # Big bodies: their own tokenizer (a tokenizer call is not reentrant) in one thread.
        self.qa_apart = QAPipeline(AutoTokenizer.from_pretrained(model_dir), settings)
        self._apart = ThreadPoolExecutor(1, thread_name_prefix="tokenize-big")
        self.model_name = model_name
        self.limits = limits
        use_limits(limits)
        use_keys(api_keys)  # None: no key asked (build_app allowed it)
        self.body_read_timeout_s = answering.get("body_read_timeout_s", 10.0)
        self.deadline_s = answering["request_timeout_s"]
        self.max_inflight = answering["max_inflight_requests"]
        # A body of max_batch_items questions must fit one tokenizer batch.
        self._submit.set_max_batch_size(max(answering["tokenize_batch_size"],
                                            limits.max_batch_items))
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
        from ``offset``. Runs on the event loop without awaiting, so tokenizer calls never
        overlap, and returns before the packer answers."""
        flat = self.qa.tokenize([(r.question, r.context) for body, _ in items for r in body])
        group: list[_Sent] = []  # bodies of the call being formed
        features: list = []
        k = 0
        for body, sent in items:
            sent.windows = flat[k:k + len(body)]
            k += len(body)
            sent.problem = first_problem(sent.windows, self.limits)
            if sent.problem is not None:
                continue
            mine = features_of(sent.windows)
            if group and len(features) + len(mine) > self.limits.max_windows_per_body:
                self._send(group, features)
                group, features = [], []
            sent.offset = len(features)
            group.append(sent)
            features.extend(mine)
        if group:
            self._send(group, features)
        return [None] * len(items)

    def _send(self, group: list[_Sent], features: list) -> None:
        """One packer call for the windows of the bodies ``group``."""
        call = PackerCall(self.packer, features, len(group))
        for sent in group:
            sent.call = call

    async def _tokenize_apart(self, reqs: list[QARequest], sent: _Sent) -> None:
        """Fill in ``sent`` for a big body: its questions' windows, one question at a time in
        the worker thread (the event loop serves other requests meanwhile), stopping after the
        first question that is bad or over a limit (``sent.problem``). Cancelling the caller
        stops it after the question being tokenized."""
        loop = asyncio.get_running_loop()
        sent.windows = []
        for r in reqs:
            sent.windows += await loop.run_in_executor(self._apart, self.qa_apart.tokenize,
                                                       [(r.question, r.context)])
            sent.problem = first_problem(sent.windows, self.limits)
            if sent.problem is not None:
                return

    async def _answer_all(self, reqs: list[QARequest], is_list: bool) -> list[dict]:
        """Answers of one body's requests. A small body's windows share a packer call with
        the bodies tokenized with it; a big one (over :data:`BIG_BODY_CHARS`) is tokenized
        apart and gets a call of its own. Raises BadRequest, or TooLarge (413) for a body
        over the window limits; if the caller goes away, its windows are withdrawn."""
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
        mine = await sent.call.result(sent.offset, window_count(per_request))
        return [{**ans.to_json(), "model": self.model_name}
                for ans in self.qa.answers(per_request, mine, [r.context for r in reqs])]

    async def ask(self, question: str, context: str) -> dict:
        """Python handle entry point: the answer to one question, as the HTTP route returns it.

        Raises ``BadRequest`` for invalid input (the same checks as HTTP).
        """
        reqs, _ = parse_payload({"question": question, "context": context}, self.limits)
        return (await self._answer_all(reqs, False))[0]

    @api.post("/v1/answer", openapi_extra=_OPENAPI)
    async def answer(self, request: Request) -> JSONResponse:
        """Answer one ``{question, context}`` or a list of them."""
        t0 = time.monotonic()
        outcome, response = "error", None
        try:
            response = await self._handle(request)
            outcome = "ok" if response.status_code == 200 else f"http_{response.status_code}"
            return response
        finally:
            self.metrics.requests.inc(tags={"outcome": outcome})
            if outcome == "ok":
                self.metrics.latency.observe(time.monotonic() - t0)

    async def _handle(self, request: Request) -> JSONResponse:
        if self.inflight >= self.max_inflight:
            return _error(503, f"server busy: {self.inflight} requests in flight; retry later",
                          {"Retry-After": "1"})
        self.inflight += 1
        try:
            return await self._checked(request)
        finally:
            self.inflight -= 1

    async def _checked(self, request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, f"content-type must be application/json, got {ctype or 'none'!r}")
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _error(413, f"body is {declared} bytes; at most {limit} allowed")
        try:
            body = await read_body(request.stream(), limit, self.body_read_timeout_s)
        except BodyError as exc:
            return _error(exc.status, str(exc))
        try:
            reqs, is_list = parse_body(bytes(body), self.limits)
            answers = await asyncio.wait_for(self._answer_all(reqs, is_list),
                                             timeout=self.deadline_s)
        except asyncio.TimeoutError:
            return _error(504, f"no answer within the {self.deadline_s:g} s deadline")
        except Exception as exc:  # noqa: BLE001 - mapped to a status below
            cause = _root_cause(exc)
            if isinstance(cause, (TooLarge, NeverAdmitted)):  # a retry cannot succeed
                return _error(413, _one_line(cause))
            if isinstance(cause, (BadRequest, InvalidInput)):
                return _error(400, _one_line(cause))
            if isinstance(cause, Overloaded):
                return _error(503, _one_line(cause), {"Retry-After": "1"})
            return internal_error(cause, "the model call")  # cause logged, never echoed
        return JSONResponse(answers if is_list else answers[0])

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """Readiness: 200 when a plan can run (this replica, the packer and at least one
        runner replica answer; :meth:`Packer.ready`), else 503 with the reason."""
        try:
            why = await asyncio.wait_for(self.packer.ready.remote(), timeout=8)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            why = f"packer did not answer: {type(_root_cause(exc)).__name__}"
        if why:
            return _error(503, f"not ready: {why}")
        return JSONResponse({"status": "ok", "model": self.model_name})

    @api.get("/v1/stats")
    async def stats(self) -> dict:
        """The packer's cumulative batch counters (efficiency = real tokens / token slots)."""
        return {"model": self.model_name, "answering": self.answering,
                "packer": await self.packer.stats.remote()}

