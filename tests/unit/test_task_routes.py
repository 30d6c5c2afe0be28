"""The task routes of the Ingress without Ray: each adapter (deployments/routes_openai.py,
routes_tei.py, routes_hf.py) over a TaskFront with a stand-in packer, its response checked
against the reference API's own types where the client package is here (openai,
huggingface_hub), the Ingress's request path for them (404 for another task's route, body
errors, deadline, error mapping), and their OpenAPI documents."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from types import MethodType, SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from deployments import errors, routes_hf, routes_openai, routes_tei
from deployments.ingress import Ingress, api
from deployments.responses import dumps
from deployments.task_front import BIG_BODY_CHARS, ModelInfo, TaskFront, task_routes
from packing.model.task import TaskSpec
from packing.qa.pipeline import QAPipeline, QASettings, features_of
from packing.qa.requests import BadRequest, Limits, TooLarge
from packing.runtime.features import Pooled
from packing.tasks import ClassifyPipeline, EmbedPipeline

from asgi_client import call

SEQ = 32
HIDDEN = 8
LONG = "word " * 40
EMBED = TaskSpec(task="embed", pooling="mean", normalize=True)
THREE = TaskSpec(task="classify", labels=("neg", "neu", "pos"))
RERANKER = TaskSpec(task="classify", labels=("LABEL_0",), problem_type="regression")


def wire(value):
    """A route's result as its client reads it: written as the response body, parsed back."""
    return json.loads(dumps(value))


def same_f32(numbers, vector) -> bool:
    """``numbers`` (parsed JSON) are ``vector``'s float32 values, bit for bit."""
    return np.array_equal(np.asarray(numbers, np.float32), np.asarray(vector, np.float32))


def embed_model(f) -> Pooled:
    """A vector that depends on the sequence's own tokens only."""
    ids = np.asarray(f.input_ids)
    return Pooled(np.bincount(ids % HIDDEN, minlength=HIDDEN).astype(np.float32) + 1.0)


def classify_model(n_labels):
    def run(f) -> Pooled:
        ids = np.asarray(f.input_ids, dtype=np.float64)
        logits = [float(ids.sum() % 7) - 3, len(ids) / 4.0, float(f.token_type_ids.sum())]
        return Pooled(np.asarray(logits[:n_labels], dtype=np.float32))

    return run


def qa_model(f):
    ids = np.asarray(f.input_ids, dtype=np.float64)
    s = ids / ids.max()
    return SimpleNamespace(start_logits=s, end_logits=np.roll(s, 1))


class Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def run():
            return self.fn(*args)

        return run()


class FakePacker:
    """``many`` runs ``model`` on each sequence (recording the calls), ``withdraw`` records,
    ``stats`` answers a token budget."""

    def __init__(self, model):
        self.calls: list[list] = []
        self.withdrawn: list = []
        self.many = Remote(self._many)
        self.withdraw = Remote(lambda *a: self.withdrawn.append(a) or 0)
        self.stats = Remote(lambda: {"token_budget": 512})
        self.model = model

    def _many(self, features, call_id):
        self.calls.append(list(features))
        return [self.model(f) for f in features]


def info_of(spec: TaskSpec) -> ModelInfo:
    return ModelInfo("builtin:test-model", spec, SEQ, HIDDEN, "int8", 40, 1_700_000_000)


def front_of(tok, spec: TaskSpec, limits: Limits = Limits(), **settings) -> TaskFront:
    settings = {"max_inflight_requests": 8, **settings}
    executor = ThreadPoolExecutor(1)
    if spec.task == "embed":
        pipes = (EmbedPipeline(tok, SEQ, spec.normalize), EmbedPipeline(tok, SEQ, spec.normalize))
        return TaskFront(
            FakePacker(embed_model), info_of(spec), limits, settings, executor, pipelines=pipes
        )
    if spec.task == "classify":
        pipes = (ClassifyPipeline(tok, SEQ, spec), ClassifyPipeline(tok, SEQ, spec))
        return TaskFront(
            FakePacker(classify_model(spec.num_labels)),
            info_of(spec),
            limits,
            settings,
            executor,
            pipelines=pipes,
        )
    qa = QAPipeline(tok, QASettings(seq_len=48, doc_stride=8))
    packer = FakePacker(qa_model)

    async def qa_run(reqs, is_list):
        windows = qa.tokenize([(r.question, r.context) for r in reqs])
        if isinstance(windows[0], BadRequest):
            raise windows[0]
        return windows, [qa_model(f) for f in features_of(windows)]

    return TaskFront(packer, info_of(spec), limits, settings, executor, qa=qa, qa_run=qa_run)


