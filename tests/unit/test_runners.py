"""Every run mode gives each request the logits it gets when run alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from packing.runners import ModelRunner, PackRunner
from packing.runners.workloads import synthetic_features
from packing.runtime import open_graph
from packing.runtime.backend import Backend, load_backend
from packing.runtime.features import Features, InvalidInput

from factories import make_lengths

TOL = 1e-4
SEQ_LEN = 64  # conftest.TINY_SHAPE
# The token budget of every PackRunner here: pinned (the full batch of conftest.TINY_SHAPE:
# 4 rows x 64), never max_tokens="auto", which measures this host when the runner is built,
# so how many requests share a batch would depend on how busy the machine is.
FULL = 4 * SEQ_LEN


def loaded(model_dir, kind: str) -> Backend:
    """Graph ``kind`` of ``model_dir`` on onnxruntime, to wrap and inject as a runner's
    ``backend``."""
    return open_graph(model_dir, kind, "onnxruntime", {})[1]


def make_requests(lengths, seed: int = 0) -> list[Features]:
    """Features of the given lengths with random words (QA framed)."""
    return synthetic_features(lengths, vocab_size=30522, seed=seed)


@pytest.fixture(scope="module")
def requests() -> list[Features]:
    lengths = make_lengths(40, seq_len=SEQ_LEN, seed=1)
    lengths[:4] = [1, SEQ_LEN, SEQ_LEN - 1, 2]
    return make_requests(lengths, seed=1)


@pytest.fixture(scope="module")
def solo(tiny_model_dir, requests):
    runner = ModelRunner(tiny_model_dir, batch_size=1, padding="longest")
    return [runner.run([f])[0] for f in requests]


def assert_close(got, ref):
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g.start_logits.shape == r.start_logits.shape, k
        assert np.abs(g.start_logits - r.start_logits).max() <= TOL, k
        assert np.abs(g.end_logits - r.end_logits).max() <= TOL, k


@pytest.mark.parametrize(
    "padding,sort", [("max_length", False), ("longest", False), ("longest", True)]
)
def test_padded_modes_match_solo(tiny_model_dir, requests, solo, padding, sort):
    runner = ModelRunner(tiny_model_dir, padding=padding, sort=sort)
    assert_close(runner.run(requests), solo)
    assert runner.stats.sequences == len(requests)


@pytest.mark.parametrize("mode", ["attention_mask", "unpack_repack"])
def test_offline_packing_matches_solo(tiny_model_dir, requests, solo, mode):
    runner = PackRunner(tiny_model_dir, mode=mode, max_tokens=FULL)
    assert_close(runner.run(requests), solo)
    stats = runner.stats
    assert stats.sequences == len(requests)
    assert stats.batches < len(requests) / 2  # really packed several per batch
    assert stats.efficiency > 0.8


@pytest.mark.parametrize(
    "mode,algorithm",
    [
        ("attention_mask", "first_fit"),
        ("attention_mask", "next_fit"),
        ("attention_mask", "best_fit"),
        ("unpack_repack", "first_fit"),
    ],
)
def test_online_packing_matches_solo(tiny_model_dir, requests, solo, mode, algorithm):
    with PackRunner(
        tiny_model_dir, mode=mode, algorithm=algorithm, batch_wait_timeout_s=0.05, max_tokens=FULL
    ) as runner:
        futures = [None] * len(requests)

        def client(idx):
            for i in idx:
                futures[i] = runner.submit(requests[i])

        threads = [
            threading.Thread(target=client, args=(range(k, len(requests), 4),)) for k in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [f.result(timeout=30) for f in futures]
    assert_close(got, solo)
    assert runner.stats.sequences == len(requests)


def test_online_timeout_sends_partial_batch(tiny_model_dir, requests, solo):
    with PackRunner(
        tiny_model_dir, mode="attention_mask", batch_wait_timeout_s=0.02, max_tokens=FULL
    ) as runner:
        result = runner.submit(requests[5]).result(timeout=10)  # alone: only the timeout sends it
    assert_close([result], [solo[5]])


def test_close_runs_pending_requests(tiny_model_dir, requests, solo):
    runner = PackRunner(
        tiny_model_dir, mode="attention_mask", batch_wait_timeout_s=60.0, max_tokens=FULL
    )
    futs = runner.submit_many(requests[:3])
    t0 = time.monotonic()
    runner.close()
    assert time.monotonic() - t0 < 30  # handed over at close, not after the 60 s batch timer
    assert_close([f.result(timeout=1) for f in futs], solo[:3])
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit(requests[0])


BAD = [
    (Features.of([]), "empty"),
    (Features.of(np.arange(SEQ_LEN + 1)), "longer than"),
    (Features.of(np.ones(4, dtype=np.float32)), "integers"),
    (Features.of([101, 30522, 102]), "outside the vocabulary"),
    (Features.of([101, -1, 102]), "outside the vocabulary"),
    (Features.of([101, 5, 102], [0, 0, 2]), "token type"),
    (Features.of([101, 5, 102], [0, 0]), "token_type_ids has 2"),
    (Features.of(np.ones((2, 2), dtype=np.int64)), "1-D"),
]


@pytest.mark.parametrize("bad,message", BAD)
def test_bad_input_is_refused_and_runner_keeps_working(
    tiny_model_dir, requests, solo, bad, message
):
    with PackRunner(
        tiny_model_dir, mode="attention_mask", batch_wait_timeout_s=0.01, max_tokens=FULL
    ) as runner:
        with pytest.raises(InvalidInput, match=message):
            runner.submit(bad)
        assert_close([runner.submit(requests[7]).result(timeout=10)], [solo[7]])
    offline = PackRunner(tiny_model_dir, mode="unpack_repack", max_tokens=FULL)
    with pytest.raises(InvalidInput, match=r"request 1: .*" + message):
        offline.run([requests[0], bad])
    assert_close(offline.run(requests[:2]), solo[:2])


class FlakyBackend(Backend):
    """Fails the calls whose number is in ``fail``; otherwise delegates."""

    def __init__(self, inner: Backend, fail: set[int]):
        self.inner, self.fail, self.calls = inner, fail, 0

    def run(self, inputs):
        self.calls += 1
        if self.calls in self.fail:
            raise RuntimeError("device lost")
        return self.inner.run(inputs)

    def describe(self):
        return "flaky"


def test_failed_batch_fails_its_requests_only(tiny_model_dir, requests, solo):
    flaky = FlakyBackend(loaded(tiny_model_dir, "attention_mask"), fail={1})
    # The budget pinned to the full batch (4 rows of 64): any 3 of these requests fit in one,
    # so the 6 make two batches of max_valid_num=3, whatever the host's load; one slot: they
    # run in order, so the first is the backend's call 1 (with two, either could be).
    runner = PackRunner(
        tiny_model_dir,
        mode="attention_mask",
        batch_wait_timeout_s=60.0,
        max_valid_num=3,
        max_tokens=FULL,
        max_inflight_batches=1,
        backend=flaky,
    )
    assert runner.backend is flaky
    futs = runner.submit_many(requests[:6])  # two full batches of 3
    for f in futs[:3]:
        with pytest.raises(RuntimeError, match="device lost"):
            f.result(timeout=10)
    assert_close([f.result(timeout=10) for f in futs[3:]], solo[3:6])
    runner.close()
    assert runner.stats.failed_batches == 1
    assert flaky.calls == 2


class StaticShapes(Backend):
    """An ONNX Runtime backend that claims static shapes and records every call's input shapes."""

    static_shapes = True

    def __init__(self, inner: Backend):
        self.inner = inner
        self.shapes: list[dict[str, tuple[int, ...]]] = []

    def run(self, inputs):
        self.shapes.append({name: v.shape for name, v in inputs.items()})
        return self.inner.run(inputs)

    def describe(self):
        return "static"


