"""``packed-bert batch``: offline packed question answering over Ray Data.

The SQuAD-format input becomes a Ray Dataset of questions; ``map_batches`` sends blocks of
questions to a pool of :class:`QAPredictor` actors (pinned like the served runners: CPUs, or
one unit of an accelerator resource each). Each actor tokenizes its block into windows,
packs the whole block offline (:meth:`PackRunner.run`: SPFHP rows for ``attention_mask``,
tokens end to end for ``unpack_repack``), runs it, and keeps the best span per question over
its windows, so every window of a question stays in one block and nothing is gathered
across actors. Predictions are written as SQuAD's ``{id: answer text}``; when the input has
answers, EM and F1 with the official v1.1 normalisation are printed.

Runs locally (a Ray instance of its own) or inside a cluster job
(``ray job submit --working-dir . -- packed-bert batch ...``, where ``ray.init`` joins the
job's cluster).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from packing.policy.config import DEFAULT_MODE


def read_squad(path: str | Path, limit: int | None = None) -> tuple[list[dict], dict]:
    """Rows ``{"id", "question", "context"}`` in file order (the first ``limit``) and the
    ground truth ``{id: [answer texts]}`` of those that have answers."""
    from packing.qa.squad_file import read_questions

    questions = read_questions(path)[:limit]
    rows = [{"id": q.id, "question": q.question, "context": q.context} for q in questions]
    return rows, {q.id: list(q.answers) for q in questions if q.answers}


class QAPredictor:
    """Ray Data callable: a block of questions in, one prediction per question out.

    Output columns: ``id``, ``prediction`` (answer text, "" when the question could not be
    tokenized), ``error`` ("" or why), ``windows`` (model inputs the question took),
    ``block_start`` / ``block_end`` (wall clock, s, when this call began and ended).
    ``mode``: ``unpack_repack`` or ``attention_mask`` (packed, offline per block) or
    ``original`` (padded batches, the baseline). ``answering``: ``doc_stride``,
    ``max_query_tokens``, ``max_answer_tokens`` of the QA pipeline (:class:`QASettings`
    defaults otherwise; ``seq_len`` is the folder's).
    """

    def __init__(self, model_dir: str, mode: str = DEFAULT_MODE, backend: str = "onnxruntime",
                 backend_options: dict | None = None, **answering: int) -> None:
        from packing.qa.pipeline import QAPipeline
        from packing.runtime import ModelRunner, PackRunner

        self.qa = QAPipeline.from_model_dir(model_dir, answering)  # doc_stride, ...
        if mode == "original":  # the padded baseline: batch_size x seq_len, one window per row
            self.runner = ModelRunner(model_dir, backend=backend, **(backend_options or {}))
        else:
            self.runner = PackRunner(model_dir, mode=mode, backend=backend,
                                     **(backend_options or {}))

    def __call__(self, batch: dict) -> dict:
        started = time.time()
        from packing.qa.pipeline import features_of
        from packing.qa.requests import BadRequest

        ids = [str(x) for x in batch["id"]]
        contexts = [str(x) for x in batch["context"]]
        pairs = list(zip((str(q) for q in batch["question"]), contexts))
        per_q = self.qa.tokenize(pairs)
        flat = features_of(per_q)
        outs = self.runner.run(flat) if flat else []
        answers = self.qa.answers(per_q, outs, contexts)
        bad = [isinstance(a, BadRequest) for a in answers]
        preds = ["" if b else a.text for a, b in zip(answers, bad)]
        errors = [str(a) if b else "" for a, b in zip(answers, bad)]
        counts = [0 if isinstance(w, BadRequest) else len(w) for w in per_q]
        n = len(ids)
        return {"id": np.array(ids, dtype=object), "prediction": np.array(preds, dtype=object),
                "error": np.array(errors, dtype=object), "windows": np.array(counts),
                "block_start": np.full(n, started), "block_end": np.full(n, time.time())}


def run_batch(input_path: str | Path, output_path: str | Path, model_dir: str | Path,
              mode: str = DEFAULT_MODE, workers: int = 1, questions_per_block: int = 64,
              limit: int | None = None, backend: str = "onnxruntime",
              backend_options: dict | None = None, resources: dict | None = None,
              num_cpus: float = 1.0, address: str | None = None) -> dict:
    """Predict every question of ``input_path`` and write ``{id: text}`` to ``output_path``.

    ``workers`` QAPredictor actors each take ``num_cpus`` CPUs and ``resources`` (e.g.
    ``{"IPU": 1}``); blocks hold ``questions_per_block`` questions. ``address``: the Ray
    cluster to join (None: the job's cluster when run by ``ray job submit``, else a local
    one). Returns ``{"questions", "windows", "failed", "seconds", "questions_per_s",
    "windows_per_s", "busy_seconds", "busy_questions_per_s", "metrics"}``: ``seconds`` is the
    whole job including actor start-up; ``busy_seconds`` runs from the first block's start to
    the last block's end on the predictors (start-up excluded); ``metrics``: EM/F1 when the
    input has answers, else None.
    """
    from packing.model.manifest import Manifest
    from packing.model.task import require_task

    require_task(Manifest.read(Path(model_dir)).task, "qa", "packed-bert batch (extractive QA)")
    import ray

    from packing.qa.squad_eval import evaluate

    rows, answers = read_squad(input_path, limit)
    if not rows:
        raise ValueError(f"{input_path}: no questions")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False)
    try:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // questions_per_block))
        t0 = time.perf_counter()
        out = ds.map_batches(
            QAPredictor, batch_size=questions_per_block, concurrency=workers,
            num_cpus=num_cpus, resources=resources or None,
            fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()), "mode": mode,
                                   "backend": backend, "backend_options": backend_options or {}},
        ).take_all()
        seconds = time.perf_counter() - t0
    finally:
        if started_here:
            ray.shutdown()
    predictions = {r["id"]: r["prediction"] for r in out}
    if len(predictions) != len(rows):
        raise RuntimeError(f"{len(rows)} questions in, {len(predictions)} predictions out")
    Path(output_path).write_text(json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
    windows = int(sum(r["windows"] for r in out))
    busy = max(r["block_end"] for r in out) - min(r["block_start"] for r in out)
    return {"questions": len(rows), "windows": windows,
            "failed": sum(1 for r in out if r["error"]), "seconds": seconds,
            "questions_per_s": len(rows) / seconds, "windows_per_s": windows / seconds,
            "busy_seconds": busy, "busy_questions_per_s": len(rows) / max(busy, 1e-9),
            "metrics": evaluate(answers, predictions) if answers else None}
