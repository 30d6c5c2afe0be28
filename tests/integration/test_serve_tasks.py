"""The embed and classify apps over HTTP through the clients users already
have, the ``openai`` package and ``huggingface_hub.InferenceClient``, and TEI's routes with
plain HTTP, each next to the session's QA app (random:tiny folders, prepared here).

Checks: the clients parse every response unchanged; a text gets the same vector alone and in a
list; base64 and float embeddings are the same float32s; a route of another task is 404; a
long input is 413 unless truncated; rerank is sorted.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from serve_apps import deploy_beside

pytestmark = pytest.mark.integration

EMBED_APP, EMBED_PREFIX = "embed-test", "/embed-test"
RERANK_APP, RERANK_PREFIX = "rerank-test", "/rerank-test"
TEXTS = ["hello world", "a longer sentence about the river and the city", "x"]


def app_config(serve_app, model_dir, task: str, precision: str = "auto"):
    from deployments.config import AppConfig

    args = dict(serve_app.config["applications"][0]["args"])
    args.pop("fault_file", None)
    args["prepare"] = {**args["prepare"], "precision": precision}
    return AppConfig(
        **{
            **args,
            "model_dir": str(model_dir),
            "model_source": "random:tiny",
            "task": task,
            "packing": {"mode": "unpack_repack", "batch_wait_timeout_s": 0.005},
        }
    )


@pytest.fixture(scope="module")
def embed_app(serve_app, tmp_path_factory):
    from packing.model.prepare import prepare

    folder = tmp_path_factory.mktemp("embed") / "model"
    shapes = serve_app.config["applications"][0]["args"]["prepare"]
    prepare("random:tiny", folder, task="embed", quiet=True, **shapes)
    yield from deploy_beside(
        serve_app,
        app_config(serve_app, folder, "embed"),
        EMBED_APP,
        EMBED_PREFIX,
        {"ray_actor_options": {"num_cpus": 0}},
    )


@pytest.fixture(scope="module")
def rerank_app(serve_app, tmp_path_factory):
    from packing.model.prepare import prepare
    from packing.model.task import TaskSpec

    folder = tmp_path_factory.mktemp("rerank") / "model"
    shapes = serve_app.config["applications"][0]["args"]["prepare"]
    prepare(
        "random:tiny",
        folder,
        quiet=True,
        **shapes,
        # one output and no problem_type, as a cross-encoder checkpoint
        task=TaskSpec(task="classify", labels=("relevance",)),
    )
    yield from deploy_beside(
        serve_app,
        app_config(serve_app, folder, "classify"),
        RERANK_APP,
        RERANK_PREFIX,
        {"ray_actor_options": {"num_cpus": 0}},
    )


def http(url: str, body=None):
    """``(status, JSON)`` of a GET (``body`` None) or a JSON POST."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_openai_client_embeddings_and_models(embed_app):
    import openai

    client = openai.OpenAI(base_url=embed_app + "/v1", api_key="unused")
    listed = client.embeddings.create(input=TEXTS, model="random:tiny")
    assert [d.index for d in listed.data] == [0, 1, 2] and listed.usage.prompt_tokens > 0
    alone = [client.embeddings.create(input=t, model="x").data[0].embedding for t in TEXTS]
    assert [d.embedding for d in listed.data] == alone  # the same alone and in a list
    b64 = client.embeddings.create(input=TEXTS[0], model="x", encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(b64.data[0].embedding), "<f4")
    assert np.array_equal(decoded, np.asarray(alone[0], np.float32))  # the same float32s
    (model,) = client.models.list().data
    assert model.id == "random:tiny" and model.object == "model"
    with pytest.raises(openai.BadRequestError, match="dimensions 7 is not available"):
        client.embeddings.create(input="a", model="x", dimensions=7)
    with pytest.raises(openai.APIStatusError) as info:
        client.embeddings.create(input="word " * 500, model="x")
    assert info.value.status_code == 413


def test_inference_client_feature_extraction_and_similarity(embed_app):
    import huggingface_hub as hub

    client = hub.InferenceClient(base_url=embed_app)
    vectors = client.feature_extraction(TEXTS)
    assert vectors.shape[0] == 3 and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    one = client.feature_extraction(TEXTS[0], normalize=False)
    assert one.shape == (1, vectors.shape[1])
    sims = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS)
    assert len(sims) == 3 and sims[0] == pytest.approx(1.0, abs=1e-5)


def test_tei_embed_and_info(embed_app):
    status, vectors = http(embed_app + "/embed", {"inputs": TEXTS})
    assert status == 200 and len(vectors) == 3
    status, long_ = http(embed_app + "/embed", {"inputs": "word " * 500})
    assert status == 413 and "truncate" in long_["error"]
    status, cut = http(embed_app + "/embed", {"inputs": "word " * 500, "truncate": True})
    assert status == 200 and len(cut) == 1
    status, info = http(embed_app + "/info")
    assert status == 200 and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert http(embed_app + "/health")[0] == 200


