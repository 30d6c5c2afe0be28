"""PreparedModel: a prepared folder and its manifest, read once, and passed down instead of the
folder's path, so one call chain reads ``manifest.json`` once."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from packing.model.manifest import MANIFEST, Manifest
from packing.model.prepared import PreparedModel
from packing.runners import ModelRunner, PackRunner
from packing.runtime.calibrate import CACHE_FILE
from packing.runtime.calibrate import measure as measure_mod
from packing.runtime.synthetic import seed_lengths, synthetic_features

FAST = {"backend": "sim", "profile": "fast"}


@pytest.fixture()
def reads(monkeypatch) -> list[Path]:
    """The folders whose manifest is read while the test runs, one entry per read."""
    seen: list[Path] = []
    real = Manifest.read

    def counting(folder):
        seen.append(Path(folder))
        return real(folder)

    monkeypatch.setattr(Manifest, "read", staticmethod(counting))
    return seen


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny folder (calibrating writes its cache there); measuring a
    budget returns a fixed rate at once."""
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns(CACHE_FILE, ".*"))
    monkeypatch.setattr(measure_mod, "measure_budget", lambda *a, **kw: [1000.0])
    return out


# ------------------------------------------------------------------------ the object


@pytest.mark.parametrize("as_type", [str, Path])
def test_open_reads_a_folder_given_by_path(tiny_model_dir, as_type):
    model = PreparedModel.open(as_type(tiny_model_dir))
    assert model.folder == Path(tiny_model_dir) and isinstance(model.folder, Path)
    assert model.manifest == Manifest.read(tiny_model_dir)


def test_open_gives_a_prepared_model_back_as_it_is(tiny_model_dir, reads):
    model = PreparedModel.open(tiny_model_dir)
    assert PreparedModel.open(model) is model
    assert len(reads) == 1  # the second open read nothing


def test_it_stands_for_its_folder_wherever_a_path_goes(tiny_model_dir):
    model = PreparedModel.open(tiny_model_dir)
    assert os.fspath(model) == str(model) == f"{model}" == str(tiny_model_dir)
    assert Path(model) == Path(tiny_model_dir)
    with open(Path(model) / MANIFEST) as fh:
        assert fh.read().startswith("{")
    assert "random:tiny" in repr(model)
    assert PreparedModel(str(tiny_model_dir), model.manifest).folder == model.folder


def test_graph_path_names_the_folders_graphs_when_absent(tiny_model_dir):
    model = PreparedModel.open(tiny_model_dir)
    path = model.graph_path("unpack_repack")
    assert path == Path(tiny_model_dir) / model.manifest.graphs["unpack_repack"]
    assert path.exists()
    fewer = dataclasses.replace(
        model.manifest, graphs={"original": "original.onnx", "attention_mask": "am.onnx"}
    )
    with pytest.raises(ValueError) as err:
        PreparedModel(model.folder, fewer).graph_path("unpack_repack")
    assert str(err.value) == (
        f"{tiny_model_dir} has no 'unpack_repack' graph; graphs: ['attention_mask', 'original']"
    )


def test_a_folder_that_is_not_prepared_says_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="packed-bert prepare --model SOURCE --out"):
        PreparedModel.open(tmp_path / "missing")
    with pytest.raises(TypeError, match="got int"):
        PreparedModel.open(3)  # type: ignore[arg-type]


# ------------------------------------------------------------- one reading per call chain


def test_a_pack_runner_reads_the_manifest_once(model_copy, reads):
    runner = PackRunner(str(model_copy), mode="unpack_repack", **FAST)  # calibrates, then loads
    assert runner.calibration is not None and not runner.calibration.from_cache
    assert reads == [model_copy]
    runner.close()
    reads.clear()
    PackRunner(model_copy, mode="unpack_repack", **FAST).close()  # the budget from the cache
    assert reads == [model_copy]
    reads.clear()
    model = PreparedModel.open(model_copy)
    runner = PackRunner(model, **FAST)
    assert runner.model is model and len(reads) == 1  # only the open above
    runner.close()
    ModelRunner(model, **FAST)
    assert len(reads) == 1


def test_a_batch_job_predictor_reads_the_manifest_once(model_copy, reads):
    from packing.jobs.batch import QAPredictor

    predictor = QAPredictor(str(model_copy), mode="unpack_repack", backend="sim")
    assert predictor.runner.model.folder == model_copy
    assert reads == [model_copy]  # one reading for the QA pipeline and the runner
    predictor.runner.close()


def test_profile_folders_reads_each_manifest_once(tiny_model_dir, reads):
    from packing.bench.profile import profile_folders

    data = synthetic_features(seed_lengths(12, 64, 1), 30522)
    profiles = profile_folders(
        [tiny_model_dir], data, batches=1, threads=1, max_tokens=None, echo=lambda line: None
    )
    assert len(profiles) == 3  # every layout of the folder
    assert reads == [Path(tiny_model_dir)]
