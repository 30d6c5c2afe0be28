"""The packed-bert command line: prepare and bench on random:tiny."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packing.cli import main
from packing.model.manifest import Manifest
from packing.runners.run_modes import BENCH_MODES
from packing.runners.workloads import load_workload, seed_lengths, squad_features

from factories import make_squad_file


def test_prepare_writes_a_checked_folder(tmp_path, capsys):
    out = tmp_path / "m"
    assert (
        main(
            [
                "prepare",
                "--model",
                "random:tiny",
                "--out",
                str(out),
                "--seq-len",
                "32",
                "--batch-size",
                "2",
                "--max-valid-num",
                "5",
            ]
        )
        == 0
    )
    m = Manifest.read(out)
    assert (m.seq_len, m.batch_size, m.max_valid_num, m.source) == (32, 2, 5, "random:tiny")
    assert set(m.graphs) == {"original", "attention_mask", "unpack_repack"}
    assert all(v <= 1e-4 for v in m.max_abs_diff.values()) and len(m.max_abs_diff) == 2
    m.verify_files(out)
    assert "max abs logit diff" in capsys.readouterr().out
    (out / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="checksum"):
        m.verify_files(out)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "random:huge"], "unknown random model"),
        (["--model", "random:tiny", "--seq-len", "1"], "--seq-len must be >= 2"),
        (["--model", "random:tiny", "--seq-len", "4096"], "max_position_embeddings"),
        (["--model", "/nonexistent/folder/or/hub-id"], "could not fetch"),
    ],
)
def test_prepare_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["prepare", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bench_prints_every_mode_in_order(tiny_model_dir, tmp_path, capsys):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--samples",
                "40",
                "--json",
                str(js),
                "--plot",
                str(png),
                "--no-progress",
                "--concurrency",
                "12",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    labels = [line.split("]")[0][1:] for line in out.splitlines() if line.startswith("[")]
    assert labels == list(BENCH_MODES.values())
    for line in out.splitlines():
        if line.startswith("[") and "skipped" not in line:
            assert (
                " Throughput: " in line and " samples/s, Latency: " in line and line.endswith(" ms")
            )
    report = json.loads(js.read_text())
    assert [m["key"] for m in report["modes"]] == list(BENCH_MODES)
    for m in report["modes"]:
        assert m["skipped"] is None, m
        assert m["max_abs_diff"] <= 1e-4, m
        assert 0 < m["efficiency"] <= 1
    by = {m["key"]: m for m in report["modes"]}
    assert by["original"]["speedup"] == 1.0
    assert by["offline_unpack_repack"]["efficiency"] == 1.0
    assert by["offline_attention_mask"]["efficiency"] > by["original"]["efficiency"]
    assert by["online_first_fit"]["p99_ms"] >= by["online_first_fit"]["p50_ms"] > 0
    assert report["ideal_speedup"] > 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_budget_and_attention_groups_flags(tiny_model_dir, tmp_path, capsys):
    """--max-tokens pins the packed modes' budget (full = batch_size x seq_len) and
    --attention-groups caps the groups; both are printed and reach the runners."""
    js = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--samples",
                "24",
                "--no-progress",
                "--no-limit",
                "--modes",
                "offline_unpack_repack",
                "--max-tokens",
                "128",
                "--attention-groups",
                "1",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "packed modes: token budget 128 (pinned), attention groups <= 1" in out
    report = json.loads(js.read_text())
    assert report["settings"]["max_tokens"] == 128 and report["settings"]["attention_groups"] == 1
    assert report["modes"][0]["batches"] >= 24 * 20 // 128  # batches of at most 128 tokens
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--samples",
                "8",
                "--no-progress",
                "--no-limit",
                "--modes",
                "offline_unpack_repack",
                "--max-tokens",
                "full",
            ]
        )
        == 0
    )
    assert "token budget 256 (full batch)" in capsys.readouterr().out
    for bad in (["--max-tokens", "lots"], ["--attention-groups", "5"]):
        with pytest.raises(SystemExit):
            main(["bench", "--model-dir", str(tiny_model_dir), *bad])


def test_bench_rejects_bad_workload(tiny_model_dir, capsys):
    assert main(["bench", "--model-dir", str(tiny_model_dir), "--workload", "zipf"]) == 2
    assert "unknown workload" in capsys.readouterr().err


def test_seed_workload_is_the_spec_distribution():
    lengths = seed_lengths(20000, 256)
    assert lengths.min() == 1 and lengths.max() == 256
    assert abs(np.median(lengths) - 128) <= 3
    assert np.array_equal(lengths, seed_lengths(20000, 256))


def test_short_workload_is_short_heavy(tiny_model_dir):
    from packing.runners.workloads import short_lengths

    lengths = short_lengths(20000, 256)
    assert lengths.min() == 8 and lengths.max() == 64
    assert abs(np.median(lengths) - 20) <= 1 and (lengths < 25).mean() > 0.6
    assert np.array_equal(lengths, short_lengths(20000, 256))
    assert short_lengths(100, 32).max() <= 32  # never past the model's seq_len
    data = load_workload("short", 50, tiny_model_dir, 64, 30522)
    assert [len(x) for x in data] == short_lengths(50, 64).tolist()


def test_lengths_workload(tiny_model_dir, tmp_path):
    f = tmp_path / "l.json"
    f.write_text("[3, 10, 64]")
    data = load_workload(f"lengths:{f}", 7, tiny_model_dir, 64, 30522)
    assert [len(x) for x in data] == [3, 10, 64, 3, 10, 64, 3]
    f.write_text("[3, 65]")
    with pytest.raises(ValueError, match="length 65 at index 1"):
        load_workload(f"lengths:{f}", 2, tiny_model_dir, 64, 30522)


def test_squad_workload_tokenizes_real_text(tiny_model_dir, squad_path):
    data = squad_features(squad_path, tiny_model_dir, 50, 64)
    assert len(data) == 50
    assert all(2 < len(f) <= 64 and f.input_ids[0] == 101 and f.input_ids[-1] == 102 for f in data)
    assert all(f.token_type_ids[-1] == 1 for f in data)


def test_efficiency_command(capsys):
    assert main(["efficiency", "--samples", "2000"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("2000 seed sequences:")
    assert float(line.rsplit(" ", 1)[1]) >= 0.99


def test_eval_scores_every_mode_on_the_same_windows(tiny_model_dir, tmp_path, capsys):
    squad, js = make_squad_file(tmp_path), tmp_path / "eval.json"  # a long context among them
    modes = ["original", "offline_unpack_repack", "online_first_fit"]
    assert (
        main(
            [
                "eval",
                "--model-dir",
                str(tiny_model_dir),
                "--squad",
                str(squad),
                "--split",
                "all",
                "--modes",
                *modes,
                "--json",
                str(js),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("4 questions (all split of ") and f"wrote {js}" in out
    report = json.loads(js.read_text())
    assert [r["key"] for r in report] == modes
    for r in report:
        assert 0 <= r["exact_match"] <= r["f1"] <= 100 and "predictions" not in r
        assert r["label"] in out
    # random weights, but every packed mode runs the windows the padded one runs
    assert all(r["differ_from_original"] == 0 and r["max_abs_diff"] <= 1e-4 for r in report[1:])


def test_default_flags_are_the_code_defaults():
    """Each default is written once: the flags take theirs from the code they configure."""
    from packing.cli import build_parser
    from packing.policy.config import DEFAULT_MODE
    from packing.policy.shapes import DEFAULT_SHAPES
    from packing.train.loop import TrainConfig

    parser = build_parser()
    train = vars(parser.parse_args(["train", "--squad", "dev.json"]))
    want = TrainConfig(squad_path="dev.json")
    for flag in ("epochs", "max_steps", "seq_len", "seqs_per_step", "lr", "rank", "seed", "layout"):
        assert train[flag] == getattr(want, flag), flag
    for command in (["prepare", "--model", "random:tiny", "--out", "x"], ["efficiency"]):
        got = vars(parser.parse_args(command))
        assert (got["seq_len"], got["batch_size"], got["max_valid_num"]) == (
            DEFAULT_SHAPES.seq_len,
            DEFAULT_SHAPES.batch_size,
            DEFAULT_SHAPES.max_valid_num,
        )
    batch = parser.parse_args(["batch", "--input", "a", "--output", "b", "--model-dir", "m"])
    assert batch.mode == DEFAULT_MODE
