"""Token budget calibration: the measured curve, the rule, the cache, and who uses it.

Each test works on its own copy of the tiny model folder (seq_len 64, batch_size 4: budgets
64, 128, 256), so the calibration.json it writes never reaches another test's runners.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from packing.cli import main
from packing.model.manifest import Manifest
from packing.model.prepared import PreparedModel
from packing.runners import PackRunner
from packing.runners.workloads import synthetic_features
from packing.runtime.calibrate import (
    CACHE_FILE,
    Calibration,
    NotCalibratable,
    budgets_for,
    calibrate,
    fingerprint,
    load_or_calibrate,
    pick_budget,
    resolve_max_tokens,
)
from packing.runtime.calibrate import cache as cache_mod
from packing.runtime.calibrate import key as key_mod
from packing.runtime.calibrate import measure as measure_mod
from packing.runtime.calibrate.curve import served_rates
from packing.runtime.calibrate.load import MAX_OTHERS_LOAD, OthersLoad, host_busy_seconds

FAST = {"profile": "fast"}  # sim: 1e9 token slots/s, so host time alone: quick to measure
QUICK = {"min_time_s": 0.02, "min_repeats": 1, "rounds": 1, "warmup": 0}
KNEE = {64: 100.0, 128: 190.0, 256: 195.0}  # flattens after 128


@pytest.fixture()
def model(tiny_model_dir, tmp_path):
    """A private copy of the tiny prepared folder."""
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns(CACHE_FILE, ".*"))
    return out


@pytest.fixture()
def fake_curve(monkeypatch):
    """``fake_curve({budget: tokens/s})``: measuring returns that curve without running
    anything; ``.calls`` counts the budgets measured."""

    class Fake:
        calls = 0
        curve = KNEE

        def __call__(self, curve):
            self.curve = curve
            return self

        def measure(self, executor, plans, features, **kw):
            self.calls += 1
            return [self.curve[plans[0].capacity]]

    fake = Fake()
    monkeypatch.setattr(measure_mod, "measure_budget", fake.measure)
    return fake


@pytest.fixture(autouse=True)
def host_load(monkeypatch):
    """The host's other load while calibrating: none unless a test sets ``.share_of_others``
    (the real host's load would make caching depend on what else runs beside the suite)."""

    class Load(OthersLoad):
        share_of_others = 0.0

        def __init__(self):
            t = iter([0.0, 10.0])
            busy = iter([0.0, 2 * 10.0 * Load.share_of_others])
            super().__init__(
                busy=lambda: next(busy), own=lambda: 0.0, clock=lambda: next(t), cores=2
            )

    monkeypatch.setattr(measure_mod, "OthersLoad", Load)
    return Load


@pytest.fixture()
def no_measuring(monkeypatch):
    """Any measurement fails the test: proves a result came from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("measured although the cache should have answered")

    monkeypatch.setattr(measure_mod, "measure_budget", refuse)


# ------------------------------------------------------------------------ the rule


def test_budgets_double_from_seq_len_up_to_the_full_batch():
    assert budgets_for(64, 4) == [64, 128, 256]
    assert budgets_for(256, 16) == [256, 512, 1024, 2048, 4096]
    assert budgets_for(256, 12) == [256, 512, 1024, 2048, 3072]
    assert budgets_for(8, 1) == [8]


def test_pick_budget_takes_the_smallest_budget_near_the_best():
    budgets = [256, 512, 1024, 2048, 4096]
    assert pick_budget(budgets, [50, 90, 100, 99, 80]) == 1024  # CPU: a peak, then a fall
    assert pick_budget(budgets, [50, 96, 100, 99, 98]) == 512  # flat from 512: 0.96 >= 0.95
    assert pick_budget(budgets, [10, 20, 40, 80, 160]) == 4096  # keeps rising: full batch
    assert pick_budget(budgets, [50, 96, 100, 99, 98], threshold=1.0) == 1024
    assert pick_budget(budgets, [50, 96, 100, 99, 98], threshold=0.5) == 256
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=repr(bad)):
            pick_budget(budgets, [1, 2, 3, 4, 5], threshold=bad)
    with pytest.raises(ValueError, match="one throughput per budget"):
        pick_budget(budgets, [1, 2])


# ------------------------------------------------------------------------ measuring


def test_calibration_on_onnxruntime_picks_a_measured_budget(model):
    cal = calibrate(model, "onnxruntime", {"intra_op_threads": 1}, progress=False, **QUICK)
    assert cal.budgets == (64, 128, 256)
    assert cal.max_tokens in cal.budgets
    assert all(r > 0 for r in cal.tokens_per_s)
    chosen = cal.tokens_per_s[cal.budgets.index(cal.max_tokens)]
    assert chosen >= 0.95 * max(cal.tokens_per_s)
    assert cal.fingerprint == fingerprint(model, "onnxruntime", {"intra_op_threads": 1})[0]
    assert "onnxruntime" in cal.backend and cal.seconds > 0 and not cal.from_cache


class VirtualClock:
    """Seconds that pass only when the sim's injected ``sleep`` says a batch took them."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_sim_with_a_fixed_batch_cost_keeps_the_full_batch(model):
    # 5 ms per batch whatever its size (1e9 tokens/s), on a virtual clock: each batch's rate
    # is exactly its real tokens / (5 ms + its tokens / 1e9), so it grows with the budget.
    clock = VirtualClock()
    options = {"profile": "fast", "overhead_s": 0.005, "sleep": clock.sleep}
    cal = calibrate(model, "sim", options, progress=False, clock=clock, **QUICK)
    assert cal.max_tokens == 256 == cal.budgets[-1] and cal.fingerprint == ""
    ratios = np.array(cal.tokens_per_s) / max(cal.tokens_per_s)
    assert ratios[0] < ratios[1] < 0.8  # about 1/4, 1/2, 1 (times each budget's fill)
    assert clock.now >= 0.02 * 3  # every budget ran its min_time_s of virtual time


def test_a_flattening_curve_picks_the_knee(model, fake_curve):
    fake_curve({64: 100.0, 128: 190.0, 256: 195.0})
    cal = calibrate(model, "sim", FAST, progress=False)
    assert (cal.budgets, cal.tokens_per_s) == ((64, 128, 256), (100.0, 190.0, 195.0))
    assert cal.max_tokens == 128 and cal.threshold == 0.95 and "0.95" in cal.rule
    assert calibrate(model, "sim", FAST, progress=False, threshold=0.99).max_tokens == 256
    assert fake_curve.calls == 2 * 3 * 3  # two calibrations, 3 rounds of 3 budgets


def test_budgets_outside_the_model_are_refused(model):
    with pytest.raises(ValueError, match="512"):
        calibrate(model, "sim", FAST, budgets=[64, 512], progress=False)


# ---------------------------------------------------------------------------- cache


def test_the_second_call_reads_the_cache(model, fake_curve, monkeypatch):
    first = load_or_calibrate(model, "sim", FAST, progress=False)
    assert not first.from_cache and first.max_tokens == 128
    entries = json.loads((model / CACHE_FILE).read_text())
    assert list(entries) == [first.fingerprint]
    assert entries[first.fingerprint]["max_tokens"] == 128
    assert entries[first.fingerprint]["facts"]["backend"] == "sim"

    def refuse(*args, **kwargs):
        raise AssertionError("measured although the cache should have answered")

    monkeypatch.setattr(measure_mod, "measure_budget", refuse)
    again = load_or_calibrate(model, "sim", {"profile": "fast", "intra_op_threads": 3})
    assert again.from_cache and again == first  # the sim ignores intra_op_threads
    # Another threshold re-picks from the stored curve, still without measuring.
    assert load_or_calibrate(model, "sim", FAST, threshold=0.99).max_tokens == 256
    with pytest.raises(AssertionError, match="measured"):  # force always measures
        load_or_calibrate(model, "sim", FAST, force=True)


def test_a_changed_fingerprint_measures_again(model, fake_curve):
    keys = {
        fingerprint(model, backend, opts)[0]
        for backend, opts in [
            ("onnxruntime", {}),
            ("onnxruntime", {"intra_op_threads": 1}),
            ("onnxruntime", {"intra_op_threads": os.cpu_count() + 1}),
            ("sim", FAST),
            ("sim", {"profile": "slow"}),
            ("sim", {"profile": "fast", "overhead_s": 0.001}),
        ]
    }
    assert len(keys) == 6
    # Same device spelt differently: same key.
    import onnxruntime as ort

    here = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    assert (
        fingerprint(model, "onnxruntime", {"device": "auto"})[0]
        == fingerprint(model, "onnxruntime", {"device": here})[0]
        == fingerprint(model, "onnxruntime")[0]
    )
    assert (
        fingerprint(model, "onnxruntime", {"intra_op_threads": os.cpu_count()})[0]
        == fingerprint(model, "onnxruntime")[0]
    )  # None is one thread per core
    assert (
        fingerprint(model, "sim", {"profile": "slow"})[0]
        == fingerprint(model, "sim", {"profile": "slow", "tokens_per_s": 32768.0})[0]
    )

    load_or_calibrate(model, "sim", FAST, progress=False)
    assert fake_curve.calls == 9
    fake_curve({64: 10.0, 128: 20.0, 256: 40.0})
    slow = load_or_calibrate(model, "sim", {"profile": "slow"}, progress=False)
    assert fake_curve.calls == 18 and slow.max_tokens == 256 and not slow.from_cache
    assert len(json.loads((model / CACHE_FILE).read_text())) == 2  # both kept
    assert load_or_calibrate(model, "sim", FAST).max_tokens == 128  # first still cached
    assert fake_curve.calls == 18


def test_the_fingerprint_follows_the_graph_and_the_host(model, monkeypatch):
    base = fingerprint(model, "sim", FAST)[0]
    monkeypatch.setattr(key_mod, "host_description", lambda: {"cpu": "other", "cores": 64})
    assert fingerprint(model, "sim", FAST)[0] != base
    monkeypatch.undo()
    m = Manifest.read(model)
    files = {**m.files, m.graphs["unpack_repack"]: "0" * 64}
    other = Manifest(**{**m.__dict__, "files": files})
    assert fingerprint(PreparedModel(model, other), "sim", FAST)[0] != base


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": 1'])
def test_a_corrupt_cache_is_measured_again_and_replaced(model, fake_curve, content):
    (model / CACHE_FILE).write_text(content)
    cal = load_or_calibrate(model, "sim", FAST, progress=False)
    assert fake_curve.calls == 9 and cal.max_tokens == 128
    assert list(json.loads((model / CACHE_FILE).read_text())) == [cal.fingerprint]


def test_a_malformed_entry_is_measured_again(model, fake_curve):
    key = fingerprint(model, "sim", FAST)[0]
    (model / CACHE_FILE).write_text(json.dumps({key: {"budgets": [64], "max_tokens": 999}}))
    assert load_or_calibrate(model, "sim", FAST, progress=False).max_tokens == 128
    assert fake_curve.calls == 9
    assert not list(model.glob(".calibration.json.*"))  # no temp file left behind


def test_an_unwritable_folder_still_answers(model, fake_curve, monkeypatch):
    def fail(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", fail)
    assert load_or_calibrate(model, "sim", FAST, progress=False).max_tokens == 128
    assert not (model / CACHE_FILE).exists()


def test_calibration_round_trips_through_its_entry():
    cal = Calibration(
        budgets=(64, 128),
        tokens_per_s=(1.0, 2.0),
        max_tokens=128,
        threshold=0.95,
        rule="r",
        fingerprint="f",
        measured_at="t",
    )
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal and back.from_cache
    with pytest.raises(ValueError, match="96"):
        Calibration(
            budgets=(64, 128),
            tokens_per_s=(1.0, 2.0),
            max_tokens=96,
            threshold=0.95,
            rule="r",
            fingerprint="f",
            measured_at="t",
        )


# ------------------------------------------------------------------- who uses it


def seed_cache(model, backend: str, options: dict, curve: dict = KNEE) -> Calibration:
    """Write a calibration of ``curve`` for this backend into the folder's cache, as a
    measurement would."""
    budgets, rates = tuple(curve), tuple(curve.values())
    cal = Calibration(
        budgets=budgets,
        tokens_per_s=rates,
        max_tokens=pick_budget(budgets, rates),
        threshold=0.95,
        rule="r",
        measured_at="t",
        fingerprint=fingerprint(model, backend, options)[0],
    )
    (model / CACHE_FILE).write_text(json.dumps({cal.fingerprint: cal.to_dict()}))
    return cal


def test_pack_runner_auto_uses_the_cached_budget(model, no_measuring):
    seed_cache(model, "sim", FAST)  # budget 128
    runner = PackRunner(model, mode="unpack_repack", backend="sim", profile="fast")
    assert runner.config.max_tokens == 128 and runner.config.capacity_tokens == 128
    assert runner.calibration is not None and runner.calibration.from_cache
    lengths = np.full(8, 60)
    assert {p.capacity for p in runner.plans(lengths)} == {128}
    assert [p.n_seqs for p in runner.plans(lengths)] == [2, 2, 2, 2]
    data = synthetic_features(lengths, Manifest.read(model).dims.vocab_size)
    solo = PackRunner(
        model, mode="unpack_repack", backend="sim", profile="fast", max_tokens=None, max_valid_num=1
    ).run(data)
    for got, want in zip(runner.run(data), solo):
        assert np.array_equal(got.start_logits, want.start_logits)
    with runner:  # online too
        assert np.array_equal(runner.submit(data[0]).result(30).end_logits, solo[0].end_logits)
    assert runner.dispatch_stats.as_dict()["plans"] == 1


def test_a_pinned_budget_wins(model, no_measuring):
    runner = PackRunner(model, mode="unpack_repack", backend="sim", profile="fast", max_tokens=192)
    assert runner.config.max_tokens == 192 and runner.calibration is None
    full = PackRunner(model, mode="attention_mask", backend="sim", profile="fast", max_tokens=None)
    assert full.config.max_tokens is None and full.config.capacity_tokens == 256
    assert not (model / CACHE_FILE).exists()
    with pytest.raises(ValueError, match="300"):  # validated against the model's shape
        PackRunner(model, mode="attention_mask", backend="sim", profile="fast", max_tokens=300)
    with pytest.raises(ValueError, match="'big'"):
        PackRunner(model, mode="attention_mask", backend="sim", profile="fast", max_tokens="big")
    with pytest.raises(ValueError, match="dense"):  # bad knobs fail before any measuring
        PackRunner(model, mode="dense", backend="sim", profile="fast")


def test_auto_falls_back_to_the_full_batch_where_nothing_can_be_measured(model, no_measuring):
    # An injected sleep: wall time means nothing, so nothing is measured or cached.
    runner = PackRunner(
        model, mode="attention_mask", backend="sim", profile="slow", sleep=lambda s: None
    )
    assert runner.config.max_tokens is None and runner.calibration is None
    with pytest.raises(NotCalibratable, match="sleep"):
        load_or_calibrate(model, "sim", {"profile": "slow", "sleep": print})
    # A folder still being prepared (its manifest has no checksums yet, as during
    # prepare's own check): the full batch.
    m = Manifest.read(model)
    Manifest(**{**m.__dict__, "files": {}}).write(model)
    assert resolve_max_tokens("auto", model, "sim", FAST) == (None, None)
    assert not (model / CACHE_FILE).exists()


def test_packer_auto_is_the_calibrated_budget_and_a_pinned_one_wins(model):
    from deployments.config import PackingKnobs
    from deployments.packer import Packer

    packer = Packer.func_or_class(None, str(model), calibrated_max_tokens=128)
    assert PackingKnobs().max_tokens == "auto"
    assert packer.dispatcher.config.max_tokens == 128
    packer.reconfigure({"max_tokens": 192})
    assert packer.dispatcher.config.max_tokens == 192
    packer.reconfigure({"max_tokens": None})
    assert packer.dispatcher.config.capacity_tokens == 256
    packer.reconfigure({"max_tokens": "auto"})
    assert packer.dispatcher.config.max_tokens == 128
    with pytest.raises(ValueError, match="1000"):
        packer.reconfigure({"max_tokens": 1000})
    assert packer.dispatcher.config.max_tokens == 128  # a refused change keeps the last config
    uncalibrated = Packer.func_or_class(None, str(model))
    assert uncalibrated.dispatcher.config.capacity_tokens == 256
    with pytest.raises(ValueError, match="512"):  # a calibrated budget that does not fit
        Packer.func_or_class(None, str(model), calibrated_max_tokens=512)


def test_build_app_reads_the_calibration_of_the_runner_backend(model, no_measuring):
    from deployments.app import calibrated_budget

    seed_cache(model, "sim", FAST)
    assert calibrated_budget(str(model), "sim", FAST) == 128
    assert calibrated_budget(str(model), "sim", {**FAST, "sleep": print}) is None


# ---------------------------------------------------------------------------- CLI


def test_cli_prints_the_curve_and_where_it_is_cached(model, capsys):
    args = [
        "calibrate",
        "--model-dir",
        str(model),
        "--backend",
        "sim",
        "--sim-profile",
        "fast",
        "--no-progress",
        "--min-time-s",
        "0.05",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "budget" in out and "tokens/s" in out and "of best" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [64, 128, 256]
    chosen = [r for r in rows if "<-" in r]
    assert len(chosen) == 1
    assert f"max_tokens = {chosen[0][0]}" in out
    assert f"cached in {model / CACHE_FILE}" in out and "measured in" in out
    assert main(args) == 0
    assert "read from the cache" in capsys.readouterr().out


def test_cli_refuses_threads_on_the_sim(model, capsys):
    assert (
        main(
            [
                "calibrate",
                "--model-dir",
                str(model),
                "--backend",
                "sim",
                "--threads",
                "2",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "--threads" in capsys.readouterr().err


# ------------------------------------------------------------ served: plan overhead

SERVED_CURVE = [13399.0, 14407.0, 14338.0, 13737.0, 12342.0]  # minilm-embed int8, 2 threads
SERVED_BUDGETS = [256, 512, 1024, 2048, 4096]


def test_served_rates_add_the_overhead_to_every_batch():
    assert served_rates([256, 512], [1000.0, 2000.0]) == [1000.0, 2000.0]
    rates = served_rates([256, 512], [1000.0, 2000.0, 0.0][:2], plan_overhead_s=0.1)
    assert rates == pytest.approx([256 / (0.256 + 0.1), 512 / (0.256 + 0.1)])
    assert served_rates([256], [0.0], 0.1) == [0.0]
    for bad in (-0.001, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="plan_overhead_s"):
            served_rates([256], [1.0], bad)


def test_a_plan_overhead_moves_the_pick_to_bigger_budgets():
    # In-process the curve is flat from 512; served, each plan also pays ~10 ms of hops,
    # which a 512-token plan (36 ms) feels and a 1024-token one (71 ms) much less.
    assert pick_budget(SERVED_BUDGETS, SERVED_CURVE) == 512
    assert pick_budget(SERVED_BUDGETS, SERVED_CURVE, plan_overhead_s=0.01) == 1024
    assert pick_budget(SERVED_BUDGETS, SERVED_CURVE, plan_overhead_s=10.0) == 4096
    with pytest.raises(ValueError, match="plan_overhead_s"):
        pick_budget(SERVED_BUDGETS, SERVED_CURVE, plan_overhead_s=-1)


@given(
    times=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=6),
    small=st.floats(0.0, 0.5),
    extra=st.floats(0.0, 0.5),
    threshold=st.floats(0.5, 1.0),
)
def test_more_overhead_never_picks_a_smaller_budget(times, small, extra, threshold):
    # any curve whose batch time grows with the budget (every device measured here)
    budgets = [64 * 2**k for k in range(len(times))]
    seconds = np.cumsum(times)
    rates = [b / s for b, s in zip(budgets, seconds)]
    low = pick_budget(budgets, rates, threshold, small)
    assert pick_budget(budgets, rates, threshold, small + extra) >= low


def test_the_overhead_is_stored_and_re_picked_from_the_cache(model, fake_curve, monkeypatch):
    fake_curve({64: 100.0, 128: 190.0, 256: 195.0})
    first = load_or_calibrate(model, "sim", FAST, progress=False)
    assert first.max_tokens == 128 and first.plan_overhead_s == 0.0
    monkeypatch.setattr(measure_mod, "measure_budget", None)  # a measurement would fail
    served = load_or_calibrate(model, "sim", FAST, plan_overhead_s=1.0)
    assert served.from_cache and served.max_tokens == 256 and served.plan_overhead_s == 1.0
    assert "1000 ms per plan" in served.rule and "served" in served.table()
    assert served.repicked(0.95, 0.0).max_tokens == 128
    assert served.repicked(0.95, 1.0) is served
    _, cal = resolve_max_tokens("auto", model, "sim", FAST, plan_overhead_s=1.0)
    assert cal.max_tokens == 256


def test_entries_without_an_overhead_read_as_in_process():
    raw = {
        "budgets": [64, 128],
        "tokens_per_s": [1.0, 2.0],
        "max_tokens": 128,
        "threshold": 0.95,
        "rule": "r",
        "fingerprint": "f",
        "measured_at": "t",
    }
    assert Calibration.from_dict(raw).plan_overhead_s == 0.0
    back = Calibration.from_dict({**raw, "plan_overhead_s": 0.01})
    assert back.to_dict()["plan_overhead_s"] == 0.01
    with pytest.raises(ValueError, match="plan_overhead_s"):
        Calibration.from_dict({**raw, "plan_overhead_s": -1})


def test_build_app_picks_with_the_configured_overhead(model, no_measuring):
    from deployments.app import calibrated_budget
    from deployments.config import AppConfig

    seed_cache(model, "sim", FAST, {64: 100.0, 128: 190.0, 256: 195.0})
    assert calibrated_budget(str(model), "sim", FAST) == 128
    assert calibrated_budget(str(model), "sim", FAST, plan_overhead_s=1.0) == 256
    assert AppConfig().plan_overhead_s > 0  # served picks count the hops by default
    with pytest.raises(ValueError, match="plan_overhead_s"):
        AppConfig(plan_overhead_s=-0.5)


def test_cli_picks_as_served_with_a_plan_overhead(model, fake_curve, capsys):
    fake_curve({64: 100.0, 128: 190.0, 256: 195.0})
    args = ["calibrate", "--model-dir", str(model), "--backend", "sim", "--no-progress"]
    assert main([*args, "--sim-profile", "fast"]) == 0
    assert "max_tokens = 128" in capsys.readouterr().out
    assert main([*args, "--sim-profile", "fast", "--plan-overhead-s", "1"]) == 0
    out = capsys.readouterr().out
    assert "max_tokens = 256" in out and "served" in out and "1000 ms per plan" in out
    with pytest.raises(SystemExit):
        main([*args, "--plan-overhead-s", "-1"])


# ------------------------------------------------------------------ the host's other load


def test_others_load_is_the_hosts_busy_time_less_our_own_over_the_cores():
    busy, own, clock = iter([100.0, 103.0]), iter([5.0, 6.0]), iter([0.0, 2.0])
    load = OthersLoad(lambda: next(busy), lambda: next(own), lambda: next(clock), cores=2)
    assert load.share() == pytest.approx((3.0 - 1.0) / (2 * 2.0))
    unknown = OthersLoad(lambda: None, lambda: 0.0, iter([0.0, 1.0]).__next__, cores=2)
    assert unknown.share() is None
    more, t = iter([0.0, 50.0]), iter([0.0, 1.0])
    clamped = OthersLoad(lambda: next(more), lambda: 0.0, lambda: next(t), cores=2)
    assert clamped.share() == 1.0


def test_host_busy_seconds_reads_proc_stat(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(
        f"cpu  {tick} {tick} {tick} {50 * tick} {7 * tick} {tick} {tick} {tick} 0 0\ncpu0 1 2 3\n"
    )
    assert host_busy_seconds(str(stat)) == pytest.approx(6.0)  # idle and iowait left out
    stat.write_text("intr 1 2 3\n")
    assert host_busy_seconds(str(stat)) is None
    assert host_busy_seconds(str(tmp_path / "missing")) is None


def test_a_calibration_on_a_busy_host_is_used_but_not_cached(model, fake_curve, host_load, caplog):
    host_load.share_of_others = MAX_OTHERS_LOAD + 0.2
    busy = load_or_calibrate(model, "sim", FAST, progress=False)
    assert busy.max_tokens == 128 and busy.others_load == pytest.approx(MAX_OTHERS_LOAD + 0.2)
    assert not (model / CACHE_FILE).exists()
    assert "not cached" in caplog.text and "measured again at the next start" in caplog.text
    calls = fake_curve.calls
    host_load.share_of_others = MAX_OTHERS_LOAD - 0.1
    quiet = load_or_calibrate(model, "sim", FAST, progress=False)
    assert fake_curve.calls > calls and not quiet.from_cache  # measured again
    stored = json.loads((model / CACHE_FILE).read_text())[quiet.fingerprint]
    assert stored["others_load"] == pytest.approx(MAX_OTHERS_LOAD - 0.1)
    assert load_or_calibrate(model, "sim", FAST).from_cache


def test_cli_says_when_a_busy_host_kept_the_calibration_out_of_the_cache(model, capsys, host_load):
    host_load.share_of_others = 0.9
    args = ["calibrate", "--model-dir", str(model), "--backend", "sim", "--sim-profile", "fast"]
    assert main([*args, "--no-progress", "--min-time-s", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "other processes took 90% of the host's CPU while measuring" in out
    assert "not cached: the host was busy" in out and not (model / CACHE_FILE).exists()
