"""packed-bert batch: the SQuAD metric (official v1.1 normalisation); the Ray Data job itself is
in tests/integration/test_batch_job.py."""

from __future__ import annotations

import pytest

from packing.qa.squad_eval import evaluate, exact_match, f1_score, normalize_answer


def test_normalisation_is_the_official_one():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # articles only as whole words


def test_exact_match_and_f1():
    assert exact_match("the Broncos", "Broncos") == 1.0
    assert exact_match("Denver Broncos", "Broncos") == 0.0
    assert f1_score("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    assert f1_score("Carolina", "Broncos") == 0.0
    got = evaluate({"q1": ["Broncos", "Denver Broncos"], "q2": ["1000"], "q3": ["x"]},
                   {"q1": "denver broncos.", "q2": "1,000"})
    assert got == {"exact_match": pytest.approx(200 / 3), "f1": pytest.approx(200 / 3),
                   "count": 3, "missing": 1}