def run(coro):
    return asyncio.run(coro)


# --- OpenAI -------------------------------------------------------------------------------------


def test_openai_embeddings_match_the_openai_types(tok):
    import openai

    front = front_of(tok, EMBED)
    got = run(
        routes_openai.embeddings(
            front, {"input": ["Hello world", "a b c"], "model": "text-embedding-3-small"}
        )
    )
    parsed = openai.types.CreateEmbeddingResponse.model_validate(got)
    assert parsed.object == "list" and parsed.model == "builtin:test-model"
    assert [d.index for d in parsed.data] == [0, 1] and parsed.data[0].object == "embedding"
    features = front.packer.calls[0]
    assert len(front.packer.calls) == 1 and len(features) == 2  # one packer call per body
    for d, f in zip(parsed.data, features):
        v = embed_model(f).values
        assert np.allclose(d.embedding, v / np.linalg.norm(v), atol=1e-6)  # the folder: unit
    tokens = sum(len(f) for f in features)
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == tokens == 4 + 5


def test_openai_base64_is_little_endian_float32_and_round_trips(tok):
    front = front_of(tok, TaskSpec(task="embed", normalize=False))
    floats = wire(run(routes_openai.embeddings(front, {"input": "Hello world"})))
    b64 = run(
        routes_openai.embeddings(front, {"input": "Hello world", "encoding_format": "base64"})
    )
    text = b64["data"][0]["embedding"]
    assert isinstance(text, str)
    decoded = np.frombuffer(base64.b64decode(text), dtype="<f4")
    assert same_f32(floats["data"][0]["embedding"], decoded)  # exactly the same float32s
    assert decoded.tolist() == embed_model(front.packer.calls[0][0]).values.tolist()  # raw
    assert (
        routes_openai.encode_vector(np.array([1.0, -2.5], np.float32), "base64")
        == base64.b64encode(b"\x00\x00\x80\x3f\x00\x00\x20\xc0").decode()
    )


def test_openai_token_ids_and_single_string(tok):
    front = front_of(tok, EMBED)
    got = run(routes_openai.embeddings(front, {"input": [101, 7592, 102]}))
    assert len(got["data"]) == 1 and got["usage"]["prompt_tokens"] == 3
    assert front.packer.calls[0][0].input_ids.tolist() == [101, 7592, 102]


def test_openai_long_input_is_413_unless_the_app_truncates(tok):
    with pytest.raises(TooLarge) as info:
        run(routes_openai.embeddings(front_of(tok, EMBED), {"input": ["ok", LONG]}))
    assert str(info.value) == (
        f"input[1]: input is 42 tokens; at most {SEQ} fit the model; "
        "this route truncates only when the app is started with "
        "auto_truncate: true"
    )
    front = front_of(tok, EMBED, auto_truncate=True)
    got = run(routes_openai.embeddings(front, {"input": LONG}))
    assert got["usage"]["prompt_tokens"] == SEQ
    with pytest.raises(BadRequest, match="dimensions 16 is not available"):
        run(routes_openai.embeddings(front, {"input": "a", "dimensions": 16}))
    assert run(routes_openai.embeddings(front, {"input": "a", "dimensions": HIDDEN}))["data"]


def test_openai_models(tok):
    import openai

    got = routes_openai.models(front_of(tok, EMBED))
    assert got["object"] == "list" and len(got["data"]) == 1
    model = openai.types.Model.model_validate(got["data"][0])
    assert model.id == "builtin:test-model" and model.created == 1_700_000_000
    assert model.object == "model" and model.owned_by == "packed-bert-serve"


# --- TEI ----------------------------------------------------------------------------------------


def test_tei_embed_normalizes_by_default_and_truncates_when_asked(tok):
    front = front_of(tok, TaskSpec(task="embed", normalize=False))
    got = run(routes_tei.embed(front, {"inputs": "Hello world"}))
    assert len(got) == 1 and len(got[0]) == HIDDEN  # [[...]] for a string, as TEI
    assert np.linalg.norm(got[0]) == pytest.approx(1.0, abs=1e-6)
    raw = wire(run(routes_tei.embed(front, {"inputs": ["Hello world"], "normalize": False})))
    assert same_f32(raw[0], embed_model(front.packer.calls[-1][0]).values)
    with pytest.raises(
        TooLarge,
        match=r'at most 32 fit the model; send "truncate": true to '
        r"truncate it$",
    ):
        run(routes_tei.embed(front, {"inputs": LONG}))
    assert len(run(routes_tei.embed(front, {"inputs": LONG, "truncate": True}))) == 1
    assert len(front.packer.calls[-1][0]) == SEQ


