"""``python -m tools ceiling``: the /proc CPU reader, config rewriting, report maths and CLI parsing
(no Ray; the slow end-to-end run of the echo floor is in tests/integration/test_ceiling.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tools import ceiling as ce
from tools.cli import build_parser

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _wait_cpu(pid: int, seconds: float, timeout: float = 30.0) -> None:
    """Wait until ``pid`` has used ``seconds`` of CPU (the box may be busy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = ce.read_stat(pid)
        if f is None or (int(f[11]) + int(f[12])) / ce.CLK_TCK >= seconds:
            return
        time.sleep(0.05)


def test_process_tree_counts_a_burning_child():
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6) + "time.sleep(30)"])
    try:
        assert child.pid in ce.process_tree(os.getpid())
        before = ce.cpu_times(ce.process_tree(os.getpid()))
        _wait_cpu(child.pid, 0.6)
        after = ce.cpu_times(ce.process_tree(os.getpid()))
        child_key = next(k for k in after if k[0] == child.pid)
        assert after[child_key] >= 0.5
        assert ce.cpu_delta(before, after) >= after[child_key] - before.get(child_key, 0.0) - 1e-9
        assert ce.cpu_delta(before, after) > 0.3
    finally:
        child.kill()
        child.wait()


def test_grandchildren_and_session_members_are_found():
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(p.pid, flush=True)\ntime.sleep(30)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        grandchild = int(child.stdout.readline())
        assert {child.pid, grandchild} <= ce.process_tree(child.pid)
        assert ce.session_members(child.pid) == {child.pid, grandchild}
        assert ce.server_pids(child.pid) == {child.pid, grandchild}
    finally:
        os.killpg(child.pid, 9)
        child.wait()


def test_a_child_started_between_samples_counts_whole_and_gone_pids_are_none():
    before = ce.cpu_times(ce.process_tree(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.3) + "time.sleep(30)"])
    try:
        _wait_cpu(child.pid, 0.3)
        after = ce.cpu_times(ce.process_tree(os.getpid()))
        assert ce.cpu_delta(before, after) >= 0.25
    finally:
        child.kill()
        child.wait()
    assert ce.read_stat(child.pid) is None
    assert ce.process_tree(child.pid) == set()


def test_read_stat_survives_odd_command_names(tmp_path):
    exe = tmp_path / "a b) (c"
    exe.symlink_to(sys.executable)
    child = subprocess.Popen([str(exe), "-c", "import time; time.sleep(30)"])
    try:
        f = ce.read_stat(child.pid)
        assert f is not None and int(f[1]) == os.getpid()  # field 4: ppid
    finally:
        child.kill()
        child.wait()


def test_cpu_delta_ignores_reused_pids():
    before = {(10, 100): 5.0}
    after = {(10, 200): 1.0, (11, 50): 2.0}  # pid 10 is a new process (other starttime)
    assert ce.cpu_delta(before, after) == pytest.approx(3.0)
    assert ce.cpu_delta({(10, 100): 5.0}, {(10, 100): 7.5}) == pytest.approx(2.5)


# ---------------------------------------------------------------- configs

TEST_CFG = {
    "proxy_location": "EveryNode",
    "http_options": {"host": "127.0.0.1", "port": 8000},
    "applications": [
        {
            "name": "squad-test",
            "route_prefix": "/",
            "import_path": "deployments.app:build_app",
            "args": {"model_dir": "models/random-tiny-test", "model_source": "random:tiny"},
        }
    ],
}


def test_rewrite_app_config_sets_port_and_absolute_model_dir(tmp_path):
    out = ce.rewrite_app_config(TEST_CFG, 23456, repo=tmp_path)
    assert out["http_options"] == {"host": "127.0.0.1", "port": 23456}
    assert out["applications"][0]["args"]["model_dir"] == str(tmp_path / "models/random-tiny-test")
    assert TEST_CFG["http_options"]["port"] == 8000  # input untouched
    assert TEST_CFG["applications"][0]["args"]["model_dir"] == "models/random-tiny-test"
    assert ce.app_model(out) == (tmp_path / "models/random-tiny-test", "random:tiny")


def test_rewrite_app_config_keeps_absolute_dirs_and_adds_a_host():
    cfg = {"applications": [{"name": "a", "args": {"model_dir": "/data/m"}}, {"name": "b"}]}
    out = ce.rewrite_app_config(cfg, 20001)
    assert out["http_options"] == {"port": 20001, "host": "127.0.0.1"}
    assert out["applications"][0]["args"]["model_dir"] == "/data/m"
    assert "args" not in out["applications"][1]


