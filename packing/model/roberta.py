"""RoBERTa and XLM-RoBERTa checkpoints read as the BERT checkpoints that compute the same thing.

RoBERTa (``model_type`` ``roberta``) and XLM-RoBERTa (``xlm-roberta``: bge-m3,
multilingual-e5) are BERT's encoder with three differences, all in the checkpoint rather than
the computation, so :func:`as_bert` maps them at prepare time and the graph builder, the heads
and the pipelines stay BERT's:

* **names**: ``roberta.*`` is ``bert.*``; a ``*ForSequenceClassification``'s head
  (``RobertaClassificationHead``: ``out_proj(tanh(dense(h[<s>])))``) is BERT's pooler and
  classifier (``classifier(tanh(pooler.dense(h[CLS])))``), so ``classifier.dense.*`` becomes
  ``bert.pooler.dense.*`` and ``classifier.out_proj.*`` becomes ``classifier.*``.
* **positions**: RoBERTa numbers a sequence's tokens from ``pad_token_id + 1``
  (``create_position_ids_from_input_ids``); the graphs number them from 0. The position table
  is cut to ``table[pad_token_id + 1:]`` so position ``j`` of the graphs reads RoBERTa's row
  ``pad_token_id + 1 + j``, and ``max_position_embeddings`` shrinks by ``pad_token_id + 1``
  (514 -> 512 for roberta-base).
* **token types**: RoBERTa has one (``type_vocab_size`` 1). Its single row is written twice
  (``type_vocab_size`` 2; see :func:`token_type_table` for why).

``layer_norm_eps`` (1e-5) and the rest of the config are read as for BERT
(:meth:`packing.model.weights.BertDims.from_hf_config`). One input differs from
transformers' RoBERTa: a ``<pad>`` id *inside* a sequence (only token ids a client sends can
carry one; a tokenizer puts none there) takes the next position here, while RoBERTa gives it
the padding position and does not count it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROBERTA_TYPES = ("roberta", "xlm-roberta")
"""The ``model_type`` values :func:`as_bert` maps."""
ARCHITECTURES = ("bert", *ROBERTA_TYPES)
"""What a manifest's ``architecture`` names: the source's encoder family
(:func:`architecture_of`)."""

_POSITIONS = "bert.embeddings.position_embeddings.weight"
_TYPES = "bert.embeddings.token_type_embeddings.weight"
_HEAD = {  # RobertaClassificationHead -> BertForSequenceClassification's pooler + classifier
    "classifier.dense.weight": "bert.pooler.dense.weight",
    "classifier.dense.bias": "bert.pooler.dense.bias",
    "classifier.out_proj.weight": "classifier.weight",
    "classifier.out_proj.bias": "classifier.bias",
}


def architecture_of(config: dict[str, Any]) -> str:
    """The encoder family of a transformers ``config.json`` dict: its ``model_type`` when that
    is one of :data:`ROBERTA_TYPES`, else ``bert`` (every other config is read as BERT)."""
    model_type = config.get("model_type")
    return model_type if model_type in ROBERTA_TYPES else "bert"


def position_offset(config: dict[str, Any]) -> int:
    """``pad_token_id + 1``: the first position RoBERTa gives a real token (2 for roberta-base
    and XLM-R, whose ``pad_token_id`` is 1, transformers' default when the config omits it).
    ValueError for a ``pad_token_id`` that is not an int >= 0, or one that leaves no position."""
    pad = config.get("pad_token_id", 1)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad_token_id must be an int >= 0 for a RoBERTa config, got {pad!r}")
    if pad + 1 >= _max_positions(config):
        raise ValueError(
            f"pad_token_id {pad} leaves no position of max_position_embeddings "
            f"{_max_positions(config)}"
        )
    return pad + 1


def _max_positions(config: dict[str, Any]) -> int:
    """The config's ``max_position_embeddings`` (transformers' default 512 when absent)."""
    return int(config.get("max_position_embeddings", 512))


def bert_config(config: dict[str, Any]) -> dict[str, Any]:
    """A RoBERTa ``config`` as the BERT config of :func:`bert_weights`'s tensors: a copy with
    ``max_position_embeddings`` reduced by :func:`position_offset` and ``type_vocab_size`` 2
    where it was 1; every other key as it is."""
    out = dict(config)
    out["max_position_embeddings"] = _max_positions(config) - position_offset(config)
    out["type_vocab_size"] = max(2, int(config.get("type_vocab_size", 2)))
    return out


def token_type_table(table: np.ndarray) -> np.ndarray:
    """RoBERTa's token-type table with its single row repeated: ``[1, H]`` -> ``[2, H]``
    (a table of 2 rows or more is returned as it is).

    Why a repeated row rather than forcing every type id to 0: token type ids come from many
    places (the tokenizer's pair encoding, QA windows, token ids a client sends, the
    calibration and benchmark workloads, ``prepare``'s own check), all written for BERT's 0/1.
    With both rows equal every one of them picks RoBERTa's row, with no change to a graph, a
    pipeline or the runtime, and the folder is a BERT checkpoint (``type_vocab_size`` 2) that
    transformers runs to RoBERTa's outputs whatever ``token_type_ids`` it is given."""
    if table.ndim != 2 or table.shape[0] < 1:
        raise ValueError(f"token_type_embeddings must be [types >= 1, H], got {table.shape}")
    return np.repeat(table, 2, axis=0) if table.shape[0] == 1 else table


def bert_weights(state: dict[str, np.ndarray], config: dict[str, Any]) -> dict[str, np.ndarray]:
    """A RoBERTa checkpoint's tensors under BERT's names, with BERT's position and type tables.

    ``state``: the checkpoint's tensors (names ``roberta.*``, or ``bert.*`` where
    :func:`~packing.model.weights.normalise_names` already prefixed a bare ``RobertaModel``'s);
    ``config``: its ``config.json`` dict. ``roberta.`` becomes ``bert.``; the classification
    head's tensors become the pooler's and the classifier's (they replace any
    ``roberta.pooler.*`` a checkpoint also carries: the head, not that pooler, computes its
    logits); the position table loses its first :func:`position_offset` rows; the type table
    is :func:`token_type_table`'s. Other tensors (``lm_head.*``, buffers) are kept as they
    are; :func:`~packing.model.weights.check_weights` leaves out what the task does not read."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key.startswith("roberta."):
            key = "bert." + key[len("roberta.") :]
        out[key] = value
    for old, new in _HEAD.items():
        if old in out:
            out[new] = out.pop(old)
    if _POSITIONS in out:
        out[_POSITIONS] = out[_POSITIONS][position_offset(config) :]
    if _TYPES in out:
        out[_TYPES] = token_type_table(np.asarray(out[_TYPES]))
    return out


def as_bert(
    config: dict[str, Any], state: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, tensors)`` of a checkpoint as BERT's: mapped by :func:`bert_config` and
    :func:`bert_weights` for a RoBERTa / XLM-RoBERTa config (:data:`ROBERTA_TYPES`), as they
    are for any other."""
    if architecture_of(config) == "bert":
        return config, state
    return bert_config(config), bert_weights(state, config)
