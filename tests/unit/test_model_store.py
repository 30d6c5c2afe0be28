"""The app's model folder at start (deployments.model_store / model_match): prepared only when
missing, or app-made with only an outdated format; every other mismatch stops the app with one
message, and no file of the folder is ever written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deployments.config import AppConfig
from deployments.model_match import ModelAsk, ModelFolderMismatch, decide, model_ask
from deployments.model_store import ensure_model
from packing.model.manifest import FORMAT_VERSION, MANIFEST, PREPARING, Manifest

TINY = {"seq_len": 64, "batch_size": 4, "max_valid_num": 8}  # tiny_model_dir's shapes


def ask(
    source: str = "random:tiny",
    precision: str = "fp32",
    device: str = "cpu",
    default_source: bool = False,
    **shapes,
) -> ModelAsk:
    """What a config asks; ``prepare_precision`` is ``auto`` resolved for a CPU (int8)."""
    resolved = {"auto": {"cpu": "int8", "cuda": "fp16", "sim": "fp32"}[device]}
    return ModelAsk(
        source=source,
        precision=precision,
        prepare_precision=resolved.get(precision, precision),
        device=device,
        default_source=default_source,
        **{**TINY, **shapes},
    )


def made(src: Path, dst: Path, **fields) -> Path:
    """A copy of the prepared folder ``src`` at ``dst`` whose manifest has ``fields`` set (a
    field set to None is removed, as in manifests written before it existed)."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / MANIFEST).read_text())
    for name, value in fields.items():
        if value is None:
            raw.pop(name, None)
        else:
            raw[name] = value
    (dst / MANIFEST).write_text(json.dumps(raw))
    return dst


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: equal snapshots mean nothing was written."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def refused(folder: Path, want: ModelAsk) -> str:
    """ensure_model's ModelFolderMismatch message; asserts the folder was left untouched."""
    before = snapshot(folder)
    with pytest.raises(ModelFolderMismatch) as err:
        ensure_model(str(folder), want)
    assert snapshot(folder) == before
    return str(err.value)


# ------------------------------------------------------------------ provenance in the manifest


def test_prepare_records_who_prepared_the_folder(tiny_model_dir, monkeypatch, tmp_path):
    held = Manifest.provenance(tiny_model_dir)
    assert (held.prepared_by, held.source, held.precision) == ("user", "random:tiny", "fp32")
    assert (held.seq_len, held.batch_size, held.max_valid_num) == (64, 4, 8)
    assert held.format_version == FORMAT_VERSION and not held.app_made
    assert Manifest.read(tiny_model_dir).prepared_by == "user"
    assert not (tiny_model_dir / PREPARING).exists()  # removed once the manifest is final
    seen = {}
    monkeypatch.setattr("packing.model.prepare.prepare", lambda *a, **kw: seen.update(kw))
    from packing.cli import main

    assert main(["prepare", "--model", "random:tiny", "--out", str(tmp_path / "m")]) == 0
    assert seen["prepared_by"] == "cli"


def test_prepare_refuses_an_unknown_preparer(tmp_path):
    from packing.model.prepare import prepare

    with pytest.raises(ValueError, match="'robot'"):
        prepare("random:tiny", tmp_path / "m", prepared_by="robot", **TINY)


def test_a_legacy_manifest_reads_as_made_by_a_user_in_fp32(tiny_model_dir, tmp_path):
    folder = made(tiny_model_dir, tmp_path / "old", prepared_by=None, precision=None)
    held = Manifest.provenance(folder)
    assert (held.prepared_by, held.precision, held.app_made) == ("unknown", "fp32", False)
    assert Manifest.read(folder).prepared_by == "unknown"
    stale = made(tiny_model_dir, tmp_path / "older", prepared_by=None, format_version=1)
    assert Manifest.provenance(stale).format_version == 1  # read() refuses it; provenance not
    with pytest.raises(ValueError, match="format_version 1"):
        Manifest.read(stale)


# ------------------------------------------------------------------ missing: prepared by the app


def test_a_missing_folder_is_prepared_by_the_app(tmp_path):
    folder = tmp_path / "models" / "fresh"
    manifest = ensure_model(str(folder), ask(precision="auto")).manifest
    assert (manifest.prepared_by, manifest.source, manifest.precision) == (
        "app",
        "random:tiny",
        "int8",
    )  # auto resolved for the device: the folder is new
    assert not (folder / PREPARING).exists()
    assert (tmp_path / "models" / ".fresh.lock").exists()  # replicas serialise on it
    again = snapshot(folder)
    assert ensure_model(str(folder), ask(precision="auto")).manifest == manifest  # as it is
    assert snapshot(folder) == again