def test_routes_of_another_task_are_404(embed_app, rerank_app, serve_app):
    status, body = http(embed_app + "/v1/answer", {"question": "q", "context": "c"})
    assert status == 404 and "this app serves embed" in body["error"]
    status, body = http(serve_app.url + "/v1/embeddings", {"input": "a"})  # OpenAI's shape
    assert status == 404 and "this app serves qa" in body["error"]["message"]
    status, body = http(rerank_app + "/embed", {"inputs": "a"})
    assert status == 404 and "this app serves classify" in body["error"]


def test_tei_rerank_and_predict(rerank_app):
    status, ranks = http(
        rerank_app + "/rerank", {"query": "q", "texts": TEXTS, "return_text": True}
    )
    assert status == 200 and sorted(r["index"] for r in ranks) == [0, 1, 2]
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert all(r["text"] == TEXTS[r["index"]] for r in ranks)
    status, pred = http(rerank_app + "/predict", {"inputs": ["q", TEXTS[0]]})
    assert status == 200 and pred[0]["label"] == "relevance"
    assert pred[0]["score"] == pytest.approx(
        next(r["score"] for r in ranks if r["index"] == 0), abs=1e-6
    )


def test_inference_client_text_classification(rerank_app):
    import huggingface_hub as hub

    client = hub.InferenceClient(base_url=rerank_app)
    (only,) = client.text_classification("a text")
    assert only.label == "relevance" and 0 <= only.score <= 1


def test_inference_client_question_answering(serve_app):
    import huggingface_hub as hub

    client = hub.InferenceClient(base_url=serve_app.url)
    context = "Jane Austen wrote Pride and Prejudice in 1813."
    best = client.question_answering(question="Who wrote it?", context=context)
    assert best.answer == context[best.start : best.end] and 0 <= best.score <= 1
    three = client.question_answering(question="Who wrote it?", context=context, top_k=3)
    assert len(three) == 3 and three[0].answer == best.answer


@pytest.fixture(scope="module")
def embed_int8_app(serve_app, tmp_path_factory):
    from packing.model.prepare import prepare

    folder = tmp_path_factory.mktemp("embed-int8") / "model"
    shapes = serve_app.config["applications"][0]["args"]["prepare"]
    prepare("random:tiny", folder, task="embed", quiet=True, **{**shapes, "precision": "int8"})
    yield from deploy_beside(
        serve_app,
        app_config(serve_app, folder, "embed", "int8"),
        "embed-int8-test",
        "/embed-int8-test",
        {"ray_actor_options": {"num_cpus": 0}},
    )


def test_int8_embeddings_are_the_same_alone_and_in_a_crowd(embed_int8_app):
    """The project's promise for embeddings too: an int8 unpack_repack app gives each text
    the bit-identical vector whether it comes alone or among 47 other concurrent requests of
    other lengths (float JSON round-trips float32 exactly)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    words = ["river", "city", "a", "of", "the", "question", "packing", "tokens", "!", "model"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 50, size=96)]
    alone = [http(embed_int8_app + "/embed", {"inputs": t}) for t in texts]
    assert all(status == 200 for status, _ in alone), [b for s, b in alone if s != 200][:2]
    with ThreadPoolExecutor(48) as pool:
        crowd = list(pool.map(lambda t: http(embed_int8_app + "/embed", {"inputs": t}), texts))
    differ = [k for k, (a, c) in enumerate(zip(alone, crowd)) if a != c]
    assert not differ, f"{len(differ)} of {len(texts)} vectors differ from the same text alone"
    stats = http(embed_int8_app + "/v1/stats")[1]["packer"]
    assert stats["mean_sequences"] > 1 and stats["batch_invariant"] is True


def test_python_handles_embed_and_predict(embed_app, rerank_app, serve_app):
    """The Python handle entry points answer as the HTTP routes do; another task's is refused."""
    import ray
    from ray import serve

    ray.init(
        address=serve_app.ray_address,
        namespace="serve",
        ignore_reinit_error=True,
        log_to_driver=False,
    )
    embed = serve.get_app_handle(EMBED_APP)
    vectors = embed.embed.remote(TEXTS).result(timeout_s=60)
    over_http = http(embed_app + "/embed", {"inputs": TEXTS})[1]
    assert np.array_equal(np.asarray(vectors, np.float32), np.asarray(over_http, np.float32))
    scores = serve.get_app_handle(RERANK_APP).predict.remote(["q", TEXTS[0]]).result(timeout_s=60)
    assert scores == http(rerank_app + "/predict", {"inputs": ["q", TEXTS[0]]})[1]
    with pytest.raises(Exception) as info:  # Ray wraps the replica's BadRequest
        serve.get_app_handle(RERANK_APP).embed.remote("a").result(timeout_s=60)
    assert "this app serves classify" in str(info.value)
