"""The text-embeddings-inference (TEI) routes, in TEI's request and response shapes
(``router/src/http/types.rs`` and ``server.rs``), so TEI clients work unchanged:

* ``POST /embed`` (embed apps): ``[[float, ...], ...]``, one vector per input (a string input
  too), normalised unless ``normalize: false``;
* ``POST /similarity`` (embed apps): ``[float, ...]``, the cosine of the source sentence with
  each sentence;
* ``POST /predict`` (classify apps): ``[{label, score}]`` sorted by score for one input,
  ``[[...], ...]`` for a batch; TEI's scores (softmax over several outputs, a sigmoid of one)
  or the logits with ``raw_scores``;
* ``POST /rerank`` (classify apps whose model has one output): ``[{index, score, text?}]``
  sorted by score, highest first;
* ``GET /info``: the model and the router's limits under TEI's names.

Errors keep this app's ``{"error": ...}`` shape (TEI adds ``error_type``).
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

import numpy as np

from packing.tasks import payloads
from packing.tasks.classify import tei_function
from packing.tasks.embed import cosine
from packing.tasks.sequences import item_names

from . import route_docs
from .task_front import PARAMETERS_TRUNCATE_HINT, TRUNCATE_HINT, TaskFront

_TEXTS_OR_IDS = {
    "oneOf": [
        *route_docs.STRING_OR_STRINGS["oneOf"],
        route_docs.TOKEN_IDS,
        {"type": "array", "items": route_docs.TOKEN_IDS, "minItems": 1},
    ]
}
_TRUNCATION = {
    "truncate": {"type": "boolean", "description": "Default: the app's auto_truncate"},
    "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
}
_PAIR = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2}

EMBED_OPENAPI = route_docs.operation(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": _TEXTS_OR_IDS,
            "normalize": {"type": "boolean", "default": True},
            "dimensions": {"type": "integer", "description": "Only the model's own dimensions"},
            **_TRUNCATION,
        },
    },
    {"type": "array", "items": route_docs.VECTOR},
    "One vector per input (embed apps)",
)

SIMILARITY_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "inputs": {
            "type": "object",
            "required": ["source_sentence", "sentences"],
            "properties": {
                "source_sentence": {"type": "string"},
                "sentences": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            },
        },
        "parameters": {"type": "object", "properties": _TRUNCATION},
    },
}
SIMILARITY_OPENAPI = route_docs.operation(
    SIMILARITY_BODY,
    {"type": "array", "items": {"type": "number"}},
    "Cosine similarity of the source sentence with each sentence (embed apps)",
)

PREDICT_OPENAPI = route_docs.operation(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": {
                "oneOf": [
                    {"type": "string"},
                    _PAIR,
                    {"type": "array", "items": _PAIR, "minItems": 1},
                ]
            },
            "raw_scores": {"type": "boolean", "default": False},
            **_TRUNCATION,
        },
    },
    {"oneOf": [route_docs.LABEL_SCORES, {"type": "array", "items": route_docs.LABEL_SCORES}]},
    "Labels sorted by score, per input for a batch (classify apps)",
)

RERANK_OPENAPI = route_docs.operation(
    {
        "type": "object",
        "required": ["query", "texts"],
        "properties": {
            "query": {"type": "string"},
            "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "raw_scores": {"type": "boolean", "default": False},
            "return_text": {"type": "boolean", "default": False},
            **_TRUNCATION,
        },
    },
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "index": {"type": "integer"},
                "score": {"type": "number"},
                "text": {"type": "string"},
            },
        },
    },
    "The texts' ranks, best first (classify apps whose model has one output)",
)

INFO_OPENAPI = route_docs.answer({"type": "object"}, "The model and the router's limits")


def version() -> str:
    """This package's version ("unknown" when it is not installed)."""
    try:
        return metadata.version("packed-bert-serve")
    except metadata.PackageNotFoundError:
        return "unknown"