def test_static_shape_backend_gets_full_batches(tiny_model_dir, requests, solo):
    """A backend that needs fixed shapes sees the same shape of every input on every call:
    batch_size rows, or capacity tokens plus [static_attention_rows, seq_len] attention rows;
    and every request still gets its solo logits."""
    from packing.policy.attention import ATTENTION_GROUPS
    from packing.policy.layouts import static_attention_rows

    rows = static_attention_rows(SEQ_LEN, 4 * SEQ_LEN, 8)  # conftest.TINY_SHAPE: 7
    expect = {
        "attention_mask": {
            n: (4, SEQ_LEN)
            for n in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
        },
        "unpack_repack": {
            "input_ids": (4 * SEQ_LEN,),
            "token_type_ids": (4 * SEQ_LEN,),
            "position_ids": (4 * SEQ_LEN,),
            "repack_index": (4 * SEQ_LEN,),
            "unpack_index_0": (rows, SEQ_LEN),
            "segment_ids_0": (rows, SEQ_LEN),
            **{
                f"{n}_{g}": (1, 1)
                for g in range(1, ATTENTION_GROUPS)
                for n in ("unpack_index", "segment_ids")
            },
        },
    }
    for mode, want in expect.items():
        static = StaticShapes(loaded(tiny_model_dir, mode))
        runner = PackRunner(
            tiny_model_dir,
            mode=mode,
            max_tokens=None,  # the full batch
            backend=static,
        )
        assert_close(runner.run(requests), solo)
        assert len(static.shapes) > 1 and all(s == want for s in static.shapes), static.shapes
    # online too: partial batches (timeout) and full ones alike
    static = StaticShapes(loaded(tiny_model_dir, "unpack_repack"))
    with PackRunner(
        tiny_model_dir,
        mode="unpack_repack",
        batch_wait_timeout_s=0.02,
        max_tokens=None,
        backend=static,
    ) as runner:
        got = [runner.submit(requests[0]).result(timeout=10)]  # alone in its batch
        got += [f.result(timeout=30) for f in runner.submit_many(requests[1:])]
    assert_close(got, solo)
    assert len(static.shapes) > 2 and all(s == expect["unpack_repack"] for s in static.shapes)


