"""packed-bert batch: the Ray Data job (its own local Ray, in a subprocess) on a qa folder and on
an embed folder; the SQuAD metric and the embed and classify predictors on a block are in
tests/unit/test_batch_job.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from factories import make_squad_file


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["unpack_repack", "attention_mask"])
def test_batch_job_predicts_every_question_like_the_app(tiny_model_dir, tmp_path, mode):
    """The job over Ray Data (its own local Ray, in a subprocess): one prediction per question,
    equal to what the same windows give through solo runs, and EM/F1 printed."""
    from transformers import AutoTokenizer

    from packing.jobs.batch import read_squad
    from packing.qa.windows import best_answer, make_windows
    from packing.runners import ModelRunner
    from packing.runtime.features import Features

    squad, out = make_squad_file(tmp_path), tmp_path / "pred.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="pbs-job-", dir="/tmp")  # short: socket paths
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "packing.cli",
            "batch",
            "--input",
            str(squad),
            "--output",
            str(out),
            "--model-dir",
            str(tiny_model_dir),
            "--mode",
            mode,
            "--workers",
            "2",
            "--num-cpus",
            "0.5",
            "--questions-per-block",
            "2",
            "--json",
            str(tmp_path / "summary.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "exact match" in proc.stdout and "F1" in proc.stdout
    preds = json.loads(out.read_text())
    rows, answers = read_squad(squad)
    assert set(preds) == {r["id"] for r in rows} == set(answers)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["questions"] == 4 and summary["failed"] == 0 and summary["windows"] > 4
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    solo = ModelRunner(tiny_model_dir, batch_size=1, padding="longest")
    for r in rows:  # each question's answer: the same as its windows run one by one
        wins = make_windows(tok, r["question"], r["context"], solo.seq_len)
        outs = [solo.run([Features(w.input_ids, w.token_type_ids)])[0] for w in wins]
        want = best_answer(
            wins, [o.start_logits for o in outs], [o.end_logits for o in outs], r["context"]
        )
        assert preds[r["id"]] == want.text


@pytest.mark.integration
def test_batch_job_embeds_every_line_like_the_text_alone(tmp_path):
    """An embed folder's job over Ray Data (its own local Ray, in a subprocess): one JSONL
    line per input line, in input order, each vector bit for bit that of its text run alone
    through the same graph (unpack_repack) and within prepare's tolerance of ModelRunner's;
    with --no-truncate an over-long text is an error line and the job goes on."""
    import numpy as np

    from packing.model.prepare import prepare
    from packing.model.quantize import TOLERANCES
    from packing.runners import ModelRunner, PackRunner
    from packing.tasks import EmbedPipeline

    folder = tmp_path / "embed"
    prepare(
        "random:tiny", folder, task="embed", seq_len=64, batch_size=4, max_valid_num=8, quiet=True
    )
    texts = [
        "The river runs through the city.",
        "Packing puts many requests in one batch.",
        "word " * 80,
        "",
        "A man is eating food.",
        "Water boils at 100 degrees. " * 5,
        "short",
    ]
    ids = [f"t{k}" for k in range(len(texts))]
    src, out = tmp_path / "texts.jsonl", tmp_path / "vectors.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="pbs-job-", dir="/tmp")  # short: socket paths
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "packing.cli",
            "batch",
            "--input",
            str(src),
            "--output",
            str(out),
            "--model-dir",
            str(folder),
            "--mode",
            "unpack_repack",
            "--no-truncate",
            "--workers",
            "2",
            "--num-cpus",
            "0.5",
            "--inputs-per-block",
            "2",
            "--json",
            str(tmp_path / "summary.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "texts/s" in proc.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ids
    assert lines[2] == {
        "id": "t2",
        "error": "input is 82 tokens; at most 64 fit the model (truncation is off)",
    }
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["task"], summary["texts"], summary["failed"]) == ("embed", len(texts), 1)
    pipe = EmbedPipeline.from_model_dir(folder)
    alone = PackRunner(folder, mode="unpack_repack", max_tokens=None)
    solo = ModelRunner(folder, batch_size=1, padding="longest")
    for k, line in enumerate(lines):
        if k == 2:
            continue
        [f] = pipe.encode([texts[k]], truncate=False)
        got = np.asarray(line["embedding"], dtype=np.float32)
        np.testing.assert_array_equal(got, pipe.vectors(alone.run([f]))[0])
        np.testing.assert_allclose(
            got, pipe.vectors(solo.run([f]))[0], atol=TOLERANCES["fp32"], rtol=0
        )
