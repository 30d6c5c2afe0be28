"""packed-bert batch: the SQuAD metric (official v1.1 normalisation), and the embed and
classify predictors called on a block directly (no Ray): each line's result equals its text
run alone, an over-long text is an error line of its own, the JSONL input is checked before
any work. The Ray Data job itself is in tests/integration/test_batch_job.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packing.jobs.batch import ClassifyPredictor, EmbedPredictor, read_jsonl, run_batch
from packing.model.manifest import Manifest
from packing.model.prepare import prepare
from packing.model.quantize import TOLERANCES
from packing.model.task import TaskSpec
from packing.qa.squad_eval import evaluate, exact_match, f1_score, normalize_answer
from packing.runners import ModelRunner, PackRunner
from packing.tasks import ClassifyPipeline, EmbedPipeline

SHAPE = {"seq_len": 32, "batch_size": 2, "max_valid_num": 4}
LONG = "word " * 40  # 42 tokens with the specials: over seq_len 32
TEXTS = [
    "The river runs through the city.",
    "",
    "Packing puts many requests in one batch.",
    LONG,
    "short",
    "A man is eating food. " * 3,
]
LABELS = ("neg", "neu", "pos")


def test_normalisation_is_the_official_one():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # articles only as whole words


def test_exact_match_and_f1():
    assert exact_match("the Broncos", "Broncos") == 1.0
    assert exact_match("Denver Broncos", "Broncos") == 0.0
    assert f1_score("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    assert f1_score("Carolina", "Broncos") == 0.0
    got = evaluate(
        {"q1": ["Broncos", "Denver Broncos"], "q2": ["1000"], "q3": ["x"]},
        {"q1": "denver broncos.", "q2": "1,000"},
    )
    assert got == {
        "exact_match": pytest.approx(200 / 3),
        "f1": pytest.approx(200 / 3),
        "count": 3,
        "missing": 1,
    }


# ------------------------------------------------------------------ embed and classify


@pytest.fixture(scope="module")
def embed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-embed") / "model"
    prepare("random:tiny", out, task="embed", quiet=True, **SHAPE)
    return out


@pytest.fixture(scope="module")
def classify_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-classify") / "model"
    prepare("random:tiny", out, task=TaskSpec(task="classify", labels=LABELS), quiet=True, **SHAPE)
    return out


def write_jsonl(path, lines) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def block(rows: list[dict]) -> dict:
    """A block as Ray Data hands it to the predictor: one numpy array per column."""
    return {
        k: np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None)
        for k in rows[0]
    }


def lines_of(out: dict) -> list[dict]:
    return [json.loads(x) for x in out["line"]]


def solo_results(folder, inputs, truncate=True, mode="original"):
    """The model result of each input run alone: through ``ModelRunner`` (padded to itself,
    the original graph), or through the packed graph of ``mode``, one sequence per run."""
    task = Manifest.read(folder).task.task
    pipe = (EmbedPipeline if task == "embed" else ClassifyPipeline).from_model_dir(folder)
    runner = (
        ModelRunner(folder, batch_size=1, padding="longest")
        if mode == "original"
        else PackRunner(folder, mode=mode, max_tokens=None)
    )
    return pipe, [runner.run([f])[0] for f in pipe.encode(inputs, truncate)]


@pytest.mark.parametrize("mode", ["unpack_repack", "attention_mask"])
@pytest.mark.parametrize("normalize", [None, False])
def test_embed_lines_equal_each_text_run_alone(embed_dir, tmp_path, mode, normalize):
    """Every line, the over-long one cut to seq_len (truncation is the job's default), gets
    the vector of its text run alone through ``ModelRunner`` (within prepare's tolerance:
    another graph), and in unpack_repack bit for bit the vector of its text run alone through
    the same graph; normalised as the folder says unless told otherwise."""
    ids = [f"t{k}" for k in range(len(TEXTS) - 1)] + [7]  # an integer id is written back as one
    rows = read_jsonl(
        write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in zip(ids, TEXTS)]),
        "embed",
    )
    out = EmbedPredictor(str(embed_dir), mode=mode, normalize=normalize)(block(rows))
    pipe, solo = solo_results(embed_dir, TEXTS)
    lines = lines_of(out)
    assert [x["id"] for x in lines] == ids and list(out["row"]) == list(range(len(TEXTS)))
    assert not out["failed"].any()
    assert list(out["tokens"]) == [len(f) for f in pipe.encode(TEXTS, True)]
    assert out["tokens"][3] == SHAPE["seq_len"]
    got = [np.asarray(x["embedding"], dtype=np.float32) for x in lines]  # float32 exactly
    assert all(set(x) == {"id", "embedding"} for x in lines)
    for g, w in zip(got, pipe.vectors(solo, normalize)):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=TOLERANCES["fp32"], rtol=0)
        norm = float(np.linalg.norm(g.astype(np.float64)))
        assert (abs(norm - 1) < 1e-5) == (normalize is None)  # the folder normalises
    if mode == "unpack_repack":
        _, alone = solo_results(embed_dir, TEXTS, mode=mode)
        for g, w in zip(got, pipe.vectors(alone, normalize)):
            np.testing.assert_array_equal(g, w)


def test_embed_overlong_text_is_an_error_line_without_truncation(embed_dir, tmp_path):
    rows = read_jsonl(
        write_jsonl(
            tmp_path / "in.jsonl", [{"id": f"t{k}", "text": t} for k, t in enumerate(TEXTS)]
        ),
        "embed",
    )
    out = EmbedPredictor(str(embed_dir), truncate=False)(block(rows))
    lines = lines_of(out)
    assert lines[3] == {
        "id": "t3",
        "error": "input is 42 tokens; at most 32 fit the model (truncation is off)",
    }
    assert list(out["failed"]) == [k == 3 for k in range(len(TEXTS))] and out["tokens"][3] == 0
    pipe, solo = solo_results(
        embed_dir, [t for k, t in enumerate(TEXTS) if k != 3], mode="unpack_repack"
    )
    good = [x for k, x in enumerate(lines) if k != 3]
    for line, w in zip(good, pipe.vectors(solo)):  # the default mode, bit for bit
        np.testing.assert_array_equal(np.asarray(line["embedding"], dtype=np.float32), w)
    # a block of only over-long texts runs nothing and fails no job
    only = EmbedPredictor(str(embed_dir), truncate=False)(block(rows[3:4]))
    assert lines_of(only)[0]["error"].startswith("input is 42 tokens")


def test_classify_lines_equal_each_input_run_alone(classify_dir, tmp_path):
    """Texts and (text, text_pair) pairs: every line's scores are those of its input run
    alone, all labels, sorted, softmax (the folder's default); a pair is not its texts run
    apart; an over-long pair without truncation is an error line."""
    inputs = [
        "I loved this film.",
        ("A question?", "A passage that may answer it."),
        ("A question?", None),
        (LONG, "and a pair"),
        "short",
    ]
    lines_in = [
        {"id": k, "text": x} if isinstance(x, str) else {"id": k, "text": x[0], "text_pair": x[1]}
        for k, x in enumerate(inputs)
    ]
    rows = read_jsonl(write_jsonl(tmp_path / "in.jsonl", lines_in), "classify")
    assert [r["pair"] for r in rows] == [False, True, False, True, False]
    as_given = [x if isinstance(x, str) else x[0] if x[1] is None else x for x in inputs]
    out = ClassifyPredictor(str(classify_dir))(block(rows))  # unpack_repack
    pipe, solo = solo_results(classify_dir, as_given)
    _, alone = solo_results(classify_dir, as_given, mode="unpack_repack")
    lines = lines_of(out)
    for k, (line, w, a) in enumerate(zip(lines, pipe.predictions(solo), pipe.predictions(alone))):
        assert line == {"id": k, "scores": a}  # bit for bit: the same graph alone
        by_label = {s["label"]: s["score"] for s in w}  # another graph: labels may swap a tie
        np.testing.assert_allclose(
            [s["score"] for s in line["scores"]],
            [by_label[s["label"]] for s in line["scores"]],
            atol=TOLERANCES["fp32"],
            rtol=0,
        )
        scores = [s["score"] for s in line["scores"]]
        assert sorted(scores, reverse=True) == scores and sorted(
            s["label"] for s in line["scores"]
        ) == sorted(LABELS)
        assert sum(scores) == pytest.approx(1.0)  # softmax over three labels
    assert lines[1]["scores"] != lines[2]["scores"]  # the pair is one sequence
    cut = ClassifyPredictor(str(classify_dir), truncate=False)(block(rows))
    assert lines_of(cut)[3] == {
        "id": 3,
        "error": "input (text and text_pair) is 46 tokens; "
        "at most 32 fit the model (truncation is off)",
    }
    assert lines_of(cut)[:3] == lines[:3] and list(cut["failed"]) == [False] * 3 + [True, False]


def test_jsonl_input_is_checked_before_any_work(embed_dir, classify_dir, tiny_model_dir, tmp_path):
    def bad(lines, task="embed"):
        with pytest.raises(ValueError) as err:
            read_jsonl(write_jsonl(tmp_path / "bad.jsonl", lines), task)
        return str(err.value)

    ok = {"id": "a", "text": "x"}
    assert "bad.jsonl line 2: not JSON" in bad([ok, "{nope"])
    assert "line 1: a line must be a JSON object, got" in bad(["[1, 2]"])
    msg = bad([{"id": "a", "inputs": "x"}])
    assert "missing field 'text'" in msg and "unknown field 'inputs'" in msg
    assert "unknown field 'text_pair'" in bad([{**ok, "text_pair": "y"}])  # embed takes none
    assert "line 1: id must be a string or an integer, got 1.5" in bad([{"id": 1.5, "text": "x"}])
    assert "id must be a string or an integer" in bad([{"id": True, "text": "x"}])
    assert "line 1: text must be a string, got 3" in bad([{"id": "a", "text": 3}])
    assert "text_pair must be a string" in bad([{**ok, "text_pair": ["y"]}], "classify")
    assert 'line 3: id "a" repeats line 1' in bad([ok, {"id": 1, "text": "y"}, ok])
    # blank lines are skipped; --limit counts lines with an input; ids "1" and 1 differ
    rows = read_jsonl(
        write_jsonl(
            tmp_path / "ok.jsonl", [ok, "", {"id": "1", "text": "y"}, {"id": 1, "text": "z"}]
        ),
        "embed",
        limit=2,
    )
    assert rows == [
        {"row": 0, "id_json": '"a"', "text": "x"},
        {"row": 1, "id_json": '"1"', "text": "y"},
    ]
    # run_batch reads the folder's task and the input before starting Ray
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"version": "1.1", "data": []}))
    with pytest.raises(ValueError, match="line 1: missing fields 'id', 'text'"):
        run_batch(squad, tmp_path / "out.jsonl", embed_dir)
    with pytest.raises(ValueError, match="no input lines"):
        run_batch(write_jsonl(tmp_path / "empty.jsonl", [""]), tmp_path / "o.jsonl", embed_dir)
    with pytest.raises(ValueError, match="--normalize / --no-normalize apply to embed"):
        run_batch(tmp_path / "in.jsonl", tmp_path / "o.jsonl", classify_dir, normalize=False)
    with pytest.raises(ValueError, match="--truncate / --no-truncate apply to embed and classify"):
        run_batch(squad, tmp_path / "o.json", tiny_model_dir, truncate=False)


def test_the_lines_are_written_in_input_order_and_summed_up(embed_dir, tmp_path):
    """What the job does with the predictors' rows (the Ray Dataset stood in by a list): each
    line written as it comes, in input order, tokens and error lines counted; a row out of
    order or a missing one stops the job."""
    from packing.jobs.batch import _write_lines

    class Rows:  # the one method of ray.data.Dataset the writer uses
        def __init__(self, blocks):
            self.rows = [
                {k: v[i] for k, v in b.items()} for b in blocks for i in range(len(b["row"]))
            ]

        def iter_rows(self):
            return iter(self.rows)

    rows = read_jsonl(
        write_jsonl(
            tmp_path / "in.jsonl", [{"id": f"t{k}", "text": t} for k, t in enumerate(TEXTS)]
        ),
        "embed",
    )
    predict = EmbedPredictor(str(embed_dir), truncate=False)
    blocks = [predict(block(rows[k : k + 2])) for k in range(0, len(rows), 2)]
    out = tmp_path / "out.jsonl"
    summary = _write_lines(Rows(blocks), len(rows), out, t0=0.0)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert written == [x for b in blocks for x in lines_of(b)]
    assert [x["id"] for x in written] == [f"t{k}" for k in range(len(TEXTS))]
    assert summary["texts"] == len(TEXTS) and summary["failed"] == 1
    assert summary["tokens"] == sum(int(b["tokens"].sum()) for b in blocks)
    assert summary["busy_seconds"] >= 0 and summary["texts_per_s"] > 0
    with pytest.raises(RuntimeError, match="output line 0 expected, got 2"):
        _write_lines(Rows(blocks[1:]), len(rows), out, t0=0.0)
    with pytest.raises(RuntimeError, match="6 lines in, 4 lines out"):
        _write_lines(Rows(blocks[:2]), len(rows), out, t0=0.0)