def test_a_loaded_backend_is_injected_as_it_is(tiny_model_dir, requests, solo):
    """The public seam for wrapping a backend: ``backend=`` a loaded Backend. It is used as
    given (no options), and max_tokens="auto" cannot calibrate it: the full batch."""
    inner = loaded(tiny_model_dir, "unpack_repack")
    runner = PackRunner(tiny_model_dir, mode="unpack_repack", backend=inner)
    assert runner.backend is inner and runner.executor.backend is inner
    assert runner.calibration is None and runner.config.capacity_tokens == FULL
    assert_close(runner.run(requests[:5]), solo[:5])
    with pytest.raises(ValueError, match="intra_op_threads"):
        PackRunner(
            tiny_model_dir,
            mode="attention_mask",
            backend=loaded(tiny_model_dir, "attention_mask"),
            intra_op_threads=1,
        )
    original = loaded(tiny_model_dir, "original")
    assert ModelRunner(tiny_model_dir, batch_size=1, backend=original).backend is original


def test_unknown_backend_and_missing_folder(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="poprt"):
        load_backend("poprt", tiny_model_dir / "original.onnx")
    with pytest.raises(FileNotFoundError, match="prepare"):
        PackRunner(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        PackRunner(tiny_model_dir, mode="dense")


def test_cancelled_request_is_not_computed(tiny_model_dir, requests, solo):
    """A caller that goes away before its request is packed costs no compute.

    No polling: both requests are admitted in one batch (``max_batch_size=2``), which the
    dispatch step splits in one step into the plan of the first (one window per plan) and
    the second waiting for the one slot. So once the backend is entered (the ``entered``
    event of the wrapper injected as ``backend=``), the second is known to be waiting; the
    backend then blocks until the test sets ``release``."""
    release, entered = threading.Event(), threading.Event()

    class Blocking(Backend):
        def __init__(self, inner):
            self.inner = inner

        def run(self, inputs):
            entered.set()
            release.wait(10)
            return self.inner.run(inputs)

        def describe(self):
            return "blocking"

    runner = PackRunner(
        tiny_model_dir,
        mode="attention_mask",
        max_batch_size=2,  # both requests in one admitted batch: closed when the second comes
        batch_wait_timeout_s=60.0,  # (never reached)
        max_valid_num=1,
        max_inflight_batches=1,
        max_tokens=FULL,
        backend=Blocking(loaded(tiny_model_dir, "attention_mask")),
    )
    first, gone = runner.submit_many(requests[:2])
    assert entered.wait(10)  # the first's plan is in the backend, blocked there
    assert runner.inflight == 1 and runner.waiting == 1  # the second waits for the busy slot
    assert gone.cancel()
    release.set()
    runner.close()
    assert gone.cancelled()
    assert_close([first.result()], [solo[0]])
    assert runner.stats.sequences == 1 and runner.stats.batches == 1
    assert runner.dispatch_stats.dropped == 1


def test_fault_file_fails_calls_while_it_exists(tiny_model_dir, requests, solo, tmp_path):
    """The operator's fault trigger: model calls fail while the file exists, then work again."""
    from packing.runtime.faults import FaultInjectingBackend, InjectedFault

    trigger = tmp_path / "fail-model-calls"
    fault = FaultInjectingBackend(loaded(tiny_model_dir, "attention_mask"), trigger)
    runner = PackRunner(
        tiny_model_dir,
        mode="attention_mask",
        batch_wait_timeout_s=60.0,
        max_valid_num=3,
        max_tokens=FULL,
        backend=fault,
    )
    assert_close(runner.run(requests[:3]), solo[:3])
    trigger.touch()
    with pytest.raises(InjectedFault, match="fail-model-calls exists"):
        runner.run(requests[:3])
    trigger.unlink()
    assert_close(runner.run(requests[3:6]), solo[3:6])
    assert runner.backend is fault and fault.injected == 1
    runner.close()


def forced_layout(lengths: np.ndarray, n_groups: int):
    """An attention layout that splits the sequences, longest first, into ``n_groups``
    near-equal groups (whatever the cost model would choose), rows packed first-fit."""
    from packing.policy.attention import AttentionLayout, attention_rows

    order = np.argsort(-lengths, kind="stable")
    chunks = [c for c in np.array_split(order, n_groups) if c.size]
    group, row, start, segment = (np.zeros(lengths.size, dtype=np.int64) for _ in range(4))
    widths, rows = [], []
    for g, members in enumerate(chunks):
        width = int(lengths[members].max())
        r, st_, seg = attention_rows(lengths[members], width)
        group[members], row[members], start[members], segment[members] = g, r, st_, seg
        if widths and width == widths[-1]:  # widths must be distinct: merge into one group
            return forced_layout(lengths, n_groups - 1)
        widths.append(width)
        rows.append(int(r.max()) + 1)
    return AttentionLayout(widths, rows, group, row, start, segment)


@pytest.mark.parametrize("n_groups", [1, 2, 3, 4])
def test_unpack_repack_matches_solo_for_every_grouping(tiny_model_dir, requests, solo, n_groups):
    """The graph's attention groups: whatever split a plan takes, each request's logits are
    its solo logits (the plans' layouts are replaced by forced splits here)."""
    from packing.policy.offline import plan_offline_unpack_repack

    runner = PackRunner(tiny_model_dir, mode="unpack_repack", max_tokens=FULL)
    lengths = np.array([len(f) for f in requests])
    plans = plan_offline_unpack_repack(lengths, SEQ_LEN, 4, 8)
    used = []
    for plan in plans:
        plan.__dict__["attention"] = forced_layout(plan.lengths, n_groups)  # seeds the cache
        used.append(plan.attention.n_groups)
    assert max(used) == n_groups
    assert_close(runner.run_plans(plans, requests), solo)