def test_tei_similarity_is_the_cosine_with_the_source(tok):
    front = front_of(tok, EMBED)
    body = {"inputs": {"source_sentence": "a b", "sentences": ["a b", "c d e", "f"]}}
    got = run(routes_tei.similarity(front, body))
    assert len(got) == 3 and got[0] == pytest.approx(1.0)
    (features,) = front.packer.calls  # the source and the sentences in one call
    vecs = [embed_model(f).values.astype(np.float64) for f in features]
    want = [v @ vecs[0] / np.linalg.norm(v) / np.linalg.norm(vecs[0]) for v in vecs[1:]]
    assert got == pytest.approx(want)


def test_tei_predict_single_pair_and_batch(tok):
    front = front_of(tok, THREE)
    one = run(routes_tei.predict(front, {"inputs": "I like it"}))
    assert [set(p) for p in one] == [{"label", "score"}] * 3
    assert [p["score"] for p in one] == sorted((p["score"] for p in one), reverse=True)
    assert sum(p["score"] for p in one) == pytest.approx(1.0)  # TEI: softmax over 3
    pair = run(routes_tei.predict(front, {"inputs": ["a query", "a text"], "raw_scores": True}))
    f = front.packer.calls[-1][0]
    assert f.token_type_ids.tolist() == tok("a query", "a text")["token_type_ids"]
    want = classify_model(3)(f).values.astype(np.float64)
    assert {p["label"]: p["score"] for p in pair} == pytest.approx(dict(zip(THREE.labels, want)))
    batch = run(routes_tei.predict(front, {"inputs": [["x"], ["q", "t"]]}))
    assert len(batch) == 2 and all(len(b) == 3 for b in batch)
    assert len(front.packer.calls[-1]) == 2


def test_tei_predict_of_a_single_output_is_a_sigmoid(tok):
    front = front_of(tok, RERANKER)
    (only,) = run(routes_tei.predict(front, {"inputs": "x"}))
    logit = float(classify_model(1)(front.packer.calls[-1][0]).values[0])
    assert only == {"label": "LABEL_0", "score": pytest.approx(1 / (1 + np.exp(-logit)))}


def test_tei_rerank_is_sorted_with_text_on_request(tok):
    front = front_of(tok, RERANKER)
    texts = ["short", "a much longer passage of text", "mid length text"]
    got = run(routes_tei.rerank(front, {"query": "q", "texts": texts, "return_text": True}))
    assert sorted(r["index"] for r in got) == [0, 1, 2]
    assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
    assert all(r["text"] == texts[r["index"]] for r in got)
    (features,) = front.packer.calls
    assert [f.token_type_ids.tolist() for f in features] == [
        tok("q", t)["token_type_ids"] for t in texts
    ]  # (query, text) pairs
    logits = [float(classify_model(1)(f).values[0]) for f in features]
    assert got[0]["index"] == int(np.argmax(logits))
    raw = run(routes_tei.rerank(front, {"query": "q", "texts": texts, "raw_scores": True}))
    assert [r["score"] for r in raw] == pytest.approx(sorted(logits, reverse=True))
    assert all("text" not in r for r in raw)


def test_a_long_input_is_named_as_the_body_names_it(tok):
    with pytest.raises(TooLarge) as info:
        run(routes_tei.rerank(front_of(tok, RERANKER), {"query": "q", "texts": ["a", LONG]}))
    assert str(info.value) == (
        "texts[1]: input (text and text_pair) is 44 tokens; at most 32 "
        'fit the model; send "truncate": true to truncate it'
    )
    with pytest.raises(TooLarge) as info:
        run(
            routes_tei.similarity(
                front_of(tok, EMBED), {"inputs": {"source_sentence": LONG, "sentences": ["a"]}}
            )
        )
    assert str(info.value).startswith("inputs.source_sentence: input is 42 tokens")
    assert str(info.value).endswith('send "parameters": {"truncate": true} to truncate it')
    with pytest.raises(TooLarge, match=r"^inputs\[1\]: input is 42 tokens"):
        run(routes_tei.predict(front_of(tok, THREE), {"inputs": [["a"], [LONG]]}))
    with pytest.raises(BadRequest, match=r"^input\[0\]: token id 99999 is outside"):
        run(routes_openai.embeddings(front_of(tok, EMBED), {"input": [[99999], "a"]}))


