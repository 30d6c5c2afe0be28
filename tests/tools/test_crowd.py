"""The pure parts of ``python -m tools crowd`` (tools/crowd.py): the request items, the
bodies each task's route is sent, and the alone-vs-crowd comparison. No server runs."""

from __future__ import annotations

from tools.crowd import ROUTES, compare, random_items


def test_random_items_are_reproducible_and_span_the_context_lengths():
    a, b = random_items(14, seed=3), random_items(14, seed=3)
    assert a == b and a != random_items(14, seed=4)
    lengths = [len(it["context"].split()) for it in a]
    assert min(lengths) == 3 and max(lengths) == 300
    assert all(it["question"].endswith("?") for it in a)


def test_each_task_route_sends_its_clients_body():
    items = random_items(3)
    qa, embed, classify = ROUTES["qa"], ROUTES["embed"], ROUTES["classify"]
    assert qa.path == "/v1/answer" and qa.one(items[0]) == items[0] and qa.many(items) == items
    assert embed.path == "/embed"
    assert embed.one(items[0]) == {"inputs": items[0]["context"], "truncate": True}
    assert embed.many(items)["inputs"] == [it["context"] for it in items]
    # TEI answers one text with a list of one vector; the drill compares the vector itself
    assert embed.single([[0.5, 0.25]]) == [0.5, 0.25] and qa.single({"a": 1}) == {"a": 1}
    assert classify.single([{"label": "x", "score": 1.0}]) == [{"label": "x", "score": 1.0}]
    assert classify.path == "/predict"
    one = classify.one(items[1])
    assert one["inputs"] == [items[1]["question"], items[1]["context"]] and one["raw_scores"]
    # a batch is a list of [text, text_pair] lists: never mistaken for one pair
    assert classify.many(items[:2])["inputs"] == [
        [it["question"], it["context"]] for it in items[:2]
    ]


def test_compare_counts_lost_failed_and_differing_answers():
    alone = [
        (200, {"answer": "a", "score": 1.0}),
        (200, [0.5, 0.25]),
        (None, "timeout"),
        (200, {"answer": "b", "score": 2.0}),
    ]
    crowd = [
        (200, {"answer": "a", "score": 1.0}),
        (200, [0.5, 0.2500001]),
        (200, [1.0]),
        (503, {"error": "busy"}),
    ]
    c = compare(alone, crowd)
    assert (c["lost"], c["failed"], c["differ"]) == (1, 1, 1)
    assert c["examples"] == [{"alone": [0.5, 0.25], "crowd": [0.5, 0.2500001]}]
    assert c["max_score_diff"] == 0.0  # vectors have no QA score
    qa = compare([(200, {"score": 1.0})], [(200, {"score": 1.5})])
    assert qa["differ"] == 1 and qa["max_score_diff"] == 0.5
    assert compare(alone, alone)["differ"] == 0
