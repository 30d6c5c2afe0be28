"""OpenAPI pieces of the task routes (``openapi_extra`` of each route: the body each takes,
what it answers, and the errors every model route shares)."""

from __future__ import annotations

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}

MODEL_ROUTE_ERRORS = (
    ("400", "Malformed or invalid body"),
    ("401", "Missing or invalid API key (when keys are set)"),
    ("404", "A route of another task than the app's model serves"),
    ("408", "Body not received within body_read_timeout_s"),
    ("413", "Body too large, or an input over the model's seq_len tokens without truncation"),
    ("415", "Not application/json"),
    ("503", "Overloaded; retry after Retry-After seconds"),
    ("504", "No answer within the deadline"),
    ("500", "The model call failed"),
)

STRING_OR_STRINGS = {
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
}
TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
VECTOR = {"type": "array", "items": {"type": "number"}}
LABEL_SCORES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    },
}


def operation(body: dict | None, ok: dict, ok_description: str) -> dict:
    """``openapi_extra`` of a route taking a JSON ``body`` (None: none) and answering ``ok``
    (a JSON schema), with the errors every model route shares."""
    out: dict = {
        "responses": {
            "200": {"description": ok_description, "content": {"application/json": {"schema": ok}}},
            **{
                code: {"description": text, "content": {"application/json": {"schema": ERROR}}}
                for code, text in MODEL_ROUTE_ERRORS
            },
        }
    }
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


def answer(ok: dict, ok_description: str) -> dict:
    """``openapi_extra`` of a GET route answering ``ok``."""
    return {
        "responses": {
            "200": {"description": ok_description, "content": {"application/json": {"schema": ok}}}
        }
    }