def test_tei_info(tok):
    got = run(routes_tei.info(front_of(tok, EMBED)))
    assert got["model_id"] == got["served_model_name"] == "builtin:test-model"
    assert got["model_type"] == {"embedding": {"pooling": "mean"}}
    assert got["task"]["task"] == "embed" and got["architecture"] == "bert"
    assert got["max_input_length"] == SEQ and got["max_batch_tokens"] == 512
    assert got["max_client_batch_size"] == Limits().max_batch_items
    assert got["max_concurrent_requests"] == 8 and got["auto_truncate"] is False
    assert got["model_dtype"] == "int8" and isinstance(got["version"], str)
    three = run(routes_tei.info(front_of(tok, THREE)))["model_type"]
    assert three == {
        "classifier": {
            "id2label": {"0": "neg", "1": "neu", "2": "pos"},
            "label2id": {"neg": 0, "neu": 1, "pos": 2},
        }
    }
    assert list(run(routes_tei.info(front_of(tok, RERANKER)))["model_type"]) == ["reranker"]


# --- HF Inference API on POST / -----------------------------------------------------------------


def test_hf_feature_extraction_and_sentence_similarity(tok):
    front = front_of(tok, TaskSpec(task="embed", normalize=False))
    got = wire(run(routes_hf.root(front, {"inputs": "Hello world"})))
    assert np.asarray(got, dtype="float32").shape == (1, HIDDEN)  # what the client reads
    assert same_f32(got[0], embed_model(front.packer.calls[-1][0]).values)  # the folder's
    unit = run(routes_hf.root(front, {"inputs": ["a", "b"], "normalize": True}))
    assert np.linalg.norm(unit, axis=1) == pytest.approx([1.0, 1.0])
    sim = run(
        routes_hf.root(
            front, {"inputs": {"source_sentence": "a", "sentences": ["a", "b"]}, "parameters": {}}
        )
    )
    assert len(sim) == 2 and sim[0] == pytest.approx(1.0)


def test_hf_text_classification_is_what_the_client_reads(tok):
    import huggingface_hub as hub

    element = hub.TextClassificationOutputElement
    front = front_of(tok, THREE)
    got = run(routes_hf.root(front, {"inputs": "I like it"}))
    assert len(got) == 1 and len(got[0]) == 3  # [[...]]: one list per input
    parsed = element.parse_obj_as_list(got)[0]  # InferenceClient.text_classification
    assert [e.label for e in parsed] == [p["label"] for p in got[0]]
    assert sum(e.score for e in parsed) == pytest.approx(1.0)  # the folder's: softmax
    top = run(
        routes_hf.root(
            front, {"inputs": "I like it", "parameters": {"top_k": 1, "function_to_apply": "none"}}
        )
    )
    logits = classify_model(3)(front.packer.calls[-1][0]).values
    assert top == [
        [
            {
                "label": THREE.labels[int(np.argmax(logits))],
                "score": pytest.approx(float(logits.max())),
            }
        ]
    ]


def test_hf_question_answering_is_what_the_client_reads(tok):
    import huggingface_hub as hub

    element = hub.QuestionAnsweringOutputElement
    front = front_of(tok, TaskSpec(task="qa"))
    context = "Jane Austen wrote Pride and Prejudice in 1813."
    body = {"inputs": {"question": "Who wrote it?", "context": context}, "parameters": {}}
    one = run(routes_hf.root(front, body))
    parsed = element.parse_obj(one)
    assert isinstance(parsed, element) and parsed.answer == context[parsed.start : parsed.end]
    assert 0 < parsed.score <= 1
    three = run(routes_hf.root(front, {**body, "parameters": {"top_k": 3}}))
    assert len(three) == 3 and three[0] == one
    assert [a["score"] for a in three] == sorted((a["score"] for a in three), reverse=True)
    assert all(isinstance(e, element) for e in element.parse_obj(three))
    with pytest.raises(BadRequest, match="parameters.doc_stride 64 is not available"):
        run(routes_hf.root(front, {**body, "parameters": {"doc_stride": 64}}))


# --- which routes an app serves -----------------------------------------------------------------


