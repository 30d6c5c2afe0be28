"""``packed-bert batch``: offline packed inference over Ray Data, for the model folder's task.

The task comes from the folder's manifest (``manifest.task``):

* ``qa``: a SQuAD v1.1-format file in, ``{id: answer text}`` out, EM and F1 (official v1.1
  normalisation) printed when the input has answers (:class:`QAPredictor`);
* ``embed``: JSONL in, one ``{"id", "text"}`` per line; JSONL out, one
  ``{"id", "embedding": [floats]}`` per line (:class:`EmbedPredictor`);
* ``classify``: JSONL in, ``{"id", "text"}`` or ``{"id", "text", "text_pair"}`` per line;
  JSONL out, ``{"id", "scores": [{"label", "score"}, ...]}``, highest score first, by the
  folder's default score function (:class:`ClassifyPredictor`).

The input becomes a Ray Dataset; ``map_batches`` sends blocks of it to a pool of predictor
actors (pinned like the served runners: CPUs, or one unit of an accelerator resource each).
Each actor tokenizes its block, packs the whole block offline (:meth:`PackRunner.run`: SPFHP
rows for ``attention_mask``, tokens end to end for ``unpack_repack``) and runs it. A QA
question's windows all stay in one block, so nothing is gathered across actors.

An embed or classify text over the folder's ``seq_len`` tokens is cut to it unless the job
runs with ``truncate=False`` (``--no-truncate``); then that line is ``{"id", "error"}`` and the
job goes on. The output lines keep the input's order.

Runs locally (a Ray instance of its own) or inside a cluster job
(``ray job submit --working-dir . -- packed-bert batch ...``, where ``ray.init`` joins the
job's cluster).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from packing.model.prepared import ModelLike, PreparedModel
from packing.policy.config import DEFAULT_MODE

#: The fields of an input line, per task: required, then optional.
JSONL_FIELDS = {"embed": (("id", "text"), ()), "classify": (("id", "text"), ("text_pair",))}


def read_squad(path: str | Path, limit: int | None = None) -> tuple[list[dict], dict]:
    """Rows ``{"id", "question", "context"}`` in file order (the first ``limit``) and the
    ground truth ``{id: [answer texts]}`` of those that have answers."""
    from packing.qa.squad_file import read_questions

    questions = read_questions(path)[:limit]
    rows = [{"id": q.id, "question": q.question, "context": q.context} for q in questions]
    return rows, {q.id: list(q.answers) for q in questions if q.answers}


def read_jsonl(path: str | Path, task: str, limit: int | None = None) -> list[dict]:
    """The rows of an embed or classify input file (the first ``limit`` non-blank lines), in
    file order: ``{"row": k, "id_json": <the id as JSON text>, "text"}``, and for classify
    ``"text_pair"`` ("" when absent) and ``"pair"`` (whether the line has one).

    A line is a JSON object with ``id`` (a string or an integer, unique in the file) and
    ``text`` (a string); classify also takes ``text_pair`` (a string or null). Anything else
    is a ValueError naming the file and line, before any work."""
    from packing.qa.requests import BadRequest, short_repr
    from packing.tasks.fields import check_fields, expect_object

    required, optional = JSONL_FIELDS[task]
    rows: list[dict] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not text.strip():
                continue
            where = f"{path} line {number}"
            try:
                obj = expect_object(json.loads(text), "a line")
                check_fields(obj, required, optional)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            except BadRequest as exc:
                raise ValueError(f"{where}: {exc}") from None
            id_, pair = obj["id"], obj.get("text_pair")
            if isinstance(id_, bool) or not isinstance(id_, (str, int)):
                raise ValueError(
                    f"{where}: id must be a string or an integer, got {short_repr(id_)}"
                )
            for name, value in (("text", obj["text"]), ("text_pair", pair)):
                if not isinstance(value, str) and (name == "text" or value is not None):
                    raise ValueError(f"{where}: {name} must be a string, got {short_repr(value)}")
            id_json = json.dumps(id_, ensure_ascii=False)
            if id_json in seen:
                raise ValueError(f"{where}: id {id_json} repeats line {seen[id_json]}")
            seen[id_json] = number
            row = {"row": len(rows), "id_json": id_json, "text": obj["text"]}
            if task == "classify":
                row.update(text_pair=pair or "", pair=pair is not None)
            rows.append(row)
    return rows


def _runner(model: PreparedModel, mode: str, backend: str, backend_options: dict | None):
    """The packed runner of ``mode`` on ``model``, or padded batches for ``original``."""
    from packing.runners import ModelRunner, PackRunner

    if mode == "original":  # the padded baseline: batch_size x seq_len, one sequence per row
        return ModelRunner(model, backend=backend, **(backend_options or {}))
    return PackRunner(model, mode=mode, backend=backend, **(backend_options or {}))


class QAPredictor:
    """Ray Data callable: a block of questions in, one prediction per question out.

    Output columns: ``id``, ``prediction`` (answer text, "" when the question could not be
    tokenized), ``error`` ("" or why), ``windows`` (model inputs the question took),
    ``block_start`` / ``block_end`` (wall clock, s, when this call began and ended).
    ``mode``: ``unpack_repack`` or ``attention_mask`` (packed, offline per block) or
    ``original`` (padded batches, the baseline). ``answering``: ``doc_stride``,
    ``max_query_tokens``, ``max_answer_tokens`` of the QA pipeline (:class:`QASettings`
    defaults otherwise; ``seq_len`` is the folder's). ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once for the pipeline and the runner.
    """

    def __init__(
        self,
        model_dir: ModelLike,
        mode: str = DEFAULT_MODE,
        backend: str = "onnxruntime",
        backend_options: dict | None = None,
        **answering: int,
    ) -> None:
        from packing.qa.pipeline import QAPipeline

        model = PreparedModel.open(model_dir)
        self.qa = QAPipeline.from_model_dir(model, answering)  # doc_stride, ...
        self.runner = _runner(model, mode, backend, backend_options)

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
        return {
            "id": np.array(ids, dtype=object),
            "prediction": np.array(preds, dtype=object),
            "error": np.array(errors, dtype=object),
            "windows": np.array(counts),
            "block_start": np.full(n, started),
            "block_end": np.full(n, time.time()),
        }


class _SequencePredictor:
    """Ray Data callable of a task with one model sequence per input (embed, classify): a
    block of :func:`read_jsonl` rows in, one output line per row out.

    Output columns: ``row`` (the input row), ``line`` (the output JSONL line: ``{"id", ...}``
    with the task's result, or ``{"id", "error"}`` for an input the model cannot take),
    ``failed`` (whether it is an error line), ``tokens`` (tokens the model ran for it, 0 when
    failed), ``block_start`` / ``block_end`` (as :class:`QAPredictor`'s). ``mode`` as
    :class:`QAPredictor`'s; ``truncate``: cut an input over the folder's ``seq_len`` to it
    (else the line is an error). ``model_dir``: a path or a
    :class:`~packing.model.prepared.PreparedModel`, opened once for the pipeline and the
    runner."""

    def __init__(
        self,
        model_dir: ModelLike,
        mode: str = DEFAULT_MODE,
        backend: str = "onnxruntime",
        backend_options: dict | None = None,
        truncate: bool = True,
    ) -> None:
        model = PreparedModel.open(model_dir)
        self.pipeline = self.load(model)
        self.runner = _runner(model, mode, backend, backend_options)
        self.truncate = truncate

    def load(self, model: PreparedModel) -> Any:
        """The task's pipeline of the model."""
        raise NotImplementedError

    def inputs(self, batch: dict) -> list:
        """The pipeline's inputs of a block."""
        return [str(t) for t in batch["text"]]

    def results(self, outputs: list) -> list[dict]:
        """The fields of each output line (after ``id``) from the model's results."""
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        started = time.time()
        from packing.qa.requests import TooLarge
        from packing.runtime.features import Features

        encoded = self.pipeline.encode(self.inputs(batch), self.truncate)
        good = [k for k, e in enumerate(encoded) if isinstance(e, Features)]
        outs = self.runner.run([encoded[k] for k in good]) if good else []
        fields: list[dict] = [
            {"error": str(e) + (" (truncation is off)" if isinstance(e, TooLarge) else "")}
            for e in encoded
        ]
        for k, result in zip(good, self.results(outs)):
            fields[k] = result
        lines = [
            json.dumps({"id": json.loads(i), **f}, ensure_ascii=False)
            for i, f in zip(batch["id_json"], fields)
        ]
        n = len(lines)
        return {
            "row": np.asarray(batch["row"], dtype=np.int64),
            "line": np.array(lines, dtype=object),
            "failed": np.array(["error" in f for f in fields], dtype=bool),
            "tokens": np.array(
                [len(e) if isinstance(e, Features) else 0 for e in encoded], dtype=np.int64
            ),
            "block_start": np.full(n, started),
            "block_end": np.full(n, time.time()),
        }


class EmbedPredictor(_SequencePredictor):
    """An embed folder's :class:`_SequencePredictor`: ``{"id", "embedding": [floats]}``
    lines, float32 values written exactly, L2-normalised when ``normalize`` is true (None:
    as the folder says, ``manifest.task.normalize``)."""

    def __init__(
        self,
        model_dir: ModelLike,
        mode: str = DEFAULT_MODE,
        backend: str = "onnxruntime",
        backend_options: dict | None = None,
        truncate: bool = True,
        normalize: bool | None = None,
    ) -> None:
        super().__init__(model_dir, mode, backend, backend_options, truncate)
        self.normalize = normalize

    def load(self, model: PreparedModel) -> Any:
        from packing.tasks.embed import EmbedPipeline

        return EmbedPipeline.from_model_dir(model)

    def results(self, outputs: list) -> list[dict]:
        return [{"embedding": v.tolist()} for v in self.pipeline.vectors(outputs, self.normalize)]


class ClassifyPredictor(_SequencePredictor):
    """A classify folder's :class:`_SequencePredictor`: ``{"id", "scores": [{"label",
    "score"}]}`` lines, every label, highest score first, by the folder's default score
    function (:func:`packing.tasks.classify.default_function`)."""

    def load(self, model: PreparedModel) -> Any:
        from packing.tasks.classify import ClassifyPipeline

        return ClassifyPipeline.from_model_dir(model)

    def inputs(self, batch: dict) -> list:
        return [
            (str(t), str(p)) if has else str(t)
            for t, p, has in zip(batch["text"], batch["text_pair"], batch["pair"])
        ]

    def results(self, outputs: list) -> list[dict]:
        return [{"scores": s} for s in self.pipeline.predictions(outputs)]


PREDICTORS = {"qa": QAPredictor, "embed": EmbedPredictor, "classify": ClassifyPredictor}


def _options(task: str, truncate: bool | None, normalize: bool | None) -> dict:
    """The predictor options of ``task``: ``truncate`` (default true) for embed and classify,
    ``normalize`` for embed; ValueError for one the task does not take."""
    if task == "qa" and truncate is not None:
        raise ValueError(
            "--truncate / --no-truncate apply to embed and classify folders "
            "(qa splits a long context into windows); this folder's task is qa"
        )
    if task != "embed" and normalize is not None:
        raise ValueError(
            f"--normalize / --no-normalize apply to embed folders; this folder's task is {task}"
        )
    options = {} if task == "qa" else {"truncate": True if truncate is None else truncate}
    if task == "embed":
        options["normalize"] = normalize
    return options


def run_batch(
    input_path: str | Path,
    output_path: str | Path,
    model_dir: ModelLike,
    mode: str = DEFAULT_MODE,
    workers: int = 1,
    inputs_per_block: int = 64,
    limit: int | None = None,
    backend: str = "onnxruntime",
    backend_options: dict | None = None,
    resources: dict | None = None,
    num_cpus: float = 1.0,
    address: str | None = None,
    truncate: bool | None = None,
    normalize: bool | None = None,
) -> dict:
    """Run the folder's task on every input of ``input_path`` and write the results to
    ``output_path`` (see the module's doc for each task's formats). ``model_dir``: a path or
    a :class:`~packing.model.prepared.PreparedModel`.

    ``workers`` predictor actors each take ``num_cpus`` CPUs and ``resources`` (e.g.
    ``{"IPU": 1}``); blocks hold ``inputs_per_block`` questions or lines. ``address``: the
    Ray cluster to join (None: the job's cluster when run by ``ray job submit``, else a local
    one). ``truncate`` (embed, classify; None: true) cuts a text over ``seq_len``, else its
    line is an error; ``normalize`` (embed; None: the folder's choice). Either given for a
    task that does not take it is a ValueError.

    Returns, besides ``"task"``, for qa ``{"questions", "windows", "failed", "seconds",
    "questions_per_s", "windows_per_s", "busy_seconds", "busy_questions_per_s", "metrics"}``
    (``metrics``: EM/F1 when the input has answers, else None); for embed and classify
    ``{"texts", "tokens", "failed", "seconds", "texts_per_s", "tokens_per_s", "busy_seconds",
    "busy_texts_per_s", "truncate"}``, and for embed ``"normalize"`` (as given; None: the
    folder's). ``seconds`` is the whole job including actor start-up; ``busy_seconds`` runs
    from the first block's start to the last block's end on the predictors (start-up
    excluded)."""
    model = PreparedModel.open(model_dir)
    task = model.manifest.task.task
    options = _options(task, truncate, normalize)
    if task == "qa":
        rows, answers = read_squad(input_path, limit)
    else:
        rows = read_jsonl(input_path, task, limit)
    if not rows:
        raise ValueError(f"{input_path}: no {'questions' if task == 'qa' else 'input lines'}")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False)
    execution = ray.data.DataContext.get_current().execution_options  # set before from_items
    preserve_order = execution.preserve_order
    try:
        execution.preserve_order = preserve_order or task != "qa"  # lines in input order
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // inputs_per_block))
        t0 = time.perf_counter()
        out = ds.map_batches(
            PREDICTORS[task],
            batch_size=inputs_per_block,
            concurrency=workers,
            num_cpus=num_cpus,
            resources=resources or None,
            fn_constructor_kwargs={  # each actor opens the folder on its node once
                "model_dir": str(model.folder.resolve()),
                "mode": mode,
                "backend": backend,
                "backend_options": backend_options or {},
                **options,
            },
        )
        if task != "qa":  # streamed to the file as the blocks come back
            return {"task": task, **_write_lines(out, len(rows), output_path, t0), **options}
        done = out.take_all()
        return _qa_summary(done, rows, answers, output_path, time.perf_counter() - t0)
    finally:
        execution.preserve_order = preserve_order
        if started_here:
            ray.shutdown()


def _qa_summary(
    out: list[dict], rows: list[dict], answers: dict, output_path: str | Path, seconds: float
) -> dict:
    """Write the QA predictions ``{id: text}`` and sum up the job."""
    from packing.qa.squad_eval import evaluate

    predictions = {r["id"]: r["prediction"] for r in out}
    if len(predictions) != len(rows):
        raise RuntimeError(f"{len(rows)} questions in, {len(predictions)} predictions out")
    Path(output_path).write_text(json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
    windows = int(sum(r["windows"] for r in out))
    busy = max(r["block_end"] for r in out) - min(r["block_start"] for r in out)
    return {
        "task": "qa",
        "questions": len(rows),
        "windows": windows,
        "failed": sum(1 for r in out if r["error"]),
        "seconds": seconds,
        "questions_per_s": len(rows) / seconds,
        "windows_per_s": windows / seconds,
        "busy_seconds": busy,
        "busy_questions_per_s": len(rows) / max(busy, 1e-9),
        "metrics": evaluate(answers, predictions) if answers else None,
    }


def _write_lines(out: Any, count: int, output_path: str | Path, t0: float) -> dict:
    """Stream the predictors' lines (in input order) to ``output_path``; sum up the job."""
    texts = tokens = failed = 0
    first, last = float("inf"), 0.0
    with open(output_path, "w", encoding="utf-8") as f:
        for r in out.iter_rows():
            if int(r["row"]) != texts:
                raise RuntimeError(f"output line {texts} expected, got {int(r['row'])}")
            f.write(str(r["line"]) + "\n")
            texts += 1
            tokens += int(r["tokens"])
            failed += bool(r["failed"])
            first, last = min(first, float(r["block_start"])), max(last, float(r["block_end"]))
    seconds = time.perf_counter() - t0
    if texts != count:
        raise RuntimeError(f"{count} lines in, {texts} lines out")
    busy = last - first
    return {
        "texts": texts,
        "tokens": tokens,
        "failed": failed,
        "seconds": seconds,
        "texts_per_s": texts / seconds,
        "tokens_per_s": tokens / seconds,
        "busy_seconds": busy,
        "busy_texts_per_s": texts / max(busy, 1e-9),
    }