def test_the_repo_test_config_rewrites():
    import yaml

    cfg = yaml.safe_load((ce.REPO / "configs" / "test.yaml").read_text())
    out = ce.rewrite_app_config(cfg, 21000)
    assert out["http_options"]["port"] == 21000
    assert Path(out["applications"][0]["args"]["model_dir"]).is_absolute()


def test_floor_config_shape():
    cfg = ce.floor_config("chain", 24000)
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 24000}
    (app,) = cfg["applications"]
    assert app["import_path"] == "tools.floor_apps:chain_app" and "args" not in app
    assert ce.floor_config("echo", 1, 64)["applications"][0]["args"] == {"max_ongoing_requests": 64}


def test_floor_app_builders_validate_args():
    from tools import floor_apps

    assert floor_apps.floor_options(None) == {}
    assert floor_apps.floor_options({"max_ongoing_requests": 8}) == {"max_ongoing_requests": 8}
    for bad in ({"max_ongoing_requests": 0}, {"max_ongoing_requests": "8"}, {"other": 1}):
        with pytest.raises(ValueError):
            floor_apps.floor_options(bad)


def test_serve_env_and_parse_env():
    env = ce.serve_env(
        {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        base={"RAY_ADDRESS": "x:1", "PATH": "/bin", "RAY_AUTH_MODE": "token"},
    )
    assert "RAY_ADDRESS" not in env and env["PATH"] == "/bin"
    assert env["RAY_AUTH_MODE"] == "disabled" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert ce.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in (["A"], ["=1"]):
        with pytest.raises(ValueError):
            ce.parse_env(bad)


def test_free_port_is_bindable():
    import socket

    port = ce.free_port()
    assert 20000 <= port < 30000
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# ---------------------------------------------------------------- bodies


def test_question_pool_is_deterministic_and_in_range():
    tok = ce.load_tokenizer(None, "random:tiny")
    pool = ce.question_pool(tok, n=40)
    assert pool == ce.question_pool(tok, n=40)
    for q in pool:
        n = len(tok(q["question"], q["context"])["input_ids"])
        assert ce.LENGTH_RANGE[0] <= n <= ce.LENGTH_RANGE[1]


def test_question_pool_without_tokenizer_and_bodies():
    pool = ce.question_pool(None, n=10)
    assert len(pool) == 10 and all(q["question"] and q["context"] for q in pool)
    singles = ce.encode_bodies(pool, None)
    assert [json.loads(b) for b in singles] == pool
    lists = ce.encode_bodies(pool, 4)
    assert len(lists) == 2 and json.loads(lists[1]) == pool[4:8]
    (big,) = ce.encode_bodies(pool, 32)  # bigger than the pool: one list, cycling
    assert json.loads(big)[10] == pool[0] and len(json.loads(big)) == 32
    assert ce.load_tokenizer(None, "some/hub-model") is None


# ---------------------------------------------------------------- report


def _m(
    ok: int,
    seconds: float = 10.0,
    other: dict | None = None,
    server: float = 2.0,
    client: float = 0.5,
    lat: list | None = None,
) -> ce.Measurement:
    statuses = Counter({200: ok, **(other or {})})
    return ce.Measurement(
        seconds,
        lat if lat is not None else [0.01 * (i + 1) for i in range(100)],
        statuses,
        server,
        client,
        2.0,
    )


def test_make_row_counts_200_only_and_divides_cpu_by_questions():
    r = ce.make_row("app", "list32", 32, _m(50, other={503: 3, 0: 1}, server=16.0, client=1.6))
    assert r.answered == 50 and r.non_200 == 4 and r.statuses == {"0": 1, "200": 50, "503": 3}
    assert r.requests_per_s == pytest.approx(5.0)
    assert r.questions_per_s == pytest.approx(160.0)
    assert r.server_cpu_ms_per_q == pytest.approx(16.0 * 1000 / 1600)
    assert r.client_cpu_ms_per_q == pytest.approx(1.0)
    assert r.p50_ms == pytest.approx(505.0) and r.p99_ms == pytest.approx(990.0, rel=1e-3)


def test_make_row_with_nothing_answered():
    r = ce.make_row("app", "single", 1, _m(0, other={504: 5}, lat=[]))
    assert r.requests_per_s == 0 and r.server_cpu_ms_per_q is None and r.p50_ms is None
    assert r.non_200 == 5


def test_ratios_are_against_the_chain():
    rows = [
        ce.make_row("echo", "single", 1, _m(3000)),
        ce.make_row("chain", "single", 1, _m(1000)),
        ce.make_row("app", "single", 1, _m(500)),
        ce.make_row("app", "list32", 32, _m(50)),
    ]
    ce.add_ratios(rows)
    assert [r.ratio_to_chain for r in rows] == pytest.approx([3.0, 1.0, 0.5, 0.05])
    no_chain = rows[:1] + rows[2:]
    ce.add_ratios(no_chain)
    assert all(r.ratio_to_chain is None for r in no_chain)
    zero = [ce.make_row("chain", "single", 1, _m(0)), ce.make_row("app", "single", 1, _m(5))]
    ce.add_ratios(zero)
    assert all(r.ratio_to_chain is None for r in zero)


def test_format_table():
    rows = [
        ce.make_row("chain", "single", 1, _m(1000)),
        ce.make_row("app", "list32", 32, _m(50, other={503: 2, 0: 1})),
    ]
    ce.add_ratios(rows)
    lines = ce.format_table(rows).splitlines()
    assert lines[0].startswith("| app | body | requests/s | questions/s | vs chain")
    assert len(lines) == 4
    assert lines[2] == "| chain | single | 100.0 | 100.0 | 1.00x | 505 | 990 | 2.00 | 0.50 | 0 |"
    assert lines[3] == (
        "| app | list32 | 5.0 | 160.0 | 0.05x | 505 | 990 | 1.25 | 0.31 | 3 (conn: 1, 503: 2) |"
    )
    none = ce.make_row("app", "single", 1, _m(0, lat=[]))
    assert "| - | - | - | - |" in ce.format_table([none])


def test_cohosted_config_serves_every_app_under_its_own_prefix(tmp_path):
    cfg = ce.cohosted_config(TEST_CFG, ("echo", "chain", "app"), 23000, 1024, repo=tmp_path)
    assert cfg["http_options"]["port"] == 23000
    names = [a["name"] for a in cfg["applications"]]
    assert names == ["squad-test", "floor-echo", "floor-chain"]
    assert cfg["applications"][0]["args"]["model_dir"] == str(tmp_path / "models/random-tiny-test")
    assert cfg["applications"][2]["args"] == {"max_ongoing_requests": 1024}
    assert ce.app_routes(cfg, ("echo", "chain", "app")) == {
        "echo": "/echo",
        "chain": "/chain",
        "app": "",
    }
    floors = ce.cohosted_config(None, ("chain",), 23001)
    assert [a["route_prefix"] for a in floors["applications"]] == ["/chain"]
    with pytest.raises(ValueError, match="needs its config"):
        ce.cohosted_config(None, ("app",), 23002)


def _round(r, rows):
    for row in rows:
        row.round = r
    return rows


def test_ratios_and_summary_within_each_round():
    rows = (
        _round(
            1,
            [
                ce.make_row("chain", "single", 1, _m(1000)),
                ce.make_row("app", "single", 1, _m(1200)),
                ce.make_row("app", "list32", 32, _m(120)),
            ],
        )
        + _round(
            2,
            [
                ce.make_row("chain", "single", 1, _m(500)),
                ce.make_row("app", "single", 1, _m(450)),
                ce.make_row("app", "list32", 32, _m(50)),
            ],
        )
        + _round(
            3,
            [
                ce.make_row("chain", "single", 1, _m(800)),
                ce.make_row("app", "single", 1, _m(1000)),
                ce.make_row("app", "list32", 32, _m(100)),
            ],
        )
    )
    ce.add_ratios(rows)  # against the chain of the same round, not the first chain row
    assert [r.ratio_to_chain for r in rows if r.body == "single"] == pytest.approx(
        [1.0, 1.2, 1.0, 0.9, 1.0, 1.25]
    )
    by = {(x["app"], x["body"]): x for x in ce.round_summary(rows)}
    app = by[("app", "single")]
    assert app["rounds"] == 3 and app["median_ratio_to_chain"] == pytest.approx(1.2)
    assert (app["min_ratio_to_chain"], app["max_ratio_to_chain"]) == pytest.approx((0.9, 1.25))
    # list questions/s over the same round's single-question rate: 3.2, 3.56, 3.2
    assert by[("app", "list32")]["median_list_over_single"] == pytest.approx(3.2)
    assert by[("chain", "single")]["median_list_over_single"] is None
    table = ce.format_table(rows).splitlines()
    assert table[0].startswith("| round | app | body |") and table[2].startswith("| 1 | chain |")
    summary = ce.format_summary(ce.round_summary(rows)).splitlines()
    assert "| app | single | 3 | 1.20x (0.90x - 1.25x) | - |" in summary
    assert "| app | list32 | 3 | 0.12x (0.10x - 0.12x) | 3.2x |" in summary


def test_rounds_alternate_the_order():
    order = ("echo", "chain", "app")
    assert [ce.round_order(order, r) for r in (1, 2, 3)] == [
        list(order),
        ["app", "chain", "echo"],
        list(order),
    ]


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True])
def test_settings_reject_bad_rounds(rounds):
    with pytest.raises(ValueError, match="rounds"):
        ce.Settings(rounds=rounds)


