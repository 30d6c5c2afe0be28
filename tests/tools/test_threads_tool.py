"""The pure parts of ``python -m tools threads`` (tools/threads.py): layouts and the report.
No process is started."""

from __future__ import annotations

import pytest

from tools.cli import build_parser
from tools.threads import Layout, format_threads, parse_layout


@pytest.mark.parametrize(
    "text, want",
    [
        ("1x2", Layout(1, 2, None)),
        ("2x1:nospin", Layout(2, 1, False)),
        (" 4x8:spin ", Layout(4, 8, True)),
    ],
)
def test_parse_layout(text, want):
    got = parse_layout(text)
    assert got == want and parse_layout(got.name) == got


@pytest.mark.parametrize("bad", ["2", "0x1", "1x0", "2x2:fast", "x2", "2x2:"])
def test_parse_layout_refuses_with_the_value(bad):
    with pytest.raises(ValueError, match="PxT"):
        parse_layout(bad)


def test_format_threads():
    report = {
        "host": {
            "date": "2026-12-06",
            "cpu": "AMD EPYC",
            "cores": 2,
            "flags": {"avx2": True, "avx512f": True, "avx512_vnni": True, "amx_int8": False},
        },
        "settings": {
            "model_dir": "/m",
            "task": "embed",
            "precision": "int8",
            "mode": "unpack_repack",
            "workload": "seed",
            "samples": 10,
            "max_tokens": 1024,
        },
        "rows": [
            {"layout": "1x2", "sequences_per_s": 200.0, "cpu_ms_per_sequence": 10.0, "ratio": 1.0},
            {
                "layout": "2x2:nospin",
                "sequences_per_s": 100.0,
                "cpu_ms_per_sequence": 9.5,
                "ratio": 0.5,
            },
        ],
    }
    text = format_threads(report)
    for part in (
        "avx512_vnni=yes",
        "(embed, int8)",
        "budget 1024 tokens",
        "2x2:nospin",
        "100.0",
        "0.50x",
    ):
        assert part in text, part


def test_the_command_line():
    args = build_parser().parse_args(
        ["threads", "--model-dir", "m", "--layouts", "1x2", "2x1:nospin"]
    )
    assert args.layouts == ["1x2", "2x1:nospin"] and args.max_tokens == "auto"
    assert args.func.__name__ == "_threads"
