"""Shared test factories and plan invariant checks for the packing policy tests.

Imported by the test modules of every tier as ``from factories import ...`` (pyproject.toml's
``pythonpath`` puts the ``tests`` directory on ``sys.path``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from packing.policy.plans import AttentionMaskPlan, PaddedPlan, UnpackRepackPlan

REPO = Path(__file__).resolve().parents[1]  # the repository root
VOCAB = 30522


def make_lengths(n: int, seq_len: int = 256, seed: int = 0, dist: str = "seed") -> np.ndarray:
    """``n`` int64 lengths in ``[1, seq_len]``.

    ``dist="seed"``: the project's 'seed' workload, ``normal(seq_len/2, seq_len/2)``
    rounded and clipped (for seq_len 256: ``normal(128, 128)`` clipped to [1, 256]).
    ``dist="uniform"``: uniform on ``[1, seq_len]``. ``dist="short"``: geometric
    with mean ~seq_len/8, clipped.
    """
    rng = np.random.default_rng(seed)
    if dist == "seed":
        raw = rng.normal(seq_len / 2, seq_len / 2, n)
    elif dist == "uniform":
        raw = rng.integers(1, seq_len + 1, n)
    elif dist == "short":
        raw = rng.geometric(min(1.0, 8 / seq_len), n)
    else:
        raise ValueError(f"unknown dist {dist!r}")
    return np.clip(np.rint(raw), 1, seq_len).astype(np.int64)


def make_sequences(
    lengths: Sequence[int] | np.ndarray, vocab: int = VOCAB, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random token arrays for ``lengths``: ``(input_ids, token_type_ids)`` lists of int64.

    Token ids are in ``[1, vocab)`` (never 0, the pad id, so padding is
    recognisable); token types are 0 for the first part of each sequence and 1
    for the rest, like a question/context pair.
    """
    rng = np.random.default_rng(seed)
    ids, types = [], []
    for length in np.asarray(lengths, dtype=np.int64).tolist():
        ids.append(rng.integers(1, vocab, length, dtype=np.int64))
        split = int(rng.integers(0, length + 1))
        types.append((np.arange(length) >= split).astype(np.int64))
    return ids, types


def tagged_sequences(
    lengths: Sequence[int] | np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token arrays whose values identify (sequence, position): ``id = 1000*(k+1) + j``.

    ``token_type_ids`` hold ``k + 1``. Handy for checking layouts exactly.
    """
    ids, types = [], []
    for k, length in enumerate(np.asarray(lengths, dtype=np.int64).tolist()):
        ids.append(1000 * (k + 1) + np.arange(length, dtype=np.int64))
        types.append(np.full(length, k + 1, dtype=np.int64))
    return ids, types


def l2_lower_bound(lengths: np.ndarray, row_len: int) -> int:
    """Martello-Toth L2 lower bound on the rows any packing of ``lengths`` needs."""
    lengths = np.asarray(lengths, dtype=np.int64)
    best = -(-int(lengths.sum()) // row_len)
    for k in range(0, row_len // 2 + 1):
        big = lengths > row_len - k
        mid = (lengths > row_len / 2) & ~big
        small = (lengths >= k) & (lengths <= row_len / 2)
        room = int(mid.sum()) * row_len - int(lengths[mid].sum())
        extra = max(0, -(-(int(lengths[small].sum()) - room) // row_len))
        best = max(best, int(big.sum()) + int(mid.sum()) + extra)
    return best


# -- plan invariants ---------------------------------------------------------


def check_padded_plan(plan: PaddedPlan, batch_size: int) -> None:
    """One sequence per row, at most batch_size rows, every length fits the row."""
    assert 1 <= plan.n_seqs <= batch_size
    assert plan.lengths.min() >= 1 and plan.lengths.max() <= plan.seq_len


def check_attention_plan(
    plan: AttentionMaskPlan, batch_size: int, max_valid_num: int, max_tokens: int | None = None
) -> None:
    """Rows in range, no overlap inside a row, plan order == (row, start) order, limits respected."""
    assert 1 <= plan.n_seqs <= max_valid_num
    assert 1 <= plan.n_rows <= batch_size
    assert plan.rows.min() >= 0 and plan.rows.max() < plan.n_rows
    assert set(plan.rows.tolist()) == set(range(plan.n_rows)), "every row of the plan is used"
    assert plan.starts.min() >= 0
    ends = plan.starts + plan.lengths
    assert ends.max() <= plan.seq_len
    key = plan.rows * (plan.seq_len + 1) + plan.starts
    assert np.all(np.diff(key) > 0), "plan order must be (row, start) order"
    same_row = plan.rows[1:] == plan.rows[:-1]
    assert np.all(plan.starts[1:][same_row] >= ends[:-1][same_row]), (
        "sequences overlap inside a row"
    )
    if max_tokens is not None:
        assert plan.real_tokens <= max_tokens


def check_unpack_plan(plan: UnpackRepackPlan, max_valid_num: int, capacity: int) -> None:
    """cu_seqlens starts at 0 and strictly increases; capacity and max_valid_num respected."""
    assert plan.cu_seqlens[0] == 0
    assert np.all(np.diff(plan.cu_seqlens) >= 1)
    assert plan.capacity == capacity
    assert 1 <= plan.n_seqs <= max_valid_num
    assert plan.real_tokens <= capacity
    assert plan.lengths.max() <= plan.seq_len


def all_ids(plans) -> np.ndarray:
    """Sorted concatenation of every plan's seq_ids."""
    if not plans:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate([p.seq_ids for p in plans]))


