"""``packed-bert eval``: EM / F1 of one model folder under every run mode, side by side.

The questions (by default the held-out articles of :mod:`packing.qa.squad_file`) are tokenized
once into windows, exactly as serving does; every mode runs the same windows (Original:
padded batches; the packed modes offline and online, through the same runners ``bench``
measures); the best span over a question's windows is its prediction, scored with the
official SQuAD v1.1 normalisation. Each packed mode is compared with Original: how many
predictions differ and the largest logit difference. ``--url`` also scores the running app
over HTTP (list bodies, the same questions), which gives its answers/s.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..model.prepared import ModelLike, PreparedModel
from ..policy.attention import ATTENTION_GROUPS
from ..qa.pipeline import QAPipeline, Windows, features_of
from ..qa.requests import BadRequest, Limits
from ..qa.squad_eval import evaluate
from ..qa.squad_file import Question, read_questions
from ..runners.drive import drive, run_online
from ..runners.run_modes import BENCH_MODES, max_logit_diff, runner_for
from ..runtime.admission import DEFAULT_ADMISSION

#: Original and every packed mode, in the spec's order.
EVAL_MODES: tuple[str, ...] = (
    "original",
    "offline_unpack_repack",
    "online_unpack_repack",
    "offline_attention_mask",
    "online_first_fit",
    "online_next_fit",
    "online_best_fit",
)


@dataclass
class ModeScore:
    """EM / F1 of one mode, and how it compares with Original."""

    key: str  # BENCH_MODES key, or "http" for the running app
    label: str  # printed name
    exact_match: float  # percent
    f1: float  # percent
    seconds: float  # wall time of the model runs (tokenization excluded)
    differ_from_original: int | None = None  # predictions whose text differs from Original's
    max_abs_diff: float | None = None  # largest |logit - Original's logit| over all windows
    predictions: dict[str, str] = field(default_factory=dict, repr=False)  # id -> answer text


def predictions_from(
    qa: QAPipeline, questions: Sequence[Question], per_q: Sequence[Windows], outputs
) -> dict[str, str]:
    """``{id: answer text}`` from the flat per-window ``outputs`` (:meth:`QAPipeline.answers`):
    the best span over each question's windows, "" for a question that could not be
    tokenized."""
    answers = qa.answers(per_q, outputs, [q.context for q in questions])
    return {q.id: "" if isinstance(a, BadRequest) else a.text for q, a in zip(questions, answers)}


def evaluate_modes(
    model_dir: ModelLike,
    questions: Sequence[Question],
    modes: Sequence[str] = EVAL_MODES,
    threads: int | None = None,
    concurrency: int = 16,
    progress: bool = True,
    **answering: int,
) -> list[ModeScore]:
    """Score every mode in ``modes`` (Original first if present) on ``questions``, each
    running the same windows; ``answering``: the QA pipeline's ``doc_stride``,
    ``max_query_tokens``, ``max_answer_tokens`` (serving's defaults otherwise). ``model_dir``:
    a path or a :class:`~packing.model.prepared.PreparedModel`, opened once for every mode."""
    model = PreparedModel.open(model_dir)
    qa = QAPipeline.from_model_dir(model, answering)  # serving's tokenization and spans
    per_q = qa.tokenize([(q.question, q.context) for q in questions])
    flat = features_of(per_q)
    answers = {q.id: list(q.answers) for q in questions if q.answers}
    settings = {
        "threads": threads,
        "batch_wait_timeout_s": DEFAULT_ADMISSION.batch_wait_timeout_s,
        "max_tokens": None,
        "attention_groups": ATTENTION_GROUPS,
        "batch_size": model.manifest.batch_size,
    }
    scores: list[ModeScore] = []
    reference = None
    for key in modes:
        if key not in BENCH_MODES or key == "hf_pipeline":
            raise ValueError(f"unknown mode {key!r}; choose from {', '.join(EVAL_MODES)}")
        runner = runner_for(key, model, settings)
        try:
            t0 = time.perf_counter()
            if key.startswith("online_"):
                outs, _ = run_online(runner, flat, concurrency, progress)
            else:
                outs = runner.run(flat, progress=progress)
            seconds = time.perf_counter() - t0
        finally:
            close = getattr(runner, "close", None)
            if close is not None:
                close()
        preds = predictions_from(qa, questions, per_q, outs)
        metric = evaluate(answers, preds)
        score = ModeScore(
            key, BENCH_MODES[key], metric["exact_match"], metric["f1"], seconds, predictions=preds
        )
        if key == "original":
            reference = (outs, preds)
        elif reference is not None:
            score.max_abs_diff = max_logit_diff(outs, dict(enumerate(reference[0])))
            score.differ_from_original = sum(preds[k] != reference[1][k] for k in preds)
        scores.append(score)
    return scores


def _post(url: str, body: list[dict], timeout_s: float) -> list[dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def evaluate_http(
    url: str, questions: Sequence[Question], concurrency: int = 4, timeout_s: float = 300.0
) -> ModeScore:
    """Score the running app at ``url`` (``.../v1/answer``) on ``questions``, sent as list
    bodies of up to :attr:`Limits.max_batch_items` by ``concurrency`` clients. Raises the
    first HTTP error."""
    per_body = Limits().max_batch_items
    bodies = [list(questions[i : i + per_body]) for i in range(0, len(questions), per_body)]
    preds: dict[str, str] = {}
    errors: list[BaseException] = []

    def call(i: int) -> bool:
        try:
            got = _post(
                url, [{"question": q.question, "context": q.context} for q in bodies[i]], timeout_s
            )
        except Exception as exc:  # drive counts it and goes on; raised below
            errors.append(exc)
            raise
        preds.update({q.id: a["answer"] for q, a in zip(bodies[i], got)})
        return True

    seconds, _, _ = drive(len(bodies), concurrency, call)
    if errors:
        raise errors[0]
    metric = evaluate({q.id: list(q.answers) for q in questions if q.answers}, preds)
    return ModeScore(
        "http", f"HTTP app ({url})", metric["exact_match"], metric["f1"], seconds, predictions=preds
    )


def format_table(scores: Sequence[ModeScore], n_questions: int) -> str:
    """The side-by-side table ``packed-bert eval`` prints."""
    lines = [
        f"{'mode':<40} {'EM':>6} {'F1':>6} {'answers/s':>10} {'differ':>7} {'max|dlogit|':>12}"
    ]
    for s in scores:
        differ = "-" if s.differ_from_original is None else str(s.differ_from_original)
        diff = "-" if s.max_abs_diff is None else f"{s.max_abs_diff:.1e}"
        lines.append(
            f"{s.label:<40} {s.exact_match:6.2f} {s.f1:6.2f} "
            f"{n_questions / s.seconds:10.1f} {differ:>7} {diff:>12}"
        )
    return "\n".join(lines)


def run_eval(
    model_dir: ModelLike,
    squad_path: str | Path,
    split: str = "heldout",
    limit: int | None = None,
    modes: Sequence[str] = EVAL_MODES,
    url: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[list[Question], list[ModeScore]]:
    """The ``packed-bert eval`` command's work: the questions of ``split`` (the first
    ``limit``) and their scores under ``modes`` (and, with ``url``, the running app's).
    ``model_dir``: a path or a :class:`~packing.model.prepared.PreparedModel`, opened once."""
    from packing.model.task import require_task

    model = PreparedModel.open(model_dir)
    require_task(
        model.manifest.task,
        "qa",
        "packed-bert eval (SQuAD EM/F1)",
        "; for embed folders, quality against sentence-transformers is `python -m "
        "tools embed-quality` (docs/embeddings.md)",
    )
    questions = read_questions(squad_path, split)
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise ValueError(f"no questions in split {split!r} of {squad_path}")
    scores = (
        evaluate_modes(model, questions, modes, threads=threads, progress=progress) if modes else []
    )
    if url is not None:
        http = evaluate_http(url, questions)
        original = next((s for s in scores if s.key == "original"), None)
        if original is not None:  # the app NFC-normalises contexts: compare what EM compares
            from ..qa.squad_eval import normalize_answer

            http.differ_from_original = sum(
                normalize_answer(http.predictions.get(k, "")) != normalize_answer(v)
                for k, v in original.predictions.items()
            )
        scores.append(http)
    elif not modes:
        raise ValueError("nothing to score: give --url with --http-only")
    return questions, scores


def report(scores: Sequence[ModeScore]) -> list[dict]:
    """The JSON report of ``scores`` (``--json``): every :class:`ModeScore` field but the
    predictions."""
    return [{k: v for k, v in vars(s).items() if k != "predictions"} for s in scores]
