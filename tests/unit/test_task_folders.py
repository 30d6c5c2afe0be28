"""The request pipelines on real (random, tiny) embed and classify model folders: what the
Ingress reads from a folder (ModelInfo, the pipelines' from_model_dir), and a route through its
pipeline and the in-process PackRunner (standing in for the Packer) giving a request the same
vector or scores alone and among others."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from deployments import routes_openai, routes_tei
from deployments.task_front import ModelInfo, TaskFront
from packing.model.prepare import prepare
from packing.model.task import TaskSpec
from packing.qa.requests import Limits
from packing.runners import PackRunner
from packing.tasks import ClassifyPipeline, EmbedPipeline

SHAPE = {"seq_len": 32, "batch_size": 2, "max_valid_num": 8}
RERANKER = TaskSpec(task="classify", labels=("relevance",), problem_type="regression")
TEXTS = [
    "hello world",
    "a longer sentence about nothing much at all",
    "x",
    "the same again and again and again",
]


@pytest.fixture(scope="module")
def embed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "model"
    prepare("random:tiny", out, task="embed", quiet=True, **SHAPE)
    return out


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rerank") / "model"
    prepare("random:tiny", out, task=RERANKER, quiet=True, **SHAPE)
    return out


class RunnerPacker:
    """A stand-in Packer handle whose ``many`` runs the features on an in-process PackRunner."""

    def __init__(self, runner: PackRunner):
        self.runner = runner
        self.calls = 0
        outer = self

        class Many:
            def remote(self, features, call_id):
                async def run():
                    outer.calls += 1
                    return outer.runner.run(list(features))

                return run()

        self.many = Many()


def front_for(model_dir, pipeline_cls, runner) -> TaskFront:
    info = ModelInfo.read(model_dir, "random:tiny")
    pipes = (pipeline_cls.from_model_dir(model_dir), pipeline_cls.from_model_dir(model_dir))
    return TaskFront(
        RunnerPacker(runner), info, Limits(), {}, ThreadPoolExecutor(1), pipelines=pipes
    )


def test_model_info_reads_the_folder(embed_dir, reranker_dir):
    info = ModelInfo.read(embed_dir, "random:tiny")
    assert info.task == "embed" and info.spec.normalize and info.seq_len == 32
    assert info.hidden_size == 32 and info.precision == "fp32" and info.max_valid_num == 8
    assert abs(info.created - time.time()) < 3600
    assert ModelInfo.read(reranker_dir, "m").spec == RERANKER
    assert EmbedPipeline.from_model_dir(embed_dir).normalize
    assert ClassifyPipeline.from_model_dir(reranker_dir).is_reranker
    with pytest.raises(ValueError, match="serves the classify task, not embed"):
        EmbedPipeline.from_model_dir(reranker_dir)
    with pytest.raises(ValueError, match="needs a classify task"):
        ClassifyPipeline.from_model_dir(embed_dir)


def test_an_embedding_is_the_same_alone_and_in_a_body(embed_dir):
    with PackRunner(embed_dir, mode="unpack_repack") as runner:
        front = front_for(embed_dir, EmbedPipeline, runner)
        body = asyncio.run(routes_openai.embeddings(front, {"input": TEXTS}))
        alone = [
            asyncio.run(routes_openai.embeddings(front, {"input": t}))["data"][0]["embedding"]
            for t in TEXTS
        ]
    got = np.stack([d["embedding"] for d in body["data"]])  # float32 arrays, as the route returns
    assert got.shape[1] == 32 and np.array_equal(got, np.stack(alone))  # bit-identical
    assert np.linalg.norm(got, axis=1) == pytest.approx([1.0] * len(TEXTS), abs=1e-6)
    assert front.packer.calls == 1 + len(TEXTS)


def test_rerank_ranks_are_the_same_alone_and_together(reranker_dir):
    with PackRunner(reranker_dir, mode="unpack_repack") as runner:
        front = front_for(reranker_dir, ClassifyPipeline, runner)
        ranks = asyncio.run(
            routes_tei.rerank(front, {"query": "q", "texts": TEXTS, "raw_scores": True})
        )
        alone = [
            asyncio.run(routes_tei.predict(front, {"inputs": ["q", t], "raw_scores": True}))[0][
                "score"
            ]
            for t in TEXTS
        ]
    assert [r["score"] for r in ranks] == sorted(alone, reverse=True)
    assert [r["index"] for r in ranks] == sorted(range(len(TEXTS)), key=lambda i: -alone[i])
