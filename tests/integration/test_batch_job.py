"""packed-bert batch: the Ray Data job (its own local Ray, in a subprocess); the SQuAD metric
is in tests/unit/test_batch_job.py."""

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
    from packing.runtime import ModelRunner
    from packing.runtime.features import Features

    squad, out = make_squad_file(tmp_path), tmp_path / "pred.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="pbs-job-", dir="/tmp")  # short: socket paths
    proc = subprocess.run([sys.executable, "-m", "packing.cli", "batch", "--input", str(squad),
                           "--output", str(out), "--model-dir", str(tiny_model_dir), "--mode", mode,
                           "--workers", "2", "--num-cpus", "0.5", "--questions-per-block", "2",
                           "--json", str(tmp_path / "summary.json")],
                          capture_output=True, text=True, timeout=300, env=env)
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
        want = best_answer(wins, [o.start_logits for o in outs], [o.end_logits for o in outs],
                           r["context"])
        assert preds[r["id"]] == want.text
