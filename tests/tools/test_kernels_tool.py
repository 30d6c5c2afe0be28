"""``python -m tools kernels``: variants parsed, built and timed on a tiny folder, the same
numbers checked."""

from __future__ import annotations

import json

import pytest

from tools.cli import main
from tools.kernels import format_kernels, kernels, parse_variant


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("plain", frozenset()),
        ("mha", frozenset({"mha"})),
        ("int8_to_float+mha", frozenset({"mha", "int8_to_float"})),
        ("plain+ort_skipln", frozenset({"ort_skipln"})),
        ("mha+no_arena+io_binding", frozenset({"mha", "no_arena", "io_binding"})),
    ],
)
def test_parse_variant(text, want):
    assert parse_variant(text) == want


def test_parse_variant_names_an_unknown_kernel():
    with pytest.raises(ValueError, match="flash"):
        parse_variant("mha+flash")


def test_kernels_on_a_tiny_folder(tiny_model_dir):
    report = kernels(
        tiny_model_dir,
        ["plain+ort_skipln", "plain", "mha"],
        layout="unpack_repack",
        samples=24,
        batches=2,
        rounds=2,
        threads=1,
    )
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["plain+ort_skipln", "plain", "mha"]
    assert rows["plain+ort_skipln"]["speed"] == 1.0
    assert rows["plain+ort_skipln"]["max_abs_diff"] == 0.0
    assert rows["mha"]["max_abs_diff"] < 1e-4  # fp32: the same numbers
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert report["batches"] == 2 and report["host"]["flags"]
    text = format_kernels(report)
    assert "| mha |" in text and "avx2=" in text
    with pytest.raises(ValueError, match="at least two"):
        kernels(tiny_model_dir, ["plain"])


def test_session_options_run_the_same_graph_to_the_same_numbers(tiny_model_dir):
    report = kernels(
        tiny_model_dir,
        ["mha", "mha+no_arena", "mha+no_mem_pattern", "mha+io_binding"],
        samples=16,
        batches=2,
        rounds=1,
        threads=1,
    )
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["mha", "mha+no_arena", "mha+no_mem_pattern", "mha+io_binding"]
    assert all(r["max_abs_diff"] == 0.0 for r in rows.values())


def test_kernels_command(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "k.json"
    argv = ["kernels", "--model-dir", str(tiny_model_dir), "--variants", "plain", "mha"]
    argv += ["--layout", "attention_mask", "--samples", "16", "--batches", "1", "--rounds", "1"]
    assert main([*argv, "--threads", "1", "--json", str(out)]) == 0
    assert "| plain | " in capsys.readouterr().out
    assert [r["variant"] for r in json.loads(out.read_text())["rows"]] == ["plain", "mha"]
