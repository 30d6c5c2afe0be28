"""The task routes' JSON (deployments/responses.py): float32 vectors written as float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deployments.responses import VectorJSONResponse, dumps

FINITE_F32 = hnp.arrays(
    np.float32,
    st.integers(1, 64),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)


@given(FINITE_F32)
def test_a_parsed_vector_is_the_served_float32_bit_for_bit(vector):
    back = np.asarray(json.loads(dumps({"embedding": vector}))["embedding"], np.float64)
    assert np.array_equal(back.astype(np.float32).view(np.uint32), vector.view(np.uint32))


def test_vectors_take_about_half_the_bytes_of_pythons_json():
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    ours, python = len(dumps([vector])), len(json.dumps([vector.tolist()]))
    assert ours < 0.7 * python, (ours, python)


def test_other_values_are_written_as_json_writes_them():
    value = {"object": "list", "n": 3, "ok": True, "none": None, "s": "é\n", "x": [0.5, -2]}
    assert json.loads(dumps(value)) == value
    assert json.loads(dumps({"i": np.int64(7), "f": np.float32(0.25)})) == {"i": 7, "f": 0.25}


def test_non_finite_numbers_are_null_and_unwritable_values_raise():
    assert json.loads(dumps(np.array([np.nan, np.inf, 1.0], np.float32))) == [None, None, 1.0]
    with pytest.raises(TypeError):
        dumps({1, 2})


def test_the_response_is_json_with_the_rendered_body():
    vector = np.array([1.0, -2.5], np.float32)
    response = VectorJSONResponse({"data": [vector]}, status_code=200)
    assert response.media_type == "application/json"
    assert response.body == b'{"data":[[1.0,-2.5]]}'
