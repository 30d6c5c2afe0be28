"""The OpenAI-compatible routes: ``POST /v1/embeddings`` and ``GET /v1/models``, so the
``openai`` client (``OpenAI(base_url="http://host:8000/v1")``) works unchanged.

Shapes (openai-python's ``CreateEmbeddingResponse`` and ``Model``): embeddings answer
``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...] or
"<base64 of little-endian float32>"}], "model": id, "usage": {"prompt_tokens": n,
"total_tokens": n}}`` (tokens the model computed, special tokens included); models answer
``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``.
Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (the client shows
``message``), not the app's ``{"error": "<one line>"}`` (:func:`openai_error`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse

from packing.tasks import payloads
from packing.tasks.sequences import item_names, token_count

from . import route_docs
from .task_front import AUTO_TRUNCATE_HINT, TaskFront

OWNED_BY = "packed-bert-serve"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
"""OpenAI's error ``type`` per status; any other status (503, 504, 500) is ``server_error``."""


def openai_error(response: JSONResponse) -> JSONResponse:
    """``response`` with an app error body ``{"error": "<message>"}`` rewritten in OpenAI's
    shape ``{"error": {"message", "type", "param": null, "code": null}}`` (same status and
    headers); any other response is returned as it is."""
    if response.status_code < 400:
        return response
    try:
        message = json.loads(bytes(response.body))["error"]
    except (ValueError, KeyError, TypeError):
        return response
    if not isinstance(message, str):
        return response
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    body = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(response.status_code, "server_error"),
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(body, status_code=response.status_code, headers=headers)


EMBEDDINGS_OPENAPI = route_docs.operation(
    {
        "type": "object",
        "required": ["input"],
        "additionalProperties": False,
        "properties": {
            "input": {
                "oneOf": [
                    route_docs.STRING_OR_STRINGS["oneOf"][0],
                    route_docs.STRING_OR_STRINGS["oneOf"][1],
                    route_docs.TOKEN_IDS,
                    {"type": "array", "items": route_docs.TOKEN_IDS, "minItems": 1},
                ]
            },
            "model": {"type": "string"},
            "encoding_format": {
                "type": "string",
                "enum": list(payloads.ENCODING_FORMATS),
                "default": "float",
            },
            "dimensions": {
                "type": "integer",
                "minimum": 1,
                "description": "Only the model's own dimensions",
            },
            "user": {"type": "string"},
        },
    },
    {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "object": {"type": "string", "enum": ["embedding"]},
                        "index": {"type": "integer"},
                        "embedding": {"oneOf": [route_docs.VECTOR, {"type": "string"}]},
                    },
                },
            },
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                },
            },
        },
    },
    "One embedding per input (embed apps)",
)

MODELS_OPENAPI = route_docs.answer(
    {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"type": "object"}},
        },
    },
    "The served model",
)


def encode_vector(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    """One embedding as OpenAI writes it: its numbers (``float``: the float32 array, written
    as a JSON list by :class:`~deployments.responses.VectorJSONResponse`) or the base64 text
    of its little-endian float32 bytes (``base64``, what ``np.frombuffer(base64.b64decode(s),
    dtype="<f4")`` reads back)."""
    v = np.asarray(vector, dtype="<f4").reshape(-1)
    if encoding_format == "base64":
        return base64.b64encode(v.tobytes()).decode("ascii")
    return v


async def embeddings(front: TaskFront, obj: Any) -> dict:
    """``POST /v1/embeddings``: the body parsed (:func:`payloads.openai_embeddings`), one
    packer call, the vectors normalised as the folder says, in OpenAI's response shape."""
    req = payloads.openai_embeddings(obj, front.limits, front.auto_truncate)
    payloads.check_dimensions(req.dimensions, front.info.hidden_size)
    features, outputs = await front.run(
        req.inputs,
        req.truncate,
        item_names("input", len(req.inputs), req.is_list),
        AUTO_TRUNCATE_HINT,
    )
    vectors = front.pipeline.vectors(outputs, req.normalize)
    tokens = token_count(features)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, req.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": front.info.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models(front: TaskFront) -> dict:
    """``GET /v1/models``: the one served model (``created``: when its folder was
    prepared)."""
    return {
        "object": "list",
        "data": [
            {
                "id": front.info.model_id,
                "object": "model",
                "created": front.info.created,
                "owned_by": OWNED_BY,
            }
        ],
    }
