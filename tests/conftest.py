"""Fixtures every tier shares: small prepared models with random weights (no network), the
SQuAD dev file, the tier markers, and the ``gpu`` marker's rule (fail, not skip, without a
working CUDA).

The tiers are folders: tests/unit (no Ray, no real sleeps; the tier to run on every change),
tests/tools (the drills and benchmark tools of tools/, no Ray), tests/integration (one
``serve run`` per session, and tests that start a Ray of their own), tests/cluster
(multi-node drills). Each test gets the marker of its folder (``unit``, ``tools``,
``integration``, ``cluster``), so ``-m`` selects a tier as well as the folder does. Fixtures of
one tier live in that folder's conftest.py; test helpers are modules in tests/ (``factories``,
``serve_client``), importable because pyproject.toml puts tests/ on ``sys.path``
(``pythonpath``) and imports test files with ``--import-mode=importlib``, so two tiers may
hold files of the same name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from packing.model.prepare import prepare

from factories import REPO

SQUAD = REPO.parent / "shared" / "data" / "squad-v1.1-dev.json"
TIERS = ("unit", "tools", "integration", "cluster")

# Small shapes so batches fill, rows overflow and sequences cross row boundaries
# with only a few dozen requests.
TINY_SHAPE = {"seq_len": 64, "batch_size": 4, "max_valid_num": 8}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """random:tiny prepared with seq_len 64, batch_size 4, max_valid_num 8 (checked)."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    prepare("random:tiny", out, quiet=True, **TINY_SHAPE)
    return out


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    """The bert-base-uncased fast tokenizer the package ships (no network), loaded from a
    folder as a model folder's would be."""
    from transformers import AutoTokenizer

    from packing.model.weights import save_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(folder, None)
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def squad_path() -> Path:
    """The shared SQuAD v1.1 dev file; tests that need it skip where it is absent."""
    if not SQUAD.exists():
        pytest.skip(f"{SQUAD} not found")
    return SQUAD


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item):
    """A ``gpu`` test fails, never skips, where ONNX Runtime cannot really run on CUDA.

    ``pytest -m gpu`` asks for CUDA: on a host without onnxruntime-gpu, without a GPU, or
    where the CUDA provider is listed but a session falls back to the CPU (CUDA or cuDNN
    libraries missing), every selected test errors with the reason
    (:func:`packing.runtime.backend.cuda_problem`), so a CPU-only run can never pass for a
    GPU run. The default run deselects ``gpu`` (pyproject's ``addopts``).
    """
    if item.get_closest_marker("gpu") is None:
        return
    from packing.runtime.backend import cuda_problem

    problem = cuda_problem()
    if problem:
        pytest.fail(f"gpu test, but ONNX Runtime here cannot run on CUDA: {problem}", pytrace=False)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects, so ``-m unit`` sees the marker
def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, the name of the folder under tests/ that holds it."""
    tests = Path(__file__).resolve().parent
    for item in items:
        try:
            tier = item.path.resolve().relative_to(tests).parts[0]
        except ValueError:  # a test outside tests/ (given on the command line)
            continue
        if tier in TIERS:
            item.add_marker(tier)