def test_rows_carry_rounds_only_when_asked():
    assert not ce.Settings().by_round
    assert ce.Settings(rounds=3).by_round and ce.Settings(cohosted=True).by_round
    assert "one serve run per app, 3 interleaved rounds" in ce.format_header(
        ce.Settings(rounds=3), "W"
    )
    assert "co-hosted in one serve run, 1 interleaved round)" in ce.format_header(
        ce.Settings(cohosted=True), "W"
    )
    assert "rounds" not in ce.format_header(ce.Settings(), "W")


def test_format_header_names_the_settings():
    s = ce.Settings(
        apps=("echo", "app"),
        config=ce.REPO / "configs/test.yaml",
        concurrency=8,
        duration_s=None,
        requests=500,
        env={"A": "1"},
    )
    h = ce.format_header(s, "W")
    assert "\n" not in h
    for part in ("echo,app", "configs/test.yaml", "concurrency 8", "500 requests", "A=1", "; W;"):
        assert part in h


# ---------------------------------------------------------------- CLI


def test_cli_defaults():
    a = build_parser().parse_args(["ceiling"])
    assert a.apps == ["echo", "chain", "app"] and a.config == "configs/sim.yaml"
    assert (a.concurrency, a.duration_s, a.requests, a.list_size) == (64, 20.0, None, 32)
    assert a.env == [] and a.json is None and a.floor_max_ongoing == 1024
    assert a.rounds == 1 and not a.cohosted
    assert a.func.__name__ == "_ceiling"