def test_a_route_of_another_task_is_refused_naming_the_apps_task(tok):
    qa, embed, three = (front_of(tok, s) for s in (TaskSpec(task="qa"), EMBED, THREE))
    assert qa.refusal("POST /v1/embeddings") == (
        "POST /v1/embeddings serves the embed task; this app serves qa (builtin:test-model): "
        "its routes are POST /v1/answer, POST /, GET /v1/models, GET /info, GET /health, "
        "GET /healthz, GET /v1/stats, GET /docs"
    )
    assert embed.refusal("POST /v1/answer").startswith(
        "POST /v1/answer serves the qa task; this app serves embed (builtin:test-model): its "
        "routes are POST /v1/embeddings, POST /embed, POST /similarity, POST /,"
    )
    assert "this app serves classify" in three.refusal("POST /embed")
    assert three.refusal("POST /rerank") == (
        "POST /rerank needs a reranker (a classify model with one output); this app's model "
        "(builtin:test-model) has 3 labels (neg, neu, pos): use POST /predict"
    )
    assert front_of(tok, RERANKER).refusal("POST /rerank") is None
    for front, route in ((qa, "POST /v1/answer"), (embed, "POST /embed"), (three, "POST /predict")):
        assert front.refusal(route) is None and front.refusal("POST /") is None
    assert task_routes("classify")[:3] == ("POST /predict", "POST /rerank", "POST /")


def test_an_unknown_route_lists_the_apps_routes():
    app = FastAPI()
    errors.install(app)
    assert "POST /v1/answer" in call(app, "GET", "/nope").json()["error"]  # the default
    errors.use_routes(app, task_routes("embed"))
    message = call(app, "GET", "/nope").json()["error"]
    assert message.startswith("no route GET /nope; the API: POST /v1/embeddings, POST /embed")


# --- the Ingress request path -------------------------------------------------------------------


INGRESS = Ingress.func_or_class


def bare_ingress(front: TaskFront, deadline_s: float = 5.0):
    """An Ingress replica's state without Ray or a model folder (its TaskFront, limits,
    deadlines, in-flight cap and metrics), with the Ingress's own request-path methods."""
    counted: list = []
    self = SimpleNamespace(
        front=front,
        limits=front.limits,
        deadline_s=deadline_s,
        body_read_timeout_s=5.0,
        inflight=0,
        max_inflight=8,
        counted=counted,
        metrics=SimpleNamespace(
            requests=SimpleNamespace(inc=lambda tags: counted.append(tags)),
            latency=SimpleNamespace(observe=lambda s: None),
        ),
    )
    for name in ("_observed", "_handle", "_run_task", "_serve_task", "_checked"):
        setattr(self, name, MethodType(getattr(INGRESS, name), self))
    return self


def post(route_method, self, body: bytes, ctype: str = "application/json"):
    """Status and JSON of one POST through an Ingress route method."""
    sent = [body]

    async def receive():
        if sent:
            return {"type": "http.request", "body": sent.pop(), "more_body": False}
        await asyncio.Event().wait()

    async def go():
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(b"content-type", ctype.encode())],
        }
        response = await route_method(self, Request(scope, receive))
        return response.status_code, json.loads(response.body)

    return asyncio.run(go())


def test_ingress_task_routes_answer_and_count(tok):
    self = bare_ingress(front_of(tok, EMBED))
    status, body = post(INGRESS.openai_embeddings, self, b'{"input": "Hello"}')
    assert status == 200 and body["object"] == "list" and self.counted == [{"outcome": "ok"}]
    status, body = post(INGRESS.tei_embed, self, b'{"inputs": ["a", "b"]}')
    assert status == 200 and len(body) == 2
    status, body = post(INGRESS.hf_inference, self, b'{"inputs": "a"}')
    assert status == 200 and len(body) == 1


def test_ingress_other_tasks_route_is_404_before_the_body_is_read(tok):
    self = bare_ingress(front_of(tok, TaskSpec(task="qa")))
    status, body = post(INGRESS.openai_embeddings, self, b"not even json", ctype="text/plain")
    assert status == 404 and body["error"]["message"].startswith(  # OpenAI's error shape
        "POST /v1/embeddings serves the embed task"
    )
    status, body = post(INGRESS.answer, bare_ingress(front_of(tok, EMBED)), b"{}")
    assert status == 404 and "this app serves embed" in body["error"]
    status, body = post(INGRESS.tei_rerank, bare_ingress(front_of(tok, THREE)), b"{}")
    assert status == 404 and "needs a reranker" in body["error"]


