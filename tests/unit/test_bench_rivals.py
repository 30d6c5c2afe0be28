"""Rivals of packing in the bench: the online sorted-dynamic-padding server, the batch size
probe, the new modes end to end, and SQuAD lengths at seq 384."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from packing.cli import main
from packing.model.manifest import Manifest
from packing.runners import ModelRunner
from packing.runners.rivals import SortedPaddingServer, batch_size_candidates, probe_batch_size
from packing.runners.run_modes import BENCH_MODES
from packing.runners.workloads import seed_lengths, squad_features, synthetic_features
from packing.runtime import open_graph
from packing.runtime.faults import FaultInjectingBackend, InjectedFault

NEW_MODES = ["best_sorted_dynamic_padding", "no_batching", "online_sorted_dynamic_padding"]


@pytest.fixture(scope="module")
def requests(tiny_model_dir):
    return synthetic_features(seed_lengths(30, Manifest.read(tiny_model_dir).seq_len), 30522)


@pytest.fixture(scope="module")
def solo(tiny_model_dir, requests):
    return ModelRunner(tiny_model_dir, batch_size=1, padding="longest").run(requests)


def test_online_sorted_padding_answers_each_request_once_as_solo(tiny_model_dir, requests, solo):
    with SortedPaddingServer(
        tiny_model_dir, batch_size=2, max_valid_num=8, timeout_s=0.005
    ) as server:
        futures: list = [None] * len(requests)

        def client(k):  # three clients submitting interleaved requests
            for i in range(k, len(requests), 3):
                futures[i] = server.submit(requests[i])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = [f.result(timeout=30) for f in futures]
    assert server.stats.sequences == len(requests)
    assert server.stats.real_tokens == sum(len(r) for r in requests)
    assert server.stats.batches >= len(requests) // 2  # sub-batches of 2
    for got, ref in zip(results, solo):
        assert got.start_logits.shape == ref.start_logits.shape
        assert np.abs(got.start_logits - ref.start_logits).max() <= 1e-4
        assert np.abs(got.end_logits - ref.end_logits).max() <= 1e-4
    with pytest.raises(RuntimeError, match="closed"):
        server.submit(requests[0])


def test_online_sorted_padding_fails_every_waiting_request(tiny_model_dir, requests, tmp_path):
    trigger = tmp_path / "fail"
    trigger.touch()
    fault = FaultInjectingBackend(
        open_graph(tiny_model_dir, "original", "onnxruntime", {})[1], trigger
    )
    server = SortedPaddingServer(
        tiny_model_dir, batch_size=4, max_valid_num=8, timeout_s=0.01, backend=fault
    )
    assert server.runner.backend is fault
    futures = [server.submit(r) for r in requests[:12]]
    for f in futures:
        with pytest.raises(InjectedFault):
            f.result(timeout=30)
    trigger.unlink()  # the device is back: the server still answers
    assert server.submit(requests[0]).result(timeout=30).start_logits.shape == (len(requests[0]),)
    server.close()
    # one failed model call per collected batch (12 requests, at most 8 a batch)
    assert server.stats.failed_batches >= 2 and server.stats.sequences == 1


def test_close_answers_what_is_still_queued(tiny_model_dir, requests):
    server = SortedPaddingServer(tiny_model_dir, batch_size=4, max_valid_num=100, timeout_s=60)
    futures = [server.submit(r) for r in requests[:5]]
    assert not any(f.done() for f in futures)  # waiting for more requests or the timeout
    server.close()
    assert all(f.done() and f.exception() is None for f in futures)
    server.close()  # idempotent


def test_probe_picks_one_of_its_candidates(tiny_model_dir, requests):
    assert batch_size_candidates(4) == [2, 4]
    assert batch_size_candidates(16) == [2, 4, 8, 16]
    assert batch_size_candidates(12) == [2, 4, 8, 12]
    assert batch_size_candidates(1) == [1]
    runner = ModelRunner(tiny_model_dir, padding="longest", sort=True)
    best, rates = probe_batch_size(runner, requests, [1, 2, 4], samples=12)
    assert best in (1, 2, 4) and sorted(rates) == [1, 2, 4]
    assert all(v > 0 for v in rates.values()) and rates[best] == max(rates.values())
    assert runner.batch_size == Manifest.read(tiny_model_dir).batch_size  # restored
    with pytest.raises(ValueError):
        probe_batch_size(runner, requests, [])


def test_bench_runs_the_rivals_and_names_the_best(tiny_model_dir, tmp_path, capsys):
    js = tmp_path / "b.json"
    modes = ["original", "online_first_fit", "sorted_dynamic_padding", *NEW_MODES]
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--samples",
                "24",
                "--modes",
                *modes,
                "--no-progress",
                "--threads",
                "1",
                "--concurrency",
                "8",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert [line.split("]")[0][1:] for line in out.splitlines() if line.startswith("[")] == [
        BENCH_MODES[m] for m in modes
    ]
    assert "lengths mean " in out and ", median " in out and ", min " in out
    assert "dense MatMul limit (CPUExecutionProvider, 1 threads, H 32, I 64): 128 rows" in out
    assert "Sorted Dynamic Padding batch size probe (24 requests): bs 2 " in out
    report = json.loads(js.read_text())
    assert report["lengths"]["min"] >= 1 and report["lengths"]["max"] <= 64
    assert [r["rows"] for r in report["limit"]["rates"]] == [128, 256]
    assert report["limit"]["best_gflops"] > 0 and report["limit"]["skipped"] is None
    probe = report["sdp_probe"]
    assert probe["candidates"] == [2, 4] and probe["best"] in (2, 4)
    assert sorted(probe["throughput"]) == ["2", "4"]
    by = {m["key"]: m for m in report["modes"]}
    for m in by.values():
        assert m["skipped"] is None and m["max_abs_diff"] <= 1e-4, m
        assert m["useful_gflops"] > 0 and m["limit_ratio"] > 0, m
    assert by["best_sorted_dynamic_padding"]["setting"] == f"bs {probe['best']}"
    assert by["online_sorted_dynamic_padding"]["setting"] == f"bs {probe['best']}"
    assert by["online_sorted_dynamic_padding"]["p99_ms"] > 0
    assert by["no_batching"]["setting"] == "bs 1" and by["no_batching"]["batches"] == 24
    assert by["no_batching"]["efficiency"] == 1.0
    s = report["summary"]
    assert s["packed"] == "online_first_fit" and s["rival"] in modes
    assert s["ratio"] == pytest.approx(
        by["online_first_fit"]["throughput"] / by[s["rival"]]["throughput"]
    )
    assert f"best packed online mode vs best rival: {s['ratio']:.2f}x = " in out
    assert "| mode | setting | samples/s |" in out


def test_bench_on_a_static_sim_skips_the_rivals_and_the_limit(tiny_model_dir, tmp_path, capsys):
    js = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--backend",
                "sim",
                "--sim-tokens-per-s",
                "1e7",
                "--samples",
                "8",
                "--no-progress",
                "--modes",
                "original",
                *NEW_MODES,
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for m in NEW_MODES:
        assert f"[{BENCH_MODES[m]}] skipped: needs dynamic shapes" in out
    assert "dense MatMul limit: the device is simulated" in out
    assert "batch size probe" not in out and "best packed online" not in out
    report = json.loads(js.read_text())
    assert report["sdp_probe"] is None and report["limit"]["skipped"]
    original = report["modes"][0]
    assert original["useful_gflops"] > 0 and original["limit_ratio"] is None


def test_no_limit_flag(tiny_model_dir, tmp_path, capsys):
    js = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--samples",
                "4",
                "--modes",
                "no_batching",
                "--no-progress",
                "--no-limit",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    assert "dense MatMul limit: not measured (--no-limit)" in capsys.readouterr().out
    report = json.loads(js.read_text())
    assert report["limit"] == {"skipped": "not measured (--no-limit)"}
    assert report["modes"][0]["limit_ratio"] is None


def test_squad_workload_at_seq_384(tmp_path_factory, squad_path):
    """A model prepared with --seq-len 384 takes SQuAD features truncated to 384 tokens."""
    out = tmp_path_factory.mktemp("m384") / "model"
    assert (
        main(
            [
                "prepare",
                "--model",
                "random:tiny",
                "--out",
                str(out),
                "--seq-len",
                "384",
                "--batch-size",
                "2",
                "--max-valid-num",
                "4",
                "--no-check",
            ]
        )
        == 0
    )
    assert Manifest.read(out).seq_len == 384
    data = squad_features(squad_path, out, 200, 384)
    lengths = [len(f) for f in data]
    assert max(lengths) <= 384 and max(lengths) > 256  # long contexts fill the 384 window
    logits = ModelRunner(out, padding="longest").run(data[:4])
    assert [len(x.start_logits) for x in logits] == lengths[:4]