def test_cli_options():
    a = build_parser().parse_args(
        [
            "ceiling",
            "--apps",
            "echo",
            "app",
            "--config",
            "configs/test.yaml",
            "--duration-s",
            "5",
            "--concurrency",
            "8",
            "--list-size",
            "4",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--requests",
            "100",
            "--json",
            "out.json",
            "--no-progress",
            "--floor-max-ongoing",
            "64",
            "--rounds",
            "3",
            "--cohosted",
        ]
    )
    assert a.apps == ["echo", "app"] and a.duration_s == 5 and a.concurrency == 8
    assert a.env == ["A=1", "B=2"] and a.requests == 100 and a.no_progress
    assert a.floor_max_ongoing == 64 and a.rounds == 3 and a.cohosted


@pytest.mark.parametrize(
    "argv",
    [
        ["--apps", "nope"],
        ["--concurrency", "0"],
        ["--duration-s", "0"],
        ["--list-size", "-1"],
        ["--rounds", "0"],
    ],
)
def test_cli_rejects_bad_values(argv, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ceiling", *argv])


def test_cli_missing_config_is_a_one_line_error(capsys, tmp_path):
    from tools.cli import main

    assert main(["ceiling", "--apps", "app", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_resolve_config(tmp_path, monkeypatch):
    repo_cfg = ce.REPO / "configs/test.yaml"
    assert repo_cfg.exists()
    monkeypatch.chdir(tmp_path)  # a relative path that is not here: the repository's file
    assert ce.resolve_config("configs/test.yaml") == repo_cfg
    monkeypatch.chdir(ce.REPO)  # one that is here: that file, made absolute
    assert ce.resolve_config("configs/test.yaml") == repo_cfg.resolve()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/test.yaml").write_text("applications: []\n")
    monkeypatch.chdir(tmp_path)  # here and in the repository: the one here wins
    assert ce.resolve_config("configs/test.yaml") == (tmp_path / "configs/test.yaml").resolve()
    assert ce.resolve_config(tmp_path / "x.yaml") == tmp_path / "x.yaml"
