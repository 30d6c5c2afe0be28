"""The Hugging Face Inference API on ``POST /``, for the task of the app's model folder, so
``huggingface_hub.InferenceClient(base_url="http://host:8000")`` works unchanged (its
``hf-inference`` helper posts every task's body to the base URL):

* embed apps: feature-extraction (``{"inputs": str | [str], "normalize"?, "truncate"?}`` ->
  ``[[float, ...], ...]``) and, when ``inputs`` is an object, sentence-similarity
  (``{"inputs": {"source_sentence", "sentences"}}`` -> ``[cosine, ...]``);
* classify apps: text-classification (``{"inputs": str, "parameters": {"top_k"?,
  "function_to_apply"?}}`` -> ``[[{label, score}, ...]]``: one sorted list per input, as the
  client reads it, ``parse_obj_as_list(response)[0]``);
* qa apps: question-answering (``{"inputs": {"question", "context"}, "parameters": {"top_k"?,
  "max_answer_len"?, "handle_impossible_answer"?}}`` -> ``{answer, score, start, end}``, or a
  list of them for ``top_k`` > 1; the score is a probability as the HF pipeline defines it,
  :mod:`packing.qa.spans`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from packing.qa.spans import probable_spans
from packing.tasks import payloads
from packing.tasks.sequences import item_names

from . import route_docs, routes_tei
from .task_front import AUTO_TRUNCATE_HINT, TRUNCATE_HINT, TaskFront

ROOT_OPENAPI = route_docs.operation(
    {
        "type": "object",
        "required": ["inputs"],
        "description": (
            "The HF Inference API body of the app's task: feature-extraction or "
            "sentence-similarity (embed), text-classification (classify), question-answering "
            "(qa)"
        ),
    },
    {"oneOf": [{"type": "array"}, {"type": "object"}]},
    "The HF Inference API response of the app's task",
)


async def root(front: TaskFront, obj: Any) -> Any:
    """``POST /``: the HF task of the app's folder (module docstring)."""
    task = front.info.task
    if task == "qa":
        return await question_answering(front, obj)
    if task == "classify":
        return await text_classification(front, obj)
    if isinstance(obj, dict) and isinstance(obj.get("inputs"), dict):
        return await routes_tei.similarity(front, obj)
    return await feature_extraction(front, obj)


async def feature_extraction(front: TaskFront, obj: Any) -> list[np.ndarray]:
    """Feature-extraction: :func:`payloads.hf_feature_extraction`, one packer call, a float32
    vector per input (normalised as the body says, else as the folder says)."""
    req = payloads.hf_feature_extraction(obj, front.limits, front.auto_truncate)
    payloads.check_dimensions(req.dimensions, front.info.hidden_size)
    names = item_names("inputs", len(req.inputs), req.is_list)
    _, outputs = await front.run(req.inputs, req.truncate, names, TRUNCATE_HINT)
    return front.pipeline.vectors(outputs, req.normalize)


async def text_classification(front: TaskFront, obj: Any) -> list[list[dict]]:
    """Text-classification: :func:`payloads.hf_text_classification`, one packer call, per
    input its labels sorted by score (the HF pipeline's score function unless the body names
    one), the first ``top_k``."""
    req = payloads.hf_text_classification(obj, front.limits, front.auto_truncate)
    names = item_names("inputs", len(req.inputs), req.is_list)
    _, outputs = await front.run(req.inputs, req.truncate, names, AUTO_TRUNCATE_HINT)
    return front.pipeline.predictions(outputs, req.function, req.top_k)


async def question_answering(front: TaskFront, obj: Any) -> dict | list[dict]:
    """Question-answering: :func:`payloads.hf_question_answering`, the windows of
    ``POST /v1/answer`` (the same tokenizer batch and packer call path), the ``top_k`` most
    probable spans (:func:`~packing.qa.spans.probable_spans`)."""
    s = front.qa.settings
    req = payloads.hf_question_answering(
        obj,
        front.limits,
        s.seq_len,
        {
            "doc_stride": s.doc_stride,
            "max_question_len": s.max_query_tokens,
            "max_seq_len": s.seq_len,
        },
    )
    (windows,), outputs = await front.qa_run([req.request], False)
    spans = [
        span.to_json()
        for span in probable_spans(
            windows,
            outputs,
            req.request.context,
            req.top_k,
            req.max_answer_len,
            req.handle_impossible_answer,
        )
    ]
    return spans[0] if req.top_k == 1 else spans