@pytest.mark.parametrize(
    "route, raw, status, fragment",
    [
        ("tei_embed", b'{"inputs": "a"', 400, "body is not valid JSON"),
        ("tei_embed", b'{"inputs": []}', 400, "inputs is an empty list"),
        ("tei_embed", b'{"inputs": "' + b"word " * 40 + b'"}', 413, "42 tokens; at most 32"),
        ("openai_embeddings", b'{"input": "a", "dimensions": 3}', 400, "dimensions 3"),
        ("hf_inference", b"[1, 2]", 400, "body must be a JSON object, got list"),
        (
            "tei_similarity",
            b'{"inputs": {"source_sentence": "a", "sentences": [1]}}',
            400,
            "inputs.sentences[0] must be a string, got int",
        ),
    ],
)
def test_ingress_bad_bodies_are_4xx_in_the_one_shape(tok, route, raw, status, fragment):
    self = bare_ingress(front_of(tok, EMBED))
    got, body = post(getattr(INGRESS, route), self, raw)
    error = body["error"]["message"] if route.startswith("openai") else body["error"]
    assert got == status and set(body) == {"error"} and fragment in error, body
    assert self.counted == [{"outcome": f"http_{status}"}]


def test_ingress_415_deadline_and_500(tok):
    self = bare_ingress(front_of(tok, EMBED))
    assert post(INGRESS.tei_embed, self, b'{"inputs": "a"}', ctype="text/plain")[0] == 415
    front = front_of(tok, EMBED)

    async def never(*args):
        await asyncio.Event().wait()

    front.packer.many = SimpleNamespace(remote=lambda *a: never())
    status, body = post(INGRESS.tei_embed, bare_ingress(front, deadline_s=0.05), b'{"inputs": "a"}')
    assert status == 504 and "0.05 s deadline" in body["error"]
    assert front.packer.withdrawn  # the body's sequences were withdrawn when it gave up
    broken = front_of(tok, EMBED)
    broken.packer.model = lambda f: Pooled(np.full(HIDDEN, np.nan, np.float32))
    status, body = post(INGRESS.tei_embed, bare_ingress(broken), b'{"inputs": "a"}')
    assert status == 500 and "incident" in body["error"] and "NaN" not in body["error"]


def test_ingress_in_flight_cap_is_503(tok):
    self = bare_ingress(front_of(tok, EMBED))
    self.inflight = self.max_inflight
    status, body = post(INGRESS.tei_embed, self, b'{"inputs": "a"}')
    assert status == 503 and "server busy" in body["error"]


def test_a_big_body_is_tokenized_apart_with_the_same_result(tok):
    front = front_of(tok, EMBED, auto_truncate=True)
    texts = ["word " * 1000 + str(k) for k in range(5)]  # > BIG_BODY_CHARS in all
    assert sum(map(len, texts)) > BIG_BODY_CHARS
    calls = []
    front._pipeline_apart.encode = (lambda inner: lambda *a: calls.append(1) or inner(*a))(
        front._pipeline_apart.encode
    )
    big = wire(run(routes_tei.embed(front, {"inputs": texts})))
    assert calls == [1]
    small = [wire(run(routes_tei.embed(front, {"inputs": t})))[0] for t in texts]
    assert big == small


def test_the_openapi_document_has_every_task_route():
    paths = api.openapi()["paths"]
    for path in ("/v1/embeddings", "/embed", "/similarity", "/predict", "/rerank", "/"):
        post_ = paths[path]["post"]
        assert "requestBody" in post_ and {"400", "404", "413", "500"} <= set(post_["responses"])
    for path in ("/v1/models", "/info", "/health"):
        assert "get" in paths[path]
    assert (
        paths["/v1/answer"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "oneOf"
        ][1]["maxItems"]
        == Limits().max_batch_items
    )  # /v1/answer's stays as it was


def test_openai_errors_take_openais_shape():
    """The ``openai`` client shows ``error.message``: OpenAI routes answer errors in its shape,
    keeping status and headers; a success passes through unchanged."""
    import json

    from fastapi.responses import JSONResponse

    busy = routes_openai.openai_error(
        JSONResponse({"error": "server busy"}, status_code=503, headers={"Retry-After": "1"})
    )
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert json.loads(busy.body) == {
        "error": {"message": "server busy", "type": "server_error", "param": None, "code": None}
    }
    bad = routes_openai.openai_error(JSONResponse({"error": "input: empty"}, status_code=400))
    assert json.loads(bad.body)["error"]["type"] == "invalid_request_error"
    ok = JSONResponse({"object": "list"})
    assert routes_openai.openai_error(ok) is ok