async def embed(front: TaskFront, obj: Any) -> list[np.ndarray]:
    """``POST /embed``: :func:`payloads.tei_embed`, one packer call, a float32 vector per
    input (written by :class:`~deployments.responses.VectorJSONResponse`)."""
    req = payloads.tei_embed(obj, front.limits, front.auto_truncate)
    payloads.check_dimensions(req.dimensions, front.info.hidden_size)
    names = item_names("inputs", len(req.inputs), req.is_list)
    _, outputs = await front.run(req.inputs, req.truncate, names, TRUNCATE_HINT)
    return front.pipeline.vectors(outputs, req.normalize)


async def similarity(front: TaskFront, obj: Any) -> list[float]:
    """``POST /similarity`` (and the HF sentence-similarity on ``POST /``):
    :func:`payloads.similarity`, one packer call for the source and the sentences, their
    cosines."""
    req = payloads.similarity(obj, front.limits, front.auto_truncate)
    texts = (req.source_sentence, *req.sentences)
    names = ["inputs.source_sentence", *item_names("inputs.sentences", len(req.sentences), True)]
    _, outputs = await front.run(texts, req.truncate, names, PARAMETERS_TRUNCATE_HINT)
    source, *others = front.pipeline.vectors(outputs, False)
    return cosine(source, others)


async def predict(front: TaskFront, obj: Any) -> list:
    """``POST /predict``: :func:`payloads.tei_predict`, one packer call, every label with its
    score per input (TEI's score function)."""
    req = payloads.tei_predict(obj, front.limits, front.auto_truncate)
    names = item_names("inputs", len(req.inputs), req.is_list)
    _, outputs = await front.run(req.inputs, req.truncate, names, TRUNCATE_HINT)
    function = tei_function(front.info.spec.num_labels, req.raw_scores)
    per_input = front.pipeline.predictions(outputs, function)
    return per_input if req.is_list else per_input[0]


async def rerank(front: TaskFront, obj: Any) -> list[dict]:
    """``POST /rerank``: :func:`payloads.tei_rerank`, one packer call for every
    ``(query, text)`` pair, the ranks."""
    req = payloads.tei_rerank(obj, front.limits, front.auto_truncate)
    pairs = [(req.query, t) for t in req.texts]
    names = item_names("texts", len(pairs), True)
    _, outputs = await front.run(pairs, req.truncate, names, TRUNCATE_HINT)
    return front.pipeline.rerank(outputs, req.raw_scores, req.texts if req.return_text else None)


def model_type(front: TaskFront) -> dict:
    """TEI's ``model_type``: ``{"embedding": {"pooling"}}``, ``{"classifier": {id2label,
    label2id}}``, ``{"reranker": ...}`` for one output; ``{"question_answering": {}}`` (not
    TEI's) for a qa app."""
    spec = front.info.spec
    if spec.task == "embed":
        return {"embedding": {"pooling": spec.pooling}}
    if spec.task == "classify":
        labels = {
            "id2label": {str(i): label for i, label in enumerate(spec.labels)},
            "label2id": {label: i for i, label in enumerate(spec.labels)},
        }
        return {"reranker" if spec.num_labels == 1 else "classifier": labels}
    return {"question_answering": {}}


async def info(front: TaskFront) -> dict:
    """``GET /info``: TEI's fields (``max_batch_tokens``: the Packer's token budget, asked of
    it; null when it does not answer within 5 s), plus ``task`` (the folder's task
    settings) and ``architecture`` (the source's encoder family: ``bert``, ``roberta`` or
    ``xlm-roberta``)."""
    try:
        stats = await asyncio.wait_for(front.packer.stats.remote(), timeout=5)
        budget = stats.get("token_budget")
    except Exception:  # noqa: BLE001 - the info stays useful without the packer
        budget = None
    spec = front.info.spec
    return {
        "model_id": front.info.model_id,
        "model_sha": None,
        "model_dtype": front.info.precision,
        "served_model_name": front.info.model_id,
        "model_type": model_type(front),
        "task": spec.to_dict(),
        "architecture": front.info.architecture,
        "max_concurrent_requests": front.settings.get("max_inflight_requests"),
        "max_input_length": front.info.seq_len,
        "max_batch_tokens": budget,
        "max_batch_requests": front.info.max_valid_num,
        "max_client_batch_size": front.limits.max_batch_items,
        "auto_truncate": front.auto_truncate,
        "tokenization_workers": 1,
        "version": version(),
        "sha": None,
        "docker_label": None,
    }
