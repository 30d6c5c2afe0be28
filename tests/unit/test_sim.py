"""The ``sim`` backend: a simulated accelerator of known speed with deterministic logits."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from packing.cli import main
from packing.model.graphs import KINDS
from packing.model.manifest import Manifest
from packing.policy.attention import ATTENTION_GROUPS
from packing.runners import ModelRunner, PackRunner
from packing.runners.run_modes import BENCH_MODES, settings_backend
from packing.runners.workloads import synthetic_features
from packing.runtime import PlanExecutor
from packing.runtime.backend import load_backend
from packing.runtime.features import Features
from packing.runtime.sim import (
    GRAPH_INPUTS,
    PROFILES,
    SimBackend,
    SimProfile,
    sim_logits,
    sim_profile,
)

from factories import make_lengths

SEQ_LEN = 64  # conftest.TINY_SHAPE


def no_sleep(seconds: float) -> None:
    """Injected in place of time.sleep: the logits do not depend on it."""


@pytest.fixture(scope="module")
def requests() -> list[Features]:
    lengths = make_lengths(40, seq_len=SEQ_LEN, seed=3)
    lengths[:4] = [1, SEQ_LEN, SEQ_LEN - 1, 2]
    return synthetic_features(lengths, vocab_size=30522, seed=3)


@pytest.fixture(scope="module")
def solo(tiny_model_dir, requests):
    """Each request alone, on a dynamic-shape sim."""
    runner = ModelRunner(
        tiny_model_dir,
        batch_size=1,
        padding="longest",
        backend="sim",
        profile="fast",
        sleep=no_sleep,
    )
    return [runner.run([f])[0] for f in requests]


def assert_identical(got, ref):
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g.start_logits.dtype == np.float32 and g.end_logits.dtype == np.float32, k
        assert np.array_equal(g.start_logits, r.start_logits), k
        assert np.array_equal(g.end_logits, r.end_logits), k


def inputs_of(shape, kind: str = "original") -> dict[str, np.ndarray]:
    """Zero inputs of the graph ``kind`` whose token arrays have ``shape``."""
    tokens = {
        n: np.zeros(shape, dtype=np.int64) for n in ("input_ids", "token_type_ids", "position_ids")
    }
    if kind == "unpack_repack":
        rest = {
            f"{n}_{g}": np.zeros((1, 1), dtype=np.int64)
            for n in ("unpack_index", "segment_ids")
            for g in range(ATTENTION_GROUPS)
        }
        return {**tokens, **rest, "repack_index": np.zeros(shape, dtype=np.int64)}
    return {**tokens, "attention_mask": np.zeros(shape, dtype=np.int64)}


# ------------------------------------------------------------------ profiles


def test_profiles():
    ipu, slow, fast = PROFILES["ipu"], PROFILES["slow"], PROFILES["fast"]
    assert (ipu.tokens_per_s, ipu.overhead_s, ipu.static_shapes) == (256 * 1861, 0.0, True)
    assert (slow.tokens_per_s, slow.static_shapes) == (32768, True)
    assert slow.batch_seconds(16 * 256) == 0.125
    assert (fast.tokens_per_s, fast.overhead_s, fast.static_shapes) == (1e9, 0.0, False)
    assert sim_profile() is ipu
    custom = sim_profile("slow", tokens_per_s=1000.0, overhead_s=0.5, static_shapes=False)
    assert custom == SimProfile("slow", 1000.0, 0.5, False)


@pytest.mark.parametrize(
    "kwargs,bad",
    [
        ({"name": "gpu"}, "'gpu'"),
        ({"tokens_per_s": 0.0}, "got 0.0"),
        ({"tokens_per_s": -5.0}, "got -5.0"),
        ({"tokens_per_s": math.inf}, "got inf"),
        ({"tokens_per_s": math.nan}, "got nan"),
        ({"overhead_s": -0.25}, "got -0.25"),
        ({"overhead_s": math.nan}, "got nan"),
        ({"static_shapes": "yes"}, "got 'yes'"),
    ],
)
def test_bad_profiles_name_the_bad_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        sim_profile(**kwargs)


def test_unknown_profile_lists_the_names(tiny_model_dir):
    with pytest.raises(ValueError, match=r"unknown sim profile 'gpu'.*fast.*ipu.*slow"):
        SimBackend(tiny_model_dir / "original.onnx", profile="gpu")


def test_graph_kinds_and_inputs_match_the_real_graphs(tiny_model_dir):
    assert set(GRAPH_INPUTS) == set(KINDS)
    m = Manifest.read(tiny_model_dir)
    for kind in KINDS:
        graph = onnx.load(str(tiny_model_dir / m.graphs[kind]), load_external_data=False)
        assert {i.name for i in graph.graph.input} == set(GRAPH_INPUTS[kind]), kind


# ------------------------------------------------------------------ backend


def test_registered_and_ignores_real_backend_options(tiny_model_dir):
    be = load_backend(
        "sim",
        tiny_model_dir / "unpack_repack.onnx",
        device="cpu",
        intra_op_threads=2,
        inter_op_threads=1,
    )
    assert isinstance(be, SimBackend) and be.static_shapes and be.kind == "unpack_repack"
    assert be.describe() == "sim ipu (static shapes, 476416 token slots/s) unpack_repack"
    fast = load_backend("sim", tiny_model_dir / "original.onnx", profile="fast", overhead_s=0.002)
    assert not fast.static_shapes
    assert (
        fast.describe()
        == "sim fast (dynamic shapes, 1000000000 token slots/s, 2 ms per batch) original"
    )


def test_construction_errors(tiny_model_dir, tmp_path):
    with pytest.raises(TypeError, match="intra_op_thread"):
        SimBackend(tiny_model_dir / "original.onnx", intra_op_thread=2)  # misspelt
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SimBackend(tmp_path / "nowhere" / "original.onnx")
    with pytest.raises(ValueError, match="dense.onnx"):
        SimBackend(tmp_path / "dense.onnx")
    SimBackend(tmp_path / "original.onnx")  # the graph itself need not exist
    with pytest.raises(ValueError, match="tokens_per_s.*got -1"):
        SimBackend(tmp_path / "original.onnx", tokens_per_s=-1)


def test_bad_inputs_are_refused(tmp_path):
    be = SimBackend(tmp_path / "unpack_repack.onnx", profile="fast", sleep=no_sleep)
    with pytest.raises(ValueError, match="missing inputs.*repack_index"):
        be.run({k: v for k, v in inputs_of((8,), "unpack_repack").items() if k != "repack_index"})
    with pytest.raises(ValueError, match="1-D"):
        be.run(inputs_of((2, 8), "unpack_repack"))
    rows = SimBackend(tmp_path / "attention_mask.onnx", profile="fast", sleep=no_sleep)
    bad = inputs_of((2, 8))
    bad["position_ids"] = np.zeros((2, 7), dtype=np.int64)
    with pytest.raises(ValueError, match="position_ids has shape"):
        rows.run(bad)
    assert be.batches == 0 and rows.batches == 0


def test_device_time_of_a_padded_ipu_batch(tmp_path):
    slept = []
    be = SimBackend(tmp_path / "original.onnx", profile="ipu", sleep=slept.append)
    inputs = inputs_of((16, 256))
    assert be.device_seconds(inputs) == pytest.approx(16 / 1861, rel=1e-12)
    out = be.run(inputs)
    be.run(inputs)
    assert slept == [be.device_seconds(inputs)] * 2
    assert be.batches == 2 and be.device_seconds_total == pytest.approx(2 * 16 / 1861, rel=1e-12)
    assert out["start_logits"].shape == (16, 256) and out["end_logits"].dtype == np.float32


def test_device_time_is_proportional_to_input_size(tmp_path):
    slept = []
    be = SimBackend(
        tmp_path / "unpack_repack.onnx", profile="fast", tokens_per_s=1000.0, sleep=slept.append
    )
    for n in (10, 20, 400):
        be.run(inputs_of((n,), "unpack_repack"))
    assert slept == pytest.approx([0.01, 0.02, 0.4], rel=1e-12)
    with_overhead = SimBackend(
        tmp_path / "original.onnx",
        profile="fast",
        tokens_per_s=1000.0,
        overhead_s=0.005,
        sleep=no_sleep,
    )
    assert with_overhead.device_seconds(inputs_of((2, 50))) == pytest.approx(0.105, rel=1e-12)


def test_sim_logits_are_a_function_of_id_position_and_type():
    ids = np.array([101, 2054, 2054, 2054, 2054])
    pos = np.array([0, 1, 1, 2, 1])
    types = np.array([0, 0, 0, 0, 1])
    start, end = sim_logits(ids, pos, types)
    assert start.dtype == end.dtype == np.float32 and start.shape == (5,)
    assert start[1] == start[2] and end[1] == end[2]  # same (id, pos, type)
    assert start[1] != start[3] and start[1] != start[4]  # position and type count
    assert not np.array_equal(start, end)
    assert (start >= -4).all() and (start < 4).all() and (end >= -4).all() and (end < 4).all()
    again = sim_logits(ids.reshape(1, 5), pos.reshape(1, 5), types.reshape(1, 5))
    assert np.array_equal(again[0][0], start) and np.array_equal(again[1][0], end)


# ------------------------------------------------------------------ through the runners


LAYOUTS = [
    ("original", "fast"),
    ("original", "ipu"),
    ("attention_mask", "fast"),
    ("attention_mask", "ipu"),
    ("unpack_repack", "fast"),
    ("unpack_repack", "slow"),
]


def runner_for(model_dir, layout: str, profile: str, **options):
    """A runner of ``layout`` on the sim; packed ones with the full batch as their token budget
    (pinned: not a budget calibrated on this host)."""
    if layout == "original":
        return ModelRunner(model_dir, backend="sim", profile=profile, **options)
    return PackRunner(
        model_dir, mode=layout, backend="sim", profile=profile, max_tokens=None, **options
    )


@pytest.mark.parametrize("layout,profile", LAYOUTS)
def test_packed_logits_are_bit_identical_to_solo(tiny_model_dir, requests, solo, layout, profile):
    slept = []
    runner = runner_for(tiny_model_dir, layout, profile, sleep=slept.append)
    got = runner.run(requests)
    assert_identical(got, solo)
    assert runner.stats.batches < len(requests) / 2  # several requests per batch
    be = runner.backend
    assert be.batches == runner.stats.batches == len(slept)
    assert be.device_seconds_total == pytest.approx(sum(slept))
    if be.static_shapes and layout != "original":  # packed batches padded to the full shape
        full = 4 * SEQ_LEN / be.profile.tokens_per_s
        assert slept == pytest.approx([full] * len(slept))


def test_online_packing_is_bit_identical_to_solo(tiny_model_dir, requests, solo):
    with PackRunner(
        tiny_model_dir,
        mode="attention_mask",
        batch_wait_timeout_s=0.01,
        backend="sim",
        profile="ipu",
        max_tokens=None,
    ) as runner:  # pinned: the full batch
        got = [f.result(timeout=30) for f in runner.submit_many(requests)]
    assert_identical(got, solo)


def test_solo_logits_follow_the_formula_and_differ_between_requests(requests, solo):
    for f, s in zip(requests, solo):
        start, end = sim_logits(f.input_ids, np.arange(len(f)), f.token_type_ids)
        assert np.array_equal(s.start_logits, start) and np.array_equal(s.end_logits, end)
    compared = 0
    for i in range(len(solo)):
        for j in range(i + 1, len(solo)):
            a, b = requests[i], requests[j]
            if len(a) == len(b) and not (
                np.array_equal(a.input_ids, b.input_ids)
                and np.array_equal(a.token_type_ids, b.token_type_ids)
            ):
                compared += 1
                assert not np.array_equal(solo[i].start_logits, solo[j].start_logits), (i, j)
                assert not np.array_equal(solo[i].end_logits, solo[j].end_logits), (i, j)
    assert compared >= 5  # the workload has several different requests of equal length


@pytest.mark.parametrize("layout", ["original", "attention_mask", "unpack_repack"])
@pytest.mark.parametrize("profile", ["fast", "ipu"])
def test_output_shapes_match_the_onnx_graphs(tiny_model_dir, requests, layout, profile):
    """One plan of each layout, its inputs built as the sim runner builds them (static or
    dynamic), run on both the sim and onnxruntime: same output names, shapes and dtypes."""
    runner = runner_for(tiny_model_dir, layout, profile, sleep=no_sleep)
    lengths = np.array([len(f) for f in requests])
    plan = runner.plans(lengths)[0]
    inputs, _ = runner.executor.inputs(plan, [requests[i] for i in plan.seq_ids])
    m = Manifest.read(tiny_model_dir)
    ort = load_backend("onnxruntime", tiny_model_dir / m.graphs[layout], intra_op_threads=1)
    want = ort.run(inputs)
    got = runner.backend.run(inputs)
    assert set(got) == set(want) == {"start_logits", "end_logits"}
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype, name


def test_executor_pads_packed_batches_for_a_static_profile(tiny_model_dir, requests):
    m = Manifest.read(tiny_model_dir)
    be = SimBackend(tiny_model_dir / "unpack_repack.onnx", profile="slow", sleep=no_sleep)
    runner = PackRunner(
        tiny_model_dir, mode="unpack_repack", backend="sim", profile="fast", max_tokens=None
    )  # the full batch, not a calibrated budget
    plan = runner.plans(np.array([len(f) for f in requests[:3]]))[0]
    inputs, slots = PlanExecutor(be, m).inputs(plan, requests[:3])
    assert inputs["input_ids"].shape == (m.batch_size * m.seq_len,) and slots == 4 * SEQ_LEN


# ------------------------------------------------------------------ bench and CLI


def test_backend_kwargs_pass_threads_to_onnxruntime_only():
    assert settings_backend({"threads": 2, "backend": "onnxruntime", "backend_options": {}}) == {
        "backend": "onnxruntime",
        "intra_op_threads": 2,
    }
    assert settings_backend(
        {"threads": 2, "backend": "sim", "backend_options": {"profile": "fast"}}
    ) == {"backend": "sim", "profile": "fast"}


def test_bench_on_the_fast_sim(tiny_model_dir, tmp_path, capsys):
    js = tmp_path / "b.json"
    modes = ["original", "online_first_fit", "offline_unpack_repack"]
    assert (
        main(
            [
                "bench",
                "--model-dir",
                str(tiny_model_dir),
                "--backend",
                "sim",
                "--sim-profile",
                "fast",
                "--samples",
                "32",
                "--modes",
                *modes,
                "--no-progress",
                "--threads",
                "1",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "backend sim fast (dynamic shapes" in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0][1:] for line in lines] == [BENCH_MODES[m] for m in modes]
    assert all(" Throughput: " in line and line.endswith(" ms") for line in lines)
    report = json.loads(js.read_text())
    assert report["machine"]["backend"].startswith("sim fast (dynamic shapes")
    assert report["settings"]["backend"] == "sim"
    assert report["settings"]["backend_options"] == {"profile": "fast"}
    for m in report["modes"]:
        assert m["skipped"] is None and m["max_abs_diff"] == 0.0, m


def test_bench_on_a_static_sim_skips_what_cannot_run(tiny_model_dir, tmp_path, capsys):
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
                "16",
                "--no-progress",
                "--modes",
                "original",
                "offline_attention_mask",
                "dynamic_padding",
                "hf_pipeline",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "backend sim ipu (static shapes, 10000000 token slots/s) original" in out
    assert "[Dynamic Padding] skipped: needs dynamic shapes" in out
    assert "[HF Pipeline] skipped: runs transformers in torch, not on the sim backend" in out
    by = {m["key"]: m for m in json.loads(js.read_text())["modes"]}
    assert by["original"]["max_abs_diff"] == by["offline_attention_mask"]["max_abs_diff"] == 0.0
    assert by["offline_attention_mask"]["skipped"] is None


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sim-profile", "fast"], "--sim-profile needs --backend sim"),
        (["--backend", "sim", "--sim-profile", "gpu"], "unknown sim profile 'gpu'"),
    ],
)
def test_bench_backend_flag_errors_are_one_line(tiny_model_dir, capsys, args, message):
    assert main(["bench", "--model-dir", str(tiny_model_dir), "--samples", "4", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
