"""docs/configuration.md's reference is what the config models render (one source per setting)."""

from pathlib import Path

import pytest

from deployments import config_reference as ref
from deployments.config import AppConfig, PackingKnobs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_page_matches_the_config_models():
    page = PAGE.read_text(encoding="utf-8")
    assert page.count(ref.BEGIN) == 1 and page.count(ref.END) == 1
    block = page[page.index(ref.BEGIN) : page.index(ref.END) + len(ref.END)] + "\n"
    assert block == ref.render_reference(), (
        "docs/configuration.md is stale: run "
        "python -m deployments.config_reference --write docs/configuration.md"
    )
    assert ref.main(["--check", str(PAGE)]) == 0


def test_every_field_has_a_description():
    assert ref.missing_descriptions() == []


def test_every_field_and_default_is_on_the_page():
    block = ref.render_reference()
    for model in (AppConfig, PackingKnobs):
        for name in model.model_fields:
            assert f"| `{name}` |" in block
    assert "| `mode` | `attention_mask` \\| `unpack_repack` | `unpack_repack` |" in block
    assert "| `max_pending` | int (>= 1) | `4096` |" in block
    assert "| `max_body_bytes` | int | `1000000` |" in block


def test_write_replaces_only_the_block_and_check_sees_a_stale_page(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(f"# title\n\nbefore\n\n{ref.BEGIN}\nold\n{ref.END}\n\nafter\n")
    assert ref.main(["--check", str(page)]) == 1
    assert "stale" in capsys.readouterr().err
    assert ref.main(["--write", str(page)]) == 0
    assert page.read_text() == f"# title\n\nbefore\n\n{ref.render_reference()}\nafter\n"
    assert ref.main(["--check", str(page)]) == 0


def test_a_page_without_markers_is_refused(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no <!-- BEGIN"):
        ref.main(["--write", str(page)])
