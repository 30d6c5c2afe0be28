"""The OpenAPI body schema of ``POST /v1/answer`` follows the configured ``Limits`` (one
source: the Limits dataclass), not numbers written a second time."""

from __future__ import annotations

import jsonschema
import pytest

from deployments import ingress
from packing.qa.requests import Limits


def _body(n: int, question: str = "Who?", context: str = "Jane wrote it.") -> list[dict]:
    return [{"question": question, "context": context}] * n


def test_request_schema_carries_each_limit():
    limits = Limits(max_question_chars=5, max_context_chars=20, max_batch_items=3)
    schema = ingress.request_schema(limits)
    jsonschema.validate(_body(3), schema)
    jsonschema.validate(_body(1)[0], schema)
    for bad in (_body(4), _body(1, question="x" * 6), _body(1, context="y" * 21), []):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_default_schema_matches_default_limits():
    d = Limits()
    item, array = ingress.request_schema(d)["oneOf"]
    assert item["properties"]["question"]["maxLength"] == d.max_question_chars
    assert item["properties"]["context"]["maxLength"] == d.max_context_chars
    assert array["maxItems"] == d.max_batch_items


def test_use_limits_changes_the_served_document():
    try:
        ingress.use_limits(Limits(max_batch_items=7, max_question_chars=11))
        body = ingress.api.openapi()["paths"]["/v1/answer"]["post"]["requestBody"]
        item, array = body["content"]["application/json"]["schema"]["oneOf"]
        assert array["maxItems"] == 7 and item["properties"]["question"]["maxLength"] == 11
    finally:
        ingress.use_limits(Limits())
    body = ingress.api.openapi()["paths"]["/v1/answer"]["post"]["requestBody"]
    assert (
        body["content"]["application/json"]["schema"]["oneOf"][1]["maxItems"]
        == Limits().max_batch_items
    )
