"""The configs of the embed and QA + embed apps, and the settings the task routes add to the
typed config (``task``, ``auto_truncate``, ``limits.max_text_chars``)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from deployments.config import AppConfig
from packing.qa.requests import Limits

from factories import REPO


def apps(name: str) -> list[dict]:
    return yaml.safe_load((REPO / "configs" / name).read_text())["applications"]


def test_embed_config_serves_minilm_embed_on_the_cpu_in_int8():
    (app,) = apps("embed.yaml")
    cfg = AppConfig(**app["args"])
    assert cfg.model_source == "builtin:minilm-embed" and cfg.task == "embed"
    assert cfg.device == "cpu" and cfg.precision() == "int8" and cfg.auto_truncate is False
    packer = next(d for d in app["deployments"] if d["name"] == "Packer")
    assert packer["user_config"]["mode"] == "unpack_repack"
    squad = apps("squad.yaml")[0]  # the same structure as the QA app's config
    assert [d["name"] for d in app["deployments"]] == [d["name"] for d in squad["deployments"]]
    assert set(app["args"]) - set(squad["args"]) == {"task", "auto_truncate"}


def test_qa_and_embed_are_two_apps_under_their_own_prefixes():
    qa, embed = apps("qa-and-embed.yaml")
    assert (qa["route_prefix"], embed["route_prefix"]) == ("/qa", "/embed")
    assert AppConfig(**qa["args"]).task == "qa" and AppConfig(**embed["args"]).task == "embed"
    assert qa["args"]["model_dir"] != embed["args"]["model_dir"]
    assert qa["import_path"] == embed["import_path"] == "deployments.app:build_app"


def test_task_and_auto_truncate_settings():
    assert AppConfig().task is None and AppConfig().auto_truncate is False
    assert AppConfig(task="classify", auto_truncate=True).auto_truncate
    with pytest.raises(ValidationError, match="'qa', 'embed' or 'classify'"):
        AppConfig(task="ner")
    assert Limits().max_text_chars == 100_000
    with pytest.raises(ValueError, match="Limits.max_text_chars must be >= 1, got 0"):
        Limits(max_text_chars=0)


def test_a_full_body_of_texts_must_fit_the_packer():
    with pytest.raises(
        ValidationError,
        match=r"limits.max_batch_items \(5000\) must be <= "
        r"packing.max_pending \(4096\)",
    ):
        AppConfig(limits={"max_batch_items": 5000})
    AppConfig(limits={"max_batch_items": 4096})