def make_squad_file(tmp_path, n_articles=3):
    """A small SQuAD-format file with answers (the contexts are real sentences)."""
    paras = [
        (
            "Jane Austen wrote Pride and Prejudice, published in 1813.",
            [("Who wrote Pride and Prejudice?", "Jane Austen"), ("When was it published?", "1813")],
        ),
        (
            "The Amazon is the largest rainforest on Earth and spans nine countries.",
            [("How many countries does the Amazon span?", "nine")],
        ),
        (
            "Water boils at 100 degrees Celsius at sea level. " * 30,  # long: several windows
            [("At what temperature does water boil?", "100 degrees Celsius")],
        ),
    ]
    data = {
        "version": "1.1",
        "data": [
            {
                "title": f"a{i}",
                "paragraphs": [
                    {
                        "context": ctx,
                        "qas": [
                            {
                                "id": f"q{i}-{j}",
                                "question": q,
                                "answers": [{"text": a, "answer_start": ctx.index(a)}],
                            }
                            for j, (q, a) in enumerate(qas)
                        ],
                    }
                ],
            }
            for i, (ctx, qas) in enumerate(paras[:n_articles])
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


HIDDEN_TOL = {"fp32": 1e-4, "int8": 0.1, "fp16": 0.05}
"""Max abs difference of a prepared folder's outputs (last hidden states, logits) from
transformers' forward of the checkpoint it came from: fp32 rounding; int8 (7-bit weights,
per-token 8-bit activations: measured 0.018 on the hidden states); fp16 (measured 0.0045)."""

LAYOUTS = ("original", "attention_mask", "unpack_repack")
"""The graphs of a prepared folder, as the runners name their layouts."""


def layout_runner(folder, layout: str, max_tokens: int, **options):
    """The runner of ``layout``: padded ``original`` batches (``ModelRunner``), or offline
    packing (``PackRunner`` in that mode with a pinned token budget, so no calibration);
    ``options`` go to the backend (``device``, ``allow_cpu_half``)."""
    from packing.runners import ModelRunner, PackRunner

    if layout == "original":
        return ModelRunner(folder, **options)
    return PackRunner(folder, mode=layout, max_tokens=max_tokens, **options)


def graph_hidden(r, data) -> list[np.ndarray]:
    """Each sequence's ``last_hidden_state`` rows as runner ``r``'s graph computes them in its
    batches (the executor's inputs, the backend's output, cut per sequence): float32
    ``[T, H]`` per item of ``data``. The folder must be an embed or classify one."""
    from packing.model.heads import HIDDEN_OUTPUT
    from packing.policy import layouts

    out: list = [None] * len(data)
    for plan in r.plans(np.array([len(f) for f in data])):
        inputs, _ = r.executor.inputs(plan, [data[i] for i in plan.seq_ids])
        got = r.backend.run(inputs)[HIDDEN_OUTPUT]
        assert got.dtype == np.float32
        for i, h in zip(plan.seq_ids, layouts.scatter_outputs(plan, got)):
            out[i] = h
    return out


def hf_bert_folder(
    folder: Path,
    architecture: str = "BertForSequenceClassification",
    num_labels: int = 3,
    seed: int = 0,
    hidden_size: int = 48,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 96,
):
    """A transformers BERT checkpoint of ``architecture`` (``BertModel``,
    ``BertForSequenceClassification`` with ``num_labels`` labels, ``BertForQuestionAnswering``)
    saved in ``folder`` with the bundled tokenizer; every weight is made non-trivial (biases,
    norms and the pooler included). Returns the torch model, in eval mode. Needs torch."""
    import torch
    import transformers

    from packing.model.weights import save_tokenizer

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        vocab_size=VOCAB,
        num_labels=num_labels,
        id2label={i: f"label_{i}" for i in range(num_labels)},
        label2id={f"label_{i}": i for i in range(num_labels)},
    )
    model = _nontrivial(getattr(transformers, architecture)(config))
    model.save_pretrained(folder)
    save_tokenizer(Path(folder), None)
    return model


def _nontrivial(model):
    """``model`` in eval mode with noise added to every parameter (biases, norms, a padding
    row of an embedding table included), so no tensor is at its initial value."""
    import torch

    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


TOKENIZER_TEXTS = (
    "Who wrote Pride and Prejudice?",
    "Pride and Prejudice is an 1813 novel of manners written by Jane Austen.",
    "The quick brown fox jumps over the lazy dog.",
    "Packing puts the tokens of many requests end to end in one batch.",
    "Wer hat Stolz und Vorurteil geschrieben? Straße, café, naïve, 東京.",
)
"""What the tokenizers of :func:`roberta_tokenizer` are trained on (and tests may tokenize)."""


def roberta_tokenizer(model_type: str = "roberta"):
    """A small transformers fast tokenizer of ``model_type``'s kind, trained offline on
    :data:`TOKENIZER_TEXTS`: ``roberta``, a byte-level BPE in ``RobertaTokenizer``;
    ``xlm-roberta``, a SentencePiece-style Unigram in ``XLMRobertaTokenizer``. Special tokens
    as the real ones: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` last; pairs
    are ``<s> A </s></s> B </s>``. Its size (``len``) is the model's ``vocab_size``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer, XLMRobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    texts = list(TOKENIZER_TEXTS) * 4
    if model_type == "roberta":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
        )
        bpe.train_from_iterator(texts, trainer)
        model = json.loads(bpe.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
        return RobertaTokenizer(vocab=model["vocab"], merges=merges)
    if model_type == "xlm-roberta":
        uni = Tokenizer(models.Unigram())
        uni.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=200, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
        uni.train_from_iterator(texts, trainer)
        vocab = json.loads(uni.to_str())["model"]["vocab"]
        return XLMRobertaTokenizer(vocab=[(piece, score) for piece, score in vocab])
    raise ValueError(f"model_type must be roberta or xlm-roberta, got {model_type!r}")


def hf_roberta_folder(
    folder: Path,
    architecture: str = "RobertaForSequenceClassification",
    num_labels: int = 3,
    seed: int = 0,
    seq_len: int = 48,
    sentence_transformers: bool = False,
):
    """A transformers RoBERTa or XLM-RoBERTa checkpoint of ``architecture`` (``RobertaModel``,
    ``RobertaForSequenceClassification``, ``RobertaForQuestionAnswering``, or the same with
    ``XLMRoberta``) saved in ``folder`` with :func:`roberta_tokenizer`'s tokenizer, configured
    as the real checkpoints are (``pad_token_id`` 1, ``type_vocab_size`` 1,
    ``layer_norm_eps`` 1e-5, ``max_position_embeddings`` ``seq_len + 2``: the last position is
    the last one a ``seq_len`` folder uses), every weight non-trivial. With
    ``sentence_transformers`` the folder is a sentence-transformers one too (mean pooling,
    normalised). Returns ``(torch model in eval mode, tokenizer)``. Needs torch."""
    import torch
    import transformers

    xlm = architecture.startswith("XLMRoberta")
    tok = roberta_tokenizer("xlm-roberta" if xlm else "roberta")
    torch.manual_seed(seed)
    config = (transformers.XLMRobertaConfig if xlm else transformers.RobertaConfig)(
        vocab_size=len(tok),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=seq_len + 2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=tok.pad_token_id,
        num_labels=num_labels,
        id2label={i: f"label_{i}" for i in range(num_labels)},
        label2id={f"label_{i}": i for i in range(num_labels)},
    )
    model = _nontrivial(getattr(transformers, architecture)(config))
    model.save_pretrained(folder)
    tok.save_pretrained(str(folder))
    if sentence_transformers:
        from packing.model.task import TaskSpec
        from packing.model.weights import BertDims, save_sentence_transformers

        dims = BertDims(hidden_size=config.hidden_size)  # only hidden_size is written
        save_sentence_transformers(Path(folder), TaskSpec(task="embed"), dims, seq_len)
    return model, tok


def run_virtual(coro):
    """Run ``coro`` on an event loop with virtual time (looptime): the clock starts at 0 and
    jumps over idle waits, so timers are exact and no test really sleeps."""
    import looptime

    loop = looptime.new_event_loop(start=0)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def python_lines(fn, *args, **kwargs) -> tuple[int, object]:
    """``(Python lines executed while fn(*args, **kwargs) runs, its result)``: a trace counter
    for speed promises that are counted, not timed (no clock)."""
    count = [0]

    def tracer(frame, event, arg):
        if event == "line":
            count[0] += 1
        return tracer

    sys.settrace(tracer)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.settrace(None)
    return count[0], result


def kernel_node_session(
    op: str,
    inputs: Sequence[tuple[str, int]],
    outputs: Sequence[tuple[str, int]],
    *,
    library=None,
    threads: int = 2,
    **attrs,
):
    """An ONNX Runtime CPU session of one node ``op`` of this package's CPU kernels (domain
    ``packed_bert``): ``inputs`` and ``outputs`` are ``(name, ONNX element type)`` pairs,
    ``attrs`` the node's attributes; the host's kernel library, or the one at ``library``."""
    from onnx import helper

    from packing.model.graphs import PB_DOMAIN, PB_OPSET
    from packing.runtime import cpu_kernels
    from packing.runtime.backend import import_onnxruntime

    ort = import_onnxruntime()
    node = helper.make_node(
        op, [n for n, _ in inputs], [n for n, _ in outputs], domain=PB_DOMAIN, **attrs
    )
    model = helper.make_model(
        helper.make_graph(
            [node],
            op,
            [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
            [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PB_DOMAIN, PB_OPSET)],
    )
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(library or cpu_kernels.library_path()))
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
