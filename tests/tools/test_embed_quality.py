"""The pure parts of ``python -m tools embed-quality`` (tools/embed_quality/): sampling SQuAD
texts, retrieval scores, the cosine summary, CPU flags, speed ratios and the command line. No
model runs; sentence-transformers and torch are never imported."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from tools.embed_quality import (
    cosine_rows,
    cosine_summary,
    format_report,
    retrieval_scores,
    sample_texts,
    speed_ratios,
)

from factories import REPO


def _pairs(paragraphs: int = 12, per: int = 5) -> list[tuple[str, str]]:
    """``per`` questions over each of ``paragraphs`` paragraphs, SQuAD order."""
    return [(f"q{p}-{k}?", f"paragraph {p}.") for p in range(paragraphs) for k in range(per)]


@pytest.mark.parametrize("nq, np_", [(1, 1), (7, 3), (20, 12), (60, 12), (10, 40), (3, 2)])
def test_sampling_keeps_each_questions_own_paragraph(nq, np_):
    pairs = _pairs()
    own = dict(pairs)
    t = sample_texts(pairs, nq, np_, seed=3)
    assert len(t.questions) == len(t.gold) == min(nq, len(pairs))
    assert len(t.paragraphs) == min(np_, 12) == len(set(t.paragraphs))
    for q, g in zip(t.questions, t.gold):
        assert t.paragraphs[g] == own[q]
    assert len(set(t.questions)) == len(t.questions)
    assert t.available == {"questions": 60, "paragraphs": 12}


def test_sampling_is_seeded_and_fills_distractors():
    pairs = _pairs()
    a, b = sample_texts(pairs, 4, 10, seed=1), sample_texts(pairs, 4, 10, seed=1)
    assert a == b
    assert sample_texts(pairs, 4, 10, seed=2) != a
    assert len({a.gold[i] for i in range(4)}) <= 4 < len(a.paragraphs) == 10  # distractors
    assert a.paragraphs == sorted(a.paragraphs, key=lambda p: int(p.split()[1].rstrip(".")))


def test_sampling_with_few_paragraphs_draws_questions_from_them():
    t = sample_texts(_pairs(), 8, 2, seed=0)
    assert len(t.paragraphs) == 2 and len(t.questions) == 8 and set(t.gold) == {0, 1}


def test_sampling_rejects_empty_counts():
    with pytest.raises(ValueError):
        sample_texts(_pairs(), 0, 3)
    with pytest.raises(ValueError):
        sample_texts(_pairs(), 3, 0)


def test_retrieval_scores_on_a_hand_made_matrix():
    sim = np.array(
        [
            [0.9, 0.1, 0.2, 0.0],  # gold 0: rank 1
            [0.5, 0.4, 0.6, 0.1],  # gold 1: rank 3
            [0.3, 0.3, 0.2, 0.1],  # gold 1: tie with 0 -> rank 2 (ties count against)
            [0.1, 0.2, 0.3, 0.05],
        ]
    )  # gold 3: rank 4
    r = retrieval_scores(sim, [0, 1, 1, 3])
    assert r["n"] == 4
    assert r["recall@1"] == pytest.approx(0.25)
    assert r["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 4) / 4)
    assert r["mean_rank"] == pytest.approx(2.5)
    assert retrieval_scores(sim, [0, 1, 1, 3], k=2)["mrr@2"] == pytest.approx((1 + 1 / 2) / 4)


def test_retrieval_mrr_cuts_at_k():
    sim = np.tile(np.arange(12, 0, -1, dtype=float), (2, 1))  # paragraph j ranks j + 1
    r = retrieval_scores(sim, [9, 10])  # ranks 10 and 11
    assert r["recall@1"] == 0.0 and r["mrr@10"] == pytest.approx(0.1 / 2)


@pytest.mark.parametrize(
    "sim, gold",
    [(np.zeros((2, 3)), [0]), (np.zeros((0, 3)), []), (np.zeros((1, 3)), [3]), (np.zeros(3), [0])],
)
def test_retrieval_rejects_bad_shapes(sim, gold):
    with pytest.raises(ValueError):
        retrieval_scores(sim, gold)


def test_cosine_rows_and_summary():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0 + 1e-4]])
    cos = cosine_rows(a, b)
    assert cos[0] == pytest.approx(1.0) and cos[1] == pytest.approx(2**-0.5)
    assert cos[2] == 0.0 and 0.995 < cos[3] < 1.0
    s = cosine_summary(cos)
    assert s["n"] == 4 and s["min"] == 0.0 and s["argmin"] == 2
    assert s["mean"] == pytest.approx(cos.mean())
    assert s["ge_0.99999"] == pytest.approx(0.5)  # rows 0 and 3 (1 - 1.9e-9)
    assert s["ge_0.995"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cosine_summary([])
    with pytest.raises(ValueError):
        cosine_rows(a, b[:3])


def _speed(model_dir, precision, mode, rate):
    return {
        "model_dir": model_dir,
        "precision": precision,
        "mode": mode,
        "texts_per_s": rate,
        "seconds": 1.0,
        "tokenize_s": 0.1,
        "batches": 3,
        "efficiency": 0.9,
    }


def test_speed_ratios_pick_unpack_repack_and_the_best_other_mode():
    speed = [
        _speed("f", "fp32", "unpack_repack", 100.0),
        _speed("f", "fp32", "attention_mask", 80.0),
        _speed("f", "fp32", "original", 50.0),
        _speed("i", "int8", "unpack_repack", 250.0),
        _speed("i", "int8", "attention_mask", 150.0),
        _speed("i", "int8", "original", 180.0),
    ]
    r = speed_ratios(speed, st_texts_per_s=50.0)
    got = [(x["model_dir"], x["mode"], x["best_other"]) for x in r]
    assert got == [
        ("f", "unpack_repack", False),
        ("f", "attention_mask", True),
        ("i", "unpack_repack", False),
        ("i", "original", True),
    ]
    assert [x["vs_sentence_transformers"] for x in r] == [2.0, 1.6, 5.0, 3.6]
    assert [x["vs_base"] for x in r] == [None, None, 2.5, pytest.approx(3.6)]
    # the int8 folder first: fp32 is still the base
    assert speed_ratios(speed[3:] + speed[:3], 50.0)[0]["vs_base"] == 2.5


def test_format_report_renders_a_small_report():
    host = {
        "date": "2026-01-01T00:00:00+00:00",
        "cpu": "CPU",
        "cores": 2,
        "threads": 2,
        "tokenizer_threads": "2",
        "flags": {"avx2": True, "avx512f": False, "avx512_vnni": None},
        "versions": {"onnxruntime": "1", "torch": "2"},
    }
    quality = {
        "n": 3,
        "mean": 0.9999,
        "min": 0.998,
        "argmin": 0,
        "ge_0.99999": 0.5,
        "ge_0.995": 1.0,
        "worst_kind": "question",
        "worst_tokens": 9,
    }
    speed = [_speed("f", "fp32", "unpack_repack", 100.0)]
    report = {
        "settings": {"cosine_thresholds": [0.99999, 0.995]},
        "host": host,
        "folders": [
            {
                "model_dir": "f",
                "source": "builtin:minilm-embed",
                "precision": "fp32",
                "seq_len": 128,
                "batch_size": 16,
                "max_valid_num": 40,
                "max_tokens": 256,
                "calibration": {"max_tokens": 256, "from_cache": False, "seconds": 7.0},
            }
        ],
        "texts": {
            "questions": 2,
            "paragraphs": 1,
            "total": 3,
            "available": {"questions": 10, "paragraphs": 4},
            "tokens_mean": {"questions": 12.0, "paragraphs": 140.0},
            "truncated": {"questions": 0, "paragraphs": 1},
        },
        "sentence_transformers": {
            "folder": "ref",
            "max_seq_length": 128,
            "batch_size": 16,
            "probe": {"texts": 3, "texts_per_s": {8: 40.0, 16: 50.0}},
            "seconds": 0.06,
            "texts_per_s": 50.0,
        },
        "quality": [{"model_dir": "f", "precision": "fp32", "mode": "unpack_repack", **quality}],
        "retrieval": [
            {
                "who": "sentence-transformers",
                "mode": "torch",
                "n": 2,
                "recall@1": 1.0,
                "mrr@10": 1.0,
                "mean_rank": 1.0,
            },
            {
                "who": "f",
                "mode": "unpack_repack",
                "n": 2,
                "recall@1": 0.5,
                "mrr@10": 0.75,
                "mean_rank": 1.5,
            },
        ],
        "speed": speed,
        "ratios": speed_ratios(speed, 50.0),
    }
    text = format_report(report)
    for part in (
        "avx2=yes avx512f=no avx512_vnni=?",
        "measured now, 7 s",
        "| fp32 | unpack_repack | 0.9999000 | 0.9980000 | 2.0e-03 | question (9 tokens)",
        "| fp32 unpack_repack | 0.5000 | 0.7500 |",
        "2.00x",
    ):
        assert part in text, part


def test_the_tool_imports_no_model_library_at_module_level():
    files = sorted((REPO / "tools" / "embed_quality").glob("*.py"))
    assert len(files) > 1  # the package's modules, every one checked
    top = [
        n
        for f in files
        for n in ast.parse(f.read_text()).body
        if isinstance(n, (ast.Import, ast.ImportFrom))
    ]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
    assert not [
        m
        for m in names
        if m.split(".")[0] in ("torch", "sentence_transformers", "transformers", "onnxruntime")
    ]


def test_the_command_line_parses():
    from tools.cli import build_parser

    args = build_parser().parse_args(
        [
            "embed-quality",
            "--model-dir",
            "a",
            "--model-dir",
            "b",
            "--questions",
            "40",
            "--paragraphs",
            "20",
        ]
    )
    assert args.model_dir == ["a", "b"] and args.questions == 40 and args.paragraphs == 20
    assert args.threads == 2 and args.modes == ["unpack_repack", "attention_mask", "original"]
    assert args.squad.endswith("squad-v1.1-dev.json") and not args.no_progress
