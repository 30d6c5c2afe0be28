"""``python -m tools overload``: the config it serves and its report (the run itself is a
benchmark: docs/serving.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tools.overload import format_overload, overload_config

from factories import REPO


def test_overload_config_pins_one_runner_one_plan_and_the_dispatch():
    base = yaml.safe_load((REPO / "configs/sim.yaml").read_text())
    cfg = overload_config(base, 8123, "per_batch", "slow", 2048.0, 0.005)
    app = cfg["applications"][0]
    deps = {d["name"]: d for d in app["deployments"]}
    assert cfg["http_options"]["port"] == 8123
    assert app["args"]["sim"] == {"profile": "slow", "tokens_per_s": 2048.0}
    assert deps["PlanExecutor"]["num_replicas"] == 1
    assert deps["PlanExecutor"]["max_ongoing_requests"] == 1
    assert deps["Packer"]["user_config"]["dispatch"] == "per_batch"
    assert deps["Packer"]["user_config"]["batch_wait_timeout_s"] == 0.005
    assert Path(app["args"]["model_dir"]).is_absolute()
    assert base["applications"][0]["args"]["sim"] == {"profile": "fast"}  # input unchanged
    from deployments.config import AppConfig, PackingKnobs

    AppConfig(**app["args"])  # still a valid app config
    PackingKnobs(**deps["Packer"]["user_config"])


def test_overload_report_shows_ratios_side_by_side():
    row = dict(
        dispatch="merge",
        offered=900,
        ok=900,
        crossed=0,
        lost=0,
        failed=0,
        failed_by_status={},
        seconds=45.0,
        goodput=20.0,
        capacity=20.0,
        p50_ms=9000.0,
        p99_ms=20000.0,
        mean_admitted=1.1,
        mean_sequences=39.5,
        plans=23,
    )
    slow = {
        **row,
        "dispatch": "per_batch",
        "ok": 30,
        "failed": 870,
        "failed_by_status": {"504": 870},
        "goodput": 0.5,
    }
    report = {
        "settings": {
            "profile": "slow",
            "tokens_per_s": 2048.0,
            "rate": 30.0,
            "seconds": 30.0,
            "workload": "short",
            "batch_wait_timeout_s": 0.005,
        },
        "rows": [row, slow],
    }
    text = format_overload(report)
    assert "| merge | 900 | 900 | 0 | 0 | 0 - | 20.0 | 1.00x | 1.00x |" in text
    assert '| per_batch | 900 | 30 | 0 | 0 | 870 {"504": 870} | 0.5 | 0.03x | 0.03x |' in text