def test_an_empty_folder_or_the_apps_unfinished_preparation_counts_as_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert decide(empty, ask()).reason == "is empty"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    (unfinished / PREPARING).write_text("app\n")
    plan = decide(unfinished, ask(precision="auto"))
    assert (plan.source, plan.precision, plan.seq_len) == ("random:tiny", "int8", 64)
    assert "unfinished" in plan.reason


def test_files_without_a_manifest_are_never_prepared_over(tmp_path):
    folder = tmp_path / "hf-model"  # e.g. a transformers folder given as model_dir by mistake
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    msg = refused(folder, ask())
    assert str(folder) in msg and "no manifest.json" in msg and "model.safetensors" in msg
    assert "point model_dir at a new folder" in msg
    (folder / PREPARING).write_text("cli\n")  # someone's `packed-bert prepare`, interrupted
    assert "unfinished preparation by `packed-bert prepare`" in refused(folder, ask())


# ------------------------------------------------------------------ made by the app


def test_app_made_stale_format_same_source_is_prepared_again_as_it_was(tiny_model_dir, tmp_path):
    import logging

    folder = made(tiny_model_dir, tmp_path / "app", prepared_by="app", format_version=1)
    # the store logs to "ray.serve", which Ray may have made non-propagating: listen there
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("ray.serve").addHandler(handler)
    try:  # other shapes in the config: a re-preparation keeps what the folder records
        manifest = ensure_model(str(folder), ask(precision="auto", seq_len=32)).manifest
    finally:
        logging.getLogger("ray.serve").removeHandler(handler)
    assert any(
        "has format_version 1, this code reads 3" in m and "random:tiny in fp32" in m for m in seen
    ), seen
    assert manifest.format_version == FORMAT_VERSION and manifest.prepared_by == "app"
    assert (manifest.source, manifest.precision, manifest.seq_len) == ("random:tiny", "fp32", 64)


def test_app_made_other_source_stops(tiny_model_dir, tmp_path):
    folder = made(tiny_model_dir, tmp_path / "app", prepared_by="app")
    msg = refused(folder, ask("builtin:squad-mini", precision="auto", default_source=True))
    assert "prepared from 'random:tiny', the config's model_source is 'builtin:squad-mini'" in msg
    assert "set model_source: random:tiny" in msg
    # even with only the format outdated besides: another source is never prepared over
    stale = made(tiny_model_dir, tmp_path / "stale", prepared_by="app", format_version=1)
    assert "model_source" in refused(stale, ask("random:base"))


def test_app_made_other_precision_stops(tiny_model_dir, tmp_path):
    folder = made(tiny_model_dir, tmp_path / "app", prepared_by="app")
    msg = refused(folder, ask(precision="int8"))
    assert "it holds fp32, the config's prepare.precision is int8" in msg
    assert "set prepare.precision: fp32 (or auto)" in msg
    held = ensure_model(str(folder), ask(precision="auto")).manifest
    assert held.precision == "fp32"  # auto: as held


def test_the_message_names_folder_holding_ask_and_both_ways_out(tiny_model_dir, tmp_path):
    folder = made(tiny_model_dir, tmp_path / "app", prepared_by="app")
    msg = refused(folder, ask("random:base", precision="int8"))
    assert f"model_dir {folder} does not hold what the config asks" in msg
    assert "The folder holds 'random:tiny' in fp32, prepared by the app, format_version 3" in msg
    assert "the config asks for model_source 'random:base' in precision int8 on device cpu" in msg
    assert (
        "(1) point model_dir at a new folder, which the app prepares from 'random:base' in int8"
    ) in msg
    assert (
        "(2) keep this folder: set model_source: random:tiny and set prepare.precision: "
        "fp32 (or auto). To rebuild it from the config instead, delete it yourself"
    ) in msg
    assert msg.count("\n") == 0  # one message


# ------------------------------------------------------------------ made by a user


