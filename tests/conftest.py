"""Session-wide fixtures: small prepared models with random weights (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from packing.model.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "data" / "squad-v1.1-dev.json"

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
def squad_path() -> Path:
    """The shared SQuAD v1.1 dev file; tests that need it skip where it is absent."""
    if not SQUAD.exists():
        pytest.skip(f"{SQUAD} not found")
    return SQUAD
