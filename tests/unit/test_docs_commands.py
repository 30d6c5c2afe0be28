"""Every ``packed-bert ...`` and ``python -m tools ...`` command in a fenced bash block of the
README or docs/ parses with today's command line: the subcommand and every flag exist, and
each value is one the flag accepts. A renamed flag or a dropped subcommand fails here, not in a
reader's terminal."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from packing.cli import build_parser as product_parser
from tools.cli import build_parser as tools_parser

from factories import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def commands(text: str) -> list[str]:
    """The ``packed-bert`` / ``python -m tools`` command lines of the bash blocks in ``text``:
    continuations joined, comments and synopses (``[--flag ...]``) dropped, one command per
    ``&&`` / ``;`` / ``|`` part, leading environment assignments and a trailing ``&`` removed."""
    out = []
    for block in BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("#") or " [--" in line:  # a comment, or a synopsis
                continue
            for part in re.split(r"\s&&\s|;\s|\s\|\s", line):
                words = part.strip().rstrip("&").strip().split()
                while words and ENV.match(words[0]):
                    words = words[1:]
                cmd = " ".join(words)
                if cmd.startswith(("packed-bert ", "python -m tools ", "python3 -m tools ")):
                    out.append(cmd)
    return out


def parse(cmd: str) -> argparse.Namespace:
    """``cmd`` parsed by the product's or the tools' parser; SystemExit on a bad command."""
    words = shlex.split(cmd)
    if words[0] == "packed-bert":
        return product_parser().parse_args(words[1:])
    return tools_parser().parse_args(words[3:])


FOUND = [(page, cmd) for page in PAGES for cmd in commands(page.read_text(encoding="utf-8"))]


def test_the_pages_hold_commands_of_both_kinds():
    kinds = {cmd.split()[0] for _, cmd in FOUND}
    assert len(FOUND) > 40 and {"packed-bert", "python"} <= kinds
    assert commands("```bash\nFOO=1 packed-bert bench --samples 4 &  # note\n```\n") == [
        "packed-bert bench --samples 4"
    ]


@pytest.mark.parametrize("page, cmd", FOUND, ids=[f"{p.name}:{c[:60]}" for p, c in FOUND])
def test_documented_command_parses(page, cmd, capsys):
    try:
        parse(cmd)
    except SystemExit as exc:
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"{page.name}: `{cmd}` does not parse: {err[-1] if err else exc}")


def test_a_wrong_flag_is_caught():
    with pytest.raises(SystemExit):
        parse("packed-bert bench --model-dir m --no-such-flag")
    with pytest.raises(SystemExit):
        parse("python -m tools crowd --requests many")