@pytest.mark.parametrize("who", ["cli", "user", None])  # None: a manifest before prepared_by
def test_a_users_folder_with_precision_auto_and_the_default_source_is_served_untouched(
    tiny_model_dir, tmp_path, who
):
    # the case: a hand-made fp32 folder from random:tiny, served with configs/squad.yaml's
    # model_source (the default) and precision: auto on a CPU
    folder = made(tiny_model_dir, tmp_path / "mine", prepared_by=who)
    cfg = AppConfig(
        model_dir=str(folder),
        model_source="builtin:squad-mini",
        prepare={"precision": "auto", "seq_len": 384},
        device="cpu",
    )
    before = snapshot(folder)
    manifest = ensure_model(cfg.model_dir, model_ask(cfg)).manifest
    assert (manifest.source, manifest.precision, manifest.seq_len) == ("random:tiny", "fp32", 64)
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "want, says",
    [
        (dict(source="random:base"), "the config's model_source is 'random:base'"),
        (dict(precision="int8"), "it holds fp32, the config's prepare.precision is int8"),
        (
            dict(precision="int8", source="builtin:squad-mini", default_source=True),
            "prepare.precision is int8",
        ),
    ],
)
@pytest.mark.parametrize("who", ["cli", "user", None])
def test_a_users_folder_that_differs_stops(tiny_model_dir, tmp_path, who, want, says):
    folder = made(tiny_model_dir, tmp_path / "mine", prepared_by=who)
    msg = refused(folder, ask(**want))
    assert says in msg and str(folder) in msg
    if want.get("default_source"):
        assert "model_source:" not in msg  # the default source is not held against it


def test_a_users_folder_of_an_old_format_is_never_prepared_again(tiny_model_dir, tmp_path):
    folder = made(tiny_model_dir, tmp_path / "mine", prepared_by="cli", format_version=1)
    msg = refused(folder, ask(precision="auto"))
    assert "format_version 1 is not the 3 this code reads" in msg
    assert (
        f"`packed-bert prepare --model random:tiny --precision fp32 --seq-len 64 "
        f"--batch-size 4 --max-valid-num 8 --out {folder}`"
    ) in msg
    legacy = made(tiny_model_dir, tmp_path / "legacy", prepared_by=None, format_version=1)
    assert "prepared by a user (no `prepared_by` recorded)" in refused(legacy, ask())


# ------------------------------------------------------------------ the device must run it


def test_auto_takes_the_folders_precision_only_where_the_device_runs_it(tiny_model_dir, tmp_path):
    folder = made(tiny_model_dir, tmp_path / "half", prepared_by="cli", precision="fp16")
    msg = refused(folder, ask(precision="auto"))
    assert "it holds fp16, which the runners' device cpu has no kernels for" in msg
    assert "set device: cuda" in msg
    assert decide(folder, ask(precision="auto", device="cuda")) is None
    assert decide(folder, ask(precision="auto", device="sim")) is None  # sim runs no graph


def test_a_missing_folder_is_not_prepared_in_a_precision_the_device_cannot_run(tmp_path):
    with pytest.raises(
        ModelFolderMismatch,
        match="prepared in fp16, which the runners' device cpu has no kernels for",
    ):
        ensure_model(str(tmp_path / "new"), ask(precision="fp16"))
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ what a config asks


def test_model_ask_keeps_auto_and_knows_the_default_source():
    plain = model_ask(AppConfig(device="cpu", prepare={"precision": "auto"}))
    assert (plain.precision, plain.prepare_precision, plain.device) == ("auto", "int8", "cpu")
    assert plain.default_source and plain.source == "builtin:squad-mini"
    other = model_ask(AppConfig(device="sim", model_source="random:tiny"))
    assert (other.default_source, other.precision, other.device) == (False, "fp32", "sim")


def test_an_unreadable_manifest_stops_with_the_ways_out(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / MANIFEST).write_text("{not json")
    msg = refused(folder, ask())
    assert "cannot read" in msg and "point model_dir at a new folder" in msg


# ------------------------------------------------------------------ through build_app


def squad_args(folder: Path, **changes) -> dict:
    """configs/squad.yaml's ``args`` with ``model_dir`` at ``folder``, runners on the CPU."""
    import yaml

    from factories import REPO

    args = yaml.safe_load((REPO / "configs" / "squad.yaml").read_text())["applications"][0]["args"]
    return {**args, "model_dir": str(folder), "device": "cpu", **changes}


def test_build_app_serves_a_users_folder_with_the_default_config_untouched(
    tiny_model_dir, tmp_path, monkeypatch
):
    import deployments.app as app

    folder = made(tiny_model_dir, tmp_path / "mine", prepared_by="cli")
    before = snapshot(folder)
    monkeypatch.setattr(app, "calibrated_budget", lambda *a: None)  # no measurement here
    assert app.build_app(squad_args(folder)) is not None
    assert snapshot(folder) == before
    with pytest.raises(ModelFolderMismatch, match="the config's prepare.precision is int8"):
        app.build_app(squad_args(folder, prepare={"precision": "int8"}))
    assert snapshot(folder) == before
